//! The daemon's configuration: one TOML file, overridable by `DWCP_*`
//! environment variables and `--set key=value` flags.
//!
//! Every key, its default and its meaning is in `docs/configuration.md`.
//! Errors name the key and the line it is on.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// QUIC congestion control: `bbr` (default), `cubic` or `newreno`.
    pub congestion: CongestionName,
}

/// QUIC congestion controller names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CongestionName {
    /// BBR: keeps throughput under random loss (WAN paths).
    #[default]
    Bbr,
    /// CUBIC: fastest on clean, short paths.
    Cubic,
    /// NewReno.
    Newreno,
    /// DWCP's own model-based controller (see `dwcp_core::net::congestion`).
    Dwcp,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            rate_mbps: None,
            tcp_lanes: 4,
            congestion: CongestionName::default(),
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

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path (`tunnels[0].peer`), or `""` for the whole file.
    pub key: String,
    /// 1-based line in the file, if the key is in the file.
    pub line: Option<usize>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems; every one found is listed.
    #[error("{} has {} problem(s):\n{}", origin, issues.len(), issues.iter().map(|i| format!("  {origin}: {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file name, or `<built-in>`.
        origin: String,
        /// The problems.
        issues: Vec<Issue>,
    },
}

/// Keys that `DWCP_*` variables and `--set` may override, with their types.
pub const OVERRIDABLE: &[(&str, Kind)] = &[
    ("node.name", Kind::Str),
    ("tls.cert", Kind::Str),
    ("tls.key", Kind::Str),
    ("tls.ca", Kind::Str),
    ("tls.reload_secs", Kind::Int),
    ("listen.quic", Kind::Str),
    ("listen.tcp", Kind::Str),
    ("admin.listen", Kind::Str),
    ("admin.token", Kind::Str),
    ("admin.token_file", Kind::Str),
    ("admin.max_connections", Kind::Int),
    ("admin.max_connections_per_source", Kind::Int),
    ("admin.header_timeout_secs", Kind::Int),
    ("log.format", Kind::Str),
    ("log.level", Kind::Str),
    ("lifecycle.drain_grace_secs", Kind::Int),
    ("limits.max_streams", Kind::Int),
    ("limits.max_connections_per_tunnel", Kind::Int),
    ("limits.connect_timeout_secs", Kind::Int),
    ("limits.idle_timeout_secs", Kind::Int),
    ("limits.handshake_timeout_secs", Kind::Int),
    ("limits.max_handshakes", Kind::Int),
    ("limits.max_handshakes_per_source", Kind::Int),
    ("limits.handshake_retry_above", Kind::Int),
    ("link.rate_mbps", Kind::Float),
    ("link.tcp_lanes", Kind::Int),
    ("link.congestion", Kind::Str),
    ("reconnect.initial_ms", Kind::Int),
    ("reconnect.max_ms", Kind::Int),
];

/// Type of an overridable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
}

/// The environment variable for a key: `admin.listen` → `DWCP_ADMIN_LISTEN`.
pub fn env_name(key: &str) -> String {
    format!("DWCP_{}", key.replace('.', "_").to_uppercase())
}

