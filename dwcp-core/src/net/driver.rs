//! The thin async driver: one task moves frames from the protocol core to the
//! transport lanes and runs timers; one task per lane reads bytes into the core;
//! one task per lane writes frames with vectored writes.
//!
//! The core sits behind a `std::sync::Mutex` held only for short, non-blocking
//! calls; every change to it is followed by [`Inner::dispatch`], which turns
//! core events into task wake-ups, so no wake-up is lost.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tracing::debug;

use crate::{Connection as Core, ConnectionError, ErrorCode, Event, StreamId, Transmit};

/// Frames queued per TCP or in-memory lane before the driver waits for the
/// lane writer. Several streams share a lane, so the queue is kept short (with
/// `TCP_NOTSENT_LOWAT` below it) to let the scheduler, not a queue, decide the
/// order: a 1 KiB message waits behind at most this many frames of its lane.
pub(crate) const LANE_QUEUE: usize = 4;
/// Frames queued per QUIC stream: each carries a single DWCP stream, and a
/// stream whose queue is full is paused in the scheduler, so the depth only
/// batches writes; kept small so weights, not queue depth, share the link.
pub(crate) const QUIC_QUEUE: usize = 16;
/// Frames written per vectored write.
const WRITE_BATCH: usize = 32;
/// Read-ahead of a lane and most bytes handed to the core at once.
const READ_CHUNK: usize = 64 * 1024;

/// Where the connection stands, published to handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Handshaking,
    Established,
    Closed(Option<ConnectionError>),
}

/// A lane's writer: frames are sent here in order; dropping the sender
/// finishes the lane after the queued frames are written.
pub(crate) type LaneTx = mpsc::Sender<Transmit>;

/// How frames are mapped onto the transport.
#[derive(Debug)]
pub(crate) enum Routing {
    /// N ordered byte lanes (TCP or in-memory): stream `id` uses lane `id % N`,
    /// connection frames lane 0.
    Lanes(Vec<LaneTx>),
    /// QUIC: connection frames on the control stream, each DWCP stream on its
    /// own QUIC stream (no head-of-line blocking between DWCP streams).
    Quic {
        conn: quinn::Connection,
        control: LaneTx,
        streams: HashMap<StreamId, LaneTx>,
    },
}

/// Transport-level figures (RTT and loss as the transport sees them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransportStats {
    /// `quic`, `tcp` or `memory`.
    pub kind: &'static str,
    /// Smoothed RTT reported by the transport.
    pub rtt: Option<std::time::Duration>,
    /// Minimum RTT reported by the transport (QUIC only).
    pub min_rtt: Option<std::time::Duration>,
    /// Packets (QUIC) or segments (TCP) sent.
    pub sent_packets: u64,
    /// Packets lost (QUIC) or segments retransmitted (TCP).
    pub lost_packets: u64,
    /// `lost_packets / sent_packets`.
    pub loss_rate: f64,
    /// Congestion window in bytes (sum over lanes for TCP).
    pub cwnd: u64,
    /// Number of lanes (TCP) or QUIC streams in use.
    pub lanes: usize,
    /// Bytes the peer acknowledged (TCP) or sent minus lost (QUIC), if known.
    pub delivered_bytes: Option<u64>,
}

/// Reads transport statistics.
pub(crate) type StatsFn = Box<dyn Fn() -> TransportStats + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) core: Core,
    read_wakers: HashMap<StreamId, Waker>,
    write_wakers: HashMap<StreamId, Waker>,
    pub(crate) accept: VecDeque<StreamId>,
    accept_wakers: Vec<Waker>,
    pub(crate) routing: Routing,
    /// Streams closed by the core whose QUIC stream is finished once the
    /// frames already produced for them are queued.
    closing: Vec<StreamId>,
    /// Finished streams whose `SendStream` is alive, and the peer's answer
    /// to the FIN once it came: `NO_ERROR` if it acknowledged everything
    /// ([`Event::StreamAcked`]), else its STOP code ([`Event::StreamStopped`]).
    /// One entry per live handle, removed when it is dropped.
    acks: HashMap<StreamId, Option<ErrorCode>>,
    phase: watch::Sender<Phase>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

