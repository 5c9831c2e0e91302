//! Layering the file and the environment, then deserializing strictly.
//!
//! The `config` crate layers the TOML file and the `EDGECAM_…` variables into one tree: that is
//! what it does well, and its tree keeps each value's own kind (a TOML boolean stays a
//! boolean, an environment value stays text). Its *deserializer* is what coerces (`true` to
//! `1.0`, `1280.5` to `1281`), so it is not used: the tree is converted into a [`Node`] tree
//! that also knows where each value was written (file line and column from the TOML parser's
//! spans, or the variable's name), and [`Node`] is itself a serde `Deserializer` that converts
//! nothing silently:
//!
//! * file values must have the key's type (an integer key takes only a TOML integer, a number
//!   key an integer or a float, a string key only a string);
//! * environment values are text, parsed strictly as the key's type (`"5"` for an integer,
//!   `true`/`false` for a boolean, a TOML array for a list), and kept as text for strings.
//!
//! Errors are structured ([`DeError`]: wrong type, unknown field, unknown variant, missing
//! field, a rule's own message) and carry the key path and origin of the value they are about,
//! so no message text of any dependency is parsed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::Source;
use serde::de::{self, DeserializeSeed, Expected, IntoDeserializer, Unexpected, Visitor};
use toml::de::{DeTable, DeValue};

use super::env::{EnvOverrides, ENV_PREFIX};
use super::error::{ConfigError, Origin};
use super::types::{out_of_range, range_text};

/// One value of the layered configuration, with its dotted path and where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Dotted path: `encode.quality_max`, `bridge.inputs[0].topic`.
    pub path: String,
    /// Where the value was written (`None` for tables made only by layering).
    pub origin: Option<Origin>,
    /// The value.
    pub value: Value,
}

/// The kinds of value a [`Node`] holds.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Node>),
    /// Entries in file order (then environment-only entries).
    Table(Vec<(String, Node)>),
    /// Text from an environment variable, converted to the key's type on request.
    Env(String),
}

/// The layered document: the root table and the origin of every key.
pub(crate) struct Document {
    pub root: Node,
    origins: HashMap<String, Origin>,
}

impl Document {
    /// Where `key` (a dotted path) was written, if it was.
    pub fn origin_of(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }

    /// `true` when the document has a top-level entry `name` (from the file or environment).
    pub fn has_table(&self, name: &str) -> bool {
        match &self.root.value {
            Value::Table(entries) => entries.iter().any(|(k, _)| k == name),
            _ => false,
        }
    }

    /// Deserializes the whole document as `T`.
    pub fn deserialize<T: de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(&self.root).map_err(|e| e.into_config_error())
    }
}

/// Parses `text` (TOML; `file` names it in messages), layers `env` over it, and builds the
/// [`Document`].
///
/// Errors: [`ConfigError::Syntax`] with line and column; [`ConfigError::Kind`] when the
/// environment cannot be layered over the file.
pub(crate) fn layer(
    text: &str,
    file: Option<&Path>,
    env: &EnvOverrides,
) -> Result<Document, ConfigError> {
    let parsed = DeTable::parse(text).map_err(|e| syntax_error(text, &e))?;
    let mut offsets = HashMap::new();
    index_table(parsed.get_ref(), "", &mut offsets);

    let layered = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                // Without this the prefix separator defaults to `separator` (`EDGECAM__…`).
                .prefix_separator("_")
                .separator("__")
                // Environment values stay text; `Node` converts them to the key's type.
                .try_parsing(false)
                .source(Some(env.layered.clone())),
        )
        .build()
        .and_then(|c| c.collect())
        .map_err(|e| {
            ConfigError::Kind(format!(
                "cannot layer the EDGECAM_… environment over the file: {e}"
            ))
        })?;

    let mut b = Builder {
        file: file.map(Path::to_path_buf),
        offsets: &offsets,
        text,
        env,
        origins: HashMap::new(),
    };
    let mut root = b.table("", layered);
    for (name, value, var) in &env.properties {
        b.insert_property(&mut root, name, value, var);
    }
    Ok(Document {
        root,
        origins: b.origins,
    })
}

/// Byte offsets of every key (and array element) of the parsed file, by dotted path.
fn index_table(table: &DeTable<'_>, prefix: &str, out: &mut HashMap<String, usize>) {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        out.insert(path.clone(), key.span().start);
        index_value(value.get_ref(), &path, out);
    }
}

fn index_value(value: &DeValue<'_>, path: &str, out: &mut HashMap<String, usize>) {
    match value {
        DeValue::Table(t) => index_table(t, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.insert(p.clone(), item.span().start);
                index_value(item.get_ref(), &p, out);
            }
        }
        _ => {}
    }
}

/// `a` + `b` as a dotted path.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub(crate) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
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

