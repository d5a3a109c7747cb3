//! Prometheus metrics: the recorder, and a sampler that turns each peer
//! connection's statistics into the contract metrics once a second.
//!
//! Labels are `peer`, `class`, `codec`, `transport`, `direction`, `kind`,
//! `reason`: all bounded by the configuration, never one per stream. The
//! names are a contract with `deploy/monitoring` (alerts and dashboard);
//! `docs/operations.md` lists them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use dwcp_core::net::EndpointStats;

use crate::daemon::State;

/// Every metric name the daemon itself exports (the library adds
/// `dwcp_compression_raw_bytes_total`, `dwcp_compression_wire_bytes_total`
/// and `dwcp_compression_seconds`).
pub const NAMES: &[&str] = &[
    "dwcp_streams_active",
    "dwcp_streams_max",
    "dwcp_bandwidth_allocated_bytes",
    "dwcp_bandwidth_used_bytes",
    "dwcp_bandwidth_capacity_bytes",
    "dwcp_compression_ratio",
    "dwcp_latency_milliseconds",
    "dwcp_rtt_milliseconds",
    "dwcp_packet_loss_rate",
    "dwcp_peer_up",
    "dwcp_bytes_sent_total",
    "dwcp_bytes_received_total",
    "dwcp_data_raw_bytes_total",
    "dwcp_data_wire_bytes_total",
    "dwcp_frames_sent_total",
    "dwcp_frames_received_total",
    "dwcp_stream_opens_total",
    "dwcp_stream_resets_total",
    "dwcp_stream_refusals_total",
    "dwcp_errors_total",
    "dwcp_reconnects_total",
    "dwcp_tunnel_streams_active",
    "dwcp_draining",
    "dwcp_build_info",
    "dwcp_handshake_failures_total",
    "dwcp_tunnel_connections_total",
    "dwcp_handshake_retries_total",
    "dwcp_handshakes_in_progress",
    "dwcp_tls_cert_expiry_timestamp_seconds",
    "dwcp_interactive_copies_total",
];

/// DATA bytes a connection must have carried before its bandwidth estimate
/// is reported as `dwcp_bandwidth_capacity_bytes`.
const MEASURED_AFTER_BYTES: u64 = 4 << 20;

/// RTT histogram buckets, in milliseconds.
const RTT_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process).
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("dwcp_rtt_milliseconds".into()), RTT_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(h) => h,
            Err(e) => {
                // Another recorder is installed (a test harness, an embedding
                // service): render our own, empty, registry.
                tracing::warn!(error = %e, "metrics recorder already installed");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    });
}

/// Sets `dwcp_tls_cert_expiry_timestamp_seconds` to when the identity in
/// force stops being valid (the earliest `notAfter` of the chain it
/// presents). Called at start and after every successful reload. A chain
/// that rustls accepted but whose validity cannot be read is logged and
/// exports `0`, so that the expiry alert fires rather than goes silent.
pub fn record_cert_expiry(identity: &dwcp_core::tls::Identity) {
    let value = match identity.not_after() {
        Ok(t) => t as f64,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the certificate's expiry");
            0.0
        }
    };
    gauge!("dwcp_tls_cert_expiry_timestamp_seconds").set(value);
}

/// The Prometheus text exposition.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Loss over the last 10 samples: (packets sent, packets lost) deltas.
#[derive(Debug, Default)]
struct LossWindow {
    last: Option<(u64, u64)>,
    deltas: VecDeque<(u64, u64)>,
}

impl LossWindow {
    fn update(&mut self, sent: u64, lost: u64) -> f64 {
        if let Some((s, l)) = self.last {
            // A new connection restarts the counters.
            let d = if sent >= s && lost >= l {
                (sent - s, lost - l)
            } else {
                (sent, lost)
            };
            self.deltas.push_back(d);
            if self.deltas.len() > 10 {
                self.deltas.pop_front();
            }
        }
        self.last = Some((sent, lost));
        let (s, l) = self
            .deltas
            .iter()
            .fold((0u64, 0u64), |(a, b), (s, l)| (a + s, b + l));
        if s == 0 {
            0.0
        } else {
            (l as f64 / s as f64).min(1.0)
        }
    }
}

