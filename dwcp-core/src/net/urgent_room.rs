//! Room past a full congestion window for urgent writes, for any QUIC
//! congestion controller.
//!
//! quinn sends the highest-priority stream's data first, but only when the
//! congestion window has room. At a connection's start bulk streams take
//! the whole first window (ten packets) within milliseconds, and an
//! interactive message written a moment later waits for that window's
//! acknowledgements: a round trip before it leaves, two before its answer
//! comes back (the demo's first echo took 77–92 ms on its 50 ms link; on a
//! 200 ms path the wait is 200 ms). The same happens whenever the window is
//! full and acknowledgements are far apart: after an idle period, or on a
//! slow path.
//!
//! An urgent writer (the control stream, an interactive stream) grants
//! [`UrgentRoom`] the bytes it is about to hand to quinn. The
//! [`UrgentRoomController`] around the connection's controller then opens
//! the window by those bytes and two packets, and every packet sent takes
//! its size off the grant: the next packets, which carry the urgent data
//! first (its stream has the higher priority), go at once. What a grant
//! lets through beyond the urgent bytes (when they left within the window
//! anyway, or bulk data filled their last packet) is at most
//! [`MAX_GRANT`] and two packets per urgent write.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// Most bytes granted at once: an interactive message or two. A stream
/// marked interactive that writes in bulk must not take more than this
/// past the window per write (on a 1 Mbit/s, 50 ms path the window is
/// about 6 KB).
const MAX_GRANT: u64 = 4 * 1024;

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
    /// [`UrgentRoomFactory`].
    pub(crate) fn of(conn: &quinn::Connection) -> Option<Arc<UrgentRoom>> {
        conn.congestion_state()
            .into_any()
            .downcast::<UrgentRoomController>()
            .ok()
            .map(|c| c.room.clone())
    }
}

/// Builds [`UrgentRoomController`]s around the controllers of `inner`.
pub(crate) struct UrgentRoomFactory {
    /// The wrapped controller's factory.
    pub(crate) inner: Arc<dyn ControllerFactory + Send + Sync>,
}

impl ControllerFactory for UrgentRoomFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(UrgentRoomController {
            inner: self.inner.clone().build(now, current_mtu),
            room: Arc::new(UrgentRoom::default()),
            mtu: u64::from(current_mtu),
        })
    }
}

/// A controller whose window grows by the urgent bytes granted and not
/// yet sent (see the module docs).
pub(crate) struct UrgentRoomController {
    inner: Box<dyn Controller>,
    /// Shared with the connection's writers; a clone of this controller
    /// (quinn's `congestion_state`) shares it too.
    room: Arc<UrgentRoom>,
    mtu: u64,
}

impl Controller for UrgentRoomController {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        // quinn reports the bytes of the whole batch built so far, so a
        // batch of several packets may take the grant sooner than its
        // urgent bytes leave; never later.
        self.room.sent(bytes);
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        let w = self.inner.window();
        match self.room.pending() {
            0 => w,
            // quinn sends a packet only if what is in flight plus a whole
            // packet stays under the window: two packets over the bytes
            // let the last of them go.
            p => w.saturating_add(p + 2 * self.mtu),
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(UrgentRoomController {
            inner: self.inner.clone_box(),
            room: self.room.clone(),
            mtu: self.mtu,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
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
        c.room.grant(1024);
        assert_eq!(c.window(), w + 1024 + 2 * 1200);
        // Its packet goes: the grant is used up, the window is the
        // controller's again.
        c.on_sent(t0, 1200, 2);
        assert_eq!(c.window(), w);
        // Grants add up to a bound, so a stream marked interactive that
        // writes in bulk gets no more than that past the window.
        for _ in 0..100 {
            c.room.grant(64 * 1024);
        }
        assert_eq!(c.window(), w + MAX_GRANT + 2 * 1200);
        // A clone (quinn's `congestion_state`) shares the room.
        let seen = c.clone_box();
        c.on_sent(t0, MAX_GRANT, 3);
        assert_eq!(seen.window(), w);
    }
}
