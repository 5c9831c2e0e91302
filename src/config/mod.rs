//! One TOML file per device, layered with `EDGECAM_…` environment overrides, resolved into
//! typed, validated settings before anything is opened.
//!
//! Every struct rejects unknown keys; every key has a default (except `device.id` and the
//! source's own path/command) and a unit in its name. [`load`] returns a [`ConfigError`] that
//! names the key and what is wrong; `edgecam check-config` prints it and exits 64.

use std::collections::BTreeMap;
use std::num::{NonZeroU16, NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod validate;

pub use validate::ConfigError;

/// Environment variables with this prefix override file keys; `__` separates levels:
/// `EDGECAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092` sets `kafka.bootstrap_servers`.
pub const ENV_PREFIX: &str = "EDGECAM";

/// Default `encode.max_message_bytes`: librdkafka's default `message.max.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1_000_000;

/// The whole configuration of one agent (one device).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this agent is.
    pub device: DeviceConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// What happens to pixels before encoding.
    #[serde(default)]
    pub transform: TransformConfig,
    /// How frames are fitted under the byte budget.
    #[serde(default)]
    pub encode: EncodeConfig,
    /// Queues between stages and shutdown.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Which sink publishes frames: Kafka (default) or MQTT.
    #[serde(default)]
    pub sink: SinkConfig,
    /// Kafka settings; required when `sink.kind = "kafka"`.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// MQTT settings; required when `sink.kind = "mqtt"`. When present with a Kafka sink,
    /// only the control plane (status, state, commands) uses it.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
}

impl Config {
    /// The `[kafka]` table. Validation guarantees it exists when `sink.kind = "kafka"`.
    ///
    /// Panics if called on a configuration without `[kafka]` (a bug: check `sink.kind`).
    pub fn kafka(&self) -> &KafkaConfig {
        self.kafka
            .as_ref()
            .expect("validated: [kafka] is present for a Kafka sink")
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

/// `[mqtt]`: the broker, the frame topic, and the control plane.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id. Default `edgecam-<device.id>` (`edgecam-bridge-<bridge.id>` for the
    /// bridge). Must be unique per broker.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `v5 | v311`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Topic frames are published to; `{device}` is replaced by `device.id`.
    #[serde(default = "default_topic_template")]
    pub topic_template: String,
    /// QoS of frame publishes: 0 (at most once) or 1 (at least once, default).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// MQTT 5 message expiry interval, seconds: the broker discards a frame not delivered
    /// by then. Unset = never.
    #[serde(default)]
    pub message_expiry_secs: Option<NonZeroU32>,
    /// Keep-alive interval, seconds (5–3600).
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u16,
    /// No-traffic watchdog: when nothing at all arrives from the broker for this many
    /// seconds, the connection is dropped and reopened. Must exceed `keep_alive_secs`.
    #[serde(default = "default_silence_timeout_secs")]
    pub silence_timeout_secs: u32,
    /// MQTT 5 session expiry, seconds: how long the broker keeps this client's session
    /// (subscriptions, queued QoS 1 messages) while it is disconnected.
    #[serde(default = "default_session_expiry_secs")]
    pub session_expiry_secs: u32,
    /// QoS 1 publishes awaiting their PUBACK at once.
    #[serde(default = "default_mqtt_in_flight")]
    pub max_in_flight: NonZeroU16,
    /// User name, if the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (with `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// Publish availability and state and accept commands under `control_prefix`.
    #[serde(default = "default_true")]
    pub control: bool,
    /// Control topics: `<prefix>/<device>/status` (retained `online`/`offline`, also the
    /// last will), `<prefix>/<device>/state` (retained JSON), `<prefix>/<device>/set/<name>`.
    #[serde(default = "default_control_prefix")]
    pub control_prefix: String,
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_topic_template() -> String {
    "edgecam/{device}/frame".to_string()
}
fn default_qos() -> u8 {
    1
}
fn default_keep_alive_secs() -> u16 {
    30
}
fn default_silence_timeout_secs() -> u32 {
    90
}
fn default_session_expiry_secs() -> u32 {
    3600
}
fn default_mqtt_in_flight() -> NonZeroU16 {
    NonZeroU16::new(32).unwrap()
}
fn default_control_prefix() -> String {
    "edgecam".to_string()
}

impl MqttConfig {
    /// The frame topic for `device`.
    pub fn frame_topic(&self, device: &str) -> String {
        self.topic_template.replace("{device}", device)
    }
}

/// `[device]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device id: the Kafka record key and the `edgecam.device` header. 1–128 characters
    /// from `A-Z a-z 0-9 . _ -` (safe in file names, MQTT topics and Kafka keys).
    pub id: String,
}

/// Which kind of source `[source]` describes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A V4L2 camera through `nokhwa`.
    Camera,
    /// An MJPEG byte stream (JPEGs back to back) from a file or a child process's stdout.
    Mjpeg,
    /// A directory of `.jpg`/`.jpeg`/`.png` files, replayed in name order.
    Images,
    /// A moving test pattern.
    Synthetic,
}

