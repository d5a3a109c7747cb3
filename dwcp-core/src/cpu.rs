//! The CPU compression may use, and how it is shared.
//!
//! Compression runs on tokio's blocking pool, beside the threads that drive
//! the transport. Those threads have the same OS priority, so a compressor
//! that takes every core takes them from the transport too: in the demo
//! (two daemons and the emulator in one process on two cores) four zstd-19
//! chunks at once held the link at 30–45 of 100 Mbit/s for seconds, and the
//! slow transport looked to the selector like a slow link, which kept it on
//! zstd-19. So compression gets the CPU budget less one core for the
//! transport, at least one thread ([`compression_threads`]), and a stream's
//! compressor is modelled with its share of those threads among the streams
//! compressing at the same time ([`Compressing::share`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Most chunks of one stream compressed at once.
pub const MAX_STREAM_PARALLELISM: usize = 4;
/// Most chunks compressed at once in a process.
pub const MAX_THREADS: usize = 8;

static CPU_BUDGET: AtomicU64 = AtomicU64::new(0);
static DETECTED: OnceLock<f64> = OnceLock::new();
static COMPRESSING: AtomicUsize = AtomicUsize::new(0);

/// CPU cores this process may use: the cgroup v2 quota
/// (`/sys/fs/cgroup/cpu.max`) if there is one, else the machine's
/// parallelism; [`set_cpu_budget`] overrides it.
pub fn cpu_budget() -> f64 {
    let set = f64::from_bits(CPU_BUDGET.load(Ordering::Relaxed));
    if set > 0.0 {
        return set;
    }
    *DETECTED.get_or_init(|| {
        std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
            .ok()
            .and_then(|s| parse_cpu_max(&s))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64))
    })
}

/// Sets the CPU cores this process may use (0 or less: back to detection).
/// The process-wide number of compression threads is fixed at the first
/// compression, so set it before.
pub fn set_cpu_budget(cores: f64) {
    CPU_BUDGET.store(cores.max(0.0).to_bits(), Ordering::Relaxed);
}

/// Cores from a cgroup v2 `cpu.max` line (`"50000 100000"` is half a core;
/// `"max 100000"` is no limit, `None`).
pub(crate) fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then_some(quota / period)
}

/// Chunks compressed at once with `budget` cores: one core is left to the
/// transport, at least one thread compresses, at most [`MAX_THREADS`].
pub fn compression_threads_for(budget: f64) -> usize {
    let spare = if budget.is_finite() && budget > 1.0 {
        (budget - 1.0).floor() as usize
    } else {
        0
    };
    spare.clamp(1, MAX_THREADS)
}

/// Threads that drive the transport (a runtime's workers) with `budget`
/// cores: one below four cores, else half the budget (at most
/// [`MAX_THREADS`]). A sidecar shares its cores with the application it
/// serves and with compression ([`compression_threads_for`] leaves the
/// transport one core); on two cores, two daemons' workers waking each other
/// across threads cost a third more CPU per tunnelled request than one
/// worker each, and bulk ran no faster (docs/benchmarks.md, "Through a pair
/// of sidecars").
pub fn transport_threads_for(budget: f64) -> usize {
    if !budget.is_finite() || budget < 4.0 {
        1
    } else {
        ((budget / 2.0).floor() as usize).clamp(1, MAX_THREADS)
    }
}

/// Chunks compressed at once in this process ([`compression_threads_for`]
/// the [`cpu_budget`]).
pub fn compression_threads() -> usize {
    compression_threads_for(cpu_budget())
}

/// Chunks of one stream compressed at once.
pub fn stream_parallelism() -> usize {
    compression_threads().min(MAX_STREAM_PARALLELISM)
}

/// The process-wide permits, one per compression thread (sized at first
/// use from the budget then).
pub(crate) fn permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(compression_threads()))
}

/// Cores one stream's compressor gets when `streams` streams compress at
/// once on `threads` threads with `budget` cores: an equal share of the
/// threads (no more cores than the budget), at most the stream's own
/// `parallel` chunks.
pub fn share_for(budget: f64, threads: usize, streams: usize, parallel: usize) -> f64 {
    let cores = budget.min(threads as f64).max(0.01);
    (cores / streams.max(1) as f64).min(parallel as f64)
}

/// A stream counted among those compressing while this lives.
#[derive(Debug)]
pub(crate) struct Compressing(());

impl Compressing {
    /// Counts the calling stream in.
    pub(crate) fn start() -> Self {
        COMPRESSING.fetch_add(1, Ordering::Relaxed);
        Compressing(())
    }

    /// This stream's compressor share now ([`share_for`]).
    pub(crate) fn share(&self) -> f64 {
        share_for(
            cpu_budget(),
            compression_threads(),
            COMPRESSING.load(Ordering::Relaxed),
            stream_parallelism(),
        )
    }
}

impl Drop for Compressing {
    fn drop(&mut self) {
        COMPRESSING.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_cpu_max_is_parsed() {
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000"), Some(2.0));
    }

    #[test]
    fn compression_leaves_the_transport_a_core() {
        // Two cores: one compresses, one drives the transport (the demo's
        // case, where four zstd-19 chunks at once starved the link).
        assert_eq!(compression_threads_for(2.0), 1);
        assert_eq!(compression_threads_for(4.0), 3);
        // Half a core or one: a single thread, throttled by the quota.
        assert_eq!(compression_threads_for(0.5), 1);
        assert_eq!(compression_threads_for(1.0), 1);
        assert_eq!(compression_threads_for(1.5), 1);
        // 2.5 cores: two threads would leave the transport half a core.
        assert_eq!(compression_threads_for(2.5), 1);
        assert_eq!(compression_threads_for(3.0), 2);
        assert_eq!(compression_threads_for(64.0), MAX_THREADS);
        assert_eq!(compression_threads_for(f64::NAN), 1);
    }

    #[test]
    fn the_transport_gets_one_worker_below_four_cores_then_half() {
        for budget in [0.5, 1.0, 2.0, 2.5, 3.9, f64::NAN, f64::INFINITY] {
            assert_eq!(transport_threads_for(budget), 1, "{budget}");
        }
        assert_eq!(transport_threads_for(4.0), 2);
        assert_eq!(transport_threads_for(7.0), 3);
        assert_eq!(transport_threads_for(64.0), MAX_THREADS);
    }

    #[test]
    fn streams_compressing_at_once_share_the_threads() {
        // Two cores, two compressing streams: half a core each.
        assert_eq!(share_for(2.0, 1, 2, 1), 0.5);
        // Half a core alone: half a core.
        assert_eq!(share_for(0.5, 1, 1, 1), 0.5);
        // Eight cores (seven threads), one stream of four chunks at once.
        assert_eq!(share_for(8.0, 7, 1, 4), 4.0);
        assert_eq!(share_for(8.0, 7, 2, 4), 3.5);
        // Nobody counted yet: taken as one.
        assert_eq!(share_for(2.0, 1, 0, 1), 1.0);
    }
}
