//! `dwcp-bench compression-e2e`: compression measured the way users meet it.
//!
//! Two `dwcp-daemon run` processes carry one corpus at a time from a client
//! through a tunnel to a sink service, once per compression policy
//! (adaptive and every fixed one, `off` included), and the same corpus goes
//! through the pipes an operator would build by hand (`zstd -3 -c FILE` over
//! a plain TCP connection into `zstd -d`), in the same run, on the same link:
//!
//! - `--mbit 0`: both daemons on loopback, no rate limit;
//! - `--mbit N`: two network namespaces joined by the `dwcp-wanem` TUN delay
//!   line at N Mbit/s and `--rtt-ms` (needs root).
//!
//! Every transfer is checked (length and CRC-32 at the sink). Before each
//! DWCP transfer a warm-up transfer (incompressible, 1/16 of the corpus)
//! goes through the `off` tunnel, so every policy starts on a connection
//! that has just carried data. Reported per
//! corpus and subject: seconds, MB/s of original data, ratio, and CPU seconds
//! of the sending and receiving side (the daemons' for DWCP, the
//! compressor's and decompressor's for the pipes). The summary applies the
//! rule of issue 15: adaptive ≥ 0.95 × the best fixed policy in every cell,
//! and faster than every fixed policy summed over the table.

pub mod corpora;
pub mod pipes;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use dwcp_wanem::tun::NetnsPair;
use dwcp_wanem::LinkProfile;
use serde::Serialize;

/// DWCP's compression policies compared (tunnel `compression` values).
pub const POLICIES: [&str; 6] = ["adaptive", "off", "lz4", "zstd:1", "zstd:3", "zstd:9"];

const A_ADMIN: u16 = 7301;
const B_ADMIN: u16 = 7302;
const B_PORT: u16 = 7303;
const SINK: u16 = 7305;
const PIPE: u16 = 7306;
const TUNNEL0: u16 = 7310;

/// Scenario settings.
#[derive(Debug, Clone)]
pub struct E2eConfig {
    /// The `dwcp-daemon` binary.
    pub daemon: PathBuf,
    /// Link rate in Mbit/s; `None` for loopback without a limit.
    pub mbit: Option<u64>,
    /// Round-trip time of the emulated link.
    pub rtt_ms: u64,
    /// Bytes of each corpus.
    pub bytes: u64,
    /// `quic` or `tcp`.
    pub transport: String,
    /// Corpora to move (names from [`corpora::NAMES`]).
    pub corpora: Vec<String>,
    /// Keep only subjects whose name contains one of these
    /// (comma-separated).
    pub only: Option<String>,
    /// Where corpora are cached.
    pub cache: PathBuf,
    /// Runs of each DWCP policy per corpus, taking turns (the median counts).
    pub runs: usize,
}

/// One transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Corpus name.
    pub corpus: String,
    /// `dwcp: <policy>` or `pipe: <tool>`.
    pub subject: String,
    /// Seconds from the client's first byte to the sink's last.
    pub secs: f64,
    /// MB/s (10^6 bytes) of original data.
    pub mb_per_s: f64,
    /// Original bytes over compressed bytes (DWCP: the sender's codec
    /// counters; pipes: the bytes on the connection).
    pub ratio: f64,
    /// CPU seconds on the sending side.
    pub cpu_send: f64,
    /// CPU seconds on the receiving side.
    pub cpu_recv: f64,
    /// IP bytes the emulated link carried forward (netns runs only), MB.
    pub line_mb: Option<f64>,
    /// For adaptive: share of original bytes by codec, e.g. `zstd-3 80%`.
    pub codecs: String,
    /// Seconds of every run of this cell, fastest first (the cell is the
    /// median run; one entry unless `--runs` asked for more).
    pub runs: Vec<f64>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// The link, in words.
    pub link: String,
    /// Bytes of each corpus.
    pub bytes: u64,
    /// Transfers.
    pub cells: Vec<Cell>,
    /// What was skipped and why.
    pub notes: Vec<String>,
}

/// Where things run: both sides on loopback, or two namespaces.
enum Net {
    Loopback,
    Ns(Arc<NetnsPair>),
}

