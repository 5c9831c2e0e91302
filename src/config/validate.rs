//! Resolving TOML text plus `EDGECAM_…` environment overrides into a validated [`Config`].
//!
//! The steps, each with its own kind of [`ConfigError`]:
//!
//! 1. **Syntax.** The text is parsed as TOML ([`ConfigError::Syntax`], with line and column).
//! 2. **Keys.** Every key of the file and every `EDGECAM_…` override is checked against the
//!    structs of [`super`] ([`ConfigError::UnknownKey`], listing the allowed keys). The lists
//!    of allowed keys are read from the structs' own `Deserialize` impls, so they cannot drift.
//! 3. **Layering and types.** The `config` crate layers the environment over the file and
//!    deserializes the result ([`ConfigError::WrongType`], [`ConfigError::Missing`]).
//! 4. **Rules.** Ranges and cross-field rules ([`ConfigError::Invalid`]).
//!
//! # Environment overrides
//!
//! `EDGECAM_<TABLE>__<KEY>=value` overrides `<table>.<key>`: one `_` after the prefix, `__`
//! between levels, names case-insensitive, e.g. `EDGECAM_KAFKA__BOOTSTRAP_SERVERS=b:9092` or
//! `EDGECAM_ENCODE__MAX_MESSAGE_BYTES=500000`. Values are text and are converted to the key's
//! type (so `EDGECAM_DEVICE__ID=0042` stays `"0042"`).
//!
//! `EDGECAM_KAFKA__PROPERTIES__<NAME>=value` sets one librdkafka property; underscores in
//! `<NAME>` become dots (librdkafka names have none): `EDGECAM_KAFKA__PROPERTIES__LINGER_MS=5`
//! sets `"linger.ms" = 5`. `source.command` is a list and can only be set in the file.
//!
//! Other `EDGECAM_…` variables without `__` (e.g. `EDGECAM_LOG`) are not overrides and are
//! ignored, except `EDGECAM_<TABLE>_<KEY>` with a single `_`, which is reported as a typo.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Visitor};
use toml::de::{DeTable, DeValue};

use super::{
    CameraFormat, Codec, Config, DeviceConfig, EncodeConfig, KafkaConfig, MqttConfig, MqttProtocol,
    OverflowPolicy, PipelineConfig, PropertyValue, SinkConfig, SinkKind, SourceConfig, SourceKind,
    TransformConfig, ENV_PREFIX,
};

/// A configuration problem. The message names the key (`encode.quality_max`), says what is
/// wrong and what is allowed; `edgecam check-config` prints it and exits 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The text is not valid TOML.
    #[error("TOML syntax error{}: {message}", at_line_column(.line, .column))]
    Syntax {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when known.
        column: Option<usize>,
        /// What the TOML parser expected.
        message: String,
    },
    /// A key (in the file or from an `EDGECAM_…` variable) that edgecam does not know.
    #[error("{key}: unknown key{}; {}", origin_suffix(.origin), allowed_keys(.key, .allowed))]
    UnknownKey {
        /// Full dotted path of the unknown key, e.g. `encode.qualty_max`.
        key: String,
        /// Where it was written: `line 7` or `environment variable EDGECAM_…`.
        origin: Option<String>,
        /// The keys allowed at that level.
        allowed: Vec<String>,
    },
    /// A value of the wrong type, e.g. a string where a number belongs.
    #[error("{key}: wrong type: expected {expected}, found {found}{}", origin_suffix(.origin))]
    WrongType {
        /// Full dotted path of the key.
        key: String,
        /// What the key takes, e.g. `an integer from 1 to 100`.
        expected: String,
        /// What was found, e.g. `string "abc"`.
        found: String,
        /// Where it was written: `environment variable EDGECAM_…`, when known.
        origin: Option<String>,
    },
    /// A required key (or table) is absent.
    #[error("{key}: required key is missing ({})", missing_hint(.key))]
    Missing {
        /// Full dotted path of the missing key, e.g. `device.id`, or a table name (`kafka`).
        key: String,
    },
    /// A value of the right type that breaks a rule (range, format, combination of keys).
    #[error("{key}: {message}")]
    Invalid {
        /// Full dotted path of the offending key.
        key: String,
        /// What is wrong and what is allowed, e.g. `must be at least 4096 (got 0)`.
        message: String,
    },
    /// An `EDGECAM_…` environment variable that cannot be an override as written.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable's name.
        name: String,
        /// What is wrong with it and what to write instead.
        message: String,
    },
    /// A problem reported by the layering library that could not be tied to a key.
    #[error("configuration error: {0}")]
    Other(String),
}

fn at_line_column(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

fn origin_suffix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|o| format!(" ({o})"))
        .unwrap_or_default()
}

fn allowed_keys(key: &str, allowed: &[String]) -> String {
    let list = allowed.join(", ");
    match key.rsplit_once('.') {
        Some((table, _)) => format!("allowed keys in [{table}]: {list}"),
        None => format!("allowed top-level tables: {list}"),
    }
}

fn missing_hint(key: &str) -> String {
    match key {
        "device" => "add a [device] table with id = \"...\"".to_string(),
        "source" => {
            "add a [source] table with kind = \"camera\" | \"mjpeg\" | \"images\" | \"synthetic\""
                .to_string()
        }
        "kafka" => "add a [kafka] table with at least bootstrap_servers = \"host:port\"".into(),
        "mqtt" => "add an [mqtt] table with at least host = \"broker-host\"".into(),
        _ => format!("set it in the file or with {}", env_name(key)),
    }
}

/// The override variable for a dotted key: `encode.quality_max` → `EDGECAM_ENCODE__QUALITY_MAX`.
fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}_{}", key.replace('.', "__").to_uppercase())
}

// ---------------------------------------------------------------------------------------
// Schema: allowed keys, read from the `Deserialize` impls of `mod.rs`.
// ---------------------------------------------------------------------------------------

/// The "error" an [`Introspect`] deserializer returns: the field or variant names serde gave it.
#[derive(Debug)]
struct Introspected(&'static [&'static str]);

impl fmt::Display for Introspected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "introspected {:?}", self.0)
    }
}

impl std::error::Error for Introspected {}

impl de::Error for Introspected {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Introspected(&[])
    }
}

/// A deserializer that only records the field list of a struct (or the variant list of an
/// enum) that derived `Deserialize` passes to `deserialize_struct` / `deserialize_enum`.
struct Introspect;