/// State shared by the driver, the lane tasks and the API handles.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) wake_driver: Notify,
    pub(crate) phase: watch::Receiver<Phase>,
    pub(crate) stats: StatsFn,
    pub(crate) peer_identity: Option<String>,
    pub(crate) remote_addr: Option<std::net::SocketAddr>,
    /// Configured WAN rate cap in bytes/s, if any.
    pub(crate) link_rate: Option<f64>,
    /// Compression figures per traffic class.
    pub(crate) compression: Mutex<std::collections::BTreeMap<u8, ClassCompression>>,
    /// QUIC stream writers still running (see [`Shared::writers_idle`]).
    writers: watch::Sender<usize>,
    /// Urgent QUIC writers waiting for send-window room; bulk writers stand
    /// aside while it is above zero (see [`write_quic_frames`]).
    pub(crate) urgent: watch::Sender<usize>,
}

/// Counts a running QUIC stream writer; dropped when it is done.
pub(crate) struct WriterGuard(Arc<Shared>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.writers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Compression figures of one traffic class on a connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassCompression {
    /// Raw bytes handed to the codec layer.
    pub raw: u64,
    /// Bytes after encoding.
    pub wire: u64,
    /// Time spent compressing.
    pub cpu: std::time::Duration,
    /// Level chosen for the last chunk (`none`, `lz4`, `zstd3`...): the
    /// codec the class uses now.
    pub current: String,
    /// CPU time spent per level label (`none` counts sampling and
    /// exploration of chunks sent as-is).
    pub cpu_by_codec: std::collections::BTreeMap<String, std::time::Duration>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("peer_identity", &self.peer_identity)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        core: Core,
        routing: Routing,
        stats: StatsFn,
        peer_identity: Option<String>,
        remote_addr: Option<std::net::SocketAddr>,
        link_rate: Option<f64>,
    ) -> Arc<Shared> {
        let (tx, rx) = watch::channel(Phase::Handshaking);
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                core,
                read_wakers: HashMap::new(),
                write_wakers: HashMap::new(),
                accept: VecDeque::new(),
                accept_wakers: Vec::new(),
                routing,
                closing: Vec::new(),
                acks: HashMap::new(),
                phase: tx,
            }),
            wake_driver: Notify::new(),
            phase: rx,
            stats,
            peer_identity,
            remote_addr,
            link_rate,
            compression: Mutex::new(Default::default()),
            writers: watch::channel(0).0,
            urgent: watch::channel(0).0,
        })
    }

    /// Registers a QUIC stream writer (before it is spawned).
    pub(crate) fn writer_guard(self: &Arc<Self>) -> WriterGuard {
        self.writers.send_modify(|n| *n += 1);
        WriterGuard(self.clone())
    }

    /// Waits until every QUIC stream writer has delivered its data: closing
    /// the QUIC connection earlier would discard what is still unacknowledged.
    pub(crate) async fn writers_idle(&self) {
        let mut rx = self.writers.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Wire rate (bytes/s) one backlogged stream can expect now: the
    /// transport's congestion window over its RTT, capped by the configured
    /// link rate, shared among the streams waiting to send. `None` if unknown.
    pub(crate) fn rate_hint(&self) -> Option<f64> {
        let estimate = self.lock().core.link_estimate().bottleneck_bw();
        let transport = match estimate {
            Some(bw) => Some(bw),
            None => {
                let t = (self.stats)();
                match t.rtt {
                    Some(rtt) if t.cwnd > 0 && !rtt.is_zero() => {
                        Some(t.cwnd as f64 / rtt.as_secs_f64())
                    }
                    _ => None,
                }
            }
        };
        let rate = match (transport, self.link_rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        let waiting = self.lock().core.backlogged_streams().max(1);
        Some(rate / waiting as f64)
    }

    /// Locks the state. A poisoned lock (a panic elsewhere) is still usable:
    /// the core is never left half-updated by the short calls made under it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the connection state under the lock, turns the core's
    /// events into wake-ups ([`Inner::dispatch`]), releases the lock, then
    /// wakes the driver so that what `f` queued is sent: lock → operate →
    /// dispatch → unlock → notify, in one place.
    pub(crate) fn with_core<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.lock();
        let r = f(&mut inner);
        inner.dispatch();
        drop(inner);
        self.wake_driver.notify_one();
        r
    }

    /// Reports a failed lane.
    pub(crate) fn transport_failed(&self, reason: &str) {
        self.with_core(|inner| inner.core.handle_transport_error(reason));
    }
}

