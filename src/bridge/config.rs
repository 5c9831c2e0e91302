//! The bridge's configuration file: `[bridge]`, `[mqtt]`, `[kafka]`, layered with
//! `EDGECAM_…` environment overrides like the agent's own file, then validated.
//!
//! An example ([`EXAMPLE_TOML`], which a unit test loads):
//!
//! ```toml
//! # edgecam bridge: MQTT topic filters -> Kafka. `edgecam bridge --config bridge.toml`.
//!
//! [bridge]
//! id = "site-a"                          # MQTT client id edgecam-bridge-site-a
//! max_message_bytes = 1000000            # whole Kafka record budget, bytes
//! dead_letter_topic = "edgecam.dead-letter"
//! shutdown_grace_ms = 10000              # wait this long for deliveries at SIGTERM
//!
//! [[bridge.inputs]]                      # frames from edgecam agents with sink.kind = "mqtt"
//! topic = "edgecam/{device}/frame"
//! format = "edgecam"
//! qos = 1
//!
//! [[bridge.inputs]]                      # bare JPEG/PNG from foreign cameras (ESP32-CAM)
//! topic = "cameras/{device}/jpeg"
//! format = "raw"
//! qos = 1
//!
//! [mqtt]
//! host = "mosquitto.local"
//! port = 1883
//! keep_alive_secs = 30
//! silence_timeout_secs = 90              # no traffic this long: reconnect
//! session_expiry_secs = 86400            # the broker queues QoS 1 messages this long
//!
//! [kafka]
//! bootstrap_servers = "kafka1:9092,kafka2:9092"
//! topic = "edgecam.frames"
//! max_in_flight = 32                     # also the MQTT receive maximum
//! message_timeout_ms = 60000
//! ```
//!
//! Environment overrides work as for the agent: `EDGECAM_KAFKA__BOOTSTRAP_SERVERS=b:9092`,
//! `EDGECAM_BRIDGE__MAX_MESSAGE_BYTES=500000`, `EDGECAM_KAFKA__PROPERTIES__LINGER_MS=5`.
//! `bridge.inputs` is a list and can only be set in the file.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, KafkaConfig, MqttConfig, MqttProtocol, PropertyValue};

/// The example configuration of the module documentation, as text.
pub const EXAMPLE_TOML: &str = r#"# edgecam bridge: MQTT topic filters -> Kafka. `edgecam bridge --config bridge.toml`.

[bridge]
id = "site-a"                          # MQTT client id edgecam-bridge-site-a
max_message_bytes = 1000000            # whole Kafka record budget, bytes
dead_letter_topic = "edgecam.dead-letter"
shutdown_grace_ms = 10000              # wait this long for deliveries at SIGTERM

[[bridge.inputs]]                      # frames from edgecam agents with sink.kind = "mqtt"
topic = "edgecam/{device}/frame"
format = "edgecam"
qos = 1

[[bridge.inputs]]                      # bare JPEG/PNG from foreign cameras (ESP32-CAM)
topic = "cameras/{device}/jpeg"
format = "raw"
qos = 1

[mqtt]
host = "mosquitto.local"
port = 1883
keep_alive_secs = 30
silence_timeout_secs = 90              # no traffic this long: reconnect
session_expiry_secs = 86400            # the broker queues QoS 1 messages this long

[kafka]
bootstrap_servers = "kafka1:9092,kafka2:9092"
topic = "edgecam.frames"
max_in_flight = 32                     # also the MQTT receive maximum
message_timeout_ms = 60000
"#;

/// Default `bridge.shutdown_grace_ms`.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// The whole bridge configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeFile {
    /// `[bridge]`: identity, budget, inputs.
    pub bridge: BridgeConfig,
    /// `[mqtt]`: the broker the bridge subscribes to. Only MQTT 5 (`protocol = "v5"`);
    /// `topic_template`, `qos` and the control-plane keys are not used by the bridge.
    pub mqtt: MqttConfig,
    /// `[kafka]`: the cluster and topic frames go to (`error_topic` is not used: see
    /// `bridge.dead_letter_topic`).
    pub kafka: KafkaConfig,
}

