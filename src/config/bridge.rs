//! `[bridge]` and `[[bridge.inputs]]`: the bridge's identity, budget and inputs. A bridge
//! file also has `[mqtt]` (the broker it subscribes to) and `[kafka]` (where frames go), with
//! the same rules as the agent's, in [`super::mqtt`] and [`super::kafka`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::kafka::KafkaConfig;
use super::mqtt::MqttConfig;
use super::secret::Secret;
use super::types::{
    BodyBytes, Budget, Concurrency, DeviceId, GraceMs, PerSec, Qos, TopicName, WaitMs,
};

/// A whole bridge configuration: `[bridge]`, `[mqtt]`, `[kafka]`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BridgeFile {
    /// `[bridge]`: identity, budget, inputs.
    pub bridge: BridgeConfig,
    /// `[mqtt]`: the broker the bridge subscribes to. Only MQTT 5 (`protocol = "v5"`);
    /// `topic_template`, `qos` and the control-plane keys are not used by the bridge.
    pub mqtt: MqttConfig,
    /// `[kafka]`: the cluster and topic frames go to (`error_topic` is not used: see
    /// `bridge.dead_letter_topic`).
    pub kafka: KafkaConfig,
    /// `[limits]`: how large one incoming image may be (raw JPEG/PNG payloads and the images
    /// inside `edgecam`-format messages).
    pub limits: super::LimitsConfig,
    /// `[http]`: `/metrics`, `/healthz`, `/readyz`.
    pub http: super::HttpConfig,
    /// `[log]`: log format and level (`progress_interval_secs` is not used by the bridge).
    pub log: super::LogConfig,
}

/// `[bridge]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Bridge id: 1–128 characters from `A-Z a-z 0-9 . _ -`. The MQTT client id defaults to
    /// `edgecam-bridge-<id>` (its persistent session lives under that id).
    pub id: DeviceId,
    /// Upper bound on the whole Kafka record (value + key + headers + framing, as
    /// [`crate::record::record_size`] counts it), bytes, 4096–1,000,000,000. Default
    /// 1,000,000. Larger messages are rejected as `over_budget`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: Budget,
    /// Kafka topic for rejected messages (reason in the `edgecam.reason` header). Unset =
    /// rejected messages are only counted and logged. Must differ from `kafka.topic`.
    #[serde(default)]
    pub dead_letter_topic: Option<TopicName>,
    /// On SIGINT/SIGTERM, how long to wait for Kafka delivery reports of messages already
    /// taken before disconnecting anyway, milliseconds (0–600,000). Messages still
    /// undelivered then are not acknowledged, so the broker delivers them again.
    #[serde(default = "super::pipeline::default_shutdown_grace_ms")]
    pub shutdown_grace_ms: GraceMs,
    /// What to subscribe to, at least one `[[bridge.inputs]]`.
    #[serde(default)]
    pub inputs: Vec<InputConfig>,
    /// `[bridge.http]`: frames uploaded over HTTP (`POST /v1/frames/{device}`). Off unless
    /// `listen` is set.
    #[serde(default)]
    pub http: UploadConfig,
}

/// `[bridge.http]`: the upload endpoint (see [`crate::bridge::upload`]).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Address and port to accept uploads on, e.g. `"0.0.0.0:8080"`. Unset (the default): no
    /// upload endpoint. Must differ from `http.listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Bearer token every upload must send (`Authorization: Bearer <token>`), a secret:
    /// inline, `{ file = "…" }` or `{ credential = "…" }`. Unset: no authentication (for a
    /// closed network only). Never logged; `check-config` shows it redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Largest request body accepted, bytes, 1,024–1,073,741,824. Default 20 MiB
    /// (20,971,520). A larger body is refused with `413` before it is read.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: BodyBytes,
    /// Uploads handled at once (body read, checked, fitted, waiting for Kafka), 1–10,000.
    /// Default 16. Further uploads wait for a turn (within `timeout_ms`, else `503`).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: Concurrency,
    /// Uploads accepted per device per second, 1–1,000,000; more get `429` with
    /// `Retry-After`. Unset (the default): no rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_device_per_sec: Option<PerSec>,
    /// How long one upload waits for its turn and for Kafka's delivery report,
    /// milliseconds, 100–600,000. Default 10,000. Past it the client gets `503` with
    /// `Retry-After` (the record may still be delivered later: the same upload sent again
    /// gets the same `edgecam.frame_id`).
    #[serde(default = "default_upload_timeout_ms")]
    pub timeout_ms: WaitMs,
}

