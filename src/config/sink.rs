//! `[sink]`: which backend publishes frames, and the resolved [`SinkConfig`] that carries
//! that backend's own table (`[kafka]`, `[mqtt]`).
//!
//! A new backend is one variant of [`SinkKind`] and [`SinkConfig`] plus its table: every
//! `match` on them is exhaustive (no `_ =>` arm), so the compiler points at each place that
//! must learn the new kind.

use serde::{Deserialize, Serialize};

use super::{KafkaConfig, MqttConfig, PubsubConfig, TopicName};

/// Which sink publishes frames: `[sink] kind` as written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Kafka, directly (`[kafka]`).
    #[default]
    Kafka,
    /// An MQTT broker (`[mqtt]`); `edgecam bridge` moves frames on into Kafka.
    Mqtt,
    /// Google Cloud Pub/Sub (`[pubsub]`), through its REST API.
    Pubsub,
}

impl SinkKind {
    /// The name as written in `sink.kind` and shown in logs, `/metrics` (`sink="kafka"`)
    /// and `check-config`: `kafka` or `mqtt`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Kafka => "kafka",
            SinkKind::Mqtt => "mqtt",
            SinkKind::Pubsub => "pubsub",
        }
    }

    /// The table this kind reads its settings from (`kafka`, `mqtt`, `pubsub`).
    pub fn table(self) -> &'static str {
        match self {
            SinkKind::Kafka => "kafka",
            SinkKind::Mqtt => "mqtt",
            SinkKind::Pubsub => "pubsub",
        }
    }
}

/// `[sink]` as written in the file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SinkTable {
    /// `kafka | mqtt | pubsub`.
    #[serde(default)]
    pub kind: SinkKind,
}

/// The resolved sink: its kind with that kind's table. Built by the loader from
/// `[sink] kind` and the table it names (missing table: `ConfigError::Missing` naming it);
/// the file keeps its shape (`[sink] kind = "mqtt"` plus `[mqtt]`).
#[derive(Debug, Clone, PartialEq)]
// Built once per agent and cloned only on reload: boxing the larger table buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum SinkConfig {
    /// `sink.kind = "kafka"` with `[kafka]`.
    Kafka(KafkaConfig),
    /// `sink.kind = "mqtt"` with `[mqtt]` (whose connection also carries the control plane
    /// when `mqtt.control` is on).
    Mqtt(MqttConfig),
    /// `sink.kind = "pubsub"` with `[pubsub]`.
    Pubsub(PubsubConfig),
}

impl SinkConfig {
    /// Which kind this is.
    pub fn kind(&self) -> SinkKind {
        match self {
            SinkConfig::Kafka(_) => SinkKind::Kafka,
            SinkConfig::Mqtt(_) => SinkKind::Mqtt,
            SinkConfig::Pubsub(_) => SinkKind::Pubsub,
        }
    }

    /// The topic for reports about frames that could not be published, when the sink has
    /// one (`kafka.error_topic`; MQTT has none).
    pub fn error_topic(&self) -> Option<&TopicName> {
        match self {
            SinkConfig::Kafka(k) => k.error_topic.as_ref(),
            SinkConfig::Mqtt(_) | SinkConfig::Pubsub(_) => None,
        }
    }

    /// The `[kafka]` table when Kafka is the sink.
    pub fn kafka(&self) -> Option<&KafkaConfig> {
        match self {
            SinkConfig::Kafka(k) => Some(k),
            SinkConfig::Mqtt(_) | SinkConfig::Pubsub(_) => None,
        }
    }

    /// The `[mqtt]` table when MQTT is the sink.
    pub fn mqtt(&self) -> Option<&MqttConfig> {
        match self {
            SinkConfig::Mqtt(m) => Some(m),
            SinkConfig::Kafka(_) | SinkConfig::Pubsub(_) => None,
        }
    }

    /// The `[pubsub]` table when Pub/Sub is the sink.
    pub fn pubsub(&self) -> Option<&PubsubConfig> {
        match self {
            SinkConfig::Pubsub(p) => Some(p),
            SinkConfig::Kafka(_) | SinkConfig::Mqtt(_) => None,
        }
    }
}
