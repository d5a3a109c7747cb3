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
        let (name, index) = segment(seg);
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
/// the table and the rest is read again; a required key taken out is put
/// back as a placeholder of its type, so that its absence is not reported
/// as another problem.
fn type_issues(src: &str, table: &toml::Table) -> Vec<Issue> {
    let mut rest = table.clone();
    let mut issues = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut complete = false;
    for _ in 0..MAX_TYPE_ISSUES * 2 {
        let Err(e) = read(&rest) else {
            complete = true;
            break;
        };
        let (key, message) = key_and_message(&e);
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            let missing = join(&key, field);
            if removed.contains(&missing) {
                if fill_placeholder(&mut rest, &missing) {
                    continue;
                }
                break;
            }
        }
        let line = span_of(src, &key).map(|s| line_of(src, s.start));
        let taken = remove_key(&mut rest, &key);
        if taken {
            removed.push(key.clone());
        }
        issues.push(Issue { key, line, message });
        if !taken || issues.len() >= MAX_TYPE_ISSUES {
            break;
        }
    }
    issues.sort_by_key(|i| i.line);
    if !complete && !issues.is_empty() {
        issues.push(Issue {
            key: String::new(),
            line: None,
            message: "the file may have more problems of this kind: they are reported once these are fixed".into(),
        });
    }
    issues
}

/// The table deserialized as a configuration, errors naming their key.
fn read(table: &toml::Table) -> Result<Config, serde_path_to_error::Error<toml::de::Error>> {
    serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table.clone()))
}

/// An error's key (an unknown key may be reported at the table it is in:
/// named here) and message.
fn key_and_message(e: &serde_path_to_error::Error<toml::de::Error>) -> (String, String) {
    let message = e.inner().message().trim().to_string();
    let mut key = match e.path().iter().next() {
        None => String::new(),
        Some(_) => e.path().to_string(),
    };
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
        .filter(|f| key.rsplit('.').next() != Some(*f))
    {
        key = join(&key, field);
    }
    (key, message)
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// Puts a placeholder of the type `path` asks for back in `table`; false
/// if none of the placeholders tried is of that type.
fn fill_placeholder(table: &mut toml::Table, path: &str) -> bool {
    let candidates = [
        toml::Value::String(String::new()),
        toml::Value::Integer(0),
        toml::Value::Float(0.0),
        toml::Value::Boolean(false),
        toml::Value::Array(Vec::new()),
        toml::Value::Table(toml::Table::new()),
    ];
    for v in candidates {
        let Some((parent, name)) = parent_of(table, path) else {
            return false;
        };
        parent.insert(name, v);
        match read(table) {
            Err(e) if key_and_message(&e).0 == path => {}
            _ => return true,
        }
    }
    remove_key(table, path);
    false
}

/// Splits one segment of a key path: `tunnels[0]` → (`tunnels`, `Some(0)`).
fn segment(seg: &str) -> (&str, Option<usize>) {
    match seg.split_once('[') {
        Some((n, rest)) => (n, rest.trim_end_matches(']').parse().ok()),
        None => (seg, None),
    }
}

/// The table holding the key at a dotted path (`tunnels[0].class`), and
/// the key's name; `None` if the path does not lead to a table, or ends
/// in an element of an array (taking one out would move the indices
/// after it).
fn parent_of<'t>(table: &'t mut toml::Table, path: &str) -> Option<(&'t mut toml::Table, String)> {
    let segs: Vec<&str> = path.split('.').collect();
    let (last, parents) = segs.split_last()?;
    let (name, None) = segment(last) else {
        return None;
    };
    let mut t = table;
    for seg in parents {
        let (n, index) = segment(seg);
        let mut v = t.get_mut(n)?;
        if let Some(i) = index {
            v = v.as_array_mut()?.get_mut(i)?;
        }
        t = v.as_table_mut()?;
    }
    Some((t, name.to_string()))
}

/// Takes a dotted key path out of `table`; false if it is not there.
fn remove_key(table: &mut toml::Table, path: &str) -> bool {
    parent_of(table, path).is_some_and(|(t, name)| t.remove(&name).is_some())
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
