//! A QUIC congestion controller around another, for the additions every
//! controller gets (outage_probe.rs, urgent_room.rs): what quinn reports
//! passes through to the wrapped controller, the bytes in flight are kept
//! between quinn's reports, and a [`Widen`] may open the window further.

use std::any::Any;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerMetrics};
use quinn_proto::RttEstimator;

/// What a wrapper adds: a wider window at times, from what it saw.
pub(crate) trait Widen: Clone + Send + Sync + 'static {
    /// The window, given the wrapped controller's `window`, the bytes
    /// `in_flight` and the path's `mtu`; `now` reads the clock (quinn asks
    /// for the window for every packet, so only a wrapper that needs the
    /// time reads it).
    fn window(&self, window: u64, in_flight: u64, mtu: u64, now: impl Fn() -> Instant) -> u64;

    /// `bytes` were sent at `now` (quinn reports a batch's bytes so far).
    fn sent(&mut self, now: Instant, bytes: u64);

    /// Something was acknowledged at `now`; `rtt` is the path's estimator.
    fn acked(&mut self, _now: Instant, _rtt: &RttEstimator) {}

    /// A batch of acknowledgements ended at `now`; `any` if it acknowledged
    /// a packet.
    fn acks_ended(&mut self, _now: Instant, _any: bool) {}
}

/// A controller around `inner`, widened by `widen`.
pub(crate) struct Wrapped<W> {
    pub(crate) inner: Box<dyn Controller>,
    pub(crate) widen: W,
    /// Bytes in flight as quinn last reported them, kept up to date between
    /// reports from sends (which may read high: quinn reports a batch's
    /// bytes so far, acknowledgement-only packets included),
    /// acknowledgements and losses.
    pub(crate) in_flight: u64,
    pub(crate) mtu: u64,
}

impl<W: Widen> Wrapped<W> {
    /// `inner` widened by `widen`, on a path of `mtu`.
    pub(crate) fn new(inner: Box<dyn Controller>, widen: W, mtu: u16) -> Self {
        Wrapped {
            inner,
            widen,
            in_flight: 0,
            mtu: u64::from(mtu),
        }
    }

    /// The window, with the time read by `now`.
    fn window_with(&self, now: impl Fn() -> Instant) -> u64 {
        self.widen
            .window(self.inner.window(), self.in_flight, self.mtu, now)
    }

    /// The window at `now` (for tests in virtual time).
    #[cfg(test)]
    pub(crate) fn window_at(&self, now: Instant) -> u64 {
        self.window_with(|| now)
    }
}

impl<W: Widen> Controller for Wrapped<W> {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.widen.sent(now, bytes);
        self.in_flight = self.in_flight.saturating_add(bytes);
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
        self.widen.acked(now, rtt);
        self.in_flight = self.in_flight.saturating_sub(bytes);
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.widen
            .acks_ended(now, largest_packet_num_acked.is_some());
        self.in_flight = in_flight;
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
        self.in_flight = self.in_flight.saturating_sub(lost_bytes);
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.window_with(Instant::now)
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Wrapped {
            inner: self.inner.clone_box(),
            widen: self.widen.clone(),
            in_flight: self.in_flight,
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
