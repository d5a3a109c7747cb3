//! The sending side of a tunnel: a local TCP listener whose connections are
//! each carried as one DWCP stream to a peer's service.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dwcp_core::net::{Compression, StreamOptions};
use dwcp_core::StreamError;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::daemon::State;
use crate::peers::Peer;
use crate::pipe::{self, PipeError};
use crate::registry::Direction;
use crate::service::codes;

/// A tunnel, resolved against the configuration.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// Its name.
    pub name: String,
    /// The peer serving it.
    pub peer: Arc<Peer>,
    /// Service name at the peer.
    pub service: String,
    /// Class id and name.
    pub class: (u8, String),
    /// Whether the class is interactive.
    pub interactive: bool,
    /// Compression policy.
    pub compression: Compression,
}

/// Accepts local connections until the daemon drains, then drops the
/// listener (new connections are refused by the kernel).
pub async fn serve(state: Arc<State>, listener: TcpListener, tunnel: Arc<Tunnel>) {
    let limit = Arc::new(Semaphore::new(
        state.config.limits.max_connections_per_tunnel,
    ));
    let mut draining = state.draining_signal();
    loop {
        let permit = tokio::select! {
            _ = crate::daemon::until_true(&mut draining) => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, from) = tokio::select! {
            _ = crate::daemon::until_true(&mut draining) => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(tunnel = %tunnel.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (state, tunnel) = (state.clone(), tunnel.clone());
        tokio::spawn(async move {
            let _permit = permit;
            carry(state, tunnel, tcp, from).await;
        });
    }
    tracing::info!(tunnel = %tunnel.name, "tunnel listener closed");
}

async fn carry(
    state: Arc<State>,
    t: Arc<Tunnel>,
    tcp: tokio::net::TcpStream,
    from: std::net::SocketAddr,
) {
    let peer_label = t.peer.name().to_string();
    let wait = Duration::from_secs(state.config.limits.connect_timeout_secs);
    let Some(conn) = t.peer.wait_connection(wait).await else {
        tracing::warn!(tunnel = %t.name, peer = %peer_label, %from, "peer not connected; closing the local connection");
        metrics::counter!("dwcp_tunnel_connections_total", "peer" => peer_label.clone(), "direction" => "outbound", "outcome" => "failed").increment(1);
        metrics::counter!("dwcp_errors_total", "kind" => "peer_unavailable", "peer" => peer_label)
            .increment(1);
        pipe::abort(tcp);
        return;
    };
    let options = StreamOptions {
        class: t.class.0,
        weight: 1,
        priority: if t.interactive { 0 } else { 1 },
        route: Bytes::from(t.service.clone()),
        compression: t.compression,
        interactive: t.interactive,
    };
    let stream = match conn.open_stream(options) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(tunnel = %t.name, peer = %peer_label, error = %e, "cannot open a stream");
            metrics::counter!("dwcp_tunnel_connections_total", "peer" => peer_label.clone(), "direction" => "outbound", "outcome" => "failed").increment(1);
            metrics::counter!("dwcp_errors_total", "kind" => "open", "peer" => peer_label)
                .increment(1);
            pipe::abort(tcp);
            return;
        }
    };
    let guard = state.registry.insert(
        u64::from(stream.id()),
        &peer_label,
        &t.name,
        Direction::Outbound,
        &t.class.1,
    );
    match pipe::run(tcp, stream, &guard.entry).await {
        Ok(tot) => {
            metrics::counter!("dwcp_tunnel_connections_total", "peer" => peer_label, "direction" => "outbound", "outcome" => "completed").increment(1);
            tracing::debug!(tunnel = %t.name, sent = tot.sent, received = tot.received, "connection done")
        }
        Err(e) if e.is_cancel() => {
            metrics::counter!("dwcp_tunnel_connections_total", "peer" => peer_label, "direction" => "outbound", "outcome" => "cancelled").increment(1);
            tracing::debug!(tunnel = %t.name, error = %e, "connection cancelled");
        }
        Err(e) => {
            metrics::counter!("dwcp_tunnel_connections_total", "peer" => peer_label.clone(), "direction" => "outbound", "outcome" => "failed").increment(1);
            let why = match &e {
                PipeError::Stream(StreamError::Reset(code)) => codes::describe(*code),
                other => other.to_string(),
            };
            tracing::warn!(tunnel = %t.name, peer = %peer_label, error = %why, "tunnelled connection failed");
            metrics::counter!("dwcp_errors_total", "kind" => "stream", "peer" => peer_label)
                .increment(1);
        }
    }
}
