//! Quick end-to-end checks of every transport.
mod common;

use common::*;
use dwcp_core::net::{mem, Transport};
use dwcp_core::Config;

async fn echo_roundtrip(c: dwcp_core::net::Connection, s: dwcp_core::net::Connection) {
    let server = tokio::spawn(async move {
        let mut st = s.accept_stream().await.expect("stream");
        assert_eq!(&st.route()[..], b"echo");
        let (n, h) = read_all(&mut st).await.expect("read");
        let back = send_content(&mut st, 9, 1 << 20).await;
        (n, h, back, s)
    });
    let mut st = c.open_stream(opts("echo")).expect("open");
    let sent = send_content(&mut st, 5, 3 << 20).await;
    let (n2, h2) = read_all(&mut st).await.expect("read back");
    let (n, h, back, _s) = server.await.expect("server");
    assert_eq!((n, h), (3 << 20, sent));
    assert_eq!((n2, h2), (1 << 20, back));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_transport() {
    let (c, s) = mem::pair(Config::default(), Config::default(), 2, 256 * 1024)
        .await
        .expect("pair");
    echo_roundtrip(c, s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transport() {
    let (_se, _ce, c, s) = connected(Transport::Tcp).await;
    assert_eq!(c.peer_identity(), Some(SERVER));
    assert_eq!(s.peer_identity(), Some(CLIENT));
    echo_roundtrip(c.clone(), s).await;
    let st = c.stats();
    assert_eq!(st.transport.kind, "tcp");
    assert!(st.transport.rtt.is_some());
    assert_eq!(st.link.mode, "datacenter");
    assert!(
        st.allocation.iter().any(|r| r.bytes_sent >= 3 << 20),
        "{:?}",
        st.allocation
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_transport() {
    let (_se, _ce, c, s) = connected(Transport::Quic).await;
    assert_eq!(c.peer_identity(), Some(SERVER));
    assert_eq!(s.peer_identity(), Some(CLIENT));
    echo_roundtrip(c.clone(), s).await;
    let st = c.stats();
    assert_eq!(st.transport.kind, "quic");
    assert!(st.transport.sent_packets > 0);
}

/// Compressible data on a rate-capped connection is compressed on the way and
/// arrives intact; the stats and per-class figures show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_over_tcp_with_link_rate_hint() {
    use dwcp_core::net::{Compression, Endpoint, EndpointConfig, StreamOptions};
    let ca = dwcp_core::tls::DevCa::new().expect("ca");
    let server = Endpoint::bind(
        loopback(),
        EndpointConfig::new(ca.config_for(SERVER).expect("c"), Transport::Tcp),
    )
    .await
    .expect("bind");
    let mut cfg = EndpointConfig::new(ca.config_for(CLIENT).expect("c"), Transport::Tcp);
    cfg.link_rate_bps = Some(10_000_000);
    let client = Endpoint::bind(loopback(), cfg).await.expect("bind");
    let (c, s) = tokio::join!(client.connect(server.local_addr(), SERVER), server.accept());
    let (c, s) = (c.expect("connect"), s.expect("accept"));
    let data = bytes::Bytes::from(dwcp_core::corpus::vm_memory(4 << 20, 1));
    let expect = data.clone();
    let reader = tokio::spawn(async move {
        let mut st = s.accept_stream().await.expect("stream");
        let mut got = Vec::new();
        while let Some(b) = st.recv().await.expect("recv") {
            got.extend_from_slice(&b);
        }
        st.finish().expect("finish");
        (got, s.stats())
    });
    let mut st = c
        .open_stream(StreamOptions {
            class: 3,
            compression: Compression::Adaptive,
            ..StreamOptions::default()
        })
        .expect("open");
    st.send(data).await.expect("send");
    st.finish().expect("finish");
    let (got, sstats) = reader.await.expect("reader");
    assert!(got == expect[..], "content differs");
    let stats = c.stats();
    let class = &stats.compression[&3];
    assert!(class.raw as f64 / class.wire as f64 > 1.5, "{class:?}");
    assert!(stats.compression_ratio() > 1.5);
    assert!(sstats.core.raw_received_by_codec[2] + sstats.core.raw_received_by_codec[1] > 0);
}
