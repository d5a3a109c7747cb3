//! How busy the CPU is, and what a byte on the wire costs this process.
//!
//! On loopback, or on a link faster than the machine, the transport is bound
//! by CPU, not by a link: both daemons, the applications and the kernel's
//! socket work share the cores. Compressing then takes CPU from the
//! transport, and a chunk's wire bytes saved are worth only the CPU the
//! transport would have spent on them. The selector's link model alone
//! cannot see that: the stream's data waits for the transport, so the
//! stream's wire rate looks like a link, and compressing looks like it
//! multiplies it (on loopback adaptive ran at 0.74–0.94 of `off`, with LZ4
//! and zstd-1 chosen for 10–80 % of the chunks: `dwcp-bench
//! compression-e2e --mbit 0`).
//!
//! [`current`] samples, at most every [`SAMPLE_EVERY`]:
//! - the CPU this process used (`getrusage`) and the machine's idle time
//!   (`/proc/stat`), giving the cores this process uses and the spare cores
//!   it could still get (within its [`crate::cpu::cpu_budget`]);
//! - how long tasks waited for a core (pressure stall information, the
//!   cgroup's `cpu.pressure` or `/proc/pressure/cpu`);
//! - the CPU spent compressing (thread CPU time, [`count_compression`]) and
//!   the bytes queued, raw and on the wire ([`count_queued`]). The
//!   process's CPU less compression, per raw byte, is fitted as
//!   `raw_cost + wire_cost × wire/raw` ([`Load::costs`]): part of it
//!   follows the application's bytes (reading its socket, hand-overs), part
//!   the wire's (encryption, datagrams). On loopback the sender spent
//!   1.7 ns per byte sent as-is and 1.27 ns per raw byte, compression
//!   aside, at an LZ4 ratio of 4.3: two thirds of the cost follow the raw
//!   bytes, and compressing saves only the rest.
//!
//! The selector turns that into one more bound on a codec's raw rate
//! (`cores / (compress cost + raw cost + wire cost / ratio)`), and, while
//! the CPU is saturated, stops taking the stream's wire rate for the link.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest interval between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Longest interval folded into the figures. Samples are taken while
/// streams send; a longer one spans a pause, whose CPU (receiving, the
/// application's own work) is not the cost of the bytes sent around it.
pub const LONGEST_INTERVAL: Duration = Duration::from_millis(200);
/// Raw bytes an interval needs for its CPU to count as the cost of
/// sending them: in one with fewer, the process did mostly something else.
pub const MIN_RAW: u64 = 1 << 20;
/// What a new interval leaves of the older ones' weight in [`Sums`].
const DECAY: f64 = 0.7;
/// Share of the CPU per byte sent as-is that follows the raw bytes, until
/// both kinds of interval were measured: 0.6–0.9 on loopback over QUIC
/// (this machine, `dwcp-bench compression-e2e --mbit 0`).
pub const RAW_SHARE_PRIOR: f64 = 0.6;
/// Share of the time some task waited for a core (pressure stall
/// information) from which the CPU counts as saturated: 71–89 % on
/// loopback with both daemons and the clients on two cores, 20–46 % on a
/// 100 Mbit/s link with zstd at work.
pub const SATURATED_PRESSURE: f64 = 0.6;
/// Wire bytes over raw bytes at or above which an interval counts among
/// those sent as-is, below which among those sent compressed, for
/// [`Load::costs`]. Each kind is a byte-weighted mean, and the fit a line
/// through the two: an interval of mixed chunks is a point on the same
/// line. Leaving those out (they had to be at least 0.9 or at most 0.7)
/// left a fresh daemon on loopback without costs for its first two
/// transfers, while its streams flipped between LZ4 and as-is.
const SPLIT: f64 = 0.8;
/// Weight of a new interval in the smoothed figures.
const ALPHA: f64 = 0.5;

