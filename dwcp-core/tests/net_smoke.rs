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
