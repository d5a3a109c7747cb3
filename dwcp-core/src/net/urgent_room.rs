//! Room past a full congestion window for urgent writes, for any QUIC
//! congestion controller.
//!
//! quinn sends the highest-priority stream's data first, but only when the
//! congestion window has room. At a connection's start bulk streams take
//! the whole first window (ten packets until 2026-12-07, 32 since:
//! `INITIAL_WINDOW_PACKETS` in `net/congestion.rs`) within tens of
//! milliseconds, and an
//! interactive message written a moment later waits for that window's
//! acknowledgements: a round trip before it leaves, two before its answer
//! comes back (the demo's first echo took 79–133 ms on its 50 ms link; on
//! a 200 ms path the wait is 200 ms). The same happens whenever the window
//! is full and acknowledgements are far apart: after an idle period, or on
//! a slow path.
//!
//! An urgent writer (the control stream, an interactive stream) grants
//! [`UrgentRoom`] the bytes it is about to hand to quinn. The
//! [`UrgentRoomController`] around the connection's controller then opens
//! the window to what is in flight plus those bytes and two packets (quinn
//! sends a packet only while what is in flight plus a whole packet stays
//! under the window), and every packet sent takes its size off the grant.
//! The next packets carry the urgent data first, its stream having the
//! higher priority. The window never goes more than [`MAX_OVERSHOOT`] and
//! two packets past the controller's.
//!
//! Limits:
//! - A grant is taken by whatever is sent next: bulk data, if the
//!   connection sends before the urgent bytes reach quinn, or an
//!   acknowledgement-only packet. A write that waits for room in quinn's
//!   send window renews its grant on each attempt to hand the bytes over;
//!   one that found room at once does not, and its data then waits for the
//!   window as before.
//! - quinn's pacer is not bypassed: a write within a few milliseconds of a
//!   burst that emptied the pacer waits for it to refill (at a
//!   connection's start the pacer sends the first window over about 0.8 of
//!   a round trip, in bursts of up to ten packets, and a write between
//!   two bursts waits for the next).
//! - The bytes beyond the urgent ones (bulk data filling the urgent
//!   packets) are at most two packets per grant; a workload of continuous
//!   urgent writes keeps the window up to [`MAX_OVERSHOOT`] and two packets
//!   above the controller's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory};

use crate::net::outage_probe::OutageProbe;
use crate::net::wrapped::{Widen, Wrapped};

/// Most bytes granted at once: an interactive message or two. A stream
/// marked interactive that writes in bulk must not take more than this
/// past the window per write (on a 1 Mbit/s, 50 ms path the window is
/// about 6 KB).
const MAX_GRANT: u64 = 4 * 1024;
/// Most the window goes past the controller's, besides two packets: room
/// for three grants in one round trip (an echo, its copy as a datagram,
/// and the next echo). On a 1 Mbit/s link that is about 115 ms of queue.
const MAX_OVERSHOOT: u64 = 3 * MAX_GRANT;

/// Bytes of urgent writes not yet sent past the window; shared by a
/// connection's writers and its controller.
#[derive(Debug, Default)]
pub(crate) struct UrgentRoom {
    pending: AtomicU64,
}

impl UrgentRoom {
    /// An urgent write of `bytes` is about to be handed to quinn.
    pub(crate) fn grant(&self, bytes: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_add(bytes).min(MAX_GRANT))
            });
    }

    /// An urgent write of `bytes`, granted before it waited, tries again to
    /// hand them to quinn: the grant is at least `bytes` again (it may have
    /// gone to what was sent meanwhile). The most of the pending grant and
    /// `bytes`, not their sum, so a write renewed on every attempt is
    /// counted once; two writers renewing at once get one grant, the
    /// larger, and the two packets over it.
    pub(crate) fn renew(&self, bytes: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.max(bytes.min(MAX_GRANT)))
            });
    }

    /// Urgent bytes granted and not yet sent.
    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// `bytes` were sent: they used the grant first.
    fn sent(&self, bytes: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p > 0).then(|| p.saturating_sub(bytes))
            });
    }

    /// The room of `conn`'s controller, if it was built by
    /// [`UrgentRoomFactory`] (under an [`OutageProbe`] or not).
    fn of(conn: &quinn::Connection) -> Option<Arc<UrgentRoom>> {
        let c = conn.congestion_state().into_any();
        let c = match c.downcast::<OutageProbe>() {
            Ok(probe) => probe.inner.into_any(),
            Err(c) => c,
        };
        c.downcast::<UrgentRoomController>()
            .ok()
            .map(|c| c.widen.clone())
    }
}

/// A connection's grants: the urgent room of its controller on its current
/// path. quinn builds a new controller when the peer moves to another
/// address (except a new port on the same IPv4 address), so the room is
/// looked up again when the peer's address changes
/// ([`UrgentGrants::follow_path`]).
#[derive(Debug)]
pub(crate) struct UrgentGrants {
    conn: quinn::Connection,
    path: Mutex<PathRoom>,
}

#[derive(Debug)]
struct PathRoom {
    peer: SocketAddr,
    /// `None` if the controller was not built with a room.
    room: Option<Arc<UrgentRoom>>,
}

impl UrgentGrants {
    /// The grants of `conn`.
    pub(crate) fn new(conn: quinn::Connection) -> Arc<UrgentGrants> {
        let path = Mutex::new(PathRoom {
            peer: conn.remote_address(),
            room: UrgentRoom::of(&conn),
        });
        Arc::new(UrgentGrants { conn, path })
    }

