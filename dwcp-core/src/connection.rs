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

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use crate::codec::{self, CodecId};
use crate::config::Config;
use crate::error::{ConnectionError, ErrorCode, OpenError, StreamError};
use crate::flow::{RecvWindow, SendCredit};
use crate::frame::{
    Capabilities, Data, Encoding, Frame, FrameDecoder, GoAway, Hello, Open, Ping, Reset, Stop,
    Window, MAX_ROUTE_LEN_USIZE,
};
use crate::rtt::RttEstimator;
use crate::scheduler::Scheduler;
use crate::stream::{Chunk, OpenParams, RecvState, SendState, Stream, StreamState};
use crate::{Side, StreamId};

/// Payloads shorter than this are copied out of the receive buffer when queued,
/// so a small frame does not keep a whole read buffer alive: a zero-copy
/// payload is at least half a 64 KiB read chunk, which bounds the memory
/// unread data pins to a small multiple of the receive window.
const COPY_THRESHOLD: usize = 32 * 1024;
/// Most connection credit kept for interactive streams (see
/// `Connection::interactive_reserve`).
const INTERACTIVE_RESERVE: u64 = 64 * 1024;

/// The event for the peer's STOP after this side's FIN (see
/// [`Event::StreamAcked`] and [`Event::StreamStopped`]).
fn fin_answer(id: StreamId, code: ErrorCode) -> Event {
    if code == ErrorCode::NoError {
        Event::StreamAcked(id)
    } else {
        Event::StreamStopped { id, code }
    }
}

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

