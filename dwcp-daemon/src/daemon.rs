//! The daemon: listeners, peers, tunnels and the admin server, wired from a
//! [`Config`], with readiness and a graceful drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwcp_core::net::{Endpoint, EndpointConfig, HandshakeLimits, Transport};
use dwcp_core::scheduler::ClassConfig;
use dwcp_core::tls::TlsConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{self, Config, PeerTransport};
use crate::peers::{self, Peer};
use crate::registry::Registry;
use crate::tunnel::{self, Tunnel};
use crate::{admin, telemetry};

/// Share of `link.rate_mbps` given to DWCP frames; the rest carries the
/// transport's headers.
const WIRE_SHARE_OF_LINK_RATE: f64 = 0.92;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS files could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] dwcp_core::tls::TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A DWCP endpoint could not start.
    #[error("endpoint {addr}: {source}")]
    Endpoint {
        /// The address.
        addr: String,
        /// Why.
        source: dwcp_core::net::Error,
    },
    /// Anything else in the configuration that only shows at start.
    #[error("{0}")]
    Config(String),
}

/// State shared by every task of a daemon and by the admin server.
#[derive(Debug)]
pub struct State {
    /// The configuration in force.
    pub config: Config,
    /// Peers by name.
    pub peers: BTreeMap<String, Arc<Peer>>,
    services: BTreeMap<String, config::Service>,
    classes: Vec<config::Class>,
    /// Tunnelled connections in progress.
    pub registry: Arc<Registry>,
    /// Tunnels and the address each listens on.
    pub tunnels: Vec<(Arc<Tunnel>, SocketAddr)>,
    draining: watch::Sender<bool>,
    ready: AtomicBool,
    /// When the daemon started.
    pub started: Instant,
    /// Bound data-plane listeners (`quic`/`tcp` → address).
    pub listeners: BTreeMap<&'static str, SocketAddr>,
    /// Admin token for mutating endpoints from non-loopback callers.
    pub admin_token: Option<String>,
    /// Every DWCP endpoint (listening or dial-only) with its transport name.
    pub endpoints: Vec<(&'static str, Arc<Endpoint>)>,
}

impl State {
    /// The peer of that name.
    pub fn peer(&self, name: &str) -> Option<Arc<Peer>> {
        self.peers.get(name).cloned()
    }

    /// The declared service of that name.
    pub fn service(&self, name: &str) -> Option<&config::Service> {
        self.services.get(name)
    }

    /// The name of class `id` (its number if unknown).
    pub fn class_name(&self, id: u8) -> String {
        self.classes
            .get(id as usize)
            .map_or_else(|| id.to_string(), |c| c.name.clone())
    }

    /// The classes, in id order.
    pub fn classes(&self) -> &[config::Class] {
        &self.classes
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// A receiver that turns `true` when draining begins.
    pub fn draining_signal(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Listeners bound and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.is_draining()
    }

    /// Starts draining: readiness goes to 503, tunnel listeners close, every
    /// peer gets a GOAWAY (no new streams), open streams go on. Idempotent.
    pub fn begin_drain(&self, why: &str) {
        if self.draining.send_replace(true) {
            return;
        }
        tracing::info!(reason = why, open_streams = self.registry.len(), "draining");
        metrics::gauge!("dwcp_draining").set(1.0);
        for p in self.peers.values() {
            if let Some(c) = p.connection() {
                c.goaway(why);
            }
        }
    }
}

/// Resolves when `rx` turns `true` (or its sender is gone).
pub async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await;
}

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
    admin: admin::Handle,
}

/// Outcome of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Streams still open when the grace period ran out (reset).
    pub cut: usize,
    /// How long draining took.
    pub took: Duration,
}

fn endpoint_config(config: &Config, tls: &TlsConfig, transport: Transport) -> EndpointConfig {
    let mut ec = EndpointConfig::new(tls.clone(), transport);
    ec.protocol.max_streams = config.limits.max_streams;
    ec.protocol.idle_timeout = Duration::from_secs(config.limits.idle_timeout_secs);
    let mbit = |m: f64| (m * 1e6 / 8.0) as u64;
    let classes = config.class_list();
    // Sent in HELLO: the peer maps its class ids to ours by name, so the two
    // configurations may list classes in any order.
    ec.protocol.class_names = classes.iter().map(|c| c.name.clone()).collect();
    ec.protocol.classes = classes
        .iter()
        .enumerate()
        .map(|(i, c)| ClassConfig {
            class: i as u8,
            weight: c.weight,
            min_rate: c.min_mbps.map(mbit),
            max_rate: c.max_mbps.map(mbit),
        })
        .collect();
    // The cap counts DWCP frame bytes on the wire (compressed sizes); the
    // transport's own headers (IP, UDP/TCP, QUIC or TLS records: about 4 % at
    // full-size packets, plus retransmissions) come on top, so the frames get
    // 92 % of the link.
    ec.protocol.rate_limit = config
        .link
        .rate_mbps
        .map(|m| mbit(m * WIRE_SHARE_OF_LINK_RATE));
    ec.link_rate_bps = config.link.rate_mbps.map(|m| (m * 1e6) as u64);
    ec.tcp.lanes = config.link.tcp_lanes;
    ec.interactive_copies = config.link.interactive_copies;
    ec.handshake_timeout = Duration::from_secs(config.limits.handshake_timeout_secs);
    ec.handshake_limits = HandshakeLimits {
        max_pending: config.limits.max_handshakes,
        max_pending_per_source: config.limits.max_handshakes_per_source,
        retry_above: config.limits.handshake_retry_above,
    };
    ec.congestion = match config.link.congestion {
        config::CongestionName::Bbr => dwcp_core::net::Congestion::Bbr,
        config::CongestionName::Cubic => dwcp_core::net::Congestion::Cubic,
        config::CongestionName::Newreno => dwcp_core::net::Congestion::NewReno,
        config::CongestionName::Dwcp => dwcp_core::net::Congestion::Dwcp,
    };
    ec
}