impl Net {
    /// Runs `f` in side a (`in_b` false) or b and returns its result.
    fn run_in<T: Send + 'static>(
        &self,
        in_b: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        match self {
            Net::Loopback => Ok(f()),
            Net::Ns(ns) => ns
                .spawn_in(in_b, f)
                .map_err(|e| e.to_string())?
                .join()
                .map_err(|_| "a namespace thread panicked".to_string()),
        }
    }

    /// Spawns `f` on a thread in side a or b.
    fn spawn_in<T: Send + 'static>(
        &self,
        in_b: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>, String> {
        match self {
            Net::Loopback => Ok(std::thread::spawn(f)),
            Net::Ns(ns) => ns.spawn_in(in_b, f).map_err(|e| e.to_string()),
        }
    }

    /// Node-b's address as node-a sees it.
    fn b_addr(&self) -> Ipv4Addr {
        match self {
            Net::Loopback => Ipv4Addr::LOCALHOST,
            Net::Ns(_) => NetnsPair::B_ADDR,
        }
    }

    /// IP bytes carried a → b so far.
    fn line_bytes(&self) -> Option<u64> {
        match self {
            Net::Loopback => None,
            Net::Ns(ns) => Some(ns.stats().0.bytes),
        }
    }

    /// Starts the daemon with `config` on side a or b.
    fn daemon(&self, bin: &Path, config: &Path, in_b: bool) -> Result<Daemon, String> {
        let cmd = match self {
            Net::Loopback => Command::new(bin),
            Net::Ns(ns) => {
                let name = if in_b { ns.names().1 } else { ns.names().0 };
                let mut c = Command::new("ip");
                c.args(["netns", "exec", name]).arg(bin);
                c
            }
        };
        let admin = if in_b { B_ADMIN } else { A_ADMIN };
        Daemon::start(cmd, config, &log_level(), || {
            self.run_in(in_b, move || {
                http_get(admin, "/ready").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            })
        })
    }
}

/// The daemons' log filter: `DWCP_E2E_LOG` (for instance
/// `warn,dwcp_core::net::stream=trace` to see every chunk's codec and what
/// the sender waited on), else `warn`. Logs go to `node-{a,b}.log` in the
/// run's directory.
fn log_level() -> String {
    std::env::var("DWCP_E2E_LOG").unwrap_or_else(|_| "warn".into())
}

/// CPU seconds (user + system) daemon `d` has used.
fn cpu(d: &Daemon) -> f64 {
    d.cpu_seconds().unwrap_or(0.0)
}

/// `GET path` on the local admin port; the whole answer.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Sums of `dwcp_compression_{raw,wire}_bytes_total` by codec.
fn codec_counters(metrics: &str) -> Vec<(String, f64, f64)> {
    let mut by: Vec<(String, f64, f64)> = Vec::new();
    for l in metrics.lines() {
        let raw = l.starts_with("dwcp_compression_raw_bytes_total{");
        let wire = l.starts_with("dwcp_compression_wire_bytes_total{");
        if !raw && !wire {
            continue;
        }
        let codec = l
            .split("codec=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?")
            .to_string();
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let i = match by.iter().position(|(c, _, _)| *c == codec) {
            Some(i) => i,
            None => {
                by.push((codec, 0.0, 0.0));
                by.len() - 1
            }
        };
        if raw {
            by[i].1 += v;
        } else {
            by[i].2 += v;
        }
    }
    by
}

/// What the sink saw of one connection.
struct Sunk {
    bytes: u64,
    crc: u32,
    done: Instant,
}

/// The service behind the tunnels: reads each connection to its end,
/// checks it, reports it, closes.
fn sink(listener: TcpListener, tx: mpsc::Sender<Sunk>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
        }
        let sunk = Sunk {
            bytes,
            crc: h.finalize(),
            done: Instant::now(),
        };
        let _ = s.shutdown(Shutdown::Both);
        if tx.send(sunk).is_err() {
            return;
        }
    }
}

fn tls(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!("[tls]\ncert = \"{d}/{name}.pem\"\nkey = \"{d}/{name}.key\"\nca = \"{d}/ca.pem\"\n")
}

fn tunnel_name(policy: &str) -> String {
    format!("t-{}", policy.replace(':', ""))
}