/// Pixel format to ask a camera for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CameraFormat {
    /// MJPEG (FourCC `MJPG`), falling back to YUYV: MJPEG frames can pass through untouched.
    #[default]
    Mjpeg,
    /// YUYV 4:2:2 (FourCC `YUYV`), converted to RGB8.
    Yuyv,
}

/// `[source]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `camera | mjpeg | images | synthetic`.
    pub kind: SourceKind,
    /// `mjpeg`: the MJPEG file; `images`: the directory. Relative paths are relative to the
    /// working directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `mjpeg`: a child process whose stdout is MJPEG, as an argv list, e.g.
    /// `["rpicam-vid", "-t", "0", "--codec", "mjpeg", "-o", "-"]`. Exclusive with `path`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Frames per second; `0` = as fast as the source gives them. For a camera this is the
    /// rate requested from the driver.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// `mjpeg` file and `images`: start again at the end instead of finishing.
    #[serde(default, rename = "loop")]
    pub loop_: bool,
    /// `camera`, `synthetic`: frame width in pixels.
    #[serde(default = "default_width")]
    pub width: NonZeroU32,
    /// `camera`, `synthetic`: frame height in pixels.
    #[serde(default = "default_height")]
    pub height: NonZeroU32,
    /// `camera`: V4L2 device, as an index (`"0"`) or a path (`"/dev/video0"`).
    #[serde(default = "default_camera_device")]
    pub device: String,
    /// `camera`: pixel format to ask the driver for.
    #[serde(default)]
    pub format: CameraFormat,
    /// Any source: stop after this many frames (`0` = never), then flush and exit 0.
    #[serde(default)]
    pub max_frames: u64,
}

fn default_fps() -> f64 {
    10.0
}
fn default_width() -> NonZeroU32 {
    NonZeroU32::new(1280).unwrap()
}
fn default_height() -> NonZeroU32 {
    NonZeroU32::new(720).unwrap()
}
fn default_camera_device() -> String {
    "0".to_string()
}

/// `[transform]`: applied to every frame before encoding, in this order: rotate, resize,
/// grayscale. A frame that needs any of them is decoded (no passthrough).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Clockwise rotation in degrees: 0, 90, 180 or 270 (cameras are often mounted upside
    /// down: 180).
    #[serde(default)]
    pub rotate_degrees: u16,
    /// Largest width in pixels after rotation; wider frames are scaled down keeping the
    /// aspect ratio. Unset = no limit.
    #[serde(default)]
    pub max_width: Option<NonZeroU32>,
    /// Largest height in pixels after rotation. Unset = no limit.
    #[serde(default)]
    pub max_height: Option<NonZeroU32>,
    /// Convert to 8-bit grayscale.
    #[serde(default)]
    pub grayscale: bool,
}

/// Output codec.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// JPEG (`image/jpeg`): quality ladder, then downscale.
    #[default]
    Jpeg,
    /// PNG (`image/png`): lossless; downscale when it does not fit.
    Png,
    /// Raw pixels compressed with zstd (`application/vnd.edgecam.raw+zstd`): lossless,
    /// cheap to decode; downscale when it does not fit.
    Zstd,
}

impl Codec {
    /// Name used in the `edgecam.codec` header: `jpeg`, `png` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Jpeg => "jpeg",
            Codec::Png => "png",
            Codec::Zstd => "zstd",
        }
    }
}

/// `[encode]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    /// `jpeg | png | zstd`.
    #[serde(default)]
    pub codec: Codec,
    /// Upper bound on the whole Kafka record: value + key + headers + record and batch
    /// framing. Default 1,000,000 bytes, librdkafka's `message.max.bytes`. Every published
    /// record is at most this large.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: NonZeroU32,
    /// Highest JPEG quality (1–100) the ladder starts from.
    #[serde(default = "default_quality_max")]
    pub quality_max: u8,
    /// Lowest JPEG quality (1–100) before the ladder downscales instead.
    #[serde(default = "default_quality_min")]
    pub quality_min: u8,
    /// Quality step between rungs of the JPEG ladder.
    #[serde(default = "default_quality_step")]
    pub quality_step: NonZeroU32,
    /// Each downscale rung multiplies width and height by this percentage (10–95).
    #[serde(default = "default_downscale_percent")]
    pub downscale_percent: u8,
    /// Downscaling stops before either side falls under this many pixels; a frame that does
    /// not fit by then is dropped (reason `budget_unreachable`).
    #[serde(default = "default_min_side_px")]
    pub min_side_px: NonZeroU32,
    /// zstd compression level (1–22) for `codec = "zstd"`.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Publish JPEG frames from the source untouched when they fit and no transform
    /// applies.
    #[serde(default = "default_true")]
    pub passthrough: bool,
}

