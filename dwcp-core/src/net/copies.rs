//! Copies of small interactive writes, sent again as QUIC datagrams.
//!
//! On a far path one lost packet costs an interactive message at least a
//! round trip: the sender learns of the loss from later packets (or, on a
//! quiet connection, from its probe timeout) and the retransmission crosses
//! again. Measured through the emulator (200 ms, the packet chosen), an
//! echo whose request was lost took 680 ms instead of 200. Bulk beside it
//! cannot hide that: at the demo's 0.5 % loss every echo crosses in two
//! packets, and about one in a hundred waited a round trip more.
//!
//! So each small write on an interactive QUIC stream is sent a second time,
//! [`COPY_DELAY`] later, as a QUIC datagram naming the QUIC stream and the
//! offset of its bytes. The delay keeps the two in different packets. The
//! receiving stream's reader uses a copy only if it continues what was
//! delivered (`Reassembly::insert_copy` in `unordered.rs`): whichever of the
//! copy and the stream's own bytes arrives first is delivered, the other is
//! cut away as already read. A copy beyond a hole is dropped, never held,
//! so copies take no room behind holes and cannot leave one at the end of a
//! stream. The copy changes nothing in the stream: quinn still retransmits
//! what was lost.
//!
//! What it costs is bounded: copies go only on paths where loss costs
//! something (smoothed RTT of [`FAR`] or more, or a packet lost in the last
//! [`LOSS_MEMORY`]), only writes of at most [`COPY_MAX`] bytes are copied,
//! copies take at most 1/[`SHARE`] of a congestion window per round trip,
//! and every queue is bounded ([`OUTBOX`] copies waiting for their time,
//! [`INBOX`] per stream and [`HELD_MAX`] bytes per connection waiting for
//! readers, quinn's datagram buffers set in `quic.rs`). A copy that finds
//! no room is dropped: it was a copy.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::net::urgent_room::UrgentGrants;

/// How long after the stream data its copy is sent: enough that the two do
/// not share a packet (one packet takes 1.2 ms at 10 Mbit/s), little beside
/// the round trips of the paths that get copies.
pub(crate) const COPY_DELAY: Duration = Duration::from_millis(2);
/// Largest write copied, DWCP frame headers included: with the copy's
/// header it fits one datagram at QUIC's smallest MTU (quinn allows about
/// 1,160 bytes there).
pub(crate) const COPY_MAX: usize = 1100;
/// Copies waiting for their time, per connection.
const OUTBOX: usize = 64;
/// Copies waiting for their stream's reader.
const INBOX: usize = 8;
/// Bytes of copies waiting for readers, all streams of a connection
/// together: a peer cannot park copies on thousands of streams.
const HELD_MAX: u64 = 256 * 1024;
/// QUIC stream offsets stay below 2^62; a copy claiming more is dropped.
const OFFSET_LIMIT: u64 = 1 << 62;
/// A copy's header: the QUIC stream id and the offset of its bytes, 8 bytes
/// each, big-endian.
const HEADER: usize = 16;
/// Paths with at least this smoothed RTT get copies, lossy or not.
pub(crate) const FAR: Duration = Duration::from_millis(10);
/// Copies stay on this long after a lost packet (on any path).
pub(crate) const LOSS_MEMORY: Duration = Duration::from_secs(10);
/// Copies may take one part in `SHARE` of the congestion window per round trip.
const SHARE: u64 = 16;
/// How often [`Copies::tick`] is called (the send-window tuner's period).
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// Copies waiting for one stream's reader. Every QUIC stream a connection
/// receives has one (bulk streams too: their class is not known when they
/// are accepted), so it is small: nothing is allocated until a copy comes.
#[derive(Debug, Default)]
struct Slot {
    copies: Mutex<VecDeque<(u64, Bytes)>>,
    reader: AtomicWaker,
}

