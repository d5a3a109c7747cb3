//! What the CPU did while a benchmark moved its bytes, and whether the CPU,
//! not the link, set the pace.
//!
//! `dwcp-bench wan --tun` drives both ends of every transport from one
//! thread (a current-thread runtime that moves between two network
//! namespaces), while the TUN delay line runs on threads of its own in the
//! same process. On a fast link that one thread, or the machine's cores
//! shared by it, the line and the compression pool, can be what limits a
//! transfer; such a cell says nothing about the transport's use of the
//! link, and is marked CPU-bound with its figures.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Share of a core (the driving thread) or of the machine above which a
/// transfer counts as CPU-bound: a thread busy 90 % of the time has no
/// slack left for the wake-ups a transport needs.
pub const CPU_BOUND_SHARE: f64 = 0.9;

/// Starts at [`CpuMeter::start`] on the thread that drives the transfer.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    at: Instant,
    thread: Duration,
    process: Option<f64>,
    machine_idle: Option<f64>,
}

/// What a [`CpuMeter`] saw, as shares of the wall time it covered.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    /// Share of the time the driving thread (both ends of the transport)
    /// was on a CPU.
    pub driver_busy: f64,
    /// CPU seconds of the whole process (the delay line and any
    /// compression threads included) per second: cores in use.
    pub process_cores: Option<f64>,
    /// Share of the machine's cores that were not idle (everything on the
    /// machine, the kernel's packet work included).
    pub machine_busy: Option<f64>,
    /// The driving thread or the machine was busy at least
    /// [`CPU_BOUND_SHARE`] of the time.
    pub cpu_bound: bool,
}

impl CpuMeter {
    /// Starts measuring; call on the thread that drives the transfer.
    pub fn start() -> Self {
        CpuMeter {
            at: Instant::now(),
            thread: dwcp_core::cpu_load::thread_cpu(),
            process: dwcp_core::cpu_load::process_cpu(),
            machine_idle: dwcp_core::cpu_load::machine_idle(),
        }
    }

    /// What was used since [`CpuMeter::start`]; call on the same thread.
    pub fn stop(&self) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let thread = dwcp_core::cpu_load::thread_cpu().saturating_sub(self.thread);
        let driver_busy = thread.as_secs_f64() / wall;
        let process_cores = self
            .process
            .zip(dwcp_core::cpu_load::process_cpu())
            .map(|(a, b)| (b - a).max(0.0) / wall);
        let machine_busy = self
            .machine_idle
            .zip(dwcp_core::cpu_load::machine_idle())
            .zip(online_cpus())
            .map(|((a, b), cores)| (1.0 - (b - a).max(0.0) / (wall * cores)).clamp(0.0, 1.0));
        CpuUse {
            driver_busy,
            process_cores,
            machine_busy,
            cpu_bound: is_cpu_bound(driver_busy, machine_busy),
        }
    }
}

/// The rule behind [`CpuUse::cpu_bound`].
fn is_cpu_bound(driver_busy: f64, machine_busy: Option<f64>) -> bool {
    driver_busy >= CPU_BOUND_SHARE || machine_busy.is_some_and(|m| m >= CPU_BOUND_SHARE)
}

/// Cores the machine has online: the `cpuN` lines of `/proc/stat`, whose
/// idle time [`dwcp_core::cpu_load::machine_idle`] sums.
fn online_cpus() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let n = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    (n > 0).then_some(n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_driver_or_machine_is_cpu_bound_and_an_idle_one_is_not() {
        assert!(is_cpu_bound(0.95, Some(0.5)));
        assert!(is_cpu_bound(0.3, Some(0.92)));
        assert!(!is_cpu_bound(0.3, Some(0.5)));
        assert!(!is_cpu_bound(0.3, None));
    }

    #[test]
    fn a_spinning_thread_reads_busy_and_a_sleeping_one_does_not() {
        let m = CpuMeter::start();
        let until = Instant::now() + Duration::from_millis(200);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spun = m.stop();
        let m = CpuMeter::start();
        std::thread::sleep(Duration::from_millis(200));
        let slept = m.stop();
        // Bounds far from the expected 1.0 and 0.0: a loaded machine may
        // take the spinning thread off its core for a while.
        assert!(spun.driver_busy > 0.3, "spinning: {:.2}", spun.driver_busy);
        assert!(
            slept.driver_busy < 0.1,
            "sleeping: {:.2}",
            slept.driver_busy
        );
        assert!(
            spun.process_cores.is_some_and(|c| c > 0.3),
            "{:?}",
            spun.process_cores
        );
        assert!(online_cpus().is_some_and(|n| n >= 1.0));
    }
}
