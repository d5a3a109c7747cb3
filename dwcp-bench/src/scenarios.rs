//! End-to-end scenarios: DWCP and the alternative a user would pick, measured
//! in the same run on loopback with the same encryption.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dwcp_core::net::{Endpoint, EndpointConfig, StreamOptions, Transport};

use dwcp_core::tls::DevCa;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Scenario name.
    pub scenario: String,
    /// What was measured.
    pub subject: String,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
}

/// A DWCP figure beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// DWCP's figure.
    pub dwcp: Figure,
    /// The alternative's figure.
    pub baseline: Figure,
    /// `dwcp / baseline` (higher is better for throughput).
    pub ratio: f64,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

const CHUNK: usize = 1 << 20;

/// The path between the two sides of a scenario.
#[derive(Debug, Clone, Default)]
pub struct Path {
    /// `None`: plain loopback. `Some`: a `dwcp-wanem` UDP relay applying this
    /// profile in each direction (QUIC only).
    pub wan: Option<dwcp_wanem::LinkProfile>,
    /// DWCP's QUIC congestion control.
    pub congestion: dwcp_core::net::Congestion,
}

/// Starts a relay for `path`, or returns `addr` unchanged on loopback.
async fn through(path: &Path, addr: SocketAddr) -> (SocketAddr, Option<dwcp_wanem::udp::Relay>) {
    match &path.wan {
        None => (addr, None),
        Some(p) => {
            let back = dwcp_wanem::LinkProfile {
                seed: p.seed.wrapping_add(1),
                ..p.clone()
            };
            let r = dwcp_wanem::udp::Relay::start(loopback(), addr, p.clone(), back)
                .await
                .expect("relay");
            (r.local_addr(), Some(r))
        }
    }
}

/// DWCP throughput in MB/s: `streams` streams sending `total` bytes together.
pub async fn dwcp_throughput(transport: Transport, streams: usize, total: u64) -> f64 {
    dwcp_throughput_on(&Path::default(), transport, streams, total).await
}

