//! Link estimation on the simulated link (deterministic).

use std::time::Duration;

use dwcp_core::estimator::LinkMode;
use dwcp_core::sim::{run_traffic, LinkConfig, Pair, Traffic};
use dwcp_core::{Config, OpenParams};

fn bulk_pair(mbit: u64, one_way_ms: u64) -> (Pair, Traffic, Traffic) {
    let link = LinkConfig {
        bandwidth_bps: mbit * 1_000_000,
        one_way_delay: Duration::from_millis(one_way_ms),
        ..LinkConfig::default()
    };
    let pair = Pair::new(Config::default(), Config::default(), link);
    let mut client = Traffic::new();
    client.add_stream(OpenParams::default(), 1 << 40, 1);
    (pair, client, Traffic::new())
}

fn bw_mbit(p: &Pair) -> f64 {
    p.client.conn.link_estimate().bottleneck_bw().unwrap_or(0.0) * 8.0 / 1e6
}

/// The server's estimate of the direction it receives, in Mbit/s.
fn rx_mbit(p: &Pair) -> f64 {
    p.server
        .conn
        .receive_estimate()
        .bottleneck_bw()
        .unwrap_or(0.0)
        * 8.0
        / 1e6
}

/// A pair whose client has sent one 40 MiB stream to its end, with fresh
/// traffic generators for what follows.
fn after_a_bulk_stream(mbit: u64, one_way_ms: u64) -> (Pair, Traffic, Traffic) {
    let (mut pair, _, _) = bulk_pair(mbit, one_way_ms);
    let mut c = Traffic::new();
    let mut s = Traffic::new();
    c.add_stream(OpenParams::default(), 40 << 20, 1);
    let done = run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_secs(10),
        |_, _, s| s.finished_count() == 1,
    );
    assert!(done, "bulk stream did not finish");
    (pair, c, s)
}

#[test]
fn converges_to_100_mbit_within_5_s_and_follows_steps() {
    let (mut pair, mut c, mut s) = bulk_pair(100, 25);
    // Converged within 10% at some point in the first 5 s, and stays there.
    let ok = run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_secs(5),
        |p, _, _| (bw_mbit(p) / 100.0 - 1.0).abs() <= 0.10,
    );
    let t = pair.elapsed();
    println!("estimate {:.1} Mbit/s after {:?}", bw_mbit(&pair), t);
    assert!(ok, "estimate {:.1} Mbit/s after 5 s", bw_mbit(&pair));
    run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_secs(2),
        |_, _, _| false,
    );
    assert!(
        (bw_mbit(&pair) / 100.0 - 1.0).abs() <= 0.10,
        "{}",
        bw_mbit(&pair)
    );

    // Step down to 20 Mbit/s, and back up.
    for mbit in [20u64, 100] {
        pair.client.link.set_bandwidth(mbit * 1_000_000);
        let start = pair.elapsed();
        let ok = run_traffic(
            &mut pair,
            &mut c,
            &mut s,
            Duration::from_secs(6),
            |p, _, _| (bw_mbit(p) / mbit as f64 - 1.0).abs() <= 0.10,
        );
        println!(
            "followed the step to {mbit} Mbit/s in {:?}",
            pair.elapsed() - start
        );
        assert!(
            ok,
            "estimate {:.1} Mbit/s after the step to {mbit}",
            bw_mbit(&pair)
        );
    }
    let est = pair.client.conn.link_estimate();
    let min = est.min_rtt().expect("rtt");
    assert!(
        min >= Duration::from_millis(50) && min < Duration::from_millis(60),
        "{min:?}"
    );
    assert_eq!(est.mode(), LinkMode::Wan);
}

#[test]
fn short_rtt_link_is_datacenter_mode() {
    let (mut pair, mut c, mut s) = bulk_pair(1000, 0);
    run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_secs(2),
        |_, _, _| false,
    );
    assert_eq!(
        pair.client.conn.link_estimate().mode(),
        LinkMode::Datacenter
    );
}

