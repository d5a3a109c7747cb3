//! Round-trip time estimation (RFC 6298 smoothing plus a running minimum).

use std::time::Duration;

/// Smoothed RTT, RTT variance and minimum RTT from PING/PONG samples.
#[derive(Debug, Clone, Default)]
pub struct RttEstimator {
    smoothed: Option<Duration>,
    var: Duration,
    min: Option<Duration>,
    latest: Option<Duration>,
}

impl RttEstimator {
    /// Adds a sample.
    pub fn update(&mut self, sample: Duration) {
        self.latest = Some(sample);
        self.min = Some(self.min.map_or(sample, |m| m.min(sample)));
        match self.smoothed {
            None => {
                self.smoothed = Some(sample);
                self.var = sample / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(sample);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((s * 7 + sample) / 8);
            }
        }
    }

    /// Smoothed RTT, once a sample exists.
    pub fn smoothed(&self) -> Option<Duration> {
        self.smoothed
    }

    /// RTT variance.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// Smallest RTT seen.
    pub fn min(&self) -> Option<Duration> {
        self.min
    }

    /// Most recent sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooths_and_tracks_min() {
        let mut r = RttEstimator::default();
        assert!(r.smoothed().is_none());
        r.update(Duration::from_millis(100));
        assert_eq!(r.smoothed(), Some(Duration::from_millis(100)));
        assert_eq!(r.var(), Duration::from_millis(50));
        for _ in 0..50 {
            r.update(Duration::from_millis(20));
        }
        let s = r.smoothed().expect("sample");
        assert!(s < Duration::from_millis(21), "{s:?}");
        assert_eq!(r.min(), Some(Duration::from_millis(20)));
        r.update(Duration::from_millis(300));
        assert_eq!(r.min(), Some(Duration::from_millis(20)));
        assert_eq!(r.latest(), Some(Duration::from_millis(300)));
    }
}