impl Inner {
    pub(crate) fn register_read(&mut self, id: StreamId, w: &Waker) {
        self.read_wakers.insert(id, w.clone());
    }

    pub(crate) fn register_write(&mut self, id: StreamId, w: &Waker) {
        self.write_wakers.insert(id, w.clone());
    }

    pub(crate) fn register_accept(&mut self, w: &Waker) {
        if !self.accept_wakers.iter().any(|x| x.will_wake(w)) {
            self.accept_wakers.push(w.clone());
        }
    }

    pub(crate) fn forget_read_waker(&mut self, id: StreamId) {
        self.read_wakers.remove(&id);
    }

    pub(crate) fn forget_write_waker(&mut self, id: StreamId) {
        self.write_wakers.remove(&id);
    }

    /// Starts tracking the peer's acknowledgement of stream `id`'s FIN.
    pub(crate) fn await_ack(&mut self, id: StreamId) {
        self.acks.entry(id).or_insert(None);
    }

    /// Whether the peer acknowledged everything sent on `id`.
    pub(crate) fn acked(&self, id: StreamId) -> bool {
        self.acks.get(&id) == Some(&Some(ErrorCode::NoError))
    }

    /// The code of the peer's STOP after `id`'s FIN, if it stopped reading
    /// before it had everything.
    pub(crate) fn stopped_after_fin(&self, id: StreamId) -> Option<ErrorCode> {
        match self.acks.get(&id) {
            Some(&Some(code)) if code != ErrorCode::NoError => Some(code),
            _ => None,
        }
    }

    /// Stops tracking `id`'s acknowledgement (its writer is gone).
    pub(crate) fn forget_ack(&mut self, id: StreamId) {
        self.acks.remove(&id);
    }

    fn wake_all(&mut self) {
        for (_, w) in self.read_wakers.drain() {
            w.wake();
        }
        for (_, w) in self.write_wakers.drain() {
            w.wake();
        }
        for w in self.accept_wakers.drain(..) {
            w.wake();
        }
    }

