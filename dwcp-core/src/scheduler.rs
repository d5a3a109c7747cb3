//! Who sends next: hierarchical deficit round robin with rate limits.
//!
//! Two levels: traffic classes share the link by class weight, and the streams
//! of a class share the class's turn by stream weight. Each level is deficit
//! round robin: an entry gets `quantum × weight` bytes of deficit when its turn
//! starts and sends while the deficit is positive, so over any interval in
//! which a set of entries stays backlogged each one's share is proportional to
//! its weight, and no entry runs ahead of its share by more than one DATA frame
//! (the quantum is at least one frame). Every operation is O(1) per frame
//! (amortised over the entries skipped, which are removed).
//!
//! Rate limits are token buckets: a class may have a minimum rate (a class
//! with unmet minimum and data is served before the round robin), a maximum
//! rate (the class is skipped while its bucket is empty), and the connection
//! may have an overall cap. Spare capacity always goes to whoever has data
//! (work-conserving), and a weight-1 stream is served at least once per round
//! of its class, so nothing starves.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::StreamId;

/// Per-class settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// Class id (the `class` field of OPEN).
    pub class: u8,
    /// Share of the link relative to other classes (at least 1).
    pub weight: u32,
    /// Guaranteed rate in bytes/s while the class has data.
    pub min_rate: Option<u64>,
    /// Rate the class never exceeds, in bytes/s.
    pub max_rate: Option<u64>,
}

/// A token bucket in bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket filling at `rate` bytes/s holding at most `burst` bytes.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        TokenBucket {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// True if sending is allowed now (tokens positive; debt of one frame is allowed).
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    /// Takes `n` bytes (may go negative).
    pub fn take(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// When the bucket will be positive again.
    pub fn ready_at(&self) -> Instant {
        if self.tokens > 0.0 {
            return self.last;
        }
        self.last + Duration::from_secs_f64((-self.tokens + 1.0) / self.rate)
    }
}

/// Per-stream scheduler state, kept inside the stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedState {
    /// In its class's ring.
    pub queued: bool,
    /// Its turn has started (deficit was topped up).
    pub in_turn: bool,
    /// Bytes it may still send in this turn (may go negative by one frame).
    pub deficit: i64,
}

/// What the allocation looks like for one class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassReport {
    /// Class id.
    pub class: u8,
    /// Configured weight.
    pub weight: u32,
    /// Rate this class is entitled to now (bytes/s): its weighted share of the
    /// capacity among backlogged classes, raised to its minimum, capped at its maximum.
    pub allocated: f64,
    /// Rate it actually sent at over the last measurement window (bytes/s).
    pub used: f64,
    /// `used / capacity` (0 if the capacity is unknown).
    pub utilization: f64,
    /// Streams of the class waiting to send.
    pub backlogged_streams: usize,
    /// Bytes sent in total.
    pub bytes_sent: u64,
}

#[derive(Debug)]
struct Class {
    weight: u32,
    ring: VecDeque<StreamId>,
    queued: bool,
    in_turn: bool,
    deficit: i64,
    min: Option<TokenBucket>,
    max: Option<TokenBucket>,
    min_rate: Option<u64>,
    max_rate: Option<u64>,
    sent: u64,
    window_start: Option<Instant>,
    window_bytes: u64,
    rate: f64,
}

/// Measurement window for the used rate.
const RATE_WINDOW: Duration = Duration::from_millis(200);

impl Class {
    fn new(cfg: Option<&ClassConfig>, burst: u64, now: Instant) -> Class {
        let min_rate = cfg.and_then(|c| c.min_rate);
        let max_rate = cfg.and_then(|c| c.max_rate);
        Class {
            weight: cfg.map_or(1, |c| c.weight.max(1)),
            ring: VecDeque::new(),
            queued: false,
            in_turn: false,
            deficit: 0,
            min: min_rate.map(|r| TokenBucket::new(r, burst, now)),
            max: max_rate.map(|r| TokenBucket::new(r, burst, now)),
            min_rate,
            max_rate,
            sent: 0,
            window_start: None,
            window_bytes: 0,
            rate: 0.0,
        }
    }
}

/// The two-level scheduler.
#[derive(Debug)]
pub struct Scheduler {
    configs: HashMap<u8, ClassConfig>,
    classes: HashMap<u8, Class>,
    ring: VecDeque<u8>,
    conn: Option<TokenBucket>,
    streams: usize,
    burst: u64,
    blocked_until: Option<Instant>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(&[], None, 256 * 1024, Instant::now())
    }
}

