//! Per-stream state: the send and receive halves and their flow control.
//!
//! An idle stream holds no buffers: queues are empty `VecDeque`s, which do not
//! allocate until data arrives, so an open idle stream costs a few hundred bytes.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::StreamError;
use crate::flow::{RecvWindow, SendCredit};
use crate::frame::{Encoding, StreamOptions};
use crate::scheduler::SchedState;

/// Public view of a stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Both directions open.
    Open,
    /// This side finished sending; the peer may still send.
    HalfClosedLocal,
    /// The peer finished sending; this side may still send.
    HalfClosedRemote,
    /// Both directions finished; waiting for the application to read the rest.
    Closed,
    /// Reset by either side.
    Reset,
}

/// Parameters of a new stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenParams {
    /// Traffic class.
    pub class: u8,
    /// Priority hint (0 = highest).
    pub priority: u8,
    /// Weight within the class (0 is treated as 1).
    pub weight: u16,
    /// Option bits.
    pub options: StreamOptions,
    /// Route or service name (at most 255 bytes).
    pub route: Bytes,
}

impl Default for OpenParams {
    fn default() -> Self {
        OpenParams {
            class: 0,
            priority: 0,
            weight: 1,
            options: StreamOptions::default(),
            route: Bytes::new(),
        }
    }
}

/// A unit of queued outgoing data.
#[derive(Debug, Clone)]
pub(crate) enum Chunk {
    /// Uncompressed bytes; may be split across frames.
    Raw(Bytes),
    /// Pre-encoded bytes; sent as one frame.
    Encoded { enc: Encoding, payload: Bytes },
}

impl Chunk {
    pub(crate) fn raw_len(&self) -> u64 {
        match self {
            Chunk::Raw(b) => b.len() as u64,
            Chunk::Encoded { enc, .. } => enc.raw_len as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendState {
    Open,
    /// FIN will be attached to the last queued chunk.
    FinPending,
    FinSent,
    /// This direction was abandoned: RESET sent, or the peer refused or
    /// stopped the stream (then `send_error` says so).
    ResetSent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    Open,
    FinReceived,
    /// FIN received and every byte read (or the reader went away).
    Done,
    /// The peer reset its direction (or refused the stream): `recv_error`.
    ResetReceived,
}

/// State of one stream: two directions, each ending on its own (FIN or
/// RESET one way, FIN, RESET or STOP the other), and each end reported to
/// the application before the stream is forgotten.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) params: OpenParams,
    pub(crate) send_queue: VecDeque<Chunk>,
    pub(crate) send_queued: u64,
    pub(crate) send_credit: SendCredit,
    pub(crate) send_state: SendState,
    /// Why the sending direction ended abnormally (peer's STOP, refusal).
    pub(crate) send_error: Option<StreamError>,
    /// `send_error` was returned to the writer (or the writer went away).
    pub(crate) send_reported: bool,
    pub(crate) writer_blocked: bool,
    /// In the connection's queue of writers waiting for room in its send
    /// buffer (`Connection::conn_blocked`), perhaps no longer blocked.
    pub(crate) conn_waiting: bool,
    pub(crate) recv_queue: VecDeque<Bytes>,
    pub(crate) recv_window: RecvWindow,
    pub(crate) recv_state: RecvState,
    /// Why the receiving direction ended abnormally (peer's RESET, refusal).
    pub(crate) recv_error: Option<StreamError>,
    /// `recv_error` was returned to the reader (or the reader went away).
    pub(crate) recv_reported: bool,
    pub(crate) readable_pending: bool,
    pub(crate) window_pending: bool,
    /// The application stopped reading: data is discarded on arrival.
    pub(crate) reader_gone: bool,
    /// STOP was sent for this stream.
    pub(crate) stop_sent: bool,
    pub(crate) sched: SchedState,
    /// The transport below cannot take more of this stream's frames now.
    pub(crate) paused: bool,
    /// The receiving direction's zstd-stream context, from the first
    /// zstd-stream chunk until the direction ends or the reader goes.
    pub(crate) zstd: Option<Box<crate::zstd_stream::StreamDecoder>>,
}

impl Stream {
    pub(crate) fn new(
        params: OpenParams,
        send_credit: u32,
        recv_initial: u32,
        recv_max: u32,
    ) -> Self {
        Stream {
            params,
            send_queue: VecDeque::new(),
            send_queued: 0,
            send_credit: SendCredit::new(send_credit),
            send_state: SendState::Open,
            send_error: None,
            send_reported: false,
            writer_blocked: false,
            conn_waiting: false,
            recv_queue: VecDeque::new(),
            recv_window: RecvWindow::new(recv_initial, recv_max),
            recv_state: RecvState::Open,
            recv_error: None,
            recv_reported: false,
            readable_pending: false,
            window_pending: false,
            reader_gone: false,
            stop_sent: false,
            sched: SchedState::default(),
            paused: false,
            zstd: None,
        }
    }

    /// Whether this stream's frames go on the interactive lane.
    pub(crate) fn interactive(&self) -> bool {
        self.params.options.contains(StreamOptions::INTERACTIVE)
    }

    /// True if the next frame of this stream could be sent given stream credit.
    pub(crate) fn sendable(&self) -> bool {
        if self.paused {
            return false;
        }
        match self.send_queue.front() {
            Some(Chunk::Raw(_)) => self.send_credit.available() > 0,
            Some(c @ Chunk::Encoded { .. }) => self.send_credit.available() >= c.raw_len(),
            None => false,
        }
    }

    pub(crate) fn state(&self) -> StreamState {
        if self.send_state == SendState::ResetSent || self.recv_state == RecvState::ResetReceived {
            return StreamState::Reset;
        }
        let send_done = self.send_state != SendState::Open;
        let recv_done = self.recv_state != RecvState::Open;
        match (send_done, recv_done) {
            (false, false) => StreamState::Open,
            (true, false) => StreamState::HalfClosedLocal,
            (false, true) => StreamState::HalfClosedRemote,
            (true, true) => StreamState::Closed,
        }
    }

    /// The sending direction has ended and its end was reported.
    fn send_final(&self) -> bool {
        matches!(self.send_state, SendState::FinSent | SendState::ResetSent)
            && (self.send_error.is_none() || self.send_reported)
    }

    /// The receiving direction has ended and its end was reported.
    fn recv_final(&self) -> bool {
        match self.recv_state {
            RecvState::Done => true,
            RecvState::ResetReceived => self.recv_reported,
            RecvState::Open | RecvState::FinReceived => false,
        }
    }

    /// Both directions complete and every end reported: the stream can be forgotten.
    pub(crate) fn finished(&self) -> bool {
        self.send_final() && self.recv_final()
    }
}
