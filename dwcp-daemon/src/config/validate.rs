//! Checking values and cross-references once the configuration parsed.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::load::Issue;
use super::Config;

/// Most tokio worker threads `runtime.worker_threads` may ask for.
const MAX_WORKER_THREADS: usize = 256;

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

/// Parses a log filter (`info`, `info,dwcp_core=debug`...). Filters are
/// ASCII: tracing-subscriber's parser panics on some non-ASCII input (a
/// multi-byte character before `[`, found by the `daemon_config` fuzz
/// target), so anything else is refused before it gets there.
///
/// # Errors
/// The filter has a non-ASCII or control character, or does not parse.
pub fn log_filter(v: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if let Some(c) = v.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!(
            "{v:?} is not a log filter: {c:?} (a filter has printable ASCII characters only)"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(v).map_err(|e| format!("{v:?} is not a log filter: {e}"))
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
        if let Err(e) = log_filter(&self.log.level) {
            bad("log.level".into(), e);
        }
        if self.runtime.worker_threads > MAX_WORKER_THREADS {
            bad(
                "runtime.worker_threads".into(),
                format!("at most {MAX_WORKER_THREADS} (0: automatic)"),
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
}
