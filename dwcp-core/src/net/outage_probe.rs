//! A probe through an outage, for any QUIC congestion controller.
//!
//! While nothing is acknowledged, quinn's probe timeout doubles with each
//! expiry and has no ceiling (RFC 9002, 6.2; quinn 0.11). Through a 20 s
//! partition with a 0.5 s base it fires at 15.5 s and next at 31.5 s, so the
//! first packet after the line heals can come ten seconds late, or after
//! the idle timeout, which then kills a connection whose path is back
//! (measured in `dwcp-daemon/tests/faults.rs`). Other packets wait for the
//! congestion window, which is full of data sent before the outage.
//!
//! [`OutageProbe`] wraps a controller and, once nothing has been
//! acknowledged for [`OutageProbe::gap`] (1 s, or twice the smoothed RTT if
//! longer), opens the window for one packet per gap: quinn's keep-alive
//! PING, due every second, then goes out, and the first one after the heal
//! brings the acknowledgements that restart the flow. During an outage
//! that costs one packet a second; on a working path acknowledgements come
//! far more often than the gap and the wrapper changes nothing.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// Shortest silence after which a probe is let through.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Builds [`OutageProbe`]s around the controllers of `inner`.
pub(crate) struct OutageProbeFactory {
    /// The wrapped controller's factory.
    pub(crate) inner: Arc<dyn ControllerFactory + Send + Sync>,
}

impl ControllerFactory for OutageProbeFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(OutageProbe {
            inner: self.inner.clone().build(now, current_mtu),
            last_ack: now,
            last_probe: now,
            srtt: Duration::ZERO,
            in_flight: 0,
            mtu: u64::from(current_mtu),
        })
    }
}

/// A controller that lets one packet through per silent gap.
pub(crate) struct OutageProbe {
    inner: Box<dyn Controller>,
    /// When the peer last acknowledged something.
    last_ack: Instant,
    /// When the last probe allowance was used.
    last_probe: Instant,
    srtt: Duration,
    /// Bytes in flight as quinn last reported them, kept up to date between
    /// reports from sends, acknowledgements and losses.
    in_flight: u64,
    mtu: u64,
}

impl OutageProbe {
    /// The wrapped controller.
    pub(crate) fn into_inner(self) -> Box<dyn Controller> {
        self.inner
    }

    /// The silence after which one packet may go regardless of the window.
    pub(crate) fn gap(&self) -> Duration {
        MIN_GAP.max(self.srtt * 2)
    }

    fn probe_due(&self, now: Instant) -> bool {
        let gap = self.gap();
        now.saturating_duration_since(self.last_ack) >= gap
            && now.saturating_duration_since(self.last_probe) >= gap
    }

    /// The window at `now`: the wrapped controller's, or room for a probe
    /// above what is in flight when one is due.
    fn window_at(&self, now: Instant) -> u64 {
        let w = self.inner.window();
        if self.probe_due(now) {
            w.max(self.in_flight.saturating_add(2 * self.mtu))
        } else {
            w
        }
    }
}

impl Controller for OutageProbe {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        if self.probe_due(now) {
            self.last_probe = now;
        }
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
        self.last_ack = now;
        self.srtt = rtt.get();
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
        if largest_packet_num_acked.is_some() {
            self.last_ack = now;
        }
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
        self.window_at(Instant::now())
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(OutageProbe {
            inner: self.inner.clone_box(),
            last_ack: self.last_ack,
            last_probe: self.last_probe,
            srtt: self.srtt,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(now: Instant) -> OutageProbe {
        let f = Arc::new(OutageProbeFactory {
            inner: Arc::new(quinn::congestion::CubicConfig::default()),
        });
        let c = f.build(now, 1200);
        match c.into_any().downcast::<OutageProbe>() {
            Ok(p) => *p,
            Err(_) => panic!("an OutageProbe"),
        }
    }

    #[test]
    fn one_packet_per_silent_gap_and_nothing_while_acks_flow() {
        let t0 = Instant::now();
        let mut p = probe(t0);
        let w = p.inner.window();
        // The window fills.
        p.on_sent(t0, w, 1);
        assert_eq!(
            p.window_at(t0 + Duration::from_millis(500)),
            w,
            "no probe before the gap"
        );
        // A second of silence: room for a probe above what is in flight.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(p.window_at(t1) >= w + 1200);
        p.on_sent(t1, 1200, 2);
        // Used: the next one waits for another gap.
        assert_eq!(p.window_at(t1 + Duration::from_millis(10)), w);
        assert!(p.window_at(t1 + Duration::from_millis(1010)) > w + 1200);
        // Acknowledgements end the allowance.
        let t2 = t1 + Duration::from_millis(1500);
        p.on_end_acks(t2, w, false, Some(2));
        assert!(p.window_at(t2 + Duration::from_millis(900)) <= p.inner.window());
    }
}
