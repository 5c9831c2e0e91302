//! [`ConfigError`]: what is wrong, with which key, written where.

use std::fmt;
use std::path::PathBuf;

/// Where a value was written: a place in the file, or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// In the configuration file (`file` as given on the command line, or `None` for text).
    File {
        /// The file, as named on the command line.
        file: Option<PathBuf>,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
    },
    /// From an `EDGECAM_…` environment variable.
    Env {
        /// The variable's name.
        var: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                file: Some(file),
                line,
                column,
            } => write!(f, "{}, line {line}, column {column}", file.display()),
            Origin::File {
                file: None,
                line,
                column,
            } => write!(f, "line {line}, column {column}"),
            Origin::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// A configuration problem. The message names the key (`encode.quality_max`), says what is
/// wrong and what is allowed, and where the value was written (file, line, column, or the
/// environment variable); `edgecam check-config` and `edgecam run` print it once and exit 64.
/// Messages never contain a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The text is not valid TOML.
    #[error("TOML syntax error{}: {message}", at_line_column(.line, .column))]
    Syntax {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when known.
        column: Option<usize>,
        /// What the TOML parser expected.
        message: String,
    },
    /// A key (in the file or from an `EDGECAM_…` variable) that edgecam does not know.
    #[error("{key}: unknown key{}{}; {}", origin_suffix(.origin), suggestion(.key, .allowed), allowed_keys(.key, .allowed))]
    UnknownKey {
        /// Full dotted path of the unknown key, e.g. `encode.qualty_max`.
        key: String,
        /// Where it was written.
        origin: Option<Origin>,
        /// The keys allowed at that level.
        allowed: Vec<String>,
    },
    /// A value of the wrong type, e.g. a string where a number belongs, or a fraction where
    /// an integer belongs. Nothing is coerced.
    #[error("{key}: wrong type: expected {expected}, found {found}{}", origin_suffix(.origin))]
    WrongType {
        /// Full dotted path of the key.
        key: String,
        /// What the key takes, e.g. `an integer from 1 to 100 (JPEG quality)`.
        expected: String,
        /// What was found, e.g. `string "abc"` (`<redacted>` for secrets).
        found: String,
        /// Where it was written.
        origin: Option<Origin>,
    },
    /// A required key (or table) is absent.
    #[error("{key}: required key is missing ({}){}", missing_hint(.key), origin_suffix(.origin))]
    Missing {
        /// Full dotted path of the missing key, e.g. `device.id`, or a table name (`kafka`).
        key: String,
        /// Where the table that lacks it starts, when it exists.
        origin: Option<Origin>,
    },
    /// A value of the right type that breaks a rule (range, format, combination of keys, a
    /// file that does not exist, a program not on `PATH`, a property librdkafka refuses).
    #[error("{key}: {message}{}", origin_suffix(.origin))]
    Invalid {
        /// Full dotted path of the offending key.
        key: String,
        /// What is wrong and what is allowed, e.g. `must be from 1 to 100 (got 300)`.
        message: String,
        /// Where it was written, when known.
        origin: Option<Origin>,
    },
    /// An `EDGECAM_…` environment variable that cannot be an override as written.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable's name.
        name: String,
        /// What is wrong with it and what to write instead.
        message: String,
    },
    /// The file is neither an agent configuration nor a bridge configuration, or not the
    /// kind the command needs.
    #[error("{0}")]
    Kind(String),
}

impl ConfigError {
    /// The dotted key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::WrongType { key, .. }
            | ConfigError::Missing { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Sets the origin of an [`ConfigError::Invalid`] error that has none yet.
    pub(crate) fn with_origin(mut self, at: Option<&Origin>) -> ConfigError {
        if let ConfigError::Invalid { origin, .. } = &mut self {
            if origin.is_none() {
                *origin = at.cloned();
            }
        }
        self
    }
}

/// `Invalid` without an origin; the loader fills it in from the key when it can.
pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
        origin: None,
    }
}

/// Why a file could not be read, for a message after its path: "does not exist", "cannot be
/// read by this user (permission denied)", else "cannot be read: <error>".
pub(crate) fn why_unreadable(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        std::io::ErrorKind::PermissionDenied => {
            "cannot be read by this user (permission denied)".to_string()
        }
        _ => format!("cannot be read: {e}"),
    }
}

fn at_line_column(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

fn origin_suffix(origin: &Option<Origin>) -> String {
    origin
        .as_ref()
        .map(|o| format!(" ({o})"))
        .unwrap_or_default()
}

fn allowed_keys(key: &str, allowed: &[String]) -> String {
    let list = allowed.join(", ");
    match key.rsplit_once('.') {
        Some((table, _)) => format!("allowed keys in [{table}]: {list}"),
        None => format!("allowed top-level tables: {list}"),
    }
}

/// ` (did you mean `quality_max`?)` when an allowed key is one or two edits away.
fn suggestion(key: &str, allowed: &[String]) -> String {
    let given = key.rsplit('.').next().unwrap_or(key);
    let given = given.split('[').next().unwrap_or(given);
    allowed
        .iter()
        .map(|a| (edit_distance(given, a.trim_matches(['[', ']'])), a))
        .filter(|(d, _)| *d > 0 && *d <= 2.max(given.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| format!(" (did you mean `{}`?)", a.trim_matches(['[', ']'])))
        .unwrap_or_default()
}

/// Levenshtein distance, case-insensitive (keys differing only in case are one edit apart).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let same = usize::from(!ca.eq_ignore_ascii_case(cb));
            cur[j + 1] = (prev[j] + same).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    let d = prev[b.len()];
    // Only the case differs: still a different key.
    if d == 0 && a != b {
        1
    } else {
        d
    }
}

fn missing_hint(key: &str) -> String {
    match key {
        "device" => "add a [device] table with id = \"...\"".to_string(),
        "source" => {
            "add a [source] table with kind = \"camera\" | \"mjpeg\" | \"images\" | \"synthetic\""
                .to_string()
        }
        "kafka" => "add a [kafka] table with at least bootstrap_servers = \"host:port\"".into(),
        "mqtt" => "add an [mqtt] table with at least host = \"broker-host\"".into(),
        "bridge" => "add a [bridge] table with id = \"...\" and [[bridge.inputs]]".into(),
        _ => format!(
            "set it in the file or with {}",
            super::naming::var_name(key)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let allowed = vec!["quality_max".to_string(), "quality_min".to_string()];
        assert!(suggestion("encode.qualty_max", &allowed).contains("`quality_max`"));
        assert!(suggestion("encode.Quality_Max", &allowed).contains("`quality_max`"));
        assert_eq!(suggestion("encode.zzzzzzzz", &allowed), "");
    }
}
