//! dwcp-bench: benchmark workloads shared by the criterion benches and the
//! `dwcp-bench` scenarios.

pub mod baselines;
pub mod compression;
pub mod compression_e2e;
pub mod cpu_use;
pub mod daemon;
pub mod flood;
pub mod gate;
pub mod latency;
pub mod scenarios;
pub mod sidecar;
pub mod torture;
pub mod wan_share;
pub mod wan_tun;

use std::net::SocketAddr;
use std::time::Duration;

use dwcp_core::sim::{run_traffic, LinkConfig, Pair, Traffic};
use dwcp_core::{Config, OpenParams};

/// Whether subject `name` passes an `--only` filter: no filter, or one of
/// its comma-separated parts (trimmed, ignoring case; empty parts match
/// nothing) is in the name.
pub fn only_matches(only: Option<&str>, name: &str) -> bool {
    only.is_none_or(|o| {
        let name = name.to_lowercase();
        o.split(',')
            .map(str::trim)
            .any(|o| !o.is_empty() && name.contains(&o.to_lowercase()))
    })
}

/// An ephemeral port on 127.0.0.1, for every socket a scenario binds.
pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Moves `streams` x `len` bytes client to server over an unlimited simulated
/// link; returns the bytes delivered. Measures the cost of the protocol core
/// itself (framing, flow control, scheduling), with no socket in the way.
pub fn core_transfer(streams: u32, len: u64) -> u64 {
    let link = LinkConfig {
        bandwidth_bps: 0,
        one_way_delay: Duration::from_micros(50),
        send_buffer: 1 << 20,
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(Config::default(), Config::default(), link);
    let mut client = Traffic::new();
    let mut server = Traffic::new();
    for i in 0..streams {
        client.add_stream(OpenParams::default(), len, i as u64);
    }
    run_traffic(
        &mut pair,
        &mut client,
        &mut server,
        Duration::from_secs(3600),
        |_, _, s| s.finished_count() as u32 == streams,
    );
    server.bytes_read
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_transfer_delivers_everything() {
        for (streams, len) in [(1u32, 64u64 << 10), (1, 1 << 20), (8, 1 << 20)] {
            let t = std::time::Instant::now();
            assert_eq!(super::core_transfer(streams, len), streams as u64 * len);
            eprintln!("{streams} x {len}: {:?}", t.elapsed());
        }
    }

    #[test]
    fn only_keeps_the_subjects_named_by_a_part() {
        use super::only_matches;
        assert!(only_matches(None, "dwcp: off"));
        let only = Some("dwcp: adaptive, Kernel TCP (bbr),");
        assert!(only_matches(only, "dwcp: adaptive"));
        assert!(only_matches(only, "kernel tcp (bbr)"));
        assert!(
            !only_matches(only, "dwcp: off"),
            "an empty part matches nothing"
        );
    }
}
