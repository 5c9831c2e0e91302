//! One loader for every edgecam configuration file: an agent's (one device), a bridge's, or
//! one file with both.
//!
//! [`load_file`] reads the TOML file, layers `EDGECAM_…` environment overrides over it
//! ([`env`]), deserializes strictly into the typed tables below (unknown keys, wrong types and
//! out-of-range values are errors naming the key, the file, the line and the column; nothing
//! is coerced), makes relative paths absolute against the file's directory, reads secret
//! references ([`secret`]), applies the rules across keys, and finally checks what `run`
//! would otherwise only find out at start-up: files exist and are readable, `source.command`'s
//! program is installed, librdkafka accepts every producer property of this build. A camera
//! device that is absent is only a warning (it may be plugged in later).
//!
//! One file per table: [`source`], [`encode`] (with `[transform]`), [`pipeline`], [`sink`]
//! (the resolved [`SinkConfig`]: `[sink] kind` with its backend's table), [`kafka`], [`mqtt`],
//! [`bridge`]; bounded values in [`types`]; errors in
//! [`error`]. `edgecam check-config` prints the resolved configuration (secrets redacted) or
//! the error, and exits 64 on error; `edgecam run` and `edgecam bridge` run the same checks
//! before they open anything and exit 64 too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod bridge;
mod de;
pub mod encode;
pub mod env;
pub mod error;
pub mod gate;
pub mod http;
pub mod kafka;
pub mod limits;
pub mod log;
pub mod mqtt;
mod naming;
pub mod pipeline;
pub mod pubsub;
pub mod secret;
pub mod sink;
pub mod source;
pub mod spool;
pub mod types;

#[cfg(test)]
mod tests;

pub use bridge::{BridgeConfig, BridgeFile, InputConfig, InputFormat, TopicPattern, UploadConfig};
pub use encode::{Codec, EncodeConfig, TransformConfig, DEFAULT_MAX_MESSAGE_BYTES};
pub use env::ENV_PREFIX;
pub use error::{ConfigError, Origin};
pub use gate::GateConfig;
pub use http::HttpConfig;
pub use kafka::{KafkaConfig, PropertyValue};
pub use limits::LimitsConfig;
pub use log::{LogConfig, LogFormat};
pub use mqtt::{MqttConfig, MqttProtocol, MqttTls};
pub use pipeline::{OverflowPolicy, PipelineConfig};
pub use pubsub::PubsubConfig;
pub use secret::{Secret, SecretSource};
pub use sink::{SinkConfig, SinkKind, SinkTable};
pub use source::{CameraFormat, SourceConfig, SourceKind};
pub use spool::{SpoolConfig, SpoolMode};
pub use types::{valid_device_id, DeviceId, Quality, TopicName};

use de::Document;
use env::EnvOverrides;

/// `[device]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device id: the Kafka record key and the `edgecam.device` header. 1–128 characters
    /// from `A-Z a-z 0-9 . _ -`, not `.` or `..` (safe in file names, MQTT topics and Kafka
    /// keys).
    pub id: DeviceId,
}

/// The whole configuration of one agent (one device).
///
/// Serialises (`check-config`, the SIGHUP diff) in the file's own shape: `[sink] kind`,
/// then `[kafka]` and `[mqtt]` as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Who this agent is.
    pub device: DeviceConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// What happens to pixels before encoding.
    pub transform: TransformConfig,
    /// How frames are fitted under the byte budget.
    pub encode: EncodeConfig,
    /// Queues between stages and shutdown.
    pub pipeline: PipelineConfig,
    /// How large one captured image may be.
    pub limits: LimitsConfig,
    /// Which sink publishes frames, with its table: Kafka (default) or MQTT.
    pub sink: SinkConfig,
    /// Frames kept on disk while the sink cannot take them.
    pub spool: SpoolConfig,
    /// Metrics, health and live view endpoints.
    pub http: HttpConfig,
    /// Log format, level and progress lines.
    pub log: LogConfig,
    /// Publish only when the scene changes.
    pub gate: GateConfig,
    /// `[mqtt]` beside a sink that is not MQTT: only the control plane (status, state,
    /// commands) uses it, on a connection of its own. `None` when the sink is MQTT (its
    /// table is in [`SinkConfig::Mqtt`]) or the file has no `[mqtt]`.
    pub control: Option<MqttConfig>,
}