/// Collects overrides from the environment (`DWCP_*` for the keys in
/// [`OVERRIDABLE`]), then from `--set key=value` flags (which win).
///
/// # Errors
/// A `--set` flag without `=` or naming a key that cannot be overridden.
pub fn overrides(
    env: impl Fn(&str) -> Option<String>,
    flags: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (key, _) in OVERRIDABLE {
        if let Some(v) = env(&env_name(key)) {
            out.push((key.to_string(), v));
        }
    }
    for f in flags {
        let Some((k, v)) = f.split_once('=') else {
            return Err(format!("--set {f:?}: expected KEY=VALUE"));
        };
        let k = k.trim();
        if !OVERRIDABLE.iter().any(|(key, _)| *key == k) {
            return Err(format!(
                "--set {k}: not an overridable key (overridable: {})",
                OVERRIDABLE
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Applies overrides to the document's text form: each becomes a `key = value`
/// line in its table, replacing the file's value.
fn apply_overrides(table: &mut toml::Table, overrides: &[(String, String)]) -> Result<(), Issue> {
    for (key, raw) in overrides {
        let kind = OVERRIDABLE
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Kind::Str, |(_, kind)| *kind);
        let value = match kind {
            Kind::Str => toml::Value::String(raw.clone()),
            Kind::Int => raw
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| Issue {
                    key: key.clone(),
                    line: None,
                    message: format!("override {}={raw:?}: expected an integer", env_name(key)),
                })?,
            Kind::Float => raw
                .trim()
                .parse::<f64>()
                .map(toml::Value::Float)
                .map_err(|_| Issue {
                    key: key.clone(),
                    line: None,
                    message: format!("override {}={raw:?}: expected a number", env_name(key)),
                })?,
        };
        let mut parts = key.split('.');
        let (Some(section), Some(field)) = (parts.next(), parts.next()) else {
            continue;
        };
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(field.to_string(), value);
        }
    }
    Ok(())
}

/// 1-based line of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Where a dotted key path (`tunnels[1].peer`) is in the document.
fn span_of(src: &str, path: &str) -> Option<std::ops::Range<usize>> {
    let doc = toml::de::DeTable::parse(src).ok()?;
    let mut span = doc.span();
    let mut table = Some(doc.get_ref());
    for seg in path.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let (k, v) = table?.iter().find(|(k, _)| k.get_ref() == name)?;
        span = k.span();
        let mut value = v.get_ref();
        if let Some(i) = index {
            let toml::de::DeValue::Array(a) = v.get_ref() else {
                return Some(span);
            };
            let item = a.get(i)?;
            span = item.span();
            value = item.get_ref();
        }
        table = match value {
            toml::de::DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    Some(span)
}

/// Parses and validates configuration text; `origin` names it in errors.
///
/// # Errors
/// Every problem found, each with its key and line.
pub fn parse(
    src: &str,
    origin: &str,
    overrides: &[(String, String)],
) -> Result<Config, ConfigError> {
    let invalid = |issues: Vec<Issue>| ConfigError::Invalid {
        origin: origin.to_string(),
        issues,
    };
    // Syntax and types first, against the text as written (for spans).
    let mut table: toml::Table = match toml::from_str(src) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| line_of(src, s.start));
            return Err(invalid(vec![Issue {
                key: String::new(),
                line,
                message: e.message().trim().to_string(),
            }]));
        }
    };
    if let Err(e) = toml::from_str::<Config>(src) {
        let line = e.span().map(|s| line_of(src, s.start));
        return Err(invalid(vec![Issue {
            key: String::new(),
            line,
            message: e.message().trim().to_string(),
        }]));
    }
    apply_overrides(&mut table, overrides).map_err(|i| invalid(vec![i]))?;
    let config = Config::deserialize(toml::Value::Table(table)).map_err(|e| {
        invalid(vec![Issue {
            key: String::new(),
            line: None,
            message: format!("after overrides: {}", e.message().trim()),
        }])
    })?;
    let mut issues = config.validate();
    for i in &mut issues {
        i.line = span_of(src, &i.key).map(|s| line_of(src, s.start));
    }
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(invalid(issues))
    }
}

/// Reads, parses and validates a file.
///
/// # Errors
/// The file cannot be read, or [`parse`] fails.
pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&src, &path.display().to_string(), overrides)
}

/// Parses a `host:port` address (with a name resolved later) into a check.
fn check_host_port(v: &str) -> Result<(), String> {
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(format!("{v:?} is not host:port"));
    };
    if host.is_empty() {
        return Err(format!("{v:?} has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{v:?}: port {port:?} is not a number from 0 to 65535"))?;
    Ok(())
}

/// Parses a compression policy.
///
/// # Errors
/// Not one of `adaptive`, `off`, `lz4`, `zstd`, `zstd:LEVEL` (1 to 19).
pub fn parse_compression(v: &str) -> Result<dwcp_core::net::Compression, String> {
    use dwcp_core::net::Compression;
    use dwcp_core::CodecId;
    match v {
        "adaptive" => Ok(Compression::Adaptive),
        "off" | "none" => Ok(Compression::Off),
        "lz4" => Ok(Compression::Force(CodecId::Lz4, 0)),
        "zstd" => Ok(Compression::Force(CodecId::Zstd, 3)),
        other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
            Some(Ok(l)) if (1..=19).contains(&l) => Ok(Compression::Force(CodecId::Zstd, l)),
            _ => Err(format!(
                "{other:?} is not a compression policy: use adaptive, off, lz4, zstd or zstd:LEVEL (1-19)"
            )),
        },
    }
}

