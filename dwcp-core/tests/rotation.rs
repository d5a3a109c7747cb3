//! TLS rotation without restart: `Endpoint::set_tls` changes the identity
//! and trusted CA for new connections while established ones go on.
mod common;

use std::time::Duration;

use common::*;
use dwcp_core::net::{Connection, Endpoint, EndpointConfig, Transport};
use dwcp_core::tls::DevCa;

async fn round_trip(client: &Connection, server: &Connection, seed: u64) {
    let mut s = client.open_stream(opts("x")).expect("open");
    let sent = send_content(&mut s, seed, 64 * 1024).await;
    let mut r = tokio::time::timeout(Duration::from_secs(10), server.accept_stream())
        .await
        .expect("accept in time")
        .expect("stream");
    assert_eq!(read_all(&mut r).await.expect("read"), (64 * 1024, sent));
}

async fn rotate(transport: Transport) {
    let old = DevCa::new().expect("ca");
    let new = DevCa::new().expect("ca");
    let server = Endpoint::bind(
        loopback(),
        EndpointConfig::new(old.config_for(SERVER).expect("cert"), transport),
    )
    .await
    .expect("bind");
    let client = Endpoint::client(EndpointConfig::new(
        old.config_for(CLIENT).expect("cert"),
        transport,
    ))
    .await
    .expect("client");
    let addr = server.local_addr();
    let (c1, s1) = tokio::join!(client.connect(addr, SERVER), server.accept());
    let (c1, s1) = (c1.expect("connect"), s1.expect("accept"));

    // Both sides move to a new CA and new leaves.
    server
        .set_tls(new.config_for(SERVER).expect("cert"))
        .expect("server rotates");
    client
        .set_tls(new.config_for(CLIENT).expect("cert"))
        .expect("client rotates");

    let (c2, s2) = tokio::join!(client.connect(addr, SERVER), server.accept());
    let (c2, s2) = (c2.expect("connect with the new CA"), s2.expect("accept"));
    round_trip(&c1, &s1, 1).await;
    round_trip(&c2, &s2, 2).await;

    // A client still on the old CA is refused now.
    let stale = Endpoint::client(EndpointConfig::new(
        old.config_for(CLIENT).expect("cert"),
        transport,
    ))
    .await
    .expect("client");
    let r = stale.connect(addr, SERVER).await;
    assert!(r.is_err() || r.as_ref().is_ok_and(|c| c.is_closed()));
    assert!(
        !c1.is_closed(),
        "the connection made before the rotation is still up"
    );
    round_trip(&c1, &s1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_rotation_keeps_established_connections() {
    rotate(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_rotation_keeps_established_connections() {
    rotate(Transport::Tcp).await;
}
