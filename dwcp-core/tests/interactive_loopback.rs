//! An interactive stream beside bulk streams that send as fast as they can,
//! on loopback with the library's defaults: the echo must not wait behind a
//! standing queue of bulk data.
//!
//! Found by `dwcp-bench latency`: over QUIC with CUBIC (then the library's
//! default) the echo's median was 52 ms, where it was 2–3 ms before the
//! initial connection window grew from 1 to 16 MiB. A loss-based controller
//! on a path that does not drop grows its window without end (583 MB seen),
//! so quinn's send window, which follows it, and DWCP's flow-control
//! windows are all that bound the bulk data queued ahead of an interactive
//! write; with 16 MiB of them the receiver, short of CPU, fell behind (quinn's
//! smoothed RTT 18 ms instead of 0.4 ms, 10,692 packets dropped at its
//! socket). DWCP's controller, now the default, keeps one BDP and a few
//! milliseconds of its rate in flight whatever the windows allow.
//!
//! Eight bulk streams, as in the benchmark. With CUBIC this test's median
//! echo was 13.7–26.5 ms in four runs, with DWCP's controller 3.3–3.4 ms. The
//! bound (10 ms) is three times the latter, on two cores saturated by bulk
//! TLS.

mod common;

use std::time::{Duration, Instant};

use dwcp_core::net::Transport;

use common::{connected, echo_once, open_echo, serve_echo, spawn_bulk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_echo_beside_uncapped_bulk_does_not_wait_behind_a_standing_queue() {
    let p50 = echo_beside_bulk(Transport::Quic).await;
    assert!(
        p50 < Duration::from_millis(10),
        "median echo {p50:?} beside bulk on loopback: it waits behind queued bulk data"
    );
}

/// Over TCP lanes the echo has lane 0 to itself, but the reader of each
/// bulk lane, with the socket always full, handed batch after batch to the
/// core without returning to the runtime until tokio's budget ran out (128
/// reads, megabytes of TLS records), while lane 0's reader waited for a
/// worker: a median echo of 3.2–3.8 ms in `dwcp-bench latency`, 0.32–0.36
/// ms once bulk lane readers yield after each batch. The bound (1.5 ms) is
/// four times the latter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_lanes_echo_beside_uncapped_bulk_gets_the_cpu_between_bulk_batches() {
    let p50 = echo_beside_bulk(Transport::Tcp).await;
    assert!(
        p50 < Duration::from_micros(1500),
        "median echo {p50:?} beside bulk on loopback: lane 0's reader waits for bulk lane readers"
    );
}

/// The median of 60 echoes of 1 KiB, 2 ms apart, beside eight streams
/// sending as fast as they can; checks that bulk flowed and no echo took
/// anywhere near 2 s.
async fn echo_beside_bulk(transport: Transport) -> Duration {
    let (_s, _c, c, s) = connected(transport).await;
    serve_echo(s);
    let until = Instant::now() + Duration::from_secs(4);
    let bulk = spawn_bulk(&c, 8, 256 * 1024, until);
    // Let bulk fill whatever the windows and the controller allow.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut echo = open_echo(&c);
    let mut rtts = Vec::new();
    let mut path_rtts = Vec::new();
    for i in 0..60u8 {
        rtts.push(echo_once(&mut echo, i).await);
        path_rtts.extend(c.stats().transport.rtt);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stats = c.stats().transport;
    let mut carried = 0;
    for b in bulk {
        carried += b.await.expect("bulk task");
    }
    rtts.sort();
    path_rtts.sort();
    let (p50, max) = (rtts[30], rtts[59]);
    let path_rtt = path_rtts.get(path_rtts.len() / 2).copied();
    eprintln!(
        "{:?}: echo p50 {p50:?} max {max:?}; bulk carried {carried} bytes; transport RTT median {path_rtt:?}, {} of {} packets lost",
        stats.kind, stats.lost_packets, stats.sent_packets
    );
    assert!(
        carried > 64 << 20,
        "bulk carried only {carried} bytes: it did not saturate anything"
    );
    assert!(max < Duration::from_secs(2), "an echo took {max:?}");
    p50
}
