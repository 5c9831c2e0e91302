//! `[spool]`: frames kept on disk while the sink cannot take them (see [`crate::spool`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::types::{AgeSecs, Percent, SpoolBytes, SpoolMs};

/// When frames are written to the spool.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SpoolMode {
    /// A frame goes to disk only when it was not delivered within `spill_after_ms` or the
    /// sink's in-flight window is full: with a healthy broker (almost) nothing is written.
    #[default]
    Outage,
    /// Every frame is made durable (group commit) before it is handed to the sink: a
    /// `kill -9` or a power cut loses nothing that was committed.
    Always,
    /// No spool: what the sink cannot take in memory is dropped (counted); `edgecam.seq`
    /// restarts at 0 with every start.
    Off,
}

/// `[spool]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// `outage` (default), `always` or `off`.
    #[serde(default)]
    pub mode: SpoolMode,
    /// The spool directory, used when `$STATE_DIRECTORY` is not set (systemd sets it from
    /// the unit's `StateDirectory=`); relative to the configuration file. Default: the
    /// device's directory under `$XDG_STATE_HOME/edgecam` or `~/.local/state/edgecam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Bytes the spool may hold, 1 MiB–1 TiB; default 1 GiB. When full, the oldest frames
    /// are dropped (counted as `spool_full`). The files never exceed this plus one segment
    /// (1/8 of it, 64 KiB–8 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: SpoolBytes,
    /// Spooled frames captured longer ago than this many seconds are dropped (counted as
    /// `spool_expired`), 1–31,536,000. Default: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<AgeSecs>,
    /// `outage` mode: a frame not delivered within this many milliseconds is written to the
    /// spool (it stays with the sink too), 1–60,000. Default 2,000.
    #[serde(default = "default_spill_after_ms")]
    pub spill_after_ms: SpoolMs,
    /// Longest time between group commits (`fdatasync`), milliseconds, 1–60,000. Default
    /// 200: a power cut loses at most this much of what was spooled.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: SpoolMs,
    /// While live frames flow, the share of the sink's in-flight window the backlog may
    /// use, percent, 1–100. Default 50. Live frames always go first; with no live frame
    /// waiting the backlog may use the whole window.
    #[serde(default = "default_replay_share")]
    pub replay_share_percent: Percent,
    /// The directory the agent uses, resolved at load (shown by `check-config`; not a key).
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

fn default_max_bytes() -> SpoolBytes {
    SpoolBytes::new(1 << 30).expect("in range")
}
fn default_spill_after_ms() -> SpoolMs {
    SpoolMs::new(2_000).expect("in range")
}
fn default_commit_interval_ms() -> SpoolMs {
    SpoolMs::new(200).expect("in range")
}
fn default_replay_share() -> Percent {
    Percent::new(50).expect("in range")
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            mode: SpoolMode::default(),
            path: None,
            max_bytes: default_max_bytes(),
            max_age_secs: None,
            spill_after_ms: default_spill_after_ms(),
            commit_interval_ms: default_commit_interval_ms(),
            replay_share_percent: default_replay_share(),
            dir: None,
        }
    }
}

/// What the spool directory is chosen from.
#[derive(Debug, Default, Clone)]
pub(crate) struct StateDirs {
    /// `$STATE_DIRECTORY` (first entry when systemd lists several, colon-separated).
    pub state_directory: Option<String>,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<String>,
    /// `$HOME`.
    pub home: Option<String>,
}

impl SpoolConfig {
    /// Sets [`SpoolConfig::dir`]: `$STATE_DIRECTORY/<device>`, else `path` (against
    /// `base`), else `$XDG_STATE_HOME/edgecam/<device>`, else
    /// `$HOME/.local/state/edgecam/<device>`. Nothing for `mode = "off"`, or when none of
    /// them is set (then `edgecam run` refuses to start: see
    /// [`crate::pipeline::RunError::NoSpoolDirectory`]).
    pub(crate) fn resolve_dir(&mut self, device: &str, base: &Path, env: &StateDirs) {
        if self.mode == SpoolMode::Off {
            return;
        }
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let dir = if let Some(s) = nonempty(&env.state_directory) {
            PathBuf::from(s.split(':').next().unwrap_or(&s)).join(device)
        } else if let Some(p) = &self.path {
            base.join(p)
        } else if let Some(x) = nonempty(&env.xdg_state_home) {
            PathBuf::from(x).join("edgecam").join(device)
        } else if let Some(h) = nonempty(&env.home) {
            PathBuf::from(h).join(".local/state/edgecam").join(device)
        } else {
            return;
        };
        self.dir = Some(dir);
    }
}
