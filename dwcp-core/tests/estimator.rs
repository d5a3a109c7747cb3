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