/// `bridge.http.max_body_bytes` default: 20 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 << 20;

fn default_max_body_bytes() -> BodyBytes {
    BodyBytes::new(DEFAULT_MAX_BODY_BYTES).expect("in range")
}
fn default_max_concurrent() -> Concurrency {
    Concurrency::new(16).expect("in range")
}
fn default_upload_timeout_ms() -> WaitMs {
    WaitMs::new(10_000).expect("in range")
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            listen: None,
            token: None,
            max_body_bytes: default_max_body_bytes(),
            max_concurrent: default_max_concurrent(),
            per_device_per_sec: None,
            timeout_ms: default_upload_timeout_ms(),
        }
    }
}

fn default_max_message_bytes() -> Budget {
    Budget::new(super::encode::DEFAULT_MAX_MESSAGE_BYTES).expect("in range")
}
fn default_input_qos() -> Qos {
    Qos::new(1).expect("in range")
}

/// What the payloads of an input are.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Frames from edgecam's own MQTT sink: MQTT 5 user properties become Kafka headers 1:1,
    /// the content-type property becomes the `content-type` header. `edgecam.device`,
    /// `edgecam.seq`, `edgecam.frame_id`, `edgecam.captured_at` and the content type are
    /// required.
    Edgecam,
    /// Foreign payloads, e.g. an ESP32-CAM publishing bare JPEG (MQTT 3.1.1 or 5): the bridge
    /// sniffs the image (JPEG or PNG) and writes the edgecam headers itself.
    Raw,
}

impl InputFormat {
    /// `edgecam` or `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Edgecam => "edgecam",
            InputFormat::Raw => "raw",
        }
    }
}

/// `[[bridge.inputs]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// MQTT topic pattern: exactly one level is `{device}`, no wildcards, e.g.
    /// `edgecam/{device}/frame`. Subscribed as the filter with that level replaced by `+`;
    /// the level's value is the device id (record key).
    pub topic: String,
    /// `edgecam | raw`.
    pub format: InputFormat,
    /// Subscription QoS: 1 (at least once, default) or 0 (at most once: needs
    /// `mqtt.allow_message_loss = true`).
    #[serde(default = "default_input_qos")]
    pub qos: Qos,
}

/// A parsed `bridge.inputs[].topic`: levels, and which one holds the device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<String>,
    device_level: usize,
}

/// The `{device}` placeholder.
pub const DEVICE_PLACEHOLDER: &str = "{device}";

impl TopicPattern {
    /// Parses `pattern`. Errors (as a message for [`ConfigError::Invalid`]): empty, a `$`
    /// topic, a wildcard (`+`, `#`) or NUL anywhere, braces outside one whole `{device}` level,
    /// not exactly one `{device}` level.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("must not be empty".into());
        }
        if pattern.starts_with('$') {
            return Err(format!(
                "must not start with '$' (broker-internal topics; got {pattern:?})"
            ));
        }
        if pattern.contains(['+', '#', '\0']) {
            return Err(format!(
                "must not contain wildcards (+, #) or NUL; write the device level as {{device}} \
                 (got {pattern:?})"
            ));
        }
        let levels: Vec<String> = pattern.split('/').map(str::to_string).collect();
        let mut device_level = None;
        for (i, l) in levels.iter().enumerate() {
            if l == DEVICE_PLACEHOLDER {
                if device_level.is_some() {
                    return Err(format!(
                        "must contain exactly one {{device}} level (got {pattern:?}, which has \
                         more)"
                    ));
                }
                device_level = Some(i);
            } else if l.contains(['{', '}']) {
                return Err(format!(
                    "{{device}} must be a whole level, like \"cameras/{{device}}/jpeg\" (got \
                     {pattern:?})"
                ));
            }
        }
        let Some(device_level) = device_level else {
            return Err(format!(
                "must contain exactly one {{device}} level, e.g. \"edgecam/{{device}}/frame\" \
                 (got {pattern:?})"
            ));
        };
        Ok(TopicPattern {
            levels,
            device_level,
        })
    }

    /// The subscription filter: the pattern with the `{device}` level replaced by `+`.
    pub fn filter(&self) -> String {
        let mut l: Vec<&str> = self.levels.iter().map(String::as_str).collect();
        l[self.device_level] = "+";
        l.join("/")
    }

    /// The device level of `topic` when every other level matches the pattern (the value may
    /// be empty or contain any character: check it with [`super::valid_device_id`]).
    pub fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut device = None;
        let mut n = 0;
        for (i, level) in topic.split('/').enumerate() {
            n += 1;
            let want = self.levels.get(i)?;
            if i == self.device_level {
                device = Some(level);
            } else if level != want {
                return None;
            }
        }
        if n != self.levels.len() {
            return None;
        }
        device
    }

    /// `true` when some topic matches both patterns (same number of levels, and at every
    /// level equal text or a `{device}` on either side).
    pub fn overlaps(&self, other: &TopicPattern) -> bool {
        self.levels.len() == other.levels.len()
            && self
                .levels
                .iter()
                .zip(&other.levels)
                .enumerate()
                .all(|(i, (a, b))| i == self.device_level || i == other.device_level || a == b)
    }
}

