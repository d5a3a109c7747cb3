//! End-to-end scenarios: DWCP and the alternative a user would pick, measured
//! in the same run on loopback with the same encryption. One file per
//! scenario; the alternatives are in [`crate::baselines`].

mod bulk;
mod stream_sweep;
mod transfer;
mod wan;

pub use bulk::{bulk, bulk_pairs};
pub use stream_sweep::stream_sweep;
pub use transfer::{dwcp_throughput, dwcp_throughput_on, transfer};
pub use wan::wan;

use std::net::SocketAddr;

use serde::Serialize;

use crate::loopback;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Scenario name.
    pub scenario: String,
    /// What was measured.
    pub subject: String,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
}

/// A DWCP figure beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// DWCP's figure.
    pub dwcp: Figure,
    /// The alternative's figure.
    pub baseline: Figure,
    /// `dwcp / baseline` (higher is better for throughput).
    pub ratio: f64,
}

pub(crate) const CHUNK: usize = 1 << 20;

/// The path between the two sides of a scenario.
#[derive(Debug, Clone, Default)]
pub struct Path {
    /// `None`: plain loopback. `Some`: a `dwcp-wanem` UDP relay applying this
    /// profile in each direction (QUIC only).
    pub wan: Option<dwcp_wanem::LinkProfile>,
    /// DWCP's QUIC congestion control.
    pub congestion: dwcp_core::net::Congestion,
}

/// Starts a relay for `path`, or returns `addr` unchanged on loopback.
pub(crate) async fn through(
    path: &Path,
    addr: SocketAddr,
) -> (SocketAddr, Option<dwcp_wanem::udp::Relay>) {
    match &path.wan {
        None => (addr, None),
        Some(p) => {
            let back = dwcp_wanem::LinkProfile {
                seed: p.seed.wrapping_add(1),
                ..p.clone()
            };
            let r = dwcp_wanem::udp::Relay::start(loopback(), addr, p.clone(), back)
                .await
                .expect("relay");
            (r.local_addr(), Some(r))
        }
    }
}

pub(crate) fn fig(scenario: &str, subject: &str, value: f64) -> Figure {
    Figure {
        scenario: scenario.into(),
        subject: subject.into(),
        value,
        unit: "MB/s",
    }
}

pub(crate) fn compare(scenario: &str, dwcp: Figure, baseline: Figure) -> Comparison {
    let ratio = dwcp.value / baseline.value;
    Comparison {
        scenario: scenario.into(),
        dwcp,
        baseline,
        ratio,
    }
}

/// Best of `rounds` runs of `f`.
pub(crate) async fn best_of<F, Fut>(rounds: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut best = 0f64;
    for _ in 0..rounds {
        best = best.max(f().await);
    }
    best
}

/// `rounds` runs of each of `f` and `g`, back to back so both see the same
/// conditions on a shared machine, `f` first in even rounds and `g` first
/// in odd ones (whatever running first or second does to a side, it does
/// to both): each round's (f, g) in order.
pub(crate) async fn pairs<F, G, FutF, FutG>(rounds: usize, mut f: F, mut g: G) -> Vec<(f64, f64)>
where
    F: FnMut() -> FutF,
    G: FnMut() -> FutG,
    FutF: std::future::Future<Output = f64>,
    FutG: std::future::Future<Output = f64>,
{
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round % 2 == 0 {
            let a = f().await;
            out.push((a, g().await));
        } else {
            let b = g().await;
            out.push((f().await, b));
        }
    }
    out
}

/// Best of `rounds` runs of each of `f` and `g`, alternating them so both
/// see the same conditions on a shared machine.
pub(crate) async fn best_of_pair<F, G, FutF, FutG>(rounds: usize, mut f: F, mut g: G) -> (f64, f64)
where
    F: FnMut() -> FutF,
    G: FnMut() -> FutG,
    FutF: std::future::Future<Output = f64>,
    FutG: std::future::Future<Output = f64>,
{
    let (mut a, mut b) = (0f64, 0f64);
    for _ in 0..rounds {
        a = a.max(f().await);
        b = b.max(g().await);
    }
    (a, b)
}