fn parse_addr(what: &str, v: &str) -> Result<SocketAddr, StartError> {
    v.parse()
        .map_err(|_| StartError::Config(format!("{what}: {v:?} is not IP:port")))
}

/// Loads the TLS files `config` names (`tls.cert`, `tls.key`, `tls.ca`) and
/// builds the server and client TLS configurations from them, as `run`
/// does before it starts: a certificate whose key does not match fails
/// here. Returns the configuration and the three paths.
///
/// # Errors
/// A path is not set, a file is missing or unreadable or holds no
/// certificate or key, or the certificate and key do not match.
pub fn load_tls(config: &Config) -> Result<(TlsConfig, [std::path::PathBuf; 3]), StartError> {
    let (Some(cert), Some(key), Some(ca)) = (&config.tls.cert, &config.tls.key, &config.tls.ca)
    else {
        return Err(StartError::Config(
            "tls.cert, tls.key and tls.ca are required".into(),
        ));
    };
    let tls = TlsConfig::from_pem_files(cert, key, ca).map_err(|e| match e {
        // Name the key as well as the file.
        dwcp_core::tls::TlsError::Pem { path, what } => {
            let key_name = [(cert, "tls.cert"), (key, "tls.key"), (ca, "tls.ca")]
                .iter()
                .find(|(p, _)| p.display().to_string() == path)
                .map_or("tls", |(_, k)| *k);
            StartError::Config(format!("{key_name} {path}: {what}"))
        }
        other => StartError::Tls(other),
    })?;
    let unusable = |e: dwcp_core::tls::TlsError| {
        StartError::Config(format!(
            "tls.cert {} and tls.key {} (CA tls.ca {}): {e}",
            cert.display(),
            key.display(),
            ca.display()
        ))
    };
    tls.server_config().map_err(unusable)?;
    tls.client_config().map_err(unusable)?;
    Ok((tls, [cert.clone(), key.clone(), ca.clone()]))
}