/// Writes both daemons' configurations.
fn configs(dir: &Path, net: &Net, transport: &str) -> Result<(PathBuf, PathBuf), String> {
    let b_addr = net.b_addr();
    let b = format!(
        "[node]\nname = \"node-b\"\n\n{tls}\n[listen]\n{transport} = \"{b_addr}:{B_PORT}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{B_ADMIN}\"\n\n[[peers]]\nname = \"node-a\"\n\n\
         [[services]]\nname = \"sink\"\ntarget = \"127.0.0.1:{SINK}\"\nallowed_peers = [\"node-a\"]\n",
        tls = tls(dir, "node-b"),
    );
    let mut a = format!(
        "[node]\nname = \"node-a\"\n\n{tls}\n[listen]\nquic = \"\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{A_ADMIN}\"\n\n\
         [[peers]]\nname = \"node-b\"\naddress = \"{b_addr}:{B_PORT}\"\ntransport = \"{transport}\"\n",
        tls = tls(dir, "node-a"),
    );
    for (i, p) in POLICIES.iter().enumerate() {
        a.push_str(&format!(
            "\n[[tunnels]]\nname = \"{}\"\nlisten = \"127.0.0.1:{}\"\npeer = \"node-b\"\nservice = \"sink\"\nclass = \"bulk\"\ncompression = \"{p}\"\n",
            tunnel_name(p),
            TUNNEL0 + i as u16,
        ));
    }
    let (bp, ap) = (dir.join("node-b.toml"), dir.join("node-a.toml"));
    std::fs::write(&bp, b).map_err(|e| e.to_string())?;
    std::fs::write(&ap, a).map_err(|e| e.to_string())?;
    Ok((ap, bp))
}

/// Sends `data` into the tunnel at `port` and waits for the sink's report.
fn dwcp_transfer(
    net: &Net,
    port: u16,
    data: Arc<Vec<u8>>,
    sunk: &mpsc::Receiver<Sunk>,
) -> Result<(Instant, Sunk), String> {
    let start = Instant::now();
    let client = net.spawn_in(false, move || -> Result<(), String> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
        for chunk in data.chunks(1 << 20) {
            s.write_all(chunk)
                .map_err(|e| format!("tunnel write: {e}"))?;
        }
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        // The sink closes once it has everything.
        let mut b = [0u8; 64];
        let _ = s.set_read_timeout(Some(Duration::from_secs(900)));
        let _ = s.read(&mut b);
        Ok(())
    })?;
    let got = sunk
        .recv_timeout(Duration::from_secs(900))
        .map_err(|_| "the sink saw no connection end within 900 s".to_string())?;
    client
        .join()
        .map_err(|_| "client thread panicked".to_string())??;
    Ok((start, got))
}

