//! `dwcp-bench flood`: a QUIC handshake flood against a running daemon.
//!
//! Sends correctly encrypted QUIC Initial packets, each opening a new
//! connection (its own connection id, keys and a real ClientHello, crafted
//! with quinn-proto), and never answers what comes back: no Retry is
//! followed, no handshake is finished. Sources are spread over loopback
//! addresses `127.0.0.2` and up, so per-source bounds do not hide the total.
//! Reports the target process's resident memory (`/proc/PID/status` VmRSS)
//! before, at its peak during, and after the flood. For loopback or a
//! network namespace you own only.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwcp_core::tls::DevCa;

/// What a flood did and what it cost the target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FloodReport {
    /// Initials sent.
    pub sent: usize,
    /// Bytes sent.
    pub bytes: usize,
    /// Source addresses used.
    pub sources: usize,
    /// Seconds sending took.
    pub send_secs: f64,
    /// Target's VmRSS before the flood, KiB.
    pub rss_before_kib: Option<u64>,
    /// Target's highest VmRSS sampled during the flood and the watch time, KiB.
    pub rss_peak_kib: Option<u64>,
    /// Target's VmRSS at the end of the watch time, KiB.
    pub rss_after_kib: Option<u64>,
}

/// `n` QUIC Initial datagrams for `server`, each a new connection.
///
/// # Errors
/// The TLS or QUIC client configuration could not be built.
pub fn initials(n: usize, server: SocketAddr, server_name: &str) -> Result<Vec<Vec<u8>>, String> {
    let ca = DevCa::new().map_err(|e| e.to_string())?;
    let tls = ca
        .config_for("flood.invalid")
        .and_then(|t| t.client_config())
        .map_err(|e| e.to_string())?;
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| e.to_string())?;
    let client = quinn_proto::ClientConfig::new(Arc::new(crypto));
    let mut ep = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let now = Instant::now();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (_, mut conn) = ep
            .connect(now, client.clone(), server, server_name)
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        if let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            buf.truncate(t.size);
            out.push(buf);
        }
    }
    Ok(out)
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Sends `count` Initials to `target` from `sources` loopback addresses,
/// `burst` at a time with `pause` between bursts, then samples the target's
/// memory for `watch`.
///
/// # Errors
/// Crafting failed or no source socket could be bound.
pub fn run(
    target: SocketAddr,
    server_name: &str,
    count: usize,
    sources: usize,
    pid: Option<u32>,
    watch: Duration,
) -> Result<FloodReport, String> {
    let packets = initials(count, target, server_name)?;
    let socks: Vec<UdpSocket> = (0..sources.clamp(1, 250))
        .map(|i| UdpSocket::bind((format!("127.0.0.{}", 2 + i), 0)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bind a source address: {e}"))?;
    let rss = || pid.and_then(rss_kib);
    let before = rss();
    let mut peak = before;
    let bump = |peak: &mut Option<u64>| {
        if let Some(r) = rss() {
            *peak = Some(peak.map_or(r, |p| p.max(r)));
        }
    };
    let start = Instant::now();
    let mut bytes = 0;
    for (i, p) in packets.iter().enumerate() {
        if socks[i % socks.len()].send_to(p, target).is_ok() {
            bytes += p.len();
        }
        if i % 100 == 99 {
            // ~100 Initials per millisecond at most; the kernel drops what
            // the target does not read in time.
            std::thread::sleep(Duration::from_millis(1));
            bump(&mut peak);
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    let end = Instant::now() + watch;
    while Instant::now() < end {
        bump(&mut peak);
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(FloodReport {
        sent: packets.len(),
        bytes,
        sources: socks.len(),
        send_secs,
        rss_before_kib: before,
        rss_peak_kib: peak,
        rss_after_kib: rss(),
    })
}
