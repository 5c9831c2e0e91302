//! `[log]`: how the agent and the bridge log (see `edgecam --help` for the command-line
//! flags that override it).

use serde::{Deserialize, Serialize};

use super::types::ProgressSecs;

/// The log line format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event; colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`), for
    /// log shippers (Vector, Fluent Bit, Promtail).
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`. `--log-format` overrides it.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// directives (`info,librdkafka=debug`). Default: `RUST_LOG` when set, else `info`.
    /// `--log-level` overrides both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Outside systemd, one INFO progress line (frames/s, delivered, dropped, in flight,
    /// spool depth) every this many seconds, 0–86,400; 0 turns it off. Default 30. Under
    /// systemd the same line goes to `STATUS=` instead.
    #[serde(default = "default_progress_interval_secs")]
    pub progress_interval_secs: ProgressSecs,
}

fn default_progress_interval_secs() -> ProgressSecs {
    ProgressSecs::new(30).expect("in range")
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: None,
            progress_interval_secs: default_progress_interval_secs(),
        }
    }
}

impl LogConfig {
    /// Checks `level` as a filter.
    ///
    /// Errors: [`super::ConfigError::Invalid`] naming `log.level`.
    pub fn check(&self) -> Result<(), super::ConfigError> {
        if let Some(level) = &self.level {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
                return Err(super::ConfigError::Invalid {
                    key: "log.level".into(),
                    message: format!("{level:?} is not a level or filter: {e}"),
                    origin: None,
                });
            }
        }
        Ok(())
    }
}
