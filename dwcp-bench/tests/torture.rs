//! The small torture configuration: both transports, two seeds, 150 streams
//! per side, sizes up to 1 MiB, a quarter disrupted. Must show no truncation,
//! corruption, false clean end, wrong reset code, hang, or memory excess.

use std::time::Duration;

use dwcp_bench::torture::{run, TortureConfig, TortureTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_small_both_transports_two_seeds() {
    let mut failures = Vec::new();
    let mut directions = 0;
    for transport in [TortureTransport::Quic, TortureTransport::Tcp] {
        for seed in [1u64, 2] {
            let mut cfg = TortureConfig::new(transport, seed, 150, 1 << 20);
            cfg.deadline = Duration::from_secs(10);
            let r = run(cfg).await;
            println!("{r}");
            directions += r.directions;
            if r.failed() {
                failures.push(format!(
                    "{transport} seed {seed}: {}",
                    r.failures().join(", ")
                ));
            }
        }
    }
    assert_eq!(directions, 4 * 2 * 150 * 2, "every stream direction judged");
    assert!(
        failures.is_empty(),
        "torture failures:\n{}",
        failures.join("\n")
    );
}

/// The same torture over QUIC through an emulated WAN each way: random loss
/// on a one-BDP queue, and a queue far under the BDP that the congestion
/// controller overflows (bursts of loss, the loss cap). Losses, timeouts and
/// retransmissions must lose nothing and end every stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_quic_through_lossy_and_shallow_links() {
    let lossy = dwcp_wanem::LinkProfile {
        seed: 11,
        ..dwcp_wanem::LinkProfile::wan(50, 40, 2.0)
    };
    let shallow = dwcp_wanem::LinkProfile {
        seed: 12,
        queue_bytes: 24 * 1024,
        ..dwcp_wanem::LinkProfile::wan(50, 40, 0.5)
    };
    let mut failures = Vec::new();
    let mut directions = 0;
    // Each link with the loss it must really have made: hundreds of packets
    // lost at random on the lossy one, the shallow queue overflowing.
    type Made = fn(&dwcp_bench::torture::TortureReport) -> u64;
    let links: [(&str, _, Made); 2] = [
        ("lossy", lossy, |r| r.link_lost),
        ("shallow", shallow, |r| r.link_queue_drops),
    ];
    for (name, link, made) in links {
        let mut cfg = TortureConfig::new(TortureTransport::Quic, 3, 100, 1 << 20);
        cfg.deadline = Duration::from_secs(60);
        cfg.link = Some(link);
        let r = run(cfg).await;
        println!("{r}");
        assert!(!r.link.is_empty(), "the report names the link");
        let lost = made(&r);
        assert!(lost > 100, "{name}: the link lost {lost}: {r}");
        directions += r.directions;
        if r.failed() {
            failures.push(format!("{name}: {}", r.failures().join(", ")));
        }
    }
    assert_eq!(directions, 2 * 100 * 2 * 2, "every stream direction judged");
    assert!(
        failures.is_empty(),
        "torture failures:\n{}",
        failures.join("\n")
    );
}

/// Through a link that loses every packet the handshake never finishes:
/// the run still ends at its deadline, with the connection counted as a
/// hang, instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_through_a_dead_link_ends_at_its_deadline() {
    let mut cfg = TortureConfig::new(TortureTransport::Quic, 1, 5, 1 << 20);
    cfg.deadline = Duration::from_secs(2);
    cfg.link = Some(dwcp_wanem::LinkProfile::wan(50, 40, 100.0));
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), run(cfg))
        .await
        .expect("the run ends by itself");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.hangs, 1, "{r}");
    assert_eq!(r.failures(), vec!["hangs=1".to_string()], "{r}");
}