static COMPRESS_CPU_NS: AtomicU64 = AtomicU64::new(0);
static COMPRESS_WALL_NS: AtomicU64 = AtomicU64::new(0);
static RAW_BYTES: AtomicU64 = AtomicU64::new(0);
static WIRE_BYTES: AtomicU64 = AtomicU64::new(0);

/// The CPU this process has and what its transport costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Cores this process uses now.
    pub own: f64,
    /// Cores this process uses now plus the spare ones it could get, at
    /// least one (or its budget, if smaller): a process using little of a
    /// busy machine still gets a core's share when it asks for it.
    pub cores: f64,
    /// Spare cores this process could still get (machine idle time, within
    /// its budget).
    pub spare: f64,
    /// The process's CPU apart from compression, and its bytes, over
    /// intervals sent as-is (mostly).
    pub as_is: Sums,
    /// The same over intervals sent compressed.
    pub compressed: Sums,
    /// Compression's CPU time over its wall time (below 1 when the
    /// compression threads wait for a core). A figure to read: the
    /// selector's costs are CPU time already.
    pub cpu_per_wall: f64,
    /// Raw bytes per second the process queues (all streams).
    pub raw_rate: f64,
    /// The spare cores are below [`saturation_floor`]: the CPU, not a link,
    /// bounds the transport.
    pub saturated: bool,
    /// Intervals closed when this figure was made, counting those too long
    /// to use once there is a figure: a stream may take a costly level once
    /// the count is two past the one it was first told
    /// (`selector::COVERING_INTERVALS`).
    pub intervals: u64,
}

/// Decaying sums of CPU seconds, raw and wire bytes of intervals of one
/// kind (each of [`MIN_RAW`] bytes or more): each weighs by its bytes, and
/// leaves older ones 0.7 of their weight (`DECAY`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sums {
    cpu: f64,
    raw: f64,
    wire: f64,
}

impl Sums {
    fn add(self, cpu: f64, raw: u64, wire: u64) -> Sums {
        Sums {
            cpu: self.cpu * DECAY + cpu,
            raw: self.raw * DECAY + raw as f64,
            wire: self.wire * DECAY + wire as f64,
        }
    }

    /// `(wire/raw, CPU seconds per raw byte)`, once [`MIN_RAW`] bytes count.
    pub fn per_raw(&self) -> Option<(f64, f64)> {
        (self.raw >= MIN_RAW as f64).then(|| (self.wire / self.raw, self.cpu / self.raw))
    }
}

/// Spare cores below which a process with `budget` cores counts as
/// CPU-bound: 30 % of the budget, at most one core. On loopback, with
/// both daemons and the applications on two cores, the spare cores read
/// 0.26–0.6 (the processes wait on each other as much as on the CPU); on
/// a 100 Mbit/s link with zstd at work, 0.8–1.6.
pub fn saturation_floor(budget: f64) -> f64 {
    (0.3 * budget).min(1.0)
}

/// What one interval measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Wall-clock seconds.
    pub wall: f64,
    /// CPU seconds this process used.
    pub own_cpu: f64,
    /// Idle CPU seconds of the machine (all cores).
    pub idle_cpu: f64,
    /// CPU seconds spent compressing.
    pub compress_cpu: f64,
    /// Wall seconds spent compressing.
    pub compress_wall: f64,
    /// Share of the time some task waited for a core (`None`: unknown).
    pub pressure: Option<f64>,
    /// Bytes queued by the applications.
    pub raw: u64,
    /// The same bytes on the wire (compressed or not).
    pub wire: u64,
}

