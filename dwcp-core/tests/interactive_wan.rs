//! An interactive stream beside saturating bulk streams over a rate-limited,
//! far link (the dwcp-wanem UDP relay), on the real QUIC transport: every
//! echo completes, and none waits anywhere near the bounds below.
//!
//! The bounds are correctness bounds, far above the expected times (one
//! round trip plus a few packet times): a message stuck behind bulk data in
//! a transport buffer waits round trips, a starved one seconds. Latency
//! figures are measured by `dwcp-daemon demo` and `dwcp-bench`, not here.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use dwcp_core::net::{Compression, Endpoint, EndpointConfig, StreamOptions, Transport};
use dwcp_core::tls::DevCa;

use common::{echo_once, echo_through_relay, open_echo, opts, read_exactly, spawn_bulk, CLIENT};

async fn server_endpoint(ca: &DevCa) -> Endpoint {
    bind(EndpointConfig::new(
        ca.config_for(common::SERVER).expect("cert"),
        Transport::Quic,
    ))
    .await
}

async fn bind(cfg: EndpointConfig) -> Endpoint {
    Endpoint::bind(common::loopback(), cfg).await.expect("bind")
}

/// One echo of 1 KiB every 50 ms for 6 s beside four streams that keep a
/// 20 Mbit/s, 60 ms link full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_echoes_beside_saturating_bulk_all_arrive_promptly() {
    let rtt = Duration::from_millis(60);
    let ca = DevCa::new().expect("ca");
    // As the daemon configures a known link rate: frames get 92 % of it, so
    // the bottleneck's queue stays short and what is measured is DWCP's own
    // queueing.
    let mut cfg = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), Transport::Quic);
    cfg.protocol.rate_limit = Some(20_000_000 / 8 * 92 / 100);
    cfg.link_rate_bps = Some(20_000_000);
    let mut profile = dwcp_wanem::LinkProfile::wan(20, rtt.as_millis() as u64, 0.0);
    profile.seed = 7;
    let back = dwcp_wanem::LinkProfile {
        seed: 8,
        ..profile.clone()
    };
    let path = echo_through_relay(server_endpoint(&ca).await, bind(cfg).await, profile, back).await;
    let c = path.client.clone();
    let until = Instant::now() + Duration::from_secs(7);
    let bulk = spawn_bulk(&c, 4, 64 * 1024, until);
    // Let bulk fill the path and quinn's send window first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut echo = open_echo(&c);
    let mut rtts = Vec::new();
    for i in 0..120u8 {
        rtts.push(echo_once(&mut echo, i).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut carried = 0;
    for b in bulk {
        carried += b.await.expect("bulk task");
    }
    rtts.sort();
    let (p50, p90, max) = (rtts[60], rtts[108], rtts[119]);
    eprintln!("echo p50 {p50:?} p90 {p90:?} max {max:?}; bulk carried {carried} bytes");
    assert!(
        carried > 4 << 20,
        "bulk carried only {carried} bytes: the link was not kept full"
    );
    assert!(max < Duration::from_secs(2), "an echo took {max:?}");
    // Nine in ten echoes cross without waiting for bulk. A write that waits
    // for quinn's send window behind bulk writers costs round trips.
    assert!(
        p90 < rtt * 4,
        "p90 {p90:?}: echoes wait behind bulk (link RTT {rtt:?})"
    );
}

/// Echoes from the moment four bulk streams start on a fresh connection
/// (the demo's start) over the demo's link: 100 Mbit/s, 50 ms, 0.5 % loss,
/// 1 ms of jitter. The bulk streams fill quinn's send window at once, while
/// the congestion window is its first (ten packets then, 32 since); acknowledged bytes came back to
/// the window in slices of tens of bytes, and the first echoes waited
/// 0.2–0.7 s for 1 KiB of it (the demo, 2026-12-07: 180–707 ms in twelve
/// runs; this test, on that code, 232–467 ms in four of six runs). Now an
/// urgent write waiting for room widens the window (53–108 ms here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_echoes_from_the_start_of_bulk_on_a_fresh_connection_are_prompt() {
    let rtt = Duration::from_millis(50);
    let ca = DevCa::new().expect("ca");
    let mut cfg = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), Transport::Quic);
    cfg.link_rate_bps = Some(100_000_000);
    let mut profile = dwcp_wanem::LinkProfile::wan(100, rtt.as_millis() as u64, 0.5);
    profile.jitter = Duration::from_millis(1);
    profile.seed = 1;
    let back = dwcp_wanem::LinkProfile {
        seed: 2,
        ..profile.clone()
    };
    let path = echo_through_relay(server_endpoint(&ca).await, bind(cfg).await, profile, back).await;
    let c = path.client.clone();
    let until = Instant::now() + Duration::from_secs(2);
    // Chunks of 256 KiB, as the sidecar hands them over.
    let bulk = spawn_bulk(&c, 4, 256 * 1024, until);
    let mut echo = open_echo(&c);
    let mut rtts = Vec::new();
    for i in 0..10u8 {
        rtts.push(echo_once(&mut echo, i).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for b in bulk {
        b.await.expect("bulk task");
    }
    eprintln!("the first echoes beside starting bulk: {rtts:?}");
    let max = rtts.iter().max().copied().unwrap_or_default();
    assert!(
        max < rtt * 4,
        "an echo took {max:?} on a {rtt:?} path: it waited for room behind bulk"
    );
}

/// Echoes written once bulk streams have taken a fresh connection's first
/// congestion window, on a 200 ms path: quinn holds an echo until that
/// window is acknowledged (a round trip), then it crosses (another), about
/// 380 ms in all. The controller lets an urgent write's bytes past a full
/// window, so an echo takes one round trip. The bound is one and a half.
/// Two echoes, on two streams, 30 ms apart: the second is written with the
/// first one's packets past the window already, before any
/// acknowledgement. The test checks that the window was spent when the
/// echoes were due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_echo_after_bulk_took_the_first_window_is_not_held_a_round_trip() {
    let rtt = Duration::from_millis(200);
    let ca = DevCa::new().expect("ca");
    let mut cfg = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), Transport::Quic);
    cfg.link_rate_bps = Some(100_000_000);
    let mut profile = dwcp_wanem::LinkProfile::wan(100, rtt.as_millis() as u64, 0.0);
    profile.seed = 3;
    let back = dwcp_wanem::LinkProfile {
        seed: 4,
        ..profile.clone()
    };
    let path = echo_through_relay(server_endpoint(&ca).await, bind(cfg).await, profile, back).await;
    let c = path.client.clone();
    let before = c.stats().transport.sent_packets;
    let until = Instant::now() + Duration::from_millis(1500);
    let bulk = spawn_bulk(&c, 4, 256 * 1024, until);
    // The first window goes within tens of milliseconds of the bulk writes
    // (the pacer spreads 32 packets over most of a round trip), and no
    // acknowledgement can come before 200 ms. The echoes are
    // written once it is spent (the test's premise, checked).
    let t0 = Instant::now();
    loop {
        let t = c.stats().transport;
        let spent = (t.sent_packets - before) * u64::from(t.mtu.unwrap_or(1200));
        if spent + 2 * 1500 >= t.cwnd {
            eprintln!(
                "{:?} after the bulk writes, {spent} bytes of a {} byte window were sent",
                t0.elapsed(),
                t.cwnd
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(150),
            "bulk had sent {spent} bytes of a {} byte window after 150 ms",
            t.cwnd
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let echoes: Vec<_> = [5u64, 35]
        .into_iter()
        .map(|at| {
            let c = c.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(at)).await;
                let mut echo = open_echo(&c);
                echo_once(&mut echo, at as u8).await
            })
        })
        .collect();
    let mut took = Vec::new();
    for e in echoes {
        took.push(e.await.expect("echo task"));
    }
    for b in bulk {
        b.await.expect("bulk task");
    }
    eprintln!("the echoes behind the first window took {took:?}");
    for t in took {
        assert!(
            t < rtt * 3 / 2,
            "an echo took {t:?} on a {rtt:?} path: it waited for the first window's acknowledgements"
        );
    }
}

