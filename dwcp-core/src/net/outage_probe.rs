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
//! acknowledged for [`Probe::gap`] (1 s, or twice the smoothed RTT if
//! longer), opens the window for one packet per gap: quinn's keep-alive
//! PING, due every second, then goes out, and the first one after the heal
//! brings the acknowledgements that restart the flow. During an outage
//! that costs one packet a second; on a working path acknowledgements come
//! far more often than the gap and the wrapper changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory};
use quinn_proto::RttEstimator;

use crate::net::wrapped::{Widen, Wrapped};

/// Shortest silence after which a probe is let through.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Builds [`OutageProbe`]s around the controllers of `inner`.
pub(crate) struct OutageProbeFactory {
    /// The wrapped controller's factory.
    pub(crate) inner: Arc<dyn ControllerFactory + Send + Sync>,
}

impl ControllerFactory for OutageProbeFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        let probe = Probe {
            last_ack: now,
            last_probe: now,
            srtt: Duration::ZERO,
        };
        Box::new(Wrapped::new(
            self.inner.clone().build(now, current_mtu),
            probe,
            current_mtu,
        ))
    }
}

/// A controller that lets one packet through per silent gap.
pub(crate) type OutageProbe = Wrapped<Probe>;

/// What [`OutageProbe`] keeps.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// When the peer last acknowledged something.
    last_ack: Instant,
    /// When the last probe allowance was used.
    last_probe: Instant,
    srtt: Duration,
}

impl Probe {
    /// The silence after which one packet may go regardless of the window.
    pub(crate) fn gap(&self) -> Duration {
        MIN_GAP.max(self.srtt * 2)
    }

    fn due(&self, now: Instant) -> bool {
        let gap = self.gap();
        now.saturating_duration_since(self.last_ack) >= gap
            && now.saturating_duration_since(self.last_probe) >= gap
    }
}

impl Widen for Probe {
    /// The wrapped controller's window, or room for a probe above what is
    /// in flight when one is due.
    fn window(&self, window: u64, in_flight: u64, mtu: u64, now: impl Fn() -> Instant) -> u64 {
        if self.due(now()) {
            window.max(in_flight.saturating_add(2 * mtu))
        } else {
            window
        }
    }

    fn sent(&mut self, now: Instant, _bytes: u64) {
        if self.due(now) {
            self.last_probe = now;
        }
    }

    fn acked(&mut self, now: Instant, rtt: &RttEstimator) {
        self.last_ack = now;
        self.srtt = rtt.get();
    }

    fn acks_ended(&mut self, now: Instant, any: bool) {
        if any {
            self.last_ack = now;
        }
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