impl Config {
    /// The `[kafka]` table, when Kafka is the sink.
    pub fn kafka(&self) -> Option<&KafkaConfig> {
        self.sink.kafka()
    }

    /// The `[mqtt]` table, whether it configures the sink or only the control plane.
    pub fn mqtt(&self) -> Option<&MqttConfig> {
        match &self.sink {
            SinkConfig::Mqtt(m) => Some(m),
            SinkConfig::Kafka(_) | SinkConfig::Pubsub(_) => self.control.as_ref(),
        }
    }

    /// The `[kafka]` table to change (tests, tools), when Kafka is the sink.
    pub fn kafka_mut(&mut self) -> Option<&mut KafkaConfig> {
        match &mut self.sink {
            SinkConfig::Kafka(k) => Some(k),
            SinkConfig::Mqtt(_) | SinkConfig::Pubsub(_) => None,
        }
    }

    /// The `[mqtt]` table to change (tests, tools), as [`Config::mqtt`].
    pub fn mqtt_mut(&mut self) -> Option<&mut MqttConfig> {
        match &mut self.sink {
            SinkConfig::Mqtt(m) => Some(m),
            SinkConfig::Kafka(_) | SinkConfig::Pubsub(_) => self.control.as_mut(),
        }
    }
}

impl Serialize for Config {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// [`Config`] in the file's shape.
        #[derive(Serialize)]
        struct Shape<'a> {
            device: &'a DeviceConfig,
            source: &'a SourceConfig,
            transform: &'a TransformConfig,
            encode: &'a EncodeConfig,
            pipeline: &'a PipelineConfig,
            limits: &'a LimitsConfig,
            sink: SinkTable,
            spool: &'a SpoolConfig,
            http: &'a HttpConfig,
            log: &'a LogConfig,
            gate: &'a GateConfig,
            #[serde(skip_serializing_if = "Option::is_none")]
            kafka: Option<&'a KafkaConfig>,
            #[serde(skip_serializing_if = "Option::is_none")]
            mqtt: Option<&'a MqttConfig>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pubsub: Option<&'a PubsubConfig>,
        }
        Shape {
            device: &self.device,
            source: &self.source,
            transform: &self.transform,
            encode: &self.encode,
            pipeline: &self.pipeline,
            limits: &self.limits,
            sink: SinkTable {
                kind: self.sink.kind(),
            },
            spool: &self.spool,
            http: &self.http,
            log: &self.log,
            gate: &self.gate,
            kafka: self.kafka(),
            mqtt: self.mqtt(),
            pubsub: self.sink.pubsub(),
        }
        .serialize(serializer)
    }
}

/// A configuration file as written: every table optional, unknown tables refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    device: Option<DeviceConfig>,
    source: Option<SourceConfig>,
    transform: Option<TransformConfig>,
    encode: Option<EncodeConfig>,
    pipeline: Option<PipelineConfig>,
    limits: Option<LimitsConfig>,
    sink: Option<SinkTable>,
    spool: Option<SpoolConfig>,
    http: Option<HttpConfig>,
    log: Option<LogConfig>,
    gate: Option<GateConfig>,
    kafka: Option<KafkaConfig>,
    mqtt: Option<MqttConfig>,
    pubsub: Option<PubsubConfig>,
    bridge: Option<BridgeConfig>,
}

/// The top-level tables a file may have.
const TABLES: &[&str] = &[
    "device",
    "source",
    "transform",
    "encode",
    "pipeline",
    "limits",
    "sink",
    "spool",
    "http",
    "log",
    "gate",
    "kafka",
    "mqtt",
    "pubsub",
    "bridge",
];