/// `[bridge]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Bridge id: 1–128 characters from `A-Z a-z 0-9 . _ -`. The MQTT client id defaults to
    /// `edgecam-bridge-<id>` (its persistent session lives under that id).
    pub id: String,
    /// Upper bound on the whole Kafka record (value + key + headers + framing, as
    /// [`crate::record::record_size`] counts it), bytes, 4096–1,000,000,000. Default
    /// 1,000,000. Larger messages are rejected as `over_budget`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: NonZeroU32,
    /// Kafka topic for rejected messages (reason in the `edgecam.reason` header). Unset =
    /// rejected messages are only counted and logged. Must differ from `kafka.topic`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// On SIGINT/SIGTERM, how long to wait for Kafka delivery reports of messages already
    /// taken before disconnecting anyway, milliseconds (0–600,000). Messages still
    /// undelivered then are not acknowledged, so the broker delivers them again.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// What to subscribe to, at least one `[[bridge.inputs]]`.
    #[serde(default)]
    pub inputs: Vec<InputConfig>,
}

fn default_max_message_bytes() -> NonZeroU32 {
    NonZeroU32::new(crate::config::DEFAULT_MAX_MESSAGE_BYTES).unwrap()
}
fn default_shutdown_grace_ms() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_MS
}
fn default_input_qos() -> u8 {
    1
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
    /// Subscription QoS: 0 (at most once) or 1 (at least once, default).
    #[serde(default = "default_input_qos")]
    pub qos: u8,
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
    /// be empty or contain any character: check it with [`valid_device_id`]).
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

/// `true` for ids edgecam accepts as device ids (and Kafka keys): 1–128 characters from
/// `A-Z a-z 0-9 . _ -`.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(is_name_char)
}

fn is_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')
}

impl BridgeFile {
    /// The MQTT client id: `mqtt.client_id`, else `edgecam-bridge-<bridge.id>`.
    pub fn client_id(&self) -> String {
        crate::mqtt::client_id(&self.mqtt, &format!("edgecam-bridge-{}", self.bridge.id))
    }

    /// The inputs' patterns, in order. Validation guarantees they parse.
    pub fn patterns(&self) -> Vec<TopicPattern> {
        self.bridge
            .inputs
            .iter()
            .map(|i| TopicPattern::parse(&i.topic).expect("validated topic pattern"))
            .collect()
    }
}

/// Reads `path` (TOML) with `EDGECAM_…` overrides from `env` (pass `std::env::vars()`), then
/// validates.
///
/// Errors: [`ConfigError`] naming the file or the dotted key (`bridge.inputs[0].topic`,
/// `kafka.bootstrap_servers`, …).
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BridgeFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    load_str(&text, env)
}