/// Converts the `config` crate's tree into [`Node`]s, attaching origins.
struct Builder<'a> {
    file: Option<PathBuf>,
    offsets: &'a HashMap<String, usize>,
    text: &'a str,
    env: &'a EnvOverrides,
    origins: HashMap<String, Origin>,
}

impl Builder<'_> {
    fn origin(&mut self, path: &str, from_env: bool) -> Option<Origin> {
        let origin = if from_env {
            let var = self
                .env
                .by_key
                .get(&path.to_lowercase())
                .cloned()
                .unwrap_or_else(|| super::naming::var_name(path));
            Some(Origin::Env { var })
        } else if let Some(&at) = self.offsets.get(path) {
            let (line, column) = line_column(self.text, at);
            Some(Origin::File {
                file: self.file.clone(),
                line,
                column,
            })
        } else {
            // A table only the environment made: name the (first) variable under it.
            let prefix = format!("{}.", path.to_lowercase());
            self.env
                .by_key
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, var)| var)
                .min()
                .map(|var| Origin::Env { var: var.clone() })
        };
        if let Some(o) = &origin {
            self.origins.insert(path.to_string(), o.clone());
        }
        origin
    }

    fn table(&mut self, path: &str, map: config::Map<String, config::Value>) -> Node {
        let mut entries: Vec<(String, Node)> = map
            .into_iter()
            .map(|(k, v)| {
                let p = join(path, &k);
                (k, self.node(p, v))
            })
            .collect();
        // File order first (by offset), then what only the environment set, by name.
        entries.sort_by_key(|(k, _)| {
            (
                self.offsets
                    .get(&join(path, k))
                    .copied()
                    .unwrap_or(usize::MAX),
                k.clone(),
            )
        });
        let origin = if path.is_empty() {
            None
        } else {
            self.origin(path, false)
        };
        Node {
            path: path.to_string(),
            origin,
            value: Value::Table(entries),
        }
    }

    fn node(&mut self, path: String, v: config::Value) -> Node {
        let from_env = v.origin() == Some("the environment");
        let value = match v.kind {
            config::ValueKind::Table(map) => return self.table(&path, map),
            config::ValueKind::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.node(format!("{path}[{i}]"), item))
                    .collect(),
            ),
            config::ValueKind::String(s) if from_env => Value::Env(s),
            config::ValueKind::String(s) => Value::Str(s),
            config::ValueKind::Boolean(b) => Value::Bool(b),
            config::ValueKind::I64(i) => Value::Int(i),
            config::ValueKind::I128(i) => {
                i64::try_from(i).map_or(Value::Float(i as f64), Value::Int)
            }
            config::ValueKind::U64(u) => {
                i64::try_from(u).map_or(Value::Float(u as f64), Value::Int)
            }
            config::ValueKind::U128(u) => {
                i64::try_from(u).map_or(Value::Float(u as f64), Value::Int)
            }
            config::ValueKind::Float(f) => Value::Float(f),
            config::ValueKind::Nil => Value::Str(String::new()),
        };
        let origin = self.origin(&path, from_env);
        Node {
            path,
            origin,
            value,
        }
    }

    /// Sets `kafka.properties."<name>"` from an environment variable, making the tables as
    /// needed.
    fn insert_property(&mut self, root: &mut Node, name: &str, value: &str, var: &str) {
        let mut node = root;
        for (i, level) in ["kafka", "properties"].into_iter().enumerate() {
            let path = ["kafka", "kafka.properties"][i];
            let Value::Table(entries) = &mut node.value else {
                return;
            };
            let at = match entries.iter().position(|(k, _)| k == level) {
                Some(at) => at,
                None => {
                    entries.push((
                        level.to_string(),
                        Node {
                            path: path.to_string(),
                            origin: None,
                            value: Value::Table(Vec::new()),
                        },
                    ));
                    entries.len() - 1
                }
            };
            node = &mut entries[at].1;
        }
        let Value::Table(entries) = &mut node.value else {
            return;
        };
        let path = format!("kafka.properties.{name}");
        let origin = Origin::Env {
            var: var.to_string(),
        };
        self.origins.insert(path.clone(), origin.clone());
        let new = Node {
            path,
            origin: Some(origin),
            value: Value::Env(value.to_string()),
        };
        match entries.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = new,
            None => entries.push((name.to_string(), new)),
        }
    }
}

/// A deserialization error, structured, with the path and origin of its value.
#[derive(Debug)]
pub(crate) struct DeError {
    kind: DeErrorKind,
    path: Option<String>,
    origin: Option<Origin>,
}

