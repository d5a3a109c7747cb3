//! Interactive latency under bulk load: 1 KiB echoes on one stream while 8
//! bulk streams saturate a loopback connection; DWCP (TCP lanes and QUIC,
//! interactive class weighted 16:1 over the bulk class) vs rust-yamux over
//! one TCP connection, with one raw TLS TCP connection's bulk rate beside
//! them. Both sides use the same mutual TLS 1.3 (rustls, ring).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dwcp_core::net::{Compression, Endpoint, EndpointConfig, StreamOptions, Transport};
use dwcp_core::scheduler::ClassConfig;
use dwcp_core::tls::DevCa;
use serde::Serialize;

use crate::loopback;

/// Latency percentiles of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What was measured.
    pub subject: String,
    /// Median RTT of a 1 KiB echo, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Bulk bytes moved during the measurement, MB/s.
    pub bulk_mbps: f64,
}

/// Bytes of each interactive message.
pub(crate) const MSG: usize = 1024;
/// Bulk streams loading the connection meanwhile.
pub(crate) const BULK: usize = 8;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// DWCP over `transport`.
pub async fn dwcp(transport: Transport, messages: usize, bulk_cap: Option<u64>) -> Latency {
    let ca = DevCa::new().expect("ca");
    let proto = dwcp_core::Config {
        classes: vec![
            ClassConfig {
                class: 0,
                weight: 16,
                min_rate: None,
                max_rate: None,
            },
            ClassConfig {
                class: 1,
                weight: 1,
                min_rate: None,
                max_rate: bulk_cap,
            },
        ],
        ..Default::default()
    };
    let mut scfg = EndpointConfig::new(ca.config_for("server").expect("cert"), transport);
    scfg.protocol = proto.clone();
    let mut ccfg = EndpointConfig::new(ca.config_for("client").expect("cert"), transport);
    ccfg.protocol = proto;
    let server = Endpoint::bind(loopback(), scfg).await.expect("bind");
    let client = Endpoint::bind(loopback(), ccfg).await.expect("bind");
    let (c, s) = tokio::join!(
        client.connect(server.local_addr(), "server"),
        server.accept()
    );
    let (c, s) = (c.expect("connect"), s.expect("accept"));
    let drained = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d2 = drained.clone();
    tokio::spawn(async move {
        while let Some(mut st) = s.accept_stream().await {
            let d = d2.clone();
            tokio::spawn(async move {
                if &st.route()[..] == b"echo" {
                    let mut buf = Vec::with_capacity(MSG);
                    while let Ok(Some(b)) = st.recv().await {
                        buf.extend_from_slice(&b);
                        while buf.len() >= MSG {
                            let m = Bytes::copy_from_slice(&buf[..MSG]);
                            buf.drain(..MSG);
                            if st.send_raw(m).await.is_err() {
                                return;
                            }
                        }
                    }
                } else {
                    while let Ok(Some(b)) = st.recv().await {
                        d.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut bulk = Vec::new();
    for _ in 0..BULK {
        let mut st = c
            .open_stream(StreamOptions {
                class: 1,
                route: Bytes::from_static(b"bulk"),
                compression: Compression::Off,
                ..StreamOptions::default()
            })
            .expect("open");
        bulk.push(tokio::spawn(async move {
            let chunk = Bytes::from(vec![7u8; 256 * 1024]);
            loop {
                if st.send(chunk.clone()).await.is_err() {
                    break;
                }
            }
        }));
    }
    let mut echo = c
        .open_stream(StreamOptions {
            class: 0,
            route: Bytes::from_static(b"echo"),
            compression: Compression::Off,
            interactive: true,
            ..StreamOptions::default()
        })
        .expect("open");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let d0 = drained.load(std::sync::atomic::Ordering::Relaxed);
    let mut rtts = Vec::with_capacity(messages);
    let msg = Bytes::from(vec![1u8; MSG]);
    for _ in 0..messages {
        let t0 = Instant::now();
        echo.send_raw(msg.clone()).await.expect("send");
        let mut got = 0;
        while got < MSG {
            got += echo.recv().await.expect("recv").expect("data").len();
        }
        rtts.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for b in bulk {
        b.abort();
    }
    c.close(dwcp_core::ErrorCode::NoError, "done");
    let path = match transport {
        Transport::Tcp => "4 TCP lanes + TLS",
        Transport::Quic => "QUIC",
    };
    let subject = match bulk_cap {
        None => format!("DWCP, {path}, interactive class 16:1"),
        Some(c) => format!("DWCP, {path}, bulk class capped at {} MB/s", c / 1_000_000),
    };
    summarise(subject, rtts, start, &drained, d0)
}

/// Percentiles of the echo RTTs and the bulk rate drained since `start`.
pub(crate) fn summarise(
    subject: String,
    mut rtts: Vec<Duration>,
    start: Instant,
    drained: &std::sync::atomic::AtomicU64,
    d0: u64,
) -> Latency {
    let secs = start.elapsed().as_secs_f64();
    let bulk_mbps = (drained.load(std::sync::atomic::Ordering::Relaxed) - d0) as f64 / secs / 1e6;
    Latency {
        subject,
        p50_ms: pct(&mut rtts, 0.5),
        p99_ms: pct(&mut rtts, 0.99),
        bulk_mbps,
    }
}