/// Runs every corpus through every subject.
///
/// # Errors
/// Set-up fails (namespaces, daemons, corpora) or a transfer is wrong.
pub fn run(cfg: &E2eConfig) -> Result<E2eReport, String> {
    let wanted = |name: &str| crate::only_matches(cfg.only.as_deref(), name);
    let mut notes = Vec::new();
    let net = match cfg.mbit {
        None => Net::Loopback,
        Some(mbit) => {
            let profile = LinkProfile::wan(mbit, cfg.rtt_ms, 0.0);
            let back = LinkProfile {
                seed: profile.seed.wrapping_add(1),
                ..profile.clone()
            };
            Net::Ns(Arc::new(
                NetnsPair::new("dwce", profile, back).map_err(|e| e.to_string())?,
            ))
        }
    };
    let link = match cfg.mbit {
        None => "loopback, no rate limit".to_string(),
        Some(m) => format!(
            "TUN delay line between namespaces, {m} Mbit/s, {} ms RTT, no loss",
            cfg.rtt_ms
        ),
    };
    let dir = std::env::temp_dir().join(format!("dwcp-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    dwcp_core::tls::DevCa::new()
        .and_then(|ca| ca.write_pem_files(&dir, &["node-a", "node-b"]))
        .map_err(|e| format!("certificates: {e}"))?;
    let (ap, bp) = configs(&dir, &net, &cfg.transport)?;
    let (tx, sunk) = mpsc::channel();
    net.spawn_in(true, move || {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, SINK)) {
            Ok(l) => sink(l, tx),
            Err(e) => eprintln!("sink: {e}"),
        };
    })?;
    let node_b = net.daemon(&cfg.daemon, &bp, true)?;
    let node_a = net.daemon(&cfg.daemon, &ap, false)?;
    let pipes_ok = match pipes::unavailable() {
        Some(why) => {
            notes.push(why);
            false
        }
        None => true,
    };
    // Each DWCP cell starts on a warm connection: a long idle period (the
    // pipes run in between) lets the congestion window fall back to slow
    // start, which would cost whichever policy runs first.
    let warm = Arc::new(dwcp_core::corpus::random(
        (cfg.bytes / 16).clamp(256 << 10, 8 << 20) as usize,
        99,
    ));
    let off_port = TUNNEL0
        + POLICIES
            .iter()
            .position(|p| *p == "off")
            .map_or(0, |i| i as u16);
    let ctx = Transfer {
        net: &net,
        node_a: &node_a,
        node_b: &node_b,
        sunk: &sunk,
        warm: &warm,
        off_port,
    };
    let mut cells = Vec::new();
    for corpus in &cfg.corpora {
        let path = corpora::get(&cfg.cache, corpus, cfg.bytes)?;
        let data = Arc::new(std::fs::read(&path).map_err(|e| e.to_string())?);
        let crc = crc32fast::hash(&data);
        // Each policy runs `runs` times, the policies taking turns, and
        // the cell keeps the median run: on a shared two-core machine one
        // loopback transfer of the same policy varied by 10 %.
        let mut runs: Vec<Vec<Cell>> = vec![Vec::new(); POLICIES.len()];
        for _ in 0..cfg.runs.max(1) {
            for (i, policy) in POLICIES.iter().enumerate() {
                if wanted(&format!("dwcp: {policy}")) {
                    runs[i].push(dwcp_cell(&ctx, corpus, i, &data, crc)?);
                }
            }
        }
        cells.extend(runs.into_iter().filter_map(median_run));
        if !pipes_ok {
            continue;
        }
        for pipe in pipes::PIPES {
            if !wanted(pipe.name) {
                continue;
            }
            let b_addr = net.b_addr();
            let (ready_tx, ready) = mpsc::channel();
            let receiver = net.spawn_in(true, move || -> Result<pipes::Received, String> {
                let l = TcpListener::bind((b_addr, PIPE)).map_err(|e| e.to_string())?;
                let _ = ready_tx.send(());
                let (s, _) = l.accept().map_err(|e| e.to_string())?;
                pipes::receive(&pipe, s)
            })?;
            ready
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| "the pipe receiver did not start".to_string())?;
            let line = net.line_bytes();
            let start = Instant::now();
            let file = path.clone();
            let sender = net.spawn_in(false, move || -> Result<(u64, f64), String> {
                let s = TcpStream::connect(SocketAddr::from((b_addr, PIPE)))
                    .map_err(|e| e.to_string())?;
                pipes::send(&pipe, &file, s)
            })?;
            let (wire, cpu_send) = sender
                .join()
                .map_err(|_| "pipe sender panicked".to_string())??;
            let got = receiver
                .join()
                .map_err(|_| "pipe receiver panicked".to_string())??;
            if got.bytes != data.len() as u64 || got.crc != crc {
                return Err(format!(
                    "{corpus} via {}: {} bytes came out (crc {:08x}), {} sent",
                    pipe.name,
                    got.bytes,
                    got.crc,
                    data.len()
                ));
            }
            let secs = got.done.duration_since(start).as_secs_f64();
            cells.push(Cell {
                corpus: corpus.clone(),
                subject: pipe.name.to_string(),
                secs,
                mb_per_s: data.len() as f64 / secs / 1e6,
                ratio: data.len() as f64 / wire.max(1) as f64,
                cpu_send,
                cpu_recv: got.cpu,
                line_mb: net
                    .line_bytes()
                    .zip(line)
                    .map(|(n, b)| (n - b) as f64 / 1e6),
                codecs: String::new(),
                runs: vec![secs],
            });
        }
    }
    drop(node_a);
    drop(node_b);
    if std::env::var_os("DWCP_E2E_LOG").is_some() {
        notes.push(format!("daemon logs kept in {}", dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(E2eReport {
        link,
        bytes: cfg.bytes,
        cells,
        notes,
    })
}

/// What one DWCP transfer needs of the run.
struct Transfer<'a> {
    net: &'a Net,
    node_a: &'a Daemon,
    node_b: &'a Daemon,
    sunk: &'a mpsc::Receiver<Sunk>,
    warm: &'a Arc<Vec<u8>>,
    off_port: u16,
}

/// One transfer of `data` through the tunnel of policy `POLICIES[i]`,
/// after a warm-up through the `off` tunnel, checked at the sink.
fn dwcp_cell(
    ctx: &Transfer<'_>,
    corpus: &str,
    i: usize,
    data: &Arc<Vec<u8>>,
    crc: u32,
) -> Result<Cell, String> {
    let policy = POLICIES[i];
    let subject = format!("dwcp: {policy}");
    let metrics =
        |net: &Net| net.run_in(false, || http_get(A_ADMIN, "/metrics").unwrap_or_default());
    let (_, w) = dwcp_transfer(ctx.net, ctx.off_port, ctx.warm.clone(), ctx.sunk)?;
    if w.bytes != ctx.warm.len() as u64 {
        return Err(format!(
            "warm-up: the sink got {} of {} bytes",
            w.bytes,
            ctx.warm.len()
        ));
    }
    let before = codec_counters(&metrics(ctx.net)?);
    let (ca, cb, line) = (cpu(ctx.node_a), cpu(ctx.node_b), ctx.net.line_bytes());
    let (start, got) = dwcp_transfer(ctx.net, TUNNEL0 + i as u16, data.clone(), ctx.sunk)?;
    let (cpu_send, cpu_recv) = (cpu(ctx.node_a) - ca, cpu(ctx.node_b) - cb);
    let line_mb = ctx
        .net
        .line_bytes()
        .zip(line)
        .map(|(n, b)| (n - b) as f64 / 1e6);
    if got.bytes != data.len() as u64 || got.crc != crc {
        return Err(format!(
            "{corpus} via {subject}: the sink got {} bytes (crc {:08x}), {} sent (crc {crc:08x})",
            got.bytes,
            got.crc,
            data.len()
        ));
    }
    let after = codec_counters(&metrics(ctx.net)?);
    let delta: Vec<(String, f64, f64)> = after
        .iter()
        .map(|(c, r, w)| {
            let (r0, w0) = before
                .iter()
                .find(|(b, _, _)| b == c)
                .map_or((0.0, 0.0), |(_, r, w)| (*r, *w));
            (c.clone(), r - r0, w - w0)
        })
        .filter(|(_, r, _)| *r > 0.0)
        .collect();
    let (raw, wire) = delta
        .iter()
        .fold((0.0, 0.0), |(r, w), (_, dr, dw)| (r + dr, w + dw));
    let ratio = if raw > 0.0 && wire > 0.0 {
        // Bytes sent through the codec path plus any sent as-is.
        data.len() as f64 / (wire + (data.len() as f64 - raw).max(0.0))
    } else {
        1.0
    };
    let codecs = if policy == "adaptive" {
        delta
            .iter()
            .map(|(c, r, _)| format!("{c} {:.0}%", 100.0 * r / raw.max(1.0)))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let secs = got.done.duration_since(start).as_secs_f64();
    Ok(Cell {
        corpus: corpus.to_string(),
        subject,
        secs,
        mb_per_s: data.len() as f64 / secs / 1e6,
        ratio,
        cpu_send,
        cpu_recv,
        line_mb,
        codecs,
        runs: vec![secs],
    })
}

/// The median of one policy's runs (by time; of an even number, the
/// faster of the two middle ones), with every run's time.
fn median_run(mut runs: Vec<Cell>) -> Option<Cell> {
    runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let times: Vec<f64> = runs.iter().map(|c| c.secs).collect();
    let mut cell = runs.get(runs.len().checked_sub(1)? / 2)?.clone();
    cell.runs = times;
    Some(cell)
}

impl E2eReport {
    /// The table printed by `dwcp-bench compression-e2e`, with the rule's
    /// verdict per corpus and over the table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}; {} MiB per corpus; times from the client's first byte to the sink's last\n",
            self.link,
            self.bytes >> 20
        );
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        let mut corpora: Vec<&str> = Vec::new();
        for c in &self.cells {
            if !corpora.contains(&c.corpus.as_str()) {
                corpora.push(&c.corpus);
            }
        }
        for corpus in &corpora {
            out.push_str(&format!(
                "\n{corpus} ({})\n{:<20} {:>8} {:>9} {:>7} {:>9} {:>9} {:>8}  codecs\n",
                corpora::describe(corpus),
                "subject",
                "secs",
                "MB/s",
                "ratio",
                "cpu send",
                "cpu recv",
                "line MB"
            ));
            for c in self.cells.iter().filter(|c| c.corpus == *corpus) {
                out.push_str(&format!(
                    "{:<20} {:>8.2} {:>9.1} {:>7.2} {:>9.2} {:>9.2} {:>8}  {}\n",
                    c.subject,
                    c.secs,
                    c.mb_per_s,
                    c.ratio,
                    c.cpu_send,
                    c.cpu_recv,
                    c.line_mb.map_or("-".into(), |m| format!("{m:.1}")),
                    c.codecs
                ));
                if c.runs.len() > 1 {
                    let all: Vec<String> = c.runs.iter().map(|t| format!("{t:.2}")).collect();
                    out.push_str(&format!("{:<20} runs: {}\n", "", all.join(" ")));
                }
            }
            out.push_str(&self.verdict(corpus));
        }
        out.push_str(&self.totals());
        out
    }

    fn secs(&self, corpus: &str, subject: &str) -> Option<f64> {
        self.cells
            .iter()
            .find(|c| c.corpus == corpus && c.subject == subject)
            .map(|c| c.secs)
    }

    /// Adaptive against the best fixed policy and the best pipe, one corpus.
    fn verdict(&self, corpus: &str) -> String {
        let Some(adaptive) = self.secs(corpus, "dwcp: adaptive") else {
            return String::new();
        };
        let best = |prefix: &str, skip: &str| {
            self.cells
                .iter()
                .filter(|c| {
                    c.corpus == corpus && c.subject.starts_with(prefix) && c.subject != skip
                })
                .min_by(|a, b| a.secs.total_cmp(&b.secs))
        };
        let mut out = String::new();
        if let Some(b) = best("dwcp:", "dwcp: adaptive") {
            let r = b.secs / adaptive;
            out.push_str(&format!(
                "  adaptive vs best fixed ({}): {r:.2}× its speed — {}\n",
                b.subject,
                if r >= 0.95 {
                    "rule met"
                } else {
                    "RULE MISSED (< 0.95)"
                }
            ));
        }
        if let Some(p) = best("pipe:", "") {
            let r = p.secs / adaptive;
            let a_cpu = self
                .cells
                .iter()
                .find(|c| c.corpus == corpus && c.subject == "dwcp: adaptive")
                .map_or(0.0, |c| c.cpu_send);
            out.push_str(&format!(
                "  adaptive vs best pipe ({}): {r:.2}× its speed, sender CPU {a_cpu:.2} s vs {:.2} s — {}\n",
                p.subject,
                p.cpu_send,
                if r >= 1.0 { "as fast or faster" } else { "SLOWER" }
            ));
        }
        out
    }

    /// Seconds summed over the corpora, per DWCP subject.
    fn totals(&self) -> String {
        let mut out = String::from("\nsummed over the corpora (seconds)\n");
        let mut sums: Vec<(String, f64, usize)> = Vec::new();
        for c in &self.cells {
            match sums.iter_mut().find(|(s, _, _)| *s == c.subject) {
                Some(e) => {
                    e.1 += c.secs;
                    e.2 += 1;
                }
                None => sums.push((c.subject.clone(), c.secs, 1)),
            }
        }
        let adaptive = sums
            .iter()
            .find(|(s, _, _)| s == "dwcp: adaptive")
            .map(|e| e.1);
        for (s, t, n) in &sums {
            out.push_str(&format!(
                "  {s:<20} {t:>8.2}  ({n} corpora){}\n",
                match adaptive {
                    Some(a) if s != "dwcp: adaptive" =>
                        format!("  adaptive is {:.2}× as fast", t / a),
                    _ => String::new(),
                }
            ));
        }
        out
    }
}
