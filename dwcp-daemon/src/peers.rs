//! Peer daemons: their connection, its state, and keeping it up.
//!
//! A peer with an `address` is dialled and redialled after any loss, with
//! exponential backoff and full jitter. Any peer may also connect to us; a
//! connection's mutual-TLS identity (its certificate's DNS name) says which
//! peer it is, and identities that name no configured peer are refused.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dwcp_core::net::{Connection, Endpoint, RefusalReason};
use dwcp_core::{ConnectionStats, ErrorCode};
use tokio::sync::watch;

use crate::config::{self, PeerTransport};
use crate::daemon::State;

/// The state of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Dialling.
    Connecting,
    /// A connection is up.
    Connected,
    /// Waiting before the next dial after a failure.
    Backoff,
    /// Not dialled by us (no address) and not connected to us.
    Waiting,
    /// Shutting down.
    Draining,
}

impl PeerState {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Connecting => "connecting",
            PeerState::Connected => "connected",
            PeerState::Backoff => "backoff",
            PeerState::Waiting => "waiting",
            PeerState::Draining => "draining",
        }
    }
}

/// What is known about a peer.
#[derive(Debug, Clone)]
pub struct Status {
    /// Current state.
    pub state: PeerState,
    /// Since when.
    pub since: Instant,
    /// Connections established after the first.
    pub reconnects: u64,
    /// Last connection failure or loss.
    pub last_error: Option<String>,
    /// Transport of the current connection.
    pub transport: &'static str,
}

