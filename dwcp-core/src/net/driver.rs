//! The thin async driver, shared by every transport: one task moves frames
//! from the protocol core to the transport's queues and runs timers. Which
//! queue a frame goes to is the transport's business, behind the
//! [`Transport`] interface (`transport.rs`): `LaneRouter` in `lanes.rs` for
//! TCP and in-memory lanes, `QuicRouter` in `quic.rs` for QUIC streams.
//! Reading is in `reader.rs` (socket → reader task → core, for lanes and
//! QUIC streams alike); writing in `lanes.rs` (vectored writes) and
//! `quic.rs` (with the urgent/bulk write gating), both fed by the queues this
//! driver fills (writer → core → driver → lane writer → socket).
//!
//! The core sits behind a `std::sync::Mutex` held only for short, non-blocking
//! calls; every change to it is followed by [`Inner::dispatch`], which turns
//! core events into task wake-ups, so no wake-up is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};
use tracing::debug;

use crate::net::transport::{Closed, LaneTx, StatsFn, Transport};
use crate::{Connection as Core, ConnectionError, ErrorCode, Event, StreamId, Transmit};

/// Frames written per vectored write.
pub(crate) const WRITE_BATCH: usize = 32;
/// Where the connection stands, published to handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Handshaking,
    Established,
    Closed(Option<ConnectionError>),
}

/// A stream the peer opened, waiting to be accepted, with what its handle
/// needs from the OPEN: read when the core reports the stream, under the lock
/// `dispatch` already holds, so accepting does not look the stream up again.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) id: StreamId,
    pub(crate) route: Bytes,
    pub(crate) class: u8,
    /// The peer asked for its data to be sent uncompressed.
    pub(crate) no_compression: bool,
}

pub(crate) struct Inner {
    pub(crate) core: Core,
    read_wakers: HashMap<StreamId, Waker>,
    write_wakers: HashMap<StreamId, Waker>,
    pub(crate) accept: VecDeque<Opened>,
    accept_wakers: Vec<Waker>,
    pub(crate) transport: Box<dyn Transport>,
    /// Finished streams whose `SendStream` is alive, and the peer's answer
    /// to the FIN once it came: `NO_ERROR` if it acknowledged everything
    /// ([`Event::StreamAcked`]), else its STOP code ([`Event::StreamStopped`]).
    /// One entry per live handle, removed when it is dropped.
    acks: HashMap<StreamId, Option<ErrorCode>>,
    phase: watch::Sender<Phase>,
    /// The transport's congestion window over its RTT (bytes/s), as the
    /// driver last read it (ten times a second): the rate a sender falls
    /// back on without a link estimate, read without the transport's own
    /// lock (quinn's, which its driver holds while it encrypts).
    cwnd_rate: Option<f64>,
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
    /// Raw bytes compressed with their stream's zstd context
    /// ([`crate::CodecId::ZstdStream`]), a part of `raw`.
    pub context_raw: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("peer_identity", &self.peer_identity)
            .finish_non_exhaustive()
    }
}

/// What [`Shared::rate_from`] needs read under the connection's lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateSeen {
    estimate: Option<f64>,
    cwnd_rate: Option<f64>,
    waiting: usize,
}

impl RateSeen {
    /// Reads the link estimate and the streams waiting to send.
    pub(crate) fn of(inner: &Inner) -> RateSeen {
        RateSeen {
            estimate: inner.core.link_estimate().bottleneck_bw(),
            cwnd_rate: inner.cwnd_rate,
            waiting: inner.core.backlogged_streams().max(1),
        }
    }
}

impl Shared {
    pub(crate) fn new(
        core: Core,
        transport: Box<dyn Transport>,
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
                transport,
                acks: HashMap::new(),
                phase: tx,
                cwnd_rate: None,
            }),
            wake_driver: Notify::new(),
            phase: rx,
            stats,
            peer_identity,
            remote_addr,
            link_rate,
            compression: Mutex::new(Default::default()),
        })
    }

    /// Runs `f` under the connection's lock and, in the same turn, reads
    /// the wire rate (bytes/s) one backlogged stream can expect now: the
    /// transport's congestion window over its RTT, capped by the configured
    /// link rate, shared among the streams waiting to send (`None` if
    /// unknown). One turn instead of two: the driver holds the lock too.
    pub(crate) fn with_rate<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> (R, Option<f64>) {
        let (r, seen) = {
            let mut inner = self.lock();
            let r = f(&mut inner);
            (r, RateSeen::of(&inner))
        };
        (r, self.rate_from(seen))
    }

    /// The rate [`Shared::with_rate`] gives, from what it read.
    pub(crate) fn rate_from(&self, seen: RateSeen) -> Option<f64> {
        let transport = seen.estimate.or(seen.cwnd_rate);
        let rate = match (transport, self.link_rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(rate / seen.waiting as f64)
    }

    /// Locks the state. A poisoned lock (a panic elsewhere) is still usable:
    /// the core is never left half-updated by the short calls made under it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        #[cfg(test)]
        let _ = tests::LOCK_TURNS.try_with(|n| n.set(n.get() + 1));
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
                    let (route, class, no_compression) = self
                        .core
                        .stream_params(id)
                        .map(|p| {
                            let off = p
                                .options
                                .contains(crate::frame::StreamOptions::NO_COMPRESSION);
                            (p.route.clone(), p.class, off)
                        })
                        .unwrap_or_default();
                    self.accept.push_back(Opened {
                        id,
                        route,
                        class,
                        no_compression,
                    });
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
                Event::StreamClosed(id) => self.transport.stream_closed(id),
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
            let cwnd_rate = match t.rtt {
                Some(rtt) if t.cwnd > 0 && !rtt.is_zero() => {
                    Some(t.cwnd as f64 / rtt.as_secs_f64())
                }
                _ => None,
            };
            let mut inner = shared.lock();
            inner.cwnd_rate = cwnd_rate;
            if let Some(d) = t.delivered_bytes {
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
                let Some((key, lane)) = inner.transport.route(&t, &shared) else {
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
                // Every frame produced so far is queued: lanes of closed
                // streams can go.
                inner.transport.flushed();
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
    inner.transport.close();
    // What `close` kept (the QUIC control sender) goes with the transport,
    // dropped outside the lock.
    let transport = std::mem::replace(&mut inner.transport, Box::new(Closed));
    drop(inner);
    drop(transport);
    debug!("dwcp: driver finished");
}

#[cfg(test)]
pub(crate) mod tests {
    tokio::task_local! {
        /// Turns of a connection's lock taken by the task running in
        /// its scope (the driver and the readers run in tasks of their own).
        pub(crate) static LOCK_TURNS: std::cell::Cell<u64>;
        /// Reads of the transport's statistics by the task in its scope.
        pub(crate) static STATS_READS: std::cell::Cell<u64>;
        /// Turns of the lock by the task in its scope that found the
        /// stream without room for all it brought (each costs another
        /// turn; how many depends mostly on how fast the peer reads, and
        /// on how the sender cuts what it hands over). A sender that
        /// polled again and again while the stream is full would hide
        /// among them: the lock-turn tests do not catch that.
        pub(crate) static ROOM_WAITS: std::cell::Cell<u64>;
    }
}
