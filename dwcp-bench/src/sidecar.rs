//! `dwcp-bench sidecar`: what a pair of sidecars adds to real TCP clients.
//!
//! Two `dwcp-daemon run` processes on loopback (node-a with tunnels, node-b
//! with services), once over QUIC and once over TCP lanes. The same clients
//! run against the services directly and through the tunnels in the same
//! run: request/response over one connection and over 50 concurrent
//! connections (1 KiB and 16 KiB requests, echoed whole), and one bulk
//! connection into a sink. Reported: requests/s, p50/p99 latency, the added
//! latency and the rate ratio against direct, bulk MB/s against direct and
//! against one raw TLS TCP connection, and where the CPU went: this
//! process's (clients and services) and the two daemons', per request and
//! per GB, from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::{proc_cpu_of, Daemon};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Scenario settings.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The `dwcp-daemon` binary.
    pub daemon: PathBuf,
    /// Seconds each request/response measurement runs.
    pub secs: f64,
    /// Bytes sent by the bulk client.
    pub bulk_bytes: u64,
    /// Concurrent connections of the parallel request/response client.
    pub connections: usize,
}

/// One request/response measurement.
#[derive(Debug, Clone, Serialize)]
pub struct RrResult {
    /// `direct`, `quic` or `tcp`.
    pub path: String,
    /// Request size in bytes (the answer has the same size).
    pub size: usize,
    /// Concurrent connections.
    pub connections: usize,
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// CPU microseconds per request of this process (clients and services).
    pub bench_cpu_us: f64,
    /// CPU microseconds per request of both daemons together (none direct).
    pub daemons_cpu_us: Option<f64>,
}

/// One bulk measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BulkResult {
    /// `direct`, `quic` or `tcp`.
    pub path: String,
    /// MB/s (10^6 bytes) of application data the sink counted.
    pub mb_per_s: f64,
    /// CPU seconds per GB (10^9 bytes) of both daemons together (none
    /// for the paths without daemons).
    pub daemons_cpu_s_per_gb: Option<f64>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SidecarReport {
    /// Request/response results.
    pub rr: Vec<RrResult>,
    /// Bulk results.
    pub bulk: Vec<BulkResult>,
}

impl SidecarReport {
    /// The table printed by `dwcp-bench sidecar`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("request/response (answer = request size; CPU µs per request)\n");
        out.push_str(&format!(
            "{:<7} {:>6} {:>5} {:>10} {:>9} {:>9} {:>10} {:>10} {:>7} {:>8} {:>8}\n",
            "path",
            "size",
            "conns",
            "req/s",
            "p50 µs",
            "p99 µs",
            "+p50 µs",
            "+p99 µs",
            "rate",
            "bench",
            "daemons"
        ));
        for r in &self.rr {
            let direct = self
                .rr
                .iter()
                .find(|d| d.path == "direct" && d.size == r.size && d.connections == r.connections);
            let (dp50, dp99, ratio) = direct.map_or((f64::NAN, f64::NAN, f64::NAN), |d| {
                (r.p50_us - d.p50_us, r.p99_us - d.p99_us, r.rps / d.rps)
            });
            out.push_str(&format!(
                "{:<7} {:>6} {:>5} {:>10.0} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {:>6.2}x {:>8.1} {:>8}\n",
                r.path,
                r.size,
                r.connections,
                r.rps,
                r.p50_us,
                r.p99_us,
                dp50,
                dp99,
                ratio,
                r.bench_cpu_us,
                r.daemons_cpu_us.map_or("-".to_string(), |c| format!("{c:.1}")),
            ));
        }
        out.push_str("bulk (one connection into a sink; daemons' CPU s per GB)\n");
        let rate = |path: &str| {
            self.bulk
                .iter()
                .find(|b| b.path == path)
                .map_or(f64::NAN, |b| b.mb_per_s)
        };
        let (direct, tls) = (rate("direct"), rate("raw-tls"));
        for b in &self.bulk {
            out.push_str(&format!(
                "{:<7} {:>9.1} MB/s {:>6.2}x direct {:>6.2}x raw TLS {:>8}\n",
                b.path,
                b.mb_per_s,
                b.mb_per_s / direct,
                b.mb_per_s / tls,
                b.daemons_cpu_s_per_gb
                    .map_or("-".to_string(), |c| format!("{c:.2}")),
            ));
        }
        out
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn free_udp_port() -> Result<u16, String> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.port())
}