/// Samples every peer once a second until aborted.
pub async fn sample_loop(state: Arc<State>) {
    gauge!("dwcp_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!("dwcp_draining").set(0.0);
    let mut loss: BTreeMap<String, LossWindow> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        sample(&state, &mut loss);
        if let Some(h) = HANDLE.get() {
            h.run_upkeep();
        }
    }
}

/// Incoming handshakes by transport: failures by reason, Retries sent, and
/// handshakes in progress, from each endpoint's counters.
fn sample_endpoints(state: &State) {
    let mut by_transport: BTreeMap<&'static str, EndpointStats> = BTreeMap::new();
    for (kind, ep) in &state.endpoints {
        let s = ep.stats();
        *by_transport.entry(kind).or_default() += &s;
    }
    for (transport, s) in by_transport {
        for (reason, n) in &s.failures_by_reason {
            counter!("dwcp_handshake_failures_total", "transport" => transport, "reason" => reason.as_str())
                .absolute(*n);
        }
        counter!("dwcp_handshake_retries_total", "transport" => transport).absolute(s.retries);
        gauge!("dwcp_handshakes_in_progress", "transport" => transport)
            .set(s.handshakes_in_progress as f64);
    }
}

fn sample(state: &State, loss: &mut BTreeMap<String, LossWindow>) {
    sample_endpoints(state);
    let per_peer = state.registry.per_peer();
    for (name, peer) in &state.peers {
        let p = name.clone();
        let t = peer.totals();
        counter!("dwcp_bytes_sent_total", "peer" => p.clone()).absolute(t.bytes_sent);
        counter!("dwcp_bytes_received_total", "peer" => p.clone()).absolute(t.bytes_received);
        counter!("dwcp_data_raw_bytes_total", "peer" => p.clone(), "direction" => "sent")
            .absolute(t.data_raw_sent);
        counter!("dwcp_data_raw_bytes_total", "peer" => p.clone(), "direction" => "received")
            .absolute(t.data_raw_received);
        counter!("dwcp_data_wire_bytes_total", "peer" => p.clone(), "direction" => "sent")
            .absolute(t.data_wire_sent);
        counter!("dwcp_data_wire_bytes_total", "peer" => p.clone(), "direction" => "received")
            .absolute(t.data_wire_received);
        counter!("dwcp_frames_sent_total", "peer" => p.clone()).absolute(t.frames_sent);
        let (sent, used) = peer.copies();
        counter!("dwcp_interactive_copies_total", "peer" => p.clone(), "outcome" => "sent")
            .absolute(sent);
        counter!("dwcp_interactive_copies_total", "peer" => p.clone(), "outcome" => "used")
            .absolute(used);
        counter!("dwcp_frames_received_total", "peer" => p.clone()).absolute(t.frames_received);
        counter!("dwcp_stream_opens_total", "peer" => p.clone(), "direction" => "local")
            .absolute(t.streams_opened_local);
        counter!("dwcp_stream_opens_total", "peer" => p.clone(), "direction" => "remote")
            .absolute(t.streams_opened_remote);
        counter!("dwcp_stream_resets_total", "peer" => p.clone(), "direction" => "sent")
            .absolute(t.resets_sent);
        counter!("dwcp_stream_resets_total", "peer" => p.clone(), "direction" => "received")
            .absolute(t.resets_received);
        counter!("dwcp_stream_refusals_total", "peer" => p.clone(), "reason" => "limit")
            .absolute(t.streams_refused);
        counter!("dwcp_reconnects_total", "peer" => p.clone()).increment(0);
        for direction in ["inbound", "outbound"] {
            for outcome in ["completed", "cancelled", "failed"] {
                counter!("dwcp_tunnel_connections_total", "peer" => p.clone(), "direction" => direction, "outcome" => outcome)
                    .increment(0);
            }
        }
        counter!("dwcp_errors_total", "kind" => "connect", "peer" => p.clone()).increment(0);
        gauge!("dwcp_streams_max", "peer" => p.clone())
            .set(f64::from(state.config.limits.max_streams));
        gauge!("dwcp_tunnel_streams_active", "peer" => p.clone())
            .set(per_peer.get(name).copied().unwrap_or(0) as f64);
        let status = peer.status();
        let live = peer.connection();
        for transport in ["quic", "tcp"] {
            let up = status.transport == transport && live.is_some();
            gauge!("dwcp_peer_up", "peer" => p.clone(), "transport" => transport).set(if up {
                1.0
            } else {
                0.0
            });
        }
        let Some(conn) = live else {
            gauge!("dwcp_streams_active", "peer" => p.clone()).set(0.0);
            for c in state.classes() {
                gauge!("dwcp_bandwidth_allocated_bytes", "peer" => p.clone(), "class" => c.name.clone()).set(0.0);
                gauge!("dwcp_bandwidth_used_bytes", "peer" => p.clone(), "class" => c.name.clone())
                    .set(0.0);
                gauge!("dwcp_compression_ratio", "peer" => p.clone(), "class" => c.name.clone())
                    .set(1.0);
            }
            gauge!("dwcp_bandwidth_capacity_bytes", "peer" => p.clone()).set(0.0);
            gauge!("dwcp_latency_milliseconds", "peer" => p.clone()).set(0.0);
            gauge!("dwcp_packet_loss_rate", "peer" => p.clone()).set(0.0);
            continue;
        };
        let s = conn.stats();
        gauge!("dwcp_streams_active", "peer" => p.clone()).set(s.core.active_streams as f64);
        for c in &s.allocation {
            let class = state.class_name(c.class);
            gauge!("dwcp_bandwidth_allocated_bytes", "peer" => p.clone(), "class" => class.clone())
                .set(c.allocated);
            gauge!("dwcp_bandwidth_used_bytes", "peer" => p.clone(), "class" => class).set(c.used);
        }
        for (id, c) in &s.compression {
            let ratio = if c.wire == 0 {
                1.0
            } else {
                c.raw as f64 / c.wire as f64
            };
            gauge!("dwcp_compression_ratio", "peer" => p.clone(), "class" => state.class_name(*id))
                .set(ratio);
        }
        // The estimator ignores app-limited intervals (keepalives only), so
        // it stays unknown until data has backlogged the sender; the data
        // floor also keeps a first, short burst from being reported as the
        // link's capacity.
        let measured = s
            .link
            .bottleneck_bw
            .filter(|_| s.core.data_wire_sent + s.core.data_wire_received >= MEASURED_AFTER_BYTES);
        let capacity = measured
            .or(state.config.link.rate_mbps.map(|m| m * 1e6 / 8.0))
            .unwrap_or(0.0);
        gauge!("dwcp_bandwidth_capacity_bytes", "peer" => p.clone()).set(capacity);
        let rtt = s.transport.rtt.or(s.core.smoothed_rtt);
        if let Some(rtt) = rtt {
            let ms = rtt.as_secs_f64() * 1000.0;
            gauge!("dwcp_latency_milliseconds", "peer" => p.clone()).set(ms);
            histogram!("dwcp_rtt_milliseconds", "peer" => p.clone()).record(ms);
        }
        let rate = loss
            .entry(name.clone())
            .or_default()
            .update(s.transport.sent_packets, s.transport.lost_packets);
        gauge!("dwcp_packet_loss_rate", "peer" => p).set(rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_window_is_recent_and_survives_restarts() {
        let mut w = LossWindow::default();
        assert_eq!(w.update(1000, 10), 0.0);
        assert!((w.update(2000, 30) - 0.02).abs() < 1e-9);
        for i in 0..10 {
            w.update(3000 + i * 1000, 30);
        }
        assert_eq!(w.update(14_000, 30), 0.0, "old loss ages out");
        // A new connection: counters start again from zero.
        // Window: eight deltas of 1000, one of 2000, and the new (100, 5).
        assert!((w.update(100, 5) - 5.0 / 10_100.0).abs() < 1e-9);
    }
}