    /// Turns core events into wake-ups. Call after every change to the core.
    pub(crate) fn dispatch(&mut self) {
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::Connected => {
                    self.phase.send_replace(Phase::Established);
                }
                Event::StreamOpened(id) => {
                    self.accept.push_back(id);
                    for w in self.accept_wakers.drain(..) {
                        w.wake();
                    }
                }
                Event::StreamReadable(id) => {
                    if let Some(w) = self.read_wakers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamWritable(id) => {
                    if let Some(w) = self.write_wakers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamReset { id, .. } => {
                    if let Some(w) = self.read_wakers.remove(&id) {
                        w.wake();
                    }
                    if let Some(w) = self.write_wakers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamAcked(id) | Event::StreamStopped { id, .. } => {
                    if let Some(a) = self.acks.get_mut(&id) {
                        *a = Some(match ev {
                            Event::StreamStopped { code, .. } => code,
                            _ => ErrorCode::NoError,
                        });
                        if let Some(w) = self.write_wakers.remove(&id) {
                            w.wake();
                        }
                    }
                }
                Event::StreamClosed(id) => {
                    if matches!(self.routing, Routing::Quic { .. }) {
                        self.closing.push(id);
                    }
                }
                Event::GoAway { .. } => {
                    for w in self.accept_wakers.drain(..) {
                        w.wake();
                    }
                }
                Event::Drained => {
                    self.phase.send_replace(Phase::Closed(None));
                    self.wake_all();
                }
                Event::Lost(e) => {
                    self.phase.send_replace(Phase::Closed(Some(e)));
                    self.wake_all();
                }
            }
        }
    }

    /// The lane a frame goes to, with a key identifying the lane; for QUIC,
    /// opens a QUIC stream for a new local stream. On byte lanes, connection
    /// frames and interactive streams use lane 0 and bulk streams the others,
    /// so small messages never queue behind bulk frames in a lane.
    ///
    /// The lane follows from the frame alone ([`Transmit::interactive`] is
    /// decided when the core queued it), never from what the core still
    /// remembers of the stream: a FIN or RESET queued just before the core
    /// forgot its stream must take the lane of the stream's data, or it
    /// overtakes that data.
    fn route(&mut self, t: &Transmit, shared: &Arc<Shared>) -> Option<(u64, LaneTx)> {
        let stream = t.stream;
        let interactive = stream != 0 && t.interactive;
        match &mut self.routing {
            Routing::Lanes(lanes) => {
                let n = lanes.len();
                if n == 0 {
                    return None;
                }
                let i = if stream == 0 || interactive || n == 1 {
                    0
                } else {
                    1 + stream as usize % (n - 1)
                };
                lanes.get(i).cloned().map(|l| (i as u64, l))
            }
            Routing::Quic {
                conn,
                control,
                streams,
            } => {
                if stream == 0 {
                    return Some((0, control.clone()));
                }
                if let Some(tx) = streams.get(&stream) {
                    return Some((stream as u64, tx.clone()));
                }
                let local = (stream % 2 == 1) == (self.core.side() == crate::Side::Client);
                if !local {
                    debug!(
                        stream,
                        "dwcp: dropping a frame for a peer stream with no QUIC stream"
                    );
                    return None;
                }
                // A stream of ours with no QUIC stream yet: its OPEN is the first frame.
                let (tx, rx) = mpsc::channel(QUIC_QUEUE);
                let conn = conn.clone();
                let guard = shared.writer_guard();
                let shared = shared.clone();
                tokio::spawn(async move {
                    match conn.open_bi().await {
                        Ok((send, recv)) => {
                            if interactive {
                                // quinn sends higher priorities first (the
                                // control stream has 2).
                                let _ = send.set_priority(1);
                            }
                            tokio::spawn(read_lane(recv, shared.clone(), LaneRole::QuicStream));
                            write_quic_lane(send, rx, shared, guard).await;
                        }
                        Err(e) => shared.transport_failed(&format!("opening a QUIC stream: {e}")),
                    }
                });
                streams.insert(stream, tx.clone());
                Some((stream as u64, tx))
            }
        }
    }
}

/// What a lane carries, for end-of-stream handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneRole {
    /// Carries connection frames (TCP lane 0, QUIC control): gates nothing.
    Control,
    /// Another TCP/in-memory lane: waits for the handshake; EOF is a failure.
    Lane,
    /// A QUIC stream carrying one DWCP stream: waits for the handshake; EOF is normal.
    QuicStream,
}

/// Most frames the driver holds for full lanes before it stops pulling
/// frames altogether (each paused stream holds at most one DATA frame; the
/// rest are small control frames).
const MAX_STASHED: usize = 1024;

/// Frames waiting for room on their lane, and the streams paused for them.
#[derive(Default)]
struct Stash {
    lanes: HashMap<u64, (LaneTx, VecDeque<Transmit>, Vec<StreamId>)>,
    frames: usize,
}

impl Stash {
    fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    fn is_full(&self) -> bool {
        self.frames >= MAX_STASHED
    }

    /// Sends `t` on `lane` unless the lane is full or already has frames
    /// waiting; returns whether the frame was stashed instead.
    fn send_or_stash(&mut self, key: u64, lane: LaneTx, t: Transmit) -> bool {
        if let Some((_, q, _)) = self.lanes.get_mut(&key) {
            q.push_back(t);
            self.frames += 1;
            return true;
        }
        match lane.try_send(t) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(t)) => {
                self.lanes
                    .insert(key, (lane, VecDeque::from([t]), Vec::new()));
                self.frames += 1;
                true
            }
        }
    }

    /// Records that `stream` was paused for lane `key`.
    fn paused(&mut self, key: u64, stream: StreamId) {
        if let Some((_, _, p)) = self.lanes.get_mut(&key) {
            if !p.contains(&stream) {
                p.push(stream);
            }
        }
    }

    /// Moves frames to lanes with room; returns the streams to resume.
    fn flush(&mut self) -> Vec<StreamId> {
        let mut resumed = Vec::new();
        let mut sent = 0;
        self.lanes.retain(|_, (lane, q, paused)| {
            while let Some(t) = q.front() {
                match lane.try_reserve() {
                    Ok(permit) => {
                        permit.send(t.clone());
                        q.pop_front();
                        sent += 1;
                    }
                    Err(mpsc::error::TrySendError::Full(())) => return true,
                    Err(mpsc::error::TrySendError::Closed(())) => {
                        sent += q.len();
                        q.clear();
                    }
                }
            }
            resumed.append(paused);
            false
        });
        self.frames -= sent;
        resumed
    }

    /// The lanes with frames waiting.
    fn lanes(&self) -> Vec<LaneTx> {
        self.lanes.values().map(|(l, _, _)| l.clone()).collect()
    }
}

