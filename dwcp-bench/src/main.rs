//! `dwcp-bench`: end-to-end scenarios comparing DWCP with the alternatives.

use clap::{Parser, Subcommand, ValueEnum};

/// DWCP benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "dwcp-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bulk throughput on loopback: DWCP over QUIC vs raw quinn, DWCP over TCP
    /// lanes vs raw TCP+rustls, 1,000 streams vs 1.
    Bulk {
        /// MiB moved per run.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Runs of each side (best kept).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// 1 KiB echo latency under 8 saturating bulk streams: DWCP vs rust-yamux.
    Latency {
        /// Echoes measured per system.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Also run DWCP with the bulk class capped at this many MB/s, to see
        /// how much of the latency is CPU saturation of this machine.
        #[arg(long)]
        bulk_cap_mbps: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Throughput against the number of concurrent streams (loopback): DWCP
    /// over QUIC and over TCP lanes, and raw quinn; JSON for the plots.
    Streams {
        /// Stream counts.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
        counts: Vec<usize>,
        /// MiB moved per run.
        #[arg(long, default_value_t = 256)]
        mib: u64,
        /// Runs of each (best kept).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Goodput over an emulated WAN (UDP relay): DWCP (BBR and CUBIC) vs raw quinn.
    Wan {
        /// Link rate in Mbit/s.
        #[arg(long, default_value_t = 100)]
        mbit: u64,
        /// Round-trip time in ms.
        #[arg(long, default_value_t = 50)]
        rtt_ms: u64,
        /// Loss in percent, each way.
        #[arg(long, default_value_t = 1.0)]
        loss_pct: f64,
        /// MiB moved per run.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Run every transport (kernel TCP, DWCP TCP lanes, DWCP QUIC) on
        /// one TUN delay line between two network namespaces (needs root)
        /// instead of QUIC through the UDP relay.
        #[arg(long)]
        tun: bool,
        /// With `--tun`: only the subjects whose name contains one of these
        /// (comma-separated, e.g. `quic` or `kernel tcp (bbr),controller`);
        /// with `--share`, the pairs whose two flows both match (flows:
        /// `DWCP controller`, `quinn BBR`, `kernel TCP CUBIC`; e.g.
        /// `controller` runs the two DWCP connections alone).
        #[arg(long)]
        only: Option<String>,
        /// With `--tun`: two flows on the link at once instead (two DWCP
        /// controller connections, two kernel CUBIC flows, and kernel CUBIC
        /// beside the DWCP controller and beside quinn BBR), each pair for
        /// this many seconds (at least 15); the second flow joins after 3 s
        /// and the shares are taken from 10 s on.
        #[arg(long)]
        share: Option<f64>,
        /// With `--tun`: the DWCP subjects only, each moving the bytes
        /// twice on one connection, this many seconds apart, and measured
        /// on the second transfer (a sidecar keeps its connection to a
        /// peer: its startup is paid once, not per transfer).
        #[arg(long)]
        warm: Option<f64>,
    },
    /// Compares a run with a committed baseline; exits 1 on a regression.
    Gate {
        /// Baseline file (JSON).
        #[arg(long)]
        baseline: std::path::PathBuf,
        /// How much to measure.
        #[arg(long, value_enum, default_value = "quick")]
        profile: dwcp_bench::gate::Profile,
        /// Measure only some figures.
        #[arg(long, value_enum, default_value = "all")]
        only: dwcp_bench::gate::Only,
        /// Write the measured figures as a new baseline to this file instead
        /// of comparing.
        #[arg(long)]
        write_baseline: Option<std::path::PathBuf>,
        /// Also write the verdicts as JSON to this file.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// Runs one deterministic workload (what `gate` counts under valgrind).
    Workload {
        /// Workload name.
        name: String,
    },
    /// A QUIC handshake flood against a running daemon (loopback only):
    /// correctly encrypted Initials that never finish their handshake, with
    /// the target's RSS before, at peak and after.
    Flood {
        /// The daemon's QUIC address.
        #[arg(long)]
        target: std::net::SocketAddr,
        /// The server name to put in the ClientHello.
        #[arg(long, default_value = "node-b")]
        server_name: String,
        /// Initials to send.
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Source addresses (127.0.0.2 and up).
        #[arg(long, default_value_t = 1)]
        sources: usize,
        /// The daemon's process id, to read its VmRSS.
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds to keep sampling RSS after sending.
        #[arg(long, default_value_t = 15)]
        watch_secs: u64,
    },
    /// Randomised stream torture test on loopback, or for QUIC through an
    /// emulated WAN (`--mbit`, `--rtt-ms`, `--loss-pct`): streams from both
    /// sides, random write/read APIs and sizes, resets, drops, cancellation,
    /// every byte checked. Exits 1 on any truncation, corruption, false clean
    /// end, wrong reset code, hang (an operation pending at the deadline: on
    /// a slow link lower `--streams` and `--max-mib`), or memory above the
    /// bound.
    Torture {
        /// Transport(s) to torture.
        #[arg(long, value_enum, default_value = "both")]
        transport: TortureTransportArg,
        /// Seed of a run (repeatable).
        #[arg(long)]
        seed: Vec<u64>,
        /// Also run seeds 1..=N.
        #[arg(long)]
        seeds: Option<u64>,
        /// Streams opened by each side.
        #[arg(long, default_value_t = 2000)]
        streams: u32,
        /// Largest size of one direction of a stream, in MiB (log-uniform from 0).
        #[arg(long, default_value_t = 16)]
        max_mib: u64,
        /// Fraction of streams disrupted.
        #[arg(long, default_value_t = 0.25)]
        disrupt: f64,
        /// Every stream must end within this many seconds of the run's start.
        #[arg(long, default_value_t = 300)]
        deadline_secs: u64,
        /// Runs QUIC through an emulated WAN of this rate, in Mbit/s, each
        /// way (a UDP relay with a queue of one bandwidth-delay product, at
        /// least 64 KiB, seeded by the run's seed; 0: loopback, no relay).
        #[arg(long, default_value_t = 0)]
        mbit: u64,
        /// The emulated WAN's round-trip time, in ms (default 40; needs `--mbit`).
        #[arg(long)]
        rtt_ms: Option<u64>,
        /// The emulated WAN's random loss each way, in percent (default 0;
        /// needs `--mbit`).
        #[arg(long)]
        loss_pct: Option<f64>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Internal: run exactly one (transport, seed) in this process and
        /// print its report as JSON (what each child process does).
        #[arg(long, hide = true)]
        single: bool,
    },
    /// What a pair of `dwcp-daemon` processes adds to real TCP clients on
    /// loopback (QUIC and TCP lanes): request/response rate and latency and
    /// bulk rate, direct vs through the tunnels in the same run.
    Sidecar {
        /// The dwcp-daemon binary (default: beside this one).
        #[arg(long)]
        daemon: Option<std::path::PathBuf>,
        /// Seconds per request/response measurement.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// MiB sent by the bulk client.
        #[arg(long, default_value_t = 512)]
        bulk_mib: u64,
        /// Connections of the concurrent request/response client.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Adaptive vs fixed compression over emulated link rates.
    Compression {
        /// MiB of each corpus.
        #[arg(long, default_value_t = 32)]
        mib: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compression end to end: a corpus through a pair of `dwcp-daemon`
    /// processes once per policy (adaptive and each fixed one), against
    /// `zstd`/`lz4` piped over plain TCP, on loopback (`--mbit 0`) or on the
    /// TUN delay line between two namespaces (needs root).
    CompressionE2e {
        /// The dwcp-daemon binary (default: beside this one).
        #[arg(long)]
        daemon: Option<std::path::PathBuf>,
        /// Link rate in Mbit/s; 0 for loopback without a limit.
        #[arg(long, default_value_t = 100)]
        mbit: u64,
        /// Round-trip time of the emulated link (ms).
        #[arg(long, default_value_t = 20)]
        rtt_ms: u64,
        /// MiB of each corpus (default: about 6 s of the link's raw rate,
        /// 8 to 128).
        #[arg(long)]
        mib: Option<u64>,
        /// DWCP transport: quic or tcp.
        #[arg(long, default_value = "quic")]
        transport: String,
        /// Corpora, comma separated (default: all).
        #[arg(long, value_delimiter = ',')]
        corpora: Vec<String>,
        /// Only subjects whose name contains one of these (comma-separated,
        /// e.g. `dwcp`, `zstd -3` or `dwcp: adaptive,dwcp: off`).
        #[arg(long)]
        only: Option<String>,
        /// Where corpora are built and cached.
        #[arg(long, default_value = "/var/tmp/dwcp-corpora")]
        cache: std::path::PathBuf,
        /// Runs of each DWCP policy per corpus, taking turns; a cell is the
        /// median run (default: 3 on loopback, where one transfer takes a
        /// fraction of a second, else 1).
        #[arg(long)]
        runs: Option<usize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Transport choice of `dwcp-bench torture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TortureTransportArg {
    /// QUIC only.
    Quic,
    /// TCP lanes only.
    Tcp,
    /// QUIC, then TCP lanes.
    Both,
}

/// An emulated WAN for `torture` (its `--mbit`, `--rtt-ms`, `--loss-pct`).
#[derive(Debug, Clone, Copy)]
struct Wan {
    mbit: u64,
    rtt_ms: u64,
    loss_pct: f64,
}

impl Wan {
    /// The WAN the flags describe: none without `--mbit`, whose absence
    /// the other two flags may not hide.
    fn from_flags(
        mbit: u64,
        rtt_ms: Option<u64>,
        loss_pct: Option<f64>,
    ) -> Result<Option<Wan>, String> {
        if mbit == 0 {
            return match (rtt_ms, loss_pct) {
                (None, None) => Ok(None),
                _ => Err("--rtt-ms and --loss-pct describe the emulated WAN: give it a rate, --mbit above 0".into()),
            };
        }
        let loss_pct = loss_pct.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&loss_pct) {
            return Err("--loss-pct is a percentage, from 0 to 100".into());
        }
        Ok(Some(Wan {
            mbit,
            rtt_ms: rtt_ms.unwrap_or(40),
            loss_pct,
        }))
    }
}

/// Runs one torture configuration in a fresh child process (this binary with
/// `torture --single`), so that its VmHWM is that run's alone, and reads back
/// its JSON report.
fn torture_child(
    t: dwcp_bench::torture::TortureTransport,
    seed: u64,
    streams: u32,
    max_mib: u64,
    disrupt: f64,
    deadline_secs: u64,
    wan: Option<Wan>,
) -> dwcp_bench::torture::TortureReport {
    use dwcp_bench::torture::TortureReport;
    let failed = |why: String| TortureReport {
        transport: t.to_string(),
        seed,
        streams_per_side: streams,
        unexpected_errors: 1,
        examples: vec![why],
        ..TortureReport::default()
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed(format!("current_exe: {e}")),
    };
    let out = std::process::Command::new(exe)
        .args(["torture", "--single", "--transport", &t.to_string()])
        .args([
            "--seed",
            &seed.to_string(),
            "--streams",
            &streams.to_string(),
        ])
        .args([
            "--max-mib",
            &max_mib.to_string(),
            "--disrupt",
            &disrupt.to_string(),
        ])
        .args(["--deadline-secs", &deadline_secs.to_string()])
        .args(wan.map_or(Vec::new(), |w| {
            vec![
                "--mbit".to_string(),
                w.mbit.to_string(),
                "--rtt-ms".to_string(),
                w.rtt_ms.to_string(),
                "--loss-pct".to_string(),
                w.loss_pct.to_string(),
            ]
        }))
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Err(e) => failed(format!("child process: {e}")),
        Ok(o) => match serde_json::from_slice::<TortureReport>(&o.stdout) {
            Ok(r) => r,
            Err(e) => failed(format!(
                "child process ended {} without a report: {e}",
                o.status
            )),
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn torture(
    rt: &tokio::runtime::Runtime,
    transport: TortureTransportArg,
    mut seeds: Vec<u64>,
    more: Option<u64>,
    streams: u32,
    max_mib: u64,
    disrupt: f64,
    deadline_secs: u64,
    wan: Option<Wan>,
    json: bool,
    single: bool,
) -> i32 {
    use dwcp_bench::torture::{run, TortureConfig, TortureTransport};
    seeds.extend(1..=more.unwrap_or(0));
    if seeds.is_empty() {
        seeds.push(1);
    }
    let transports: &[TortureTransport] = match transport {
        TortureTransportArg::Quic => &[TortureTransport::Quic],
        TortureTransportArg::Tcp => &[TortureTransport::Tcp],
        TortureTransportArg::Both => &[TortureTransport::Quic, TortureTransport::Tcp],
    };
    if wan.is_some() && transports != [TortureTransport::Quic] {
        eprintln!("torture: an emulated WAN (--mbit) is QUIC only: add --transport quic");
        return 2;
    }
    let link = wan.map(|w| dwcp_wanem::LinkProfile::wan(w.mbit, w.rtt_ms, w.loss_pct));
    if let Some(Err(e)) = link.as_ref().map(|l| l.validate()) {
        eprintln!("torture: {e}");
        return 2;
    }
    if single {
        let (&[t], &[seed]) = (transports, &seeds[..]) else {
            eprintln!("torture --single: one transport and one seed");
            return 2;
        };
        let mut cfg = TortureConfig::new(t, seed, streams, max_mib << 20);
        cfg.disrupt = disrupt.clamp(0.0, 1.0);
        cfg.deadline = std::time::Duration::from_secs(deadline_secs);
        cfg.fresh_process = true;
        cfg.link = link.map(|l| dwcp_wanem::LinkProfile { seed, ..l });
        let r = rt.block_on(run(cfg));
        return match serde_json::to_string(&r) {
            Ok(s) => {
                println!("{s}");
                0
            }
            Err(e) => {
                eprintln!("json: {e}");
                2
            }
        };
    }
    let mut reports = Vec::new();
    for &t in transports {
        for &seed in &seeds {
            let r = torture_child(t, seed, streams, max_mib, disrupt, deadline_secs, wan);
            if !json {
                println!("{r}");
            }
            reports.push(r);
        }
    }
    if json {
        print_json(&reports);
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.failed())
        .map(|r| {
            format!(
                "{} seed {}: {}",
                r.transport,
                r.seed,
                r.failures().join(", ")
            )
        })
        .collect();
    if failed.is_empty() {
        eprintln!("torture: {} run(s) passed", reports.len());
        0
    } else {
        for f in &failed {
            eprintln!("torture: FAIL {f}");
        }
        1
    }
}

fn main() {
    let cli = Cli::parse();
    // `DWCP_BENCH_LOG=dwcp_core::net::congestion=trace` (a tracing filter)
    // prints what the library traces, to stderr; nothing without it.
    if let Ok(filter) = std::env::var("DWCP_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    if matches!(cli.command, Command::Torture { .. }) {
        // The allocator settings the daemon runs with (see dwcp_core::malloc),
        // before any thread starts; the other subcommands (the gate's
        // instruction counts among them) keep glibc's defaults.
        dwcp_core::malloc::configure();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("runtime: {e}");
            std::process::exit(1)
        });
    match cli.command {
        Command::Wan {
            mbit,
            rtt_ms,
            loss_pct,
            mib,
            json,
            tun,
            only,
            share,
            warm,
        } => {
            if share.is_some() && !tun {
                eprintln!("wan: --share needs --tun");
                std::process::exit(2);
            }
            if warm.is_some() && (!tun || share.is_some()) {
                eprintln!("wan: --warm needs --tun, and not --share");
                std::process::exit(2);
            }
            let warm = match warm {
                Some(s) if !(s.is_finite() && s >= 0.0) => {
                    eprintln!("wan: --warm takes seconds, at least 0");
                    std::process::exit(2);
                }
                w => w.map(std::time::Duration::from_secs_f64),
            };
            if let (true, Some(secs)) = (tun, share) {
                let secs = secs.max(dwcp_bench::wan_share::MIN_SECS);
                match dwcp_bench::wan_share::run(mbit, rtt_ms, loss_pct, secs, only.as_deref()) {
                    Ok(r) if r.is_empty() => {
                        eprintln!("wan --share: no pair of flows matches --only");
                        std::process::exit(2);
                    }
                    Ok(r) if json => print_json(&r),
                    Ok(r) => {
                        println!(
                            "{mbit} Mbit/s, {rtt_ms} ms RTT, {loss_pct}% loss each way (TUN delay line), two flows, {secs} s each pair"
                        );
                        for f in &r {
                            if let Some(e) = &f.error {
                                println!("  {:<18} + {:<18} FAILED: {e}", f.first, f.second);
                                continue;
                            }
                            println!(
                                "  {:<18} {:>6.1} Mbit/s  + {:<18} {:>6.1} Mbit/s (joined; share {:>4.1} %)  together {:>5.1} % of the link",
                                f.first,
                                f.first_mbit,
                                f.second,
                                f.second_mbit,
                                f.second_share * 100.0,
                                f.of_link * 100.0,
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("wan --tun --share: {e}");
                        std::process::exit(2);
                    }
                }
                return;
            }
            if tun {
                match dwcp_bench::wan_tun::run(mbit, rtt_ms, loss_pct, mib << 20, only, warm) {
                    Ok(r) if json => print_json(&r),
                    Ok(r) => {
                        let how = warm.map_or(String::new(), |w| {
                            format!(
                                ", the second transfer on a connection idle for {:.1} s after the first",
                                w.as_secs_f64()
                            )
                        });
                        println!(
                            "{mbit} Mbit/s, {rtt_ms} ms RTT, {loss_pct}% loss each way (TUN delay line), {mib} MiB each{how}"
                        );
                        for f in &r {
                            let opt = |v: Option<f64>, unit: &str| {
                                v.map_or("—".to_string(), |v| format!("{v:.2}{unit}"))
                            };
                            let share = |v: Option<f64>| {
                                v.map_or("—".to_string(), |v| format!("{:.0} %", v * 100.0))
                            };
                            println!(
                                "  {:<34} {:>8.1} Mbit/s  {:>5.1} % of the link ({:>5.1} % on the wire)  retrans {:>7}  queue p50 {:>9}  CPU: driver {:>4} process {} cores machine {:>4}{}",
                                f.subject,
                                f.mbit_per_s,
                                f.of_link * 100.0,
                                f.wire_of_link * 100.0,
                                opt(f.sampled.retrans_pct, " %"),
                                opt(f.sampled.queue_ms_p50, " ms"),
                                share(Some(f.cpu.driver_busy)),
                                opt(f.cpu.process_cores, ""),
                                share(f.cpu.machine_busy),
                                if f.cpu.cpu_bound { "  CPU-BOUND" } else { "" },
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("wan --tun: {e}");
                        std::process::exit(2);
                    }
                }
                return;
            }
            let r = rt.block_on(dwcp_bench::scenarios::wan(
                mbit,
                rtt_ms,
                loss_pct,
                mib << 20,
            ));
            if json {
                print_json(&r);
                return;
            }
            for c in &r {
                println!("{}", c.scenario);
                println!(
                    "  {:<40} {:>8.1} Mbit/s  ({:.0}% of the link)",
                    c.dwcp.subject,
                    c.dwcp.value,
                    c.dwcp.value / mbit as f64 * 100.0
                );
                println!(
                    "  {:<40} {:>8.1} Mbit/s  ({:.0}% of the link)",
                    c.baseline.subject,
                    c.baseline.value,
                    c.baseline.value / mbit as f64 * 100.0
                );
                println!("  ratio {:.2}", c.ratio);
            }
        }
        Command::Streams {
            counts,
            mib,
            rounds,
        } => {
            let rows = rt.block_on(dwcp_bench::scenarios::stream_sweep(
                &counts,
                mib << 20,
                rounds,
            ));
            print_json(&rows);
        }
        Command::Torture {
            transport,
            seed,
            seeds,
            streams,
            max_mib,
            disrupt,
            deadline_secs,
            mbit,
            rtt_ms,
            loss_pct,
            json,
            single,
        } => std::process::exit(torture(
            &rt,
            transport,
            seed,
            seeds,
            streams,
            max_mib,
            disrupt,
            deadline_secs,
            Wan::from_flags(mbit, rtt_ms, loss_pct).unwrap_or_else(|e| {
                eprintln!("torture: {e}");
                std::process::exit(2)
            }),
            json,
            single,
        )),
        Command::Flood {
            target,
            server_name,
            count,
            sources,
            pid,
            watch_secs,
        } => match dwcp_bench::flood::run(
            target,
            &server_name,
            count,
            sources,
            pid,
            std::time::Duration::from_secs(watch_secs),
        ) {
            Ok(r) => print_json(&r),
            Err(e) => {
                eprintln!("flood: {e}");
                std::process::exit(2);
            }
        },
        Command::Sidecar {
            daemon,
            secs,
            bulk_mib,
            connections,
            json,
        } => {
            let daemon = dwcp_bench::daemon::binary(daemon);
            let cfg = dwcp_bench::sidecar::SidecarConfig {
                daemon,
                secs,
                bulk_bytes: bulk_mib << 20,
                connections,
            };
            match rt.block_on(dwcp_bench::sidecar::run(&cfg)) {
                Ok(r) if json => print_json(&r),
                Ok(r) => print!("{}", r.table()),
                Err(e) => {
                    eprintln!("sidecar: {e}");
                    std::process::exit(2);
                }
            }
        }
        Command::CompressionE2e {
            daemon,
            mbit,
            rtt_ms,
            mib,
            transport,
            corpora,
            only,
            cache,
            runs,
            json,
        } => {
            let daemon = dwcp_bench::daemon::binary(daemon);
            let mib = mib.unwrap_or(match mbit {
                0 => 128,
                m => (m * 6 / 8).clamp(8, 128),
            });
            let corpora = if corpora.is_empty() {
                dwcp_bench::compression_e2e::corpora::NAMES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                corpora
            };
            let cfg = dwcp_bench::compression_e2e::E2eConfig {
                daemon,
                mbit: (mbit > 0).then_some(mbit),
                rtt_ms,
                bytes: mib << 20,
                transport,
                corpora,
                only,
                cache,
                runs: runs.unwrap_or(if mbit == 0 { 3 } else { 1 }),
            };
            match dwcp_bench::compression_e2e::run(&cfg) {
                Ok(r) if json => print_json(&r),
                Ok(r) => print!("{}", r.table()),
                Err(e) => {
                    eprintln!("compression-e2e: {e}");
                    std::process::exit(2);
                }
            }
        }
        Command::Workload { name } => match dwcp_bench::gate::run_workload(&name) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        Command::Gate {
            baseline,
            profile,
            only,
            write_baseline,
            report,
        } => std::process::exit(gate(&rt, &baseline, profile, only, write_baseline, report)),
        Command::Latency {
            messages,
            bulk_cap_mbps,
            json,
        } => {
            use dwcp_core::net::Transport;
            let d = rt.block_on(dwcp_bench::latency::dwcp(Transport::Tcp, messages, None));
            let q = rt.block_on(dwcp_bench::latency::dwcp(Transport::Quic, messages, None));
            let y = rt.block_on(dwcp_bench::baselines::yamux_latency(messages));
            let capped = bulk_cap_mbps.map(|c| {
                rt.block_on(dwcp_bench::latency::dwcp(
                    Transport::Tcp,
                    messages,
                    Some(c * 1_000_000),
                ))
            });
            // One TLS TCP connection alone, for the bulk rate's scale.
            let tls = rt.block_on(dwcp_bench::baselines::raw_tls_tcp_throughput(512 << 20));
            if json {
                print_json(&[Some(&d), Some(&q), Some(&y), capped.as_ref()]);
                return;
            }
            println!(
                "{:<50} {:>9} {:>9} {:>10}",
                "system", "p50 ms", "p99 ms", "bulk MB/s"
            );
            for l in [Some(&d), Some(&q), Some(&y), capped.as_ref()]
                .into_iter()
                .flatten()
            {
                println!(
                    "{:<50} {:>9.3} {:>9.3} {:>10.0}",
                    l.subject, l.p50_ms, l.p99_ms, l.bulk_mbps
                );
            }
            println!(
                "{:<50} {:>9} {:>9} {:>10.0}",
                "raw TLS TCP, one connection, no echo", "", "", tls
            );
            println!(
                "p99 ratio DWCP / yamux: TCP lanes {:.3}, QUIC {:.3}",
                d.p99_ms / y.p99_ms,
                q.p99_ms / y.p99_ms
            );
        }
        Command::Compression { mib, json } => {
            let cells = dwcp_bench::compression::table(mib);
            if json {
                print_json(&cells);
                return;
            }
            print!("{:<26} {:>11}", "corpus", "link");
            if let Some(c) = cells.first() {
                for (name, _) in &c.mbps {
                    print!(" {:>9}", name);
                }
            }
            println!(" {:>9}", "adapt/best");
            for c in &cells {
                print!("{:<26} {:>11}", c.corpus, c.rate);
                for (_, v) in &c.mbps {
                    print!(" {:>9.1}", v);
                }
                println!(" {:>9.2}", c.adaptive_vs_best);
            }
            println!("levels chosen by adaptive (chunks):");
            for c in &cells {
                println!("  {:<26} {:>11} {:?}", c.corpus, c.rate, c.adaptive_levels);
            }
            // Whole-table totals: the sum over cells of each policy's rate,
            // each cell normalised by its best policy.
            if let Some(first) = cells.first() {
                println!("normalised sum over all cells (each cell / its best):");
                for (i, (name, _)) in first.mbps.iter().enumerate() {
                    let s: f64 = cells
                        .iter()
                        .map(|c| {
                            let best = c.mbps.iter().map(|(_, v)| *v).fold(0.0, f64::max);
                            c.mbps[i].1 / best
                        })
                        .sum();
                    println!("  {name:>9}: {s:.2} of {}", cells.len());
                }
            }
        }
        Command::Bulk { mib, rounds, json } => {
            let res = rt.block_on(dwcp_bench::scenarios::bulk(mib << 20, rounds.max(1)));
            if json {
                print_json(&res);
            } else {
                println!(
                    "{:<34} {:>12} {:>12} {:>7}",
                    "scenario", "DWCP MB/s", "base MB/s", "ratio"
                );
                for c in &res {
                    println!(
                        "{:<34} {:>12.0} {:>12.0} {:>7.2}",
                        c.scenario, c.dwcp.value, c.baseline.value, c.ratio
                    );
                }
                for c in &res {
                    println!(
                        "  {}: {} vs {}",
                        c.scenario, c.dwcp.subject, c.baseline.subject
                    );
                }
            }
        }
    }
}

fn gate(
    rt: &tokio::runtime::Runtime,
    baseline: &std::path::Path,
    profile: dwcp_bench::gate::Profile,
    only: dwcp_bench::gate::Only,
    write_baseline: Option<std::path::PathBuf>,
    report: Option<std::path::PathBuf>,
) -> i32 {
    use dwcp_bench::gate;
    eprintln!("dwcp-bench gate: measuring ({profile:?} profile)");
    let mut measured = match rt.block_on(gate::measure(profile, only)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("gate: {e}");
            return 2;
        }
    };
    if let Some(out) = write_baseline {
        let b = gate::Baseline {
            machine: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| {
                    c.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|m| m.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into()),
            rustc: gate::rustc_version(),
            metrics: measured
                .figures
                .iter()
                .map(|(k, v)| (k.clone(), gate::default_expected(k, *v)))
                .collect(),
        };
        return match serde_json::to_string_pretty(&b)
            .map_err(|e| e.to_string())
            .and_then(|s| std::fs::write(&out, s + "\n").map_err(|e| e.to_string()))
        {
            Ok(()) => {
                eprintln!("wrote {}", out.display());
                0
            }
            Err(e) => {
                eprintln!("gate: {}: {e}", out.display());
                2
            }
        };
    }
    let base = match gate::load(baseline) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gate: {e}");
            return 2;
        }
    };
    let rustc = gate::rustc_version();
    if rustc != base.rustc {
        eprintln!(
            "gate: note: baseline measured with {}, this build uses {rustc}; instruction counts may shift",
            base.rustc
        );
    }
    let extra = rt.block_on(gate::confirm_ratios(&base, profile, &mut measured));
    if extra > 0 {
        eprintln!(
            "  ratios measured {} times; the median of every round is judged",
            extra + 1
        );
    }
    let verdicts = gate::compare(&base, &measured.figures);
    print!("{}", gate::report(&verdicts));
    if let Some(path) = report {
        if let Ok(s) = serde_json::to_string_pretty(&verdicts) {
            let _ = std::fs::write(path, s);
        }
    }
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.pass)
        .map(|v| v.name.as_str())
        .collect();
    if failed.is_empty() {
        println!("gate: {} figure(s) within tolerance", verdicts.len());
        0
    } else {
        println!("gate: REGRESSION in {}", failed.join(", "));
        1
    }
}

/// The one way results are printed as JSON: pretty, on stdout (an encoding
/// failure goes to stderr).
fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("json: {e}"),
    }
}
