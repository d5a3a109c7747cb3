//! Endpoints: bind, connect, accept, over QUIC or TCP lanes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ConnectionError;
use crate::net::admission::{Admission, HandshakeLimits};
use crate::net::connection::Connection;
pub(crate) use crate::net::refusals::Counters;
use crate::net::refusals::{self, AcceptFailures, RefusalReason};
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

impl Transport {
    /// Most bytes one connection end keeps in this process after DWCP has
    /// sent them, until the peer's transport acknowledges them: QUIC's send
    /// window ceiling (quinn holds written data until it is acknowledged; the
    /// window follows the congestion window up to this), 0 for TCP lanes
    /// (their unacknowledged bytes are in the kernel's socket buffers). These
    /// bytes are also counted by the peer's receive window, so a process that
    /// holds both ends can hold them twice.
    pub fn unacked_buffer(self, protocol: &crate::Config) -> u64 {
        match self {
            Transport::Quic => crate::net::quic::transport_send_window(protocol),
            Transport::Tcp => 0,
        }
    }
}

/// Congestion control of QUIC connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// CUBIC, quinn's default. Loss-based: on a path that does not drop
    /// (loopback, a deep buffer) it keeps as much in flight as flow control
    /// allows, a standing queue in front of interactive messages.
    Cubic,
    /// BBR (quinn's implementation, marked experimental upstream). On a
    /// one-BDP bottleneck queue it retransmits a third or more of what it
    /// sends.
    Bbr,
    /// NewReno.
    NewReno,
    /// DWCP's own model-based controller ([`crate::net::congestion`]), the
    /// default: bottleneck rate and minimum RTT, loss counted as congestion
    /// only above a threshold, the configured link rate as a ceiling, and
    /// one BDP plus a few milliseconds of its rate in flight.
    #[default]
    Dwcp,
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
    /// Ceiling of each lane's retransmission timeout (`TCP_RTO_MAX_MS`,
    /// Linux 6.15 and later; default 1 s, the kernel's own is 120 s), so
    /// that lanes resume within about a second of a partition healing.
    pub rto_max: Option<Duration>,
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
            rto_max: Some(Duration::from_secs(1)),
        }
    }
}