impl BridgeFile {
    /// The MQTT client id: `mqtt.client_id`, else `edgecam-bridge-<bridge.id>`.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id_or(&format!("edgecam-bridge-{}", self.bridge.id))
    }

    /// The inputs' patterns, in order. Validation guarantees they parse.
    pub fn patterns(&self) -> Vec<TopicPattern> {
        self.bridge
            .inputs
            .iter()
            .map(|i| TopicPattern::parse(&i.topic).expect("validated topic pattern"))
            .collect()
    }

    /// The rules across keys: inputs present, patterns valid and disjoint, QoS 0 only with
    /// the opt-in, dead-letter topic distinct; then `[mqtt]` and `[kafka]` as the bridge uses
    /// them.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let b = &self.bridge;
        if b.inputs.is_empty() {
            return Err(invalid(
                "bridge.inputs",
                "at least one [[bridge.inputs]] entry is required, e.g. topic = \
                 \"edgecam/{device}/frame\", format = \"edgecam\"",
            ));
        }
        let mut patterns: Vec<TopicPattern> = Vec::new();
        for (i, input) in b.inputs.iter().enumerate() {
            let key = format!("bridge.inputs[{i}].topic");
            let p = TopicPattern::parse(&input.topic).map_err(|m| invalid(&key, m))?;
            if let Some(j) = patterns.iter().position(|q| q.overlaps(&p)) {
                return Err(invalid(
                    &key,
                    format!(
                        "overlaps bridge.inputs[{j}].topic ({:?}): a topic matching both would \
                         be delivered twice",
                        b.inputs[j].topic
                    ),
                ));
            }
            patterns.push(p);
            if input.qos.get() == 0 && !self.mqtt.allow_message_loss {
                return Err(invalid(
                    format!("bridge.inputs[{i}].qos"),
                    "0 means the broker sends each message once and forgets it, so a message \
                     in flight when the bridge stops is lost: that voids the bridge's no-loss \
                     guarantee; use 1, or set mqtt.allow_message_loss = true to accept the loss",
                ));
            }
        }
        if let Some(dl) = &b.dead_letter_topic {
            if dl == &self.kafka.topic {
                return Err(invalid(
                    "bridge.dead_letter_topic",
                    format!("must differ from kafka.topic (both are {:?})", dl.as_str()),
                ));
            }
        }
        if let (Some(up), Some(http)) = (b.http.listen, self.http.listen) {
            if up == http {
                return Err(invalid(
                    "bridge.http.listen",
                    format!(
                        "must differ from http.listen (both are {up}): uploads and /metrics \
                         are served by two servers"
                    ),
                ));
            }
        }
        if b.http
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(invalid(
                "bridge.http.token",
                "must not be empty or blank: a client sending `Authorization: Bearer ` would \
                 match it",
            ));
        }
        if b.http.token.is_some() && b.http.listen.is_none() {
            return Err(invalid(
                "bridge.http.token",
                "is set but bridge.http.listen is not, so there is no upload endpoint to \
                 protect; set bridge.http.listen or remove the token",
            ));
        }
        self.mqtt.check(super::mqtt::MqttUser::Bridge)?;
        self.kafka.check(super::kafka::KafkaUser::Bridge {
            budget: b.max_message_bytes.get(),
        })
    }
}
