//! Bulk throughput on loopback: DWCP over QUIC and TCP lanes against raw
//! quinn, raw TCP + rustls and rust-yamux, one stream and 1,000.

use dwcp_core::net::{Congestion, Transport};

use super::{
    best_of, best_of_pair, compare, dwcp_throughput, dwcp_throughput_on, fig, pairs, Comparison,
    Path,
};
use crate::baselines::{raw_quinn_throughput, raw_tls_tcp_throughput, yamux_bulk};

/// The two single-stream comparisons the regression gate tracks: DWCP over
/// QUIC vs raw quinn, and DWCP over TCP lanes vs raw TCP + rustls, each
/// measured alternately in the same run: (name, each round's (DWCP MB/s,
/// the baseline's MB/s)) over `rounds`.
pub async fn bulk_pairs(total: u64, rounds: usize) -> Vec<(&'static str, Vec<(f64, f64)>)> {
    let quic = pairs(
        rounds,
        || dwcp_throughput(Transport::Quic, 1, total),
        || raw_quinn_throughput(total, 1),
    )
    .await;
    let tcp = pairs(
        rounds,
        || dwcp_throughput(Transport::Tcp, 1, total),
        || raw_tls_tcp_throughput(total),
    )
    .await;
    vec![("quic_vs_raw_quinn", quic), ("tcp_vs_raw_tls_tcp", tcp)]
}

/// Runs the bulk-throughput scenarios. `total` bytes per run; `rounds` runs,
/// alternating DWCP and the baseline, best of each kept (loopback on a shared
/// machine is noisy; alternating keeps both sides under the same conditions).
pub async fn bulk(total: u64, rounds: usize) -> Vec<Comparison> {
    let mut out = Vec::new();
    let (d, b) = best_of_pair(
        rounds,
        || dwcp_throughput(Transport::Quic, 1, total),
        || raw_quinn_throughput(total, 1),
    )
    .await;
    let quic_single = d;
    out.push(compare(
        "single-stream bulk, QUIC",
        fig("quic-single", "DWCP over QUIC, 1 stream", d),
        fig("quic-single", "raw quinn, 1 stream", b),
    ));
    let (d, b) = best_of_pair(
        rounds,
        || dwcp_throughput(Transport::Tcp, 1, total),
        || raw_tls_tcp_throughput(total),
    )
    .await;
    let tcp_single = d;
    out.push(compare(
        "single-stream bulk, TCP",
        fig("tcp-single", "DWCP over 4 TCP lanes + TLS, 1 stream", d),
        fig("tcp-single", "raw tokio TCP + rustls, 1 connection", b),
    ));
    // DWCP's congestion controller (the library's default) against quinn's
    // CUBIC where the path is no limit: it must cost next to nothing.
    let own = Path {
        wan: None,
        congestion: Congestion::Dwcp,
    };
    let cubic = Path {
        wan: None,
        congestion: Congestion::Cubic,
    };
    let (d, b) = best_of_pair(
        rounds,
        || dwcp_throughput_on(&own, Transport::Quic, 1, total),
        || dwcp_throughput_on(&cubic, Transport::Quic, 1, total),
    )
    .await;
    out.push(compare(
        "congestion control on loopback, QUIC",
        fig("quic-dwcp-cc", "DWCP over QUIC, DWCP controller", d),
        fig("quic-dwcp-cc", "DWCP over QUIC, quinn CUBIC", b),
    ));
    let d = best_of(rounds, || dwcp_throughput(Transport::Quic, 1000, total)).await;
    out.push(compare(
        "1,000 streams vs 1 stream, QUIC",
        fig("quic-1000", "DWCP over QUIC, 1,000 streams aggregate", d),
        fig("quic-1000", "DWCP over QUIC, 1 stream", quic_single),
    ));
    let r = best_of(rounds, || raw_quinn_throughput(total, 1000)).await;
    out.push(compare(
        "1,000 streams, QUIC vs raw quinn",
        fig(
            "quic-1000-raw",
            "DWCP over QUIC, 1,000 streams aggregate",
            d,
        ),
        fig("quic-1000-raw", "raw quinn, 1,000 streams aggregate", r),
    ));
    let d = best_of(rounds, || dwcp_throughput(Transport::Tcp, 1000, total)).await;
    let y = best_of(rounds, || yamux_bulk(total, 1000)).await;
    out.push(compare(
        "1,000 streams, TCP lanes vs rust-yamux",
        fig(
            "tcp-1000-yamux",
            "DWCP over TCP lanes, 1,000 streams aggregate",
            d,
        ),
        fig(
            "tcp-1000-yamux",
            "rust-yamux over TCP + rustls, 1,000 streams aggregate",
            y,
        ),
    ));
    out.push(compare(
        "1,000 streams vs 1 stream, TCP",
        fig(
            "tcp-1000",
            "DWCP over TCP lanes, 1,000 streams aggregate",
            d,
        ),
        fig("tcp-1000", "DWCP over TCP lanes, 1 stream", tcp_single),
    ));
    out
}