/// Configuration of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Protocol settings of every connection.
    pub protocol: Config,
    /// Mutual-TLS identity and trusted CA (the initial ones: see
    /// [`Endpoint::set_tls`] for rotation).
    pub tls: TlsConfig,
    /// QUIC or TCP.
    pub transport: Transport,
    /// TCP lane tuning.
    pub tcp: TcpTuning,
    /// UDP socket buffer size requested for QUIC (default 8 MiB; the kernel caps
    /// it at `net.core.rmem_max`/`wmem_max`).
    pub udp_buffer: usize,
    /// Transport plus DWCP handshake deadline (default 5 s). An incoming
    /// handshake holds one of [`EndpointConfig::handshake_limits`]'s places
    /// at most this long.
    pub handshake_timeout: Duration,
    /// Bounds on incoming handshakes in progress (see [`HandshakeLimits`]).
    pub handshake_limits: HandshakeLimits,
    /// Established connections waiting for `accept` (default 128); more are refused.
    pub accept_backlog: usize,
    /// The WAN rate in bits/s, if known (for example a contracted rate); used by
    /// adaptive compression together with the transport's own estimate.
    pub link_rate_bps: Option<u64>,
    /// QUIC congestion control (default DWCP's own, [`Congestion::Dwcp`]).
    pub congestion: Congestion,
    /// QUIC: send small interactive writes a second time as a datagram, so
    /// a lost packet does not cost them a round trip of loss recovery
    /// (default true; only on paths of 10 ms or more, or with recent loss;
    /// see `net/copies.rs`).
    pub interactive_copies: bool,
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
            handshake_timeout: Duration::from_secs(5),
            handshake_limits: HandshakeLimits::default(),
            accept_backlog: 128,
            link_rate_bps: None,
            congestion: Congestion::default(),
            interactive_copies: true,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        self.protocol
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if self.tcp.lanes == 0 || self.tcp.lanes > 64 {
            return Err(Error::Config("tcp.lanes must be between 1 and 64".into()));
        }
        let l = &self.handshake_limits;
        if l.max_pending == 0 || l.max_pending_per_source == 0 {
            return Err(Error::Config(
                "handshake limits must allow at least one handshake".into(),
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::Config("handshake_timeout must not be zero".into()));
        }
        Ok(())
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

impl Error {
    /// The refusal reason this error counts as when an incoming connection fails.
    pub fn reason(&self) -> RefusalReason {
        match self {
            Error::Io(_) => RefusalReason::Io,
            Error::Tls(_) | Error::TlsHandshake(_) => RefusalReason::Tls,
            Error::QuicConnect(_) | Error::Config(_) => RefusalReason::Other,
            Error::Quic(e) => quic_reason(e),
            Error::Handshake(_) => RefusalReason::DwcpHandshake,
            Error::Timeout(_) => RefusalReason::Timeout,
        }
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100-0x1ff.
fn quic_reason(e: &quinn::ConnectionError) -> RefusalReason {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if crypto(t.code) => RefusalReason::Tls,
        quinn::ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => RefusalReason::Tls,
        quinn::ConnectionError::TimedOut => RefusalReason::Timeout,
        quinn::ConnectionError::VersionMismatch
        | quinn::ConnectionError::TransportError(_)
        | quinn::ConnectionError::ConnectionClosed(_)
        | quinn::ConnectionError::Reset => RefusalReason::Protocol,
        _ => RefusalReason::Other,
    }
}

/// Counters of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Connections accepted and established.
    pub accepted: u64,
    /// Incoming connections refused or failed, all reasons together.
    pub handshake_failures: u64,
    /// Incoming connections refused or failed, by reason (every reason
    /// listed, in [`RefusalReason::ALL`] order).
    pub failures_by_reason: Vec<(RefusalReason, u64)>,
    /// QUIC Retry packets sent to unvalidated clients under load.
    pub retries: u64,
    /// Incoming handshakes in progress now.
    pub handshakes_in_progress: u64,
    /// The most incoming handshakes ever in progress at once.
    pub handshakes_peak: u64,
    /// The last failure, for diagnosis.
    pub last_failure: Option<String>,
}

impl EndpointStats {
    /// Failures counted for `reason`.
    pub fn failures(&self, reason: RefusalReason) -> u64 {
        self.failures_by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

/// Adds another endpoint's counters to these, for totals over endpoints:
/// counts and handshakes in progress add up, failures add reason by reason,
/// the peak is the larger one and the last failure the other's if it has one.
impl std::ops::AddAssign<&EndpointStats> for EndpointStats {
    fn add_assign(&mut self, rhs: &EndpointStats) {
        self.accepted += rhs.accepted;
        self.handshake_failures += rhs.handshake_failures;
        if self.failures_by_reason.is_empty() {
            self.failures_by_reason = rhs.failures_by_reason.clone();
        } else {
            for ((_, n), (_, m)) in self
                .failures_by_reason
                .iter_mut()
                .zip(&rhs.failures_by_reason)
            {
                *n += m;
            }
        }
        self.retries += rhs.retries;
        self.handshakes_in_progress += rhs.handshakes_in_progress;
        self.handshakes_peak = self.handshakes_peak.max(rhs.handshakes_peak);
        if rhs.last_failure.is_some() {
            self.last_failure = rhs.last_failure.clone();
        }
    }
}

/// The TLS configuration in force and the rustls configurations built from
/// it, swapped whole by [`Endpoint::set_tls`].
#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) config: TlsConfig,
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<rustls::ClientConfig>,
}

impl Tls {
    fn build(config: TlsConfig) -> Result<Tls, Error> {
        Ok(Tls {
            server: Arc::new(config.server_config()?),
            client: Arc::new(config.client_config()?),
            config,
        })
    }
}

/// Shared, swappable [`Tls`].
#[derive(Debug)]
pub(crate) struct LiveTls(RwLock<Arc<Tls>>);

impl LiveTls {
    pub(crate) fn get(&self) -> Arc<Tls> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, tls: Tls) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
    }
}

