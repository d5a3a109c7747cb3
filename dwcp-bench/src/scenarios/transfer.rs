//! DWCP moving bulk data: the transfer every throughput scenario runs.

use std::time::Instant;

use bytes::Bytes;
use dwcp_core::net::{Endpoint, EndpointConfig, StreamOptions, Transport};
use dwcp_core::tls::DevCa;

use super::{through, Path, CHUNK};
use crate::loopback;

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