/// A configured peer.
#[derive(Debug)]
pub struct Peer {
    /// Its configuration.
    pub config: config::Peer,
    status: Mutex<Status>,
    conn: watch::Sender<Option<Connection>>,
    /// Totals of the connections that have ended (for monotonic counters).
    retired: Mutex<ConnectionStats>,
    /// Interactive copies sent and used by the connections that have ended.
    retired_copies: Mutex<(u64, u64)>,
    established: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Peer {
    /// A peer, not yet connected.
    pub fn new(config: config::Peer) -> Peer {
        let state = if config.address.is_some() {
            PeerState::Connecting
        } else {
            PeerState::Waiting
        };
        Peer {
            status: Mutex::new(Status {
                state,
                since: Instant::now(),
                reconnects: 0,
                last_error: None,
                transport: config.transport.as_str(),
            }),
            config,
            conn: watch::channel(None).0,
            retired: Mutex::default(),
            retired_copies: Mutex::default(),
            established: Mutex::new(0),
        }
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A snapshot of the status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    fn set_state(&self, state: PeerState, error: Option<String>) {
        let mut s = lock(&self.status);
        if s.state != state {
            s.state = state;
            s.since = Instant::now();
        }
        if error.is_some() {
            s.last_error = error;
        }
    }

    /// The live connection, if any.
    pub fn connection(&self) -> Option<Connection> {
        self.conn.borrow().clone().filter(|c| !c.is_closed())
    }

    /// Waits up to `wait` for a live connection.
    pub async fn wait_connection(&self, wait: Duration) -> Option<Connection> {
        let mut rx = self.conn.subscribe();
        let r = tokio::time::timeout(
            wait,
            rx.wait_for(|c| c.as_ref().is_some_and(|c| !c.is_closed())),
        )
        .await;
        match r {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    }

    /// Makes `conn` the peer's connection.
    fn attach(&self, conn: Connection, transport: &'static str) {
        let n = {
            let mut e = lock(&self.established);
            *e += 1;
            *e
        };
        {
            let mut s = lock(&self.status);
            s.state = PeerState::Connected;
            s.since = Instant::now();
            s.transport = transport;
            if n > 1 {
                s.reconnects += 1;
                metrics::counter!("dwcp_reconnects_total", "peer" => self.name().to_string())
                    .increment(1);
            }
        }
        self.conn.send_replace(Some(conn));
    }

    /// Records the end of `conn`: folds its counters into the totals and
    /// clears it if it is still the current one.
    fn retire(&self, conn: &Connection, reason: String, draining: bool) {
        let last = conn.stats();
        *lock(&self.retired) += &last.core;
        {
            let mut c = lock(&self.retired_copies);
            c.0 += last.transport.copies_sent;
            c.1 += last.transport.copies_used;
        }
        let current = self.conn.borrow().as_ref().is_some_and(|c| c == conn);
        if current {
            self.conn.send_replace(None);
            let state = if draining {
                PeerState::Draining
            } else if self.config.address.is_some() {
                PeerState::Backoff
            } else {
                PeerState::Waiting
            };
            self.set_state(state, Some(reason));
        }
    }

    /// Counters over every connection to this peer: ended ones plus the live one.
    pub fn totals(&self) -> ConnectionStats {
        let mut t = lock(&self.retired).clone();
        if let Some(c) = self.connection() {
            t += &c.stats().core;
        }
        t
    }

    /// Interactive copies (QUIC datagrams) over every connection to this
    /// peer: sent, and the peer's that arrived before their stream data.
    pub fn copies(&self) -> (u64, u64) {
        let (mut sent, mut used) = *lock(&self.retired_copies);
        if let Some(c) = self.connection() {
            let t = c.stats().transport;
            sent += t.copies_sent;
            used += t.copies_used;
        }
        (sent, used)
    }
}

/// Backoff delays: doubling from `initial` to `max`, each drawn uniformly
/// from `[0, delay]` (full jitter), so restarted fleets do not redial in step.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `initial` to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        ceiling.mul_f64(fastrand::f64()).max(self.initial / 4)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Serves a connection: accepts the peer's streams until it closes.
pub async fn serve(state: Arc<State>, peer: Arc<Peer>, conn: Connection, transport: &'static str) {
    if state.is_draining() {
        conn.goaway("draining");
    }
    peer.attach(conn.clone(), transport);
    tracing::info!(peer = peer.name(), transport, remote = ?conn.remote_addr(), "peer connected");
    while let Some(stream) = conn.accept_stream().await {
        let (state, peer) = (state.clone(), peer.clone());
        tokio::spawn(async move { crate::service::handle(state, &peer, stream).await });
    }
    let reason = match conn.closed().await {
        Ok(()) => {
            tracing::info!(peer = peer.name(), "peer connection closed");
            "closed".to_string()
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(peer = peer.name(), %reason, "peer connection ended");
            reason
        }
    };
    peer.retire(&conn, reason, state.is_draining());
}

/// Keeps a dialled peer connected until the daemon drains.
pub async fn maintain(state: Arc<State>, peer: Arc<Peer>, endpoint: Arc<Endpoint>) {
    let Some(address) = peer.config.address.clone() else {
        return;
    };
    let transport = peer.config.transport;
    let mut backoff = Backoff::new(
        Duration::from_millis(state.config.reconnect.initial_ms),
        Duration::from_millis(state.config.reconnect.max_ms),
    );
    let mut draining = state.draining_signal();
    loop {
        if state.is_draining() {
            return;
        }
        peer.set_state(PeerState::Connecting, None);
        match dial(&endpoint, &address, peer.name()).await {
            Ok(conn) => {
                backoff.reset();
                let kind = match transport {
                    PeerTransport::Quic => "quic",
                    PeerTransport::Tcp => "tcp",
                };
                serve(state.clone(), peer.clone(), conn, kind).await;
            }
            Err(e) => {
                tracing::warn!(peer = peer.name(), %address, error = %e, "cannot connect to peer");
                metrics::counter!("dwcp_errors_total", "kind" => "connect", "peer" => peer.name().to_string())
                    .increment(1);
                peer.set_state(PeerState::Backoff, Some(e));
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::daemon::until_true(&mut draining) => return,
        }
    }
}

async fn dial(endpoint: &Endpoint, address: &str, name: &str) -> Result<Connection, String> {
    let addrs: Vec<_> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("resolve {address}: {e}"))?
        .collect();
    let mut last = format!("{address} resolves to no address");
    for a in addrs {
        match endpoint.connect(a, name).await {
            Ok(c) => return Ok(c),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// Accepts connections on a listening endpoint and hands each to its peer.
pub async fn accept_loop(state: Arc<State>, endpoint: Arc<Endpoint>, transport: &'static str) {
    while let Some(conn) = endpoint.accept().await {
        let identity = conn.peer_identity().map(str::to_owned);
        let peer = identity.as_deref().and_then(|n| state.peer(n));
        match peer {
            Some(peer) => {
                tokio::spawn(serve(state.clone(), peer, conn, transport));
            }
            None => {
                // Counted, logged (rate-limited) and reported by the endpoint.
                endpoint.refused(
                    RefusalReason::UnknownPeer,
                    conn.remote_addr(),
                    &format!("identity {identity:?} names no configured peer"),
                );
                metrics::counter!("dwcp_errors_total", "kind" => "unknown_peer", "peer" => "unknown")
                    .increment(1);
                conn.close(
                    ErrorCode::Unknown(crate::service::codes::UNKNOWN_PEER),
                    "unknown peer identity",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let ceiling = Duration::from_millis(100 * (1 << i.min(4))).min(Duration::from_secs(1));
            assert!(*d <= ceiling, "delay {i} = {d:?} above {ceiling:?}");
            assert!(*d >= Duration::from_millis(25));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
