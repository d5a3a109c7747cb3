//! Overrides: `DWCP_*` environment variables and `--set key=value` flags.
//!
//! The keys that may be overridden are read off the schema: every scalar key
//! of a table (`limits.max_streams`), none inside the arrays of tables
//! (`peers`, `classes`, `services`, `tunnels`). A key added to a table is
//! overridable without being listed here.

use std::sync::OnceLock;

use serde::de::value::{Error as ProbeError, SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::load::Issue;
use super::Config;

/// Type of an overridable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// `true` or `false`.
    Bool,
}

/// Keys that `DWCP_*` variables and `--set` may override, with their types,
/// in the order of the schema.
pub fn overridable() -> &'static [(String, Kind)] {
    static KEYS: OnceLock<Vec<(String, Kind)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        // The derived `Deserialize` walks every field; the probe notes the
        // scalar ones and the type each asks for.
        let walked = Config::deserialize(Probe {
            path: String::new(),
            keys: &mut keys,
        });
        debug_assert!(walked.is_ok(), "schema probe: {walked:?}");
        keys
    })
}

fn kind_of(key: &str) -> Option<Kind> {
    overridable()
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, kind)| *kind)
}

/// The environment variable for a key: `admin.listen` → `DWCP_ADMIN_LISTEN`.
pub fn env_name(key: &str) -> String {
    format!("DWCP_{}", key.replace('.', "_").to_uppercase())
}

/// `DWCP_*` variables that are not settings of the daemon but of the
/// project's own tests, benchmarks and build.
const TOOL_VARIABLES: &[&str] = &[
    "DWCP_TEST_LOG",
    "DWCP_E2E_LOG",
    "DWCP_WAN_TRACE",
    "DWCP_GIT_COMMIT",
];

