//! The receiving side of a tunnel: a peer's stream names a service; if the
//! service is declared and the peer is allowed to use it, the daemon connects
//! to the service's target and pipes. Nothing else is reachable: the daemon
//! is never an open proxy.

use std::sync::Arc;
use std::time::Duration;

use dwcp_core::net::Stream;
use dwcp_core::ErrorCode;
use tokio::net::TcpStream;

use crate::daemon::State;
use crate::peers::Peer;
use crate::pipe;
use crate::registry::Direction;

/// Application error codes the daemon puts in RESET and CLOSE frames (above
/// the protocol's own codes).
pub mod codes {
    /// The stream named no declared service.
    pub const UNKNOWN_SERVICE: u32 = 0x1001;
    /// The service exists but this peer is not in its `allowed_peers`.
    pub const NOT_ALLOWED: u32 = 0x1002;
    /// The service's target refused the connection or did not answer.
    pub const TARGET_UNREACHABLE: u32 = 0x1003;
    /// The connecting peer's certificate names no configured peer.
    pub const UNKNOWN_PEER: u32 = 0x1004;

    /// A sentence for a reset code seen by the opening side.
    pub fn describe(code: dwcp_core::ErrorCode) -> String {
        match code {
            dwcp_core::ErrorCode::Unknown(UNKNOWN_SERVICE) => {
                "the peer declares no such service".into()
            }
            dwcp_core::ErrorCode::Unknown(NOT_ALLOWED) => {
                "the peer does not allow this node to use the service".into()
            }
            dwcp_core::ErrorCode::Unknown(TARGET_UNREACHABLE) => {
                "the peer could not connect to the service's target".into()
            }
            other => format!("{other:?}"),
        }
    }
}

fn refuse(stream: &mut Stream, peer: &Peer, code: u32, reason: &'static str, detail: &str) {
    tracing::warn!(peer = peer.name(), reason, detail, "refused a stream");
    metrics::counter!("dwcp_stream_refusals_total", "peer" => peer.name().to_string(), "reason" => reason)
        .increment(1);
    stream.reset(ErrorCode::Unknown(code));
}

/// Handles one stream the peer opened.
pub async fn handle(state: Arc<State>, peer: &Peer, mut stream: Stream) {
    let route = stream.route();
    let Ok(name) = std::str::from_utf8(&route) else {
        return refuse(
            &mut stream,
            peer,
            codes::UNKNOWN_SERVICE,
            "unknown_service",
            "non-UTF-8 name",
        );
    };
    let Some(service) = state.service(name) else {
        return refuse(
            &mut stream,
            peer,
            codes::UNKNOWN_SERVICE,
            "unknown_service",
            name,
        );
    };
    if !service.allowed_peers.iter().any(|p| p == peer.name()) {
        return refuse(&mut stream, peer, codes::NOT_ALLOWED, "not_allowed", name);
    }
    let timeout = Duration::from_secs(state.config.limits.connect_timeout_secs);
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(&service.target)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let detail = format!("{}: {e}", service.target);
            return refuse(
                &mut stream,
                peer,
                codes::TARGET_UNREACHABLE,
                "target_unreachable",
                &detail,
            );
        }
        Err(_) => {
            let detail = format!("{}: no answer within {timeout:?}", service.target);
            return refuse(
                &mut stream,
                peer,
                codes::TARGET_UNREACHABLE,
                "target_unreachable",
                &detail,
            );
        }
    };
    let class = state.class_name(stream.class());
    let guard = state.registry.insert(
        u64::from(stream.id()),
        peer.name(),
        name,
        Direction::Inbound,
        &class,
    );
    let count = |outcome: &'static str| {
        metrics::counter!("dwcp_tunnel_connections_total", "peer" => peer.name().to_string(), "direction" => "inbound", "outcome" => outcome).increment(1);
    };
    match pipe::run(tcp, stream, &guard.entry).await {
        Ok(t) => {
            count("completed");
            tracing::debug!(
                peer = peer.name(),
                service = name,
                sent = t.sent,
                received = t.received,
                "stream done"
            )
        }
        Err(e) if e.is_cancel() => {
            count("cancelled");
            tracing::debug!(peer = peer.name(), service = name, error = %e, "stream cancelled");
        }
        Err(e) => {
            count("failed");
            metrics::counter!("dwcp_errors_total", "kind" => "stream", "peer" => peer.name().to_string())
                .increment(1);
            tracing::warn!(peer = peer.name(), service = name, error = %e, "stream ended with an error");
        }
    }
}
