//! Helpers shared by the network tests.
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::net::SocketAddr;

use bytes::Bytes;
use dwcp_core::net::{Connection, Endpoint, EndpointConfig, Stream, StreamOptions, Transport};
use dwcp_core::sim::Source;
use dwcp_core::tls::DevCa;

pub(crate) const SERVER: &str = "server.dwcp.test";
pub(crate) const CLIENT: &str = "client.dwcp.test";

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A server and a client endpoint trusting the same development CA.
pub(crate) async fn endpoints(transport: Transport) -> (DevCa, Endpoint, Endpoint) {
    endpoints_with(transport, None).await
}

/// As [`endpoints`], the client told its link runs at `link_rate_bps`.
async fn endpoints_with(
    transport: Transport,
    link_rate_bps: Option<u64>,
) -> (DevCa, Endpoint, Endpoint) {
    let ca = DevCa::new().expect("ca");
    let server = Endpoint::bind(
        loopback(),
        EndpointConfig::new(ca.config_for(SERVER).expect("cert"), transport),
    )
    .await
    .expect("bind server");
    let mut client_config = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), transport);
    client_config.link_rate_bps = link_rate_bps;
    let client = Endpoint::bind(loopback(), client_config)
        .await
        .expect("bind client");
    (ca, server, client)
}

pub(crate) async fn connected(
    transport: Transport,
) -> (Endpoint, Endpoint, Connection, Connection) {
    connected_at_rate(transport, None).await
}

/// As [`connected`], the client told its link runs at `link_rate_bps`
/// (adaptive compression then compresses what pays on such a link).
pub(crate) async fn connected_at_rate(
    transport: Transport,
    link_rate_bps: Option<u64>,
) -> (Endpoint, Endpoint, Connection, Connection) {
    let (_ca, server, client) = endpoints_with(transport, link_rate_bps).await;
    let addr = server.local_addr();
    let (c, s) = tokio::join!(client.connect(addr, SERVER), server.accept());
    (server, client, c.expect("connect"), s.expect("accept"))
}

/// Sends `len` bytes from `seed` and finishes; returns the content hash.
pub(crate) async fn send_content(stream: &mut Stream, seed: u64, len: u64) -> u64 {
    let mut src = Source::new(seed, len);
    while let Some(chunk) = src.next_chunk(64 * 1024) {
        stream.send(chunk).await.expect("send");
    }
    stream.finish().expect("finish");
    src.hash()
}

/// Reads a stream to its end; returns (length, hash).
pub(crate) async fn read_all(stream: &mut Stream) -> Result<(u64, u64), dwcp_core::StreamError> {
    let mut h = DefaultHasher::new();
    let mut n = 0u64;
    while let Some(b) = stream.recv().await? {
        h.write(&b);
        n += b.len() as u64;
    }
    Ok((n, h.finish()))
}

pub(crate) fn opts(route: &str) -> StreamOptions {
    StreamOptions {
        route: Bytes::from(route.to_string()),
        ..StreamOptions::default()
    }
}

/// An interactive stream routed `echo` on `c`.
pub(crate) fn open_echo(c: &Connection) -> Stream {
    c.open_stream(StreamOptions {
        interactive: true,
        ..opts("echo")
    })
    .expect("open")
}

/// A connection through the emulated link to a server that echoes streams
/// routed `echo` and drains the others.
pub(crate) struct EchoPath {
    pub(crate) wan: dwcp_wanem::udp::Relay,
    pub(crate) client: Connection,
    pub(crate) server: Connection,
    _endpoints: (Endpoint, Endpoint),
}

/// `client_ep` connected through a UDP relay (`forward` and `back`) to
/// `server_ep`, whose streams routed `echo` are echoed and others drained.
pub(crate) async fn echo_through_relay(
    server_ep: Endpoint,
    client_ep: Endpoint,
    forward: dwcp_wanem::LinkProfile,
    back: dwcp_wanem::LinkProfile,
) -> EchoPath {
    let wan = dwcp_wanem::udp::Relay::start(
        "127.0.0.1:0".parse().expect("addr"),
        server_ep.local_addr(),
        forward,
        back,
    )
    .await
    .expect("relay");
    let (c, s) = tokio::join!(
        client_ep.connect(wan.local_addr(), SERVER),
        server_ep.accept()
    );
    let (c, s) = (c.expect("connect"), s.expect("accept"));
    let server = s.clone();
    serve_echo(s);
    EchoPath {
        wan,
        client: c,
        server,
        _endpoints: (client_ep, server_ep),
    }
}

/// Serves `server`'s streams: those routed `echo` are echoed, the others
/// drained.
pub(crate) fn serve_echo(server: Connection) {
    tokio::spawn(async move {
        while let Some(mut st) = server.accept_stream().await {
            tokio::spawn(async move {
                if &st.route()[..] == b"echo" {
                    while let Ok(Some(m)) = st.recv().await {
                        if st.send(m).await.is_err() {
                            break;
                        }
                    }
                } else {
                    while let Ok(Some(_)) = st.recv().await {}
                }
            });
        }
    });
}

/// `streams` uncompressed bulk streams (`bulk0`, `bulk1`...) on `c`, each
/// sending chunks of `chunk` bytes as fast as it can until `until`; each
/// task returns the bytes it sent.
pub(crate) fn spawn_bulk(
    c: &Connection,
    streams: usize,
    chunk: usize,
    until: std::time::Instant,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..streams)
        .map(|i| {
            let mut st = c
                .open_stream(StreamOptions {
                    compression: dwcp_core::net::Compression::Off,
                    ..opts(&format!("bulk{i}"))
                })
                .expect("open");
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![i as u8; chunk]);
                let mut sent = 0u64;
                while std::time::Instant::now() < until {
                    if st.send(chunk.clone()).await.is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                }
                sent
            })
        })
        .collect()
}

/// Sends a 1 KiB message (its bytes depend on `i`, so an echo cannot be an
/// earlier one's) and waits for it to come back whole.
pub(crate) async fn echo_once(echo: &mut Stream, i: u8) -> std::time::Duration {
    let msg = Bytes::from((0..1024u32).map(|b| (b as u8) ^ i).collect::<Vec<u8>>());
    let t0 = std::time::Instant::now();
    echo.send(msg.clone()).await.expect("send");
    let got = read_exactly(echo, msg.len()).await;
    assert!(got == msg[..], "echo {i} differs from its request");
    t0.elapsed()
}

/// Reads `n` bytes of echo (each read within 10 s).
pub(crate) async fn read_exactly(st: &mut Stream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), st.recv())
            .await
            .expect("an echo waited 10 s");
        got.extend_from_slice(&r.expect("recv").expect("echo stream ended"));
    }
    got
}
