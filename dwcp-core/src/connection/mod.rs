//! The connection state machine: handshake, streams, flow control, timers, drain.
//!
//! [`Connection`] never touches a socket or a clock. The driver:
//! 1. feeds received bytes with [`Connection::handle_input`],
//! 2. writes what [`Connection::poll_transmit`] returns, in order, while the
//!    transport accepts more,
//! 3. calls [`Connection::handle_timeout`] at [`Connection::poll_timeout`],
//! 4. acts on [`Connection::poll_event`] (wake readers and writers, accept streams).
//!
//! Calling these in any order is safe; every `poll_*` is cheap when idle.
//!
//! ## Where things are
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the struct, `poll_*`, frame dispatch, the one error path (`fail`) |
//! | `handshake.rs` | HELLO: ours, checking the peer's, class mapping |
//! | `streams.rs` | stream ids and counts, open/accept (OPEN), refusal, forgetting |
//! | `recv.rs` | `recv`, `stop`, DATA and RESET, credit release (WINDOW out) |
//! | `send.rs` | `send`, `finish`, resets, room, `poll_data`, WINDOW and STOP in |
//! | `drain.rs` | GOAWAY, `close`, transport failure, drain completion |
//! | `keepalive.rs` | PING/PONG, idle timeout |
//! | `stats.rs` | [`ConnectionStats`], link estimates |
//!
//! Frame handlers return `Result<(), Violation>`; [`Connection::handle_input`]
//! turns a violation into a connection close in one place.

mod drain;
mod handshake;
mod keepalive;
mod recv;
mod send;
mod stats;
mod streams;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use crate::config::Config;
use crate::error::{ConnectionError, ErrorCode};
use crate::flow::{RecvWindow, SendCredit};
use crate::frame::{Frame, FrameDecoder, GoAway, Hello, Window};
use crate::rtt::RttEstimator;
use crate::scheduler::Scheduler;
use crate::stream::{RecvState, Stream};
use crate::{Side, StreamId};

pub use stats::ConnectionStats;

/// Something the application or driver should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed; streams may be opened.
    Connected,
    /// The peer opened a stream.
    StreamOpened(StreamId),
    /// A stream has data, a FIN or an error to read (edge-triggered: read until `Blocked`).
    StreamReadable(StreamId),
    /// A stream that returned `Blocked` to `send` has room again.
    StreamWritable(StreamId),
    /// The stream is fully closed and forgotten (or was refused): drivers may
    /// release anything they hold for it.
    StreamClosed(StreamId),
    /// The peer received every byte and the FIN of this side's direction
    /// of a stream (its STOP with `NO_ERROR` after the FIN). Also raised for
    /// streams already forgotten.
    StreamAcked(StreamId),
    /// The peer stopped reading this side's direction of a stream after its
    /// FIN was sent, before it had received everything (its STOP with another
    /// code than `NO_ERROR`). Also raised for streams already forgotten.
    StreamStopped {
        /// The stream.
        id: StreamId,
        /// The peer's code.
        code: ErrorCode,
    },
    /// The peer reset (or refused) a stream.
    StreamReset {
        /// The stream.
        id: StreamId,
        /// The peer's code.
        code: ErrorCode,
    },
    /// The peer began a graceful drain; no new streams may be opened.
    GoAway {
        /// Highest stream of this side the peer will process.
        last_stream: StreamId,
        /// The peer's reason.
        reason: String,
    },
    /// Graceful drain completed: every stream finished. Close the transport.
    Drained,
    /// The connection failed. Every unfinished stream reports the error.
    Lost(ConnectionError),
}

/// One frame to write: `header` then `payload` (the payload is empty for
/// control frames and is the caller's zero-copy slice for DATA).
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Stream the frame belongs to (0 for connection frames). Drivers that
    /// spread frames over several lanes keep each stream on one lane.
    pub stream: StreamId,
    /// Frame header (and the whole frame for non-DATA frames).
    pub header: Bytes,
    /// DATA payload, written after `header`.
    pub payload: Bytes,
    /// The frame belongs to an interactive stream. Decided when the frame was
    /// queued, so every frame of a stream (its FIN and RESET included, even
    /// after the core forgot the stream) carries the same value and drivers
    /// that pick lanes by it keep a stream on one lane.
    pub interactive: bool,
}

