//! `dwcp-daemon demo`: two daemons in one process, on loopback, with an
//! emulated WAN between them and traffic through real tunnels.
//!
//! ```text
//!  generators ──TCP──▶ daemon node-a ──QUIC──▶ [WAN emulator] ──▶ daemon node-b ──TCP──▶ sink / echo
//!                      admin 127.0.0.1:9090                        admin (ephemeral)
//! ```
//!
//! - two bulk connections of compressible data (VM-memory-like pages),
//! - two bulk connections of incompressible (random) data,
//! - one interactive connection: 1 KiB request/response every 100 ms.
//!
//! Every bulk connection is verified end to end: the sink answers with the
//! length and hash of what it received, which must match what was sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dwcp_core::tls::DevCa;
use dwcp_wanem::udp::Relay;
use dwcp_wanem::LinkProfile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{self, Config};
use crate::daemon::Daemon;

/// Options of `dwcp-daemon demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long traffic runs, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Emulated link rate in Mbit/s (each direction).
    #[arg(long, default_value_t = 100)]
    pub mbit: u64,
    /// Emulated round-trip time in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub rtt_ms: u64,
    /// Emulated packet loss in percent (each direction).
    #[arg(long, default_value_t = 0.5)]
    pub loss_pct: f64,
    /// Seed of the emulator's random decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Admin address of the sending daemon (an ephemeral port if taken).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: String,
    /// QUIC congestion control of both daemons (`link.congestion`; default:
    /// the configuration's default).
    #[arg(long, value_enum)]
    pub congestion: Option<config::CongestionName>,
}

/// FNV-1a, 64-bit: enough to check that bytes arrived intact and in order.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The sink service: reads to EOF, then answers `len` and `hash` (16 bytes).
/// `delivered` counts the bytes read, on every connection.
async fn sink(listener: TcpListener, delivered: Arc<AtomicU64>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let delivered = delivered.clone();
        tokio::spawn(async move {
            let mut h = Fnv::new();
            let mut n = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(k) => {
                        h.update(&buf[..k]);
                        n += k as u64;
                        delivered.fetch_add(k as u64, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
            let mut reply = [0u8; 16];
            reply[..8].copy_from_slice(&n.to_be_bytes());
            reply[8..].copy_from_slice(&h.0.to_be_bytes());
            let _ = s.write_all(&reply).await;
            let _ = s.shutdown().await;
        });
    }
}

/// The echo service.
async fn echo(listener: TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Result of one bulk connection.
#[derive(Debug)]
struct BulkResult {
    kind: &'static str,
    sent: u64,
    verified: Result<(), String>,
}

async fn bulk(
    addr: SocketAddr,
    kind: &'static str,
    data: Bytes,
    stop: Arc<AtomicBool>,
) -> BulkResult {
    let fail = |e: String| BulkResult {
        kind,
        sent: 0,
        verified: Err(e),
    };
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return fail(format!("connect: {e}")),
    };
    let mut h = Fnv::new();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // 256 KiB at a time from the corpus, so the hash stays cheap to update.
        let off = (sent as usize) % data.len();
        let end = (off + 256 * 1024).min(data.len());
        let chunk = &data[off..end];
        if let Err(e) = s.write_all(chunk).await {
            return fail(format!("write after {sent} bytes: {e}"));
        }
        h.update(chunk);
        sent += chunk.len() as u64;
    }
    if let Err(e) = s.shutdown().await {
        return fail(format!("shutdown: {e}"));
    }
    let mut reply = [0u8; 16];
    let verified =
        match tokio::time::timeout(Duration::from_secs(60), s.read_exact(&mut reply)).await {
            Err(_) => Err("no answer from the sink within 60 s".into()),
            Ok(Err(e)) => Err(format!("reading the sink's answer: {e}")),
            Ok(Ok(_)) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&reply[..8]);
                let mut hh = [0u8; 8];
                hh.copy_from_slice(&reply[8..]);
                let (n, hh) = (u64::from_be_bytes(n), u64::from_be_bytes(hh));
                if n == sent && hh == h.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "sink got {n} bytes (hash {hh:x}), sent {sent} (hash {:x})",
                        h.0
                    ))
                }
            }
        };
    BulkResult {
        kind,
        sent,
        verified,
    }
}