/// What a file held: an agent configuration, a bridge configuration, or both.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The agent part (`[device]`, `[source]`, …), when the file has one.
    pub agent: Option<Config>,
    /// The bridge part (`[bridge]` with `[mqtt]` and `[kafka]`), when the file has one.
    pub bridge: Option<BridgeFile>,
    /// Things that are not errors but deserve a look (a camera device not plugged in).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// One line saying what was checked: `agent configuration (device front-door, source
    /// mjpeg /clip.mjpeg, sink kafka)`, `bridge configuration (bridge site-a, 2 inputs)`, or
    /// both.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.agent {
            parts.push(format!(
                "agent configuration (device {}, source {}, sink {})",
                a.device.id,
                a.source.describe(),
                a.sink.kind().as_str()
            ));
        }
        if let Some(b) = &self.bridge {
            parts.push(format!(
                "bridge configuration (bridge {}, {} input{})",
                b.bridge.id,
                b.bridge.inputs.len(),
                if b.bridge.inputs.len() == 1 { "" } else { "s" }
            ));
        }
        parts.join(" and ")
    }

    /// The resolved configuration as TOML (defaults filled in, paths absolute, secrets
    /// shown as `<redacted…>`).
    pub fn to_toml(&self) -> String {
        /// The bridge's own table, for a file that also holds an agent (whose `[mqtt]` and
        /// `[kafka]` are the same tables), with `[kafka]` when the agent's sink is not Kafka.
        #[derive(Serialize)]
        struct BridgeOnly<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            kafka: Option<&'a KafkaConfig>,
            bridge: &'a BridgeConfig,
        }
        let text = match (&self.agent, &self.bridge) {
            (Some(a), None) => toml::to_string_pretty(a),
            (None, Some(b)) => toml::to_string_pretty(b),
            (Some(a), Some(b)) => toml::to_string_pretty(a).and_then(|text| {
                let rest = BridgeOnly {
                    kafka: a.kafka().is_none().then_some(&b.kafka),
                    bridge: &b.bridge,
                };
                Ok(text + "\n" + &toml::to_string_pretty(&rest)?)
            }),
            (None, None) => Ok(String::new()),
        };
        text.unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

/// Where the loader looks things up besides the file: the environment (overrides,
/// `$CREDENTIALS_DIRECTORY`, `$PATH`) and the directory relative paths start from.
struct Context {
    env: EnvOverrides,
    base: PathBuf,
    file: Option<PathBuf>,
}

/// Reads `path` (TOML) with `EDGECAM_…` environment overrides from `env` (pass
/// `std::env::vars()`; tests pass their own), and checks everything `run` or `bridge` would
/// check at start-up. Relative paths are relative to `path`'s directory.
///
/// Errors: [`ConfigError`], naming the file or key; secrets never appear in it.
pub fn load_file(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let base = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(dir)
    };
    load_text(&text, env, base, Some(path.to_path_buf()))
}

/// Like [`load_file`], for an agent configuration only. Errors with
/// [`ConfigError::Kind`] when the file has no agent part.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    agent_of(load_file(path, env)?, Some(path))
}

