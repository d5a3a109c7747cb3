//! The daemon's configuration: one TOML file, overridable by `DWCP_*`
//! environment variables and `--set key=value` flags.
//!
//! Every key, its default and its meaning is in `docs/configuration.md`.
//! Errors name the key and the line it is on.
//!
//! | file | concern |
//! |---|---|
//! | `schema.rs` | the tables and keys, with their defaults |
//! | `overrides.rs` | `DWCP_*` variables and `--set` flags; the overridable keys |
//! | `load.rs` | parsing, errors with key and line |
//! | `validate.rs` | value and cross-reference checks |

mod load;
mod overrides;
mod schema;
mod validate;

pub use load::{load, parse, ConfigError, Issue};
pub use overrides::{env_name, overridable, overrides, unknown_env, Kind};
pub use schema::*;
pub use validate::{log_filter, parse_compression};

#[cfg(test)]
mod tests {
    use std::path::Path;

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
    fn worker_threads_are_automatic_unless_set_and_bounded() {
        let c = parse(GOOD, "t.toml", &[]).expect("valid");
        assert_eq!(c.runtime.worker_threads, 0);
        assert_eq!(c.runtime.workers_for(2.0), 1);
        assert_eq!(c.runtime.workers_for(8.0), 4);
        let c = parse(
            &format!("[runtime]\nworker_threads = 3\n{GOOD}"),
            "t.toml",
            &[],
        )
        .expect("valid");
        assert_eq!(c.runtime.workers_for(2.0), 3);
        let i = issues(&format!("[runtime]\nworker_threads = 100000\n{GOOD}"));
        assert_eq!(i.len(), 1, "{i:?}");
        assert!(i[0].message.contains("at most 256"), "{}", i[0].message);
    }

    #[test]
    fn wrong_type_is_reported_with_its_line() {
        let src = GOOD.replace("[node]", "[lifecycle]\ndrain_grace_secs = \"soon\"\n[node]");
        let i = issues(&src);
        assert_eq!(i[0].line, Some(3), "{:?}", i);
        // The key too (a review: only the line and the type were given).
        assert_eq!(i[0].key, "lifecycle.drain_grace_secs", "{i:?}");
    }

    /// A value out of range from `--set` (or the environment) is not blamed
    /// on the line where the file's own, valid value is.
    #[test]
    fn an_overridden_value_out_of_range_is_not_blamed_on_the_files_line() {
        let src = GOOD.replace("[node]", "[limits]\nidle_timeout_secs = 5\n[node]");
        let o = overrides(|_| None, &["limits.idle_timeout_secs=1".into()]).expect("key ok");
        let i = match parse(&src, "t.toml", &o) {
            Err(ConfigError::Invalid { issues, .. }) => issues,
            other => panic!("{other:?}"),
        };
        assert_eq!(i[0].key, "limits.idle_timeout_secs", "{i:?}");
        assert_eq!(i[0].line, None, "{i:?}");
        assert!(i[0].message.contains("--set"), "{i:?}");
        // The file's own value out of range keeps its line.
        let src = GOOD.replace("[node]", "[limits]\nidle_timeout_secs = 1\n[node]");
        assert_eq!(issues(&src)[0].line, Some(3));
    }

    /// Found by the `daemon_config` fuzz target: tracing-subscriber's filter
    /// parser panicked on a multi-byte character after `[` (it slices the
    /// string at a byte that is not a character boundary).
    #[test]
    fn a_non_ascii_log_filter_is_an_error_not_a_panic() {
        for level in [" v\u{fffd}[", "é[", "info,dwcp_core=debug,é["] {
            let src = format!("[log]\nlevel = {level:?}\n{GOOD}");
            let i = issues(&src);
            assert!(i.iter().any(|i| i.key == "log.level"), "{level}: {i:?}");
        }
        assert!(super::log_filter("info,dwcp_core=debug").is_ok());
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
    fn overridable_keys_are_read_off_the_schema() {
        // The list this replaced, kept by hand until the probe.
        let before = [
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
            ("runtime.worker_threads", Kind::Int),
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
            ("link.interactive_copies", Kind::Bool),
            ("reconnect.initial_ms", Kind::Int),
            ("reconnect.max_ms", Kind::Int),
        ];
        let derived: Vec<(&str, Kind)> = overridable()
            .iter()
            .map(|(k, t)| (k.as_str(), *t))
            .collect();
        assert_eq!(derived, before);
    }

    /// A type error in a required key of an array entry was followed by a
    /// false "missing field" for the key taken out (a review), and the
    /// list stopped there.
    #[test]
    fn a_required_key_of_the_wrong_type_is_reported_once_and_the_rest_too() {
        let src = GOOD
            .replace("allowed_peers = [\"node-b\"]", "allowed_peers = \"node-b\"")
            .replace("zstd:3\"", "zstd:3\"\nclass = 7");
        let i = issues(&src);
        let keys: Vec<&str> = i.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["services[0].allowed_peers", "tunnels[0].class"],
            "{i:?}"
        );
        assert!(
            !i.iter().any(|i| i.message.contains("missing field")),
            "{i:?}"
        );
    }