#[derive(Debug)]
enum Kind {
    Quic {
        /// The listening endpoint, if any; connects to its address family use it.
        listener: Option<quinn::Endpoint>,
        /// Ephemeral client-only endpoints, by family (v4, v6), made on first use.
        clients: Box<Mutex<[Option<quinn::Endpoint>; 2]>>,
    },
    Tcp,
}

/// A local endpoint: accepts connections on its address and connects out.
///
/// [`Endpoint::bind`] listens; [`Endpoint::client`] only connects out.
/// Incoming handshakes are bounded by [`HandshakeLimits`]; every refused or
/// failed incoming connection is counted by reason in [`Endpoint::stats`] and
/// reported to [`Endpoint::failures`] subscribers.
#[derive(Debug)]
pub struct Endpoint {
    kind: Kind,
    config: Arc<EndpointConfig>,
    tls: Arc<LiveTls>,
    local_addr: Option<SocketAddr>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Connection>>,
    counters: Arc<Counters>,
    admission: Arc<Admission>,
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
    /// The address cannot be bound or the configuration (TLS included) is unusable.
    pub async fn bind(addr: SocketAddr, config: EndpointConfig) -> Result<Endpoint, Error> {
        Self::open(Some(addr), config).await
    }

    /// An endpoint that only connects out: it listens on nothing (QUIC binds
    /// an ephemeral UDP port of the destination's address family on first
    /// connect, with no server configuration; TCP opens no listener), and
    /// [`Endpoint::accept`] returns `None` at once.
    ///
    /// # Errors
    /// The configuration (TLS included) is unusable.
    pub async fn client(config: EndpointConfig) -> Result<Endpoint, Error> {
        Self::open(None, config).await
    }