/// Outcome of [`Scheduler::next_class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Serve this stream of this class.
    Stream(u8, StreamId),
    /// Streams wait, but rate limits forbid sending before this time.
    RateLimited(Instant),
    /// Nothing to send.
    Idle,
}

impl Scheduler {
    /// A scheduler with per-class settings, an optional connection cap
    /// (bytes/s) and a bucket depth of `burst` bytes.
    pub fn new(classes: &[ClassConfig], rate_limit: Option<u64>, burst: u64, now: Instant) -> Self {
        Scheduler {
            configs: classes.iter().map(|c| (c.class, c.clone())).collect(),
            classes: HashMap::new(),
            ring: VecDeque::new(),
            conn: rate_limit.map(|r| TokenBucket::new(r, burst, now)),
            streams: 0,
            burst,
            blocked_until: None,
        }
    }

    /// Streams waiting in all classes.
    pub fn len(&self) -> usize {
        self.streams
    }

    /// True if no stream waits.
    pub fn is_empty(&self) -> bool {
        self.streams == 0
    }

    /// Whether `class` is at its maximum rate now.
    pub fn class_capped(&mut self, class: u8, now: Instant) -> bool {
        self.classes
            .get_mut(&class)
            .and_then(|c| c.max.as_mut())
            .is_some_and(|b| !b.ready(now))
    }

    /// When the connection cap next allows sending, if it does not allow it now.
    pub fn conn_limited(&mut self, now: Instant) -> Option<Instant> {
        let b = self.conn.as_mut()?;
        if b.ready(now) {
            return None;
        }
        let t = b.ready_at();
        self.blocked_until = Some(t);
        Some(t)
    }

    /// When rate limits next allow sending, if they are what holds data back.
    pub fn blocked_until(&self) -> Option<Instant> {
        self.blocked_until
    }

    fn class_mut(&mut self, class: u8, now: Instant) -> &mut Class {
        let cfg = self.configs.get(&class);
        let burst = self.burst;
        self.classes
            .entry(class)
            .or_insert_with(|| Class::new(cfg, burst, now))
    }

    /// Adds a stream that has data and credit (no-op if already queued).
    pub fn push(&mut self, class: u8, id: StreamId, st: &mut SchedState, now: Instant) {
        if st.queued {
            return;
        }
        st.queued = true;
        st.in_turn = false;
        st.deficit = 0;
        self.streams += 1;
        let c = self.class_mut(class, now);
        c.ring.push_back(id);
        if !c.queued {
            c.queued = true;
            c.in_turn = false;
            c.deficit = 0;
            self.ring.push_back(class);
        }
    }

    /// Removes the front stream of `class` (it has nothing to send).
    pub fn pop_stream(&mut self, class: u8, st: Option<&mut SchedState>) {
        if let Some(c) = self.classes.get_mut(&class) {
            if c.ring.pop_front().is_some() {
                self.streams = self.streams.saturating_sub(1);
            }
        }
        if let Some(st) = st {
            st.queued = false;
            st.in_turn = false;
            st.deficit = 0;
        }
    }

    /// Ends the turn of the front stream of `class` and moves it to the back.
    pub fn rotate_stream(&mut self, class: u8, st: &mut SchedState) {
        st.in_turn = false;
        if let Some(c) = self.classes.get_mut(&class) {
            c.ring.rotate_left(1.min(c.ring.len()));
        }
    }

    /// Front stream of a class and whether its turn must start.
    pub fn front_stream(&self, class: u8) -> Option<StreamId> {
        self.classes
            .get(&class)
            .and_then(|c| c.ring.front().copied())
    }

    /// Starts a stream's turn if needed; returns its deficit.
    pub fn begin_turn(st: &mut SchedState, quantum: u32, weight: u16) -> i64 {
        if !st.in_turn {
            st.in_turn = true;
            st.deficit += quantum as i64 * weight as i64;
        }
        st.deficit
    }