async fn interactive(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    rtts: Arc<Mutex<Vec<Duration>>>,
) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let msg = vec![0x5au8; 1024];
    let mut back = vec![0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        s.write_all(&msg).await.map_err(|e| format!("write: {e}"))?;
        s.read_exact(&mut back)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if back != msg {
            return Err("echo differs from the request".into());
        }
        rtts.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t.elapsed());
    }
    Ok(())
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn node_config(name: &str, admin: &str) -> Config {
    let mut c = Config::default();
    c.node.name = name.into();
    c.listen.quic = "127.0.0.1:0".into();
    c.admin.listen = admin.into();
    c.lifecycle.drain_grace_secs = 10;
    c.reconnect.initial_ms = 100;
    c.reconnect.max_ms = 2000;
    c.tls = config::Tls {
        cert: Some("dev".into()),
        key: Some("dev".into()),
        ca: Some("dev".into()),
        reload_secs: 0,
    };
    c
}

fn check(c: &Config) -> Result<(), String> {
    let issues = c.validate();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Runs the demo.
///
/// # Errors
/// A daemon cannot start, or traffic failed verification.
pub fn run(a: &DemoArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(a))
}

async fn run_async(a: &DemoArgs) -> Result<(), String> {
    let ca = DevCa::new().map_err(|e| e.to_string())?;
    let tls_a = ca.config_for("node-a").map_err(|e| e.to_string())?;
    let tls_b = ca.config_for("node-b").map_err(|e| e.to_string())?;

    // One sink per kind, so that what each kind delivered is counted where
    // it arrives, not where it was written.
    let pages_l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let random_l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let echo_l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let pages_sink = pages_l.local_addr().map_err(|e| e.to_string())?;
    let random_sink = random_l.local_addr().map_err(|e| e.to_string())?;
    let echo_addr = echo_l.local_addr().map_err(|e| e.to_string())?;
    let pages_delivered = Arc::new(AtomicU64::new(0));
    let random_delivered = Arc::new(AtomicU64::new(0));
    tokio::spawn(sink(pages_l, pages_delivered.clone()));
    tokio::spawn(sink(random_l, random_delivered.clone()));
    tokio::spawn(echo(echo_l));

    // node-b: declares the services, accepts node-a.
    let mut cb = node_config("node-b", "127.0.0.1:0");
    if let Some(cc) = a.congestion {
        cb.link.congestion = cc;
    }
    cb.peers.push(config::Peer {
        name: "node-a".into(),
        address: None,
        transport: config::PeerTransport::Quic,
    });
    for (name, target) in [
        ("pages-sink", pages_sink),
        ("random-sink", random_sink),
        ("echo", echo_addr),
    ] {
        cb.services.push(config::Service {
            name: name.into(),
            target: target.to_string(),
            allowed_peers: vec!["node-a".into()],
        });
    }
    check(&cb)?;
    let b = Daemon::start_with_tls(cb, tls_b)
        .await
        .map_err(|e| format!("node-b: {e}"))?;
    let b_quic = *b
        .state()
        .listeners
        .get("quic")
        .ok_or("node-b has no QUIC listener")?;

    // The WAN between them.
    let mut profile = LinkProfile::wan(a.mbit, a.rtt_ms, a.loss_pct);
    profile.jitter = Duration::from_millis(1);
    profile.seed = a.seed;
    let back = LinkProfile {
        seed: a.seed.wrapping_add(1),
        ..profile.clone()
    };
    let relay = Relay::start(([127, 0, 0, 1], 0).into(), b_quic, profile, back)
        .await
        .map_err(|e| format!("emulator: {e}"))?;

    // node-a: dials node-b through the emulator, offers three tunnels.
    let admin = match std::net::TcpListener::bind(&a.admin) {
        Ok(l) => {
            drop(l);
            a.admin.clone()
        }
        Err(_) => "127.0.0.1:0".to_string(),
    };
    let mut ca_cfg = node_config("node-a", &admin);
    ca_cfg.link.rate_mbps = Some(a.mbit as f64);
    if let Some(cc) = a.congestion {
        ca_cfg.link.congestion = cc;
    }
    ca_cfg.peers.push(config::Peer {
        name: "node-b".into(),
        address: Some(relay.local_addr().to_string()),
        transport: config::PeerTransport::Quic,
    });
    for (name, service, class) in [
        ("pages", "pages-sink", "bulk"),
        ("random", "random-sink", "bulk"),
        ("control", "echo", "interactive"),
    ] {
        ca_cfg.tunnels.push(config::Tunnel {
            name: name.into(),
            listen: "127.0.0.1:0".into(),
            peer: "node-b".into(),
            service: service.into(),
            class: Some(class.into()),
            compression: "adaptive".into(),
        });
    }
    check(&ca_cfg)?;
    let node_a = Daemon::start_with_tls(ca_cfg, tls_a)
        .await
        .map_err(|e| format!("node-a: {e}"))?;
    let tunnel = |n: &str| {
        node_a
            .state()
            .tunnels
            .iter()
            .find(|(t, _)| t.name == n)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("tunnel {n} missing"))
    };
    let (pages_at, random_at, control_at) =
        (tunnel("pages")?, tunnel("random")?, tunnel("control")?);

    println!("DWCP demo: two daemons on loopback, QUIC through an emulated WAN");
    println!(
        "  link: {} Mbit/s each way, {} ms RTT, {}% loss each way, 1 ms jitter, seed {}",
        a.mbit, a.rtt_ms, a.loss_pct, a.seed
    );
    println!(
        "  node-a admin: http://{}/metrics  (also /health, /ready, /api/v1/dwcp/status)",
        node_a.admin_addr()
    );
    println!(
        "  node-b admin: http://{} (both daemons run in this one process, so /metrics is the same on both: the process's metrics)",
        b.admin_addr()
    );
    println!(
        "  traffic for {} s: 2 x compressible pages, 2 x random bytes, 1 x interactive 1 KiB echo every 100 ms",
        a.duration
    );
    let peer = node_a.state().peer("node-b").ok_or("peer missing")?;
    if peer
        .wait_connection(Duration::from_secs(10))
        .await
        .is_none()
    {
        return Err(format!(
            "node-a could not connect to node-b: {:?}",
            peer.status().last_error
        ));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let pages = Bytes::from(dwcp_core::corpus::vm_memory(8 << 20, a.seed));
    let random = Bytes::from(dwcp_core::corpus::random(8 << 20, a.seed));
    let mut bulks = Vec::new();
    for _ in 0..2 {
        bulks.push(tokio::spawn(bulk(
            pages_at,
            "pages",
            pages.clone(),
            stop.clone(),
        )));
        bulks.push(tokio::spawn(bulk(
            random_at,
            "random",
            random.clone(),
            stop.clone(),
        )));
    }
    let rtts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let inter = tokio::spawn(interactive(control_at, stop.clone(), rtts.clone()));

    let start = Instant::now();
    let mut last = (0u64, 0u64, 0u64, start);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let delivered = || {
        (
            pages_delivered.load(Ordering::Relaxed),
            random_delivered.load(Ordering::Relaxed),
        )
    };
    let at_start = delivered();
    let wire_sent = || peer.connection().map_or(0, |c| c.stats().core.bytes_sent);
    let wire_at_start = wire_sent();
    // What the emulator's bottleneck took in forward (node-a to node-b), in
    // whole QUIC packets, counted on arrival (it sends them up to a queue
    // later). Its random loss falls after the bottleneck, so the packets
    // lost there count: they take their time on it.
    let line_sent = || {
        let (forward, _) = relay.stats();
        forward.bytes + forward.lost_bytes
    };
    let line_at_start = line_sent();
    println!(
        "  pages, random: application data delivered to the sinks; wire: what node-a sent, compressed"
    );
    println!(
        "{:>5}  {:>14}  {:>14}  {:>11}  {:>8}  {:>8}  {:>9}  {:>6}",
        "t", "pages Mbit/s", "random Mbit/s", "wire Mbit/s", "ratio", "RTT ms", "echo p50", "loss"
    );
    while start.elapsed() < Duration::from_secs(a.duration) {
        tick.tick().await;
        let Some(conn) = peer.connection() else {
            println!(
                "{:>4}s  peer not connected ({:?})",
                start.elapsed().as_secs(),
                peer.status().last_error
            );
            continue;
        };
        let s = conn.stats();
        let (p, r) = delivered();
        let w = s.core.bytes_sent;
        let dt = last.3.elapsed().as_secs_f64().max(1e-3);
        let mbit = |d: u64| d as f64 * 8.0 / dt / 1e6;
        let mut window: Vec<Duration> = rtts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .take(10)
            .copied()
            .collect();
        println!(
            "{:>4}s  {:>14.1}  {:>14.1}  {:>11.1}  {:>8.2}  {:>8.1}  {:>6.1} ms  {:>5.2}%",
            start.elapsed().as_secs(),
            mbit(p - last.0),
            mbit(r - last.1),
            mbit(w - last.2),
            s.compression_ratio(),
            s.transport.rtt.map_or(0.0, |r| r.as_secs_f64() * 1000.0),
            percentile(&mut window, 0.5).as_secs_f64() * 1000.0,
            s.transport.loss_rate * 100.0,
        );
        last = (p, r, w, Instant::now());
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    // Delivered while the traffic ran; what was still in buffers then is
    // delivered (and verified) during the drain, but not counted as rate.
    let at_stop = delivered();
    let wire_during = wire_sent().saturating_sub(wire_at_start);
    let line_during = line_sent().saturating_sub(line_at_start);
    let mut results = Vec::new();
    for b in bulks {
        results.push(b.await.map_err(|e| e.to_string())?);
    }
    let inter_result = inter.await.map_err(|e| e.to_string())?;
    let stats = peer.connection().map(|c| c.stats());

    println!();
    println!("Summary ({elapsed:.0} s of traffic):");
    let mut ok = true;
    for (kind, during) in [
        ("pages", at_stop.0 - at_start.0),
        ("random", at_stop.1 - at_start.1),
    ] {
        let rs: Vec<&BulkResult> = results.iter().filter(|r| r.kind == kind).collect();
        let bytes: u64 = rs.iter().map(|r| r.sent).sum();
        let verified = rs.iter().all(|r| r.verified.is_ok());
        ok &= verified;
        println!(
            "  {kind:<7} {} connections, {:.1} Mbit/s of application data delivered ({:.1} MiB while the traffic ran, {:.1} MiB written in all), verified by hash: {}",
            rs.len(),
            during as f64 * 8.0 / elapsed / 1e6,
            during as f64 / (1 << 20) as f64,
            bytes as f64 / (1 << 20) as f64,
            if verified { "yes" } else { "NO" }
        );
        for r in rs {
            if let Err(e) = &r.verified {
                println!("    error: {e}");
            }
        }
    }
    let mut all = rtts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let n = all.len();
    // One echo is due every 100 ms from the start (the first at once); one
    // that takes longer than the link RTT plus 25 ms waited behind
    // something. The goal is that 99 % do not.
    let due = (elapsed / 0.1).floor() as usize + 1;
    let late_after = Duration::from_millis(a.rtt_ms + 25);
    // The late ones with when they were due (one every 100 ms from the
    // start), in order: the bulk connections' startup, or all along.
    let late_ones: Vec<(usize, Duration)> = all
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, d)| *d > late_after)
        .collect();
    let late = late_ones.len();
    let missing = due.saturating_sub(n);
    let p99 = percentile(&mut all, 0.99);
    println!(
        "  echo    {n} round trips of 1 KiB ({due} due, {missing} missing, {late} late over {} ms): p50 {:.1} ms, p99 {:.1} ms (link RTT {} ms; goal p99 within {} ms: {}){}",
        late_after.as_millis(),
        percentile(&mut all, 0.5).as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        a.rtt_ms,
        late_after.as_millis(),
        if n > 0 && p99 <= late_after { "met" } else { "NOT met" },
        match &inter_result {
            Ok(()) => String::new(),
            Err(e) => format!(", error: {e}"),
        }
    );
    if missing > due / 20 {
        println!("    WARNING: {missing} of {due} echoes never completed: interactive traffic was starved");
    }
    if late > 0 {
        let shown: Vec<String> = late_ones
            .iter()
            .take(10)
            .map(|(i, d)| format!("{:.1} s ({:.0} ms)", *i as f64 * 0.1, d.as_secs_f64() * 1e3))
            .collect();
        println!(
            "          the late ones were due at {}{}",
            shown.join(", "),
            if late > shown.len() { ", ..." } else { "" }
        );
    }
    if p99 > late_after {
        println!(
            "    WARNING: {late} of {n} echoes took longer than {} ms, more than 1 %",
            late_after.as_millis()
        );
    }
    ok &= inter_result.is_ok();
    if let Some(s) = stats {
        let wire_mbit = wire_during as f64 * 8.0 / elapsed / 1e6;
        println!(
            "  wire    {wire_mbit:.1} Mbit/s from node-a over the whole run, its first seconds' ramp included: \
             {:.1} % of the link's {} Mbit/s, counted as DWCP's bytes handed to QUIC \
             (QUIC's headers, acknowledgements and retransmissions come on top: next line)",
            wire_mbit * 100.0 / a.mbit.max(1) as f64,
            a.mbit
        );
        let line_mbit = line_during as f64 * 8.0 / elapsed / 1e6;
        println!(
            "          the link's bottleneck took in {line_mbit:.1} Mbit/s forward in that time: {:.1} % of its rate, \
             counted in whole QUIC packets (headers, acknowledgements, retransmissions and the packets it lost at random)",
            line_mbit * 100.0 / a.mbit.max(1) as f64,
        );
        println!(
            "  link    {:.1} MiB on the wire in all, compression ratio {:.2}, RTT {:.1} ms, loss {:.2}% ({} of {} packets)",
            s.core.bytes_sent as f64 / (1 << 20) as f64,
            s.compression_ratio(),
            s.transport.rtt.map_or(0.0, |r| r.as_secs_f64() * 1000.0),
            s.transport.loss_rate * 100.0,
            s.transport.lost_packets,
            s.transport.sent_packets,
        );
        println!(
            "          interactive copies (QUIC datagrams): node-a sent {}; {} of node-b's arrived before their stream data",
            s.transport.copies_sent, s.transport.copies_used,
        );
        for (class, c) in &s.compression {
            println!(
                "          class {:<12} ratio {:.2} (raw {:.1} MiB → wire {:.1} MiB), codec now {}, CPU s by codec {}",
                node_a.state().class_name(*class),
                c.raw as f64 / c.wire.max(1) as f64,
                c.raw as f64 / (1 << 20) as f64,
                c.wire as f64 / (1 << 20) as f64,
                c.current,
                c.cpu_by_codec
                    .iter()
                    .map(|(k, d)| format!("{k} {:.2}", d.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let (fwd, _) = relay.stats();
    println!(
        "  emulator {} packets forward: {} lost at random, {} dropped by the full queue",
        fwd.packets, fwd.lost, fwd.queue_drops
    );
    let ra = node_a.drain(Duration::from_secs(5)).await;
    let rb = b.drain(Duration::from_secs(5)).await;
    node_a.shutdown().await;
    b.shutdown().await;
    println!(
        "  drained: node-a cut {} stream(s), node-b cut {}",
        ra.cut, rb.cut
    );
    if ok {
        Ok(())
    } else {
        Err("some traffic failed verification (see above)".into())
    }
}
