//! The link model: rate, queue, delay, jitter, loss and reordering.

use std::time::Duration;

/// What a link does to packets in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Bottleneck rate in bits/s; `None` for no limit.
    pub rate_bps: Option<u64>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` for each packet. Packets
    /// keep their order unless `reorder` is set.
    pub jitter: Duration,
    /// Probability that a packet is lost (independent, uniform).
    pub loss: f64,
    /// Probability that a packet is held back by an extra `delay / 2` (at
    /// least 1 ms), letting later packets overtake it.
    pub reorder: f64,
    /// Bytes the bottleneck queue holds before it drops arrivals (tail drop).
    pub queue_bytes: usize,
    /// Seed of every random decision.
    pub seed: u64,
}

impl Default for LinkProfile {
    fn default() -> Self {
        LinkProfile {
            rate_bps: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            queue_bytes: 4 * 1024 * 1024,
            seed: 1,
        }
    }
}

impl LinkProfile {
    /// A WAN profile: `mbit` Mbit/s, `rtt_ms` round trip (half each way),
    /// `loss_pct` percent loss, a queue of one bandwidth-delay product (at
    /// least 64 KiB).
    pub fn wan(mbit: u64, rtt_ms: u64, loss_pct: f64) -> Self {
        let rate = mbit * 1_000_000;
        let bdp = (rate / 8) as u128 * rtt_ms as u128 / 1000;
        LinkProfile {
            rate_bps: Some(rate),
            delay: Duration::from_micros(rtt_ms * 500),
            loss: loss_pct / 100.0,
            queue_bytes: (bdp as usize).max(64 * 1024),
            ..LinkProfile::default()
        }
    }

    /// Checks the profile's values.
    ///
    /// # Errors
    /// A probability outside `[0, 1]` or a zero rate, as a sentence.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [("loss", self.loss), ("reorder", self.reorder)] {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(format!("{name} must be a probability in [0, 1], got {p}"));
            }
        }
        if self.rate_bps == Some(0) {
            return Err("rate must be above zero (leave it unset for no limit)".into());
        }
        Ok(())
    }
}

/// The fate of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it this long after it arrived.
    Deliver(Duration),
    /// Lost on the link (random loss).
    Lost,
    /// Dropped because the bottleneck queue was full.
    QueueFull,
}

/// Counters of a [`Shaper`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShaperStats {
    /// Packets offered.
    pub packets: u64,
    /// Packets delivered (or scheduled for delivery).
    pub delivered: u64,
    /// Packets lost at random.
    pub lost: u64,
    /// Bytes lost at random. The loss falls after the bottleneck, so these
    /// bytes take their time on it: `bytes + lost_bytes` is what it took in
    /// (counted on arrival; it sends them up to a queue later).
    pub lost_bytes: u64,
    /// Packets dropped by the full queue.
    pub queue_drops: u64,
    /// Packets held back for reordering.
    pub reordered: u64,
    /// Bytes delivered.
    pub bytes: u64,
}

/// One direction of an emulated link, without I/O or clock: the caller passes
/// the arrival time of each packet (time since any fixed origin).
#[derive(Debug)]
pub struct Shaper {
    profile: LinkProfile,
    rng: u64,
    /// When the bottleneck finishes sending what is queued.
    busy_until: Duration,
    /// Latest delivery time handed out to an in-order packet.
    last_delivery: Duration,
    /// Packets still to drop on demand ([`Shaper::drop_next`]), and the
    /// smallest size they apply to.
    drop_next: (u32, usize),
    stats: ShaperStats,
}

impl Shaper {
    /// A shaper for `profile`.
    pub fn new(profile: LinkProfile) -> Self {
        let rng = profile.seed;
        Shaper {
            profile,
            rng,
            busy_until: Duration::ZERO,
            last_delivery: Duration::ZERO,
            drop_next: (0, 0),
            stats: ShaperStats::default(),
        }
    }

    /// Drops the next `n` packets of at least `min_len` bytes, whatever the
    /// profile (for tests of one chosen loss: `min_len` tells a data packet
    /// from an acknowledgement). Counted as lost.
    pub fn drop_next(&mut self, n: u32, min_len: usize) {
        self.drop_next = (n, min_len);
    }

    /// The profile.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// Changes the rate from now on (for tests of rate changes).
    pub fn set_rate(&mut self, rate_bps: Option<u64>) {
        self.profile.rate_bps = rate_bps.filter(|r| *r > 0);
    }

    /// Counters so far.
    pub fn stats(&self) -> ShaperStats {
        self.stats
    }

    fn next_f64(&mut self) -> f64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now`.
    pub fn offer(&mut self, now: Duration, len: usize) -> Decision {
        self.stats.packets += 1;
        // Draw every random number for every packet, so one decision never
        // shifts the random sequence of the others.
        let (loss_draw, jitter_draw, reorder_draw) =
            (self.next_f64(), self.next_f64(), self.next_f64());
        let departs = match self.profile.rate_bps {
            Some(rate) => {
                let start = self.busy_until.max(now);
                let backlog = start - now;
                let queued = backlog.as_secs_f64() * rate as f64 / 8.0;
                if queued + len as f64 > self.profile.queue_bytes as f64 {
                    self.stats.queue_drops += 1;
                    return Decision::QueueFull;
                }
                let tx = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                self.busy_until = start + tx;
                self.busy_until
            }
            None => now,
        };
        let chosen = self.drop_next.0 > 0 && len >= self.drop_next.1;
        if chosen {
            self.drop_next.0 -= 1;
        }
        if chosen || loss_draw < self.profile.loss {
            self.stats.lost += 1;
            self.stats.lost_bytes += len as u64;
            return Decision::Lost;
        }
        let jitter = self.profile.jitter.mul_f64(jitter_draw);
        let mut at = departs + self.profile.delay + jitter;
        if reorder_draw < self.profile.reorder {
            self.stats.reordered += 1;
            at += (self.profile.delay / 2).max(Duration::from_millis(1));
        } else {
            at = at.max(self.last_delivery);
            self.last_delivery = at;
        }
        self.stats.delivered += 1;
        self.stats.bytes += len as u64;
        Decision::Deliver(at.saturating_sub(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn rate_and_delay_add_up() {
        let mut s = Shaper::new(LinkProfile {
            rate_bps: Some(8_000_000), // 1 byte per microsecond
            delay: ms(10),
            ..LinkProfile::default()
        });
        // 1000 bytes take 1 ms on the wire, then 10 ms of propagation.
        assert_eq!(s.offer(ms(0), 1000), Decision::Deliver(ms(11)));
        // The second packet waits for the first to leave.
        assert_eq!(s.offer(ms(0), 1000), Decision::Deliver(ms(12)));
        // After the queue empties there is no wait.
        assert_eq!(s.offer(ms(100), 1000), Decision::Deliver(ms(11)));
    }

    #[test]
    fn full_queue_drops_arrivals() {
        let mut s = Shaper::new(LinkProfile {
            rate_bps: Some(8_000_000),
            queue_bytes: 3000,
            ..LinkProfile::default()
        });
        let fates: Vec<Decision> = (0..5).map(|_| s.offer(ms(0), 1000)).collect();
        assert!(matches!(fates[2], Decision::Deliver(_)));
        assert_eq!(fates[3], Decision::QueueFull);
        assert_eq!(s.stats().queue_drops, 2);
    }

    #[test]
    fn packets_dropped_on_demand_are_the_next_large_enough_ones() {
        let mut s = Shaper::new(LinkProfile::default());
        s.drop_next(2, 500);
        assert!(matches!(s.offer(ms(0), 60), Decision::Deliver(_)));
        assert_eq!(s.offer(ms(0), 1200), Decision::Lost);
        assert!(matches!(s.offer(ms(0), 40), Decision::Deliver(_)));
        assert_eq!(s.offer(ms(0), 500), Decision::Lost);
        assert!(matches!(s.offer(ms(0), 1200), Decision::Deliver(_)));
        assert_eq!(s.stats().lost, 2);
    }

    #[test]
    fn loss_rate_is_close_to_the_profile_and_seeded() {
        let profile = LinkProfile {
            loss: 0.01,
            seed: 7,
            ..LinkProfile::default()
        };
        let run = |p: &LinkProfile| {
            let mut s = Shaper::new(p.clone());
            (0..100_000)
                .map(|i| s.offer(ms(i), 100))
                .collect::<Vec<_>>()
        };
        let a = run(&profile);
        let lost = a.iter().filter(|d| **d == Decision::Lost).count();
        assert!((800..1200).contains(&lost), "lost {lost} of 100000");
        assert_eq!(a, run(&profile), "same seed, same decisions");
        let other = LinkProfile { seed: 8, ..profile };
        assert_ne!(a, run(&other), "another seed, other decisions");
    }

    #[test]
    fn a_packet_lost_at_random_took_its_time_on_the_bottleneck() {
        let mut s = Shaper::new(LinkProfile {
            rate_bps: Some(8_000_000), // 1 byte per microsecond
            delay: ms(10),
            ..LinkProfile::default()
        });
        s.drop_next(1, 0);
        assert_eq!(s.offer(ms(0), 1000), Decision::Lost);
        // The next packet waits for the lost one to leave the bottleneck.
        assert_eq!(
            s.offer(ms(0), 500),
            Decision::Deliver(Duration::from_micros(11_500))
        );
        let stats = s.stats();
        assert_eq!((stats.lost, stats.lost_bytes, stats.bytes), (1, 1000, 500));
    }

    #[test]
    fn jitter_keeps_order_unless_reordering() {
        let mut s = Shaper::new(LinkProfile {
            delay: ms(20),
            jitter: ms(10),
            ..LinkProfile::default()
        });
        let mut last = Duration::ZERO;
        for i in 0..1000 {
            let Decision::Deliver(d) = s.offer(Duration::from_micros(i * 100), 100) else {
                panic!("no loss configured");
            };
            let at = Duration::from_micros(i * 100) + d;
            assert!(at >= last, "packet {i} overtook its predecessor");
            assert!(d >= ms(20) && d <= ms(30) + Duration::from_micros(100_000));
            last = at;
        }
        let mut r = Shaper::new(LinkProfile {
            delay: ms(20),
            reorder: 0.1,
            ..LinkProfile::default()
        });
        let mut arrivals: Vec<(Duration, u64)> = (0..1000u64)
            .filter_map(|i| match r.offer(ms(i), 100) {
                Decision::Deliver(d) => Some((ms(i) + d, i)),
                _ => None,
            })
            .collect();
        arrivals.sort();
        let out_of_order = arrivals.windows(2).filter(|w| w[0].1 > w[1].1).count();
        assert!(out_of_order > 50, "{out_of_order} reorderings");
    }

    #[test]
    fn bad_profiles_are_refused() {
        let bad = LinkProfile {
            loss: 1.5,
            ..LinkProfile::default()
        };
        assert!(bad.validate().unwrap_err().contains("loss"));
        let zero = LinkProfile {
            rate_bps: Some(0),
            ..LinkProfile::default()
        };
        assert!(zero.validate().is_err());
        assert!(LinkProfile::wan(100, 50, 1.0).validate().is_ok());
    }

    /// Half the round trip each way, odd milliseconds included: a "1 ms"
    /// profile had no delay at all (1 / 2 in whole milliseconds), and
    /// every 1 ms cell of the WAN matrix until 2026-12-07 ran on a path of
    /// the delay line's own 0.1 ms.
    #[test]
    fn a_wan_profile_delays_half_its_round_trip_each_way() {
        for (rtt_ms, each_way_us) in [(1, 500), (25, 12_500), (50, 25_000)] {
            let p = LinkProfile::wan(100, rtt_ms, 0.0);
            assert_eq!(p.delay, Duration::from_micros(each_way_us), "{rtt_ms} ms");
        }
    }
}