/// On a far path a lost packet costs an interactive message at least one
/// round trip of loss recovery (on a quiet connection, quinn's probe
/// timeout, then the retransmission's crossing). DWCP sends a copy of each
/// small interactive write as a QUIC datagram a moment after the stream
/// data, so the message gets through without waiting for recovery.
///
/// One chosen packet is dropped in each direction on a 200 ms path: the
/// request's, then the answer's. With the copy an echo takes one round trip
/// and a few milliseconds; without it about 430 ms. The bound is 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_interactive_message_survives_a_lost_packet_without_waiting_for_recovery() {
    let rtt = Duration::from_millis(200);
    let ca = DevCa::new().expect("ca");
    let cfg = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), Transport::Quic);
    let profile = dwcp_wanem::LinkProfile::wan(1000, rtt.as_millis() as u64, 0.0);
    let path = echo_through_relay(
        server_endpoint(&ca).await,
        bind(cfg).await,
        profile.clone(),
        profile,
    )
    .await;
    let (wan, c, server) = (&path.wan, path.client.clone(), path.server.clone());
    let mut echo = c
        .open_stream(StreamOptions {
            interactive: true,
            compression: Compression::Off,
            ..opts("echo")
        })
        .expect("open");
    // The path's RTT is learnt, both QUIC stream halves are open.
    for i in 0..5 {
        echo_once(&mut echo, i).await;
    }
    for (i, forward) in [(10, true), (11, false)] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The next packet carrying the message (acknowledgements and PINGs
        // are far smaller) is lost.
        wan.drop_next(forward, 1, 900);
        let took = echo_once(&mut echo, i).await;
        let which = if forward { "request" } else { "answer" };
        eprintln!("echo with its {which}'s packet lost: {took:?}");
        assert!(
            took < rtt + Duration::from_millis(100),
            "an echo whose {which} lost a packet took {took:?} on a {rtt:?} path: it waited for loss recovery"
        );
    }
    let (fwd, back) = wan.stats();
    assert_eq!(
        (fwd.lost, back.lost),
        (1, 1),
        "the chosen packets were dropped"
    );
    let used = c.stats().transport.copies_used + server.stats().transport.copies_used;
    assert!(
        used >= 2,
        "copies delivered {used} messages first, expected 2"
    );
}