impl Slot {
    fn copies(&self) -> MutexGuard<'_, VecDeque<(u64, Bytes)>> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Inboxes = HashMap<u64, Arc<Slot>>;

/// One QUIC connection's copies: sent for its interactive writers, received
/// for its stream readers.
#[derive(Debug)]
pub(crate) struct Copies {
    /// The reader of each receiving QUIC stream, by QUIC stream id.
    inboxes: Mutex<Inboxes>,
    outbox: mpsc::Sender<(Instant, Bytes)>,
    /// Bytes of copies waiting in inboxes (at most [`HELD_MAX`]).
    held: AtomicU64,
    /// Copies are sent (set by [`Copies::tick`]).
    on: AtomicBool,
    /// Bytes copies may still take until the next tick.
    allowance: AtomicU64,
    sent: AtomicU64,
    used: AtomicU64,
}

impl Copies {
    /// Starts the connection's copy sender and datagram reader. Copies are
    /// off until the first [`Copies::tick`].
    pub(crate) fn start(conn: quinn::Connection, room: Arc<UrgentGrants>) -> Arc<Copies> {
        let (copies, mut outbox) = Copies::new();
        {
            let conn = conn.clone();
            let copies = Arc::downgrade(&copies);
            // Ends when `Copies` (the only sender) is dropped.
            tokio::spawn(async move {
                while let Some((at, d)) = outbox.recv().await {
                    tokio::time::sleep_until(at).await;
                    // Too large for the path's datagrams, no datagrams, a
                    // full buffer or the connection gone: a copy not sent.
                    if conn.max_datagram_size().is_none_or(|m| d.len() > m) {
                        continue;
                    }
                    // quinn sends datagrams before stream data: past a full
                    // window a copy would take the room granted to the
                    // next urgent stream write.
                    room.grant(d.len() as u64);
                    if conn.send_datagram(d).is_ok() {
                        if let Some(c) = copies.upgrade() {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        {
            let copies = copies.clone();
            // Ends with the connection.
            tokio::spawn(async move {
                while let Ok(d) = conn.read_datagram().await {
                    copies.deliver(d);
                }
            });
        }
        copies
    }

    /// The state without its tasks, and the queue of copies to send.
    fn new() -> (Arc<Copies>, mpsc::Receiver<(Instant, Bytes)>) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let copies = Arc::new(Copies {
            inboxes: Mutex::new(HashMap::new()),
            outbox: tx,
            held: AtomicU64::new(0),
            on: AtomicBool::new(false),
            allowance: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            used: AtomicU64::new(0),
        });
        (copies, rx)
    }

    fn inboxes(&self) -> MutexGuard<'_, Inboxes> {
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets whether copies are sent and how many bytes they may take until
    /// the next tick, from the path's smoothed RTT and congestion window and
    /// the time since the last loss.
    pub(crate) fn tick(&self, enabled: bool, rtt: Duration, cwnd: u64, since_loss: Duration) {
        let on = enabled && (rtt >= FAR || since_loss < LOSS_MEMORY);
        self.on.store(on, Ordering::Relaxed);
        let rtt = rtt.max(Duration::from_millis(1));
        let per_tick = (cwnd / SHARE) as f64 * TICK.as_secs_f64() / rtt.as_secs_f64();
        let floor = 2 * (COPY_MAX + HEADER) as u64;
        self.allowance
            .store((per_tick as u64).max(floor), Ordering::Relaxed);
    }

    /// Queues a copy of `chunks`, written to QUIC stream `stream` at
    /// `offset`, to be sent [`COPY_DELAY`] from now, if copies are on and
    /// it is small enough and within the allowance.
    pub(crate) fn copy(&self, stream: u64, offset: u64, chunks: &[Bytes]) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let len: usize = chunks.iter().map(Bytes::len).sum();
        if len == 0 || len > COPY_MAX {
            return;
        }
        let cost = (len + HEADER) as u64;
        let taken = self
            .allowance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                a.checked_sub(cost)
            });
        if taken.is_err() {
            return;
        }
        let mut d = BytesMut::with_capacity(HEADER + len);
        d.put_u64(stream);
        d.put_u64(offset);
        for c in chunks {
            d.put_slice(c);
        }
        // Full: a copy not sent.
        let _ = self
            .outbox
            .try_send((Instant::now() + COPY_DELAY, d.freeze()));
    }

    /// Hands a copy from the peer to its stream's reader, if the stream is
    /// being read and its inbox has room.
    fn deliver(&self, mut d: Bytes) {
        if d.len() < HEADER {
            debug!(
                len = d.len(),
                "dwcp: a datagram too short for a copy, dropped"
            );
            return;
        }
        let head = d.split_to(HEADER);
        let (stream, offset) = (
            u64::from_be_bytes(head[..8].try_into().unwrap_or_default()),
            u64::from_be_bytes(head[8..].try_into().unwrap_or_default()),
        );
        if offset.saturating_add(d.len() as u64) >= OFFSET_LIMIT {
            debug!(
                stream,
                offset, "dwcp: a copy beyond any stream offset, dropped"
            );
            return;
        }
        let Some(slot) = self.inboxes().get(&stream).cloned() else {
            return;
        };
        let n = d.len() as u64;
        {
            let mut q = slot.copies();
            // Full: the stream brings the same bytes.
            if q.len() >= INBOX || !self.hold(n) {
                return;
            }
            // Its own allocation: a slice would keep quinn's whole receive
            // buffer alive while it waits.
            q.push_back((offset, Bytes::copy_from_slice(&d)));
        }
        slot.reader.wake();
    }

    /// Counts `n` more bytes waiting in inboxes, if within [`HELD_MAX`].
    fn hold(&self, n: u64) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h + n <= HELD_MAX).then_some(h + n)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }

    /// The inbox of receiving QUIC stream `stream`, until it is dropped.
    pub(crate) fn inbox(self: &Arc<Self>, stream: u64) -> Inbox {
        let slot = Arc::new(Slot::default());
        self.inboxes().insert(stream, slot.clone());
        Inbox {
            slot,
            stream,
            copies: self.clone(),
        }
    }

    /// Copies handed to quinn.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Copies from the peer whose bytes were delivered before the stream's.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Copies for one receiving QUIC stream; unregistered when dropped.
#[derive(Debug)]
pub(crate) struct Inbox {
    slot: Arc<Slot>,
    stream: u64,
    copies: Arc<Copies>,
}

impl Inbox {
    /// The next copy: its stream offset and bytes.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<(u64, Bytes)> {
        let mut next = self.slot.copies().pop_front();
        if next.is_none() {
            self.slot.reader.register(cx.waker());
            // A copy queued between the check and the registration.
            next = self.slot.copies().pop_front();
        }
        match next {
            Some(c) => {
                self.copies.release(c.1.len() as u64);
                Poll::Ready(c)
            }
            None => Poll::Pending,
        }
    }

    /// A copy's bytes were delivered before the stream's own.
    pub(crate) fn used(&self) {
        self.copies.used.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.copies.inboxes().remove(&self.stream);
        let waiting: u64 = self.slot.copies().iter().map(|c| c.1.len() as u64).sum();
        self.copies.release(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::MAX;

    fn chunk(n: usize, b: u8) -> Bytes {
        Bytes::from(vec![b; n])
    }

    /// Copies go only where loss costs a round trip: far paths, or any
    /// path that lost a packet lately; never when the endpoint says no.
    #[tokio::test]
    async fn copies_are_on_for_far_or_lossy_paths_only() {
        let (c, mut out) = Copies::new();
        let cwnd = 1 << 20;
        let cases = [
            (true, Duration::from_micros(200), QUIET, false),
            (
                true,
                Duration::from_micros(200),
                Duration::from_secs(1),
                true,
            ),
            (true, Duration::from_micros(200), LOSS_MEMORY, false),
            (true, FAR, QUIET, true),
            (false, Duration::from_millis(200), Duration::ZERO, false),
        ];
        for (enabled, rtt, since_loss, expect) in cases {
            c.tick(enabled, rtt, cwnd, since_loss);
            c.copy(1, 0, &[chunk(100, 1)]);
            assert_eq!(
                out.try_recv().is_ok(),
                expect,
                "enabled {enabled}, rtt {rtt:?}, since loss {since_loss:?}"
            );
        }
    }

    /// A copy names its stream and offset and carries the write's chunks
    /// as one; writes above one packet, and copies beyond the allowance,
    /// are not copied.
    #[tokio::test]
    async fn a_copy_carries_the_write_within_its_limits() {
        let (c, mut out) = Copies::new();
        c.tick(true, Duration::from_millis(50), 64 * 1024, QUIET);
        c.copy(8, 4096, &[chunk(10, 1), chunk(20, 2)]);
        let (at, d) = out.try_recv().expect("a copy");
        assert!(at > Instant::now(), "sent later than the stream data");
        assert_eq!(&d[..8], &8u64.to_be_bytes());
        assert_eq!(&d[8..16], &4096u64.to_be_bytes());
        assert_eq!(&d[16..], &[&[1u8; 10][..], &[2u8; 20][..]].concat()[..]);
        c.copy(8, 0, &[chunk(COPY_MAX + 1, 0)]);
        assert!(out.try_recv().is_err(), "a write larger than a packet");
        // A small window at 50 ms allows the floor: two full copies a tick.
        c.tick(true, Duration::from_millis(50), 32 * 1024, QUIET);
        for _ in 0..3 {
            c.copy(8, 0, &[chunk(COPY_MAX, 0)]);
        }
        assert_eq!(out.try_recv().map(|_| ()), Ok(()));
        assert_eq!(out.try_recv().map(|_| ()), Ok(()));
        assert!(out.try_recv().is_err(), "the third is beyond the allowance");
        // A larger window allows more: 1/16 of 16 MiB per round trip.
        c.tick(true, Duration::from_millis(50), 16 << 20, QUIET);
        for _ in 0..10 {
            c.copy(8, 0, &[chunk(COPY_MAX, 0)]);
        }
        let mut n = 0;
        while out.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 10);
    }

    /// A copy from the peer reaches the inbox of its QUIC stream while that
    /// stream is read; short datagrams, unknown streams and full inboxes
    /// drop it; an inbox dropped is unregistered.
    #[tokio::test]
    async fn copies_from_the_peer_reach_their_stream_only() {
        let (c, _out) = Copies::new();
        let mut inbox = c.inbox(4);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut d = BytesMut::new();
        d.put_u64(4);
        d.put_u64(77);
        d.put_slice(b"hello");
        c.deliver(d.clone().freeze());
        c.deliver(Bytes::from_static(b"short"));
        let mut other = d.clone();
        other[7] = 5;
        c.deliver(other.freeze());
        match inbox.poll_recv(&mut cx) {
            Poll::Ready((77, b)) => assert_eq!(&b[..], b"hello"),
            p => panic!("expected the copy at 77, got {p:?}"),
        }
        assert!(inbox.poll_recv(&mut cx).is_pending());
        for _ in 0..INBOX + 4 {
            c.deliver(d.clone().freeze());
        }
        let mut n = 0;
        while inbox.poll_recv(&mut cx).is_ready() {
            n += 1;
        }
        assert_eq!(n, INBOX, "the inbox is bounded");
        assert_eq!(c.held.load(Ordering::Relaxed), 0);
        // Offsets no QUIC stream reaches are dropped.
        let mut far = BytesMut::new();
        far.put_u64(4);
        far.put_u64(OFFSET_LIMIT - 2);
        far.put_slice(b"hello");
        c.deliver(far.freeze());
        assert!(inbox.poll_recv(&mut cx).is_pending());
        // Copies parked on many streams stop at the connection's bound.
        let inboxes: Vec<Inbox> = (100..400).map(|s| c.inbox(s)).collect();
        for s in 100..400u64 {
            for _ in 0..INBOX {
                let mut d = BytesMut::new();
                d.put_u64(s);
                d.put_u64(0);
                d.put_slice(&[0u8; 1000]);
                c.deliver(d.freeze());
            }
        }
        assert!(c.held.load(Ordering::Relaxed) <= HELD_MAX);
        drop(inboxes);
        drop(inbox);
        assert_eq!(
            c.held.load(Ordering::Relaxed),
            0,
            "released with the inboxes"
        );
        assert!(c.inboxes().is_empty());
    }
}
