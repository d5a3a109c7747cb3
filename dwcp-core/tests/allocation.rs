//! Bandwidth allocation on the simulated link (deterministic).

use std::time::Duration;

use dwcp_core::scheduler::ClassConfig;
use dwcp_core::sim::{run_traffic, LinkConfig, Pair, Traffic};
use dwcp_core::{Config, OpenParams, StreamId};

const MBIT: f64 = 1e6 / 8.0; // bytes per second in one Mbit/s

fn link(mbit: u64) -> LinkConfig {
    LinkConfig {
        bandwidth_bps: mbit * 1_000_000,
        one_way_delay: Duration::from_millis(5),
        ..LinkConfig::default()
    }
}

/// Opens `streams` (class, weight) from the client, runs a warm-up then a
/// measured period, and returns bytes received per stream and the period.
fn measure(
    cfg: Config,
    mbit: u64,
    streams: &[(u8, u16)],
    warm: u64,
    secs: u64,
) -> (Vec<u64>, Duration) {
    let mut pair = Pair::new(cfg, Config::default(), link(mbit));
    let mut client = Traffic::new();
    let mut server = Traffic::new();
    for (i, (class, weight)) in streams.iter().enumerate() {
        client.add_stream(
            OpenParams {
                class: *class,
                weight: *weight,
                ..OpenParams::default()
            },
            1 << 40,
            i as u64,
        );
    }
    run_traffic(
        &mut pair,
        &mut client,
        &mut server,
        Duration::from_secs(warm),
        |_, _, _| false,
    );
    let ids: Vec<StreamId> = client.opened.clone();
    let before: Vec<u64> = ids
        .iter()
        .map(|id| server.received.get(id).map_or(0, |r| r.len))
        .collect();
    let period = Duration::from_secs(secs);
    run_traffic(&mut pair, &mut client, &mut server, period, |_, _, _| false);
    let after: Vec<u64> = ids
        .iter()
        .map(|id| server.received.get(id).map_or(0, |r| r.len))
        .collect();
    (
        after.iter().zip(before).map(|(a, b)| a - b).collect(),
        period,
    )
}

fn rate(bytes: u64, period: Duration) -> f64 {
    bytes as f64 / period.as_secs_f64()
}

#[test]
fn equal_weights_are_fair_over_100_streams() {
    let streams = vec![(0u8, 1u16); 100];
    let (got, _) = measure(Config::default(), 100, &streams, 2, 10);
    let sum: f64 = got.iter().map(|x| *x as f64).sum();
    let sq: f64 = got.iter().map(|x| (*x as f64).powi(2)).sum();
    let jain = sum * sum / (got.len() as f64 * sq);
    println!("Jain's fairness index over 100 streams: {jain:.4}");
    assert!(jain >= 0.99, "{jain}");
}

#[test]
fn class_weights_1_2_4_share_within_5_percent() {
    let cfg = Config {
        classes: vec![
            ClassConfig {
                class: 1,
                weight: 1,
                min_rate: None,
                max_rate: None,
            },
            ClassConfig {
                class: 2,
                weight: 2,
                min_rate: None,
                max_rate: None,
            },
            ClassConfig {
                class: 3,
                weight: 4,
                min_rate: None,
                max_rate: None,
            },
        ],
        ..Config::default()
    };
    let (got, _) = measure(cfg, 100, &[(1, 1), (2, 1), (3, 1)], 2, 10);
    let total: u64 = got.iter().sum();
    for (i, want) in [1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0].iter().enumerate() {
        let share = got[i] as f64 / total as f64;
        println!(
            "class weight {}: share {share:.4} (configured {want:.4})",
            1 << i
        );
        assert!(
            (share / want - 1.0).abs() <= 0.05,
            "class {i}: {share} vs {want}"
        );
    }
}

#[test]
fn stream_weights_1_2_4_within_a_class() {
    let (got, _) = measure(Config::default(), 100, &[(0, 1), (0, 2), (0, 4)], 2, 10);
    let total: u64 = got.iter().sum();
    for (i, want) in [1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0].iter().enumerate() {
        let share = got[i] as f64 / total as f64;
        assert!(
            (share / want - 1.0).abs() <= 0.05,
            "stream {i}: {share} vs {want}"
        );
    }
}

