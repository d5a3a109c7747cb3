//! Raw quinn: QUIC streams with the same TLS and transport windows as DWCP.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dwcp_core::net::{EndpointConfig, Transport};
use dwcp_core::tls::DevCa;

use crate::loopback;
use crate::scenarios::{through, Path, CHUNK};

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