/// Copies and the stream's own bytes arrive in any order, and either may be
/// lost: every byte must still come out once, in order. Four interactive
/// streams echo batches of writes of 1 to 3,000 bytes (some copied, some
/// too large to be) over a 40 ms path with 5 % loss, jitter and reordering
/// each way; every echo is compared byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_interactive_echoes_stay_exact_with_copies_under_loss_and_reordering() {
    let ca = DevCa::new().expect("ca");
    let cfg = EndpointConfig::new(ca.config_for(CLIENT).expect("cert"), Transport::Quic);
    let mut profile = dwcp_wanem::LinkProfile::wan(100, 40, 5.0);
    profile.jitter = Duration::from_millis(2);
    profile.reorder = 0.05;
    profile.seed = 21;
    let back = dwcp_wanem::LinkProfile {
        seed: 22,
        ..profile.clone()
    };
    let path = echo_through_relay(server_endpoint(&ca).await, bind(cfg).await, profile, back).await;
    let mut tasks = Vec::new();
    for k in 0..4u64 {
        let mut st = path
            .client
            .open_stream(StreamOptions {
                interactive: true,
                compression: Compression::Off,
                ..opts("echo")
            })
            .expect("open");
        tasks.push(tokio::spawn(async move {
            let mut rng = dwcp_core::sim::Rng::new(100 + k);
            let mut bytes = 0usize;
            for round in 0..60 {
                let mut sent = Vec::new();
                for _ in 0..=rng.below(3) {
                    let len = 1 + rng.below(3000) as usize;
                    let msg: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                    sent.extend_from_slice(&msg);
                    st.send(Bytes::from(msg)).await.expect("send");
                }
                let got = read_exactly(&mut st, sent.len()).await;
                assert!(got == sent, "stream {k}, round {round}: the echo differs");
                bytes += sent.len();
            }
            st.finish().expect("finish");
            bytes
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("stream task");
    }
    let (fwd, back) = path.wan.stats();
    let used =
        path.client.stats().transport.copies_used + path.server.stats().transport.copies_used;
    eprintln!(
        "{total} bytes echoed exactly; relay lost {} + {} packets; {used} copies arrived first",
        fwd.lost, back.lost
    );
    assert!(fwd.lost > 0 && back.lost > 0, "the relay lost nothing");
    assert!(
        used > 0,
        "no copy arrived before its stream data: copies were not exercised"
    );
}