fn start_daemon(bin: &Path, config: &Path, admin: u16) -> Result<Daemon, String> {
    let admin = format!("127.0.0.1:{admin}");
    Daemon::start(Command::new(bin), config, "warn", || Ok(ready(&admin)))
}

/// `GET /ready` answers 200.
fn ready(admin: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// A service that echoes what it reads.
async fn echo_service() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

/// A service that counts what it reads and answers with the count (8 bytes).
async fn sink_service() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(k) => n += k as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// Requests of `size` bytes on `connections` connections to `addr` for
/// `secs`, each answered whole before the next.
async fn request_response(
    addr: SocketAddr,
    size: usize,
    connections: usize,
    secs: f64,
) -> Result<(f64, Vec<Duration>), String> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let req: Arc<Vec<u8>> = Arc::new((0..size).map(|i| i as u8).collect());
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for _ in 0..connections {
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut back = vec![0u8; req.len()];
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                s.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
                s.read_exact(&mut back)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                lat.push(t.elapsed());
                if back != *req {
                    return Err("answer differs from the request".to_string());
                }
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    Ok((all.len() as f64 / elapsed, all))
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// CPU seconds used so far by this process and by `daemons` together.
fn cpu_now(daemons: &[&Daemon]) -> (f64, f64) {
    let bench = proc_cpu_of(None).unwrap_or(f64::NAN);
    let d = daemons
        .iter()
        .map(|d| d.cpu_seconds().unwrap_or(f64::NAN))
        .sum();
    (bench, d)
}

/// [`request_response`] summarised as a result row for `path`, with the
/// CPU this process and `daemons` spent per request.
async fn measure_rr(
    path: &str,
    addr: SocketAddr,
    shape: (usize, usize),
    secs: f64,
    daemons: &[&Daemon],
) -> Result<RrResult, String> {
    let (size, connections) = shape;
    let (b0, d0) = cpu_now(daemons);
    let (rps, mut lat) = request_response(addr, size, connections, secs).await?;
    let (b1, d1) = cpu_now(daemons);
    let per_req = 1e6 / (lat.len().max(1) as f64);
    lat.sort();
    Ok(RrResult {
        path: path.into(),
        size,
        connections,
        rps,
        p50_us: percentile_us(&lat, 0.5),
        p99_us: percentile_us(&lat, 0.99),
        bench_cpu_us: (b1 - b0) * per_req,
        daemons_cpu_us: (!daemons.is_empty()).then_some((d1 - d0) * per_req),
    })
}

/// [`bulk`] as a result row for `path`, with the daemons' CPU per GB.
async fn measure_bulk(
    path: &str,
    addr: SocketAddr,
    bytes: u64,
    daemons: &[&Daemon],
) -> Result<BulkResult, String> {
    let (_, d0) = cpu_now(daemons);
    let mb_per_s = bulk(addr, bytes).await?;
    let (_, d1) = cpu_now(daemons);
    Ok(BulkResult {
        path: path.into(),
        mb_per_s,
        daemons_cpu_s_per_gb: (!daemons.is_empty()).then_some((d1 - d0) / (bytes as f64 / 1e9)),
    })
}

/// One connection sending `bytes` into the sink; MB/s the sink counted.
async fn bulk(addr: SocketAddr, bytes: u64) -> Result<f64, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let chunk: Vec<u8> = {
        // Incompressible, so compression settings do not matter.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (chunk.len() as u64).min(bytes - sent) as usize;
        s.write_all(&chunk[..n])
            .await
            .map_err(|e| format!("bulk write: {e}"))?;
        sent += n as u64;
    }
    s.shutdown().await.map_err(|e| e.to_string())?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)
        .await
        .map_err(|e| format!("bulk: no count from the sink: {e}"))?;
    let got = u64::from_be_bytes(count);
    if got != bytes {
        return Err(format!("the sink counted {got} of {bytes} bytes"));
    }
    Ok(bytes as f64 / t0.elapsed().as_secs_f64() / 1e6)
}