#[test]
fn new_streams_start_with_a_window_sized_to_the_bdp() {
    let (mut pair, mut c, mut s) = bulk_pair(100, 50);
    run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_secs(4),
        |_, _, _| false,
    );
    let rx = pair.server.conn.receive_estimate();
    let bdp = rx.bdp().expect("bdp");
    assert!(
        bdp > 1_000_000,
        "BDP of 100 Mbit/s x 100 ms is 1.25 MB: {bdp}"
    );
    assert_eq!(rx.mode(), LinkMode::Wan);
    c.add_stream(OpenParams::default(), 1 << 20, 2);
    run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_millis(200),
        |_, _, s| s.received.contains_key(&3),
    );
    let w = pair.server.conn.stream_window(3).expect("stream 3");
    assert!(w >= 2 * 1_000_000, "window {w} for BDP {bdp}");
}

/// A sender held down by its compressor (a 64 KiB chunk every 20 ms, 3.3 MB/s
/// on a 100 Mbit/s link) and then idle does not teach the estimator that the
/// link is that slow: the estimate stays at the link rate, and becomes
/// unknown after a long idle, never the keepalive rate.
#[test]
fn compressor_limited_then_idle_keeps_the_capacity() {
    let (mut pair, mut c, mut s) = after_a_bulk_stream(100, 10);
    assert!(
        (bw_mbit(&pair) / 100.0 - 1.0).abs() <= 0.10,
        "{}",
        bw_mbit(&pair)
    );
    let id = pair
        .client
        .conn
        .open_stream(OpenParams::default())
        .expect("open");
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let mut next_write = pair.now;
    let end = pair.now + Duration::from_secs(6);
    let mut written = 0u64;
    while pair.now < end {
        pair.receive();
        let now = pair.now;
        if now >= next_write {
            if matches!(pair.client.conn.send(id, chunk.clone()), Ok(n) if n == chunk.len()) {
                written += chunk.len() as u64;
            }
            next_write += Duration::from_millis(20);
        }
        c.poll(&mut pair.client.conn, now);
        s.poll(&mut pair.server.conn, now);
        pair.transmit();
        let t = pair.next_time().map_or(next_write, |t| t.min(next_write));
        pair.now = pair.now.max(t);
    }
    assert!(written > 10 << 20, "paced sender wrote {written} bytes");
    assert!(
        (bw_mbit(&pair) / 100.0 - 1.0).abs() <= 0.10,
        "after compressor-limited sending: {:.1} Mbit/s",
        bw_mbit(&pair)
    );
    // Idle (keepalives only) for 5 s: unchanged; past STALE_AFTER: unknown.
    run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_secs(5),
        |_, _, _| false,
    );
    assert!(
        (bw_mbit(&pair) / 100.0 - 1.0).abs() <= 0.10,
        "after 5 s idle: {:.1} Mbit/s",
        bw_mbit(&pair)
    );
    run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        dwcp_core::estimator::STALE_AFTER,
        |_, _, _| false,
    );
    assert_eq!(pair.client.conn.link_estimate().bottleneck_bw(), None);
}

/// A pause between transfers (keepalives only, every second) does not
/// make the link the keepalives' trickle at the receiver: a stream opened
/// after it still starts with a window of twice the BDP, as one opened
/// during the transfer does. (Before, the estimate read 0 after the pause
/// and the stream started at the window floor.)
#[test]
fn a_stream_opened_after_a_pause_starts_with_a_window_sized_to_the_bdp() {
    let (mut pair, mut c, mut s) = after_a_bulk_stream(100, 50);
    let bdp = pair.server.conn.receive_estimate().bdp().expect("bdp");
    assert!(
        bdp > 1_000_000,
        "BDP of 100 Mbit/s x 100 ms is 1.25 MB: {bdp}"
    );
    run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_secs(5),
        |_, _, _| false,
    );
    assert!(
        (rx_mbit(&pair) / 100.0 - 1.0).abs() <= 0.10,
        "receive estimate after the pause: {:.1} Mbit/s",
        rx_mbit(&pair)
    );
    c.add_stream(OpenParams::default(), 1 << 20, 2);
    let opened = run_traffic(
        &mut pair,
        &mut c,
        &mut s,
        Duration::from_millis(500),
        |_, _, s| s.received.len() == 2,
    );
    assert!(opened, "the second stream did not arrive");
    let id = *s.received.keys().max().expect("two streams");
    let w = pair.server.conn.stream_window(id).expect("second stream");
    // Above the floor (2 MiB on this path): sized by the estimate.
    assert!(
        w >= 2 * bdp * 9 / 10,
        "window {w} after the pause, BDP {bdp} before it"
    );
}
