//! `[mqtt]`: the broker, the frame topic, and the control plane. Shared by the agent (sink and
//! control plane) and the bridge; [`MqttConfig::check`] holds the rules once, with the few
//! that differ as a parameter.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::encode::default_true;
use super::error::{invalid, ConfigError};
use super::secret::Secret;
use super::types::{KeepAliveSecs, MqttInFlight, Port, Qos};

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MqttProtocol {
    /// MQTT 5: headers travel as user properties, content type as the content-type property.
    #[default]
    V5,
    /// MQTT 3.1.1: no properties; the payload is the image only.
    V311,
}

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port, 1–65535. Default 1883.
    #[serde(default = "default_mqtt_port")]
    pub port: Port,
    /// MQTT client id. Default `edgecam-<device.id>` (`edgecam-bridge-<bridge.id>` for the
    /// bridge). Must be unique per broker.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `v5 | v311`. The bridge needs `v5`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Topic frames are published to; `{device}` is replaced by `device.id`.
    #[serde(default = "default_topic_template")]
    pub topic_template: String,
    /// QoS of frame publishes: 1 (at least once, default) or 0 (at most once: frames may
    /// be lost, so it needs `allow_message_loss = true`).
    #[serde(default = "default_qos")]
    pub qos: Qos,
    /// MQTT 5 message expiry interval, seconds: the broker discards a frame not delivered
    /// by then. Unset = never.
    #[serde(default)]
    pub message_expiry_secs: Option<NonZeroU32>,
    /// Keep-alive interval, seconds (5–3600).
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: KeepAliveSecs,
    /// No-traffic watchdog: when nothing at all arrives from the broker for this many
    /// seconds, the connection is dropped and reopened. Must exceed `keep_alive_secs`.
    #[serde(default = "default_silence_timeout_secs")]
    pub silence_timeout_secs: u32,
    /// MQTT 5 session expiry, seconds: how long the broker keeps this client's session
    /// (subscriptions, queued QoS 1 messages) while it is disconnected. The bridge needs it
    /// above 0 (or `allow_message_loss = true`): with 0 the broker forgets what the bridge
    /// had not acknowledged yet.
    #[serde(default = "default_session_expiry_secs")]
    pub session_expiry_secs: u32,
    /// QoS 1 publishes awaiting their PUBACK at once (1–65535).
    #[serde(default = "default_mqtt_in_flight")]
    pub max_in_flight: MqttInFlight,
    /// User name, if the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (with `username`): a secret, inline or `{ file = "…" }` /
    /// `{ credential = "…" }` (see the configuration docs). Never printed.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Publish availability and state and accept commands under `control_prefix`.
    #[serde(default = "default_true")]
    pub control: bool,
    /// Control topics: `<prefix>/<device>/status` (retained `online`/`offline`, also the
    /// last will), `<prefix>/<device>/state` (retained JSON), `<prefix>/<device>/set/<name>`.
    #[serde(default = "default_control_prefix")]
    pub control_prefix: String,
    /// Accept settings that void the no-loss guarantee: `qos = 0` (agent), QoS 0 bridge
    /// inputs, `session_expiry_secs = 0` (bridge). Default false: such settings are refused.
    #[serde(default)]
    pub allow_message_loss: bool,
}

fn default_mqtt_port() -> Port {
    Port::new(1883).expect("in range")
}
fn default_topic_template() -> String {
    "edgecam/{device}/frame".to_string()
}
fn default_qos() -> Qos {
    Qos::new(1).expect("in range")
}
fn default_keep_alive_secs() -> KeepAliveSecs {
    KeepAliveSecs::new(30).expect("in range")
}
fn default_silence_timeout_secs() -> u32 {
    90
}
fn default_session_expiry_secs() -> u32 {
    3600
}
fn default_mqtt_in_flight() -> MqttInFlight {
    MqttInFlight::new(32).expect("in range")
}
fn default_control_prefix() -> String {
    "edgecam".to_string()
}

/// Who uses an `[mqtt]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MqttUser {
    /// An agent's sink (`sink.kind = "mqtt"`) and control plane.
    AgentSink,
    /// An agent's control plane only (beside a Kafka sink).
    AgentControl,
    /// The bridge.
    Bridge,
}

impl MqttConfig {
    /// The frame topic for `device`.
    pub fn frame_topic(&self, device: &str) -> String {
        self.topic_template.replace("{device}", device)
    }

    /// The rules of `[mqtt]`, written once for the agent and the bridge.
    pub(crate) fn check(&self, user: MqttUser) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(invalid("mqtt.host", "must not be empty"));
        }
        if self.silence_timeout_secs <= u32::from(self.keep_alive_secs.get()) {
            return Err(invalid(
                "mqtt.silence_timeout_secs",
                format!(
                    "must exceed mqtt.keep_alive_secs ({}), got {}",
                    self.keep_alive_secs, self.silence_timeout_secs
                ),
            ));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 65_535 {
                return Err(invalid(
                    "mqtt.client_id",
                    "must be 1 to 65535 bytes (unset = the default)",
                ));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(invalid("mqtt.password", "needs mqtt.username"));
        }
        let t = &self.topic_template;
        if t.is_empty() || t.contains(['+', '#', '\0']) || t.starts_with('$') {
            return Err(invalid(
                "mqtt.topic_template",
                format!("must be a publishable MQTT topic without wildcards (got {t:?})"),
            ));
        }
        let p = &self.control_prefix;
        if p.is_empty() || p.contains(['+', '#', '\0']) || p.starts_with('$') {
            return Err(invalid(
                "mqtt.control_prefix",
                format!("must be a topic prefix without wildcards (got {p:?})"),
            ));
        }
        match user {
            MqttUser::AgentSink if self.qos.get() == 0 && !self.allow_message_loss => Err(invalid(
                "mqtt.qos",
                "0 means at most once: a frame lost on the way is never sent again, which \
                     voids edgecam's no-loss guarantee; use 1, or set mqtt.allow_message_loss = \
                     true to accept the loss",
            )),
            MqttUser::Bridge if self.protocol != MqttProtocol::V5 => Err(invalid(
                "mqtt.protocol",
                "the bridge needs MQTT 5 (\"v5\"): it reads headers from MQTT 5 properties \
                 (publishers may still use MQTT 3.1.1)",
            )),
            MqttUser::Bridge if self.session_expiry_secs == 0 && !self.allow_message_loss => {
                Err(invalid(
                    "mqtt.session_expiry_secs",
                    "0 makes the broker forget the bridge's session, and every message it had \
                     not acknowledged yet, whenever the bridge disconnects: that voids the \
                     bridge's no-loss guarantee; use at least the longest outage to ride out \
                     (default 3600), or set mqtt.allow_message_loss = true to accept the loss",
                ))
            }
            _ => Ok(()),
        }
    }
}
