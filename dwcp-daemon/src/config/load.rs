//! Reading a configuration: one parse of the text, overrides applied, values
//! checked, every problem reported with its key and line.

use std::fmt;
use std::path::{Path, PathBuf};

use super::overrides::apply_overrides;
use super::Config;

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
        // The toml error has the line, not the key: the same table read
        // again names it (`limits.idle_timeout_secs`).
        let key = serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table.clone()))
            .err()
            .filter(|pe| pe.path().iter().next().is_some())
            .map(|pe| pe.path().to_string())
            .unwrap_or_default();
        return Err(invalid(vec![Issue {
            key,
            line,
            message: e.message().trim().to_string(),
        }]));
    }
    apply_overrides(&mut table, overrides).map_err(|i| invalid(vec![i]))?;
    // Only an override can fail here (the file alone deserialized above);
    // the path names its key.
    let config =
        serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table)).map_err(|e| {
            let key = match e.path().iter().next() {
                None => String::new(),
                Some(_) => e.path().to_string(),
            };
            invalid(vec![Issue {
                key,
                line: None,
                message: format!("after overrides: {}", e.inner().message().trim()),
            }])
        })?;
    let mut issues = config.validate();
    for i in &mut issues {
        if overrides.iter().any(|(k, _)| *k == i.key) {
            // The value came from `--set` or the environment, not the file.
            i.message
                .push_str(" (the value set by --set or the environment)");
        } else {
            i.line = span_of(src, &i.key).map(|s| line_of(src, s.start));
        }
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