/// The driver task: transmit, timers, shutdown.
pub(crate) async fn drive(shared: Arc<Shared>) {
    // Frames waiting for a full lane, in order per lane. A stream with a frame
    // waiting here is paused in the scheduler until its lane has room, so a
    // full bulk lane never holds up an interactive stream on another lane.
    let mut stash = Stash::default();
    let mut next_feed = Instant::now();
    loop {
        if Instant::now() >= next_feed {
            // Transport figures for the link estimator, ten times a second.
            next_feed = Instant::now() + std::time::Duration::from_millis(100);
            let t = (shared.stats)();
            if let Some(d) = t.delivered_bytes {
                let mut inner = shared.lock();
                let loss = (t.sent_packets > 0).then_some(t.loss_rate);
                inner.core.on_transport_delivered(Instant::now(), d, loss);
            }
        }
        // Flush stashed frames whose lane has room again (or is closed), and
        // resume the streams they held back.
        let resumed = stash.flush();
        let (timeout, done) = {
            let mut inner = shared.lock();
            for id in resumed {
                inner.core.resume_stream(id);
            }
            let now = Instant::now();
            if inner.core.poll_timeout().is_some_and(|t| t <= now) {
                inner.core.handle_timeout(now);
            }
            while !stash.is_full() {
                let Some(t) = inner.core.poll_transmit(now) else {
                    break;
                };
                let Some((key, lane)) = inner.route(&t, &shared) else {
                    continue;
                };
                let stream = t.stream;
                if t.interactive {
                    tracing::trace!(stream, len = t.len(), "dwcp: interactive frame to its lane");
                }
                if stash.send_or_stash(key, lane, t) {
                    // Held back: stop scheduling this stream until there is room.
                    if stream != 0 {
                        inner.core.pause_stream(stream);
                        stash.paused(key, stream);
                    }
                }
            }
            inner.dispatch();
            if stash.is_empty() {
                // Every frame of these streams is queued: dropping the sender
                // finishes the QUIC stream after them.
                let closing = std::mem::take(&mut inner.closing);
                if let Routing::Quic { streams, .. } = &mut inner.routing {
                    for id in closing {
                        streams.remove(&id);
                    }
                }
            }
            (inner.core.poll_timeout(), inner.core.is_closed())
        };
        let waiting = !stash.is_empty();
        if done && !waiting {
            break;
        }
        let t = timeout.map_or(next_feed, |t| t.min(next_feed));
        if waiting {
            // Room on any stashed lane, new work, or a timer.
            let lanes = stash.lanes();
            let room =
                futures_util::future::select_all(lanes.iter().map(|l| Box::pin(l.reserve())));
            tokio::select! {
                _ = room => {}
                _ = shared.wake_driver.notified() => {}
                _ = tokio::time::sleep_until(t.into()) => {}
            }
            continue;
        }
        tokio::select! {
            _ = shared.wake_driver.notified() => {}
            _ = tokio::time::sleep_until(t.into()) => {}
        }
    }
    // Closed: drop every lane sender so the writers flush and finish.
    let mut inner = shared.lock();
    inner.dispatch();
    match &mut inner.routing {
        Routing::Lanes(l) => l.clear(),
        Routing::Quic { streams, .. } => streams.clear(),
    }
    // The QUIC control sender is dropped with the routing below.
    let routing = std::mem::replace(&mut inner.routing, Routing::Lanes(Vec::new()));
    drop(inner);
    drop(routing);
    debug!("dwcp: driver finished");
}

