//! `[pipeline]`: queues between stages, shutdown.

use serde::{Deserialize, Serialize};

use super::types::{Capacity, GraceMs};

/// What to do with a new frame when the queue in front of the encoder is full.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// By source kind ([`OverflowPolicy::for_source`]): a source that can wait (an MJPEG
    /// file, an image directory, the synthetic pattern at `fps = 0`) blocks, so replaying a
    /// file never drops a frame; a live one (a camera, a child process such as
    /// `rpicam-vid`, the synthetic pattern at a set rate) drops the oldest.
    #[default]
    Auto,
    /// Drop the oldest waiting frame to make room (keeps latency low). Counted as
    /// `queue_full_oldest`.
    DropOldest,
    /// Drop the new frame (keeps the earliest frames). Counted as `queue_full_newest`.
    DropNewest,
    /// Block the source until there is room (lossless, the camera falls behind).
    Block,
}

impl OverflowPolicy {
    /// The policy applied to `source`: itself, or for [`OverflowPolicy::Auto`] `Block` for
    /// sources that can wait and `DropOldest` for live ones. Never returns `Auto`.
    pub fn for_source(self, source: &super::SourceConfig) -> OverflowPolicy {
        use super::SourceKind;
        match self {
            OverflowPolicy::Auto => {
                let can_wait = match source.kind {
                    SourceKind::Mjpeg => source.command.is_none(),
                    SourceKind::Images => true,
                    SourceKind::Synthetic => source.fps == 0.0,
                    SourceKind::Camera => false,
                };
                if can_wait {
                    OverflowPolicy::Block
                } else {
                    OverflowPolicy::DropOldest
                }
            }
            other => other,
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Frames that may wait between the source and the encoder, 1–1,000,000.
    #[serde(default = "default_queue_frames")]
    pub queue_frames: Capacity,
    /// What happens when that queue is full: `auto` (default: block a file or directory
    /// replay, drop the oldest frame of a live source), `drop_oldest`, `drop_newest`, `block`.
    #[serde(default)]
    pub overflow: OverflowPolicy,
    /// On SIGINT/SIGTERM, how long to wait for frames already accepted to be delivered
    /// before exiting anyway, milliseconds, 0–600,000 (undelivered ones are counted and
    /// logged). Keep it below systemd's `TimeoutStopSec`.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: GraceMs,
}

fn default_queue_frames() -> Capacity {
    Capacity::new(8).expect("in range")
}
pub(crate) fn default_shutdown_grace_ms() -> GraceMs {
    GraceMs::new(10_000).expect("in range")
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_frames: default_queue_frames(),
            overflow: OverflowPolicy::default(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceConfig;

    fn source(text: &str) -> SourceConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn auto_blocks_sources_that_can_wait_and_drops_the_oldest_of_live_ones() {
        let cases = [
            (
                "kind = \"mjpeg\"\npath = \"/x.mjpeg\"\nfps = 25",
                OverflowPolicy::Block,
            ),
            ("kind = \"images\"\npath = \"/d\"", OverflowPolicy::Block),
            ("kind = \"synthetic\"\nfps = 0", OverflowPolicy::Block),
            ("kind = \"synthetic\"\nfps = 30", OverflowPolicy::DropOldest),
            ("kind = \"camera\"", OverflowPolicy::DropOldest),
            (
                "kind = \"mjpeg\"\ncommand = [\"rpicam-vid\"]",
                OverflowPolicy::DropOldest,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                OverflowPolicy::Auto.for_source(&source(text)),
                want,
                "{text}"
            );
        }
        // An explicit choice is kept whatever the source.
        for p in [
            OverflowPolicy::DropOldest,
            OverflowPolicy::DropNewest,
            OverflowPolicy::Block,
        ] {
            assert_eq!(p.for_source(&source("kind = \"camera\"")), p);
            assert_eq!(p.for_source(&source("kind = \"images\"\npath = \"/d\"")), p);
        }
        assert_eq!(PipelineConfig::default().overflow, OverflowPolicy::Auto);
    }
}