    async fn open(addr: Option<SocketAddr>, config: EndpointConfig) -> Result<Endpoint, Error> {
        // The CPU load is measured between two samples: take the first now,
        // so the first stream to compress already has a figure.
        let _ = crate::cpu_load::current();
        config.validate()?;
        let tls = Arc::new(LiveTls(RwLock::new(Arc::new(Tls::build(
            config.tls.clone(),
        )?))));
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let admission = Admission::new(config.handshake_limits);
        let (tx, rx) = mpsc::channel(config.accept_backlog.max(1));
        let mut tasks = Vec::new();
        let (kind, local_addr) = match (config.transport, addr) {
            (Transport::Quic, Some(addr)) => {
                let ep = quic::bind(addr, &config, &tls.get())?;
                let local = ep.local_addr()?;
                tasks.push(tokio::spawn(quic::accept_loop(
                    ep.clone(),
                    config.clone(),
                    tx,
                    counters.clone(),
                    admission.clone(),
                )));
                let kind = Kind::Quic {
                    listener: Some(ep),
                    clients: Box::default(),
                };
                (kind, Some(local))
            }
            (Transport::Tcp, Some(addr)) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let local = listener.local_addr()?;
                tasks.push(tokio::spawn(tcp::accept_loop(
                    listener,
                    config.clone(),
                    tls.clone(),
                    tx,
                    counters.clone(),
                    admission.clone(),
                )));
                (Kind::Tcp, Some(local))
            }
            (Transport::Quic, None) => (
                Kind::Quic {
                    listener: None,
                    clients: Box::default(),
                },
                None,
            ),
            (Transport::Tcp, None) => (Kind::Tcp, None),
        };
        if local_addr.is_some() {
            tasks.push(tokio::spawn(refusals::flush_loop(counters.clone())));
        }
        // A client-only endpoint dropped `tx`: `accept` ends at once.
        Ok(Endpoint {
            kind,
            config,
            tls,
            local_addr,
            incoming: tokio::sync::Mutex::new(rx),
            counters,
            admission,
            tasks,
        })
    }

    /// The bound address; `0.0.0.0:0` for a client-only endpoint (see
    /// [`Endpoint::listen_addr`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The listening address; `None` for a client-only endpoint.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The TLS configuration in force (the last one given to
    /// [`Endpoint::set_tls`], else the configuration's).
    pub fn tls(&self) -> TlsConfig {
        self.tls.get().config.clone()
    }

    /// Replaces the TLS identity and trusted CAs. New connections, incoming
    /// and outgoing, use the new ones; established connections are not
    /// touched.
    ///
    /// # Errors
    /// The new configuration is unusable; the old one stays in force.
    pub fn set_tls(&self, tls: TlsConfig) -> Result<(), Error> {
        let built = Tls::build(tls)?;
        if let Kind::Quic {
            listener: Some(ep), ..
        } = &self.kind
        {
            let local = ep.local_addr()?;
            ep.set_server_config(Some(quic::server_config(&self.config, &built, local)?));
        }
        self.tls.set(built);
        Ok(())
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
        let tls = self.tls.get();
        let fut = async {
            match &self.kind {
                Kind::Quic { listener, clients } => {
                    let ep = self.quic_for(addr, listener.as_ref(), clients)?;
                    quic::connect(&ep, &self.config, &tls, addr, server_name).await
                }
                Kind::Tcp => tcp::connect(&self.config, &tls, addr, server_name).await,
            }
        };
        tokio::time::timeout(self.config.handshake_timeout, fut)
            .await
            .map_err(|_| Error::Timeout("connect"))?
    }

    /// The quinn endpoint to dial `addr` from: the listener if its family
    /// matches, else an ephemeral client endpoint of the right family.
    fn quic_for(
        &self,
        addr: SocketAddr,
        listener: Option<&quinn::Endpoint>,
        clients: &Mutex<[Option<quinn::Endpoint>; 2]>,
    ) -> Result<quinn::Endpoint, Error> {
        if let Some(ep) = listener {
            if ep.local_addr().is_ok_and(|l| l.is_ipv4() == addr.is_ipv4()) {
                return Ok(ep.clone());
            }
        }
        let mut c = clients.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut c[usize::from(addr.is_ipv6())];
        if let Some(ep) = slot {
            return Ok(ep.clone());
        }
        let any: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let ep = quic::bind_client(any, &self.config)?;
        *slot = Some(ep.clone());
        Ok(ep)
    }

    /// The next established incoming connection; `None` once the endpoint
    /// stopped, and at once for a client-only endpoint.
    ///
    /// Connections that fail or are refused before they are established
    /// never appear here; see [`Endpoint::failures`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn accept(&self) -> Option<Connection> {
        self.incoming.lock().await.recv().await
    }

    /// Subscribes to the endpoint's failures: every incoming connection
    /// refused or failed before it was established (TLS, timeout, DWCP
    /// handshake, handshake limit, full backlog, listener `accept` errors),
    /// from now on. The queue is bounded; see [`AcceptFailures`].
    pub fn failures(&self) -> AcceptFailures {
        self.counters.subscribe()
    }

    /// Records that the application refused an established incoming
    /// connection (for example an identity it does not know), so that the
    /// refusal is counted, logged (rate-limited) and reported like the
    /// endpoint's own.
    pub fn refused(&self, reason: RefusalReason, remote: Option<SocketAddr>, detail: &str) {
        self.counters.failed(reason, remote, detail);
    }

    /// Accept counters.
    pub fn stats(&self) -> EndpointStats {
        let by_reason = self.counters.by_reason();
        EndpointStats {
            accepted: self.counters.accepted_count(),
            handshake_failures: by_reason.iter().map(|(_, n)| n).sum(),
            failures_by_reason: by_reason,
            retries: self.counters.retry_count(),
            handshakes_in_progress: self.admission.pending() as u64,
            handshakes_peak: self.admission.peak() as u64,
            last_failure: self.counters.last_failure(),
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
