//! `dwcp-daemon`: the DWCP sidecar's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dwcp_daemon::config::{self, LogFormat};
use dwcp_daemon::{demo, probe, Daemon};

/// DWCP sidecar: carries local TCP connections as DWCP streams to peer sidecars.
#[derive(Debug, Parser)]
#[command(name = "dwcp-daemon", version, about)]
struct Cli {
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `dwcp_core=debug,info` (overrides `log.level`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the sidecar.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides a key, e.g. `--set admin.listen=127.0.0.1:9091` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Validates a configuration file; prints every problem with its key and
    /// line. Also loads the TLS files it names, as `run` does.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
        /// Overrides, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Checks the file alone, without reading the TLS files it names
        /// (for checking a configuration away from the machine that holds
        /// them, such as a manifest in CI).
        #[arg(long)]
        offline: bool,
    },
    /// Probes the local admin server; exits 0 if it answers 200, else 1.
    Health {
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        addr: String,
        /// Path to probe (`/health` for liveness, `/ready` for readiness).
        #[arg(long, default_value = "/health")]
        path: String,
        /// Timeout in seconds.
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
    /// Asks the local daemon to drain (readiness 503, no new streams, open
    /// streams go on); for preStop hooks and operators.
    Drain {
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        addr: String,
    },
    /// Runs two daemons over an emulated WAN with traffic through real tunnels.
    Demo(demo::DemoArgs),
    /// Writes a throwaway development CA and certificates (`ca.pem`,
    /// `NAME.pem`, `NAME.key`) for trying the daemon; never for production.
    DevCerts {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Node names (the DNS name in each certificate).
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = dwcp_daemon::config::log_filter(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for a person at a terminal, never in a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Warnings for the `DWCP_*` variables in this process's environment that
/// set nothing (a misspelled override is otherwise ignored).
fn unknown_env() -> Vec<String> {
    config::unknown_env(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))),
    )
}

fn load(file: &std::path::Path, set: &[String]) -> Result<config::Config, String> {
    let overrides = config::overrides(|k| std::env::var(k).ok(), set)?;
    config::load(file, &overrides).map_err(|e| e.to_string())
}

/// Prints an admin answer: the body on stdout if the status is `expected`
/// (exit 0), else the status and body or the error on stderr (exit 1).
fn report(target: &str, expected: u16, answer: Result<(u16, String), String>) -> ExitCode {
    match answer {
        Ok((code, body)) if code == expected => {
            println!("{}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprintln!("{target}: HTTP {code} {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{target}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file, set, offline } => match load(&file, &set).and_then(|c| {
            // The TLS files too, as `run` loads them before it starts.
            if offline {
                return Ok(c);
            }
            dwcp_daemon::daemon::load_tls(&c)
                .map(|_| c)
                .map_err(|e| format!("{}: {e}", file.display()))
        }) {
            Ok(c) => {
                for w in unknown_env() {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: OK ({} peer(s), {} service(s), {} tunnel(s))",
                    file.display(),
                    c.peers.len(),
                    c.services.len(),
                    c.tunnels.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                // A misspelled override may be why the file fails.
                for w in unknown_env() {
                    eprintln!("warning: {w}");
                }
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Health {
            addr,
            path,
            timeout,
        } => report(
            &format!("{addr}{path}"),
            200,
            probe::get(&addr, &path, Duration::from_secs(timeout)),
        ),
        Command::Drain { addr } => report(
            &addr,
            202,
            probe::post(&addr, "/api/v1/dwcp/drain", Duration::from_secs(5)),
        ),
        Command::DevCerts { dir, names } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            match dwcp_core::tls::DevCa::new().and_then(|ca| ca.write_pem_files(&dir, &names)) {
                Ok(()) => {
                    println!(
                        "wrote ca.pem and {} certificate(s) to {}",
                        names.len(),
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dev-certs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(args) => {
            init_logging(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            );
            match demo::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, set } => {
            let config = match load(&config, &set) {
                Ok(c) => c,
                Err(e) => {
                    for w in unknown_env() {
                        eprintln!("warning: {w}");
                    }
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(
                cli.log_format.unwrap_or(config.log.format),
                cli.log_level.as_deref().unwrap_or(&config.log.level),
            );
            for w in unknown_env() {
                tracing::warn!("{w}");
            }
            // Before the runtime's threads start (see dwcp_core::malloc).
            dwcp_core::malloc::configure();
            let workers = config.runtime.workers_for(dwcp_core::cpu::cpu_budget());
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(workers, "runtime started (runtime.worker_threads)");
            rt.block_on(run(config))
        }
    }
}

async fn run(config: config::Config) -> ExitCode {
    let grace = Duration::from_secs(config.lifecycle.drain_grace_secs);
    let daemon = match Daemon::start(config).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("dwcp-daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let trimmer = tokio::spawn(trim_memory());
    let signal = wait_for_signal().await;
    trimmer.abort();
    tracing::info!(signal, ?grace, "shutting down");
    let report = tokio::select! {
        r = daemon.drain(grace) => r,
        s = wait_for_signal() => {
            tracing::warn!(signal = s, "second signal: stopping without waiting");
            dwcp_daemon::DrainReport { cut: daemon.state().registry.len(), took: Duration::ZERO }
        }
    };
    tracing::info!(
        cut = report.cut,
        took_ms = report.took.as_millis() as u64,
        "drained"
    );
    daemon.shutdown().await;
    ExitCode::SUCCESS
}

/// How often the daemon considers returning freed heap memory to the system.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);
/// Resident memory above the lowest seen after a trim that makes it trim.
const TRIM_SLACK_KIB: u64 = 2048;

/// Returns freed heap memory to the system after bursts (glibc keeps it
/// otherwise: tens of MiB stayed resident after a workload had ended).
/// Every [`TRIM_INTERVAL`], while resident memory is more than
/// [`TRIM_SLACK_KIB`] above the lowest level seen (at start, or after a
/// trim: the idle footprint), calls `malloc_trim`; an idle daemon does nothing.
async fn trim_memory() {
    // Where /proc is missing there is nothing to measure: never trim.
    let Some(mut floor) = rss_kib() else { return };
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(rss) = rss_kib() else { return };
        if rss <= floor.saturating_add(TRIM_SLACK_KIB) {
            continue;
        }
        let t0 = std::time::Instant::now();
        if !dwcp_core::malloc::trim() {
            // Not glibc, or nothing to give back.
            continue;
        }
        let after = rss_kib().unwrap_or(rss);
        floor = floor.min(after);
        tracing::debug!(
            before_kib = rss,
            after_kib = after,
            took_us = t0.elapsed().as_micros() as u64,
            "returned free heap memory to the system"
        );
    }
}

/// This process's resident memory in KiB (`VmRSS`), where /proc has it.
fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only Ctrl-C through tokio remains.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