impl Transmit {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }

    /// Always false: a frame has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    Draining,
    /// A final GOAWAY is queued; then Closed.
    Closing,
    Closed,
}

/// One side of a DWCP connection, as a state machine.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: Config,
    state: State,
    decoder: FrameDecoder,
    hello_sent: bool,
    peer: Option<Hello>,
    /// Local class id of each peer class id, when both sides name their
    /// classes (HELLO); `None`: ids are taken as they are.
    class_map: Option<Vec<u8>>,
    version: u16,
    streams: HashMap<StreamId, Stream>,
    next_local: u64,
    max_remote: StreamId,
    /// Peer ids below `max_remote` not opened yet: frames of different streams
    /// travel on different lanes, so OPENs may arrive out of order.
    skipped_remote: std::collections::HashSet<StreamId>,
    /// `last_stream` of the GOAWAY this side sent.
    goaway_last: StreamId,
    local_open: u32,
    remote_open: u32,
    conn_credit: SendCredit,
    conn_recv: RecvWindow,
    conn_window_pending: bool,
    /// What the receive windows of the tracked streams add beyond the
    /// configured initial window, together: growth and raised floors come
    /// from a budget of half the connection's ceiling
    /// ([`Connection::stream_window_room`]).
    stream_window_extra: u64,
    send_buffered: u64,
    /// The send buffer ran empty since the last transport report: the
    /// interval's delivery rate is the sender's, not the link's.
    tx_ran_dry: bool,
    conn_blocked: VecDeque<StreamId>,
    /// Open interactive streams (few), served from the reserved credit.
    interactive: std::collections::BTreeSet<StreamId>,
    /// This side's streams that may send zstd-stream chunks, holding one of
    /// the peer's [`crate::zstd_stream::RECEIVER_CONTEXTS`] decoders each
    /// until the peer's STOP says it let go (see
    /// [`Connection::reserve_zstd_context`]).
    zstd_contexts: std::collections::HashSet<StreamId>,
    /// Frames answering the peer (PONG, refusals) with their lane flag
    /// ([`Transmit::interactive`]): bounded by `max_control_queue`.
    replies: VecDeque<(Frame, bool)>,
    /// Frames of this side's own making (OPEN, RESET, STOP, bare FIN, GOAWAY,
    /// PING), with their lane flag.
    control: VecDeque<(Frame, bool)>,
    window_queue: VecDeque<StreamId>,
    final_frame: Option<Frame>,
    sched: Scheduler,
    events: VecDeque<Event>,
    rtt: RttEstimator,
    /// The sending direction, fed with the transport's delivery figures.
    tx_link: crate::estimator::LinkEstimator,
    /// The receiving direction, fed with DATA arrivals; sizes new windows.
    rx_link: crate::estimator::LinkEstimator,
    /// When DATA bytes last arrived, and the count then (see
    /// [`Connection::note_received`]).
    rx_seen: (Instant, u64),
    ping_seq: u64,
    ping_outstanding: Option<(u64, Instant)>,
    next_ping: Instant,
    last_recv: Instant,
    /// The latest time passed in by the driver.
    last_now: Instant,
    goaway_sent: bool,
    goaway_recv: Option<StreamId>,
    error: Option<ConnectionError>,
    stats: ConnectionStats,
    scratch: BytesMut,
}