fn socket_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not an IP:port address (for example 127.0.0.1:8080)"))
}

impl Config {
    /// Checks the values and cross-references; returns every problem.
    pub fn validate(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        let mut bad = |key: String, message: String| {
            issues.push(Issue {
                key,
                line: None,
                message,
            })
        };
        for (key, v) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("tls.ca", &self.tls.ca),
        ] {
            if v.is_none() {
                bad(
                    key.into(),
                    "required: a PEM file (mutual TLS is always on)".into(),
                );
            }
        }
        if self.listen.quic.is_empty()
            && self.listen.tcp.is_empty()
            && !self.peers.iter().any(|p| p.address.is_some())
        {
            bad(
                "listen".into(),
                "no listener (quic and tcp are both off) and no peer with an address to dial: \
                 this node could neither accept nor open a connection"
                    .into(),
            );
        }
        for (key, v) in [
            ("listen.quic", &self.listen.quic),
            ("listen.tcp", &self.listen.tcp),
        ] {
            if !v.is_empty() {
                if let Err(e) = socket_addr(v) {
                    bad(key.into(), e);
                }
            }
        }
        if let Err(e) = socket_addr(&self.admin.listen) {
            bad("admin.listen".into(), e);
        }
        if self.admin.token.as_deref() == Some("") {
            bad(
                "admin.token".into(),
                "empty; remove the key to disable remote admin".into(),
            );
        }
        if self.admin.token.is_some() && self.admin.token_file.is_some() {
            bad(
                "admin.token_file".into(),
                "set either token or token_file, not both".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad(
                "log.level".into(),
                format!("{:?} is not a log filter: {e}", self.log.level),
            );
        }
        if self.lifecycle.drain_grace_secs > 3600 {
            bad("lifecycle.drain_grace_secs".into(), "at most 3600".into());
        }
        if self.limits.max_streams == 0 || self.limits.max_streams > 1_000_000 {
            bad(
                "limits.max_streams".into(),
                "must be from 1 to 1000000".into(),
            );
        }
        if self.limits.max_connections_per_tunnel == 0 {
            bad(
                "limits.max_connections_per_tunnel".into(),
                "must be at least 1".into(),
            );
        }
        if !(3..=3600).contains(&self.limits.idle_timeout_secs) {
            bad(
                "limits.idle_timeout_secs".into(),
                "must be from 3 to 3600".into(),
            );
        }
        if !(1..=120).contains(&self.limits.handshake_timeout_secs) {
            bad(
                "limits.handshake_timeout_secs".into(),
                "must be from 1 to 120".into(),
            );
        }
        for (key, v) in [
            ("limits.max_handshakes", self.limits.max_handshakes),
            (
                "limits.max_handshakes_per_source",
                self.limits.max_handshakes_per_source,
            ),
            ("admin.max_connections", self.admin.max_connections),
            (
                "admin.max_connections_per_source",
                self.admin.max_connections_per_source,
            ),
        ] {
            if v == 0 {
                bad(key.into(), "must be at least 1".into());
            }
        }
        if self.limits.max_handshakes_per_source > self.limits.max_handshakes {
            bad(
                "limits.max_handshakes_per_source".into(),
                "must not exceed limits.max_handshakes".into(),
            );
        }
        if !(1..=300).contains(&self.admin.header_timeout_secs) {
            bad(
                "admin.header_timeout_secs".into(),
                "must be from 1 to 300".into(),
            );
        }
        if self.limits.connect_timeout_secs == 0 {
            bad(
                "limits.connect_timeout_secs".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(r) = self.link.rate_mbps {
            if !(r > 0.0 && r.is_finite()) {
                bad("link.rate_mbps".into(), "must be a positive number".into());
            }
        }
        if self.link.tcp_lanes == 0 || self.link.tcp_lanes > 64 {
            bad("link.tcp_lanes".into(), "must be from 1 to 64".into());
        }
        if self.reconnect.initial_ms == 0 || self.reconnect.max_ms < self.reconnect.initial_ms {
            bad("reconnect".into(), "need 0 < initial_ms <= max_ms".into());
        }

        let mut names = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                bad(
                    format!("peers[{i}].name"),
                    format!("{:?}: empty or declared twice", p.name),
                );
            }
            if let Some(a) = &p.address {
                if let Err(e) = check_host_port(a) {
                    bad(format!("peers[{i}].address"), e);
                }
            }
        }
        let peer_list = || {
            self.peers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };

        if self.classes.len() > 256 {
            bad("classes".into(), "at most 256 classes".into());
        }
        let mut class_names = BTreeSet::new();
        // Class names travel in HELLO (classes are matched by name): a
        // length byte and the name each, within the extension room.
        let hello_room = dwcp_core::frame::MAX_EXTENSIONS_LEN - 5;
        if self.classes.iter().map(|c| 1 + c.name.len()).sum::<usize>() > hello_room {
            bad(
                "classes".into(),
                format!("names too long together: at most {hello_room} bytes, one more per class"),
            );
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.name.is_empty() || c.name.len() > dwcp_core::frame::MAX_CLASS_NAME_LEN {
                bad(
                    format!("classes[{i}].name"),
                    format!("{:?}: must be 1 to 64 bytes long", c.name),
                );
            }
            if !class_names.insert(c.name.as_str()) {
                bad(
                    format!("classes[{i}].name"),
                    format!("{:?} declared twice", c.name),
                );
            }
            if c.weight == 0 {
                bad(format!("classes[{i}].weight"), "must be at least 1".into());
            }
            for (k, v) in [("min_mbps", c.min_mbps), ("max_mbps", c.max_mbps)] {
                if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                    bad(
                        format!("classes[{i}].{k}"),
                        "must be a positive number".into(),
                    );
                }
            }
            if let (Some(min), Some(max)) = (c.min_mbps, c.max_mbps) {
                if min > max {
                    bad(
                        format!("classes[{i}].min_mbps"),
                        format!("{min} is above max_mbps {max}"),
                    );
                }
            }
        }

