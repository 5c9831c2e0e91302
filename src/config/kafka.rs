//! `[kafka]`: the cluster, the topics, and librdkafka properties. Shared by the agent and the
//! bridge; the rules that differ (the budget key, `error_topic`, the in-flight limit) are
//! parameters of [`KafkaConfig::check`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rdkafka::config::ClientConfig;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::{invalid, ConfigError};
use super::secret::{is_secret_property, Secret, SecretVisitor};
use super::types::{InFlight, Partitions, Replication, TimeoutMs, TopicName};

/// A librdkafka property value: a TOML string, integer or boolean, passed as text; or a
/// secret (see [`super::secret`]): inline for secret-bearing names, or a
/// `{ file = … }` / `{ credential = … }` reference for any name.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// `"lz4"`
    Text(String),
    /// `5`
    Int(i64),
    /// `true`
    Bool(bool),
    /// A secret; printed as `<redacted>`.
    Secret(Secret),
}

impl PropertyValue {
    /// The text handed to librdkafka (a secret's real value: never log it).
    pub fn config_value(&self) -> String {
        match self {
            PropertyValue::Text(s) => s.clone(),
            PropertyValue::Int(i) => i.to_string(),
            PropertyValue::Bool(b) => b.to_string(),
            PropertyValue::Secret(s) => s.expose().to_string(),
        }
    }
}

/// Prints the value, or `<redacted>` for a secret.
impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Secret(s) => s.fmt(f),
            other => f.write_str(&other.config_value()),
        }
    }
}