    /// A misspelled `DWCP_*` variable was ignored without a word (a
    /// review): the operator believed the setting applied.
    #[test]
    fn a_misspelled_environment_variable_is_named_with_the_key_meant() {
        let env = [
            ("DWCP_LINK_RATE_MPBS", "100"),
            ("DWCP_ADMIN_LISTEN", "127.0.0.1:9090"),
            ("DWCP_LIMITS_MAX_STREAM", "10"),
            ("DWCP_NOT_A_THING_AT_ALL", "1"),
            // Kubernetes' service links for a Service named `dwcp`, and
            // variables of the project's own tools: not settings.
            ("DWCP_SERVICE_HOST", "10.96.0.7"),
            ("DWCP_SERVICE_PORT_QUIC", "4433"),
            ("DWCP_PORT", "udp://10.96.0.7:4433"),
            ("DWCP_PORT_4433_UDP", "udp://10.96.0.7:4433"),
            ("DWCP_PORT_4433_UDP_ADDR", "10.96.0.7"),
            ("DWCP_PORT_4433_UDP_PORT", "4433"),
            ("DWCP_PORT_4433_UDP_PROTO", "udp"),
            // A Service named `dwcp-service`.
            ("DWCP_SERVICE_PORT", "udp://10.96.0.8:4433"),
            ("DWCP_SERVICE_PORT_4433_UDP_PROTO", "udp"),
            ("DWCP_SERVICE_SERVICE_HOST", "fd00::8"),
            ("DWCP_TEST_LOG", "debug"),
            ("PATH", "/bin"),
            // A name a service link could have, with a setting's value.
            ("DWCP_LISTN_PORT", "4433"),
        ];
        let w = unknown_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[3].contains("DWCP_LISTN_PORT"), "{w:?}");
        assert!(
            w[0].contains("DWCP_LINK_RATE_MPBS") && w[0].contains("DWCP_LINK_RATE_MBPS"),
            "{w:?}"
        );
        assert!(w[1].contains("DWCP_LIMITS_MAX_STREAMS"), "{w:?}");
        assert!(
            w[2].contains("DWCP_NOT_A_THING_AT_ALL") && !w[2].contains("did you mean"),
            "{w:?}"
        );
    }

    /// Only the first type error was reported (a review); a file with
    /// three needed three rounds of fixing.
    #[test]
    fn every_type_error_in_the_file_is_reported() {
        let src = GOOD
            .replace(
                "[node]",
                "[lifecycle]\ndrain_grace_secs = \"soon\"\n[limits]\nmax_streams = -1\nmax_stream = 3\n[node]",
            )
            .replace("zstd:3\"", "zstd:3\"\nclass = 7");
        let i = issues(&src);
        let keys: Vec<(&str, Option<usize>)> = i.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert_eq!(
            keys,
            [
                ("lifecycle.drain_grace_secs", Some(3)),
                ("limits.max_streams", Some(5)),
                ("limits.max_stream", Some(6)),
                ("tunnels[0].class", Some(30)),
            ],
            "{i:?}"
        );
    }

    #[test]
    fn override_values_are_toml_literals() {
        let o = overrides(
            |_| None,
            &[
                "limits.max_streams=1_000".into(),
                "link.rate_mbps=100".into(),
                "node.name=123".into(),
                "link.interactive_copies=false".into(),
            ],
        )
        .expect("valid");
        let c = parse(GOOD, "t.toml", &o).expect("valid");
        assert_eq!(c.limits.max_streams, 1000);
        assert_eq!(c.link.rate_mbps, Some(100.0));
        assert_eq!(c.node.name, "123");
        assert!(!c.link.interactive_copies);
        let o = overrides(|_| None, &["link.interactive_copies=yes".into()]).expect("key ok");
        let e = parse(GOOD, "t.toml", &o).expect_err("not a boolean");
        assert!(format!("{e:?}").contains("true or false"), "{e:?}");
    }

    #[test]
    fn errors_after_overrides_name_the_key() {
        let o = overrides(|_| None, &["log.format=xml".into()]).expect("key ok");
        let i = match parse(GOOD, "t.toml", &o) {
            Err(ConfigError::Invalid { issues, .. }) => issues,
            other => panic!("{other:?}"),
        };
        assert_eq!(i[0].key, "log.format", "{i:?}");
        assert!(i[0].message.starts_with("after overrides"), "{i:?}");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../../docs/configuration.md");
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