#[test]
fn minimum_guarantee_is_honoured_under_contention() {
    let cfg = Config {
        classes: vec![
            ClassConfig {
                class: 1,
                weight: 1,
                min_rate: Some((30.0 * MBIT) as u64),
                max_rate: None,
            },
            ClassConfig {
                class: 2,
                weight: 9,
                min_rate: None,
                max_rate: None,
            },
        ],
        ..Config::default()
    };
    let (got, p) = measure(cfg, 100, &[(1, 1), (2, 1)], 2, 10);
    let low = rate(got[0], p) / MBIT;
    let high = rate(got[1], p) / MBIT;
    println!("guaranteed class {low:.1} Mbit/s (min 30), other class {high:.1} Mbit/s");
    assert!(low >= 30.0 * 0.97, "{low}");
    assert!(low + high > 95.0, "work-conserving: {low} + {high}");
}

#[test]
fn class_cap_holds_within_3_percent_and_spare_goes_to_others() {
    let cfg = Config {
        classes: vec![ClassConfig {
            class: 1,
            weight: 10,
            min_rate: None,
            max_rate: Some((20.0 * MBIT) as u64),
        }],
        ..Config::default()
    };
    let (got, p) = measure(cfg.clone(), 100, &[(1, 1)], 2, 10);
    let alone = rate(got[0], p) / MBIT;
    println!("capped class alone: {alone:.2} Mbit/s (cap 20)");
    assert!((alone / 20.0 - 1.0).abs() <= 0.03, "{alone}");
    let (got, p) = measure(cfg, 100, &[(1, 1), (2, 1)], 2, 10);
    let capped = rate(got[0], p) / MBIT;
    let other = rate(got[1], p) / MBIT;
    assert!((capped / 20.0 - 1.0).abs() <= 0.03, "{capped}");
    assert!(
        other > 75.0,
        "spare capacity goes to the uncapped class: {other}"
    );
}

#[test]
fn connection_cap_holds_within_3_percent() {
    let cfg = Config {
        rate_limit: Some((50.0 * MBIT) as u64),
        ..Config::default()
    };
    let (got, p) = measure(cfg, 100, &[(0, 1), (0, 1), (3, 1)], 2, 10);
    let total = rate(got.iter().sum(), p) / MBIT;
    println!("connection capped at 50 Mbit/s: {total:.2} Mbit/s");
    assert!((total / 50.0 - 1.0).abs() <= 0.03, "{total}");
}

#[test]
fn weight_1_stream_is_not_starved_among_weight_100_streams() {
    let mut streams = vec![(0u8, 100u16); 10];
    streams.push((0, 1));
    let (got, _) = measure(Config::default(), 100, &streams, 1, 30);
    let total: u64 = got.iter().sum();
    let share = got[10] as f64 / total as f64;
    let want = 1.0 / 1001.0;
    println!(
        "weight-1 stream: {} bytes, share {share:.6} (weighted share {want:.6})",
        got[10]
    );
    assert!(got[10] > 0);
    assert!(share >= want * 0.5, "{share}");
}

#[test]
fn allocation_report_shows_rates_per_class() {
    let cfg = Config {
        classes: vec![
            ClassConfig {
                class: 1,
                weight: 1,
                min_rate: None,
                max_rate: None,
            },
            ClassConfig {
                class: 2,
                weight: 3,
                min_rate: None,
                max_rate: Some((10.0 * MBIT) as u64),
            },
        ],
        ..Config::default()
    };
    let mut pair = Pair::new(cfg, Config::default(), link(100));
    let mut client = Traffic::new();
    let mut server = Traffic::new();
    client.add_stream(
        OpenParams {
            class: 1,
            ..OpenParams::default()
        },
        1 << 40,
        1,
    );
    client.add_stream(
        OpenParams {
            class: 2,
            ..OpenParams::default()
        },
        1 << 40,
        2,
    );
    run_traffic(
        &mut pair,
        &mut client,
        &mut server,
        Duration::from_secs(3),
        |_, _, _| false,
    );
    let report = pair.client.conn.allocation(Some(100.0 * MBIT));
    let c2 = report.iter().find(|r| r.class == 2).expect("class 2");
    let c1 = report.iter().find(|r| r.class == 1).expect("class 1");
    assert!(
        (c2.allocated / MBIT - 10.0).abs() < 0.01,
        "capped allocation {c2:?}"
    );
    assert!((c2.used / MBIT / 10.0 - 1.0).abs() < 0.1, "{c2:?}");
    assert!(c1.used / MBIT > 80.0, "{c1:?}");
    assert!(c1.utilization > 0.8 && c1.utilization <= 1.0, "{c1:?}");
}