impl Serialize for PropertyValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PropertyValue::Text(t) => s.serialize_str(t),
            PropertyValue::Int(i) => s.serialize_i64(*i),
            PropertyValue::Bool(b) => s.serialize_bool(*b),
            PropertyValue::Secret(secret) => secret.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PropertyValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, an integer, a boolean or a secret reference { file = \"…\" } \
                     (write other values as strings, e.g. \"0.5\")",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Bool(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PropertyValue, A::Error> {
                SecretVisitor
                    .visit_map(map)
                    .map(PropertyValue::Secret)
                    .map_err(|_: A::Error| {
                        de::Error::custom(
                            "is a table, not a value: quote dotted librdkafka names, e.g. \
                             \"linger.ms\" = 5, not linger.ms = 5; a table here must be a secret \
                             reference, { file = \"/path\" } or { credential = \"name\" }",
                        )
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list (`bootstrap.servers`).
    pub bootstrap_servers: String,
    /// Topic for frames.
    #[serde(default = "default_topic")]
    pub topic: TopicName,
    /// Agent only: topic for small JSON records about frames that could not be published
    /// (e.g. no rung of the ladder fits). Unset = such frames are only counted and logged.
    #[serde(default)]
    pub error_topic: Option<TopicName>,
    /// Create `topic` (and `error_topic`) at start with this many partitions if missing.
    /// Unset = do not create.
    #[serde(default)]
    pub create_topic_partitions: Option<Partitions>,
    /// Replication factor used when creating topics.
    #[serde(default = "default_replication_factor")]
    pub create_topic_replication: Replication,
    /// Records handed to librdkafka whose delivery report has not arrived yet; the encoder
    /// waits when this many are outstanding. 1–100,000 (the bridge: at most 65,535, as it is
    /// also the MQTT receive maximum). Default 8: each costs its bytes twice (edgecam keeps
    /// it for a resend, librdkafka copies it), so 8 records of 150 KB hold 2.4 MB where 32
    /// held 9.6 MB; a bridge fanning in many sensors wants more (its example sets 32).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: InFlight,
    /// librdkafka `message.timeout.ms`: how long librdkafka retries one record before
    /// reporting failure, milliseconds. edgecam then sends it again (it was accepted; it is
    /// not dropped).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: TimeoutMs,
    /// Extra librdkafka producer properties, passed through as given, e.g.
    /// `"linger.ms" = 5`, `"compression.type" = "lz4"`, `"sasl.password" = { file = "…" }`.
    /// librdkafka itself checks them at load time (unknown names, bad values, features this
    /// build lacks). `acks`, `enable.idempotence`, `bootstrap.servers` and
    /// `message.timeout.ms` are set by edgecam and may not be set here.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

fn default_topic() -> TopicName {
    TopicName::new("edgecam.frames").expect("valid topic")
}
fn default_replication_factor() -> Replication {
    Replication::new(1).expect("in range")
}
fn default_max_in_flight() -> InFlight {
    InFlight::new(8).expect("in range")
}
fn default_message_timeout_ms() -> TimeoutMs {
    TimeoutMs::new(60_000).expect("in range")
}

/// Properties edgecam sets itself, and why they may not appear in `kafka.properties`.
const FIXED_PROPERTIES: &[(&str, &str)] = &[
    (
        "acks",
        "is fixed by edgecam's delivery guarantee (acks=all) and may not be set",
    ),
    (
        "request.required.acks",
        "is fixed by edgecam's delivery guarantee (acks=all) and may not be set",
    ),
    (
        "enable.idempotence",
        "is fixed by edgecam's delivery guarantee (idempotence on) and may not be set",
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

/// Who uses a `[kafka]` table; the rules differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KafkaUser {
    /// The agent, with its budget.
    Agent { budget: u32 },
    /// The bridge, with its budget.
    Bridge { budget: u32 },
}

impl KafkaConfig {
    /// Rules that need no broker and no librdkafka: host:port list, topics, fixed properties,
    /// `message.max.bytes` at least the budget.
    pub(crate) fn check(&self, user: KafkaUser) -> Result<(), ConfigError> {
        check_bootstrap(&self.bootstrap_servers)?;
        let (budget, budget_key) = match user {
            KafkaUser::Agent { budget } => (budget, "encode.max_message_bytes"),
            KafkaUser::Bridge { budget } => (budget, "bridge.max_message_bytes"),
        };
        match (user, &self.error_topic) {
            (KafkaUser::Bridge { .. }, Some(_)) => {
                return Err(invalid(
                    "kafka.error_topic",
                    "is not used by the bridge; rejected messages go to bridge.dead_letter_topic",
                ))
            }
            (KafkaUser::Agent { .. }, Some(e)) if e == &self.topic => {
                return Err(invalid(
                    "kafka.error_topic",
                    format!("must differ from kafka.topic (both are {:?})", e.as_str()),
                ))
            }
            _ => {}
        }
        if matches!(user, KafkaUser::Bridge { .. }) && self.max_in_flight.get() > 65_535 {
            return Err(invalid(
                "kafka.max_in_flight",
                format!(
                    "must be from 1 to 65535 for the bridge, where it is also the MQTT receive \
                     maximum (got {})",
                    self.max_in_flight
                ),
            ));
        }
        for (name, value) in &self.properties {
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
                let ok = value
                    .config_value()
                    .parse::<u64>()
                    .is_ok_and(|v| v >= u64::from(budget));
                if !ok {
                    return Err(invalid(
                        &key,
                        format!(
                            "must be a number at least {budget_key} ({budget}), or records of \
                             that size are refused (got {value})"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Secret-bearing properties given inline become [`PropertyValue::Secret`], so they are
    /// never printed.
    pub(crate) fn mark_secrets(&mut self) {
        for (name, value) in self.properties.iter_mut() {
            // Whatever its TOML type: `"sasl.password" = 1234` is a secret too.
            if is_secret_property(name) && !matches!(value, PropertyValue::Secret(_)) {
                *value = PropertyValue::Secret(Secret::inline(value.config_value()));
            }
        }
    }

    /// The secrets among the properties, with their keys, to resolve references.
    pub(crate) fn secrets_mut(&mut self) -> impl Iterator<Item = (String, &mut Secret)> {
        self.properties.iter_mut().filter_map(|(name, v)| match v {
            PropertyValue::Secret(s) => Some((format!("kafka.properties.{name}"), s)),
            _ => None,
        })
    }

    /// The librdkafka producer properties edgecam uses: `acks=all`, idempotence on, the
    /// configured `message.timeout.ms`, `message.max.bytes` at least `max_message_bytes`, a
    /// bounded local queue, reconnect back-off capped at 1 s, then `kafka.properties` on
    /// top. The agent and the bridge both
    /// produce with exactly this, and `check-config` has librdkafka check it.
    pub fn producer_config(&self, max_message_bytes: u32) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set(
                "message.max.bytes",
                max_message_bytes.max(1_000_000).to_string(),
            )
            // A Pi has little memory: bound librdkafka's own queue (default 1 GB).
            .set("queue.buffering.max.kbytes", "65536")
            .set("linger.ms", "5")
            // Reconnect within a second once the network is back (librdkafka's default
            // backs off to 10 s), so live frames resume quickly after an outage; an attempt
            // a second while the broker is away costs nothing worth saving.
            .set("reconnect.backoff.max.ms", "1000");
        for (k, v) in &self.properties {
            c.set(k, v.config_value());
        }
        c
    }

    /// Makes the file properties ([`FILE_PROPERTIES`], e.g. `ssl.ca.location`) absolute
    /// against `base`, the configuration file's directory (`ssl.ca.location = "probe"` is
    /// librdkafka's keyword and stays).
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for (name, value) in self.properties.iter_mut() {
            if let PropertyValue::Text(t) = value {
                if FILE_PROPERTIES.contains(&name.as_str())
                    && !(name == "ssl.ca.location" && t == "probe")
                {
                    *t = base.join(&*t).to_string_lossy().into_owned();
                }
            }
        }
    }

    /// What only this machine can tell: every file property names a readable file, and this
    /// build of librdkafka has the features the properties need (`builtin.features`: TLS
    /// for `security.protocol = "SSL"`, the SASL mechanism, the compression codec).
    ///
    /// Errors: [`ConfigError::Invalid`] naming the property, with what is missing and what
    /// the build has.
    pub(crate) fn check_machine(&self) -> Result<(), ConfigError> {
        for (name, value) in &self.properties {
            if !FILE_PROPERTIES.contains(&name.as_str()) {
                continue;
            }
            let path = value.config_value();
            if name == "ssl.ca.location" && path == "probe" {
                continue;
            }
            if let Err(e) = std::fs::File::open(&path) {
                let why = super::error::why_unreadable(&e);
                return Err(invalid(
                    format!("kafka.properties.{name}"),
                    format!("{path} {why} (relative paths are relative to the configuration file)"),
                ));
            }
        }
        let builtin = builtin_features();
        let mechanism = ["sasl.mechanism", "sasl.mechanisms"]
            .iter()
            .find_map(|k| self.properties.get(*k))
            .map(PropertyValue::config_value)
            .unwrap_or_else(|| "GSSAPI".into());
        for (name, value) in &self.properties {
            let value = value.config_value();
            for feature in features_for(name, &value, &mechanism) {
                // librdkafka lists sasl_gssapi whenever it is built with SASL, but GSSAPI
                // also needs Cyrus SASL (libsasl2), which edgecam does not link: creating
                // the client would fail. So it is never available here.
                let has = feature != "sasl_gssapi" && builtin.iter().any(|b| b == feature);
                if has {
                    continue;
                }
                let hint = if feature == "sasl_gssapi" {
                    format!(
                        " (sasl.mechanism is {mechanism:?}, librdkafka's default; GSSAPI \
                         (Kerberos) needs Cyrus SASL, which edgecam is built without. This \
                         build supports PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER: \
                         set \"sasl.mechanism\" to one of them)"
                    )
                } else {
                    String::new()
                };
                return Err(invalid(
                    format!("kafka.properties.{name}"),
                    format!(
                        "{value:?} needs librdkafka's {feature:?} feature, which this build \
                         lacks{hint}; it has: {}",
                        builtin
                            .iter()
                            .filter(|b| *b != "sasl_gssapi")
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Has librdkafka check every property without connecting (unknown names, bad values,
    /// a feature this build lacks such as `security.protocol = "SSL"` without OpenSSL).
    ///
    /// Errors: [`ConfigError::Invalid`] naming `kafka.properties` (or the property librdkafka
    /// names), with librdkafka's reason; secret values are never in it.
    pub(crate) fn check_with_librdkafka(&self, max_message_bytes: u32) -> Result<(), ConfigError> {
        // Each property on its own over edgecam's base settings, so the error names the
        // property librdkafka refused without reading librdkafka's message; then all together.
        let base = KafkaConfig {
            properties: BTreeMap::new(),
            ..self.clone()
        };
        let refused = |config: ClientConfig, key: String| match config.create_native_config() {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut message = e.to_string();
                for value in self.properties.values() {
                    if let PropertyValue::Secret(s) = value {
                        if !s.expose().is_empty() {
                            message = message.replace(s.expose(), "<redacted>");
                        }
                    }
                }
                Err(invalid(key, format!("librdkafka refuses it: {message}")))
            }
        };
        refused(base.producer_config(max_message_bytes), "kafka".into())?;
        for (name, value) in &self.properties {
            let mut one = base.producer_config(max_message_bytes);
            one.set(name, value.config_value());
            refused(one, format!("kafka.properties.{name}"))?;
        }
        refused(
            self.producer_config(max_message_bytes),
            "kafka.properties".into(),
        )
    }
}

/// librdkafka properties that name a file (PEM or PKCS#12): relative paths are relative to
/// the configuration file, and the file must be readable at load time.
pub(crate) const FILE_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.crl.location",
    "ssl.keystore.location",
];

/// The librdkafka features (as `builtin.features` names them) that `name = value` needs, e.g.
/// `security.protocol = "SASL_SSL"` needs `ssl`, `compression.type = "zstd"` needs `zstd`.
/// `sasl_mechanism` is the configured `sasl.mechanism(s)` (librdkafka's default: GSSAPI).
fn features_for(name: &str, value: &str, sasl_mechanism: &str) -> Vec<&'static str> {
    let value = value.trim().to_ascii_lowercase();
    match name {
        "security.protocol" => {
            let mut f = Vec::new();
            if value == "ssl" || value == "sasl_ssl" {
                f.push("ssl");
            }
            if value.starts_with("sasl_") {
                f.push(match sasl_mechanism.trim().to_ascii_uppercase().as_str() {
                    "PLAIN" => "sasl_plain",
                    "SCRAM-SHA-256" | "SCRAM-SHA-512" => "sasl_scram",
                    "OAUTHBEARER" => "sasl_oauthbearer",
                    _ => "sasl_gssapi",
                });
            }
            f
        }
        "compression.type" | "compression.codec" => match value.as_str() {
            "gzip" => vec!["gzip"],
            "snappy" => vec!["snappy"],
            "lz4" => vec!["lz4"],
            "zstd" => vec!["zstd"],
            _ => vec![],
        },
        "sasl.oauthbearer.method" if value == "oidc" => vec!["oidc"],
        _ => vec![],
    }
}

/// librdkafka's `builtin.features` of this build, e.g.
/// `gzip,snappy,ssl,sasl,regex,lz4,sasl_plain,sasl_scram,plugins,zstd,sasl_oauthbearer`.
pub fn builtin_features() -> Vec<String> {
    ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .map(|f| f.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

fn check_bootstrap(servers: &str) -> Result<(), ConfigError> {
    const KEY: &str = "kafka.bootstrap_servers";
    if servers.trim().is_empty() {
        return Err(invalid(
            KEY,
            "must be a comma-separated list of host:port, e.g. \"broker1:9092,broker2:9092\" \
             (got an empty string)",
        ));
    }
    for entry in servers.split(',').map(str::trim) {
        let problem = match entry.rsplit_once(':') {
            _ if entry.is_empty() => Some("an empty entry"),
            None => Some("no port"),
            Some((host, _)) if host.is_empty() || host == "[]" => Some("no host"),
            Some((_, port)) if port.parse::<u16>().map_or(true, |p| p == 0) => {
                Some("a port that is not a number from 1 to 65535")
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            return Err(invalid(
                KEY,
                format!(
                    "each comma-separated entry must be host:port, e.g. \"broker:9092\" (got \
                     {entry:?} with {problem})"
                ),
            ));
        }
    }
    Ok(())
}