/// [`dwcp_throughput`] over `path`.
pub async fn dwcp_throughput_on(
    path: &Path,
    transport: Transport,
    streams: usize,
    total: u64,
) -> f64 {
    let ca = DevCa::new().expect("ca");
    let mut sc = EndpointConfig::new(ca.config_for("server").expect("cert"), transport);
    sc.congestion = path.congestion;
    let server = Endpoint::bind(loopback(), sc).await.expect("bind");
    let mut cc = EndpointConfig::new(ca.config_for("client").expect("cert"), transport);
    cc.congestion = path.congestion;
    let client = Endpoint::bind(loopback(), cc).await.expect("bind");
    let (addr, _relay) = through(path, server.local_addr()).await;
    let (c, s) = tokio::join!(client.connect(addr, "server"), server.accept());
    let c = c.expect("connect");
    let s = s.expect("accept");
    let start = Instant::now();
    let n = transfer(&c, s, streams, total).await;
    n as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Sends `total` bytes from `c` to `s` over `streams` streams together
/// (compression off: scenarios compare transport paths on equal bytes, and
/// the payload is a constant pattern that would compress); returns the bytes
/// the receiver counted, checked against what was sent.
pub async fn transfer(
    c: &dwcp_core::net::Connection,
    s: dwcp_core::net::Connection,
    streams: usize,
    total: u64,
) -> u64 {
    let per = total / streams as u64;
    let sink = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let mut st = s.accept_stream().await.expect("stream");
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(b) = st.recv().await.expect("recv") {
                    n += b.len() as u64;
                }
                let _ = st.finish();
                n
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("task");
        }
        (n, s)
    });
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut st = c
            .open_stream(StreamOptions {
                compression: dwcp_core::net::Compression::Off,
                ..StreamOptions::default()
            })
            .expect("open");
        let chunk = chunk.clone();
        tasks.push(tokio::spawn(async move {
            let mut left = per;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                st.send(chunk.slice(..n)).await.expect("send");
                left -= n as u64;
            }
            st.finish().expect("finish");
            while st.recv().await.expect("recv").is_some() {}
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let (n, _s) = sink.await.expect("sink");
    assert_eq!(n, per * streams as u64);
    n
}

/// Raw quinn: one QUIC stream, same TLS (mutual, TLS 1.3, ring) and same
/// transport windows as DWCP uses.
pub async fn raw_quinn_throughput(total: u64, streams: usize) -> f64 {
    raw_quinn_throughput_on(&Path::default(), total, streams).await
}

/// [`raw_quinn_throughput`] over `path` (quinn's default congestion control).
pub async fn raw_quinn_throughput_on(path: &Path, total: u64, streams: usize) -> f64 {
    let ca = DevCa::new().expect("ca");
    let stls = ca.config_for("server").expect("cert");
    let ctls = ca.config_for("client").expect("cert");
    let cfg = EndpointConfig::new(stls.clone(), Transport::Quic);
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(cfg.protocol.max_stream_window));
    t.receive_window(quinn::VarInt::from_u32(cfg.protocol.max_connection_window));
    t.send_window(cfg.protocol.max_connection_window as u64);
    let t = Arc::new(t);
    let sq = quinn::crypto::rustls::QuicServerConfig::try_from(stls.server_config().expect("tls"))
        .expect("quic");
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(sq));
    sc.transport_config(t.clone());
    let sock = std::net::UdpSocket::bind(loopback()).expect("udp");
    let s2 = socket2::SockRef::from(&sock);
    let _ = s2.set_recv_buffer_size(8 << 20);
    let _ = s2.set_send_buffer_size(8 << 20);
    let server = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(sc),
        sock,
        quinn::default_runtime().expect("runtime"),
    )
    .expect("endpoint");
    let (addr, _relay) = through(path, server.local_addr().expect("addr")).await;
    let cq = quinn::crypto::rustls::QuicClientConfig::try_from(ctls.client_config().expect("tls"))
        .expect("quic");
    let mut cc = quinn::ClientConfig::new(Arc::new(cq));
    cc.transport_config(t);
    let client = quinn::Endpoint::client(loopback()).expect("client");
    let sink = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("conn");
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let (send, mut recv) = conn.accept_bi().await.expect("stream");
            tasks.push(tokio::spawn(async move {
                let _keep = send;
                let mut n = 0u64;
                while let Some(c) = recv.read_chunk(usize::MAX, true).await.expect("read") {
                    n += c.bytes.len() as u64;
                }
                n
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("reader");
        }
        n
    });
    let conn = client
        .connect_with(cc, addr, "server")
        .expect("connect")
        .await
        .expect("conn");
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    let per = total / streams as u64;
    let start = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..streams {
        let (mut send, recv) = conn.open_bi().await.expect("open");
        let chunk = chunk.clone();
        writers.push(tokio::spawn(async move {
            let _keep = recv;
            let mut left = per;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                send.write_chunk(chunk.slice(..n)).await.expect("write");
                left -= n as u64;
            }
            send.finish().expect("finish");
            // Keep the stream until the peer has read it all.
            let _ = send.stopped().await;
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let n = sink.await.expect("sink");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n, per * streams as u64);
    n as f64 / secs / 1e6
}

/// The baseline's TLS endpoints (the same mutual TLS 1.3 configuration DWCP
/// uses) and a listening socket on loopback.
pub async fn raw_tls_setup() -> (
    tokio_rustls::TlsAcceptor,
    tokio_rustls::TlsConnector,
    tokio::net::TcpListener,
    SocketAddr,
) {
    let ca = DevCa::new().expect("ca");
    let stls = ca.config_for("server").expect("cert");
    let ctls = ca.config_for("client").expect("cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(stls.server_config().expect("tls")));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ctls.client_config().expect("tls")));
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (acceptor, connector, listener, addr)
}

/// Raw tokio TCP with tokio-rustls (mutual TLS 1.3, ring): one connection.
pub async fn raw_tls_tcp_throughput(total: u64) -> f64 {
    let (acceptor, connector, listener, addr) = raw_tls_setup().await;
    let sink = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        let mut tls = acceptor.accept(tcp).await.expect("tls");
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let r = tls.read(&mut buf).await.expect("read");
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        n
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("server").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("tls");
    let chunk = vec![0x5a; CHUNK];
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        tls.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    tls.shutdown().await.expect("shutdown");
    let n = sink.await.expect("sink");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n, total);
    n as f64 / secs / 1e6
}

fn fig(scenario: &str, subject: &str, value: f64) -> Figure {
    Figure {
        scenario: scenario.into(),
        subject: subject.into(),
        value,
        unit: "MB/s",
    }
}

fn compare(scenario: &str, dwcp: Figure, baseline: Figure) -> Comparison {
    let ratio = dwcp.value / baseline.value;
    Comparison {
        scenario: scenario.into(),
        dwcp,
        baseline,
        ratio,
    }
}

/// Best of `rounds` runs of `f`.
async fn best_of<F, Fut>(rounds: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut best = 0f64;
    for _ in 0..rounds {
        best = best.max(f().await);
    }
    best
}

/// Best of `rounds` runs of each of `f` and `g`, alternating them so both
/// see the same conditions on a shared machine.
async fn best_of_pair<F, G, FutF, FutG>(rounds: usize, mut f: F, mut g: G) -> (f64, f64)
where
    F: FnMut() -> FutF,
    G: FnMut() -> FutG,
    FutF: std::future::Future<Output = f64>,
    FutG: std::future::Future<Output = f64>,
{
    let (mut a, mut b) = (0f64, 0f64);
    for _ in 0..rounds {
        a = a.max(f().await);
        b = b.max(g().await);
    }
    (a, b)
}

/// The two single-stream ratios the regression gate tracks: DWCP over QUIC
/// vs raw quinn, and DWCP over TCP lanes vs raw TCP + rustls, each measured
/// alternately in the same run (best of `rounds`).
pub async fn bulk_pairs(total: u64, rounds: usize) -> Vec<(&'static str, f64)> {
    let (d, b) = best_of_pair(
        rounds,
        || dwcp_throughput(Transport::Quic, 1, total),
        || raw_quinn_throughput(total, 1),
    )
    .await;
    let quic = d / b.max(1e-9);
    let (d, b) = best_of_pair(
        rounds,
        || dwcp_throughput(Transport::Tcp, 1, total),
        || raw_tls_tcp_throughput(total),
    )
    .await;
    vec![
        ("quic_vs_raw_quinn", quic),
        ("tcp_vs_raw_tls_tcp", d / b.max(1e-9)),
    ]
}

/// Goodput over an emulated WAN (QUIC through the `dwcp-wanem` relay):
/// DWCP with BBR (the sidecar's default), DWCP with CUBIC, and raw quinn with
/// its defaults, each moving `total` bytes on one stream. Figures in Mbit/s;
/// each comparison's ratio is DWCP over raw quinn.
pub async fn wan(mbit: u64, rtt_ms: u64, loss_pct: f64, total: u64) -> Vec<Comparison> {
    let profile = dwcp_wanem::LinkProfile::wan(mbit, rtt_ms, loss_pct);
    let path = |congestion| Path {
        wan: Some(profile.clone()),
        congestion,
    };
    let name = format!("WAN {mbit} Mbit/s, {rtt_ms} ms RTT, {loss_pct}% loss each way");
    let mbps = |mb_per_s: f64| mb_per_s * 8.0;
    let raw = mbps(raw_quinn_throughput_on(&path(Default::default()), total, 1).await);
    let bbr = mbps(
        dwcp_throughput_on(
            &path(dwcp_core::net::Congestion::Bbr),
            Transport::Quic,
            1,
            total,
        )
        .await,
    );
    let cubic = mbps(
        dwcp_throughput_on(
            &path(dwcp_core::net::Congestion::Cubic),
            Transport::Quic,
            1,
            total,
        )
        .await,
    );
    let f = |subject: &str, v: f64| Figure {
        scenario: "wan".into(),
        subject: subject.into(),
        value: v,
        unit: "Mbit/s",
    };
    let raw_fig = f("raw quinn (CUBIC), 1 stream", raw);
    vec![
        Comparison {
            scenario: format!("{name}: DWCP (BBR) vs raw quinn"),
            dwcp: f("DWCP over QUIC, BBR, 1 stream", bbr),
            baseline: raw_fig.clone(),
            ratio: bbr / raw.max(1e-9),
        },
        Comparison {
            scenario: format!("{name}: DWCP (CUBIC) vs raw quinn"),
            dwcp: f("DWCP over QUIC, CUBIC, 1 stream", cubic),
            baseline: raw_fig,
            ratio: cubic / raw.max(1e-9),
        },
    ]
}

/// Throughput (MB/s) for each stream count: DWCP over QUIC, DWCP over TCP
/// lanes, raw quinn; best of `rounds` each, measured alternately.
pub async fn stream_sweep(counts: &[usize], total: u64, rounds: usize) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for &n in counts {
        let (quic, raw) = best_of_pair(
            rounds,
            || dwcp_throughput(Transport::Quic, n, total),
            || raw_quinn_throughput(total, n),
        )
        .await;
        let tcp = best_of(rounds, || dwcp_throughput(Transport::Tcp, n, total)).await;
        eprintln!("{n} streams: DWCP QUIC {quic:.0} MB/s, DWCP TCP {tcp:.0} MB/s, raw quinn {raw:.0} MB/s");
        rows.push(serde_json::json!({
            "streams": n, "dwcp_quic": quic, "dwcp_tcp": tcp, "raw_quinn": raw, "unit": "MB/s",
        }));
    }
    rows
}

