//! The configuration's shape: one struct per TOML table, with its defaults.

use std::path::PathBuf;

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node.
    pub node: Node,
    /// Mutual-TLS files.
    pub tls: Tls,
    /// Data-plane listeners.
    pub listen: Listen,
    /// Admin HTTP server.
    pub admin: Admin,
    /// Logging.
    pub log: Log,
    /// Shutdown behaviour.
    pub lifecycle: Lifecycle,
    /// `[runtime]`.
    pub runtime: Runtime,
    /// Protocol limits.
    pub limits: Limits,
    /// The WAN link, if known.
    pub link: Link,
    /// Reconnection backoff.
    pub reconnect: Reconnect,
    /// Peer daemons.
    pub peers: Vec<Peer>,
    /// Traffic classes.
    pub classes: Vec<Class>,
    /// Services this daemon lets peers reach.
    pub services: Vec<Service>,
    /// Local listeners carried to a peer's service.
    pub tunnels: Vec<Tunnel>,
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    /// This node's name, as in its certificate (informational).
    pub name: String,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            name: "dwcp".into(),
        }
    }
}

/// `[tls]`: PEM files. All three are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// This node's certificate chain.
    pub cert: Option<PathBuf>,
    /// This node's private key.
    pub key: Option<PathBuf>,
    /// The CA that signs every peer's certificate.
    pub ca: Option<PathBuf>,
    /// Seconds between checks of the three files for a new certificate,
    /// key or CA (mounted secrets are swapped by symlink); `0` disables
    /// reloading. Default 5.
    pub reload_secs: u64,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            ca: None,
            reload_secs: 5,
        }
    }
}

/// `[listen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// QUIC (UDP) listener; `""` disables it.
    pub quic: String,
    /// TCP-lanes listener; `""` (default) disables it.
    pub tcp: String,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            quic: "0.0.0.0:4433".into(),
            tcp: String::new(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Admin HTTP address (metrics, health, status).
    pub listen: String,
    /// Bearer token that allows mutating endpoints from non-loopback callers.
    pub token: Option<String>,
    /// File holding the token (for Kubernetes secrets); read at start.
    pub token_file: Option<PathBuf>,
    /// Admin connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Admin connections open at once from one address; more are closed at once.
    pub max_connections_per_source: usize,
    /// Seconds a client has to send a request's headers (and to send the
    /// next request on a kept-alive connection) before it is closed.
    pub header_timeout_secs: u64,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "0.0.0.0:9090".into(),
            token: None,
            token_file: None,
            max_connections: 256,
            max_connections_per_source: 16,
            header_timeout_secs: 5,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `dwcp_core=debug,info`...
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[lifecycle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// After SIGTERM, how long open streams may take to finish (seconds).
    pub drain_grace_secs: u64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            drain_grace_secs: 30,
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Threads that run the tunnels and the transport (tokio workers);
    /// `0` picks [`dwcp_core::cpu::transport_threads_for`] the cores this
    /// process may use. Compression has threads of its own.
    pub worker_threads: usize,
}

impl Runtime {
    /// The worker threads to start: the configured number, or the automatic
    /// one for `budget` cores.
    pub fn workers_for(&self, budget: f64) -> usize {
        match self.worker_threads {
            0 => dwcp_core::cpu::transport_threads_for(budget),
            n => n,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent streams a peer may open on one connection.
    pub max_streams: u32,
    /// Concurrent connections one tunnel accepts; more wait in the backlog.
    pub max_connections_per_tunnel: usize,
    /// Seconds to connect to a service's target before refusing the stream.
    pub connect_timeout_secs: u64,
    /// Seconds without hearing from a peer before its connection is declared
    /// dead (keepalive PINGs go every second).
    pub idle_timeout_secs: u64,
    /// Seconds an incoming peer connection has to finish its TLS and DWCP
    /// handshakes.
    pub handshake_timeout_secs: u64,
    /// Incoming handshakes in progress at once, from all sources.
    pub max_handshakes: usize,
    /// Incoming handshakes in progress at once from one source address.
    pub max_handshakes_per_source: usize,
    /// QUIC: above this many handshakes in progress, clients must first
    /// prove their address (a Retry round trip).
    pub handshake_retry_above: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let h = dwcp_core::net::HandshakeLimits::default();
        Limits {
            max_streams: 10_000,
            max_connections_per_tunnel: 1024,
            connect_timeout_secs: 5,
            idle_timeout_secs: 30,
            handshake_timeout_secs: 5,
            max_handshakes: h.max_pending,
            max_handshakes_per_source: h.max_pending_per_source,
            handshake_retry_above: h.retry_above,
        }
    }
}

/// `[link]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Link {
    /// The WAN rate in Mbit/s, if known: caps what is sent and feeds the
    /// adaptive compression. Unset: measured.
    pub rate_mbps: Option<f64>,
    /// TCP lanes per connection for peers with `transport = "tcp"`.
    pub tcp_lanes: usize,
    /// QUIC congestion control: `dwcp` (default), `bbr`, `cubic` or `newreno`.
    pub congestion: CongestionName,
    /// QUIC: send small interactive writes again as a datagram, so a lost
    /// packet does not cost them a round trip (far or lossy paths only).
    pub interactive_copies: bool,
}

/// QUIC congestion controller names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CongestionName {
    /// quinn's BBR: keeps throughput under random loss (WAN paths), with a
    /// standing queue of 30-50 ms, and starves a kernel CUBIC flow beside it
    /// (experimental upstream).
    Bbr,
    /// CUBIC: fastest on clean, short paths.
    Cubic,
    /// NewReno.
    Newreno,
    /// DWCP's own model-based controller (see `dwcp_core::net::congestion`):
    /// fills a clean WAN path with a few milliseconds of queue, keeps its
    /// rate under random loss, and leaves room for TCP beside it.
    #[default]
    Dwcp,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            rate_mbps: None,
            tcp_lanes: 4,
            congestion: CongestionName::default(),
            interactive_copies: true,
        }
    }
}