impl Load {
    /// Folds one interval into `prev` (the smoothed load so far) for a
    /// process with `budget` cores. An interval longer than
    /// [`LONGEST_INTERVAL`] (a pause in sending) leaves `prev` as it is,
    /// counted among the intervals (without a `prev`, it is not counted).
    pub fn update(prev: Option<Load>, i: Interval, budget: f64) -> Option<Load> {
        let intervals = prev.map_or(1, |p| p.intervals + 1);
        if i.wall.is_nan() || i.wall <= 0.0 || i.wall > LONGEST_INTERVAL.as_secs_f64() {
            return prev.map(|p| Load { intervals, ..p });
        }
        let own = (i.own_cpu / i.wall).max(0.0);
        let idle = (i.idle_cpu / i.wall).max(0.0);
        let spare = (budget - own).max(0.0).min(idle);
        let cores = (own + spare).max(budget.min(1.0));
        // The CPU apart from compression goes to the kind of interval
        // its wire/raw makes it.
        let cpu = (i.own_cpu - i.compress_cpu).max(0.0);
        let x = if i.raw >= MIN_RAW {
            i.wire as f64 / i.raw as f64
        } else {
            f64::NAN
        };
        let (mut as_is, mut compressed) = prev.map_or((Sums::default(), Sums::default()), |p| {
            (p.as_is, p.compressed)
        });
        // Only intervals where the CPU was short count: the costs matter
        // only there, and per byte they differ with the load (a transfer
        // held to 80 MB/s by zstd-9 spent far less per raw byte than one
        // at 500 MB/s, and once fitted in, made LZ4 look worth its CPU on
        // loopback).
        let pressed = i.pressure.is_some_and(|p| p >= SATURATED_PRESSURE);
        let floor = saturation_floor(budget);
        let short = pressed || spare < floor;
        if short && x >= SPLIT {
            as_is = as_is.add(cpu, i.raw, i.wire);
        } else if short && x < SPLIT {
            compressed = compressed.add(cpu, i.raw, i.wire);
        }
        // Each figure moves towards this interval's, from where it was
        // (the first interval sets it).
        let smooth = |old: Option<f64>, new: f64| old.map_or(new, |o| o + ALPHA * (new - o));
        let spare = smooth(prev.map(|p| p.spare), spare);
        let cpu_per_wall = match (i.compress_wall > 0.0)
            .then(|| (i.compress_cpu / i.compress_wall).clamp(0.05, 1.0))
        {
            Some(c) => smooth(prev.map(|p| p.cpu_per_wall), c),
            None => prev.map_or(1.0, |p| p.cpu_per_wall),
        };
        Some(Load {
            own: smooth(prev.map(|p| p.own), own),
            cores: smooth(prev.map(|p| p.cores), cores),
            spare,
            raw_rate: smooth(prev.map(|p| p.raw_rate), i.raw as f64 / i.wall),
            as_is,
            compressed,
            cpu_per_wall,
            saturated: spare < floor || pressed,
            intervals,
        })
    }

    /// The process's CPU per raw byte apart from compression, as
    /// `(raw_cost, wire_cost)`: a byte sent at ratio `r` costs
    /// `raw_cost + wire_cost / r`. Fitted through the intervals sent
    /// as-is and those sent compressed; with only one kind measured,
    /// [`RAW_SHARE_PRIOR`] splits it.
    pub fn costs(&self) -> Option<(f64, f64)> {
        match (self.as_is.per_raw(), self.compressed.per_raw()) {
            (Some((x1, y1)), Some((x2, y2))) if x1 - x2 > 0.1 => {
                let wire = ((y1 - y2) / (x1 - x2)).clamp(0.0, y1 / x1);
                Some(((y1 - wire * x1).max(0.0), wire))
            }
            (Some((x, y)), _) | (None, Some((x, y))) => {
                let whole = y / (RAW_SHARE_PRIOR + (1.0 - RAW_SHARE_PRIOR) * x);
                Some((whole * RAW_SHARE_PRIOR, whole * (1.0 - RAW_SHARE_PRIOR)))
            }
            (None, None) => None,
        }
    }
}

/// Counts CPU and wall time spent compressing (any thread).
pub fn count_compression(cpu: Duration, wall: Duration) {
    COMPRESS_CPU_NS.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
    COMPRESS_WALL_NS.fetch_add(wall.as_nanos() as u64, Ordering::Relaxed);
}

