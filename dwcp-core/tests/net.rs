//! End-to-end tests of the async API over QUIC and TCP lanes on loopback.
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use dwcp_core::net::{Endpoint, EndpointConfig, Error, Transport};
use dwcp_core::sim::Rng;
use dwcp_core::{ErrorCode, StreamError};
use tokio::task::JoinSet;

async fn thousand_streams(transport: Transport) {
    let (_se, _ce, c, s) = connected(transport).await;
    const N: usize = 1000;
    let server = tokio::spawn(async move {
        let mut set = JoinSet::new();
        for _ in 0..N {
            let mut st = s.accept_stream().await.expect("stream");
            set.spawn(async move {
                let route = String::from_utf8(st.route().to_vec()).expect("utf8");
                let got = read_all(&mut st).await.expect("read");
                (route, got)
            });
        }
        let mut out = std::collections::HashMap::new();
        while let Some(r) = set.join_next().await {
            let (route, got) = r.expect("task");
            out.insert(route, got);
        }
        (out, s)
    });
    let mut rng = Rng::new(99);
    let mut set = JoinSet::new();
    let mut total = 0u64;
    for i in 0..N {
        // Log-uniform sizes from 1 byte to 8 MiB.
        let len = (8.0f64 * 1048576.0).powf(rng.next_f64()) as u64;
        total += len;
        let mut st = c.open_stream(opts(&i.to_string())).expect("open");
        set.spawn(async move {
            let h = send_content(&mut st, i as u64, len).await;
            (i.to_string(), (len, h))
        });
    }
    let mut sent = std::collections::HashMap::new();
    while let Some(r) = set.join_next().await {
        let (k, v) = r.expect("task");
        sent.insert(k, v);
    }
    let (got, _s) = server.await.expect("server");
    assert_eq!(got.len(), N);
    for (k, v) in &sent {
        assert_eq!(got.get(k), Some(v), "stream {k}");
    }
    eprintln!("{transport:?}: 1000 streams, {} MiB verified", total >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_thousand_streams_verified_by_hash() {
    thousand_streams(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_thousand_streams_verified_by_hash() {
    thousand_streams(Transport::Tcp).await;
}

async fn half_close(transport: Transport) {
    let (_se, _ce, c, s) = connected(transport).await;
    // Client finishes first, then reads the server's reply.
    let mut a = c.open_stream(opts("a")).expect("open");
    let ha = send_content(&mut a, 1, 100_000).await;
    let mut sa = s.accept_stream().await.expect("accept");
    assert_eq!(read_all(&mut sa).await.expect("read"), (100_000, ha));
    let hb = send_content(&mut sa, 2, 50_000).await;
    assert_eq!(read_all(&mut a).await.expect("reply"), (50_000, hb));
    // Server finishes first without reading; the client keeps sending.
    let mut b = c.open_stream(opts("b")).expect("open");
    b.send(Bytes::from_static(b"hello")).await.expect("send");
    let mut sb = s.accept_stream().await.expect("accept");
    let h1 = send_content(&mut sb, 3, 10_000).await;
    assert_eq!(read_all(&mut b).await.expect("read"), (10_000, h1));
    let h2 = send_content(&mut b, 4, 70_000).await;
    let (n, _) = read_all(&mut sb).await.expect("read");
    assert_eq!(n, 70_005);
    let _ = h2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_half_close_each_direction() {
    half_close(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_half_close_each_direction() {
    half_close(Transport::Tcp).await;
}

async fn reset_by_either_side(transport: Transport) {
    let (_se, _ce, c, s) = connected(transport).await;
    let mut a = c.open_stream(opts("a")).expect("open");
    a.send(Bytes::from(vec![1u8; 10_000])).await.expect("send");
    let mut sa = s.accept_stream().await.expect("accept");
    a.reset(ErrorCode::Cancel);
    // The reader sees the reset as an error, never as a clean end.
    let r = read_all(&mut sa).await;
    assert_eq!(r, Err(StreamError::Reset(ErrorCode::Cancel)));

    let mut b = c.open_stream(opts("b")).expect("open");
    b.send(Bytes::from_static(b"x")).await.expect("send");
    let mut sb = s.accept_stream().await.expect("accept");
    sb.reset(ErrorCode::Unknown(77));
    assert_eq!(
        read_all(&mut b).await,
        Err(StreamError::Reset(ErrorCode::Unknown(77)))
    );
    // Writing to a reset stream fails too. The peer's STOP may arrive after
    // its RESET (over QUIC they travel on different QUIC streams), and a
    // first 1 MiB may still fit in the window; the writes after it wait for
    // credit the peer never gives, and fail when the STOP lands.
    let big = Bytes::from(vec![0u8; 1 << 20]);
    let mut failed = false;
    for _ in 0..16 {
        if b.send(big.clone()).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "16 MiB written to a stream the peer reset");
    // The connection is unaffected.
    let mut d = c.open_stream(opts("d")).expect("open");
    let h = send_content(&mut d, 5, 1000).await;
    let mut sd = s.accept_stream().await.expect("accept");
    assert_eq!(read_all(&mut sd).await.expect("read"), (1000, h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_reset_by_either_side() {
    reset_by_either_side(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_reset_by_either_side() {
    reset_by_either_side(Transport::Tcp).await;
}

/// The server runs on its own runtime, which is shut down mid-transfer (as if
/// the peer process died). Every client stream must end in an error.
async fn connection_loss(transport: Transport) {
    let ca = dwcp_core::tls::DevCa::new().expect("ca");
    let proto = dwcp_core::Config {
        idle_timeout: Duration::from_secs(3),
        ping_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let mut scfg = EndpointConfig::new(ca.config_for(SERVER).expect("cert"), transport);
    scfg.protocol = proto.clone();
    let mut ccfg = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), transport);
    ccfg.protocol = proto;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    rt.spawn(async move {
        let ep = Endpoint::bind(loopback(), scfg).await.expect("bind");
        let _ = addr_tx.send(ep.local_addr());
        while let Some(conn) = ep.accept().await {
            tokio::spawn(async move {
                while let Some(mut st) = conn.accept_stream().await {
                    // Read slowly so transfers are in progress when the server dies.
                    tokio::spawn(async move {
                        while let Ok(Some(_)) = st.recv().await {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    });
                }
            });
        }
    });
    let addr = addr_rx.await.expect("addr");
    let client = Endpoint::bind(loopback(), ccfg).await.expect("bind");
    let c = client.connect(addr, SERVER).await.expect("connect");
    let mut set = JoinSet::new();
    for i in 0..10 {
        let mut st = c.open_stream(opts(&i.to_string())).expect("open");
        set.spawn(async move {
            let mut src = dwcp_core::sim::Source::new(i, 1 << 30);
            let send_result = loop {
                let Some(chunk) = src.next_chunk(64 * 1024) else {
                    break Ok(());
                };
                if let Err(e) = st.send(chunk).await {
                    break Err(e);
                }
            };
            let recv_result = st.recv().await;
            (send_result, recv_result)
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    rt.shutdown_background();
    let started = Instant::now();
    while let Some(r) = set.join_next().await {
        let (send, recv) = r.expect("task");
        assert!(send.is_err(), "a 1 GiB send cannot have completed");
        assert!(
            recv.is_err(),
            "recv after loss must be an error, got {recv:?}"
        );
    }
    assert!(c.closed().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connection_loss_fails_every_stream() {
    connection_loss(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connection_loss_fails_every_stream() {
    connection_loss(Transport::Tcp).await;
}

fn assert_refused(r: Result<dwcp_core::net::Connection, Error>, words: &[&str]) {
    match r {
        Ok(_) => panic!("connection should have been refused"),
        Err(e) => {
            let msg = format!("{e}");
            assert!(
                words
                    .iter()
                    .any(|w| msg.to_lowercase().contains(&w.to_lowercase())),
                "error {msg:?} does not mention any of {words:?}"
            );
        }
    }
}

async fn wrong_ca(transport: Transport) {
    let (_ca, server, _client) = endpoints(transport).await;
    let other = dwcp_core::tls::DevCa::new().expect("ca");
    let rogue = Endpoint::bind(
        loopback(),
        EndpointConfig::new(other.config_for(CLIENT).expect("cert"), transport),
    )
    .await
    .expect("bind");
    let r = rogue.connect(server.local_addr(), SERVER).await;
    assert_refused(r, &["UnknownIssuer", "certificate"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_wrong_ca_refused() {
    wrong_ca(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_wrong_ca_refused() {
    wrong_ca(Transport::Tcp).await;
}

async fn expired_client_cert(transport: Transport) {
    let (ca, server, _client) = endpoints(transport).await;
    let tls = dwcp_core::tls::TlsConfig {
        identity: ca.issue_expired(CLIENT).expect("cert"),
        roots: ca.roots(),
    };
    let old = Endpoint::bind(loopback(), EndpointConfig::new(tls, transport))
        .await
        .expect("bind");
    let r = old.connect(server.local_addr(), SERVER).await;
    assert!(r.is_err() || r.as_ref().is_ok_and(|c| c.is_closed()));
    wait_for_failure(&server, "expired").await;
}

async fn wait_for_failure(server: &Endpoint, word: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = server.stats();
        if let Some(f) = &st.last_failure {
            assert!(
                f.to_lowercase().contains(word),
                "server failure {f:?} lacks {word:?}"
            );
            assert_eq!(st.accepted, 0);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server did not report a refused handshake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_expired_certificate_refused() {
    expired_client_cert(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_expired_certificate_refused() {
    expired_client_cert(Transport::Tcp).await;
}

fn no_client_auth(ca: &dwcp_core::tls::DevCa) -> rustls::ClientConfig {
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(ca.roots())
    .with_no_client_auth();
    cfg.alpn_protocols = vec![dwcp_core::tls::ALPN.to_vec()];
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_missing_client_certificate_refused() {
    let (ca, server, _client) = endpoints(Transport::Quic).await;
    let qc =
        quinn::crypto::rustls::QuicClientConfig::try_from(no_client_auth(&ca)).expect("quic tls");
    let mut ep = quinn::Endpoint::client(loopback()).expect("client");
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(qc)));
    let r = async {
        let conn = ep.connect(server.local_addr(), SERVER)?.await?;
        // TLS 1.3: the server may reject the certificate after the client finished.
        let (_s, mut r) = conn.open_bi().await?;
        let mut b = [0u8; 1];
        r.read_exact(&mut b)
            .await
            .map_err(|e| anyhow_like(e.to_string()))?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    assert!(r.is_err());
    wait_for_failure(&server, "certificate").await;
}

fn anyhow_like(s: String) -> Box<dyn std::error::Error> {
    s.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_missing_client_certificate_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ca, server, _client) = endpoints(Transport::Tcp).await;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(no_client_auth(&ca)));
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from(SERVER).expect("name");
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        let _ = tls.write_all(&[0u8; 22]).await;
        let mut b = [0u8; 1];
        assert!(tls.read_exact(&mut b).await.is_err());
    }
    wait_for_failure(&server, "certificate").await;
}

async fn version_mismatch(transport: Transport) {
    let ca = dwcp_core::tls::DevCa::new().expect("ca");
    let server = Endpoint::bind(
        loopback(),
        EndpointConfig::new(ca.config_for(SERVER).expect("cert"), transport),
    )
    .await
    .expect("bind");
    let mut cfg = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), transport);
    cfg.protocol.min_version = dwcp_core::PROTOCOL_VERSION + 1;
    cfg.protocol.max_version = dwcp_core::PROTOCOL_VERSION + 1;
    let client = Endpoint::bind(loopback(), cfg).await.expect("bind");
    let r = client.connect(server.local_addr(), SERVER).await;
    assert_refused(r, &["version_mismatch"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_version_mismatch_is_a_clear_error() {
    version_mismatch(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_version_mismatch_is_a_clear_error() {
    version_mismatch(Transport::Tcp).await;
}

/// Under 1% datagram loss, small echoes on one stream are not held up by
/// retransmissions of another stream's bulk data: only the echoes whose own
/// datagrams are lost are late, not every echo queued behind a bulk loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_no_head_of_line_blocking_across_streams() {
    let (_se, _ce, server_ep, client_ep) = {
        let (ca, s, c) = endpoints(Transport::Quic).await;
        (ca, (), s, c)
    };
    let one_way = Duration::from_millis(20);
    // The dwcp-wanem relay: 20 ms and 1 % seeded loss each way.
    let profile = dwcp_wanem::LinkProfile {
        delay: one_way,
        loss: 0.01,
        seed: 3,
        ..dwcp_wanem::LinkProfile::default()
    };
    let back = dwcp_wanem::LinkProfile {
        seed: 4,
        ..profile.clone()
    };
    // Server: drain bulk, echo small messages.
    let path = common::echo_through_relay(server_ep, client_ep, profile, back).await;
    let c = path.client.clone();
    let mut bulk = c.open_stream(opts("bulk")).expect("open");
    let bulk_task = tokio::spawn(async move {
        let chunk = Bytes::from(vec![0xAB; 64 * 1024]);
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            if bulk.send(chunk.clone()).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut echo = c.open_stream(opts("echo")).expect("open");
    let mut rtts = Vec::new();
    for i in 0..100u32 {
        let msg = Bytes::from(i.to_be_bytes().to_vec());
        let t0 = Instant::now();
        echo.send(msg.clone()).await.expect("send");
        let got = echo.recv().await.expect("recv").expect("data");
        assert_eq!(got, msg);
        rtts.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bulk_task.abort();
    let base = one_way * 2;
    // A message held behind a retransmission waits at least one more round trip.
    let late = rtts.iter().filter(|r| **r > base * 3).count();
    let loss = c.stats().transport;
    rtts.sort();
    eprintln!(
        "echo RTT p50 {:?} p90 {:?} max {:?}; late {late}/100; transport lost {} of {} packets",
        rtts[50], rtts[90], rtts[99], loss.lost_packets, loss.sent_packets
    );
    assert!(
        loss.lost_packets > 0,
        "the relay must have dropped bulk packets"
    );
    assert!(late <= 10, "{late} of 100 echoes were held up");
}

/// Path MTU discovery on an IPv4 path of Ethernet's MTU (loopback's is
/// larger) finds full-size packets: 1472 bytes of UDP payload, 20 more per
/// packet than quinn's default bound (IPv6's 1452).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_finds_full_size_packets_on_ipv4() {
    let (_server, _client, c, s) = common::connected(Transport::Quic).await;
    let mut found = None;
    for _ in 0..250 {
        let mtu = c.stats().transport.mtu;
        if mtu == Some(1472) {
            found = mtu;
            break;
        }
        found = mtu;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(found, Some(1472), "the client's path MTU after 5 s");
    drop(s);
}

/// Each end asks its peer for one acknowledgement per eight packets (or
/// per millisecond): a bulk transfer through a 50 Mbit/s, 10 ms link draws
/// one packet from the receiver per eight or so from the sender. QUIC's
/// default is one per two; through the relay, whose deliveries come in
/// bunches the receiver reads together, it read one per 4.7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_receiver_acknowledges_about_every_eighth_packet() {
    let (_ca, server, client) = common::endpoints(Transport::Quic).await;
    let profile = dwcp_wanem::LinkProfile::wan(50, 10, 0.0);
    let wan =
        dwcp_wanem::udp::Relay::start(loopback(), server.local_addr(), profile.clone(), profile)
            .await
            .expect("relay");
    let (c, s) = tokio::join!(client.connect(wan.local_addr(), SERVER), server.accept());
    let (c, s) = (c.expect("connect"), s.expect("accept"));
    let len = 8 << 20;
    let reader = tokio::spawn(async move {
        let mut st = s.accept_stream().await.expect("stream");
        let got = read_all(&mut st).await.expect("read");
        (got, s)
    });
    let mut st = c
        .open_stream(dwcp_core::net::StreamOptions {
            compression: dwcp_core::net::Compression::Off,
            ..opts("bulk")
        })
        .expect("open");
    let hash = send_content(&mut st, 7, len).await;
    let ((n, h), s) = reader.await.expect("reader");
    assert_eq!((n, h), (len, hash), "delivered whole");
    let sent = c.stats().transport.sent_packets;
    let acks = s.stats().transport.sent_packets;
    assert!(
        sent > 5_000,
        "{sent} packets for 8 MiB: the transfer went through"
    );
    assert!(
        acks * 6 < sent,
        "the receiver sent {acks} packets for the sender's {sent}"
    );
    println!("receiver {acks} packets, sender {sent}");
}