/// Read-ahead of a TCP or in-memory lane (shared by many streams).
const LANE_READ_AHEAD: usize = READ_CHUNK;
/// Read-ahead of a QUIC stream (one DWCP stream) or of the QUIC control
/// stream: enough for runs of small frames (WINDOW, OPEN); larger payloads
/// are read straight into their own buffers.
const QUIC_READ_AHEAD: usize = 1024;
/// Most bytes of whole frames, already read ahead, handed to the core at once.
const INPUT_BATCH: usize = READ_CHUNK;

/// Reads one frame into a buffer of exactly its size (header and payload).
///
/// Payloads delivered to the application are slices of this buffer, so an
/// unread payload keeps alive its own frame and nothing else: memory held by
/// received data stays within what the receive windows allow, however many
/// streams hold unread data. (A shared read buffer would let every unread
/// payload pin a whole read chunk, and a per-stream one would hold a chunk
/// per idle stream.) A header whose length exceeds `max` is returned alone,
/// for the core to refuse. `None` at EOF; a partial frame at EOF is dropped,
/// as the core could not use it either.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    max: u32,
) -> std::io::Result<Option<BytesMut>> {
    let mut head = [0u8; crate::frame::HEADER_LEN];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..]).await?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    let Some(h) = crate::frame::Header::peek(&head) else {
        return Ok(None);
    };
    if h.len > max {
        return Ok(Some(BytesMut::from(&head[..])));
    }
    let total = head.len() + h.len as usize;
    let mut frame = BytesMut::with_capacity(total);
    frame.extend_from_slice(&head);
    while frame.len() < total {
        let want = total - frame.len();
        // `limit` keeps the read inside the exact allocation.
        if r.read_buf(&mut (&mut frame).limit(want)).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(frame))
}

/// The next frame if it is already whole in `r`'s read-ahead (no I/O), in a
/// buffer of exactly its size.
fn buffered_frame<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    max: u32,
) -> Option<BytesMut> {
    use tokio::io::AsyncBufRead;
    let ahead = r.buffer();
    let h = crate::frame::Header::peek(ahead)?;
    if h.len > max {
        return None;
    }
    let total = crate::frame::HEADER_LEN + h.len as usize;
    if ahead.len() < total {
        return None;
    }
    let frame = BytesMut::from(&ahead[..total]);
    std::pin::Pin::new(r).consume(total);
    Some(frame)
}