/// Like [`load_file`], for a bridge configuration only. Errors with
/// [`ConfigError::Kind`] when the file has no `[bridge]` table.
pub fn load_bridge(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BridgeFile, ConfigError> {
    bridge_of(load_file(path, env)?, Some(path))
}

/// An agent configuration from TOML text; relative paths are relative to the working
/// directory.
pub fn load_str(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let base = std::env::current_dir().unwrap_or_default();
    agent_of(load_text(toml_text, env, base, None)?, None)
}

/// A bridge configuration from TOML text; relative paths are relative to the working
/// directory.
pub fn load_bridge_str(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BridgeFile, ConfigError> {
    let base = std::env::current_dir().unwrap_or_default();
    bridge_of(load_text(toml_text, env, base, None)?, None)
}

fn agent_of(loaded: Loaded, path: Option<&Path>) -> Result<Config, ConfigError> {
    loaded.agent.ok_or_else(|| {
        let file = path
            .map(|p| format!("{} ", p.display()))
            .unwrap_or_default();
        ConfigError::Kind(format!(
            "{file}is a bridge configuration ([bridge], no [device]/[source]): run it with \
             `edgecam bridge --config {}`",
            path.map(|p| p.display().to_string())
                .unwrap_or_else(|| "FILE".into())
        ))
    })
}

fn bridge_of(loaded: Loaded, path: Option<&Path>) -> Result<BridgeFile, ConfigError> {
    loaded.bridge.ok_or_else(|| {
        let file = path
            .map(|p| format!("{} ", p.display()))
            .unwrap_or_default();
        ConfigError::Kind(format!(
            "{file}has no [bridge] table: it is an agent configuration; run it with `edgecam \
             run --config {}`",
            path.map(|p| p.display().to_string())
                .unwrap_or_else(|| "FILE".into())
        ))
    })
}

fn load_text(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base: PathBuf,
    file: Option<PathBuf>,
) -> Result<Loaded, ConfigError> {
    let cx = Context {
        env: EnvOverrides::collect(env, TABLES)?,
        base,
        file,
    };
    let doc = de::layer(text, cx.file.as_deref(), &cx.env)?;
    let at = |e: ConfigError| {
        let origin = e.key().and_then(|k| doc.origin_of(k)).cloned();
        e.with_origin(origin.as_ref())
    };
    resolve(&doc, &cx).map_err(at)
}

fn resolve(doc: &Document, cx: &Context) -> Result<Loaded, ConfigError> {
    let f: FileDoc = doc.deserialize()?;
    let is_bridge = doc.has_table("bridge");
    let is_agent = doc.has_table("device") || doc.has_table("source") || !is_bridge;
    let mut warnings = Vec::new();

    let mut kafka = f.kafka;
    let mut mqtt = f.mqtt;
    if let Some(k) = kafka.as_mut() {
        k.mark_secrets();
        k.resolve_paths(&cx.base);
        for (key, s) in k.secrets_mut() {
            s.resolve(&key, &cx.base, cx.env.credentials_directory.as_deref())?;
        }
    }
    if let Some(m) = mqtt.as_mut() {
        m.resolve(&cx.base, cx.env.credentials_directory.as_deref())?;
    }
    let mut pubsub = f.pubsub;
    if let Some(p) = pubsub.as_mut() {
        p.resolve(
            &cx.base,
            cx.env.credentials_directory.as_deref(),
            cx.env.pubsub_emulator_host.as_deref(),
        )?;
    }

    let limits = f.limits.unwrap_or_default();
    let http = f.http.unwrap_or_default();
    let log = f.log.unwrap_or_default();
    log.check()?;
    if is_agent && is_bridge && http.listen.is_some() {
        return Err(ConfigError::Invalid {
            key: "http.listen".into(),
            message: "this file holds both an agent and a bridge, which run as two processes \
                      and cannot share one address; give each its own file"
                .into(),
            origin: None,
        });
    }
    let agent = if is_agent {
        let device = f.device.ok_or(ConfigError::Missing {
            key: "device".into(),
            origin: None,
        })?;
        let mut source = f.source.ok_or(ConfigError::Missing {
            key: "source".into(),
            origin: None,
        })?;
        let config = {
            source.check()?;
            source.resolve_paths(&cx.base);
            source.check_limits(&limits)?;
            let transform = f.transform.unwrap_or_default();
            transform.check()?;
            let encode = f.encode.unwrap_or_default();
            encode.check()?;
            let kind = f.sink.unwrap_or_default().kind;
            let missing = || ConfigError::Missing {
                key: kind.table().into(),
                origin: None,
            };
            let sink = match kind {
                SinkKind::Kafka => SinkConfig::Kafka(kafka.clone().ok_or_else(missing)?),
                SinkKind::Mqtt => SinkConfig::Mqtt(mqtt.clone().ok_or_else(missing)?),
                SinkKind::Pubsub => SinkConfig::Pubsub(pubsub.clone().ok_or_else(missing)?),
            };
            // [mqtt] beside another sink serves the control plane only.
            let control = match &sink {
                SinkConfig::Kafka(_) | SinkConfig::Pubsub(_) => mqtt.clone(),
                SinkConfig::Mqtt(_) => None,
            };
            if let Some(p) = &pubsub {
                p.check(encode.max_message_bytes.get())?;
            }
            if let Some(k) = &kafka {
                k.check(kafka::KafkaUser::Agent {
                    budget: encode.max_message_bytes.get(),
                })?;
            }
            if let Some(m) = &mqtt {
                m.check(match &sink {
                    SinkConfig::Mqtt(_) => mqtt::MqttUser::AgentSink,
                    SinkConfig::Kafka(_) | SinkConfig::Pubsub(_) => mqtt::MqttUser::AgentControl,
                })?;
            }
            let gate = f.gate.unwrap_or_default();
            gate.check()?;
            let mut spool = f.spool.unwrap_or_default();
            spool.resolve_dir(device.id.as_str(), &cx.base, &cx.env.state_dirs);
            Config {
                device,
                source,
                transform,
                encode,
                pipeline: f.pipeline.unwrap_or_default(),
                limits,
                sink,
                spool,
                http: http.clone(),
                log: log.clone(),
                gate,
                control,
            }
        };
        Some(config)
    } else {
        None
    };

    let bridge = match f.bridge {
        Some(mut bridge) => {
            if let Some(t) = bridge.http.token.as_mut() {
                t.resolve(
                    "bridge.http.token",
                    &cx.base,
                    cx.env.credentials_directory.as_deref(),
                )?;
            }
            let file = BridgeFile {
                bridge,
                mqtt: mqtt.clone().ok_or(ConfigError::Missing {
                    key: "mqtt".into(),
                    origin: None,
                })?,
                kafka: kafka.clone().ok_or(ConfigError::Missing {
                    key: "kafka".into(),
                    origin: None,
                })?,
                limits,
                http: http.clone(),
                log: log.clone(),
            };
            file.check()?;
            Some(file)
        }
        None => None,
    };

    // What only the machine can tell: files, programs, librdkafka's own checks.
    if let Some(tls) = mqtt.as_ref().and_then(|m| m.tls.as_ref()) {
        tls.connector()?;
    }
    if let Some(a) = &agent {
        a.source.check_files()?;
        a.source.check_command(cx.env.path.as_deref())?;
        if a.source.kind == SourceKind::Camera {
            if let Some(w) = camera_warning(&a.source.device) {
                warnings.push(w);
            }
        }
        match &a.sink {
            SinkConfig::Kafka(k) => {
                k.check_machine()?;
                k.check_with_librdkafka(a.encode.max_message_bytes.get())?;
            }
            // Its TLS files were checked above, with any [mqtt].
            SinkConfig::Mqtt(_) => {}
            // Nothing to ask the machine: the key was checked with the table.
            SinkConfig::Pubsub(p) => warnings.extend(p.warning()),
        }
    }
    if let Some(b) = &bridge {
        b.kafka.check_machine()?;
        b.kafka
            .check_with_librdkafka(b.bridge.max_message_bytes.get())?;
    }
    Ok(Loaded {
        agent,
        bridge,
        warnings,
    })
}

/// A warning when the V4L2 device `device` (an index or a path) does not exist now.
fn camera_warning(device: &str) -> Option<String> {
    let path = if device.chars().all(|c| c.is_ascii_digit()) {
        PathBuf::from(format!("/dev/video{device}"))
    } else {
        PathBuf::from(device)
    };
    (!path.exists()).then(|| {
        format!(
            "source.device: {} does not exist now; edgecam will retry until it appears \
             (hot-plug)",
            path.display()
        )
    })
}
