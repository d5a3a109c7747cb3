//! Link estimation: bottleneck bandwidth, RTT, loss, and the link mode.
//!
//! Fed with delivery samples (bytes delivered so far, with the time), RTT
//! samples and loss counts, whatever the transport can tell. The bottleneck
//! bandwidth is the maximum delivery rate over the last [`BW_WINDOW`] (BBR's
//! windowed max): it reaches a new, higher rate as soon as it is delivered and
//! forgets an old one after the window, so it follows steps both ways. Rate
//! samples taken while the sender had nothing to send (app-limited) may raise
//! the estimate but never define it alone. The mode (datacenter vs WAN) comes
//! from min RTT and loss with a hysteresis band.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a bandwidth sample counts toward the maximum.
pub const BW_WINDOW: Duration = Duration::from_secs(2);
/// Shortest interval a delivery-rate sample spans.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a min-RTT sample counts.
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

/// Where the link sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Short RTT, negligible loss: small windows suffice, compression rarely pays.
    Datacenter,
    /// Long RTT or loss: windows sized to the BDP, compression considered.
    Wan,
}

/// Enter WAN mode at or above this min RTT.
pub const WAN_RTT: Duration = Duration::from_millis(10);
/// Return to datacenter mode at or below this min RTT (and low loss).
pub const DC_RTT: Duration = Duration::from_millis(5);
/// Enter WAN mode at or above this loss rate.
pub const WAN_LOSS: f64 = 0.01;
/// Return to datacenter mode at or below this loss rate.
pub const DC_LOSS: f64 = 0.001;

/// The link estimator.
#[derive(Debug, Clone)]
pub struct LinkEstimator {
    last: Option<(Instant, u64)>,
    bw: VecDeque<(Instant, f64)>,
    rtt: VecDeque<(Instant, Duration)>,
    srtt: Option<Duration>,
    loss: f64,
    mode: LinkMode,
}

impl Default for LinkEstimator {
    fn default() -> Self {
        LinkEstimator {
            last: None,
            bw: VecDeque::new(),
            rtt: VecDeque::new(),
            srtt: None,
            loss: 0.0,
            mode: LinkMode::Datacenter,
        }
    }
}

impl LinkEstimator {
    /// Records that `delivered` bytes in total have been delivered by `now`.
    /// `app_limited` marks intervals in which the sender ran out of data.
    pub fn on_delivered(&mut self, now: Instant, delivered: u64, app_limited: bool) {
        let Some((t0, d0)) = self.last else {
            self.last = Some((now, delivered));
            return;
        };
        let dt = now.saturating_duration_since(t0);
        if dt < SAMPLE_INTERVAL {
            return;
        }
        self.last = Some((now, delivered));
        let rate = delivered.saturating_sub(d0) as f64 / dt.as_secs_f64();
        while self
            .bw
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > BW_WINDOW)
        {
            self.bw.pop_front();
        }
        if app_limited && rate < self.bottleneck_bw().unwrap_or(0.0) {
            return;
        }
        // Keep the deque decreasing: older samples below the new one can never be the max.
        while self.bw.back().is_some_and(|(_, r)| *r <= rate) {
            self.bw.pop_back();
        }
        self.bw.push_back((now, rate));
    }

    /// Records an RTT sample.
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
        while self
            .rtt
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > MIN_RTT_WINDOW)
        {
            self.rtt.pop_front();
        }
        while self.rtt.back().is_some_and(|(_, r)| *r >= rtt) {
            self.rtt.pop_back();
        }
        self.rtt.push_back((now, rtt));
        self.update_mode();
    }

    /// Records the transport's loss rate (lost / sent packets).
    pub fn on_loss_rate(&mut self, rate: f64) {
        self.loss = rate.clamp(0.0, 1.0);
        self.update_mode();
    }

    fn update_mode(&mut self) {
        let Some(min) = self.min_rtt() else { return };
        self.mode = match self.mode {
            LinkMode::Datacenter if min >= WAN_RTT || self.loss >= WAN_LOSS => LinkMode::Wan,
            LinkMode::Wan if min <= DC_RTT && self.loss <= DC_LOSS => LinkMode::Datacenter,
            m => m,
        };
    }

    /// Bottleneck bandwidth in bytes/s (windowed max of delivery rate).
    pub fn bottleneck_bw(&self) -> Option<f64> {
        self.bw.front().map(|(_, r)| *r)
    }

    /// Minimum RTT over the last [`MIN_RTT_WINDOW`].
    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtt.front().map(|(_, r)| *r)
    }

    /// Smoothed RTT.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Loss rate.
    pub fn loss_rate(&self) -> f64 {
        self.loss
    }

    /// Bandwidth-delay product in bytes (bottleneck bandwidth × min RTT).
    pub fn bdp(&self) -> Option<u64> {
        Some((self.bottleneck_bw()? * self.min_rtt()?.as_secs_f64()) as u64)
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_has_hysteresis() {
        let t = Instant::now();
        let mut e = LinkEstimator::default();
        e.on_rtt(t, Duration::from_millis(1));
        assert_eq!(e.mode(), LinkMode::Datacenter);
        e.on_rtt(t, Duration::from_millis(8));
        assert_eq!(e.mode(), LinkMode::Datacenter, "min RTT still 1 ms");
        let mut e = LinkEstimator::default();
        e.on_rtt(t, Duration::from_millis(20));
        assert_eq!(e.mode(), LinkMode::Wan);
        // 7 ms is inside the band: stays WAN.
        let later = t + MIN_RTT_WINDOW + Duration::from_secs(1);
        e.on_rtt(later, Duration::from_millis(7));
        assert_eq!(e.mode(), LinkMode::Wan);
        e.on_rtt(later, Duration::from_millis(3));
        assert_eq!(e.mode(), LinkMode::Datacenter);
        e.on_loss_rate(0.02);
        assert_eq!(e.mode(), LinkMode::Wan);
    }

    #[test]
    fn windowed_max_follows_steps() {
        let t0 = Instant::now();
        let mut e = LinkEstimator::default();
        let mut delivered = 0u64;
        let mut t = t0;
        let mut step = |e: &mut LinkEstimator, rate: f64, secs: f64| {
            let n = (secs / 0.1) as usize;
            for _ in 0..n {
                t += Duration::from_millis(100);
                delivered += (rate * 0.1) as u64;
                e.on_delivered(t, delivered, false);
            }
        };
        e.on_delivered(t0, 0, false);
        step(&mut e, 12.5e6, 3.0);
        assert!((e.bottleneck_bw().unwrap_or(0.0) / 12.5e6 - 1.0).abs() < 0.01);
        step(&mut e, 2.5e6, 3.0);
        assert!((e.bottleneck_bw().unwrap_or(0.0) / 2.5e6 - 1.0).abs() < 0.01);
        step(&mut e, 12.5e6, 0.5);
        assert!((e.bottleneck_bw().unwrap_or(0.0) / 12.5e6 - 1.0).abs() < 0.01);
    }
}