        let mut services = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            if s.name.is_empty() || s.name.len() > 255 || !services.insert(s.name.as_str()) {
                bad(
                    format!("services[{i}].name"),
                    format!("{:?}: empty, over 255 bytes or declared twice", s.name),
                );
            }
            if let Err(e) = check_host_port(&s.target) {
                bad(format!("services[{i}].target"), e);
            }
            if s.allowed_peers.is_empty() {
                bad(
                    format!("services[{i}].allowed_peers"),
                    "empty: no peer could use this service".into(),
                );
            }
            for (j, p) in s.allowed_peers.iter().enumerate() {
                if !names.contains(p.as_str()) {
                    bad(
                        format!("services[{i}].allowed_peers[{j}]"),
                        format!("unknown peer {p:?} (declared: {})", peer_list()),
                    );
                }
            }
        }

        let mut tunnel_names = BTreeSet::new();
        let mut listens = BTreeSet::new();
        for (i, t) in self.tunnels.iter().enumerate() {
            if !tunnel_names.insert(t.name.as_str()) {
                bad(
                    format!("tunnels[{i}].name"),
                    format!("{:?} declared twice", t.name),
                );
            }
            match socket_addr(&t.listen) {
                Ok(a) if a.port() != 0 && !listens.insert(a) => bad(
                    format!("tunnels[{i}].listen"),
                    format!("{a} used by two tunnels"),
                ),
                Ok(_) => {}
                Err(e) => bad(format!("tunnels[{i}].listen"), e),
            }
            if !names.contains(t.peer.as_str()) {
                bad(
                    format!("tunnels[{i}].peer"),
                    format!("unknown peer {:?} (declared: {})", t.peer, peer_list()),
                );
            }
            if t.service.is_empty() || t.service.len() > 255 {
                bad(
                    format!("tunnels[{i}].service"),
                    "must be 1 to 255 bytes".into(),
                );
            }
            if let Some(c) = &t.class {
                if !self.class_list().iter().any(|k| &k.name == c) {
                    bad(
                        format!("tunnels[{i}].class"),
                        format!("unknown class {c:?}"),
                    );
                }
            }
            if let Err(e) = parse_compression(&t.compression) {
                bad(format!("tunnels[{i}].compression"), e);
            }
        }
        issues
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "node-a"