#[derive(Debug)]
enum DeErrorKind {
    /// A rule's own message (newtypes, secrets): becomes [`ConfigError::Invalid`].
    Custom(String),
    WrongType {
        expected: String,
        found: String,
    },
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    MissingField(&'static str),
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(DeErrorKind::Custom(msg.to_string()))
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        DeError::new(DeErrorKind::WrongType {
            expected: exp.to_string(),
            found: describe_unexpected(&unexp),
        })
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        DeError::new(DeErrorKind::Custom(format!(
            "must be {exp} (got {})",
            describe_unexpected(&unexp)
        )))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(DeErrorKind::UnknownVariant {
            variant: variant.to_string(),
            expected,
        })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(DeErrorKind::UnknownField {
            field: field.to_string(),
            expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(DeErrorKind::MissingField(field))
    }
}

fn describe_unexpected(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Str(s) => format!("string {s:?}"),
        Unexpected::Signed(i) => format!("integer `{i}`"),
        Unexpected::Unsigned(i) => format!("integer `{i}`"),
        Unexpected::Float(f) => format!("float `{f}`"),
        Unexpected::Bool(b) => format!("boolean `{b}`"),
        Unexpected::Map => "a table".into(),
        Unexpected::Seq => "an array".into(),
        other => other.to_string(),
    }
}

impl DeError {
    fn new(kind: DeErrorKind) -> Self {
        DeError {
            kind,
            path: None,
            origin: None,
        }
    }

    /// Ties the error to `node` unless a deeper value already claimed it.
    fn at(mut self, node: &Node) -> Self {
        if self.path.is_none() {
            self.path = Some(node.path.clone());
            self.origin = node.origin.clone();
        }
        self
    }

    fn into_config_error(self) -> ConfigError {
        let path = self.path.unwrap_or_default();
        let key = if path.is_empty() {
            "(top level)".to_string()
        } else {
            path.clone()
        };
        match self.kind {
            DeErrorKind::Custom(message) => ConfigError::Invalid {
                key,
                message,
                origin: self.origin,
            },
            DeErrorKind::WrongType { expected, found } => ConfigError::WrongType {
                found: if super::secret::is_secret_key(&path) {
                    "<redacted>".into()
                } else {
                    found
                },
                key,
                expected,
                origin: self.origin,
            },
            DeErrorKind::UnknownField { field, expected } => {
                // The path is the unknown key's own (set where its name was read); at the
                // top level it is just the name.
                let key = if path.is_empty() { field } else { path };
                let top = !key.contains('.') && !key.contains('[');
                ConfigError::UnknownKey {
                    allowed: expected
                        .iter()
                        .map(|f| if top { format!("[{f}]") } else { f.to_string() })
                        .collect(),
                    key,
                    origin: self.origin,
                }
            }
            DeErrorKind::UnknownVariant { variant, expected } => ConfigError::Invalid {
                key,
                message: format!(
                    "unknown value {variant:?}; allowed: {}",
                    expected.join(", ")
                ),
                origin: self.origin,
            },
            DeErrorKind::MissingField(field) => ConfigError::Missing {
                key: join(&path, field),
                origin: self.origin,
            },
        }
    }
}

impl Node {
    fn describe(&self) -> String {
        match &self.value {
            Value::Str(s) => format!("string {s:?}"),
            Value::Env(s) => format!("{s:?}"),
            Value::Int(i) => format!("integer `{i}`"),
            Value::Float(f) => format!("float `{f}`"),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Array(_) => "an array".into(),
            Value::Table(_) => "a table".into(),
        }
    }

    fn wrong_type(&self, expected: impl Into<String>) -> DeError {
        DeError::new(DeErrorKind::WrongType {
            expected: expected.into(),
            found: self.describe(),
        })
        .at(self)
    }

    /// An integer for a key of range `lo..=hi`; `checked` = check the range here (primitive
    /// keys) rather than in the visitor (newtypes, which say their own range).
    fn integer<'de, V: Visitor<'de>>(
        &self,
        v: V,
        lo: i128,
        hi: i128,
        checked: bool,
    ) -> Result<V::Value, DeError> {
        let expected = if checked {
            format!("an integer {}", range_text(lo, hi))
        } else {
            (&v as &dyn Expected).to_string()
        };
        let n: i128 = match &self.value {
            Value::Int(i) => *i as i128,
            Value::Env(s) => match s.trim().parse::<i128>() {
                Ok(n) => n,
                Err(_) => return Err(self.wrong_type(expected)),
            },
            _ => return Err(self.wrong_type(expected)),
        };
        if let Some(m) = out_of_range(n, lo, hi).filter(|_| checked) {
            return Err(DeError::new(DeErrorKind::Custom(m)).at(self));
        }
        let r = if let Ok(i) = i64::try_from(n) {
            v.visit_i64(i)
        } else if let Ok(u) = u64::try_from(n) {
            v.visit_u64(u)
        } else {
            v.visit_i128(n)
        };
        r.map_err(|e: DeError| e.at(self))
    }

