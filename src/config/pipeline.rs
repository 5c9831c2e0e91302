//! `[pipeline]` (queues, shutdown) and `[sink]` (where frames go).

use serde::{Deserialize, Serialize};

use super::types::{Capacity, GraceMs};

/// What to do with a new frame when the queue in front of the encoder is full.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Drop the oldest waiting frame to make room (keeps latency low). Counted as
    /// `queue_full_oldest`.
    #[default]
    DropOldest,
    /// Drop the new frame (keeps the earliest frames). Counted as `queue_full_newest`.
    DropNewest,
    /// Block the source until there is room (lossless, the camera falls behind).
    Block,
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Frames that may wait between the source and the encoder, 1–1,000,000.
    #[serde(default = "default_queue_frames")]
    pub queue_frames: Capacity,
    /// What happens when that queue is full.
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

/// Which sink publishes frames.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Kafka, directly (`[kafka]`).
    #[default]
    Kafka,
    /// An MQTT broker (`[mqtt]`); `edgecam bridge` moves frames on into Kafka.
    Mqtt,
}

/// `[sink]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `kafka | mqtt`.
    #[serde(default)]
    pub kind: SinkKind,
}