impl<'de> de::Deserializer<'de> for Introspect {
    type Error = Introspected;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Introspected> {
        Err(Introspected(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Introspected> {
        Err(Introspected(fields))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Introspected> {
        Err(Introspected(variants))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// Field names of a struct or variant names of an enum, as its `Deserialize` impl knows them.
fn names_of<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(Introspect) {
        Err(Introspected(names)) => names,
        Ok(_) => &[],
    }
}

/// Keys allowed in a top-level table, or `None` for a table this module does not know.
fn table_fields(table: &str) -> Option<&'static [&'static str]> {
    Some(match table {
        "device" => names_of::<DeviceConfig>(),
        "source" => names_of::<SourceConfig>(),
        "transform" => names_of::<TransformConfig>(),
        "encode" => names_of::<EncodeConfig>(),
        "pipeline" => names_of::<PipelineConfig>(),
        "kafka" => names_of::<KafkaConfig>(),
        "sink" => names_of::<SinkConfig>(),
        "mqtt" => names_of::<MqttConfig>(),
        _ => return None,
    })
}

/// Variants of the enums of `mod.rs`, by Rust type name (the `config` crate's messages name
/// the type, not the key).
fn enum_variants(type_name: &str) -> Option<&'static [&'static str]> {
    Some(match type_name {
        "SourceKind" => names_of::<SourceKind>(),
        "CameraFormat" => names_of::<CameraFormat>(),
        "Codec" => names_of::<Codec>(),
        "OverflowPolicy" => names_of::<OverflowPolicy>(),
        "SinkKind" => names_of::<SinkKind>(),
        "MqttProtocol" => names_of::<MqttProtocol>(),
        _ => return None,
    })
}

/// Allowed keys at the level of `key`'s parent (`encode.x` → fields of `[encode]`).
fn siblings(key: &str) -> Vec<String> {
    match key.split_once('.') {
        None => names_of::<Config>()
            .iter()
            .map(|t| format!("[{t}]"))
            .collect(),
        Some((table, _)) => table_fields(table)
            .unwrap_or(&[])
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// Integer keys with limits: `(key, min, max)`. Used by the rules, and to explain values that
/// do not even fit the field's type (`quality_max = 300`, `max_message_bytes = -1`).
const INT_RANGES: &[(&str, i128, i128)] = &[
    ("source.width", 1, 16_384),
    ("source.height", 1, 16_384),
    ("source.max_frames", 0, u64::MAX as i128),
    ("transform.max_width", 1, u32::MAX as i128),
    ("transform.max_height", 1, u32::MAX as i128),
    ("encode.max_message_bytes", 4096, 1_000_000_000),
    ("encode.quality_max", 1, 100),
    ("encode.quality_min", 1, 100),
    ("encode.quality_step", 1, u32::MAX as i128),
    ("encode.downscale_percent", 10, 95),
    ("encode.min_side_px", 1, u32::MAX as i128),
    ("encode.zstd_level", 1, 22),
    ("pipeline.queue_frames", 1, u32::MAX as i128),
    ("pipeline.shutdown_grace_ms", 0, 600_000),
    // Kafka's CreateTopics takes an int32 partition count and an int16 replication factor.
    ("kafka.create_topic_partitions", 1, i32::MAX as i128),
    ("kafka.create_topic_replication", 1, i16::MAX as i128),
    ("kafka.max_in_flight", 1, 100_000),
    // librdkafka's message.timeout.ms range.
    ("kafka.message_timeout_ms", 1, i32::MAX as i128),
];

/// Allowed values of `transform.rotate_degrees`.
const ROTATIONS: [u16; 4] = [0, 90, 180, 270];

fn int_range(key: &str) -> Option<(i128, i128)> {
    INT_RANGES
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Human form of a range: `from 1 to 100`, or `at least 1` when the top is a type limit.
fn describe_range(lo: i128, hi: i128) -> String {
    if hi >= u32::MAX as i128 {
        format!("at least {lo}")
    } else {
        format!("from {lo} to {hi}")
    }
}

/// Checks one integer against [`INT_RANGES`].
fn check_int(key: &str, value: i128) -> Result<(), ConfigError> {
    let Some((lo, hi)) = int_range(key) else {
        return Ok(());
    };
    out_of_range(key, lo, hi, &value.to_string(), value)
}

fn out_of_range(
    key: &str,
    lo: i128,
    hi: i128,
    shown: &str,
    value: i128,
) -> Result<(), ConfigError> {
    let message = if value < lo {
        format!("must be at least {lo} (got {shown})")
    } else if value > hi {
        format!("must be at most {hi} (got {shown})")
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid {
        key: key.to_string(),
        message,
    })
}

// ---------------------------------------------------------------------------------------
// Resolution.
// ---------------------------------------------------------------------------------------

/// Parses, layers and validates. Relative `source.path`s are checked against the working
/// directory.
pub(super) fn resolve(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    resolve_with_base(toml_text, env, None)
}

/// Like [`resolve`], checking relative `source.path`s against `base` instead of the working
/// directory (when `Some`). The returned [`Config`] keeps the path as written.
fn resolve_with_base(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base: Option<&Path>,
) -> Result<Config, ConfigError> {
    let table = DeTable::parse(toml_text).map_err(|e| syntax_error(toml_text, &e))?;
    check_file_keys(toml_text, table.get_ref())?;
    let env = EnvOverrides::collect(env)?;

    let layered = config::Config::builder()
        .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                // Without this the prefix separator defaults to `separator` (`EDGECAM__…`).
                .prefix_separator("_")
                .separator("__")
                // Off on purpose: the crate converts text to the target type itself, and
                // `try_parsing` would turn a string key like `device.id = "0042"` into 42.
                .try_parsing(false)
                .source(Some(env.layered.clone())),
        )
        .build()
        .map_err(|e| env.annotate(from_layered(e)))?;
    let mut config: Config = layered
        .try_deserialize()
        .map_err(|e| env.annotate(from_layered(e)))?;
    if !env.properties.is_empty() {
        let Some(kafka) = config.kafka.as_mut() else {
            return Err(invalid(
                "kafka.properties",
                "set from the environment, but the file has no [kafka] table",
            ));
        };
        for (name, value) in &env.properties {
            kafka.properties.insert(name.clone(), value.clone());
        }
    }

    check_rules(&config, base).map_err(|e| env.annotate(e))?;
    Ok(config)
}

/// 1-based line and column (in characters) of byte offset `at`.
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

fn line_of(text: &str, span: &Range<usize>) -> String {
    format!("line {}", line_column(text, span.start).0)
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError::Syntax {
        line,
        column,
        message: e.message().trim().to_string(),
    }
}

fn describe_toml(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("string {:?}", s.as_ref()),
        DeValue::Integer(i) => format!("integer `{}`", i.as_str()),
        DeValue::Float(f) => format!("float `{}`", f.as_str()),
        DeValue::Boolean(b) => format!("boolean `{b}`"),
        DeValue::Datetime(d) => format!("datetime `{d}`"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// Unknown keys, sections that are not tables and malformed `[kafka.properties]` entries in
/// the file. Reports the one that comes first in the text.
fn check_file_keys(text: &str, root: &DeTable<'_>) -> Result<(), ConfigError> {
    let mut found: Vec<(usize, ConfigError)> = Vec::new();
    let top = names_of::<Config>();
    for (name, value) in root.iter() {
        let table_name: &str = name.get_ref().as_ref();
        if !top.contains(&table_name) {
            found.push((
                name.span().start,
                ConfigError::UnknownKey {
                    key: table_name.to_string(),
                    origin: Some(line_of(text, &name.span())),
                    allowed: siblings(table_name),
                },
            ));
            continue;
        }
        let DeValue::Table(table) = value.get_ref() else {
            found.push((
                name.span().start,
                ConfigError::WrongType {
                    key: table_name.to_string(),
                    expected: format!("a table ([{table_name}])"),
                    found: describe_toml(value.get_ref()),
                    origin: Some(line_of(text, &name.span())),
                },
            ));
            continue;
        };
        let Some(fields) = table_fields(table_name) else {
            continue;
        };
        for (field, value) in table.iter() {
            let field_name: &str = field.get_ref().as_ref();
            let key = format!("{table_name}.{field_name}");
            if !fields.contains(&field_name) {
                found.push((
                    field.span().start,
                    ConfigError::UnknownKey {
                        origin: Some(line_of(text, &field.span())),
                        allowed: siblings(&key),
                        key,
                    },
                ));
            } else if key == "kafka.properties" {
                if let Some(problem) = check_file_properties(text, value.get_ref()) {
                    found.push(problem);
                }
            }
        }
    }
    match found.into_iter().min_by_key(|(at, _)| *at) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// `[kafka.properties]` must be a table of strings, integers and booleans; an unquoted dotted
/// name (`linger.ms = 5`) makes a nested table, which is reported with the fix.
fn check_file_properties(text: &str, value: &DeValue<'_>) -> Option<(usize, ConfigError)> {
    let DeValue::Table(props) = value else {
        return Some((
            0,
            ConfigError::WrongType {
                key: "kafka.properties".into(),
                expected: "a table of librdkafka properties ([kafka.properties])".into(),
                found: describe_toml(value),
                origin: None,
            },
        ));
    };
    for (name, value) in props.iter() {
        let key = format!("kafka.properties.{}", name.get_ref().as_ref());
        let line = line_of(text, &name.span());
        let at = name.span().start;
        match value.get_ref() {
            DeValue::String(_) | DeValue::Integer(_) | DeValue::Boolean(_) => {}
            DeValue::Table(_) => {
                return Some((
                    at,
                    ConfigError::Invalid {
                        message: format!(
                            "is a table, not a value ({line}): quote dotted librdkafka names, \
                             e.g. \"linger.ms\" = 5, not linger.ms = 5"
                        ),
                        key,
                    },
                ))
            }
            other => {
                return Some((
                    at,
                    ConfigError::WrongType {
                        key,
                        expected: "a string, an integer or a boolean (write other values as \
                                   strings, e.g. \"0.5\")"
                            .into(),
                        found: describe_toml(other),
                        origin: Some(line),
                    },
                ))
            }
        }
    }
    None
}

/// The `EDGECAM_…` variables that are overrides, checked against the schema.
struct EnvOverrides {
    /// Variables for the `config` crate's `Environment` source (everything but properties).
    layered: HashMap<String, String>,
    /// `kafka.properties` entries from `EDGECAM_KAFKA__PROPERTIES__…`, applied after layering
    /// because the `config` crate would split their dotted names into nested tables.
    properties: Vec<(String, PropertyValue)>,
    /// Dotted key → the variable that set it, to name the variable in errors.
    by_key: BTreeMap<String, String>,
}

impl EnvOverrides {
    fn collect(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let prefix = format!("{ENV_PREFIX}_");
        let top = names_of::<Config>();
        let mut out = EnvOverrides {
            layered: HashMap::new(),
            properties: Vec::new(),
            by_key: BTreeMap::new(),
        };
        let mut vars: Vec<(String, String)> = env.into_iter().collect();
        vars.sort();
        for (name, value) in vars {
            let Some(rest) = name
                .get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(&prefix))
                .map(|_| name[prefix.len()..].to_lowercase())
            else {
                continue;
            };
            let origin = Some(format!("environment variable {name}"));
            if !rest.contains("__") {
                // `EDGECAM_LOG` and friends are not overrides; `EDGECAM_KAFKA_TOPIC` is a typo.
                if let Some(table) = top.iter().find(|t| rest.starts_with(&format!("{t}_"))) {
                    let field = &rest[table.len() + 1..];
                    return Err(ConfigError::Env {
                        message: format!(
                            "levels are separated by `__`: did you mean {}?",
                            env_name(&format!("{table}.{field}"))
                        ),
                        name,
                    });
                }
                continue;
            }
            let parts: Vec<&str> = rest.split("__").collect();
            let table = parts[0];
            if !top.contains(&table) {
                return Err(ConfigError::UnknownKey {
                    key: table.to_string(),
                    origin,
                    allowed: siblings(table),
                });
            }
            let field = parts[1];
            let key = format!("{table}.{field}");
            if key == "kafka.properties" {
                let names = &parts[2..];
                if names.is_empty() || names.iter().any(|n| n.is_empty()) {
                    return Err(ConfigError::Env {
                        name,
                        message: "kafka.properties is a table: set one property per variable, \
                                  e.g. EDGECAM_KAFKA__PROPERTIES__LINGER_MS=5 for \"linger.ms\""
                            .into(),
                    });
                }
                let property = names.join(".").replace('_', ".");
                out.by_key
                    .insert(format!("kafka.properties.{property}"), name.clone());
                out.properties.push((property, parse_property(value)));
                continue;
            }
            if let Some(fields) = table_fields(table) {
                if !fields.contains(&field) {
                    return Err(ConfigError::UnknownKey {
                        allowed: siblings(&key),
                        key,
                        origin,
                    });
                }
            }
            if parts.len() > 2 {
                return Err(ConfigError::Env {
                    message: format!("{key} has no sub-keys; use {}", env_name(&key)),
                    name,
                });
            }
            if key == "source.command" {
                return Err(ConfigError::Env {
                    name,
                    message: "source.command is a list and can only be set in the file".into(),
                });
            }
            out.by_key.insert(key, name.clone());
            out.layered.insert(name, value);
        }
        Ok(out)
    }

    /// Names the variable that set the key of `e`, when one did.
    fn annotate(&self, e: ConfigError) -> ConfigError {
        match e {
            ConfigError::WrongType {
                key,
                expected,
                found,
                origin: _,
            } if self.by_key.contains_key(&key) => ConfigError::WrongType {
                origin: Some(format!("environment variable {}", self.by_key[&key])),
                key,
                expected,
                found,
            },
            ConfigError::Invalid { key, message } if self.by_key.contains_key(&key) => {
                ConfigError::Invalid {
                    message: format!(
                        "{message} (set by environment variable {})",
                        self.by_key[&key]
                    ),
                    key,
                }
            }
            other => other,
        }
    }
}

/// An environment value as a property: `true`/`false`, an integer, or text.
fn parse_property(value: String) -> PropertyValue {
    if let Ok(b) = value.parse::<bool>() {
        PropertyValue::Bool(b)
    } else if let Ok(i) = value.parse::<i64>() {
        PropertyValue::Int(i)
    } else {
        PropertyValue::Text(value)
    }
}

/// Maps the `config` crate's errors (which carry the dotted key in most cases) to ours.
fn from_layered(e: config::ConfigError) -> ConfigError {
    match e {
        config::ConfigError::NotFound(key) => ConfigError::Missing { key },
        config::ConfigError::Type {
            ref unexpected,
            expected,
            ref key,
            ..
        } => type_error(
            key.clone().unwrap_or_default(),
            unexpected.to_string(),
            expected,
        ),
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

/// A value that could not be converted to the key's type.
fn type_error(key: String, found: String, expected: &str) -> ConfigError {
    // Integers that do not fit the field's type: explain with the key's range.
    if let Some(number) = backticked(&found).and_then(|n| n.parse::<i128>().ok()) {
        if let Some((lo, hi)) = int_range(&key) {
            if let Err(e) = out_of_range(&key, lo, hi, &number.to_string(), number) {
                return e;
            }
        }
        if key == "transform.rotate_degrees" {
            return rotate_error(&number.to_string());
        }
    }
    let expected = match int_range(&key) {
        Some((lo, hi)) => format!("an integer {}", describe_range(lo, hi)),
        None if key == "transform.rotate_degrees" => "0, 90, 180 or 270".into(),
        None if key == "source.command" => {
            "a list of strings (program and arguments), e.g. [\"cat\", \"clip.mjpeg\"]".into()
        }
        None => expected
            .replace("an signed", "a signed")
            .replace(" or less integer", "-bit integer")
            .replace(" bit integer", "-bit integer")
            .replace("a floating point", "a number")
            .replace("a sequence", "a list"),
    };
    ConfigError::WrongType {
        key,
        expected,
        found,
        origin: None,
    }
}

/// The text between the first pair of backticks.
fn backticked(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

/// A serde message from deserializing the layered value, tied to `key` (the parent of the
/// problem for unknown fields).
fn from_message(key: Option<String>, message: &str) -> ConfigError {
    let join = |child: &str| match &key {
        Some(k) if !k.is_empty() => format!("{k}.{child}"),
        _ => child.to_string(),
    };
    let key_or = || key.clone().unwrap_or_else(|| "(top level)".into());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let full = join(field);
        return ConfigError::UnknownKey {
            allowed: siblings(&full),
            key: full,
            origin: None,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return ConfigError::Missing { key: join(field) };
    }
    if message.contains("expected a nonzero") {
        let key = key_or();
        let (lo, hi) = int_range(&key).unwrap_or((1, u32::MAX as i128));
        return match out_of_range(&key, lo, hi, "0", 0) {
            Err(e) => e,
            Ok(()) => unreachable!("0 is below every minimum of 1 or more"),
        };
    }
    // `config` crate: "enum SourceKind does not have variant constructor webcam".
    if let Some(rest) = message.strip_prefix("enum ") {
        let type_name = rest.split_whitespace().next().unwrap_or_default();
        let allowed = enum_variants(type_name)
            .map(|v| v.join(", "))
            .unwrap_or_default();
        let message = match rest.split_once("does not have variant constructor ") {
            Some((_, given)) => format!("unknown value {given:?}; allowed: {allowed}"),
            None => format!("must be one of: {allowed}"),
        };
        return ConfigError::Invalid {
            key: key_or(),
            message,
        };
    }
    if let Some(rest) = message.strip_prefix("value of enum ") {
        let type_name = rest.split_whitespace().next().unwrap_or_default();
        let allowed = enum_variants(type_name)
            .map(|v| v.join(", "))
            .unwrap_or_default();
        return ConfigError::WrongType {
            key: key_or(),
            expected: format!("one of: {allowed}"),
            found: "a value that is not a string".into(),
            origin: None,
        };
    }
    if message.contains("untagged enum PropertyValue") {
        return ConfigError::WrongType {
            key: key_or(),
            expected: "a string, an integer or a boolean".into(),
            found: "another type".into(),
            origin: None,
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return type_error(key_or(), found.to_string(), expected);
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

// ---------------------------------------------------------------------------------------
// Rules.
// ---------------------------------------------------------------------------------------

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

fn check_rules(c: &Config, base: Option<&Path>) -> Result<(), ConfigError> {
    check_device_id(&c.device.id)?;
    check_source(&c.source, base)?;
    check_transform(&c.transform)?;
    check_encode(&c.encode)?;
    check_int(
        "pipeline.queue_frames",
        c.pipeline.queue_frames.get() as i128,
    )?;
    check_int(
        "pipeline.shutdown_grace_ms",
        c.pipeline.shutdown_grace_ms as i128,
    )?;
    match (c.sink.kind, &c.kafka, &c.mqtt) {
        (SinkKind::Kafka, None, _) => {
            return Err(ConfigError::Missing {
                key: "kafka".into(),
            })
        }
        (SinkKind::Mqtt, _, None) => return Err(ConfigError::Missing { key: "mqtt".into() }),
        _ => {}
    }
    if let Some(k) = &c.kafka {
        check_kafka(k, &c.encode)?;
    }
    if let Some(m) = &c.mqtt {
        check_mqtt(m)?;
    }
    Ok(())
}

/// Rules of `[mqtt]`, shared by the agent and the bridge.
pub(super) fn check_mqtt(m: &MqttConfig) -> Result<(), ConfigError> {
    if m.host.trim().is_empty() {
        return Err(invalid("mqtt.host", "must not be empty"));
    }
    if m.port == 0 {
        return Err(invalid("mqtt.port", "must be 1-65535 (got 0)"));
    }
    if m.qos > 1 {
        return Err(invalid(
            "mqtt.qos",
            format!("must be 0 or 1 (got {})", m.qos),
        ));
    }
    if !(5..=3600).contains(&m.keep_alive_secs) {
        return Err(invalid(
            "mqtt.keep_alive_secs",
            format!("must be 5-3600 (got {})", m.keep_alive_secs),
        ));
    }
    if m.silence_timeout_secs <= m.keep_alive_secs as u32 {
        return Err(invalid(
            "mqtt.silence_timeout_secs",
            format!(
                "must exceed mqtt.keep_alive_secs ({}), got {}",
                m.keep_alive_secs, m.silence_timeout_secs
            ),
        ));
    }
    let t = &m.topic_template;
    if t.is_empty() || t.contains(['+', '#', '\0']) || t.starts_with('$') {
        return Err(invalid(
            "mqtt.topic_template",
            format!("must be a publishable MQTT topic without wildcards (got {t:?})"),
        ));
    }
    let p = &m.control_prefix;
    if p.is_empty() || p.contains(['+', '#', '\0']) || p.starts_with('$') {
        return Err(invalid(
            "mqtt.control_prefix",
            format!("must be a topic prefix without wildcards (got {p:?})"),
        ));
    }
    if m.password.is_some() && m.username.is_none() {
        return Err(invalid("mqtt.password", "needs mqtt.username"));
    }
    Ok(())
}

/// Characters allowed in `device.id` and Kafka topic names.
fn is_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')
}

fn check_device_id(id: &str) -> Result<(), ConfigError> {
    const KEY: &str = "device.id";
    const ALLOWED: &str = "1 to 128 characters from A-Z a-z 0-9 . _ -";
    let len = id.chars().count();
    if len == 0 || len > 128 {
        return Err(invalid(
            KEY,
            format!("must be {ALLOWED} (got {len} characters)"),
        ));
    }
    if let Some(bad) = id.chars().find(|&ch| !is_name_char(ch)) {
        return Err(invalid(
            KEY,
            format!("must be {ALLOWED} (got {id:?}, which contains {bad:?})"),
        ));
    }
    Ok(())
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Camera => "camera",
        SourceKind::Mjpeg => "mjpeg",
        SourceKind::Images => "images",
        SourceKind::Synthetic => "synthetic",
    }
}

fn check_source(s: &SourceConfig, base: Option<&Path>) -> Result<(), ConfigError> {
    let kind = kind_name(s.kind);
    let unused = |key: &str| {
        invalid(
            key,
            format!(
                "is not used by kind = \"{kind}\" (only by \"mjpeg\"{}); remove it",
                if key == "source.path" {
                    " and \"images\""
                } else {
                    ""
                }
            ),
        )
    };
    match s.kind {
        SourceKind::Mjpeg => {
            match (&s.path, &s.command) {
                (Some(_), Some(_)) => return Err(invalid(
                    "source.command",
                    "source.path and source.command are exclusive for kind = \"mjpeg\": set only \
                     one (a file, or a program writing MJPEG to stdout)",
                )),
                (None, None) => {
                    return Err(invalid(
                        "source.path",
                        "kind = \"mjpeg\" needs source.path (an MJPEG file) or source.command (a \
                     program writing MJPEG to stdout, as an argv list)",
                    ))
                }
                (Some(path), None) => check_path(path, base, false)?,
                (None, Some(argv)) => check_command(argv)?,
            }
        }
        SourceKind::Images => {
            if s.command.is_some() {
                return Err(unused("source.command"));
            }
            let Some(path) = &s.path else {
                return Err(invalid(
                    "source.path",
                    "kind = \"images\" needs source.path, a directory of .jpg/.jpeg/.png files",
                ));
            };
            check_path(path, base, true)?;
        }
        SourceKind::Camera | SourceKind::Synthetic => {
            if s.path.is_some() {
                return Err(unused("source.path"));
            }
            if s.command.is_some() {
                return Err(unused("source.command"));
            }
        }
    }
    if !s.fps.is_finite() || !(0.0..=1000.0).contains(&s.fps) {
        return Err(invalid(
            "source.fps",
            format!(
                "must be a number from 0 to 1000 frames per second, 0 = as fast as the source \
                 gives them (got {})",
                s.fps
            ),
        ));
    }
    check_int("source.width", s.width.get() as i128)?;
    check_int("source.height", s.height.get() as i128)?;
    if s.kind == SourceKind::Camera && s.device.trim().is_empty() {
        return Err(invalid(
            "source.device",
            "must be a V4L2 device index (\"0\") or path (\"/dev/video0\"), not empty",
        ));
    }
    Ok(())
}

/// `source.path` must exist; a directory for `images`, anything else (a file, a FIFO) for
/// `mjpeg`.
fn check_path(path: &Path, base: Option<&Path>, want_dir: bool) -> Result<(), ConfigError> {
    const KEY: &str = "source.path";
    if path.as_os_str().is_empty() {
        return Err(invalid(KEY, "must not be empty"));
    }
    let full = match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    let what = if want_dir {
        "directory of images"
    } else {
        "MJPEG file"
    };
    let meta = match std::fs::metadata(&full) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let relative = if path.is_relative() {
                " (relative paths are relative to the working directory)"
            } else {
                ""
            };
            return Err(invalid(
                KEY,
                format!("{what} {} does not exist{relative}", path.display()),
            ));
        }
        Err(e) => {
            return Err(invalid(
                KEY,
                format!("cannot access {}: {e}", path.display()),
            ))
        }
    };
    match (want_dir, meta.is_dir()) {
        (true, false) => Err(invalid(
            KEY,
            format!(
                "{} is not a directory; kind = \"images\" needs a directory of images (use kind \
                 = \"mjpeg\" for an MJPEG file)",
                path.display()
            ),
        )),
        (false, true) => Err(invalid(
            KEY,
            format!(
                "{} is a directory; kind = \"mjpeg\" needs an MJPEG file (use kind = \"images\" \
                 for a directory of images)",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

fn check_command(argv: &[String]) -> Result<(), ConfigError> {
    match argv.first() {
        None => Err(invalid(
            "source.command",
            "must be a non-empty argv list, e.g. [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \
             \"mjpeg\", \"-o\", \"-\"]",
        )),
        Some(program) if program.trim().is_empty() => Err(invalid(
            "source.command",
            "the first element (the program to run) must not be empty",
        )),
        Some(_) => Ok(()),
    }
}

fn rotate_error(got: &str) -> ConfigError {
    invalid(
        "transform.rotate_degrees",
        format!("must be 0, 90, 180 or 270 (clockwise degrees; got {got})"),
    )
}

fn check_transform(t: &TransformConfig) -> Result<(), ConfigError> {
    if !ROTATIONS.contains(&t.rotate_degrees) {
        return Err(rotate_error(&t.rotate_degrees.to_string()));
    }
    Ok(())
}

fn check_encode(e: &EncodeConfig) -> Result<(), ConfigError> {
    check_int(
        "encode.max_message_bytes",
        e.max_message_bytes.get() as i128,
    )?;
    check_int("encode.quality_max", e.quality_max as i128)?;
    check_int("encode.quality_min", e.quality_min as i128)?;
    if e.quality_min > e.quality_max {
        return Err(invalid(
            "encode.quality_min",
            format!(
                "must not be greater than encode.quality_max (got quality_min = {}, quality_max \
                 = {})",
                e.quality_min, e.quality_max
            ),
        ));
    }
    check_int("encode.quality_step", e.quality_step.get() as i128)?;
    check_int("encode.downscale_percent", e.downscale_percent as i128)?;
    check_int("encode.min_side_px", e.min_side_px.get() as i128)?;
    check_int("encode.zstd_level", e.zstd_level as i128)
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

fn check_kafka(k: &KafkaConfig, e: &EncodeConfig) -> Result<(), ConfigError> {
    check_bootstrap(&k.bootstrap_servers)?;
    check_topic("kafka.topic", &k.topic)?;
    if let Some(error_topic) = &k.error_topic {
        check_topic("kafka.error_topic", error_topic)?;
        if error_topic == &k.topic {
            return Err(invalid(
                "kafka.error_topic",
                format!("must differ from kafka.topic (both are {error_topic:?})"),
            ));
        }
    }
    if let Some(p) = k.create_topic_partitions {
        check_int("kafka.create_topic_partitions", p.get() as i128)?;
    }
    check_int(
        "kafka.create_topic_replication",
        k.create_topic_replication.get() as i128,
    )?;
    check_int("kafka.max_in_flight", k.max_in_flight.get() as i128)?;
    check_int(
        "kafka.message_timeout_ms",
        k.message_timeout_ms.get() as i128,
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
            let budget = e.max_message_bytes.get();
            let ok = value
                .to_string()
                .parse::<u64>()
                .is_ok_and(|v| v >= u64::from(budget));
            if !ok {
                return Err(invalid(
                    &key,
                    format!(
                        "must be a number at least encode.max_message_bytes ({budget}), or \
                         records of that size are refused (got {value})"
                    ),
                ));
            }
        }
    }
    Ok(())
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

fn check_topic(key: &str, topic: &str) -> Result<(), ConfigError> {
    const ALLOWED: &str = "a Kafka topic name: 1 to 249 characters from A-Z a-z 0-9 . _ -, not \
                           \".\" or \"..\"";
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

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use super::*;
    use crate::config::{load, load_str, DEFAULT_MAX_MESSAGE_BYTES};

    const DEVICE: &str = "[device]\nid = \"cam-01\"\n";
    const SYNTHETIC: &str = "kind = \"synthetic\"";
    const KAFKA: &str = "bootstrap_servers = \"localhost:9092\"";

    /// A document with the given `[source]` and `[kafka]` bodies, then `extra` (more tables).
    fn doc(source: &str, kafka: &str, extra: &str) -> String {
        format!("{DEVICE}\n[source]\n{source}\n\n[kafka]\n{kafka}\n\n{extra}\n")
    }

    /// The minimal valid document plus `extra` tables.
    fn min_with(extra: &str) -> String {
        doc(SYNTHETIC, KAFKA, extra)
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One bad configuration and what its message must contain.
    struct Bad {
        name: &'static str,
        toml: String,
        env: Vec<(String, String)>,
        expect: &'static [&'static str],
    }

    fn bad(name: &'static str, toml: String, expect: &'static [&'static str]) -> Bad {
        Bad {
            name,
            toml,
            env: no_env(),
            expect,
        }
    }

    fn bad_env(
        name: &'static str,
        toml: String,
        vars: &[(&str, &str)],
        expect: &'static [&'static str],
    ) -> Bad {
        Bad {
            name,
            toml,
            env: env(vars),
            expect,
        }
    }

    fn bad_rows(dir: &Path) -> Vec<Bad> {
        let file = dir.join("clip.mjpeg");
        let file = file.display();
        let missing = dir.join("nope.mjpeg");
        let missing = missing.display();
        let d = dir.display();
        vec![
            // Syntax.
            bad(
                "malformed TOML",
                "[device\nid = \"x\"\n".into(),
                &["syntax error", "line 1"],
            ),
            bad(
                "malformed TOML later",
                min_with("[encode]\nquality_max = = 3"),
                &["syntax error", "line 11", "column 15"],
            ),
            bad(
                "duplicate key",
                min_with("[encode]\nquality_max = 3\nquality_max = 4"),
                &["syntax error", "line 12"],
            ),
            // Unknown keys.
            bad(
                "unknown top-level table",
                min_with("[camera]\nid = 1"),
                &["camera: unknown key", "line 10", "[device]", "[kafka]"],
            ),
            bad(
                "unknown key in [encode]",
                min_with("[encode]\nqualty_max = 50"),
                &["encode.qualty_max: unknown key", "line 11", "[encode]", "quality_max"],
            ),
            bad(
                "unknown key in [source]",
                doc("kind = \"synthetic\"\nfps_max = 3", KAFKA, ""),
                &["source.fps_max: unknown key", "loop", "max_frames"],
            ),
            bad(
                "keys are case-sensitive",
                min_with("[Encode]\nquality_max = 50"),
                &["Encode: unknown key"],
            ),
            bad(
                "key case in a table",
                min_with("[encode]\nQuality_Max = 50"),
                &["encode.Quality_Max: unknown key"],
            ),
            bad(
                "table given as a value",
                format!("encode = 5\n{}", min_with("")),
                &["encode: wrong type", "a table", "integer `5`"],
            ),
            // Types.
            bad(
                "string where a number belongs",
                min_with("[encode]\nquality_max = \"high\""),
                &["encode.quality_max: wrong type", "from 1 to 100", "\"high\""],
            ),
            bad(
                "string where a boolean belongs",
                min_with("[encode]\npassthrough = \"maybe\""),
                &["encode.passthrough: wrong type", "boolean", "\"maybe\""],
            ),
            bad(
                "array where a string belongs",
                "[device]\nid = [\"a\"]\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
                &["device.id: wrong type", "string"],
            ),
            bad(
                "unknown source kind",
                doc("kind = \"webcam\"", KAFKA, ""),
                &["source.kind", "\"webcam\"", "camera, mjpeg, images, synthetic"],
            ),
            bad(
                "unknown codec",
                min_with("[encode]\ncodec = \"webp\""),
                &["encode.codec", "\"webp\"", "jpeg, png, zstd"],
            ),
            bad(
                "unknown overflow policy",
                min_with("[pipeline]\noverflow = \"drop_all\""),
                &["pipeline.overflow", "drop_oldest, drop_newest, block"],
            ),
            bad(
                "unknown camera format",
                doc("kind = \"camera\"\nformat = \"h264\"", KAFKA, ""),
                &["source.format", "mjpeg, yuyv"],
            ),
            // Missing.
            bad(
                "missing device.id",
                format!("[device]\n[source]\n{SYNTHETIC}\n[kafka]\n{KAFKA}\n"),
                &["device.id: required key is missing", "EDGECAM_DEVICE__ID"],
            ),
            bad(
                "missing [device]",
                format!("[source]\n{SYNTHETIC}\n[kafka]\n{KAFKA}\n"),
                &["device: required key is missing"],
            ),
            bad(
                "missing [kafka]",
                format!("{DEVICE}[source]\n{SYNTHETIC}\n"),
                &["kafka: required key is missing", "bootstrap_servers"],
            ),
            bad(
                "missing kafka.bootstrap_servers",
                doc(SYNTHETIC, "topic = \"t\"", ""),
                &["kafka.bootstrap_servers: required key is missing"],
            ),
            bad(
                "missing source.kind",
                doc("fps = 3", KAFKA, ""),
                &["source.kind: required key is missing"],
            ),
            bad("empty file", String::new(), &["required key is missing"]),
            // device.id
            bad(
                "device id with a space",
                "[device]\nid = \"cam 01\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
                &["device.id", "A-Z a-z 0-9 . _ -", "' '"],
            ),
            bad(
                "device id with a slash",
                "[device]\nid = \"cam/01\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
                &["device.id", "'/'"],
            ),
            bad(
                "empty device id",
                "[device]\nid = \"\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
                &["device.id", "got 0 characters"],
            ),
            bad(
                "device id too long",
                format!(
                    "[device]\nid = \"{}\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n",
                    "a".repeat(129)
                ),
                &["device.id", "1 to 128", "got 129 characters"],
            ),
            // Sources.
            bad(
                "mjpeg with both path and command",
                doc(
                    &format!("kind = \"mjpeg\"\npath = \"{file}\"\ncommand = [\"cat\"]"),
                    KAFKA,
                    "",
                ),
                &["source.command", "source.path", "exclusive"],
            ),
            bad(
                "mjpeg with neither path nor command",
                doc("kind = \"mjpeg\"", KAFKA, ""),
                &["source.path", "source.command", "kind = \"mjpeg\" needs"],
            ),
            bad(
                "mjpeg with an empty command",
                doc("kind = \"mjpeg\"\ncommand = []", KAFKA, ""),
                &["source.command", "non-empty argv"],
            ),
            bad(
                "mjpeg with an empty program",
                doc("kind = \"mjpeg\"\ncommand = [\"\", \"-o\"]", KAFKA, ""),
                &["source.command", "must not be empty"],
            ),
            bad(
                "mjpeg file missing",
                doc(&format!("kind = \"mjpeg\"\npath = \"{missing}\""), KAFKA, ""),
                &["source.path", "nope.mjpeg", "does not exist"],
            ),
            bad(
                "mjpeg relative file missing",
                doc("kind = \"mjpeg\"\npath = \"no/such/clip.mjpeg\"", KAFKA, ""),
                &["source.path", "does not exist", "working directory"],
            ),
            bad(
                "mjpeg path is a directory",
                doc(&format!("kind = \"mjpeg\"\npath = \"{d}\""), KAFKA, ""),
                &["source.path", "is a directory", "kind = \"images\""],
            ),
            bad(
                "images directory missing",
                doc(&format!("kind = \"images\"\npath = \"{d}/nope\""), KAFKA, ""),
                &["source.path", "does not exist"],
            ),
            bad(
                "images path is a file",
                doc(&format!("kind = \"images\"\npath = \"{file}\""), KAFKA, ""),
                &["source.path", "is not a directory"],
            ),
            bad(
                "images without a path",
                doc("kind = \"images\"", KAFKA, ""),
                &["source.path", "kind = \"images\" needs"],
            ),
            bad(
                "images with a command",
                doc(&format!("kind = \"images\"\npath = \"{d}\"\ncommand = [\"cat\"]"), KAFKA, ""),
                &["source.command", "not used by kind = \"images\""],
            ),
            bad(
                "synthetic with a path",
                doc(&format!("kind = \"synthetic\"\npath = \"{file}\""), KAFKA, ""),
                &["source.path", "not used by kind = \"synthetic\""],
            ),
            bad(
                "camera with a command",
                doc("kind = \"camera\"\ncommand = [\"cat\"]", KAFKA, ""),
                &["source.command", "not used by kind = \"camera\""],
            ),
            bad(
                "negative fps",
                doc("kind = \"synthetic\"\nfps = -1", KAFKA, ""),
                &["source.fps", "from 0 to 1000", "got -1"],
            ),
            bad(
                "fps too high",
                doc("kind = \"synthetic\"\nfps = 1000.5", KAFKA, ""),
                &["source.fps", "got 1000.5"],
            ),
            bad(
                "fps not a number",
                doc("kind = \"synthetic\"\nfps = nan", KAFKA, ""),
                &["source.fps", "got NaN"],
            ),
            bad(
                "fps infinite",
                doc("kind = \"synthetic\"\nfps = inf", KAFKA, ""),
                &["source.fps", "got inf"],
            ),
            bad(
                "width 0",
                doc("kind = \"synthetic\"\nwidth = 0", KAFKA, ""),
                &["source.width: must be at least 1 (got 0)"],
            ),
            bad(
                "height too large",
                doc("kind = \"synthetic\"\nheight = 16385", KAFKA, ""),
                &["source.height: must be at most 16384 (got 16385)"],
            ),
            // Transform.
            bad(
                "rotate 45",
                min_with("[transform]\nrotate_degrees = 45"),
                &["transform.rotate_degrees", "0, 90, 180 or 270", "got 45"],
            ),
            bad(
                "rotate -90",
                min_with("[transform]\nrotate_degrees = -90"),
                &["transform.rotate_degrees", "got -90"],
            ),
            bad(
                "max_width 0",
                min_with("[transform]\nmax_width = 0"),
                &["transform.max_width: must be at least 1 (got 0)"],
            ),
            // Encode.
            bad(
                "budget 0",
                min_with("[encode]\nmax_message_bytes = 0"),
                &["encode.max_message_bytes: must be at least 4096 (got 0)"],
            ),
            bad(
                "budget 100",
                min_with("[encode]\nmax_message_bytes = 100"),
                &["encode.max_message_bytes: must be at least 4096 (got 100)"],
            ),
            bad(
                "budget negative",
                min_with("[encode]\nmax_message_bytes = -1"),
                &["encode.max_message_bytes: must be at least 4096 (got -1)"],
            ),
            bad(
                "budget too large",
                min_with("[encode]\nmax_message_bytes = 2000000000"),
                &["encode.max_message_bytes: must be at most 1000000000 (got 2000000000)"],
            ),
            bad(
                "budget beyond u32",
                min_with("[encode]\nmax_message_bytes = 5000000000"),
                &["encode.max_message_bytes: must be at most 1000000000 (got 5000000000)"],
            ),
            bad(
                "quality_min above quality_max",
                min_with("[encode]\nquality_min = 80\nquality_max = 50"),
                &["encode.quality_min", "encode.quality_max", "80", "50"],
            ),
            bad(
                "quality 101",
                min_with("[encode]\nquality_max = 101"),
                &["encode.quality_max: must be at most 100 (got 101)"],
            ),
            bad(
                "quality 300 (beyond u8)",
                min_with("[encode]\nquality_max = 300"),
                &["encode.quality_max: must be at most 100 (got 300)"],
            ),
            bad(
                "quality_min 0",
                min_with("[encode]\nquality_min = 0"),
                &["encode.quality_min: must be at least 1 (got 0)"],
            ),
            bad(
                "quality_step 0",
                min_with("[encode]\nquality_step = 0"),
                &["encode.quality_step: must be at least 1 (got 0)"],
            ),
            bad(
                "downscale 96",
                min_with("[encode]\ndownscale_percent = 96"),
                &["encode.downscale_percent: must be at most 95 (got 96)"],
            ),
            bad(
                "downscale 5",
                min_with("[encode]\ndownscale_percent = 5"),
                &["encode.downscale_percent: must be at least 10 (got 5)"],
            ),
            bad(
                "zstd level 0",
                min_with("[encode]\nzstd_level = 0"),
                &["encode.zstd_level: must be at least 1 (got 0)"],
            ),
            bad(
                "zstd level 23",
                min_with("[encode]\nzstd_level = 23"),
                &["encode.zstd_level: must be at most 22 (got 23)"],
            ),
            // Pipeline.
            bad(
                "shutdown grace too long",
                min_with("[pipeline]\nshutdown_grace_ms = 600001"),
                &["pipeline.shutdown_grace_ms: must be at most 600000 (got 600001)"],
            ),
            bad(
                "queue_frames 0",
                min_with("[pipeline]\nqueue_frames = 0"),
                &["pipeline.queue_frames: must be at least 1 (got 0)"],
            ),
            // Kafka.
            bad(
                "bootstrap without port",
                doc(SYNTHETIC, "bootstrap_servers = \"broker\"", ""),
                &["kafka.bootstrap_servers", "host:port", "\"broker\"", "no port"],
            ),
            bad(
                "bootstrap with a word for a port",
                doc(SYNTHETIC, "bootstrap_servers = \"a:9092,b:kafka\"", ""),
                &["kafka.bootstrap_servers", "\"b:kafka\""],
            ),
            bad(
                "bootstrap empty",
                doc(SYNTHETIC, "bootstrap_servers = \" \"", ""),
                &["kafka.bootstrap_servers", "empty"],
            ),
            bad(
                "bootstrap trailing comma",
                doc(SYNTHETIC, "bootstrap_servers = \"a:9092,\"", ""),
                &["kafka.bootstrap_servers", "an empty entry"],
            ),
            bad(
                "bootstrap without host",
                doc(SYNTHETIC, "bootstrap_servers = \":9092\"", ""),
                &["kafka.bootstrap_servers", "no host"],
            ),
            bad(
                "bad topic name",
                doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"frames/cam 1\""), ""),
                &["kafka.topic", "Kafka topic name", "'/'"],
            ),
            bad(
                "topic ..",
                doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"..\""), ""),
                &["kafka.topic", "not \".\" or \"..\""],
            ),
            bad(
                "topic too long",
                doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"{}\"", "t".repeat(250)), ""),
                &["kafka.topic", "got 250 characters"],
            ),
            bad(
                "bad error topic",
                doc(SYNTHETIC, &format!("{KAFKA}\nerror_topic = \"\""), ""),
                &["kafka.error_topic", "got 0 characters"],
            ),
            bad(
                "error topic equals topic",
                doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"t1\"\nerror_topic = \"t1\""), ""),
                &["kafka.error_topic", "must differ from kafka.topic"],
            ),
            bad(
                "max_in_flight too high",
                doc(SYNTHETIC, &format!("{KAFKA}\nmax_in_flight = 100001"), ""),
                &["kafka.max_in_flight: must be at most 100000 (got 100001)"],
            ),
            bad(
                "max_in_flight 0",
                doc(SYNTHETIC, &format!("{KAFKA}\nmax_in_flight = 0"), ""),
                &["kafka.max_in_flight: must be at least 1 (got 0)"],
            ),
            bad(
                "acks in properties",
                min_with("[kafka.properties]\nacks = \"1\""),
                &["kafka.properties.acks", "acks=all"],
            ),
            bad(
                "idempotence in properties",
                min_with("[kafka.properties]\n\"enable.idempotence\" = false"),
                &["kafka.properties.enable.idempotence", "idempotence on"],
            ),
            bad(
                "bootstrap.servers in properties",
                min_with("[kafka.properties]\n\"bootstrap.servers\" = \"b:9092\""),
                &["kafka.properties.bootstrap.servers", "kafka.bootstrap_servers"],
            ),
            bad(
                "message.timeout.ms in properties",
                min_with("[kafka.properties]\n\"message.timeout.ms\" = 5"),
                &["kafka.properties.message.timeout.ms", "kafka.message_timeout_ms"],
            ),
            bad(
                "message.max.bytes below the budget",
                min_with("[kafka.properties]\n\"message.max.bytes\" = 500000"),
                &["kafka.properties.message.max.bytes", "1000000", "got 500000"],
            ),
            bad(
                "unquoted dotted property name",
                min_with("[kafka.properties]\nlinger.ms = 5"),
                &["kafka.properties.linger", "quote", "\"linger.ms\" = 5"],
            ),
            bad(
                "float property",
                min_with("[kafka.properties]\n\"x.y\" = 0.5"),
                &["kafka.properties.x.y: wrong type", "float `0.5`"],
            ),
            bad(
                "partitions 0",
                doc(SYNTHETIC, &format!("{KAFKA}\ncreate_topic_partitions = 0"), ""),
                &["kafka.create_topic_partitions: must be at least 1 (got 0)"],
            ),
            // Environment.
            bad_env(
                "env override with a bad number",
                min_with(""),
                &[("EDGECAM_ENCODE__QUALITY_MAX", "abc")],
                &["encode.quality_max: wrong type", "\"abc\"", "EDGECAM_ENCODE__QUALITY_MAX"],
            ),
            bad_env(
                "env override out of range",
                min_with(""),
                &[("EDGECAM_ENCODE__MAX_MESSAGE_BYTES", "10")],
                &["encode.max_message_bytes: must be at least 4096 (got 10)", "EDGECAM_ENCODE__MAX_MESSAGE_BYTES"],
            ),
            bad_env(
                "env override with a bad topic",
                min_with(""),
                &[("EDGECAM_KAFKA__TOPIC", "bad topic")],
                &["kafka.topic", "' '", "EDGECAM_KAFKA__TOPIC"],
            ),
            bad_env(
                "env unknown key",
                min_with(""),
                &[("EDGECAM_KAFKA__TOPC", "x")],
                &["kafka.topc: unknown key", "EDGECAM_KAFKA__TOPC", "topic"],
            ),
            bad_env(
                "env unknown table",
                min_with(""),
                &[("EDGECAM_CAMERA__ID", "x")],
                &["camera: unknown key", "EDGECAM_CAMERA__ID", "[device]"],
            ),
            bad_env(
                "env single underscore between levels",
                min_with(""),
                &[("EDGECAM_KAFKA_TOPIC", "x")],
                &["EDGECAM_KAFKA_TOPIC", "did you mean EDGECAM_KAFKA__TOPIC"],
            ),
            bad_env(
                "env sub-key of a value",
                min_with(""),
                &[("EDGECAM_KAFKA__TOPIC__NAME", "x")],
                &["EDGECAM_KAFKA__TOPIC__NAME", "no sub-keys"],
            ),
            bad_env(
                "env acks property",
                min_with(""),
                &[("EDGECAM_KAFKA__PROPERTIES__ACKS", "1")],
                &["kafka.properties.acks", "EDGECAM_KAFKA__PROPERTIES__ACKS"],
            ),
            bad_env(
                "env properties without a name",
                min_with(""),
                &[("EDGECAM_KAFKA__PROPERTIES", "x")],
                &["EDGECAM_KAFKA__PROPERTIES", "one property per variable"],
            ),
            bad_env(
                "env source.command",
                doc("kind = \"mjpeg\"\ncommand = [\"cat\"]", KAFKA, ""),
                &[("EDGECAM_SOURCE__COMMAND", "cat x")],
                &["EDGECAM_SOURCE__COMMAND", "only be set in the file"],
            ),
            bad_env(
                "env unknown kind",
                min_with(""),
                &[("EDGECAM_SOURCE__KIND", "webcam")],
                &["source.kind", "\"webcam\""],
            ),
        ]
    }

    #[test]
    fn bad_configs_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clip.mjpeg"), b"\xff\xd8\xff\xd9").unwrap();
        let rows = bad_rows(dir.path());
        assert!(rows.len() >= 25, "{} rows", rows.len());
        let mut failures = Vec::new();
        for row in rows {
            match resolve(&row.toml, row.env.clone()) {
                Ok(_) => failures.push(format!("{}: accepted", row.name)),
                Err(e) => {
                    let msg = e.to_string();
                    for want in row.expect {
                        if !msg.contains(want) {
                            failures.push(format!("{}: {msg:?} lacks {want:?}", row.name));
                        }
                    }
                }
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn error_variants() {
        let e = resolve("[device\n", no_env()).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Syntax {
                    line: Some(1),
                    column: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = resolve(&min_with("[encode]\nfoo = 1"), no_env()).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key, allowed, .. }
                if key == "encode.foo" && allowed.iter().any(|a| a == "quality_max")),
            "{e:?}"
        );
        let e = resolve(&min_with("[encode]\nquality_max = \"x\""), no_env()).unwrap_err();
        assert!(matches!(&e, ConfigError::WrongType { key, .. } if key == "encode.quality_max"));
        let e = resolve(
            "[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"",
            no_env(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            ConfigError::Missing {
                key: "device".into()
            }
        );
        let e = resolve(&min_with("[encode]\nmax_message_bytes = 0"), no_env()).unwrap_err();
        assert_eq!(
            e,
            ConfigError::Invalid {
                key: "encode.max_message_bytes".into(),
                message: "must be at least 4096 (got 0)".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "encode.max_message_bytes: must be at least 4096 (got 0)"
        );
        let e = resolve(&min_with(""), env(&[("EDGECAM_KAFKA_TOPIC", "x")])).unwrap_err();
        assert!(matches!(&e, ConfigError::Env { name, .. } if name == "EDGECAM_KAFKA_TOPIC"));
    }

    #[test]
    fn unknown_key_message_lists_allowed_keys() {
        let e = resolve(&min_with("[encode]\nqualty_max = 50"), no_env()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "encode.qualty_max: unknown key (line 11); allowed keys in [encode]: codec, \
             max_message_bytes, quality_max, quality_min, quality_step, downscale_percent, \
             min_side_px, zstd_level, passthrough"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = resolve(&min_with(""), no_env()).unwrap();
        assert_eq!(c.device.id, "cam-01");
        assert_eq!(c.source.kind, SourceKind::Synthetic);
        assert_eq!(c.source.path, None);
        assert_eq!(c.source.command, None);
        assert_eq!(c.source.fps, 10.0);
        assert!(!c.source.loop_);
        assert_eq!(c.source.width.get(), 1280);
        assert_eq!(c.source.height.get(), 720);
        assert_eq!(c.source.device, "0");
        assert_eq!(c.source.format, CameraFormat::Mjpeg);
        assert_eq!(c.source.max_frames, 0);
        assert_eq!(c.transform, TransformConfig::default());
        assert_eq!(c.encode, EncodeConfig::default());
        assert_eq!(c.encode.max_message_bytes.get(), DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(c.pipeline, PipelineConfig::default());
        assert_eq!(c.kafka().bootstrap_servers, "localhost:9092");
        assert_eq!(c.kafka().topic, "edgecam.frames");
        assert_eq!(c.kafka().error_topic, None);
        assert_eq!(c.kafka().create_topic_partitions, None);
        assert_eq!(c.kafka().create_topic_replication.get(), 1);
        assert_eq!(c.kafka().max_in_flight, NonZeroUsize::new(32).unwrap());
        assert_eq!(c.kafka().message_timeout_ms.get(), 60_000);
        assert!(c.kafka().properties.is_empty());
    }

    #[test]
    fn integer_fps_is_accepted() {
        let c = resolve(&doc("kind = \"synthetic\"\nfps = 15", KAFKA, ""), no_env()).unwrap();
        assert_eq!(c.source.fps, 15.0);
    }

    #[test]
    fn env_overrides_apply() {
        let c = resolve(
            &min_with(""),
            env(&[
                ("EDGECAM_KAFKA__BOOTSTRAP_SERVERS", "b:9092"),
                ("EDGECAM_ENCODE__MAX_MESSAGE_BYTES", "500000"),
                ("EDGECAM_SOURCE__FPS", "2.5"),
                ("EDGECAM_ENCODE__PASSTHROUGH", "false"),
                ("EDGECAM_ENCODE__CODEC", "zstd"),
                ("EDGECAM_KAFKA__CREATE_TOPIC_PARTITIONS", "6"),
                ("edgecam_kafka__topic", "lower.case.works"),
                ("PATH", "/usr/bin"),
                ("EDGECAM_LOG", "debug"),
                ("EDGECAM", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka().bootstrap_servers, "b:9092");
        assert_eq!(
            c.encode.max_message_bytes,
            NonZeroU32::new(500_000).unwrap()
        );
        assert_eq!(c.source.fps, 2.5);
        assert!(!c.encode.passthrough);
        assert_eq!(c.encode.codec, Codec::Zstd);
        assert_eq!(c.kafka().create_topic_partitions, NonZeroU32::new(6));
        assert_eq!(c.kafka().topic, "lower.case.works");
    }

    #[test]
    fn env_supplies_a_missing_table() {
        let text = format!("{DEVICE}[source]\n{SYNTHETIC}\n");
        let c = resolve(
            &text,
            env(&[("EDGECAM_KAFKA__BOOTSTRAP_SERVERS", "k:9092")]),
        )
        .unwrap();
        assert_eq!(c.kafka().bootstrap_servers, "k:9092");
        assert_eq!(c.kafka().topic, "edgecam.frames");
    }

    #[test]
    fn env_strings_are_not_reparsed() {
        let c = resolve(
            &min_with(""),
            env(&[
                ("EDGECAM_DEVICE__ID", "0042"),
                ("EDGECAM_KAFKA__TOPIC", "1e3"),
                ("EDGECAM_SOURCE__DEVICE", "007"),
            ]),
        )
        .unwrap();
        assert_eq!(c.device.id, "0042");
        assert_eq!(c.kafka().topic, "1e3");
        assert_eq!(c.source.device, "007");
    }

    #[test]
    fn dotted_property_names_survive() {
        let text = min_with(
            "[kafka.properties]\n\"linger.ms\" = 5\n\"compression.type\" = \"lz4\"\n\
             \"enable.ssl.certificate.verification\" = false\n\"queue.buffering.max.kbytes\" = 1048576",
        );
        let c = resolve(&text, no_env()).unwrap();
        let p = &c.kafka().properties;
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p["linger.ms"], PropertyValue::Int(5));
        assert_eq!(p["compression.type"], PropertyValue::Text("lz4".into()));
        assert_eq!(
            p["enable.ssl.certificate.verification"],
            PropertyValue::Bool(false)
        );
        assert_eq!(p["queue.buffering.max.kbytes"].to_string(), "1048576");
    }

    #[test]
    fn env_properties_keep_dots_and_override_the_file() {
        let text =
            min_with("[kafka.properties]\n\"linger.ms\" = 5\n\"compression.type\" = \"lz4\"");
        let c = resolve(
            &text,
            env(&[
                ("EDGECAM_KAFKA__PROPERTIES__LINGER_MS", "20"),
                ("EDGECAM_KAFKA__PROPERTIES__CLIENT_ID", "cam-01"),
                ("EDGECAM_KAFKA__PROPERTIES__SOCKET_KEEPALIVE_ENABLE", "true"),
            ]),
        )
        .unwrap();
        let p = &c.kafka().properties;
        assert_eq!(p["linger.ms"], PropertyValue::Int(20));
        assert_eq!(p["compression.type"], PropertyValue::Text("lz4".into()));
        assert_eq!(p["client.id"], PropertyValue::Text("cam-01".into()));
        assert_eq!(p["socket.keepalive.enable"], PropertyValue::Bool(true));
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn message_max_bytes_at_least_the_budget_is_accepted() {
        let text = min_with("[kafka.properties]\n\"message.max.bytes\" = 1000000");
        assert!(resolve(&text, no_env()).is_ok());
    }

    #[test]
    fn good_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mjpeg");
        std::fs::write(&file, b"\xff\xd8\xff\xd9").unwrap();
        let text = doc(
            &format!(
                "kind = \"mjpeg\"\npath = \"{}\"\nloop = true",
                file.display()
            ),
            KAFKA,
            "",
        );
        let c = resolve(&text, no_env()).unwrap();
        assert_eq!(c.source.path.as_deref(), Some(file.as_path()));
        assert!(c.source.loop_);

        let text = doc(
            &format!("kind = \"images\"\npath = \"{}\"", dir.path().display()),
            KAFKA,
            "",
        );
        assert_eq!(
            resolve(&text, no_env()).unwrap().source.kind,
            SourceKind::Images
        );

        // Relative paths are checked against the base, and kept as written.
        let text = doc("kind = \"mjpeg\"\npath = \"clip.mjpeg\"", KAFKA, "");
        let c = resolve_with_base(&text, no_env(), Some(dir.path())).unwrap();
        assert_eq!(c.source.path.as_deref(), Some(Path::new("clip.mjpeg")));

        let text = doc(
            "kind = \"mjpeg\"\ncommand = [\"cat\", \"x.mjpeg\"]",
            KAFKA,
            "",
        );
        let c = resolve(&text, no_env()).unwrap();
        assert_eq!(c.source.command, Some(vec!["cat".into(), "x.mjpeg".into()]));
    }

    #[test]
    fn bootstrap_forms() {
        for servers in ["b:9092", "a:1, b:2,c:3", "[::1]:9092", "10.0.0.1:9093"] {
            let text = doc(SYNTHETIC, &format!("bootstrap_servers = \"{servers}\""), "");
            assert!(resolve(&text, no_env()).is_ok(), "{servers}");
        }
    }

    #[test]
    fn load_reports_unreadable_file() {
        let e = load(Path::new("/no/such/edgecam.toml"), no_env()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("/no/such/edgecam.toml"), "{e}");
    }

    fn example(name: &str) -> (PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    #[test]
    fn example_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (_, text) = example("edgecam.example.toml");
        let c = resolve_with_base(&text, no_env(), Some(root)).unwrap();
        assert_eq!(c.source.kind, SourceKind::Mjpeg);
        assert_eq!(
            c.source.path.as_deref(),
            Some(Path::new("tests/fixtures/vtest-10.mjpeg"))
        );
        assert_eq!(c.kafka().bootstrap_servers, "localhost:9092");
        assert_eq!(c.kafka().properties["linger.ms"], PropertyValue::Int(5));
        // The documented defaults are the real defaults.
        assert_eq!(c.encode, EncodeConfig::default());
        assert_eq!(c.pipeline, PipelineConfig::default());
        assert_eq!(c.transform, TransformConfig::default());

        let (path, _) = example("csi-camera.toml");
        let c = load(&path, no_env()).unwrap();
        assert_eq!(c.source.kind, SourceKind::Mjpeg);
        assert_eq!(c.source.command.as_ref().unwrap()[0], "rpicam-vid");
        assert_eq!(c.transform.rotate_degrees, 180);

        let (path, _) = example("usb-webcam.toml");
        let c = load(&path, no_env()).unwrap();
        assert_eq!(c.source.kind, SourceKind::Camera);
        assert_eq!(c.source.device, "/dev/video0");
        assert_eq!((c.source.width.get(), c.source.height.get()), (1280, 720));
        assert_eq!(c.source.fps, 15.0);
        assert_eq!(c.source.format, CameraFormat::Mjpeg);
    }

    /// Every key of every table appears in the example, set or as a commented-out line, in
    /// its own table.
    #[test]
    fn example_documents_every_key() {
        let (_, text) = example("edgecam.example.toml");
        let mut seen: Vec<String> = Vec::new();
        let mut table = String::new();
        for line in text.lines() {
            // Optional tables are shown commented out: `# [mqtt]`.
            let line = line.trim().trim_start_matches("# ");
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = name.to_string();
                seen.push(table.clone());
                continue;
            }
            let line = line.trim_start_matches('#').trim();
            if let Some((key, _)) = line.split_once(" = ") {
                if !key.contains(' ') {
                    seen.push(format!("{table}.{key}"));
                }
            }
        }
        for table in names_of::<Config>() {
            assert!(seen.iter().any(|s| s == table), "[{table}] missing");
            for field in table_fields(table).unwrap() {
                let key = format!("{table}.{field}");
                let present = seen.contains(&key);
                assert!(present, "{key} missing from the example");
            }
        }
        // Every key line is preceded by a comment.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with('#') && line.contains(" = ") {
                let prev = if i == 0 { "" } else { lines[i - 1] };
                assert!(
                    prev.starts_with('#') || prev.contains(" = "),
                    "line {}: {line:?} has no comment",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn load_str_is_resolve() {
        assert_eq!(
            load_str(&min_with(""), no_env()).unwrap(),
            resolve(&min_with(""), no_env()).unwrap()
        );
    }

    #[test]
    fn introspection_sees_the_structs() {
        let encode = names_of::<EncodeConfig>();
        assert!(encode.contains(&"max_message_bytes"), "{encode:?}");
        assert!(names_of::<SourceConfig>().contains(&"loop"));
        assert_eq!(
            names_of::<Config>(),
            [
                "device",
                "source",
                "transform",
                "encode",
                "pipeline",
                "sink",
                "kafka",
                "mqtt"
            ]
        );
        assert_eq!(
            names_of::<SourceKind>(),
            ["camera", "mjpeg", "images", "synthetic"]
        );
    }

    #[test]
    fn sink_and_mqtt_rules_name_the_key() {
        let base = "[device]\nid = \"cam\"\n[source]\nkind = \"synthetic\"\n";
        let mqtt = "[mqtt]\nhost = \"localhost\"\n";
        let cases = [
            (base.to_string(), "kafka: required key is missing"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n"), "mqtt: required key is missing"),
            (format!("{base}[sink]\nkind = \"nats\"\n{mqtt}"), "sink.kind"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}qos = 2\n"), "mqtt.qos"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}hots = 1\n"), "mqtt.hots"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}keep_alive_secs = 60\nsilence_timeout_secs = 60\n"), "mqtt.silence_timeout_secs"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}topic_template = \"cams/+/frame\"\n"), "mqtt.topic_template"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}password = \"x\"\n"), "mqtt.password"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n[mqtt]\nhost = \"\"\n"), "mqtt.host"),
            (format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}protocol = \"v4\"\n"), "mqtt.protocol"),
        ];
        for (text, needle) in cases {
            let err = resolve(&text, no_env()).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{needle:?} not in {err:?} for\n{text}"
            );
        }
        let ok = resolve(&format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}"), no_env()).unwrap();
        assert!(ok.kafka.is_none());
        let m = ok.mqtt.unwrap();
        assert_eq!(
            (m.port, m.qos, m.frame_topic("cam").as_str()),
            (1883, 1, "edgecam/cam/frame")
        );
    }
}