/// `[reconnect]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reconnect {
    /// First delay after a failed or lost connection (milliseconds).
    pub initial_ms: u64,
    /// Longest delay (milliseconds); delays double up to it, with full jitter.
    pub max_ms: u64,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_ms: 200,
            max_ms: 30_000,
        }
    }
}

/// Transport of a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PeerTransport {
    /// QUIC over UDP.
    #[default]
    Quic,
    /// Parallel TCP lanes.
    Tcp,
}

impl PeerTransport {
    /// `quic` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerTransport::Quic => "quic",
            PeerTransport::Tcp => "tcp",
        }
    }
}

/// `[[peers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The peer's name: the DNS name in its certificate.
    pub name: String,
    /// `host:port` to dial; without it this daemon only accepts the peer.
    #[serde(default)]
    pub address: Option<String>,
    /// `quic` (default) or `tcp`.
    #[serde(default)]
    pub transport: PeerTransport,
}

/// `[[classes]]`: a traffic class. Its id is its position in the list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    /// Name used by tunnels.
    pub name: String,
    /// Share of the link relative to other classes.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Guaranteed rate while the class has data (Mbit/s).
    #[serde(default)]
    pub min_mbps: Option<f64>,
    /// Rate the class never exceeds (Mbit/s).
    #[serde(default)]
    pub max_mbps: Option<f64>,
    /// Latency-sensitive small messages (kept off bulk TCP lanes).
    #[serde(default)]
    pub interactive: bool,
}

fn default_weight() -> u32 {
    1
}

/// `[[services]]`: a target peers may reach, by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name peers ask for.
    pub name: String,
    /// `host:port` the daemon connects to.
    pub target: String,
    /// Peers allowed to use it; no other peer can.
    pub allowed_peers: Vec<String>,
}

/// `[[tunnels]]`: a local listener whose connections go to a peer's service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    /// Name in logs and status.
    pub name: String,
    /// Local address applications connect to.
    pub listen: String,
    /// Peer that serves it.
    pub peer: String,
    /// Service name declared by that peer.
    pub service: String,
    /// Traffic class name (default: the first class).
    #[serde(default)]
    pub class: Option<String>,
    /// `adaptive` (default), `off`, `lz4`, `zstd` or `zstd:LEVEL`.
    #[serde(default = "default_compression")]
    pub compression: String,
}

fn default_compression() -> String {
    "adaptive".into()
}

impl Config {
    /// The classes in use: the configured ones, or the defaults
    /// (`interactive`, weight 4, and `bulk`, weight 1).
    pub fn class_list(&self) -> Vec<Class> {
        if !self.classes.is_empty() {
            return self.classes.clone();
        }
        vec![
            Class {
                name: "bulk".into(),
                weight: 1,
                min_mbps: None,
                max_mbps: None,
                interactive: false,
            },
            Class {
                name: "interactive".into(),
                weight: 4,
                min_mbps: None,
                max_mbps: None,
                interactive: true,
            },
        ]
    }

    /// The admin token: `admin.token` or the contents of `admin.token_file`.
    ///
    /// # Errors
    /// The token file cannot be read or is empty.
    pub fn admin_token(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.admin.token {
            return Ok(Some(t.clone()));
        }
        match &self.admin.token_file {
            None => Ok(None),
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| format!("admin.token_file {}: {e}", p.display()))?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    Err(format!("admin.token_file {} is empty", p.display()))
                } else {
                    Ok(Some(t))
                }
            }
        }
    }
}