/// Whether `name=value` is a variable Kubernetes puts into a pod for a
/// Service (`DWCP_SERVICE_HOST=10.0.0.7`, `DWCP_PORT=udp://10.0.0.7:4433`
/// and the like for a Service named `dwcp`), which a pod cannot keep out
/// of its environment. The value decides, so that a misspelled setting
/// whose name happens to end the same way (`DWCP_LISTN_PORT=4433`) is
/// still named.
fn is_service_link(name: &str, value: &str) -> bool {
    let ip = || value.parse::<std::net::IpAddr>().is_ok();
    let port = || value.parse::<u16>().is_ok();
    let url = || {
        ["tcp://", "udp://", "sctp://"].iter().any(|p| {
            value
                .strip_prefix(p)
                .is_some_and(|a| a.parse::<std::net::SocketAddr>().is_ok())
        })
    };
    let proto = || matches!(value, "tcp" | "udp" | "sctp");
    // `{SVC}_PORT_{port}_{PROTO}` and what follows it.
    let port_proto = name
        .match_indices("_PORT_")
        .any(|(i, m)| name[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
    if port_proto {
        if name.ends_with("_ADDR") {
            ip()
        } else if name.ends_with("_PORT") {
            port()
        } else if name.ends_with("_PROTO") {
            proto()
        } else {
            url()
        }
    } else if name.ends_with("_SERVICE_HOST") {
        ip()
    } else if name.ends_with("_SERVICE_PORT") {
        // `{SVC}_SERVICE_PORT`, or `{SVC}_PORT` of a Service named
        // `dwcp-service`.
        port() || url()
    } else if name.contains("_SERVICE_PORT_") {
        port()
    } else if name.ends_with("_PORT") {
        url()
    } else {
        false
    }
}

/// Warnings for the `DWCP_*` variables among `vars` (name and value) that
/// set nothing: a misspelled override is otherwise ignored without a word.
/// Each names the variable and, if one is close, the variable meant.
pub fn unknown_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let known: Vec<String> = overridable().iter().map(|(k, _)| env_name(k)).collect();
    let mut out = Vec::new();
    for (name, value) in vars {
        if !name.starts_with("DWCP_")
            || known.contains(&name)
            || TOOL_VARIABLES.contains(&name.as_str())
            || is_service_link(&name, &value)
        {
            continue;
        }
        let closest = known
            .iter()
            .map(|k| (strsim::damerau_levenshtein(k, &name), k))
            .min();
        let mut w = format!("{name} is not a setting and is ignored");
        if let Some((_, k)) = closest.filter(|(d, _)| *d <= 3) {
            w.push_str(&format!(" (did you mean {k}?)"));
        }
        out.push(w);
    }
    out
}

/// Collects overrides from the environment (`DWCP_*` for the keys in
/// [`overridable`]), then from `--set key=value` flags (which win).
///
/// # Errors
/// A `--set` flag without `=` or naming a key that cannot be overridden.
pub fn overrides(
    env: impl Fn(&str) -> Option<String>,
    flags: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (key, _) in overridable() {
        if let Some(v) = env(&env_name(key)) {
            out.push((key.to_string(), v));
        }
    }
    for f in flags {
        let Some((k, v)) = f.split_once('=') else {
            return Err(format!("--set {f:?}: expected KEY=VALUE"));
        };
        let k = k.trim();
        if kind_of(k).is_none() {
            return Err(format!(
                "--set {k}: not an overridable key (overridable: {})",
                overridable()
                    .iter()
                    .map(|(k, _)| k.as_str())
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
pub(super) fn apply_overrides(
    table: &mut toml::Table,
    overrides: &[(String, String)],
) -> Result<(), Issue> {
    for (key, raw) in overrides {
        let value = override_value(key, raw, kind_of(key).unwrap_or(Kind::Str))?;
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

/// An override's value: strings as given, numbers as TOML literals
/// (`1_000`, `0x10`, `2.5e3`).
fn override_value(key: &str, raw: &str, kind: Kind) -> Result<toml::Value, Issue> {
    let literal = || {
        let mut t: toml::Table = toml::from_str(&format!("v = {}", raw.trim())).ok()?;
        if t.len() == 1 {
            t.remove("v")
        } else {
            None
        }
    };
    let bad = |what: &str| Issue {
        key: key.to_string(),
        line: None,
        message: format!("override {}={raw:?}: expected {what}", env_name(key)),
    };
    match kind {
        Kind::Str => Ok(toml::Value::String(raw.to_string())),
        Kind::Int => match literal() {
            Some(v @ toml::Value::Integer(_)) => Ok(v),
            _ => Err(bad("an integer")),
        },
        Kind::Float => match literal() {
            Some(v @ toml::Value::Float(_)) => Ok(v),
            Some(toml::Value::Integer(i)) => Ok(toml::Value::Float(i as f64)),
            _ => Err(bad("a number")),
        },
        Kind::Bool => match literal() {
            Some(v @ toml::Value::Boolean(_)) => Ok(v),
            _ => Err(bad("true or false")),
        },
    }
}

/// A deserializer that feeds the schema placeholder values and records,
/// for each scalar key below a table, the type it asked for.
struct Probe<'a> {
    /// Dotted path of the value being deserialized (`""` for the root).
    path: String,
    keys: &'a mut Vec<(String, Kind)>,
}

impl Probe<'_> {
    fn record(&mut self, kind: Kind) {
        if self.path.contains('.') {
            self.keys.push((std::mem::take(&mut self.path), kind));
        }
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom(format!(
            "`{}`: a type the override probe does not know",
            self.path
        )))
    }

    fn deserialize_str<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, ProbeError> {
        self.record(Kind::Str);
        v.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        self.deserialize_str(v)
    }

    fn deserialize_u64<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, ProbeError> {
        self.record(Kind::Int);
        v.visit_u64(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        self.deserialize_u64(v)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        self.deserialize_u64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, ProbeError> {
        self.record(Kind::Float);
        v.visit_f64(0.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, ProbeError> {
        self.record(Kind::Bool);
        v.visit_bool(false)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ProbeError> {
        self.record(Kind::Str);
        let first: StrDeserializer<'_, ProbeError> = variants[0].into_deserializer();
        v.visit_enum(first)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        // Arrays (of tables) are not overridable.
        v.visit_seq(SeqDeserializer::new(std::iter::empty::<()>()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ProbeError> {
        v.visit_map(Fields {
            path: self.path,
            fields: fields.iter(),
            current: "",
            keys: self.keys,
        })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u128 f32 char bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct map identifier ignored_any
    }
}

/// The fields of one struct, each handed to a [`Probe`] for its path.
struct Fields<'a> {
    path: String,
    fields: std::slice::Iter<'static, &'static str>,
    current: &'static str,
    keys: &'a mut Vec<(String, Kind)>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.current = field;
        let key: StrDeserializer<'_, ProbeError> = field.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        let path = if self.path.is_empty() {
            self.current.to_string()
        } else {
            format!("{}.{}", self.path, self.current)
        };
        seed.deserialize(Probe {
            path,
            keys: &mut *self.keys,
        })
    }
}