/// Reads a lane into the core until EOF or error, frame by frame (see
/// [`read_frame`]); frames already whole in the read-ahead go to the core in
/// the same call.
pub(crate) async fn read_lane<R: AsyncRead + Unpin>(r: R, shared: Arc<Shared>, role: LaneRole) {
    let ahead = if role == LaneRole::Lane {
        LANE_READ_AHEAD
    } else {
        QUIC_READ_AHEAD
    };
    let mut r = tokio::io::BufReader::with_capacity(ahead, r);
    let max = shared
        .lock()
        .core
        .config()
        .max_frame_payload
        .min(crate::frame::MAX_FRAME_PAYLOAD_CEILING);
    let mut frames: Vec<BytesMut> = Vec::new();
    let mut phase = shared.phase.clone();
    loop {
        match read_frame(&mut r, max).await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => {
                if role == LaneRole::Lane {
                    // The peer closes every lane when it closes; give lane 0 a
                    // moment to deliver its GOAWAY, which says why.
                    let closed = async {
                        while !matches!(*phase.borrow_and_update(), Phase::Closed(_)) {
                            if phase.changed().await.is_err() {
                                return;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closed).await;
                }
                if role == LaneRole::Control && shared.lock().core.peer_sent_goaway() {
                    // The peer drained and ended its control lane; data of its
                    // last streams may still be in flight on other lanes or
                    // QUIC streams. The connection ends when our side drains
                    // too, or when the transport closes.
                    debug!("dwcp: peer ended its control lane after GOAWAY");
                    return;
                }
                if matches!(role, LaneRole::Control | LaneRole::Lane) {
                    shared.transport_failed("lane closed by the peer");
                }
                return;
            }
            Err(e) => {
                shared.transport_failed(&format!("lane read failed: {e}"));
                return;
            }
        }
        let mut batched = frames[0].len();
        while batched < INPUT_BATCH && frames.len() < WRITE_BATCH {
            let Some(f) = buffered_frame(&mut r, max) else {
                break;
            };
            batched += f.len();
            frames.push(f);
        }
        if role != LaneRole::Control {
            // Frames of streams must not overtake the peer's HELLO on the control lane.
            while *phase.borrow_and_update() == Phase::Handshaking {
                if phase.changed().await.is_err() {
                    return;
                }
            }
        }
        let mut inner = shared.lock();
        let now = Instant::now();
        for mut f in frames.drain(..) {
            inner.core.handle_input(now, &mut f);
        }
        inner.dispatch();
        let closed = inner.core.is_closed();
        drop(inner);
        shared.wake_driver.notify_one();
        if closed {
            return;
        }
    }
}

/// Reads a QUIC stream accepted from the peer: its first frame names the DWCP
/// stream, whose frames this side then sends on the stream's send half.
pub(crate) async fn read_accepted_quic(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
) {
    let mut head = [0u8; crate::frame::HEADER_LEN];
    if let Err(e) = recv.read_exact(&mut head).await {
        debug!("dwcp: accepted QUIC stream ended before its first frame: {e}");
        return;
    }
    let Some(h) = crate::frame::Header::peek(&head) else {
        return;
    };
    let (tx, rx) = mpsc::channel(QUIC_QUEUE);
    {
        let mut inner = shared.lock();
        if let Routing::Quic { streams, .. } = &mut inner.routing {
            streams.insert(h.stream, tx);
        }
    }
    tokio::spawn(write_quic_lane(
        send,
        rx,
        shared.clone(),
        shared.writer_guard(),
    ));
    let prefixed = tokio::io::AsyncReadExt::chain(&head[..], recv);
    read_lane(prefixed, shared, LaneRole::QuicStream).await;
}

/// Writes frames to a byte lane with vectored writes, then shuts it down.
pub(crate) async fn write_lane<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Transmit>,
    shared: Arc<Shared>,
) {
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(WRITE_BATCH * 2);
    while let Some(t) = rx.recv().await {
        push(&mut batch, t);
        while batch.len() < WRITE_BATCH * 2 {
            match rx.try_recv() {
                Ok(t) => push(&mut batch, t),
                Err(_) => break,
            }
        }
        if let Err(e) = write_all_vectored(&mut w, &mut batch).await {
            shared.transport_failed(&format!("lane write failed: {e}"));
            return;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

fn push(batch: &mut VecDeque<Bytes>, t: Transmit) {
    batch.push_back(t.header);
    if !t.payload.is_empty() {
        batch.push_back(t.payload);
    }
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    batch: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !batch.is_empty() {
        let n = {
            let slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
            w.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = batch.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                batch.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    w.flush().await
}

/// Longest time urgent writers hold bulk QUIC writers back. An urgent write
/// waits for room in quinn's send window, which acknowledgements free within
/// about a packet time once bulk stops taking it; a write blocked much longer
/// waits on something else (the peer's flow control), and bulk must not stall
/// behind it.
const URGENT_HOLD_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes frames to a QUIC stream without copying until the sender is
/// dropped. Returns false if the stream failed.
///
/// quinn admits written data into one connection-wide send window, whatever
/// the stream's priority: priorities order what is sent, not who may buffer.
/// When bulk writers keep that window full, an interactive write waits for
/// room and loses the race for it to bulk writers woken by the same
/// acknowledgement (quinn wakes blocked writers together, most recent first),
/// so a 1 KiB message waited up to two round trips behind bulk. So writers
/// are of two kinds: *urgent* ones (the control stream and interactive
/// streams, sent at a higher quinn priority) and bulk ones. An urgent write
/// that finds no room raises [`Shared::urgent`] until it is done; bulk writers
/// write chunk by chunk and stand aside while it is raised, so the next room
/// freed goes to the urgent write.
pub(crate) async fn write_quic_frames(
    send: &mut quinn::SendStream,
    mut rx: mpsc::Receiver<Transmit>,
    shared: &Arc<Shared>,
    control: bool,
) -> bool {
    let mut urgent = control;
    if control {
        let _ = send.set_priority(2);
    }
    let mut gate = shared.urgent.subscribe();
    // Grows to the batches actually written: thousands of QUIC streams each
    // have a writer, most of them writing a frame or two at a time.
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(t) = rx.recv().await {
        let stream = t.stream;
        if t.interactive && !urgent {
            // A stream the peer opened learns its class from its first frames.
            urgent = true;
            let _ = send.set_priority(1);
        }
        let t0 = Instant::now();
        batch.push(t.header);
        if !t.payload.is_empty() {
            batch.push(t.payload);
        }
        while batch.len() < WRITE_BATCH * 2 {
            match rx.try_recv() {
                Ok(t) => {
                    batch.push(t.header);
                    if !t.payload.is_empty() {
                        batch.push(t.payload);
                    }
                }
                Err(_) => break,
            }
        }
        let res = if urgent {
            write_urgent(send, &mut batch, shared).await
        } else {
            write_bulk(send, &mut batch, &mut gate).await
        };
        if let Err(e) = res {
            shared.transport_failed(&format!("QUIC stream write failed: {e}"));
            return false;
        }
        if urgent && !control {
            tracing::trace!(stream, waited = ?t0.elapsed(), "dwcp: interactive frames written to QUIC");
        }
        batch.clear();
    }
    true
}

/// Writes `batch` whole; if quinn has no room for it now, holds bulk writers
/// back (at most [`URGENT_HOLD_MAX`]) until it is written.
async fn write_urgent(
    send: &mut quinn::SendStream,
    batch: &mut [Bytes],
    shared: &Shared,
) -> Result<(), quinn::WriteError> {
    let mut start = 0;
    // The common case: room now, nothing to coordinate.
    while start < batch.len() {
        match futures_util::FutureExt::now_or_never(send.write_chunks(&mut batch[start..])) {
            Some(r) => start += r?.chunks,
            None => break,
        }
    }
    if start == batch.len() {
        return Ok(());
    }
    shared.urgent.send_modify(|n| *n += 1);
    struct Lower<'a>(Option<&'a Shared>);
    impl Lower<'_> {
        fn lower(&mut self) {
            if let Some(s) = self.0.take() {
                s.urgent.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
    }
    impl Drop for Lower<'_> {
        fn drop(&mut self) {
            self.lower();
        }
    }
    let mut hold = Lower(Some(shared));
    let deadline = tokio::time::Instant::now() + URGENT_HOLD_MAX;
    while start < batch.len() {
        tokio::select! {
            r = send.write_chunks(&mut batch[start..]) => start += r?.chunks,
            _ = tokio::time::sleep_until(deadline), if hold.0.is_some() => hold.lower(),
        }
    }
    Ok(())
}

/// Writes `batch` whole, standing aside (without writing) whenever an urgent
/// writer waits for room.
async fn write_bulk(
    send: &mut quinn::SendStream,
    batch: &mut [Bytes],
    gate: &mut watch::Receiver<usize>,
) -> Result<(), quinn::WriteError> {
    let mut start = 0;
    while start < batch.len() {
        if gate.wait_for(|n| *n == 0).await.is_err() {
            // The sender lives in `Shared`, which outlives every writer.
            return Ok(());
        }
        tokio::select! {
            // Checked first: a bulk writer woken by the same acknowledgement
            // as an urgent one must not take the room.
            biased;
            _ = gate.wait_for(|n| *n > 0) => {}
            r = send.write_chunks(&mut batch[start..]) => start += r?.chunks,
        }
    }
    Ok(())
}

/// Writes a DWCP stream's QUIC stream, then finishes it.
pub(crate) async fn write_quic_lane(
    mut send: quinn::SendStream,
    rx: mpsc::Receiver<Transmit>,
    shared: Arc<Shared>,
    guard: WriterGuard,
) {
    if write_quic_frames(&mut send, rx, &shared, false).await {
        let _ = send.finish();
        // Until the peer has everything (or gives up on the stream), so a
        // close after a drain never discards data in flight.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), send.stopped()).await;
    }
    drop(guard);
}