fn default_max_message_bytes() -> NonZeroU32 {
    NonZeroU32::new(DEFAULT_MAX_MESSAGE_BYTES).unwrap()
}
fn default_quality_max() -> u8 {
    90
}
fn default_quality_min() -> u8 {
    40
}
fn default_quality_step() -> NonZeroU32 {
    NonZeroU32::new(5).unwrap()
}
fn default_downscale_percent() -> u8 {
    75
}
fn default_min_side_px() -> NonZeroU32 {
    NonZeroU32::new(32).unwrap()
}
fn default_zstd_level() -> i32 {
    3
}
fn default_true() -> bool {
    true
}

impl Default for EncodeConfig {
    fn default() -> Self {
        EncodeConfig {
            codec: Codec::default(),
            max_message_bytes: default_max_message_bytes(),
            quality_max: default_quality_max(),
            quality_min: default_quality_min(),
            quality_step: default_quality_step(),
            downscale_percent: default_downscale_percent(),
            min_side_px: default_min_side_px(),
            zstd_level: default_zstd_level(),
            passthrough: true,
        }
    }
}

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
    /// Frames that may wait between the source and the encoder.
    #[serde(default = "default_queue_frames")]
    pub queue_frames: NonZeroUsize,
    /// What happens when that queue is full.
    #[serde(default)]
    pub overflow: OverflowPolicy,
    /// On SIGINT/SIGTERM, how long to wait for frames already accepted to be delivered
    /// before exiting anyway (undelivered ones are counted and logged). Keep it below
    /// systemd's `TimeoutStopSec`.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_queue_frames() -> NonZeroUsize {
    NonZeroUsize::new(8).unwrap()
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
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

/// A librdkafka property value: TOML strings, integers and booleans are all accepted and
/// passed as text.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum PropertyValue {
    /// `"lz4"`
    Text(String),
    /// `5`
    Int(i64),
    /// `true`
    Bool(bool),
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Text(s) => f.write_str(s),
            PropertyValue::Int(i) => write!(f, "{i}"),
            PropertyValue::Bool(b) => write!(f, "{b}"),
        }
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
    pub topic: String,
    /// Topic for small JSON records about frames that could not be published (e.g. no rung
    /// of the ladder fits). Unset = such frames are only counted and logged.
    #[serde(default)]
    pub error_topic: Option<String>,
    /// Create `topic` (and `error_topic`) at start with this many partitions if missing.
    /// Unset = do not create.
    #[serde(default)]
    pub create_topic_partitions: Option<NonZeroU32>,
    /// Replication factor used when creating topics.
    #[serde(default = "default_replication_factor")]
    pub create_topic_replication: NonZeroU32,
    /// Records handed to librdkafka whose delivery report has not arrived yet; the encoder
    /// waits when this many are outstanding.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: NonZeroUsize,
    /// librdkafka `message.timeout.ms`: how long librdkafka retries one record before
    /// reporting failure. edgecam then sends it again (it was accepted; it is not dropped).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: NonZeroU32,
    /// Extra librdkafka producer properties, passed through as given, e.g.
    /// `"linger.ms" = 5`, `"compression.type" = "none"`. `acks` and `enable.idempotence`
    /// are fixed by edgecam's delivery guarantee and may not be set here.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

fn default_topic() -> String {
    "edgecam.frames".to_string()
}
fn default_replication_factor() -> NonZeroU32 {
    NonZeroU32::new(1).unwrap()
}
fn default_max_in_flight() -> NonZeroUsize {
    NonZeroUsize::new(32).unwrap()
}
fn default_message_timeout_ms() -> NonZeroU32 {
    NonZeroU32::new(60_000).unwrap()
}

/// Reads `path` (TOML) with `EDGECAM_…` environment overrides from `env`, then validates.
///
/// `env` is a list of `(name, value)` pairs (pass `std::env::vars()` in production; tests
/// pass their own). Errors: [`ConfigError`], naming the file or key.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
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
) -> Result<Config, ConfigError> {
    validate::resolve(toml_text, env)
}