[tls]
cert = "a.crt"
key = "a.key"
ca = "ca.crt"

[[peers]]
name = "node-b"
address = "10.0.0.2:4433"

[[services]]
name = "db"
target = "127.0.0.1:5432"
allowed_peers = ["node-b"]

[[tunnels]]
name = "to-db"
listen = "127.0.0.1:15432"
peer = "node-b"
service = "db"
compression = "zstd:3"
"#;

    fn issues(src: &str) -> Vec<Issue> {
        match parse(src, "t.toml", &[]) {
            Err(ConfigError::Invalid { issues, .. }) => issues,
            Ok(_) => panic!("accepted"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = parse(GOOD, "t.toml", &[]).expect("valid");
        assert_eq!(c.admin.listen, "0.0.0.0:9090");
        assert_eq!(c.lifecycle.drain_grace_secs, 30);
        assert_eq!(c.peers[0].transport, PeerTransport::Quic);
        assert_eq!(c.class_list().len(), 2);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let src = GOOD.replace("name = \"node-a\"", "name = \"node-a\"\nnmae = 1");
        let i = issues(&src);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].line, Some(4));
        assert!(
            i[0].message.contains("unknown field `nmae`"),
            "{}",
            i[0].message
        );
    }

    #[test]
    fn wrong_type_is_reported_with_its_line() {
        let src = GOOD.replace("[node]", "[lifecycle]\ndrain_grace_secs = \"soon\"\n[node]");
        let i = issues(&src);
        assert_eq!(i[0].line, Some(3), "{:?}", i);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let i = issues("[node\nname = 1\n");
        assert_eq!(i[0].line, Some(1));
    }

    #[test]
    fn cross_references_are_checked_with_key_and_line() {
        let src = GOOD
            .replace("peer = \"node-b\"", "peer = \"node-c\"")
            .replace(
                "allowed_peers = [\"node-b\"]",
                "allowed_peers = [\"node-b\", \"x\"]",
            )
            .replace("zstd:3", "brotli");
        let i = issues(&src);
        let keys: Vec<(&str, Option<usize>)> = i.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert!(
            keys.contains(&("services[0].allowed_peers[1]", Some(17))),
            "{keys:?}"
        );
        assert!(keys.contains(&("tunnels[0].peer", Some(22))), "{keys:?}");
        assert!(
            keys.contains(&("tunnels[0].compression", Some(24))),
            "{keys:?}"
        );
        assert!(i
            .iter()
            .any(|i| i.message.contains("unknown peer \"node-c\"")));
    }

    #[test]
    fn missing_tls_is_an_error() {
        let src = GOOD.replace("cert = \"a.crt\"\n", "");
        let i = issues(&src);
        assert_eq!(i[0].key, "tls.cert");
        assert_eq!(i[0].line, None);
    }

    #[test]
    fn environment_and_flags_override_the_file() {
        let env = |k: &str| (k == "DWCP_ADMIN_LISTEN").then(|| "127.0.0.1:9999".to_string());
        let o = overrides(env, &["lifecycle.drain_grace_secs=5".into()]).expect("valid");
        let c = parse(GOOD, "t.toml", &o).expect("valid");
        assert_eq!(c.admin.listen, "127.0.0.1:9999");
        assert_eq!(c.lifecycle.drain_grace_secs, 5);
        assert!(overrides(|_| None, &["peers.x=1".into()]).is_err());
        let bad = overrides(|_| None, &["limits.max_streams=lots".into()]).expect("key ok");
        assert!(parse(GOOD, "t.toml", &bad).is_err());
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("example") + "```toml\n".len();
        let len = doc[start..].find("```").expect("end of example");
        let c =
            parse(&doc[start..start + len], "docs/configuration.md", &[]).expect("valid example");
        assert_eq!(c.tunnels[0].class.as_deref(), Some("bulk"));
        assert_eq!(
            c.admin.token_file.as_deref(),
            Some(Path::new("/etc/dwcp/admin/token"))
        );
    }

    #[test]
    fn compression_policies() {
        assert!(parse_compression("adaptive").is_ok());
        assert!(parse_compression("zstd:19").is_ok());
        assert!(parse_compression("zstd:20").is_err());
        assert!(parse_compression("gzip").is_err());
    }
}
