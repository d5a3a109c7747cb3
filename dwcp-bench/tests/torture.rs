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