    /// A list given as text in an environment variable: a TOML array.
    fn env_array(&self, text: &str) -> Option<Node> {
        let doc: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
        let toml::Value::Array(items) = doc.get("v")? else {
            return None;
        };
        let items = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.node_from_toml(format!("{}[{i}]", self.path), item))
            .collect();
        Some(Node {
            path: self.path.clone(),
            origin: self.origin.clone(),
            value: Value::Array(items),
        })
    }

    fn node_from_toml(&self, path: String, v: &toml::Value) -> Node {
        let value = match v {
            toml::Value::String(s) => Value::Str(s.clone()),
            toml::Value::Integer(i) => Value::Int(*i),
            toml::Value::Float(f) => Value::Float(*f),
            toml::Value::Boolean(b) => Value::Bool(*b),
            toml::Value::Datetime(d) => Value::Str(d.to_string()),
            toml::Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node_from_toml(format!("{path}[{i}]"), item))
                    .collect(),
            ),
            toml::Value::Table(t) => Value::Table(
                t.iter()
                    .map(|(k, item)| (k.clone(), self.node_from_toml(join(&path, k), item)))
                    .collect(),
            ),
        };
        Node {
            path,
            origin: self.origin.clone(),
            value,
        }
    }
}

macro_rules! integer_methods {
    ($($method:ident: $t:ty),*) => {
        $(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
                self.integer(v, <$t>::MIN as i128, <$t>::MAX as i128, true)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for &Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.value {
            Value::Str(s) | Value::Env(s) => v.visit_str(s),
            Value::Int(i) => v.visit_i64(*i),
            Value::Float(f) => v.visit_f64(*f),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Array(items) => v.visit_seq(Items(items.iter())),
            Value::Table(entries) => v.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e: DeError| e.at(self))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let b = match &self.value {
            Value::Bool(b) => *b,
            Value::Env(s) if s == "true" => true,
            Value::Env(s) if s == "false" => false,
            _ => return Err(self.wrong_type("a boolean (true or false)")),
        };
        v.visit_bool(b).map_err(|e: DeError| e.at(self))
    }

    integer_methods!(
        deserialize_i8: i8, deserialize_i16: i16, deserialize_i32: i32,
        deserialize_u8: u8, deserialize_u16: u16, deserialize_u32: u32, deserialize_u64: u64
    );

    /// `i64` is what the bounded newtypes ask for: their visitor checks (and names) the range.
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.integer(v, i64::MIN as i128, i64::MAX as i128, false)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let f = match &self.value {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            Value::Env(s) => match s.trim().parse::<f64>() {
                Ok(f) => f,
                Err(_) => return Err(self.wrong_type("a number")),
            },
            _ => return Err(self.wrong_type("a number")),
        };
        v.visit_f64(f).map_err(|e: DeError| e.at(self))
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.value {
            Value::Str(s) | Value::Env(s) => v.visit_str(s).map_err(|e: DeError| e.at(self)),
            _ => Err(self.wrong_type((&v as &dyn Expected).to_string())),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        Err(self.wrong_type((&v as &dyn Expected).to_string()))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        Err(self.wrong_type((&v as &dyn Expected).to_string()))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        const EXPECTED: &str = "a list (in TOML: [\"a\", \"b\"])";
        match &self.value {
            Value::Array(items) => v
                .visit_seq(Items(items.iter()))
                .map_err(|e: DeError| e.at(self)),
            Value::Env(text) => match self.env_array(text) {
                Some(node) => node.deserialize_seq(v),
                None => Err(self.wrong_type(EXPECTED)),
            },
            _ => Err(self.wrong_type(EXPECTED)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.value {
            Value::Table(entries) => v
                .visit_map(Entries {
                    iter: entries.iter(),
                    value: None,
                })
                .map_err(|e: DeError| e.at(self)),
            _ => {
                let what = if self.path.contains('.') || self.path.is_empty() {
                    "a table".to_string()
                } else {
                    format!("a table ([{}])", self.path)
                };
                Err(self.wrong_type(what))
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.value {
            Value::Str(s) | Value::Env(s) => v
                .visit_enum(IntoDeserializer::<DeError>::into_deserializer(s.as_str()))
                .map_err(|e: DeError| e.at(self)),
            _ => Err(self.wrong_type(format!("one of: {}", variants.join(", ")))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
}

struct Items<'a>(std::slice::Iter<'a, Node>);

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next() {
            None => Ok(None),
            Some(node) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e: DeError| e.at(node)),
        }
    }
}

struct Entries<'a> {
    iter: std::slice::Iter<'a, (String, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, node)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(node);
        // An unknown key is reported with its own path and origin.
        seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(key.as_str()))
            .map(Some)
            .map_err(|e: DeError| e.at(node))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .expect("serde calls next_value_seed after next_key_seed");
        seed.deserialize(node).map_err(|e: DeError| e.at(node))
    }
}