impl Connection {
    /// Creates one side of a connection. HELLO is queued at once.
    ///
    /// # Errors
    /// The configuration is inconsistent.
    pub fn new(config: Config, side: Side, now: Instant) -> Result<Self, crate::ConfigError> {
        config.validate()?;
        Ok(Connection {
            side,
            decoder: FrameDecoder::new(config.max_frame_payload),
            state: State::Handshake,
            hello_sent: false,
            peer: None,
            class_map: None,
            version: 0,
            streams: HashMap::new(),
            next_local: match side {
                Side::Client => 1,
                Side::Server => 2,
            },
            max_remote: 0,
            skipped_remote: std::collections::HashSet::new(),
            goaway_last: 0,
            local_open: 0,
            remote_open: 0,
            conn_credit: SendCredit::new(0),
            conn_recv: RecvWindow::shared(
                config.initial_connection_window,
                config.max_connection_window,
            ),
            conn_window_pending: false,
            stream_window_extra: 0,
            send_buffered: 0,
            tx_ran_dry: false,
            conn_blocked: VecDeque::new(),
            interactive: Default::default(),
            zstd_contexts: Default::default(),
            replies: VecDeque::new(),
            control: VecDeque::new(),
            window_queue: VecDeque::new(),
            final_frame: None,
            sched: Scheduler::new(
                &config.classes,
                config.rate_limit,
                (2 * config.data_frame_size as u64).max(64 * 1024),
                now,
            ),
            events: VecDeque::new(),
            rtt: RttEstimator::default(),
            tx_link: Default::default(),
            rx_link: Default::default(),
            rx_seen: (now, 0),
            ping_seq: 0,
            ping_outstanding: None,
            next_ping: now,
            last_recv: now,
            last_now: now,
            goaway_sent: false,
            goaway_recv: None,
            error: None,
            stats: ConnectionStats::default(),
            scratch: BytesMut::new(),
            config,
        })
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True once both HELLOs were exchanged and accepted.
    pub fn is_established(&self) -> bool {
        self.peer.is_some() && matches!(self.state, State::Open | State::Draining)
    }

    /// True when the connection has ended and its last frame was handed out.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The error that ended the connection, if it failed.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// The peer's HELLO, once received.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// The negotiated protocol version (0 before the handshake).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The RTT estimator.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// Streams currently open (not finished, not reset).
    pub fn active_streams(&self) -> u32 {
        self.local_open + self.remote_open
    }

    /// Feeds bytes read from the transport. Complete frames are split off `buf`
    /// without copying; an incomplete frame is left in it for the next call.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) {
        self.last_now = self.last_now.max(now);
        loop {
            if matches!(self.state, State::Closing | State::Closed) {
                buf.clear();
                return;
            }
            let before = buf.len();
            let handled = match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    self.last_recv = now;
                    self.stats.frames_received += 1;
                    self.stats.bytes_received += (before - buf.len()) as u64;
                    self.handle_frame(now, frame)
                }
                Ok(None) => {
                    self.note_received(now);
                    return;
                }
                Err(e) => Err(Violation::new(e.code(), e.to_string())),
            };
            // The one place where a violation closes the connection; the
            // state is then Closing or Closed, so the loop ends.
            if let Err(v) = handled {
                self.fail(v.code, v.reason);
                buf.clear();
                return;
            }
        }
    }

    /// The next frame to write, or `None` when there is nothing to send now.
    /// Call until `None` whenever the transport can take more bytes.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.last_now = self.last_now.max(now);
        match self.state {
            State::Closed => return None,
            State::Closing => {
                self.state = State::Closed;
                let f = self.final_frame.take()?;
                return Some(self.emit(f, 0, false));
            }
            _ => {}
        }
        if !self.hello_sent {
            self.hello_sent = true;
            let hello = Frame::Hello(Box::new(self.our_hello()));
            return Some(self.emit(hello, 0, false));
        }
        self.peer.as_ref()?;
        if let Some((f, interactive)) = self.replies.pop_front() {
            let stream = f.stream();
            return Some(self.emit(f, stream, interactive));
        }
        if let Some((f, interactive)) = self.control.pop_front() {
            let stream = f.stream();
            return Some(self.emit(f, stream, interactive));
        }
        if self.conn_window_pending {
            self.conn_window_pending = false;
            if let Some(credit) = self.conn_recv.take_update(now, self.rtt.smoothed()) {
                if credit > 0 {
                    return Some(self.emit(Frame::Window(Window { stream: 0, credit }), 0, false));
                }
            }
        }
        while let Some(id) = self.window_queue.pop_front() {
            let srtt = self.rtt.smoothed();
            let room = self.stream_window_room();
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.window_pending = false;
            if s.recv_state != RecvState::Open {
                continue;
            }
            let interactive = s.interactive();
            let before = s.recv_window.window();
            let update = s.recv_window.take_update_within(now, srtt, room);
            self.stream_window_extra += s.recv_window.window() - before;
            if let Some(credit) = update {
                if credit > 0 {
                    let w = Frame::Window(Window { stream: id, credit });
                    return Some(self.emit(w, id, interactive));
                }
            }
        }
        if let Some(t) = self.poll_data(now) {
            return Some(t);
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            for id in &self.interactive {
                if let Some(s) = self.streams.get(id) {
                    if s.sendable() {
                        tracing::trace!(
                            id,
                            conn_credit = self.conn_credit.available(),
                            queued = s.sched.queued,
                            rate_blocked = ?self.sched.blocked_until(),
                            "dwcp: interactive stream held back"
                        );
                    }
                }
            }
        }
        self.check_drained();
        None
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::Closing | State::Closed) {
            return None;
        }
        let mut t = self.last_recv + self.config.idle_timeout;
        if self.peer.is_some() && self.ping_outstanding.is_none() {
            t = t.min(self.next_ping);
        }
        if !self.sched.is_empty() {
            if let Some(r) = self.sched.blocked_until() {
                t = t.min(r);
            }
        }
        Some(t)
    }

    /// Routes one frame to its handler.
    fn handle_frame(&mut self, now: Instant, frame: Frame) -> Result<(), Violation> {
        if self.peer.is_none() {
            return match frame {
                Frame::Hello(h) => self.handle_hello(now, *h),
                Frame::GoAway(g) => self.handle_goaway(g),
                other => Err(Violation::new(
                    ErrorCode::ProtocolError,
                    format!("expected HELLO as the first frame, got {}", other.name()),
                )),
            };
        }
        match frame {
            Frame::Hello(_) => Err(Violation::new(ErrorCode::ProtocolError, "second HELLO")),
            Frame::Open(o) => self.handle_open(o),
            Frame::Data(d) => self.handle_data(now, d),
            Frame::Window(w) => self.handle_window(w),
            Frame::Reset(r) => self.handle_reset(r),
            Frame::Ping(p) => self.push_reply(Frame::Pong(p), false),
            Frame::Stop(st) => self.handle_stop(st),
            Frame::Pong(p) => {
                self.handle_pong(now, p);
                Ok(())
            }
            Frame::GoAway(g) => self.handle_goaway(g),
            Frame::Ignored { ty } => {
                debug!(ty, "dwcp: skipped ignorable frame");
                Ok(())
            }
        }
    }

    fn emit(&mut self, frame: Frame, stream: StreamId, interactive: bool) -> Transmit {
        if self.scratch.capacity() < 64 {
            self.scratch.reserve(8192);
        }
        let payload = frame.encode(&mut self.scratch);
        let header = self.scratch.split().freeze();
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += (header.len() + payload.len()) as u64;
        Transmit {
            stream,
            header,
            payload,
            interactive,
        }
    }

    /// Queues a frame answering the peer, within `max_control_queue`.
    fn push_reply(&mut self, f: Frame, interactive: bool) -> Result<(), Violation> {
        if self.replies.len() >= self.config.max_control_queue {
            return Err(Violation::new(
                ErrorCode::ExcessiveLoad,
                format!(
                    "peer caused more than {} queued control replies without reading them",
                    self.config.max_control_queue
                ),
            ));
        }
        self.replies.push_back((f, interactive));
        Ok(())
    }

    /// Closes with a protocol error detected on this side.
    fn fail(&mut self, code: ErrorCode, reason: String) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        warn!(code = %code, %reason, "dwcp: closing connection");
        self.final_frame = Some(Frame::GoAway(GoAway {
            last_stream: self.max_remote,
            code,
            reason: reason.clone(),
        }));
        self.terminate(ConnectionError::Local { code, reason }, State::Closing);
    }

    fn terminate(&mut self, err: ConnectionError, state: State) {
        self.state = state;
        self.replies.clear();
        self.control.clear();
        self.window_queue.clear();
        self.conn_window_pending = false;
        self.error = Some(err.clone());
        // Wake every reader and writer so they observe the error.
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                s.send_queue = VecDeque::new();
                s.send_queued = 0;
                if !s.readable_pending {
                    s.readable_pending = true;
                    self.events.push_back(Event::StreamReadable(id));
                }
                if s.writer_blocked {
                    s.writer_blocked = false;
                    self.events.push_back(Event::StreamWritable(id));
                }
            }
        }
        self.send_buffered = 0;
        self.events.push_back(Event::Lost(err));
    }
}

/// A protocol violation detected on this side: the connection closes with
/// `code` (see `Connection::fail`).
#[derive(Debug)]
struct Violation {
    code: ErrorCode,
    reason: String,
}

impl Violation {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Violation {
            code,
            reason: reason.into(),
        }
    }
}
