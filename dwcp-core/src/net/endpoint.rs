//! Endpoints: bind, connect, accept, over QUIC or TCP lanes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ConnectionError;
use crate::net::connection::Connection;
use crate::net::{quic, tcp};
use crate::tls::{TlsConfig, TlsError};
use crate::Config;

/// Which transport an endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC over UDP (quinn): one QUIC stream per DWCP stream.
    Quic,
    /// Parallel TCP lanes with TLS.
    Tcp,
}

/// Congestion control of QUIC connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// CUBIC, quinn's default: the fastest on clean, short paths (on
    /// loopback, about twice quinn's BBR).
    #[default]
    Cubic,
    /// BBR (quinn's implementation): paces at the measured bottleneck rate and
    /// does not treat random loss as congestion. On a 100 Mbit/s, 50 ms path
    /// with 0.5 % loss it carries several times what CUBIC does; the sidecar
    /// uses it by default.
    Bbr,
    /// NewReno.
    NewReno,
}

/// Tuning of TCP lanes.
#[derive(Debug, Clone)]
pub struct TcpTuning {
    /// Lanes per connection (default 4).
    pub lanes: usize,
    /// `TCP_NODELAY` (default on).
    pub nodelay: bool,
    /// `TCP_NOTSENT_LOWAT` in bytes (default 128 KiB): keeps the kernel's unsent
    /// queue short so the DWCP scheduler decides what goes next.
    pub notsent_lowat: Option<u32>,
    /// Congestion control to request (default `bbr`); silently left at the
    /// system default if the kernel does not offer it.
    pub congestion: Option<String>,
    /// Fixed socket buffer size; `None` (default) keeps the kernel's auto-tuning.
    pub socket_buffer: Option<usize>,
    /// TCP keepalive idle time (default 30 s).
    pub keepalive: Option<Duration>,
}

impl Default for TcpTuning {
    fn default() -> Self {
        TcpTuning {
            lanes: 4,
            nodelay: true,
            notsent_lowat: Some(128 * 1024),
            congestion: Some("bbr".into()),
            socket_buffer: None,
            keepalive: Some(Duration::from_secs(30)),
        }
    }
}

/// Configuration of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Protocol settings of every connection.
    pub protocol: Config,
    /// Mutual-TLS identity and trusted CA.
    pub tls: TlsConfig,
    /// QUIC or TCP.
    pub transport: Transport,
    /// TCP lane tuning.
    pub tcp: TcpTuning,
    /// UDP socket buffer size requested for QUIC (default 8 MiB; the kernel caps
    /// it at `net.core.rmem_max`/`wmem_max`).
    pub udp_buffer: usize,
    /// Transport plus DWCP handshake deadline (default 10 s).
    pub handshake_timeout: Duration,
    /// Established connections waiting for `accept` (default 128); more are refused.
    pub accept_backlog: usize,
    /// The WAN rate in bits/s, if known (for example a contracted rate); used by
    /// adaptive compression together with the transport's own estimate.
    pub link_rate_bps: Option<u64>,
    /// QUIC congestion control (default CUBIC; BBR for lossy WAN paths).
    pub congestion: Congestion,
}

impl EndpointConfig {
    /// Defaults for `transport` with the given TLS settings.
    pub fn new(tls: TlsConfig, transport: Transport) -> Self {
        EndpointConfig {
            protocol: Config::default(),
            tls,
            transport,
            tcp: TcpTuning::default(),
            udp_buffer: 8 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            accept_backlog: 128,
            link_rate_bps: None,
            congestion: Congestion::default(),
        }
    }
}

/// An endpoint error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration error.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The TLS handshake failed (unknown CA, missing or expired certificate...).
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    /// QUIC connection could not start.
    #[error("QUIC connect: {0}")]
    QuicConnect(#[from] quinn::ConnectError),
    /// QUIC connection failed (including its TLS handshake).
    #[error("QUIC connection: {0}")]
    Quic(#[from] quinn::ConnectionError),
    /// The DWCP handshake failed (version mismatch, missing capability...).
    #[error("DWCP handshake: {0}")]
    Handshake(#[from] ConnectionError),
    /// A step took longer than the handshake timeout.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Counters of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Connections accepted and established.
    pub accepted: u64,
    /// Incoming connections that failed their TLS or DWCP handshake.
    pub handshake_failures: u64,
    /// The last handshake failure, for diagnosis.
    pub last_failure: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    failures: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, why: String) {
        tracing::warn!(%why, "dwcp: incoming connection refused");
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }
}

#[derive(Debug)]
enum Kind {
    Quic(quinn::Endpoint),
    Tcp,
}

/// A local endpoint: accepts connections on its address and connects out.
#[derive(Debug)]
pub struct Endpoint {
    kind: Kind,
    config: Arc<EndpointConfig>,
    local_addr: SocketAddr,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Connection>>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Endpoint {
    /// Binds to `addr` and starts accepting connections in the background.
    ///
    /// # Errors
    /// The address cannot be bound or the TLS configuration is unusable.
    pub async fn bind(addr: SocketAddr, config: EndpointConfig) -> Result<Endpoint, Error> {
        config
            .protocol
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if config.tcp.lanes == 0 || config.tcp.lanes > 64 {
            return Err(Error::Config("tcp.lanes must be between 1 and 64".into()));
        }
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(config.accept_backlog.max(1));
        let (kind, local_addr, task) = match config.transport {
            Transport::Quic => {
                let ep = quic::bind(addr, &config)?;
                let local = ep.local_addr()?;
                let task = tokio::spawn(quic::accept_loop(
                    ep.clone(),
                    config.clone(),
                    tx,
                    counters.clone(),
                ));
                (Kind::Quic(ep), local, task)
            }
            Transport::Tcp => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let local = listener.local_addr()?;
                let task = tokio::spawn(tcp::accept_loop(
                    listener,
                    config.clone(),
                    tx,
                    counters.clone(),
                ));
                (Kind::Tcp, local, task)
            }
        };
        Ok(Endpoint {
            kind,
            config,
            local_addr,
            incoming: tokio::sync::Mutex::new(rx),
            counters,
            tasks: vec![task],
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Connects to `addr`, whose certificate must carry `server_name`, and
    /// completes the TLS and DWCP handshakes.
    ///
    /// # Errors
    /// Connection refused, TLS failure (unknown CA, bad certificate), DWCP
    /// handshake failure (version, capabilities) or timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled connect leaves nothing behind.
    pub async fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<Connection, Error> {
        let fut = async {
            match &self.kind {
                Kind::Quic(ep) => quic::connect(ep, &self.config, addr, server_name).await,
                Kind::Tcp => tcp::connect(&self.config, addr, server_name).await,
            }
        };
        tokio::time::timeout(self.config.handshake_timeout, fut)
            .await
            .map_err(|_| Error::Timeout("connect"))?
    }

    /// The next established incoming connection; `None` once the endpoint stopped.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn accept(&self) -> Option<Connection> {
        self.incoming.lock().await.recv().await
    }

    /// Accept counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            handshake_failures: self.counters.failures.load(Ordering::Relaxed),
            last_failure: self
                .counters
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Waits for the DWCP handshake of a new connection.
pub(crate) async fn establish(conn: Connection, timeout: Duration) -> Result<Connection, Error> {
    match tokio::time::timeout(timeout, conn.established()).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => Err(Error::Handshake(e)),
        Err(_) => Err(Error::Timeout("DWCP handshake")),
    }
}