    fn path(&self) -> MutexGuard<'_, PathRoom> {
        self.path.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An urgent write of `bytes` is about to be handed to quinn (an
    /// interactive copy's datagram too: it is sent before stream data, and
    /// would take the stream write's grant).
    pub(crate) fn grant(&self, bytes: u64) {
        if let Some(r) = &self.path().room {
            r.grant(bytes);
        }
    }

    /// See [`UrgentRoom::renew`].
    pub(crate) fn renew(&self, bytes: u64) {
        if let Some(r) = &self.path().room {
            r.renew(bytes);
        }
    }

    /// Looks the room up again if the peer moved to another address (the
    /// send-window tuner calls this every tick).
    pub(crate) fn follow_path(&self) {
        let peer = self.conn.remote_address();
        let mut p = self.path();
        if p.peer != peer {
            p.peer = peer;
            p.room = UrgentRoom::of(&self.conn);
        }
    }
}

/// Builds [`UrgentRoomController`]s around the controllers of `inner`.
pub(crate) struct UrgentRoomFactory {
    /// The wrapped controller's factory.
    pub(crate) inner: Arc<dyn ControllerFactory + Send + Sync>,
}

impl ControllerFactory for UrgentRoomFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Wrapped::new(
            self.inner.clone().build(now, current_mtu),
            Arc::new(UrgentRoom::default()),
            current_mtu,
        ))
    }
}

/// A controller whose window grows by the urgent bytes granted and not
/// yet sent (see the module docs). The room is shared with the
/// connection's writers; a clone of the controller (quinn's
/// `congestion_state`) shares it too.
pub(crate) type UrgentRoomController = Wrapped<Arc<UrgentRoom>>;

impl Widen for Arc<UrgentRoom> {
    fn window(&self, window: u64, in_flight: u64, mtu: u64, _now: impl Fn() -> Instant) -> u64 {
        match self.pending() {
            0 => window,
            // Room above what is in flight, not above the window: a second
            // urgent write before acknowledgements come finds the first
            // one's packets past the window already. quinn sends a packet
            // only if what is in flight plus a whole packet stays under
            // the window: two packets over the bytes let the last go.
            p => {
                let room = window.max(in_flight).saturating_add(p + 2 * mtu);
                room.min(window.saturating_add(MAX_OVERSHOOT + 2 * mtu))
            }
        }
    }

    fn sent(&mut self, _now: Instant, bytes: u64) {
        // quinn reports the bytes of the whole batch built so far, so a
        // batch of several packets may take the grant sooner than its
        // urgent bytes leave; never later.
        UrgentRoom::sent(self, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(now: Instant) -> UrgentRoomController {
        let f = Arc::new(UrgentRoomFactory {
            inner: Arc::new(quinn::congestion::CubicConfig::default()),
        });
        match f
            .build(now, 1200)
            .into_any()
            .downcast::<UrgentRoomController>()
        {
            Ok(c) => *c,
            Err(_) => panic!("an UrgentRoomController"),
        }
    }

    #[test]
    fn urgent_bytes_pass_a_full_window_and_only_they() {
        let t0 = Instant::now();
        let mut c = controller(t0);
        let w = c.inner.window();
        assert_eq!(c.window(), w, "no grant, no room");
        // Bulk fills the window; an urgent write of 1 KiB is granted.
        c.on_sent(t0, w, 1);
        c.widen.grant(1024);
        assert_eq!(c.window(), w + 1024 + 2 * 1200);
        // Its packet goes (filled with bulk data after it): the grant is
        // used up, the window is the controller's again.
        c.on_sent(t0, 1200, 2);
        assert_eq!(c.window(), w);
        // A second echo before any acknowledgement: room above what is in
        // flight, which is past the window already.
        c.widen.grant(1024);
        assert_eq!(c.window(), w + 1200 + 1024 + 2 * 1200);
        c.on_sent(t0, 1200, 3);
        // Grants add up to a bound, and the window stays within
        // MAX_OVERSHOOT of the controller's, so a stream marked interactive
        // that writes in bulk gets no more than that past it.
        for _ in 0..100 {
            c.widen.grant(64 * 1024);
            c.on_sent(t0, 1200, 4);
        }
        assert!(c.window() <= w + MAX_OVERSHOOT + 2 * 1200);
        // A clone (quinn's `congestion_state`) shares the room.
        let seen = c.clone_box();
        c.on_sent(t0, MAX_GRANT, 5);
        assert_eq!(seen.window(), w);
        // Acknowledgements bring what is in flight back under the window:
        // a grant then opens room above the window, not above a stale count.
        c.on_end_acks(t0, w / 2, false, Some(5));
        c.widen.grant(1024);
        assert_eq!(c.window(), w + 1024 + 2 * 1200);
    }

    /// A write granted before it waited, and renewed on each attempt to
    /// hand its bytes to quinn, has their worth again, not twice.
    #[test]
    fn a_renewed_grant_is_not_doubled() {
        let t0 = Instant::now();
        let mut c = controller(t0);
        let w = c.inner.window();
        c.on_sent(t0, w, 1);
        c.widen.grant(1024);
        c.widen.renew(1024);
        assert_eq!(c.window(), w + 1024 + 2 * 1200);
        // Taken meanwhile by bulk: renewed in full.
        c.on_sent(t0, 1200, 2);
        c.widen.renew(1024);
        assert_eq!(c.window(), w + 1200 + 1024 + 2 * 1200);
    }
}