/// Runs the bulk-throughput scenarios. `total` bytes per run; `rounds` runs,
/// alternating DWCP and the baseline, best of each kept (loopback on a shared
/// machine is noisy; alternating keeps both sides under the same conditions).
pub async fn bulk(total: u64, rounds: usize) -> Vec<Comparison> {
    let mut out = Vec::new();
    let (d, b) = best_of_pair(
        rounds,
        || dwcp_throughput(Transport::Quic, 1, total),
        || raw_quinn_throughput(total, 1),
    )
    .await;
    let quic_single = d;
    out.push(compare(
        "single-stream bulk, QUIC",
        fig("quic-single", "DWCP over QUIC, 1 stream", d),
        fig("quic-single", "raw quinn, 1 stream", b),
    ));
    let (d, b) = best_of_pair(
        rounds,
        || dwcp_throughput(Transport::Tcp, 1, total),
        || raw_tls_tcp_throughput(total),
    )
    .await;
    let tcp_single = d;
    out.push(compare(
        "single-stream bulk, TCP",
        fig("tcp-single", "DWCP over 4 TCP lanes + TLS, 1 stream", d),
        fig("tcp-single", "raw tokio TCP + rustls, 1 connection", b),
    ));
    let d = best_of(rounds, || dwcp_throughput(Transport::Quic, 1000, total)).await;
    out.push(compare(
        "1,000 streams vs 1 stream, QUIC",
        fig("quic-1000", "DWCP over QUIC, 1,000 streams aggregate", d),
        fig("quic-1000", "DWCP over QUIC, 1 stream", quic_single),
    ));
    let r = best_of(rounds, || raw_quinn_throughput(total, 1000)).await;
    out.push(compare(
        "1,000 streams, QUIC vs raw quinn",
        fig(
            "quic-1000-raw",
            "DWCP over QUIC, 1,000 streams aggregate",
            d,
        ),
        fig("quic-1000-raw", "raw quinn, 1,000 streams aggregate", r),
    ));
    let d = best_of(rounds, || dwcp_throughput(Transport::Tcp, 1000, total)).await;
    let y = best_of(rounds, || crate::latency::yamux_bulk(total, 1000)).await;
    out.push(compare(
        "1,000 streams, TCP lanes vs rust-yamux",
        fig(
            "tcp-1000-yamux",
            "DWCP over TCP lanes, 1,000 streams aggregate",
            d,
        ),
        fig(
            "tcp-1000-yamux",
            "rust-yamux over TCP + rustls, 1,000 streams aggregate",
            y,
        ),
    ));
    out.push(compare(
        "1,000 streams vs 1 stream, TCP",
        fig(
            "tcp-1000",
            "DWCP over TCP lanes, 1,000 streams aggregate",
            d,
        ),
        fig("tcp-1000", "DWCP over TCP lanes, 1 stream", tcp_single),
    ));
    out
}