/// Counts stream data queued: `raw` bytes of the application's, `wire`
/// bytes on the wire (the same when sent as-is).
pub fn count_queued(raw: usize, wire: usize) {
    RAW_BYTES.fetch_add(raw as u64, Ordering::Relaxed);
    WIRE_BYTES.fetch_add(wire as u64, Ordering::Relaxed);
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The first CPU the calling thread may run on, if it can be read (tests
/// that need two threads to share one core).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn first_allowed_cpu() -> Option<usize> {
    // SAFETY: `set` is a plain cpu_set_t that sched_getaffinity fills and
    // CPU_ISSET only reads.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set))
    }
}

/// Pins the calling thread to CPU `cpu`; false where it may not.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: `set` is a plain cpu_set_t written only by CPU_ZERO and
    // CPU_SET; sched_setaffinity(0, ..) changes the calling thread alone.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPU seconds this process has used (user and system).
pub fn process_cpu() -> Option<f64> {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; the call writes only it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return None;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Idle CPU seconds of the machine since boot (all cores; idle and iowait
/// from the first line of `/proc/stat`).
pub fn machine_idle() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_idle_ticks(stat.lines().next()?)?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// Microseconds some task of this cgroup (or, without one, of the
/// machine) waited for a core since boot.
fn pressure_stall() -> Option<f64> {
    let text = std::fs::read_to_string("/sys/fs/cgroup/cpu.pressure")
        .or_else(|_| std::fs::read_to_string("/proc/pressure/cpu"))
        .ok()?;
    parse_some_total(&text).map(|us| us as f64 * 1e-6)
}

/// The `total=` of the `some` line of a pressure file (microseconds).
pub(crate) fn parse_some_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Idle plus iowait ticks from `/proc/stat`'s `cpu` line.
pub(crate) fn parse_idle_ticks(line: &str) -> Option<u64> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(5).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    Some(v.get(3)? + v.get(4)?)
}

struct Sampler {
    at: Instant,
    own_cpu: f64,
    idle_cpu: f64,
    compress_cpu: u64,
    compress_wall: u64,
    stall: Option<f64>,
    raw: u64,
    wire: u64,
    load: Option<Load>,
}

impl Sampler {
    fn now() -> Option<Sampler> {
        Some(Sampler {
            at: Instant::now(),
            own_cpu: process_cpu()?,
            idle_cpu: machine_idle()?,
            compress_cpu: COMPRESS_CPU_NS.load(Ordering::Relaxed),
            compress_wall: COMPRESS_WALL_NS.load(Ordering::Relaxed),
            stall: pressure_stall(),
            raw: RAW_BYTES.load(Ordering::Relaxed),
            wire: WIRE_BYTES.load(Ordering::Relaxed),
            load: None,
        })
    }
}

/// The sampler's state.
enum State {
    /// No sample yet.
    Unstarted,
    /// `/proc` could not be read: no figures, and no more tries.
    Unavailable,
    Sampling(Sampler),
}

static SAMPLER: Mutex<State> = Mutex::new(State::Unstarted);

/// Whether the CPU can be sampled here (or has not been tried yet): where
/// it cannot, [`current`] never has a figure.
pub fn sampling() -> bool {
    !matches!(
        *SAMPLER.lock().unwrap_or_else(|p| p.into_inner()),
        State::Unavailable
    )
}

/// The process's load, sampled at most every [`SAMPLE_EVERY`] (`None`
/// where `/proc` is not readable, or before the second sample). Cheap
/// between samples: one uncontended lock.
pub fn current() -> Option<Load> {
    let mut guard = SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let prev = match &mut *guard {
        State::Unavailable => return None,
        State::Unstarted => {
            *guard = Sampler::now().map_or(State::Unavailable, State::Sampling);
            return None;
        }
        State::Sampling(prev) => prev,
    };
    if prev.at.elapsed() < SAMPLE_EVERY {
        return prev.load;
    }
    let Some(mut next) = Sampler::now() else {
        return prev.load;
    };
    let ns = |a: u64, b: u64| a.saturating_sub(b) as f64 * 1e-9;
    let wall = next.at.saturating_duration_since(prev.at).as_secs_f64();
    let interval = Interval {
        wall,
        own_cpu: next.own_cpu - prev.own_cpu,
        idle_cpu: next.idle_cpu - prev.idle_cpu,
        compress_cpu: ns(next.compress_cpu, prev.compress_cpu),
        compress_wall: ns(next.compress_wall, prev.compress_wall),
        pressure: next
            .stall
            .zip(prev.stall)
            .map(|(b, a)| ((b - a) / wall.max(1e-9)).clamp(0.0, 1.0)),
        raw: next.raw.saturating_sub(prev.raw),
        wire: next.wire.saturating_sub(prev.wire),
    };
    next.load = Load::update(prev.load, interval, crate::cpu::cpu_budget());
    tracing::trace!(?interval, load = ?next.load, "cpu interval");
    let load = next.load;
    *prev = next;
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenth of a second at these rates (CPU seconds and bytes per
    /// second).
    fn interval(own: f64, idle: f64, compress: f64, raw: u64, wire: u64) -> Interval {
        Interval {
            wall: 0.1,
            own_cpu: own / 10.0,
            idle_cpu: idle / 10.0,
            compress_cpu: compress / 10.0,
            compress_wall: compress / 10.0,
            pressure: None,
            raw: raw / 10,
            wire: wire / 10,
        }
    }

    #[test]
    fn idle_ticks_and_pressure_are_parsed() {
        let line = "cpu  4705 150 1120 16250 520 0 30 0 0 0";
        assert_eq!(parse_idle_ticks(line), Some(16250 + 520));
        assert_eq!(parse_idle_ticks("cpu0 1 2 3 4 5"), None);
        assert_eq!(parse_idle_ticks("cpu 1 2"), None);
        let psi = "some avg10=0.00 avg60=1.40 avg300=3.30 total=2896194196\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(psi), Some(2_896_194_196));
        assert_eq!(parse_some_total("full total=3\n"), None);
    }

    #[test]
    fn a_busy_machine_is_saturated_and_an_idle_one_is_not() {
        // Two cores: this process uses 0.9, the machine has 0.1 idle
        // (loopback, both daemons and the clients on the cores).
        let busy = Load::update(None, interval(0.9, 0.1, 0.0, 500 << 20, 500 << 20), 2.0).unwrap();
        assert!(busy.saturated);
        assert!((busy.cores - 1.0).abs() < 1e-9);
        // 0.4 of a core used, 1.5 idle (a 100 Mbit/s link binds).
        let idle = Load::update(None, interval(0.4, 1.5, 0.3, 60 << 20, 12 << 20), 2.0).unwrap();
        assert!(!idle.saturated);
        assert!((idle.spare - 1.5).abs() < 1e-9);
        // The same with tasks waiting for a core most of the time.
        let pressed = Interval {
            pressure: Some(0.8),
            ..interval(0.4, 1.5, 0.3, 60 << 20, 12 << 20)
        };
        assert!(Load::update(None, pressed, 2.0).unwrap().saturated);
        // A quota of half a core, all of it used, on an idle machine.
        let quota = Load::update(None, interval(0.5, 7.0, 0.2, 50 << 20, 50 << 20), 0.5).unwrap();
        assert!(quota.saturated);
        assert_eq!(quota.spare, 0.0);
    }

    #[test]
    fn costs_split_into_raw_and_wire_parts() {
        let close = |a: f64, b: f64| (a - b).abs() < 0.005e-9;
        // Sent as-is: 1.7 ns per byte, compression aside. Alone, the
        // prior splits it.
        let as_is = interval(0.17, 0.0, 0.0, 100_000_000, 100_000_000);
        let l = Load::update(None, as_is, 2.0).unwrap();
        let (raw, wire) = l.costs().unwrap();
        assert!(close(raw, 1.02e-9) && close(wire, 0.68e-9), "{raw} {wire}");
        // Compressed to 0.23: 0.4 s compressing and 1.27 ns per raw byte
        // besides. The fit puts 0.558 ns on the wire, the rest on the raw
        // bytes.
        let compressed = interval(0.527, 0.0, 0.4, 100_000_000, 23_000_000);
        let l2 = Load::update(Some(l), compressed, 2.0);
        let (raw, wire) = l2.unwrap().costs().unwrap();
        assert!(close(wire, 0.558e-9), "{wire}");
        assert!(close(raw + wire, 1.7e-9), "{raw}");
        // An interval with cores to spare says nothing of the costs where
        // the CPU is short (zstd-9 holding a transfer to 80 MB/s).
        let calm = interval(0.3, 1.5, 0.25, 80_000_000, 11_000_000);
        assert_eq!(
            Load::update(l2, calm, 2.0).unwrap().costs(),
            l2.unwrap().costs()
        );
        // An interval that sent little (the process busy with something
        // else) does not move it, nor does a pause.
        let l3 = Load::update(l2, interval(0.5, 1.8, 0.0, 2 << 20, 2 << 20), 2.0).unwrap();
        assert_eq!(l3.costs(), l2.unwrap().costs());
        assert!(!l3.saturated, "{l3:?}");
        let pause = Interval {
            wall: 30.0,
            ..interval(0.5, 1.0, 0.0, 500_000_000, 500_000_000)
        };
        let after = Load::update(Some(l3), pause, 2.0);
        assert_eq!(after.map(|l| l.costs()), Some(l3.costs()));
        assert_eq!(
            after,
            Some(Load { intervals: 4, ..l3 }),
            "counted, else unchanged"
        );
        // Older intervals fade: after many at 2.5 ns as-is, that is the figure.
        let mut l4 = Some(l3);
        for _ in 0..30 {
            l4 = Load::update(l4, interval(0.25, 0.0, 0.0, 100_000_000, 100_000_000), 2.0);
        }
        let as_is_now = l4.unwrap().as_is.per_raw().unwrap().1;
        assert!(close(as_is_now, 2.5e-9), "{as_is_now}");
        // Only compressed measured: the prior splits what a byte sent
        // as-is would cost.
        let c = Load::update(None, compressed, 2.0).unwrap();
        let (raw, wire) = c.costs().unwrap();
        assert!(
            close(raw, 1.101e-9) && close(wire, 0.734e-9),
            "{raw} {wire}"
        );
    }

    /// A stream flipping between LZ4 and as-is sends intervals of mixed
    /// chunks: they are points on the same line, and give the costs.
    #[test]
    fn intervals_of_mixed_chunks_give_the_costs() {
        let close = |a: f64, b: f64| (a - b).abs() < 0.005e-9;
        // raw_cost 1.1 ns, wire_cost 0.6 ns; at wire/raw 0.85 and 0.6.
        let at = |x: f64| {
            let per_raw = 1.1e-9 + 0.6e-9 * x;
            interval(per_raw * 1e8, 0.0, 0.0, 100_000_000, (x * 1e8) as u64)
        };
        let l = Load::update(None, at(0.85), 2.0).unwrap();
        assert!(l.costs().is_some(), "one mixed interval: the prior splits");
        let (raw, wire) = Load::update(Some(l), at(0.6), 2.0)
            .unwrap()
            .costs()
            .unwrap();
        assert!(close(raw, 1.1e-9) && close(wire, 0.6e-9), "{raw} {wire}");
    }

    #[test]
    fn samples_are_taken_on_this_machine() {
        // The first call takes a baseline; after SAMPLE_EVERY a second
        // one measures this thread's work.
        let _ = current();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < SAMPLE_EVERY + Duration::from_millis(20) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let l = current().expect("a load on Linux");
        assert!(l.own > 0.3, "{l:?}");
        assert!(thread_cpu() > Duration::ZERO);
    }
}
