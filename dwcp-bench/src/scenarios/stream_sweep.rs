//! Throughput by stream count.

use dwcp_core::net::Transport;

use super::{best_of, best_of_pair, dwcp_throughput};
use crate::baselines::raw_quinn_throughput;

/// Throughput (MB/s) for each stream count: DWCP over QUIC, DWCP over TCP
/// lanes, raw quinn; best of `rounds` each, measured alternately.
pub async fn stream_sweep(counts: &[usize], total: u64, rounds: usize) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for &n in counts {
        let (quic, raw) = best_of_pair(
            rounds,
            || dwcp_throughput(Transport::Quic, n, total),
            || raw_quinn_throughput(total, n),
        )
        .await;
        let tcp = best_of(rounds, || dwcp_throughput(Transport::Tcp, n, total)).await;
        eprintln!("{n} streams: DWCP QUIC {quic:.0} MB/s, DWCP TCP {tcp:.0} MB/s, raw quinn {raw:.0} MB/s");
        rows.push(serde_json::json!({
            "streams": n, "dwcp_quic": quic, "dwcp_tcp": tcp, "raw_quinn": raw, "unit": "MB/s",
        }));
    }
    rows
}