impl Daemon {
    /// Loads the TLS files named in `config` and starts.
    ///
    /// # Errors
    /// As [`Daemon::start_with_tls`], plus unreadable TLS files.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let (tls, paths) = load_tls(&config)?;
        let every = Duration::from_secs(config.tls.reload_secs);
        let mut d = Daemon::start_with_tls(config, tls).await?;
        if !every.is_zero() {
            d.tasks.push(tokio::spawn(crate::reload::watch(
                d.state.clone(),
                paths,
                every,
            )));
        }
        Ok(d)
    }

    /// Starts every listener and task; the daemon is ready when this returns.
    ///
    /// # Errors
    /// A listener cannot be bound, or the configuration is unusable.
    pub async fn start_with_tls(config: Config, tls: TlsConfig) -> Result<Daemon, StartError> {
        telemetry::install();
        telemetry::record_cert_expiry(&tls.identity);
        let admin_token = config.admin_token().map_err(StartError::Config)?;
        let mut listeners = BTreeMap::new();
        let mut endpoints = Vec::new();
        let mut quic = None;
        let mut tcp = None;
        for (kind, addr, transport) in [
            ("quic", &config.listen.quic, Transport::Quic),
            ("tcp", &config.listen.tcp, Transport::Tcp),
        ] {
            if addr.is_empty() {
                continue;
            }
            let a = parse_addr(&format!("listen.{kind}"), addr)?;
            let ep = Arc::new(
                Endpoint::bind(a, endpoint_config(&config, &tls, transport))
                    .await
                    .map_err(|source| StartError::Endpoint {
                        // Name the key too: `listen.quic 127.0.0.1:4433`.
                        addr: format!("listen.{kind} {addr}"),
                        source,
                    })?,
            );
            listeners.insert(kind, ep.local_addr());
            endpoints.push((kind, ep.clone()));
            match transport {
                Transport::Quic => quic = Some(ep),
                Transport::Tcp => tcp = Some(ep),
            }
        }
        // Dialling endpoints: the listener of that transport, or a dial-only
        // endpoint that listens on nothing.
        let mut dialers: BTreeMap<&'static str, Arc<Endpoint>> = BTreeMap::new();
        for p in config.peers.iter().filter(|p| p.address.is_some()) {
            let (kind, t, existing) = match p.transport {
                PeerTransport::Quic => ("quic", Transport::Quic, &quic),
                PeerTransport::Tcp => ("tcp", Transport::Tcp, &tcp),
            };
            if dialers.contains_key(kind) {
                continue;
            }
            let ep = match existing {
                Some(ep) => ep.clone(),
                None => {
                    let ep = Arc::new(
                        Endpoint::client(endpoint_config(&config, &tls, t))
                            .await
                            .map_err(|source| StartError::Endpoint {
                                addr: format!("{kind} (dial only)"),
                                source,
                            })?,
                    );
                    endpoints.push((kind, ep.clone()));
                    ep
                }
            };
            dialers.insert(kind, ep);
        }

        let peers: BTreeMap<String, Arc<Peer>> = config
            .peers
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Peer::new(p.clone()))))
            .collect();
        let classes = config.class_list();
        dwcp_core::labels::set_class_names(
            &classes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        );
        let mut tunnels = Vec::new();
        let mut tunnel_listeners = Vec::new();
        for t in &config.tunnels {
            let Some(peer) = peers.get(&t.peer).cloned() else {
                return Err(StartError::Config(format!(
                    "tunnel {}: unknown peer {}",
                    t.name, t.peer
                )));
            };
            let class_id = match &t.class {
                Some(name) => classes.iter().position(|c| &c.name == name).unwrap_or(0),
                None => 0,
            };
            let class = &classes[class_id.min(classes.len().saturating_sub(1))];
            let compression =
                config::parse_compression(&t.compression).map_err(StartError::Config)?;
            let addr = parse_addr(&format!("tunnel {}", t.name), &t.listen)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    what: format!("tunnel {}", t.name),
                    addr: t.listen.clone(),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind {
                what: format!("tunnel {}", t.name),
                addr: t.listen.clone(),
                source,
            })?;
            let tunnel = Arc::new(Tunnel {
                name: t.name.clone(),
                peer,
                service: t.service.clone(),
                class: (class_id as u8, class.name.clone()),
                interactive: class.interactive,
                compression,
            });
            tunnels.push((tunnel.clone(), local));
            tunnel_listeners.push((tunnel, listener));
        }

        let admin_addr = parse_addr("admin.listen", &config.admin.listen)?;
        let state = Arc::new(State {
            services: config
                .services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            peers,
            classes,
            registry: Arc::default(),
            tunnels,
            draining: watch::channel(false).0,
            ready: AtomicBool::new(false),
            started: Instant::now(),
            listeners,
            admin_token,
            endpoints,
            config,
        });
        let admin_limits = admin::AdminLimits {
            max_connections: state.config.admin.max_connections,
            max_connections_per_source: state.config.admin.max_connections_per_source,
            header_timeout: Duration::from_secs(state.config.admin.header_timeout_secs),
            ..admin::AdminLimits::default()
        };
        let admin = admin::start(state.clone(), admin_addr, admin_limits).map_err(|source| {
            StartError::Bind {
                what: "admin".into(),
                addr: admin_addr.to_string(),
                source,
            }
        })?;

        let mut tasks = Vec::new();
        for (kind, ep) in [("quic", &quic), ("tcp", &tcp)] {
            if let Some(ep) = ep {
                tasks.push(tokio::spawn(peers::accept_loop(
                    state.clone(),
                    ep.clone(),
                    kind,
                )));
            }
        }
        for p in state.peers.values() {
            let kind = p.config.transport.as_str();
            if let Some(ep) = dialers.get(kind) {
                tasks.push(tokio::spawn(peers::maintain(
                    state.clone(),
                    p.clone(),
                    ep.clone(),
                )));
            }
        }
        for (t, l) in tunnel_listeners {
            tasks.push(tokio::spawn(tunnel::serve(state.clone(), l, t)));
        }
        tasks.push(tokio::spawn(telemetry::sample_loop(state.clone())));
        state.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            node = %state.config.node.name,
            listeners = ?state.listeners,
            admin = %admin.addr,
            tunnels = state.tunnels.len(),
            services = state.services.len(),
            "dwcp-daemon ready"
        );
        Ok(Daemon {
            state,
            tasks,
            admin,
        })
    }

    /// Shared state (for status and tests).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// The admin server's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    /// Drains: see [`State::begin_drain`], then waits up to `grace` for open
    /// streams to finish.
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        let start = Instant::now();
        self.state.begin_drain("shutting down");
        let done = tokio::time::timeout(grace, self.state.registry.wait_empty()).await;
        let cut = if done.is_ok() {
            0
        } else {
            self.state.registry.len()
        };
        if cut > 0 {
            tracing::warn!(
                cut,
                ?grace,
                "grace period over; resetting the streams still open"
            );
        }
        DrainReport {
            cut,
            took: start.elapsed(),
        }
    }

    /// Closes every connection and stops every task.
    pub async fn shutdown(self) {
        for p in self.state.peers.values() {
            if let Some(c) = p.connection() {
                c.close(dwcp_core::ErrorCode::NoError, "daemon stopping");
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        self.admin.stop();
        // Let the closes reach the wire.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
