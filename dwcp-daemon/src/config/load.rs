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

/// At most this many type errors are reported from one file.
const MAX_TYPE_ISSUES: usize = 32;

/// Every type error and unknown key in the file, in the order of its lines.
/// Deserialization stops at the first, so each one found is taken out of
/// the table and the rest is read again.
fn type_issues(src: &str, table: &toml::Table) -> Vec<Issue> {
    let mut rest = table.clone();
    let mut issues = Vec::new();
    while issues.len() < MAX_TYPE_ISSUES {
        let Err(e) =
            serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(rest.clone()))
        else {
            break;
        };
        let message = e.inner().message().trim().to_string();
        let mut key = match e.path().iter().next() {
            None => String::new(),
            Some(_) => e.path().to_string(),
        };
        // An unknown key may be reported at the table it is in; name it.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
            .filter(|f| key.rsplit('.').next() != Some(*f))
        {
            key = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
        }
        let line = span_of(src, &key).map(|s| line_of(src, s.start));
        let removed = remove_key(&mut rest, &key);
        issues.push(Issue { key, line, message });
        if !removed {
            break;
        }
    }
    issues.sort_by_key(|i| i.line);
    issues
}

/// Takes a dotted key path (`tunnels[0].class`) out of `table`. An element
/// of an array is not taken out (the indices after it would move).
fn remove_key(table: &mut toml::Table, path: &str) -> bool {
    fn split(seg: &str) -> (&str, Option<usize>) {
        match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse().ok()),
            None => (seg, None),
        }
    }
    let segs: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut t = table;
    for seg in parents {
        let (name, index) = split(seg);
        let Some(mut v) = t.get_mut(name) else {
            return false;
        };
        if let Some(i) = index {
            let Some(item) = v.as_array_mut().and_then(|a| a.get_mut(i)) else {
                return false;
            };
            v = item;
        }
        let Some(inner) = v.as_table_mut() else {
            return false;
        };
        t = inner;
    }
    match split(last) {
        (name, None) => t.remove(name).is_some(),
        (_, Some(_)) => false,
    }
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
    let issues = type_issues(src, &table);
    if !issues.is_empty() {
        return Err(invalid(issues));
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
