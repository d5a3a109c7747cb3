//! A `dwcp-daemon` process started by a scenario (`sidecar`,
//! `compression-e2e`), killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Runs `cmd` (the daemon binary, or `ip netns exec NS binary`) with
    /// `--log-level LEVEL run --config CONFIG`, its log in `CONFIG.log`,
    /// and waits up to 20 s until `ready` answers true.
    ///
    /// # Errors
    /// The process cannot start, or it is not ready in time (the error
    /// holds its log).
    pub fn start(
        mut cmd: Command,
        config: &Path,
        log_level: &str,
        mut ready: impl FnMut() -> Result<bool, String>,
    ) -> Result<Daemon, String> {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .args(["--log-level", log_level, "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
        let d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ready()? {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "daemon {} never became ready; log:\n{}",
            config.display(),
            d.log_text()
        ))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the process has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_of(Some(self.pid()))
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon binary: `given`, else `dwcp-daemon` beside the running
/// executable, else `dwcp-daemon` on the `PATH`.
pub fn binary(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("dwcp-daemon")))
            .unwrap_or_else(|| "dwcp-daemon".into())
    })
}

/// CPU seconds (user + system) of process `pid` from `/proc/PID/stat`
/// (`/proc/self/stat` for this process with `None`).
#[allow(unsafe_code)]
pub fn proc_cpu_of(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}
