//! dwcp-bench: benchmark workloads shared by the criterion benches and the
//! `dwcp-bench` scenarios.

pub mod baselines;
pub mod compression;
pub mod compression_e2e;
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
}