/// Like [`load`], from TOML text.
pub fn load_str(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BridgeFile, ConfigError> {
    // Syntax first, with a position.
    if let Err(e) = toml_text.parse::<toml::Table>() {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_column(toml_text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        return Err(ConfigError::Syntax {
            line,
            column,
            message: e.message().trim().to_string(),
        });
    }
    let env = collect_env(env)?;
    let layered = config::Config::builder()
        .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(crate::config::ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(false)
                .source(Some(env.layered)),
        )
        .build()
        .map_err(from_layered)?;
    let mut file: BridgeFile = layered.try_deserialize().map_err(from_layered)?;
    for (name, value) in env.properties {
        file.kafka.properties.insert(name, value);
    }
    validate(&file)?;
    Ok(file)
}

fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

const TABLES: [&str; 3] = ["bridge", "mqtt", "kafka"];

struct Env {
    layered: HashMap<String, String>,
    properties: Vec<(String, PropertyValue)>,
}

fn collect_env(env: impl IntoIterator<Item = (String, String)>) -> Result<Env, ConfigError> {
    let prefix = format!("{}_", crate::config::ENV_PREFIX);
    let mut out = Env {
        layered: HashMap::new(),
        properties: Vec::new(),
    };
    for (name, value) in env {
        let Some(rest) = name
            .get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(&prefix))
            .map(|_| name[prefix.len()..].to_lowercase())
        else {
            continue;
        };
        if !rest.contains("__") {
            if let Some(table) = TABLES.iter().find(|t| rest.starts_with(&format!("{t}_"))) {
                let field = &rest[table.len() + 1..];
                return Err(ConfigError::Env {
                    message: format!(
                        "levels are separated by `__`: did you mean {}_{}__{}?",
                        crate::config::ENV_PREFIX,
                        table.to_uppercase(),
                        field.to_uppercase()
                    ),
                    name,
                });
            }
            continue; // EDGECAM_LOG and friends
        }
        let parts: Vec<&str> = rest.split("__").collect();
        if !TABLES.contains(&parts[0]) {
            return Err(ConfigError::UnknownKey {
                key: parts[0].to_string(),
                origin: Some(format!("environment variable {name}")),
                allowed: TABLES.iter().map(|t| format!("[{t}]")).collect(),
            });
        }
        let key = format!("{}.{}", parts[0], parts[1]);
        if key == "kafka.properties" {
            let names = &parts[2..];
            if names.is_empty() || names.iter().any(|n| n.is_empty()) {
                return Err(ConfigError::Env {
                    name,
                    message: "kafka.properties is a table: set one property per variable, e.g. \
                              EDGECAM_KAFKA__PROPERTIES__LINGER_MS=5 for \"linger.ms\""
                        .into(),
                });
            }
            let property = names.join(".").replace('_', ".");
            let v = if let Ok(b) = value.parse::<bool>() {
                PropertyValue::Bool(b)
            } else if let Ok(i) = value.parse::<i64>() {
                PropertyValue::Int(i)
            } else {
                PropertyValue::Text(value)
            };
            out.properties.push((property, v));
            continue;
        }
        if key == "bridge.inputs" {
            return Err(ConfigError::Env {
                name,
                message: "bridge.inputs is a list and can only be set in the file".into(),
            });
        }
        if parts.len() > 2 {
            return Err(ConfigError::Env {
                message: format!("{key} has no sub-keys"),
                name,
            });
        }
        out.layered.insert(name, value);
    }
    Ok(out)
}

/// Maps the `config` crate's errors (which carry the dotted key) to [`ConfigError`].
fn from_layered(e: config::ConfigError) -> ConfigError {
    match fix_keys(e) {
        config::ConfigError::NotFound(key) => ConfigError::Missing { key },
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => ConfigError::WrongType {
            key: key.unwrap_or_default(),
            expected: expected.to_string(),
            found: unexpected.to_string(),
            origin: None,
        },
        config::ConfigError::At { error, key, .. } => match *error {
            config::ConfigError::Message(message) => from_message(key, &message),
            inner => match key {
                Some(key) => ConfigError::Invalid {
                    key,
                    message: inner.to_string(),
                },
                None => ConfigError::Other(inner.to_string()),
            },
        },
        config::ConfigError::Message(message) => from_message(None, &message),
        config::ConfigError::FileParse { cause, .. } => ConfigError::Syntax {
            line: None,
            column: None,
            message: cause.to_string(),
        },
        other => ConfigError::Other(other.to_string()),
    }
}

/// The `config` crate writes array elements' fields as `inputs[0]qos`: add the dot.
fn dotted(key: String) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut after_bracket = false;
    for ch in key.chars() {
        if after_bracket && ch != '.' && ch != '[' {
            out.push('.');
        }
        after_bracket = ch == ']';
        out.push(ch);
    }
    out
}

fn fix_keys(e: config::ConfigError) -> config::ConfigError {
    match e {
        config::ConfigError::NotFound(key) => config::ConfigError::NotFound(dotted(key)),
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key: key.map(dotted),
        },
        config::ConfigError::At { error, origin, key } => config::ConfigError::At {
            error,
            origin,
            key: key.map(dotted),
        },
        other => other,
    }
}

/// Allowed values of the enums of the file, by Rust type name.
fn enum_values(type_name: &str) -> &'static str {
    match type_name {
        "InputFormat" => "edgecam, raw",
        "MqttProtocol" => "v5, v311",
        _ => "see the documentation",
    }
}

