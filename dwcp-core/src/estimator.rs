//! Link estimation: bottleneck bandwidth, RTT, loss, and the link mode.
//!
//! Fed with delivery samples (bytes delivered so far, with the time), RTT
//! samples and loss counts, whatever the transport can tell. The bottleneck
//! bandwidth is the maximum delivery rate over the last [`BW_WINDOW`] of
//! *backlogged* time (BBR's windowed max, with a clock that runs only while
//! the sender had data waiting): it reaches a new, higher rate as soon as it
//! is delivered and forgets an old one after the sender has been backlogged
//! for the window without reaching it again, so it follows steps both ways.
//!
//! A sample is app-limited when the sender ran out of data at any moment of
//! its interval (idle, or held down by the compressor or the application):
//! its rate says how fast the sender was, not the link. Such samples may
//! raise the estimate but never lower it, never age it and never define it
//! alone. An idle or app-limited period therefore leaves the estimate where
//! it was; after [`STALE_AFTER`] without a backlogged sample it becomes
//! unknown (`None`), never the keepalive rate. The mode (datacenter vs WAN)
//! comes from min RTT and loss with a hysteresis band.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much backlogged time a bandwidth sample counts toward the maximum.
pub const BW_WINDOW: Duration = Duration::from_secs(2);
/// Shortest interval a delivery-rate sample spans.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// Without a sample taken while the sender was backlogged for this long,
/// the bandwidth estimate is unknown again.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
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
    /// Some call since the last sample reported the sender out of data.
    interval_app_limited: bool,
    /// Backlogged time accumulated over all samples (the window's clock).
    busy: Duration,
    /// When the last backlogged sample was taken.
    last_backlogged: Option<Instant>,
    /// Decreasing rates with the backlogged time they were taken at.
    bw: VecDeque<(Duration, f64)>,
    rtt: VecDeque<(Instant, Duration)>,
    srtt: Option<Duration>,
    loss: f64,
    mode: LinkMode,
}

