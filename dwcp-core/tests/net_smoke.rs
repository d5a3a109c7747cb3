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

/// A class whose writes are all small (an interactive tunnel's) or whose
/// policy is `off` shows its codec, `none`, in the per-class figures the
/// daemon's status page lists (they went as-is without reaching the codec
/// layer, and the class was missing from the page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_sent_as_is_show_their_codec() {
    use dwcp_core::net::{Compression, StreamOptions};
    let (_ca, server, client) = endpoints(Transport::Quic).await;
    let (c, s) = tokio::join!(client.connect(server.local_addr(), SERVER), server.accept());
    let (c, s) = (c.expect("connect"), s.expect("accept"));
    let reader = tokio::spawn(async move {
        let mut n = 0;
        for _ in 0..2 {
            let mut st = s.accept_stream().await.expect("stream");
            while let Some(b) = st.recv().await.expect("recv") {
                n += b.len();
            }
        }
        n
    });
    for (class, compression, write) in [
        (5u8, Compression::Adaptive, 1024usize),
        (6, Compression::Off, 64 * 1024),
    ] {
        let mut st = c
            .open_stream(StreamOptions {
                class,
                compression,
                ..StreamOptions::default()
            })
            .expect("open");
        for _ in 0..8 {
            st.send(bytes::Bytes::from(vec![7u8; write]))
                .await
                .expect("send");
        }
        st.finish().expect("finish");
    }
    assert_eq!(reader.await.expect("reader"), 8 * 1024 + 8 * 64 * 1024);
    let stats = c.stats();
    for (class, raw) in [(5u8, 8 * 1024u64), (6, 8 * 64 * 1024)] {
        let got = stats
            .compression
            .get(&class)
            .unwrap_or_else(|| panic!("class {class} missing: {:?}", stats.compression));
        assert_eq!(
            (got.current.as_str(), got.raw, got.wire),
            ("none", raw, raw)
        );
    }
}