    /// The class to serve next, or why none: classes with an unmet minimum
    /// first, then round robin by class weight, skipping capped classes.
    /// `passed` lists classes found with nothing they could send during this
    /// pick: their minimum gives them no precedence again until the next
    /// pick, or a class owed its minimum but blocked (a compressed chunk
    /// waiting for credit) would take every turn and starve the others.
    pub fn next_class(
        &mut self,
        now: Instant,
        quantum: u32,
        passed: &[u8],
    ) -> Option<Result<u8, Instant>> {
        self.blocked_until = None;
        if let Some(b) = &mut self.conn {
            if !b.ready(now) {
                let t = b.ready_at();
                self.blocked_until = Some(t);
                return Some(Err(t));
            }
        }
        // Minimum guarantees.
        let mut earliest: Option<Instant> = None;
        for (&id, c) in self.classes.iter_mut() {
            if c.ring.is_empty() || passed.contains(&id) {
                continue;
            }
            let max_ok = c.max.as_mut().is_none_or(|b| b.ready(now));
            if let Some(m) = &mut c.min {
                if max_ok && m.ready(now) {
                    return Some(Ok(id));
                }
            }
        }
        let mut spins = self.ring.len() * 3 + 1;
        while spins > 0 {
            spins -= 1;
            let id = *self.ring.front()?;
            let Some(c) = self.classes.get_mut(&id) else {
                self.ring.pop_front();
                continue;
            };
            if c.ring.is_empty() {
                c.queued = false;
                c.in_turn = false;
                c.deficit = 0;
                self.ring.pop_front();
                continue;
            }
            if let Some(b) = &mut c.max {
                if !b.ready(now) {
                    let t = b.ready_at();
                    earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    c.in_turn = false;
                    self.ring.rotate_left(1);
                    continue;
                }
            }
            if !c.in_turn {
                c.in_turn = true;
                c.deficit += quantum as i64 * c.weight as i64;
            }
            if c.deficit <= 0 {
                c.in_turn = false;
                self.ring.rotate_left(1);
                continue;
            }
            return Some(Ok(id));
        }
        if let Some(t) = earliest {
            self.blocked_until = Some(t);
            return Some(Err(t));
        }
        None
    }

    /// The class had nothing sendable after all: end its turn.
    pub fn skip_class(&mut self, class: u8) {
        if let Some(c) = self.classes.get_mut(&class) {
            c.in_turn = false;
        }
        if self.ring.front() == Some(&class) {
            self.ring.rotate_left(1);
        }
    }

    /// Accounts a frame of `bytes` sent by `class`.
    pub fn charge(&mut self, class: u8, bytes: u64, now: Instant) {
        if let Some(b) = &mut self.conn {
            b.take(bytes);
        }
        let Some(c) = self.classes.get_mut(&class) else {
            return;
        };
        c.sent += bytes;
        if let Some(b) = &mut c.min {
            b.take(bytes);
        }
        if let Some(b) = &mut c.max {
            b.take(bytes);
        }
        match c.window_start {
            None => c.window_start = Some(now),
            Some(s) if now.saturating_duration_since(s) >= RATE_WINDOW => {
                c.rate = c.window_bytes as f64 / now.saturating_duration_since(s).as_secs_f64();
                c.window_start = Some(now);
                c.window_bytes = 0;
            }
            _ => {}
        }
        c.window_bytes += bytes;
        if self.ring.front() == Some(&class) && c.in_turn {
            c.deficit -= bytes as i64;
            if c.deficit <= 0 {
                c.in_turn = false;
                self.ring.rotate_left(1);
            }
        }
    }

    /// Allocation per class. `capacity` is the link estimate or cap in bytes/s.
    pub fn report(&self, capacity: Option<f64>, now: Instant) -> Vec<ClassReport> {
        let backlogged_weight: f64 = self
            .classes
            .values()
            .filter(|c| !c.ring.is_empty())
            .map(|c| c.weight as f64)
            .sum();
        let mut ids: Vec<u8> = self.classes.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let c = self.classes.get(&id)?;
                let cap = capacity.unwrap_or(0.0);
                let mut allocated = if c.ring.is_empty() || backlogged_weight == 0.0 {
                    0.0
                } else {
                    cap * c.weight as f64 / backlogged_weight
                };
                if let Some(m) = c.min_rate {
                    if !c.ring.is_empty() {
                        allocated = allocated.max(m as f64);
                    }
                }
                if let Some(m) = c.max_rate {
                    allocated = allocated.min(m as f64);
                }
                let stale = c
                    .window_start
                    .is_none_or(|s| now.saturating_duration_since(s) > RATE_WINDOW * 5);
                let used = if stale { 0.0 } else { c.rate };
                Some(ClassReport {
                    class: id,
                    weight: c.weight,
                    allocated,
                    used,
                    utilization: if cap > 0.0 { used / cap } else { 0.0 },
                    backlogged_streams: c.ring.len(),
                    bytes_sent: c.sent,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_limits_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        assert!(b.ready(t0));
        b.take(300);
        assert!(!b.ready(t0));
        let at = b.ready_at();
        assert!(
            at > t0 && at <= t0 + Duration::from_millis(202),
            "{:?}",
            at - t0
        );
        assert!(b.ready(t0 + Duration::from_millis(210)));
    }
}