/// A serde message tied to `key` (the parent of the problem for unknown/missing fields).
fn from_message(key: Option<String>, message: &str) -> ConfigError {
    let join = |child: &str| match &key {
        Some(k) if !k.is_empty() => format!("{k}.{child}"),
        _ => child.to_string(),
    };
    let key_or = || key.clone().unwrap_or_else(|| "(top level)".into());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut parts = rest.split('`');
        let field = parts.next().unwrap_or_default();
        let allowed = rest
            .split_once("expected ")
            .map(|(_, list)| {
                list.split('`')
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1)
                    .map(|(_, s)| s.to_string())
                    .collect()
            })
            .unwrap_or_default();
        return ConfigError::UnknownKey {
            key: join(field),
            origin: None,
            allowed,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return ConfigError::Missing { key: join(field) };
    }
    if message.contains("expected a nonzero") {
        return ConfigError::Invalid {
            key: key_or(),
            message: "must be at least 1 (got 0)".into(),
        };
    }
    if let Some(rest) = message.strip_prefix("enum ") {
        let type_name = rest.split_whitespace().next().unwrap_or_default();
        let given = rest
            .split_once("does not have variant constructor ")
            .map(|(_, g)| g.to_string())
            .unwrap_or_default();
        return ConfigError::Invalid {
            key: key_or(),
            message: format!(
                "unknown value {given:?}; allowed: {}",
                enum_values(type_name)
            ),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let given = rest.split('`').next().unwrap_or_default();
        let allowed: Vec<&str> = rest
            .split_once("expected ")
            .map(|(_, list)| {
                list.split('`')
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1)
                    .map(|(_, s)| s)
                    .collect()
            })
            .unwrap_or_default();
        return ConfigError::Invalid {
            key: key_or(),
            message: format!("unknown value {given:?}; allowed: {}", allowed.join(", ")),
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return ConfigError::WrongType {
                key: key_or(),
                expected: expected.to_string(),
                found: found.to_string(),
                origin: None,
            };
        }
    }
    match key {
        Some(key) => ConfigError::Invalid {
            key,
            message: message.to_string(),
        },
        None => ConfigError::Other(message.to_string()),
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn check_range(key: &str, value: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if value < lo {
        Err(invalid(key, format!("must be at least {lo} (got {value})")))
    } else if value > hi {
        Err(invalid(key, format!("must be at most {hi} (got {value})")))
    } else {
        Ok(())
    }
}

fn check_topic(key: &str, topic: &str) -> Result<(), ConfigError> {
    const ALLOWED: &str =
        "a Kafka topic name: 1 to 249 characters from A-Z a-z 0-9 . _ -, not \".\" or \"..\"";
    let len = topic.chars().count();
    let problem = if len == 0 || len > 249 {
        Some(format!("{len} characters"))
    } else if topic == "." || topic == ".." {
        Some(format!("{topic:?}"))
    } else {
        topic
            .chars()
            .find(|&ch| !is_name_char(ch))
            .map(|bad| format!("{topic:?}, which contains {bad:?}"))
    };
    match problem {
        Some(problem) => Err(invalid(key, format!("must be {ALLOWED} (got {problem})"))),
        None => Ok(()),
    }
}

/// librdkafka properties the bridge fixes itself.
const FIXED_PROPERTIES: &[(&str, &str)] = &[
    ("acks", "is fixed by the delivery guarantee (acks=all)"),
    (
        "request.required.acks",
        "is fixed by the delivery guarantee (acks=all)",
    ),
    (
        "enable.idempotence",
        "is fixed by the delivery guarantee (idempotence on)",
    ),
    (
        "bootstrap.servers",
        "may not be set here: use kafka.bootstrap_servers",
    ),
    (
        "metadata.broker.list",
        "may not be set here: use kafka.bootstrap_servers",
    ),
    (
        "message.timeout.ms",
        "may not be set here: use kafka.message_timeout_ms",
    ),
    (
        "delivery.timeout.ms",
        "may not be set here: use kafka.message_timeout_ms",
    ),
];

/// The rules: ranges, patterns, names, combinations.
fn validate(f: &BridgeFile) -> Result<(), ConfigError> {
    let b = &f.bridge;
    if !valid_device_id(&b.id) {
        return Err(invalid(
            "bridge.id",
            format!(
                "must be 1 to 128 characters from A-Z a-z 0-9 . _ - (got {:?})",
                b.id
            ),
        ));
    }
    check_range(
        "bridge.max_message_bytes",
        b.max_message_bytes.get() as u64,
        4096,
        1_000_000_000,
    )?;
    check_range("bridge.shutdown_grace_ms", b.shutdown_grace_ms, 0, 600_000)?;
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
                    "overlaps bridge.inputs[{j}].topic ({:?}): a topic matching both would be \
                     delivered twice",
                    b.inputs[j].topic
                ),
            ));
        }
        patterns.push(p);
        if input.qos > 1 {
            return Err(invalid(
                format!("bridge.inputs[{i}].qos"),
                format!("must be 0 or 1 (got {})", input.qos),
            ));
        }
    }
    if let Some(dl) = &b.dead_letter_topic {
        check_topic("bridge.dead_letter_topic", dl)?;
        if dl == &f.kafka.topic {
            return Err(invalid(
                "bridge.dead_letter_topic",
                format!("must differ from kafka.topic (both are {dl:?})"),
            ));
        }
    }

    let m = &f.mqtt;
    if m.protocol != MqttProtocol::V5 {
        return Err(invalid(
            "mqtt.protocol",
            "the bridge needs MQTT 5 (\"v5\"): it reads headers from MQTT 5 properties \
             (publishers may still use MQTT 3.1.1)",
        ));
    }
    if m.host.trim().is_empty() {
        return Err(invalid("mqtt.host", "must not be empty"));
    }
    if m.port == 0 {
        return Err(invalid("mqtt.port", "must be 1-65535 (got 0)"));
    }
    check_range("mqtt.keep_alive_secs", m.keep_alive_secs as u64, 5, 3600)?;
    if m.silence_timeout_secs <= m.keep_alive_secs as u32 {
        return Err(invalid(
            "mqtt.silence_timeout_secs",
            format!(
                "must exceed mqtt.keep_alive_secs ({}), got {}",
                m.keep_alive_secs, m.silence_timeout_secs
            ),
        ));
    }
    if let Some(id) = &m.client_id {
        if id.is_empty() || id.len() > 65535 {
            return Err(invalid("mqtt.client_id", "must not be empty"));
        }
    }
    if m.password.is_some() && m.username.is_none() {
        return Err(invalid("mqtt.password", "needs mqtt.username"));
    }

    let k = &f.kafka;
    if k.bootstrap_servers.trim().is_empty()
        || k.bootstrap_servers.split(',').map(str::trim).any(|e| {
            e.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().map_or(true, |p| p == 0))
        })
    {
        return Err(invalid(
            "kafka.bootstrap_servers",
            format!(
                "must be a comma-separated list of host:port (got {:?})",
                k.bootstrap_servers
            ),
        ));
    }
    check_topic("kafka.topic", &k.topic)?;
    if k.error_topic.is_some() {
        return Err(invalid(
            "kafka.error_topic",
            "is not used by the bridge; rejected messages go to bridge.dead_letter_topic",
        ));
    }
    if let Some(p) = k.create_topic_partitions {
        check_range(
            "kafka.create_topic_partitions",
            p.get() as u64,
            1,
            i32::MAX as u64,
        )?;
    }
    check_range(
        "kafka.create_topic_replication",
        k.create_topic_replication.get() as u64,
        1,
        i16::MAX as u64,
    )?;
    // Also the MQTT receive maximum (a 16-bit number).
    check_range(
        "kafka.max_in_flight",
        k.max_in_flight.get() as u64,
        1,
        65_535,
    )?;
    for (name, value) in &k.properties {
        let key = format!("kafka.properties.{name}");
        if name.is_empty() {
            return Err(invalid(&key, "property name must not be empty"));
        }
        if let Some((_, why)) = FIXED_PROPERTIES
            .iter()
            .find(|(fixed, _)| fixed.eq_ignore_ascii_case(name))
        {
            return Err(invalid(&key, *why));
        }
        if name == "message.max.bytes" {
            let budget = b.max_message_bytes.get();
            if !value
                .to_string()
                .parse::<u64>()
                .is_ok_and(|v| v >= u64::from(budget))
            {
                return Err(invalid(
                    &key,
                    format!(
                        "must be a number at least bridge.max_message_bytes ({budget}) (got \
                         {value})"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[bridge]
id = "site-a"
[[bridge.inputs]]
topic = "edgecam/{device}/frame"
format = "edgecam"
[[bridge.inputs]]
topic = "cameras/{device}/jpeg"
format = "raw"
qos = 0
[mqtt]
host = "localhost"
[kafka]
bootstrap_servers = "localhost:9092"
"#;

    fn load_with(extra_bridge: &str) -> Result<BridgeFile, ConfigError> {
        load_str(
            &MIN.replacen("[bridge]\n", &format!("[bridge]\n{extra_bridge}\n"), 1),
            std::iter::empty(),
        )
    }

    fn err_key(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. }
            | ConfigError::Missing { key }
            | ConfigError::UnknownKey { key, .. }
            | ConfigError::WrongType { key, .. } => key,
            other => panic!("no key in {other:?}"),
        }
    }

    #[test]
    fn the_example_loads_and_matches_the_module_docs() {
        let f = load_str(EXAMPLE_TOML, std::iter::empty()).unwrap();
        assert_eq!(f.client_id(), "edgecam-bridge-site-a");
        assert_eq!(f.bridge.inputs[1].format, InputFormat::Raw);
        assert_eq!(
            f.bridge.dead_letter_topic.as_deref(),
            Some("edgecam.dead-letter")
        );
        let docs: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| *l != "//! ```toml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| {
                format!(
                    "{}\n",
                    l.strip_prefix("//!").unwrap().trim_start_matches(' ')
                )
            })
            .collect();
        let example: String = EXAMPLE_TOML
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        assert_eq!(docs, example);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let f = load_str(MIN, std::iter::empty()).unwrap();
        assert_eq!(f.bridge.max_message_bytes.get(), 1_000_000);
        assert_eq!(f.bridge.dead_letter_topic, None);
        assert_eq!(f.bridge.inputs.len(), 2);
        assert_eq!(f.bridge.inputs[0].qos, 1);
        assert_eq!(f.bridge.inputs[1].qos, 0);
        assert_eq!(f.bridge.inputs[1].format, InputFormat::Raw);
        assert_eq!(f.client_id(), "edgecam-bridge-site-a");
        let p = f.patterns();
        assert_eq!(p[0].filter(), "edgecam/+/frame");
        assert_eq!(p[1].filter(), "cameras/+/jpeg");
    }

    #[test]
    fn environment_overrides_keys() {
        let env = [
            ("EDGECAM_KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092"),
            ("EDGECAM_BRIDGE__MAX_MESSAGE_BYTES", "500000"),
            ("EDGECAM_KAFKA__PROPERTIES__LINGER_MS", "7"),
            ("EDGECAM_LOG", "debug"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        let f = load_str(MIN, env).unwrap();
        assert_eq!(f.kafka.bootstrap_servers, "b1:9092,b2:9092");
        assert_eq!(f.bridge.max_message_bytes.get(), 500_000);
        assert_eq!(f.kafka.properties["linger.ms"], PropertyValue::Int(7));
        let e = load_str(MIN, [("EDGECAM_DEVICE__ID".to_string(), "x".to_string())]).unwrap_err();
        assert_eq!(err_key(e), "device");
        let e = load_str(MIN, [("EDGECAM_BRIDGE_ID".to_string(), "x".to_string())]).unwrap_err();
        assert!(matches!(e, ConfigError::Env { .. }), "{e:?}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_with("colour = 1").unwrap_err();
        assert_eq!(err_key(e.clone()), "bridge.colour", "{e}");
        let e = load_with("id2 = 1").unwrap_err();
        assert!(e.to_string().contains("bridge.id2"), "{e}");
        let e = load_with("max_message_bytes = 0").unwrap_err();
        assert_eq!(err_key(e), "bridge.max_message_bytes");
        let e = load_with("max_message_bytes = 100").unwrap_err();
        assert_eq!(err_key(e), "bridge.max_message_bytes");
        let e = load_with("dead_letter_topic = \"edgecam.frames\"").unwrap_err();
        assert_eq!(err_key(e), "bridge.dead_letter_topic");
        let e = load_with("dead_letter_topic = \"bad topic\"").unwrap_err();
        assert_eq!(err_key(e), "bridge.dead_letter_topic");
        let e = load_str(
            &MIN.replace("id = \"site-a\"", "id = \"a/b\""),
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(err_key(e), "bridge.id");
        let e = load_str(&MIN.replace("id = \"site-a\"\n", ""), std::iter::empty()).unwrap_err();
        assert_eq!(err_key(e), "bridge.id");
        let e = load_str(
            &MIN.replace("format = \"raw\"", "format = \"gif\""),
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(err_key(e.clone()), "bridge.inputs[1].format");
        assert!(
            e.to_string().contains("\"gif\"; allowed: edgecam, raw"),
            "{e}"
        );
        let e = load_str(&MIN.replace("qos = 0", "qos = \"x\""), std::iter::empty()).unwrap_err();
        assert_eq!(err_key(e), "bridge.inputs[1].qos");
        let e = load_str(&MIN.replace("qos = 0", "qos = 2"), std::iter::empty()).unwrap_err();
        assert_eq!(err_key(e), "bridge.inputs[1].qos");
        let e = load_str(&MIN.replace("qos = 0", "qoz = 0"), std::iter::empty()).unwrap_err();
        assert!(e.to_string().contains("qoz"), "{e}");
        let e = load_str(
            &MIN.replace("host = \"localhost\"", "host = \"\""),
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(err_key(e), "mqtt.host");
        let e = load_str(
            &MIN.replace("\"localhost:9092\"", "\"localhost\""),
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(err_key(e), "kafka.bootstrap_servers");
        let e = load_str(
            &format!("{MIN}\n[kafka.properties]\nacks = 1\n"),
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(err_key(e), "kafka.properties.acks");
        let e = load_str(
            &MIN.replace(
                "host = \"localhost\"",
                "host = \"localhost\"\nprotocol = \"v311\"",
            ),
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(err_key(e), "mqtt.protocol");
        let e = load_str("[bridge\n", std::iter::empty()).unwrap_err();
        assert!(
            matches!(e, ConfigError::Syntax { line: Some(1), .. }),
            "{e:?}"
        );
    }

    #[test]
    fn inputs_are_checked() {
        let no_inputs =
            "[bridge]\nid = \"a\"\n[mqtt]\nhost = \"h\"\n[kafka]\nbootstrap_servers = \"k:1\"\n";
        let e = load_str(no_inputs, std::iter::empty()).unwrap_err();
        assert_eq!(err_key(e), "bridge.inputs");
        for bad in [
            "edgecam/+/frame",
            "edgecam/#",
            "edgecam/frame",
            "edgecam/{device}/{device}",
            "edgecam/cam-{device}/frame",
            "$SYS/{device}",
            "",
        ] {
            let doc = MIN.replace("edgecam/{device}/frame", bad);
            let e = load_str(&doc, std::iter::empty()).unwrap_err();
            assert_eq!(err_key(e), "bridge.inputs[0].topic", "{bad}");
        }
        // Overlapping filters would deliver a message twice.
        let doc = MIN.replace("cameras/{device}/jpeg", "edgecam/x/{device}");
        let e = load_str(&doc, std::iter::empty()).unwrap_err();
        assert_eq!(err_key(e.clone()), "bridge.inputs[1].topic");
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn patterns_extract_the_device() {
        let p = TopicPattern::parse("site/{device}/cam/jpeg").unwrap();
        assert_eq!(p.filter(), "site/+/cam/jpeg");
        assert_eq!(p.device_of("site/esp-1/cam/jpeg"), Some("esp-1"));
        assert_eq!(p.device_of("site//cam/jpeg"), Some(""));
        assert_eq!(p.device_of("site/esp-1/cam/jpeg/x"), None);
        assert_eq!(p.device_of("site/esp-1/cam"), None);
        assert_eq!(p.device_of("other/esp-1/cam/jpeg"), None);
        let first = TopicPattern::parse("{device}").unwrap();
        assert_eq!(first.filter(), "+");
        assert_eq!(first.device_of("cam"), Some("cam"));
        assert_eq!(first.device_of("a/b"), None);
        assert!(valid_device_id("esp32-cam_01.x"));
        assert!(!valid_device_id(""));
        assert!(!valid_device_id("bad device"));
        assert!(!valid_device_id(&"x".repeat(129)));
    }
}
