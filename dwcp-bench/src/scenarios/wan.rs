//! Goodput over an emulated WAN (the `dwcp-wanem` UDP relay).

use dwcp_core::net::Transport;

use super::{dwcp_throughput_on, Comparison, Figure, Path};
use crate::baselines::raw_quinn_throughput_on;

/// Goodput over an emulated WAN (QUIC through the `dwcp-wanem` relay):
/// DWCP with BBR (the sidecar's default), DWCP with CUBIC, and raw quinn with
/// its defaults, each moving `total` bytes on one stream. Figures in Mbit/s;
/// each comparison's ratio is DWCP over raw quinn.
pub async fn wan(mbit: u64, rtt_ms: u64, loss_pct: f64, total: u64) -> Vec<Comparison> {
    let profile = dwcp_wanem::LinkProfile::wan(mbit, rtt_ms, loss_pct);
    let path = |congestion| Path {
        wan: Some(profile.clone()),
        congestion,
    };
    let name = format!("WAN {mbit} Mbit/s, {rtt_ms} ms RTT, {loss_pct}% loss each way");
    let mbps = |mb_per_s: f64| mb_per_s * 8.0;
    let raw = mbps(raw_quinn_throughput_on(&path(Default::default()), total, 1).await);
    let bbr = mbps(
        dwcp_throughput_on(
            &path(dwcp_core::net::Congestion::Bbr),
            Transport::Quic,
            1,
            total,
        )
        .await,
    );
    let cubic = mbps(
        dwcp_throughput_on(
            &path(dwcp_core::net::Congestion::Cubic),
            Transport::Quic,
            1,
            total,
        )
        .await,
    );
    let f = |subject: &str, v: f64| Figure {
        scenario: "wan".into(),
        subject: subject.into(),
        value: v,
        unit: "Mbit/s",
    };
    let raw_fig = f("raw quinn (CUBIC), 1 stream", raw);
    vec![
        Comparison {
            scenario: format!("{name}: DWCP (BBR) vs raw quinn"),
            dwcp: f("DWCP over QUIC, BBR, 1 stream", bbr),
            baseline: raw_fig.clone(),
            ratio: bbr / raw.max(1e-9),
        },
        Comparison {
            scenario: format!("{name}: DWCP (CUBIC) vs raw quinn"),
            dwcp: f("DWCP over QUIC, CUBIC, 1 stream", cubic),
            baseline: raw_fig,
            ratio: cubic / raw.max(1e-9),
        },
    ]
}