/// Runs every measurement.
///
/// # Errors
/// A daemon does not start, a client fails, or an answer is wrong.
pub async fn run(cfg: &SidecarConfig) -> Result<SidecarReport, String> {
    let dir = std::env::temp_dir().join(format!("dwcp-bench-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    dwcp_core::tls::DevCa::new()
        .and_then(|ca| ca.write_pem_files(&dir, &["node-a", "node-b"]))
        .map_err(|e| format!("certificates: {e}"))?;
    let echo = echo_service().await.map_err(|e| e.to_string())?;
    let sink = sink_service().await.map_err(|e| e.to_string())?;
    let mut report = SidecarReport::default();
    let shapes = [(1024, 1), (16 * 1024, 1), (1024, cfg.connections)];
    for &shape in &shapes {
        report
            .rr
            .push(measure_rr("direct", echo, shape, cfg.secs, &[]).await?);
    }
    report
        .bulk
        .push(measure_bulk("direct", sink, cfg.bulk_bytes, &[]).await?);
    // What one TLS connection carries on this machine: the bar for a
    // tunnel, which encrypts once too but adds two loopback hops.
    report.bulk.push(BulkResult {
        path: "raw-tls".into(),
        mb_per_s: crate::baselines::raw_tls_tcp_throughput(cfg.bulk_bytes).await,
        daemons_cpu_s_per_gb: None,
    });
    for transport in ["quic", "tcp"] {
        let tls = |name: &str| {
            let d = dir.display();
            format!(
                "[tls]\ncert = \"{d}/{name}.pem\"\nkey = \"{d}/{name}.key\"\nca = \"{d}/ca.pem\"\n"
            )
        };
        let (b_admin, a_admin) = (free_port()?, free_port()?);
        let b_port = if transport == "quic" {
            free_udp_port()?
        } else {
            free_port()?
        };
        let (t_echo, t_sink) = (free_port()?, free_port()?);
        let b = format!(
            "[node]\nname = \"node-b\"\n\n{tls}\n[listen]\n{transport} = \"127.0.0.1:{b_port}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{b_admin}\"\n\n[[peers]]\nname = \"node-a\"\n\n\
             [[services]]\nname = \"echo\"\ntarget = \"{echo}\"\nallowed_peers = [\"node-a\"]\n\n\
             [[services]]\nname = \"sink\"\ntarget = \"{sink}\"\nallowed_peers = [\"node-a\"]\n",
            tls = tls("node-b"),
        );
        let a = format!(
            "[node]\nname = \"node-a\"\n\n{tls}\n[listen]\nquic = \"\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{a_admin}\"\n\n\
             [[peers]]\nname = \"node-b\"\naddress = \"127.0.0.1:{b_port}\"\ntransport = \"{transport}\"\n\n\
             [[tunnels]]\nname = \"echo\"\nlisten = \"127.0.0.1:{t_echo}\"\npeer = \"node-b\"\nservice = \"echo\"\nclass = \"interactive\"\n\n\
             [[tunnels]]\nname = \"sink\"\nlisten = \"127.0.0.1:{t_sink}\"\npeer = \"node-b\"\nservice = \"sink\"\nclass = \"bulk\"\ncompression = \"off\"\n",
            tls = tls("node-a"),
        );
        let (bp, ap) = (
            dir.join(format!("b-{transport}.toml")),
            dir.join(format!("a-{transport}.toml")),
        );
        std::fs::write(&bp, b).map_err(|e| e.to_string())?;
        std::fs::write(&ap, a).map_err(|e| e.to_string())?;
        let b = start_daemon(&cfg.daemon, &bp, b_admin)?;
        let a = start_daemon(&cfg.daemon, &ap, a_admin)?;
        let daemons = [&a, &b];
        let t_echo: SocketAddr = ([127, 0, 0, 1], t_echo).into();
        let t_sink: SocketAddr = ([127, 0, 0, 1], t_sink).into();
        // The first connection waits for the peer connection: warm up.
        let warm_until = Instant::now() + Duration::from_secs(10);
        loop {
            match request_response(t_echo, 16, 1, 0.2).await {
                Ok((_, l)) if !l.is_empty() => break,
                _ if Instant::now() > warm_until => {
                    return Err(format!("the {transport} tunnel never answered"))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        for &shape in &shapes {
            report
                .rr
                .push(measure_rr(transport, t_echo, shape, cfg.secs, &daemons).await?);
        }
        report
            .bulk
            .push(measure_bulk(transport, t_sink, cfg.bulk_bytes, &daemons).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}