impl Default for LinkEstimator {
    fn default() -> Self {
        LinkEstimator {
            last: None,
            interval_app_limited: false,
            busy: Duration::ZERO,
            last_backlogged: None,
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
    /// `app_limited` tells that the sender ran out of data (nothing queued
    /// for the transport) at some moment since the previous call; calls
    /// closer together than [`SAMPLE_INTERVAL`] accumulate into one sample.
    pub fn on_delivered(&mut self, now: Instant, delivered: u64, app_limited: bool) {
        self.interval_app_limited |= app_limited;
        if self
            .last_backlogged
            .is_some_and(|t| now.saturating_duration_since(t) > STALE_AFTER)
        {
            // Nothing has measured the link for too long: unknown, not the
            // rate of whatever trickled through meanwhile.
            self.bw.clear();
            self.last_backlogged = None;
        }
        let Some((t0, d0)) = self.last else {
            self.last = Some((now, delivered));
            self.interval_app_limited = app_limited;
            return;
        };
        let dt = now.saturating_duration_since(t0);
        if dt < SAMPLE_INTERVAL {
            return;
        }
        let app_limited = std::mem::replace(&mut self.interval_app_limited, app_limited);
        self.last = Some((now, delivered));
        let rate = delivered.saturating_sub(d0) as f64 / dt.as_secs_f64();
        if app_limited {
            // A lower bound on the capacity: it may raise a known estimate,
            // nothing else.
            if self.bw.is_empty() || rate <= self.bottleneck_bw().unwrap_or(0.0) {
                return;
            }
        } else {
            self.busy += dt;
            self.last_backlogged = Some(now);
            while self
                .bw
                .front()
                .is_some_and(|(b, _)| self.busy.saturating_sub(*b) > BW_WINDOW)
            {
                self.bw.pop_front();
            }
        }
        // Keep the deque decreasing: older samples below the new one can never be the max.
        while self.bw.back().is_some_and(|(_, r)| *r <= rate) {
            self.bw.pop_back();
        }
        self.bw.push_back((self.busy, rate));
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

#[cfg(test)]
mod app_limited_tests {
    use super::*;

    /// Feeds `secs` of 100 ms samples at `rate` bytes/s, each marked
    /// app-limited or not, starting after `*t`.
    fn feed(
        e: &mut LinkEstimator,
        t: &mut Instant,
        delivered: &mut u64,
        rate: f64,
        secs: f64,
        app_limited: bool,
    ) {
        for _ in 0..(secs / 0.1).round() as usize {
            *t += Duration::from_millis(100);
            *delivered += (rate * 0.1) as u64;
            e.on_delivered(*t, *delivered, app_limited);
        }
    }

    fn near(e: &LinkEstimator, rate: f64) -> bool {
        e.bottleneck_bw()
            .is_some_and(|bw| (bw / rate - 1.0).abs() < 0.02)
    }

    #[test]
    fn idle_period_keeps_the_estimate_then_decays_to_unknown() {
        let mut t = Instant::now();
        let mut e = LinkEstimator::default();
        let mut d = 0;
        e.on_delivered(t, d, false);
        feed(&mut e, &mut t, &mut d, 12.5e6, 3.0, false);
        assert!(near(&e, 12.5e6), "{:?}", e.bottleneck_bw());
        // 5 s idle: only keepalives (about 1 kB/s) are delivered.
        feed(&mut e, &mut t, &mut d, 1_000.0, 5.0, true);
        assert!(near(&e, 12.5e6), "after 5 s idle: {:?}", e.bottleneck_bw());
        // Long idle: the estimate becomes unknown, never the keepalive rate.
        feed(
            &mut e,
            &mut t,
            &mut d,
            1_000.0,
            STALE_AFTER.as_secs_f64(),
            true,
        );
        assert_eq!(e.bottleneck_bw(), None);
        // A burst defines it again within a sample or two.
        feed(&mut e, &mut t, &mut d, 12.5e6, 0.2, false);
        assert!(near(&e, 12.5e6), "after the burst: {:?}", e.bottleneck_bw());
    }

    #[test]
    fn app_limited_samples_never_define_the_estimate_alone() {
        let mut t = Instant::now();
        let mut e = LinkEstimator::default();
        let mut d = 0;
        e.on_delivered(t, d, true);
        feed(&mut e, &mut t, &mut d, 1_000.0, 3.0, true);
        assert_eq!(e.bottleneck_bw(), None);
    }

    #[test]
    fn compressor_limited_sending_is_not_capacity() {
        let mut t = Instant::now();
        let mut e = LinkEstimator::default();
        let mut d = 0;
        e.on_delivered(t, d, false);
        feed(&mut e, &mut t, &mut d, 125e6, 3.0, false);
        // The compressor feeds 20 MB/s: the queue runs dry in every interval.
        feed(&mut e, &mut t, &mut d, 20e6, 10.0, true);
        assert!(near(&e, 125e6), "{:?}", e.bottleneck_bw());
    }

    #[test]
    fn a_dry_moment_between_samples_marks_the_interval() {
        let mut t = Instant::now();
        let mut e = LinkEstimator::default();
        let mut d = 0;
        e.on_delivered(t, d, false);
        feed(&mut e, &mut t, &mut d, 125e6, 3.0, false);
        // Called more often than SAMPLE_INTERVAL: the queue ran dry at
        // 30 ms but had a chunk waiting when the sample was taken.
        for _ in 0..100 {
            for (ms, dry) in [(30, true), (70, false)] {
                t += Duration::from_millis(ms);
                d += (20e6 * ms as f64 / 1000.0) as u64;
                e.on_delivered(t, d, dry);
            }
        }
        assert!(near(&e, 125e6), "{:?}", e.bottleneck_bw());
    }

    #[test]
    fn steps_down_and_up_across_an_idle_period() {
        let mut t = Instant::now();
        let mut e = LinkEstimator::default();
        let mut d = 0;
        e.on_delivered(t, d, false);
        feed(&mut e, &mut t, &mut d, 12.5e6, 3.0, false);
        feed(&mut e, &mut t, &mut d, 1_000.0, 3.0, true);
        // Step down: followed within the window of backlogged time.
        feed(&mut e, &mut t, &mut d, 2.5e6, 0.5, false);
        assert!(near(&e, 12.5e6), "not yet: {:?}", e.bottleneck_bw());
        feed(&mut e, &mut t, &mut d, 2.5e6, 2.0, false);
        assert!(near(&e, 2.5e6), "step down: {:?}", e.bottleneck_bw());
        // Step up: at once, even from an app-limited sample.
        feed(&mut e, &mut t, &mut d, 1_000.0, 1.0, true);
        assert!(near(&e, 2.5e6), "idle: {:?}", e.bottleneck_bw());
        feed(&mut e, &mut t, &mut d, 10e6, 0.2, true);
        assert!(near(&e, 10e6), "step up: {:?}", e.bottleneck_bw());
    }
}