/// Counters and gauges of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Bytes written, headers included.
    pub bytes_sent: u64,
    /// Bytes read, headers included.
    pub bytes_received: u64,
    /// Application bytes sent, before compression.
    pub data_raw_sent: u64,
    /// DATA payload bytes sent, after compression.
    pub data_wire_sent: u64,
    /// Application bytes received, after decompression.
    pub data_raw_received: u64,
    /// DATA payload bytes received, before decompression.
    pub data_wire_received: u64,
    /// Streams opened by this side.
    pub streams_opened_local: u64,
    /// Streams opened by the peer and accepted.
    pub streams_opened_remote: u64,
    /// Peer streams refused (limit or draining).
    pub streams_refused: u64,
    /// RESETs sent.
    pub resets_sent: u64,
    /// RESETs received.
    pub resets_received: u64,
    /// Streams currently open.
    pub active_streams: u64,
    /// Smoothed RTT.
    pub smoothed_rtt: Option<Duration>,
    /// RTT variance.
    pub rtt_var: Duration,
    /// Minimum RTT.
    pub min_rtt: Option<Duration>,
    /// Current connection receive window.
    pub connection_window: u64,
    /// DATA payload bytes received per codec id (`[none, lz4, zstd]`), before decoding.
    pub wire_received_by_codec: [u64; 3],
    /// Bytes received per codec id after decoding.
    pub raw_received_by_codec: [u64; 3],
    /// Time spent decompressing, in nanoseconds (a measurement only; it
    /// does not influence the protocol).
    pub decompress_nanos: u64,
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
    send_buffered: u64,
    /// The send buffer ran empty since the last transport report: the
    /// interval's delivery rate is the sender's, not the link's.
    tx_ran_dry: bool,
    conn_blocked: VecDeque<StreamId>,
    /// Open interactive streams (few), served from the reserved credit.
    interactive: std::collections::BTreeSet<StreamId>,
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
            conn_recv: RecvWindow::new(
                config.initial_connection_window,
                config.max_connection_window,
            ),
            conn_window_pending: false,
            send_buffered: 0,
            tx_ran_dry: false,
            conn_blocked: VecDeque::new(),
            interactive: Default::default(),
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

    // ----- accessors -----

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

    /// True after GOAWAY was sent or received.
    pub fn is_draining(&self) -> bool {
        self.goaway_sent || self.goaway_recv.is_some()
    }

    /// Whether the peer has sent GOAWAY (it opens no more streams and ends
    /// its side once its streams are done).
    pub fn peer_sent_goaway(&self) -> bool {
        self.goaway_recv.is_some()
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

    /// Snapshot of the counters.
    pub fn stats(&self) -> ConnectionStats {
        let mut s = self.stats.clone();
        s.active_streams = self.active_streams() as u64;
        s.smoothed_rtt = self.rtt.smoothed();
        s.rtt_var = self.rtt.var();
        s.min_rtt = self.rtt.min();
        s.connection_window = self.conn_recv.window();
        s
    }

    /// State of a stream, or `None` if unknown or forgotten.
    pub fn stream_state(&self, id: StreamId) -> Option<StreamState> {
        self.streams.get(&id).map(|s| s.state())
    }

    /// Parameters a stream was opened with (route, class, weight...).
    pub fn stream_params(&self, id: StreamId) -> Option<&OpenParams> {
        self.streams.get(&id).map(|s| &s.params)
    }

    /// Why a stream's sending direction ended abnormally (the peer's STOP,
    /// a refusal), without reporting it; `None` while it has not, or if the
    /// stream is unknown.
    pub fn send_error(&self, id: StreamId) -> Option<&StreamError> {
        self.streams.get(&id).and_then(|s| s.send_error.as_ref())
    }

    /// Bytes a stream has queued and not yet handed to the transport, or
    /// `None` if the stream is unknown.
    pub fn stream_send_queued(&self, id: StreamId) -> Option<u64> {
        self.streams.get(&id).map(|s| s.send_queued)
    }

    /// Current receive window of a stream (grows with auto-tuning).
    pub fn stream_window(&self, id: StreamId) -> Option<u64> {
        self.streams.get(&id).map(|s| s.recv_window.window())
    }

    /// Streams that have data and credit, waiting for the scheduler.
    pub fn backlogged_streams(&self) -> usize {
        self.sched.len()
    }

    /// Reports transport figures for the sending direction: `delivered` bytes
    /// in total by `now` (acknowledged, or delivered by a simulated link) and,
    /// if known, the loss rate. Drivers call this every 100 ms or so.
    pub fn on_transport_delivered(&mut self, now: Instant, delivered: u64, loss_rate: Option<f64>) {
        // App-limited if the sender ran out of data at any moment of the
        // interval, not only now: a compressor feeding chunks slower than the
        // link leaves one queued at some reports, and its rate is not the
        // link's.
        let dry_now = self.sched.is_empty() && self.send_buffered == 0;
        let app_limited = std::mem::replace(&mut self.tx_ran_dry, dry_now) || dry_now;
        self.tx_link.on_delivered(now, delivered, app_limited);
        if let Some(l) = loss_rate {
            self.tx_link.on_loss_rate(l);
        }
    }

    /// The estimate of the sending direction (bandwidth, RTT, loss, mode).
    pub fn link_estimate(&self) -> &crate::estimator::LinkEstimator {
        &self.tx_link
    }

    /// The estimate of the receiving direction, from DATA arrivals.
    pub fn receive_estimate(&self) -> &crate::estimator::LinkEstimator {
        &self.rx_link
    }

    /// Receive window a new stream starts with: twice the receiving
    /// direction's bandwidth-delay product in WAN mode, within the configured
    /// initial and maximum windows.
    fn initial_window_target(&self) -> u64 {
        let initial = self.config.initial_stream_window as u64;
        if self.rx_link.mode() != crate::estimator::LinkMode::Wan {
            return initial;
        }
        self.rx_link.bdp().map_or(initial, |bdp| {
            (2 * bdp).clamp(initial, self.config.max_stream_window as u64)
        })
    }

    /// Allocation per traffic class: allocated and used rate and utilization
    /// of `capacity` (bytes/s: the link estimate or the configured cap).
    pub fn allocation(&self, capacity: Option<f64>) -> Vec<crate::scheduler::ClassReport> {
        let cap = capacity.or(self.config.rate_limit.map(|r| r as f64));
        self.sched.report(cap, self.last_now)
    }

    /// Bytes queued by the application and not yet sent, over all streams.
    pub fn send_buffered(&self) -> u64 {
        self.send_buffered
    }

    // ----- application API -----

    /// Opens a stream.
    ///
    /// # Errors
    /// See [`OpenError`]: before the handshake, at the peer's stream limit,
    /// while draining, or after the connection closed.
    pub fn open_stream(&mut self, params: OpenParams) -> Result<StreamId, OpenError> {
        if let Some(e) = &self.error {
            return Err(OpenError::Closed(e.clone()));
        }
        if matches!(self.state, State::Closing | State::Closed) {
            return Err(OpenError::Closed(ConnectionError::LocallyClosed));
        }
        let Some(peer) = &self.peer else {
            return Err(OpenError::NotReady);
        };
        if self.is_draining() {
            return Err(OpenError::Draining);
        }
        if params.route.len() > MAX_ROUTE_LEN_USIZE {
            return Err(OpenError::RouteTooLong(params.route.len()));
        }
        if self.local_open >= peer.max_streams {
            return Err(OpenError::StreamLimit(peer.max_streams));
        }
        if self.next_local > u32::MAX as u64 {
            return Err(OpenError::IdsExhausted);
        }
        let id = self.next_local as StreamId;
        self.next_local += 2;
        let mut params = params;
        params.weight = params.weight.max(1);
        let interactive = params
            .options
            .contains(crate::frame::StreamOptions::INTERACTIVE);
        self.control.push_back((
            Frame::Open(Open {
                stream: id,
                class: params.class,
                priority: params.priority,
                weight: params.weight,
                options: params.options,
                route: params.route.clone(),
            }),
            interactive,
        ));
        let mut stream = Stream::new(
            params,
            peer.initial_stream_window,
            self.config.initial_stream_window,
            self.config.max_stream_window,
        );
        if stream.recv_window.grow_to(self.initial_window_target()) {
            stream.window_pending = true;
            self.window_queue.push_back(id);
        }
        if stream.interactive() {
            self.interactive.insert(id);
        }
        self.streams.insert(id, stream);
        self.local_open += 1;
        self.stats.streams_opened_local += 1;
        Ok(id)
    }

    /// Queues `data` on a stream without copying. Returns how many bytes were
    /// accepted (a prefix of `data`); the rest must be offered again after
    /// [`Event::StreamWritable`].
    ///
    /// # Errors
    /// [`StreamError::Blocked`] if nothing could be accepted; otherwise the stream
    /// or connection has ended.
    pub fn send(&mut self, id: StreamId, data: Bytes) -> Result<usize, StreamError> {
        if data.is_empty() {
            self.check_writable(id)?;
            return Ok(0);
        }
        self.check_writable(id)?;
        let room = self.room(id);
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        if room == 0 {
            Self::mark_blocked(s, id, &mut self.conn_blocked);
            return Err(StreamError::Blocked);
        }
        let n = (room as usize).min(data.len());
        if n < data.len() {
            Self::mark_blocked(s, id, &mut self.conn_blocked);
        }
        let chunk = if n == data.len() {
            data
        } else {
            data.slice(..n)
        };
        s.send_queue.push_back(Chunk::Raw(chunk));
        s.send_queued += n as u64;
        self.send_buffered += n as u64;
        if s.interactive() {
            tracing::trace!(
                id,
                n,
                credit = s.send_credit.available(),
                paused = s.paused,
                conn_credit = self.conn_credit.available(),
                "dwcp: send on an interactive stream"
            );
        }
        if s.sendable() {
            self.sched
                .push(s.params.class, id, &mut s.sched, self.last_now);
        }
        Ok(n)
    }

    /// Queues one pre-compressed chunk (all or nothing). `raw_len` in `enc` is the
    /// decoded length; the chunk is sent as a single DATA frame.
    ///
    /// # Errors
    /// As [`Connection::send`], plus [`StreamError::CodecNotNegotiated`] and
    /// [`StreamError::ChunkTooLarge`] when the chunk breaks the peer's limits.
    pub fn send_encoded(
        &mut self,
        id: StreamId,
        enc: Encoding,
        payload: Bytes,
    ) -> Result<(), StreamError> {
        self.check_writable(id)?;
        let Some(peer) = &self.peer else {
            return Err(StreamError::Blocked);
        };
        if enc.codec != CodecId::None
            && (peer.codecs & enc.codec.bit() == 0
                || !peer.capabilities.contains(Capabilities::COMPRESSION))
        {
            return Err(StreamError::CodecNotNegotiated);
        }
        let raw = enc.raw_len;
        if raw > peer.max_decoded_frame
            || raw > peer.initial_stream_window
            || raw > peer.initial_connection_window
            || payload.len() + 5 > peer.max_frame_payload as usize
        {
            return Err(StreamError::ChunkTooLarge);
        }
        let room = self.room(id);
        let conn_room = self.conn_room();
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        // A chunk is queued whole. Every stream may hold one chunk whatever
        // its share of the send buffer (which shrinks as streams are opened),
        // so no stream count and chunk size can block a stream for good.
        let fits = room >= raw as u64 || (s.send_queued == 0 && conn_room >= raw as u64);
        if !fits {
            Self::mark_blocked(s, id, &mut self.conn_blocked);
            return Err(StreamError::Blocked);
        }
        s.send_queue.push_back(Chunk::Encoded { enc, payload });
        s.send_queued += raw as u64;
        self.send_buffered += raw as u64;
        if s.sendable() {
            self.sched
                .push(s.params.class, id, &mut s.sched, self.last_now);
        }
        Ok(())
    }

    /// Finishes the sending direction (FIN after the queued data).
    ///
    /// # Errors
    /// The stream is unknown, already finished, or reset.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        self.check_writable(id)?;
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        if s.send_queue.is_empty() {
            s.send_state = SendState::FinSent;
            let interactive = s.interactive();
            self.control.push_back((
                Frame::Data(Data {
                    stream: id,
                    encoding: None,
                    payload: Bytes::new(),
                    fin: true,
                }),
                interactive,
            ));
            self.maybe_forget(id);
        } else {
            s.send_state = SendState::FinPending;
        }
        Ok(())
    }

    /// Reads up to `max` bytes. `Ok(None)` is the clean end of the stream (FIN).
    ///
    /// # Errors
    /// [`StreamError::Blocked`] when no data is available yet; [`StreamError::Reset`]
    /// if the peer reset the stream; [`StreamError::ConnectionLost`] if the
    /// connection failed before the FIN arrived.
    pub fn recv(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, StreamError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(match &self.error {
                Some(e) => StreamError::ConnectionLost(e.clone()),
                None => StreamError::UnknownStream,
            });
        };
        if let Some(front) = s.recv_queue.front_mut() {
            let n = max.min(front.len()).max(1).min(front.len());
            let out = if n == front.len() {
                s.recv_queue.pop_front().unwrap_or_default()
            } else {
                front.split_to(n)
            };
            if s.interactive() {
                tracing::trace!(id, n = out.len(), "dwcp: recv on an interactive stream");
            }
            self.release_recv_credit(id, out.len() as u64);
            return Ok(Some(out));
        }
        if s.reader_gone {
            return Err(StreamError::ClosedLocally);
        }
        match s.recv_state {
            RecvState::ResetReceived => {
                let e = s.recv_error.clone().unwrap_or(StreamError::UnknownStream);
                s.recv_reported = true;
                self.maybe_forget(id);
                Err(e)
            }
            RecvState::FinReceived => {
                s.recv_state = RecvState::Done;
                self.maybe_forget(id);
                Ok(None)
            }
            RecvState::Done => Ok(None),
            RecvState::Open => {
                if let Some(e) = &self.error {
                    return Err(StreamError::ConnectionLost(e.clone()));
                }
                s.readable_pending = false;
                Err(StreamError::Blocked)
            }
        }
    }

    /// Resets both directions of a stream: [`Connection::reset_send`] and
    /// [`Connection::stop`] with the same `code`.
    ///
    /// # Errors
    /// [`StreamError::UnknownStream`] if there is no such stream.
    pub fn reset(&mut self, id: StreamId, code: ErrorCode) -> Result<(), StreamError> {
        if !self.streams.contains_key(&id) {
            return Err(StreamError::UnknownStream);
        }
        self.abort_send(id, None, Some(code));
        self.stop(id, code)
    }

    /// Abandons this side's sending direction: queued data is dropped and the
    /// peer's reader gets [`StreamError::Reset`] with `code`. The receiving
    /// direction goes on. Nothing happens if the direction already ended
    /// (finished, reset, or stopped by the peer).
    ///
    /// # Errors
    /// [`StreamError::UnknownStream`] if there is no such stream.
    pub fn reset_send(&mut self, id: StreamId, code: ErrorCode) -> Result<(), StreamError> {
        if !self.streams.contains_key(&id) {
            return Err(StreamError::UnknownStream);
        }
        self.abort_send(id, None, Some(code));
        Ok(())
    }

    /// Stops reading a stream: unread data is discarded (its credit
    /// returned), later data is discarded on arrival, and unless the peer's
    /// direction already ended the peer is sent STOP with `code`, so its
    /// writes fail with [`StreamError::Stopped`]. Data this side queued still
    /// goes out. Also what a dropped reader does (with `CANCEL`).
    ///
    /// # Errors
    /// [`StreamError::UnknownStream`] if there is no such stream.
    pub fn stop(&mut self, id: StreamId, code: ErrorCode) -> Result<(), StreamError> {
        let closing = matches!(self.state, State::Closing | State::Closed);
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        s.reader_gone = true;
        let unread: u64 = s.recv_queue.iter().map(|b| b.len() as u64).sum();
        s.recv_queue = VecDeque::new();
        let mut stop = false;
        match s.recv_state {
            RecvState::Open => {
                if !s.stop_sent && !closing {
                    s.stop_sent = true;
                    stop = true;
                }
            }
            RecvState::FinReceived => s.recv_state = RecvState::Done,
            RecvState::Done => {}
            RecvState::ResetReceived => s.recv_reported = true,
        }
        let interactive = s.interactive();
        self.release_recv_credit(id, unread);
        if stop {
            self.control
                .push_back((Frame::Stop(Stop { stream: id, code }), interactive));
        }
        self.maybe_forget(id);
        Ok(())
    }

    /// The application let go of its writer: an error the sending direction
    /// ended with no longer needs reporting. Unfinished writers should
    /// [`Connection::reset_send`] first.
    pub fn detach_writer(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.send_reported = true;
            s.writer_blocked = false;
            self.maybe_forget(id);
        }
    }

    /// Bytes `id`'s writer may queue now (0 if none), marking the writer
    /// blocked when there is no room so that [`Event::StreamWritable`]
    /// follows. Lets a caller copy no more than will be accepted.
    ///
    /// # Errors
    /// As [`Connection::send`], except that no room is `Ok(0)`.
    pub fn send_room(&mut self, id: StreamId) -> Result<usize, StreamError> {
        self.check_writable(id)?;
        let room = self.room(id);
        if room == 0 {
            if let Some(s) = self.streams.get_mut(&id) {
                Self::mark_blocked(s, id, &mut self.conn_blocked);
            }
        }
        Ok(room.min(usize::MAX as u64) as usize)
    }

    /// Largest raw chunk [`Connection::send_encoded`] accepts under the
    /// peer's limits (0 before the handshake).
    pub fn max_encoded_chunk(&self) -> usize {
        self.peer.as_ref().map_or(0, |p| {
            (p.max_decoded_frame)
                .min(p.initial_stream_window)
                .min(p.initial_connection_window)
                .min(p.max_frame_payload.saturating_sub(64)) as usize
        })
    }

    /// Tells the scheduler that the transport cannot take more of stream
    /// `id`'s frames now (its lane or QUIC stream is full), so other streams
    /// are served meanwhile; [`Connection::resume_stream`] undoes it. Unknown
    /// streams are ignored.
    pub fn pause_stream(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.paused = true;
        }
    }

    /// The transport can take stream `id`'s frames again.
    pub fn resume_stream(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.paused = false;
            if s.sendable() {
                self.sched
                    .push(s.params.class, id, &mut s.sched, self.last_now);
            }
        }
    }

    /// Starts a graceful drain: GOAWAY is sent, new peer streams are refused,
    /// open streams run to completion, then [`Event::Drained`].
    pub fn goaway(&mut self, reason: &str) {
        if self.goaway_sent || matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        self.goaway_sent = true;
        self.goaway_last = self.max_remote;
        self.control.push_back((
            Frame::GoAway(GoAway {
                last_stream: self.max_remote,
                code: ErrorCode::NoError,
                reason: reason.to_string(),
            }),
            false,
        ));
        if self.state == State::Open {
            self.state = State::Draining;
        }
    }

    /// Closes at once with `code`: a final GOAWAY is sent and every stream fails.
    pub fn close(&mut self, code: ErrorCode, reason: &str) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        self.final_frame = Some(Frame::GoAway(GoAway {
            last_stream: self.max_remote,
            code,
            reason: reason.to_string(),
        }));
        self.terminate(ConnectionError::LocallyClosed, State::Closing);
    }

    /// Reports that the transport underneath failed (the driver calls this).
    pub fn handle_transport_error(&mut self, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Closing {
            self.state = State::Closed;
            return;
        }
        if self.is_draining() && self.active_streams() == 0 {
            self.state = State::Closed;
            self.events.push_back(Event::Drained);
            return;
        }
        self.terminate(
            ConnectionError::Transport(reason.to_string()),
            State::Closed,
        );
    }

    // ----- driver API -----

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
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    self.last_recv = now;
                    self.stats.frames_received += 1;
                    self.stats.bytes_received += (before - buf.len()) as u64;
                    self.handle_frame(now, frame);
                }
                Ok(None) => {
                    self.rx_link
                        .on_delivered(now, self.stats.data_raw_received, false);
                    return;
                }
                Err(e) => {
                    self.fail(e.code(), e.to_string());
                    buf.clear();
                    return;
                }
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
            let hello = Frame::Hello(self.our_hello());
            return Some(self.emit(hello, 0, false));
        }
        self.peer.as_ref()?;
        if let Some((f, interactive)) = self.replies.pop_front() {
            let stream = frame_stream(&f);
            return Some(self.emit(f, stream, interactive));
        }
        if let Some((f, interactive)) = self.control.pop_front() {
            let stream = frame_stream(&f);
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
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.window_pending = false;
            if s.recv_state != RecvState::Open {
                continue;
            }
            let interactive = s.interactive();
            if let Some(credit) = s.recv_window.take_update(now, srtt) {
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

    /// Runs timers due at `now`: keepalive PINGs and the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        if now >= self.last_recv + self.config.idle_timeout {
            let d = self.config.idle_timeout;
            warn!(timeout = ?d, "dwcp: idle timeout, closing connection");
            self.final_frame = Some(Frame::GoAway(GoAway {
                last_stream: self.max_remote,
                code: ErrorCode::IdleTimeout,
                reason: format!("nothing received for {d:?}"),
            }));
            self.terminate(ConnectionError::TimedOut(d), State::Closing);
            return;
        }
        if self.peer.is_some() && self.ping_outstanding.is_none() && now >= self.next_ping {
            self.ping_seq += 1;
            self.ping_outstanding = Some((self.ping_seq, now));
            self.next_ping = now + self.config.ping_interval;
            self.control
                .push_back((Frame::Ping(Ping(self.ping_seq.to_be_bytes())), false));
        }
    }

    // ----- internals -----

    fn our_hello(&self) -> Hello {
        Hello {
            min_version: self.config.min_version,
            max_version: self.config.max_version,
            capabilities: self.config.capabilities,
            required: self.config.required_capabilities,
            codecs: self.config.codecs | CodecId::None.bit(),
            max_frame_payload: self.config.max_frame_payload,
            max_decoded_frame: self.config.max_decoded_frame,
            initial_stream_window: self.config.initial_stream_window,
            initial_connection_window: self.config.initial_connection_window,
            max_streams: self.config.max_streams,
            class_names: self.config.class_names.clone(),
        }
    }

    /// Maps the peer's class ids to ours by name (see [`Config::class_names`]).
    fn map_classes(&self, peer: &[String]) -> Option<Vec<u8>> {
        let ours = &self.config.class_names;
        if ours.is_empty() || peer.is_empty() {
            return None;
        }
        let mut unknown = Vec::new();
        let map = peer
            .iter()
            .map(|n| match ours.iter().position(|o| o == n) {
                Some(i) => i as u8,
                None => {
                    unknown.push(n.as_str());
                    0
                }
            })
            .collect();
        if !unknown.is_empty() {
            warn!(
                ?unknown,
                default = %ours[0],
                "dwcp: the peer names classes this side does not have; its streams of those classes get this side's first class"
            );
        } else if peer.iter().zip(ours).any(|(p, o)| p != o) {
            debug!(
                ?peer,
                ?ours,
                "dwcp: class lists in different orders, mapped by name"
            );
        }
        Some(map)
    }

    /// This side's class id for a class id the peer used in OPEN.
    fn local_class(&self, peer_class: u8) -> u8 {
        match &self.class_map {
            // An id past the peer's named list is a class it did not name.
            Some(map) => map.get(usize::from(peer_class)).copied().unwrap_or(0),
            None => peer_class,
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

    fn is_local_id(&self, id: StreamId) -> bool {
        (id % 2 == 1) == (self.side == Side::Client)
    }

    /// An id that was used once and is no longer tracked.
    fn is_closed_id(&self, id: StreamId) -> bool {
        if self.is_local_id(id) {
            (id as u64) < self.next_local
        } else {
            id <= self.max_remote && !self.skipped_remote.contains(&id)
        }
    }

    /// Whether the writer may queue data; an error the sending direction
    /// ended with (the peer's STOP, a refusal) is reported here.
    fn check_writable(&mut self, id: StreamId) -> Result<(), StreamError> {
        if let Some(e) = &self.error {
            return Err(StreamError::ConnectionLost(e.clone()));
        }
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(e) = &s.send_error {
            let e = e.clone();
            s.send_reported = true;
            self.maybe_forget(id);
            return Err(e);
        }
        if s.send_state != SendState::Open {
            return Err(StreamError::ClosedLocally);
        }
        Ok(())
    }

    /// Bytes one stream may queue: its own limit, but no more than an equal
    /// share of the connection's send buffer (at least 64 KiB), so a few
    /// streams cannot fill the connection buffer and keep the others out of
    /// the scheduler.
    fn stream_buffer_limit(&self) -> u64 {
        let open = self.active_streams().max(1) as u64;
        let fair = (self.config.connection_send_buffer / open).max(64 * 1024);
        (self.config.stream_send_buffer as u64).min(fair)
    }

    fn room(&self, id: StreamId) -> u64 {
        let queued = self.streams.get(&id).map_or(0, |s| s.send_queued);
        let stream_room = self.stream_buffer_limit().saturating_sub(queued);
        stream_room.min(self.conn_room())
    }

    fn conn_room(&self) -> u64 {
        self.config
            .connection_send_buffer
            .saturating_sub(self.send_buffered)
    }

    fn mark_blocked(s: &mut Stream, id: StreamId, conn_blocked: &mut VecDeque<StreamId>) {
        if !s.writer_blocked {
            s.writer_blocked = true;
            conn_blocked.push_back(id);
        }
    }

    fn dec_count(&mut self, id: StreamId) {
        if self.is_local_id(id) {
            self.local_open = self.local_open.saturating_sub(1);
        } else {
            self.remote_open = self.remote_open.saturating_sub(1);
        }
    }

    /// Ends the sending direction abnormally: queued data is dropped, the
    /// writer is woken to see `err` (none for a local reset), and RESET with
    /// `reset` is queued if given. Nothing happens if the direction already ended.
    fn abort_send(&mut self, id: StreamId, err: Option<StreamError>, reset: Option<ErrorCode>) {
        let closing = matches!(self.state, State::Closing | State::Closed);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(s.send_state, SendState::FinSent | SendState::ResetSent) {
            return;
        }
        self.send_buffered -= s.send_queued;
        s.send_queued = 0;
        s.send_queue = VecDeque::new();
        s.send_state = SendState::ResetSent;
        s.send_reported = err.is_none();
        let wake = err.is_some() || s.writer_blocked;
        s.send_error = err;
        s.writer_blocked = false;
        let interactive = s.interactive();
        if wake {
            self.events.push_back(Event::StreamWritable(id));
        }
        if let (Some(code), false) = (reset, closing) {
            self.control
                .push_back((Frame::Reset(Reset { stream: id, code }), interactive));
            self.stats.resets_sent += 1;
        }
        self.notify_conn_writable();
        self.maybe_forget(id);
    }

    /// Ends the receiving direction abnormally: unread data is discarded (its
    /// credit returned) and the reader is woken to see `err`, unless it is gone.
    fn abort_recv(&mut self, id: StreamId, err: StreamError) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !matches!(s.recv_state, RecvState::Open) {
            return;
        }
        let unread: u64 = s.recv_queue.iter().map(|b| b.len() as u64).sum();
        s.recv_queue = VecDeque::new();
        s.recv_state = RecvState::ResetReceived;
        s.recv_error = Some(err);
        s.recv_reported = s.reader_gone;
        if !s.readable_pending && !s.reader_gone {
            s.readable_pending = true;
            self.events.push_back(Event::StreamReadable(id));
        }
        self.release_recv_credit(id, unread);
        self.maybe_forget(id);
    }

    /// Returns the credit of `n` received bytes that were read or discarded,
    /// to the stream (while the peer may still send on it) and the connection:
    /// the one place where consumed bytes turn into WINDOW frames.
    fn release_recv_credit(&mut self, id: StreamId, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.recv_window.on_consume(n);
            if s.recv_state == RecvState::Open && s.recv_window.wants_update() && !s.window_pending
            {
                s.window_pending = true;
                self.window_queue.push_back(id);
            }
        }
        self.conn_recv.on_consume(n);
        if self.conn_recv.wants_update() {
            self.conn_window_pending = true;
        }
    }

    fn maybe_forget(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(|s| s.finished()) {
            self.forget(id);
            self.dec_count(id);
        }
    }

    fn forget(&mut self, id: StreamId) {
        if self.streams.remove(&id).is_some() {
            self.interactive.remove(&id);
            self.events.push_back(Event::StreamClosed(id));
        }
    }

    fn notify_conn_writable(&mut self) {
        if self.send_buffered > self.config.connection_send_buffer / 2 {
            return;
        }
        while let Some(id) = self.conn_blocked.pop_front() {
            if let Some(s) = self.streams.get_mut(&id) {
                if s.writer_blocked {
                    s.writer_blocked = false;
                    self.events.push_back(Event::StreamWritable(id));
                }
            }
        }
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

    fn check_drained(&mut self) {
        if self.goaway_sent
            && self.goaway_recv.is_some()
            && self.active_streams() == 0
            && self.control.is_empty()
            && self.replies.is_empty()
            && matches!(self.state, State::Draining | State::Open)
        {
            debug!("dwcp: drain complete");
            self.state = State::Closed;
            self.events.push_back(Event::Drained);
        }
    }

    fn push_reply(&mut self, f: Frame, interactive: bool) {
        if self.replies.len() >= self.config.max_control_queue {
            self.fail(
                ErrorCode::ExcessiveLoad,
                format!(
                    "peer caused more than {} queued control replies without reading them",
                    self.config.max_control_queue
                ),
            );
            return;
        }
        self.replies.push_back((f, interactive));
    }

    /// Connection credit that only interactive streams may use: bulk streams
    /// stop short of it, so a small message never waits for credit that bulk
    /// data queued below the scheduler has taken.
    fn interactive_reserve(&self) -> u64 {
        self.peer.as_ref().map_or(0, |p| {
            (p.initial_connection_window as u64 / 8).min(INTERACTIVE_RESERVE)
        })
    }

    fn poll_data(&mut self, now: Instant) -> Option<Transmit> {
        let conn_avail = self.conn_credit.available();
        if conn_avail == 0 {
            return None;
        }
        let bulk_avail = conn_avail.saturating_sub(self.interactive_reserve());
        if bulk_avail == 0 {
            return self.poll_reserved(now, conn_avail, true);
        }
        let max_frame = self.data_frame_limit();
        // A turn must allow at least one full frame, or an entry whose deficit
        // went negative would need several empty rounds to send again.
        let quantum = self.config.quantum.max(max_frame as u32);
        let mut class_spins = 1024;
        let mut passed: Vec<u8> = Vec::new();
        loop {
            if class_spins == 0 {
                return None;
            }
            class_spins -= 1;
            let class = match self.sched.next_class(now, quantum, &passed)? {
                Ok(c) => c,
                // The cap holds bulk back; an interactive frame goes now and
                // is charged to the cap, so bulk pays for it.
                Err(_) => return self.poll_reserved(now, conn_avail, false),
            };
            let mut spins = self.sched.len() * 2 + 1;
            let mut served = None;
            while spins > 0 {
                spins -= 1;
                let Some(id) = self.sched.front_stream(class) else {
                    break;
                };
                let Some(s) = self.streams.get_mut(&id) else {
                    self.sched.pop_stream(class, None);
                    continue;
                };
                if !s.sendable() {
                    self.sched.pop_stream(class, Some(&mut s.sched));
                    continue;
                }
                if Scheduler::begin_turn(&mut s.sched, quantum, s.params.weight) <= 0 {
                    self.sched.rotate_stream(class, &mut s.sched);
                    continue;
                }
                let avail = if s.interactive() {
                    conn_avail
                } else {
                    bulk_avail
                };
                if let Some(Chunk::Encoded { enc, .. }) = s.send_queue.front() {
                    if (enc.raw_len as u64) > avail {
                        // Wait for connection credit; let others use what there is.
                        self.sched.rotate_stream(class, &mut s.sched);
                        continue;
                    }
                }
                served = Some((id, avail));
                break;
            }
            let Some((id, avail)) = served else {
                self.sched.skip_class(class);
                if !passed.contains(&class) {
                    passed.push(class);
                }
                continue;
            };
            let (frame, wire, fin) = self.take_frame(id, avail)?;
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.sched.deficit -= wire as i64;
            if !s.sendable() {
                self.sched.pop_stream(class, Some(&mut s.sched));
            } else if s.sched.deficit <= 0 {
                self.sched.rotate_stream(class, &mut s.sched);
            }
            self.sched.charge(class, wire, now);
            if fin {
                self.maybe_forget(id);
            }
            return Some(frame);
        }
    }

    /// Serves an interactive stream from the reserved connection credit, or
    /// ahead of the connection cap (`respect_cap` false), outside the round
    /// robin (its stream stays where it is in the rings). Interactive frames
    /// are small, so what they borrow from the cap stays small.
    fn poll_reserved(&mut self, now: Instant, avail: u64, respect_cap: bool) -> Option<Transmit> {
        let id = self.interactive.iter().copied().find(|id| {
            self.streams.get(id).is_some_and(|s| {
                s.sendable()
                    && match s.send_queue.front() {
                        Some(Chunk::Raw(_)) => true,
                        Some(c) => c.raw_len() <= avail,
                        None => false,
                    }
            })
        })?;
        if respect_cap && self.sched.conn_limited(now).is_some() {
            return None;
        }
        let class = self.streams.get(&id)?.params.class;
        if self.sched.class_capped(class, now) {
            return None;
        }
        let (frame, wire, fin) = self.take_frame(id, avail)?;
        self.sched.charge(class, wire, now);
        if fin {
            self.maybe_forget(id);
        }
        Some(frame)
    }

    /// Takes the next DATA frame of stream `id` within `conn_avail` bytes of
    /// connection credit and accounts for it everywhere but the scheduler.
    /// Returns the frame, its size on the wire, and whether it carries the FIN.
    fn take_frame(&mut self, id: StreamId, conn_avail: u64) -> Option<(Transmit, u64, bool)> {
        let max_frame = self.data_frame_limit();
        let stream_limit = self.stream_buffer_limit();
        let s = self.streams.get_mut(&id)?;
        let stream_avail = s.send_credit.available();
        let (encoding, payload, raw) = match s.send_queue.front_mut()? {
            Chunk::Raw(b) => {
                let n = (b.len() as u64)
                    .min(max_frame)
                    .min(stream_avail)
                    .min(conn_avail) as usize;
                let payload = if n == b.len() {
                    let p = std::mem::take(b);
                    s.send_queue.pop_front();
                    p
                } else {
                    b.split_to(n)
                };
                (None, payload, n as u64)
            }
            Chunk::Encoded { .. } => match s.send_queue.pop_front() {
                Some(Chunk::Encoded { enc, payload }) => (Some(enc), payload, enc.raw_len as u64),
                _ => return None,
            },
        };
        let interactive = s.interactive();
        // Shares and rate limits count bytes on the wire: compressed data
        // costs what it occupies on the link, not what it decodes to.
        let wire = payload.len() as u64 + crate::frame::HEADER_LEN as u64;
        s.send_credit.consume(raw);
        s.send_queued -= raw;
        let fin = s.send_queue.is_empty() && s.send_state == SendState::FinPending;
        if fin {
            s.send_state = SendState::FinSent;
        }
        if s.writer_blocked
            && s.send_queued <= stream_limit / 2
            && self.send_buffered - raw <= self.config.connection_send_buffer / 2
        {
            s.writer_blocked = false;
            self.events.push_back(Event::StreamWritable(id));
        }
        self.conn_credit.consume(raw);
        self.send_buffered -= raw;
        if self.send_buffered == 0 {
            self.tx_ran_dry = true;
        }
        self.stats.data_raw_sent += raw;
        self.stats.data_wire_sent += payload.len() as u64;
        if !self.conn_blocked.is_empty() {
            self.notify_conn_writable();
        }
        let frame = Frame::Data(Data {
            stream: id,
            encoding,
            payload,
            fin,
        });
        Some((self.emit(frame, id, interactive), wire, fin))
    }

    fn data_frame_limit(&self) -> u64 {
        let peer_max = self.peer.as_ref().map_or(0, |p| p.max_frame_payload);
        self.config.data_frame_size.min(peer_max) as u64
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if self.peer.is_none() {
            match frame {
                Frame::Hello(h) => self.handle_hello(now, h),
                Frame::GoAway(g) => self.handle_goaway(g),
                other => self.fail(
                    ErrorCode::ProtocolError,
                    format!(
                        "expected HELLO as the first frame, got {}",
                        frame_name(&other)
                    ),
                ),
            }
            return;
        }
        match frame {
            Frame::Hello(_) => self.fail(ErrorCode::ProtocolError, "second HELLO".into()),
            Frame::Open(o) => self.handle_open(o),
            Frame::Data(d) => self.handle_data(d),
            Frame::Window(w) => self.handle_window(w),
            Frame::Reset(r) => self.handle_reset(r),
            Frame::Ping(p) => self.push_reply(Frame::Pong(p), false),
            Frame::Stop(st) => self.handle_stop(st),
            Frame::Pong(p) => {
                if let Some((seq, sent)) = self.ping_outstanding {
                    if p.0 == seq.to_be_bytes() {
                        self.ping_outstanding = None;
                        let sample = now.saturating_duration_since(sent);
                        self.rtt.update(sample);
                        self.tx_link.on_rtt(now, sample);
                        self.rx_link.on_rtt(now, sample);
                    }
                }
            }
            Frame::GoAway(g) => self.handle_goaway(g),
            Frame::Ignored { ty } => debug!(ty, "dwcp: skipped ignorable frame"),
        }
    }

    fn handle_hello(&mut self, now: Instant, h: Hello) {
        let (lo, hi) = (self.config.min_version, self.config.max_version);
        if h.max_version < lo || h.min_version > hi {
            let older = if h.max_version < lo {
                "the peer"
            } else {
                "this side"
            };
            self.fail(
                ErrorCode::VersionMismatch,
                format!(
                    "no common protocol version: this side speaks {lo}..={hi}, the peer speaks {}..={}; upgrade {older}",
                    h.min_version, h.max_version
                ),
            );
            return;
        }
        let missing = self
            .config
            .required_capabilities
            .missing_from(h.capabilities);
        if missing.0 != 0 {
            self.fail(
                ErrorCode::MissingCapability,
                format!(
                    "the peer lacks required capabilities {:?}; enable them on the peer or drop them from required_capabilities",
                    missing.names()
                ),
            );
            return;
        }
        let missing = h.required.missing_from(self.config.capabilities);
        if missing.0 != 0 {
            self.fail(
                ErrorCode::MissingCapability,
                format!(
                    "the peer requires capabilities {:?} that this side does not offer; enable them here",
                    missing.names()
                ),
            );
            return;
        }
        if h.max_frame_payload < 1024 || h.initial_stream_window < 1024 {
            self.fail(
                ErrorCode::HandshakeFailed,
                "peer's max_frame_payload or initial_stream_window is below 1 KiB".into(),
            );
            return;
        }
        self.version = h.max_version.min(hi);
        self.conn_credit = SendCredit::new(h.initial_connection_window);
        self.class_map = self.map_classes(&h.class_names);
        self.peer = Some(h);
        self.state = State::Open;
        self.next_ping = now;
        self.events.push_back(Event::Connected);
    }

    fn handle_open(&mut self, o: Open) {
        let id = o.stream;
        if self.is_local_id(id) {
            self.fail(
                ErrorCode::ProtocolError,
                format!("peer opened stream {id}, an id reserved for this side"),
            );
            return;
        }
        if id <= self.max_remote {
            if !self.skipped_remote.remove(&id) {
                self.fail(
                    ErrorCode::ProtocolError,
                    format!("peer opened stream {id} twice"),
                );
                return;
            }
        } else {
            // Ids between the previous highest and this one are still to come
            // (on other lanes); remember them, within a bound.
            let gap = (id - self.max_remote) / 2;
            let gap = gap.saturating_sub(1) as usize;
            if self.skipped_remote.len() + gap > self.config.max_streams as usize {
                self.fail(
                    ErrorCode::ProtocolError,
                    format!(
                        "peer skipped more than {} stream ids",
                        self.config.max_streams
                    ),
                );
                return;
            }
            let first = if self.max_remote == 0 {
                if self.side == Side::Server {
                    1
                } else {
                    2
                }
            } else {
                self.max_remote + 2
            };
            let mut skipped = first;
            while skipped < id {
                self.skipped_remote.insert(skipped);
                skipped += 2;
            }
            self.max_remote = id;
        }
        let refused_by_goaway = self.goaway_sent && id > self.goaway_last;
        if refused_by_goaway || self.remote_open >= self.config.max_streams {
            self.stats.streams_refused += 1;
            debug!(id, "dwcp: refusing stream");
            let interactive = o.options.contains(crate::frame::StreamOptions::INTERACTIVE);
            self.push_reply(
                Frame::Reset(Reset {
                    stream: id,
                    code: ErrorCode::RefusedStream,
                }),
                interactive,
            );
            self.events.push_back(Event::StreamClosed(id));
            return;
        }
        let class = self.local_class(o.class);
        let Some(peer) = &self.peer else { return };
        let params = OpenParams {
            class,
            priority: o.priority,
            weight: o.weight,
            options: o.options,
            route: o.route,
        };
        let s = Stream::new(
            params,
            peer.initial_stream_window,
            self.config.initial_stream_window,
            self.config.max_stream_window,
        );
        let target = self.initial_window_target();
        let mut s = s;
        if s.recv_window.grow_to(target) {
            s.window_pending = true;
            self.window_queue.push_back(id);
        }
        if s.interactive() {
            self.interactive.insert(id);
        }
        self.streams.insert(id, s);
        self.remote_open += 1;
        self.stats.streams_opened_remote += 1;
        self.events.push_back(Event::StreamOpened(id));
    }

    fn handle_data(&mut self, d: Data) {
        let id = d.stream;
        let raw = d.raw_len();
        if let Some(enc) = d.encoding {
            if enc.raw_len > self.config.max_decoded_frame {
                self.fail(
                    ErrorCode::DecompressionLimit,
                    format!(
                        "DATA on stream {id} declares {} decoded bytes, above the limit of {}",
                        enc.raw_len, self.config.max_decoded_frame
                    ),
                );
                return;
            }
        }
        if let Err(e) = self.conn_recv.on_receive(raw) {
            self.fail(
                ErrorCode::ConnectionBufferExceeded,
                format!(
                    "peer sent {} bytes, beyond the {} allowed on the connection",
                    e.received, e.allowed
                ),
            );
            return;
        }
        self.stats.data_raw_received += raw;
        self.stats.data_wire_received += d.payload.len() as u64;
        let ci = d.encoding.map_or(0, |e| e.codec as usize).min(2);
        self.stats.raw_received_by_codec[ci] += raw;
        self.stats.wire_received_by_codec[ci] += d.payload.len() as u64;
        let discard = match self.streams.get(&id) {
            None if self.is_closed_id(id) => true,
            None => {
                self.fail(
                    ErrorCode::ProtocolError,
                    format!("DATA on stream {id}, which was never opened"),
                );
                return;
            }
            // The peer's direction was already reset or refused.
            Some(s) => s.recv_state == RecvState::ResetReceived,
        };
        if discard {
            // Data in flight for a stream that is gone: return its credit.
            self.conn_recv.on_consume(raw);
            if self.conn_recv.wants_update() {
                self.conn_window_pending = true;
            }
            return;
        }
        let codecs = self.config.codecs;
        let max_decoded = self.config.max_decoded_frame;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.recv_state != RecvState::Open {
            self.fail(
                ErrorCode::StreamStateError,
                format!("DATA on stream {id} after its FIN"),
            );
            return;
        }
        if let Err(e) = s.recv_window.on_receive(raw) {
            self.fail(
                ErrorCode::StreamBufferExceeded,
                format!(
                    "peer sent {} bytes on stream {id}, beyond the {} allowed",
                    e.received, e.allowed
                ),
            );
            return;
        }
        let bytes = match d.encoding {
            None if d.payload.len() < COPY_THRESHOLD => Bytes::copy_from_slice(&d.payload),
            None => d.payload,
            Some(enc) => {
                if codecs & enc.codec.bit() == 0 {
                    self.fail(
                        ErrorCode::CompressionError,
                        format!(
                            "DATA uses codec {}, which this side did not offer",
                            enc.codec.name()
                        ),
                    );
                    return;
                }
                let t0 = std::time::Instant::now();
                let r = codec::decompress(enc, &d.payload, max_decoded);
                self.stats.decompress_nanos += t0.elapsed().as_nanos() as u64;
                match r {
                    Ok(b) => b,
                    Err(e) => {
                        self.fail(e.code(), format!("stream {id}: {e}"));
                        return;
                    }
                }
            }
        };
        let interactive = s.interactive();
        if interactive {
            tracing::trace!(id, raw, fin = d.fin, "dwcp: DATA on an interactive stream");
        }
        if d.fin {
            s.recv_state = if s.reader_gone {
                RecvState::Done
            } else {
                RecvState::FinReceived
            };
        }
        if s.reader_gone {
            // Stopped: discard, and return the credit while the peer still sends.
            self.release_recv_credit(id, raw);
        } else {
            if !bytes.is_empty() {
                s.recv_queue.push_back(bytes);
            }
            if !s.readable_pending && (raw > 0 || d.fin) {
                s.readable_pending = true;
                self.events.push_back(Event::StreamReadable(id));
            }
        }
        if d.fin {
            let acked = !self.streams.get(&id).is_some_and(|s| s.stop_sent);
            if acked {
                // Everything arrived: tell the writer (its `stopped()` ends).
                self.control.push_back((
                    Frame::Stop(Stop {
                        stream: id,
                        code: ErrorCode::NoError,
                    }),
                    interactive,
                ));
            }
            self.maybe_forget(id);
        }
    }

    fn handle_window(&mut self, w: Window) {
        if w.stream == 0 {
            if !self.conn_credit.grant(w.credit) {
                self.fail(
                    ErrorCode::FlowControlError,
                    "connection credit above 2^31-1".into(),
                );
            }
            return;
        }
        let id = w.stream;
        let closed = self.is_closed_id(id);
        match self.streams.get_mut(&id) {
            Some(s) => {
                if !s.send_credit.grant(w.credit) {
                    self.fail(
                        ErrorCode::FlowControlError,
                        format!("credit for stream {id} above 2^31-1"),
                    );
                    return;
                }
                if s.sendable() {
                    self.sched
                        .push(s.params.class, id, &mut s.sched, self.last_now);
                }
            }
            None if closed => {}
            None => self.fail(
                ErrorCode::ProtocolError,
                format!("WINDOW for stream {id}, which was never opened"),
            ),
        }
    }

    fn handle_reset(&mut self, r: Reset) {
        let id = r.stream;
        self.stats.resets_received += 1;
        match self.streams.get(&id) {
            Some(s) if s.recv_state == RecvState::Open => {
                if r.code == ErrorCode::RefusedStream {
                    // Never processed: neither direction goes on.
                    self.abort_recv(id, StreamError::Refused);
                    self.abort_send(id, Some(StreamError::Refused), None);
                } else {
                    self.abort_recv(id, StreamError::Reset(r.code));
                }
                self.events
                    .push_back(Event::StreamReset { id, code: r.code });
            }
            // The peer's direction already ended (FIN): nothing is lost.
            Some(_) => {}
            None if self.is_closed_id(id) => {}
            None => self.fail(
                ErrorCode::ProtocolError,
                format!("RESET for stream {id}, which was never opened"),
            ),
        }
    }

    fn handle_stop(&mut self, st: Stop) {
        let id = st.stream;
        match self.streams.get(&id).map(|s| s.send_state) {
            Some(SendState::Open | SendState::FinPending) => {
                // Answer with RESET so the peer's direction ends too.
                self.abort_send(id, Some(StreamError::Stopped(st.code)), Some(st.code));
            }
            // After the FIN the STOP is the peer's final answer: NO_ERROR
            // acknowledges everything, any other code says it went unread.
            Some(SendState::FinSent) => self.events.push_back(fin_answer(id, st.code)),
            Some(SendState::ResetSent) => {}
            None if self.is_closed_id(id) => self.events.push_back(fin_answer(id, st.code)),
            None => self.fail(
                ErrorCode::ProtocolError,
                format!("STOP for stream {id}, which was never opened"),
            ),
        }
    }

    fn handle_goaway(&mut self, g: GoAway) {
        if g.code != ErrorCode::NoError {
            warn!(code = %g.code, reason = %g.reason, "dwcp: peer closed the connection");
            self.terminate(
                ConnectionError::Remote {
                    code: g.code,
                    reason: g.reason,
                },
                State::Closed,
            );
            return;
        }
        if self.peer.is_none() {
            self.fail(ErrorCode::ProtocolError, "GOAWAY before HELLO".into());
            return;
        }
        let first = self.goaway_recv.is_none();
        self.goaway_recv = Some(g.last_stream);
        // Streams of ours the peer will never process were refused.
        let mut refused: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(id, s)| {
                s.recv_state == RecvState::Open && self.is_local_id(**id) && **id > g.last_stream
            })
            .map(|(id, _)| *id)
            .collect();
        refused.sort_unstable();
        for id in refused {
            self.abort_recv(id, StreamError::Refused);
            self.abort_send(id, Some(StreamError::Refused), None);
            self.events.push_back(Event::StreamReset {
                id,
                code: ErrorCode::RefusedStream,
            });
        }
        if self.state == State::Open {
            self.state = State::Draining;
        }
        if first {
            self.events.push_back(Event::GoAway {
                last_stream: g.last_stream,
                reason: g.reason,
            });
        }
        if !self.goaway_sent {
            self.goaway("peer is draining");
        }
    }
}

fn frame_stream(f: &Frame) -> StreamId {
    match f {
        Frame::Open(o) => o.stream,
        Frame::Data(d) => d.stream,
        Frame::Window(w) => w.stream,
        Frame::Reset(r) => r.stream,
        Frame::Stop(st) => st.stream,
        _ => 0,
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello(_) => "HELLO",
        Frame::Open(_) => "OPEN",
        Frame::Data(_) => "DATA",
        Frame::Window(_) => "WINDOW",
        Frame::Reset(_) => "RESET",
        Frame::Stop(_) => "STOP",
        Frame::Ping(_) => "PING",
        Frame::Pong(_) => "PONG",
        Frame::GoAway(_) => "GOAWAY",
        Frame::Ignored { .. } => "an ignorable frame",
    }
}
