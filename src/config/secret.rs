//! Secrets: given inline, or by reference to a file or a systemd credential, and never shown.
//!
//! Every secret-bearing key (`mqtt.password`, librdkafka properties such as `sasl.password`,
//! `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.config`, see [`is_secret_property`])
//! takes one of:
//!
//! ```toml
//! password = "hunter2"                              # inline (avoid: the file is readable)
//! password = { file = "/etc/edgecam/mqtt.pass" }    # the file's text, one trailing newline stripped
//! password = { credential = "mqtt-password" }       # $CREDENTIALS_DIRECTORY/mqtt-password
//!
//! [kafka.properties]
//! "sasl.password" = { credential = "kafka-password" }
//! ```
//!
//! `credential` reads what systemd's `LoadCredential=mqtt-password:/etc/edgecam/mqtt.pass`
//! provides: a file readable only by the service, never in its environment. A relative `file`
//! is relative to the configuration file's directory. From the environment:
//! `EDGECAM_MQTT__PASSWORD__FILE=/etc/edgecam/mqtt.pass`.
//!
//! A [`Secret`] prints as `<redacted>` (with where it came from) in `Debug`, in `Serialize`
//! (so in `edgecam check-config`) and everywhere else; only [`Secret::expose`] gives the text.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::{invalid, ConfigError};

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// Written in the configuration itself.
    Inline,
    /// `{ file = "…" }`: read from this file (absolute once resolved).
    File(PathBuf),
    /// `{ credential = "…" }`: read from `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

/// A secret value. Holds the text once the loader has resolved its reference.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: Option<String>,
    source: SecretSource,
}

impl Secret {
    /// An inline secret (tests, command-line options).
    pub fn inline(value: impl Into<String>) -> Secret {
        Secret {
            value: Some(value.into()),
            source: SecretSource::Inline,
        }
    }

    /// The secret's text. Empty for a reference that was never resolved (the loader always
    /// resolves them).
    pub fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }

    /// Where it came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// Reads a file or credential reference. `key` names the key in errors; `base` is the
    /// directory relative `file` paths are relative to; `credentials` is
    /// `$CREDENTIALS_DIRECTORY`.
    ///
    /// Errors ([`ConfigError::Invalid`] naming `key`): the file or credential does not exist,
    /// cannot be read, is empty, or `$CREDENTIALS_DIRECTORY` is not set.
    pub(crate) fn resolve(
        &mut self,
        key: &str,
        base: &Path,
        credentials: Option<&str>,
    ) -> Result<(), ConfigError> {
        let (path, what) = match &self.source {
            SecretSource::Inline => return Ok(()),
            SecretSource::File(p) => {
                let full = base.join(p);
                self.source = SecretSource::File(full.clone());
                (full, "secret file")
            }
            SecretSource::Credential(name) => {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(invalid(
                        key,
                        format!(
                            "credential name {name:?} must be a plain file name, as in \
                             LoadCredential={{name}}:/path"
                        ),
                    ));
                }
                let Some(dir) = credentials.filter(|d| !d.is_empty()) else {
                    return Err(invalid(
                        key,
                        format!(
                            "credential {name:?} needs $CREDENTIALS_DIRECTORY, which systemd \
                             sets for a unit with LoadCredential={name}:/path/to/file; it is \
                             not set (outside systemd, use {{ file = \"/path/to/file\" }})"
                        ),
                    ));
                };
                (Path::new(dir).join(name), "credential")
            }
        };
        let text = read_bounded(&path).map_err(|e| {
            let why = super::error::why_unreadable(&e);
            invalid(key, format!("{what} {} {why}", path.display()))
        })?;
        let mut text = String::from_utf8(text)
            .map_err(|_| invalid(key, format!("{what} {} is not UTF-8 text", path.display())))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(invalid(key, format!("{what} {} is empty", path.display())));
        }
        self.value = Some(text);
        Ok(())
    }

    fn shown(&self) -> String {
        match &self.source {
            SecretSource::Inline => "<redacted>".to_string(),
            SecretSource::File(p) => format!("<redacted: from file {}>", p.display()),
            SecretSource::Credential(n) => format!("<redacted: from credential {n}>"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

pub(crate) struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a string, { file = \"/path\" } or { credential = \"name\" } (a secret reference)",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::inline(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        let mut source = None;
        // A field identifier, so an unknown key is reported at its own path.
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            File,
            Credential,
        }
        while let Some(k) = map.next_key::<Key>()? {
            let s = match k {
                Key::File => SecretSource::File(PathBuf::from(map.next_value::<String>()?)),
                Key::Credential => SecretSource::Credential(map.next_value::<String>()?),
            };
            if source.replace(s).is_some() {
                return Err(de::Error::custom(
                    "a secret reference takes exactly one of file or credential",
                ));
            }
        }
        match source {
            Some(SecretSource::File(p)) if p.as_os_str().is_empty() => {
                Err(de::Error::custom("the secret file path must not be empty"))
            }
            Some(source) => Ok(Secret {
                value: None,
                source,
            }),
            None => Err(de::Error::custom(
                "a secret reference needs file = \"/path\" or credential = \"name\"",
            )),
        }
    }
}

/// `true` for librdkafka property names that carry a secret: any name containing
/// `password`, `secret` or `token`, plus `ssl.key.pem` and `sasl.oauthbearer.config`.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password")
        || n.contains("secret")
        || n.contains("token")
        || n == "ssl.key.pem"
        || n == "ssl_key"
        || n == "sasl.oauthbearer.config"
}

/// `true` for dotted config keys whose value is a secret (or part of a secret reference).
pub(crate) fn is_secret_key(key: &str) -> bool {
    if let Some(name) = key.strip_prefix("kafka.properties.") {
        return is_secret_property(name);
    }
    key.split('.').any(|level| level == "password")
}

/// Largest secret file read, bytes (1 MiB: a PEM key with its chain is a few KiB).
const MAX_SECRET_BYTES: u64 = 1 << 20;

/// Reads a secret file, refusing what is not a regular file (opening a FIFO blocks until a
/// writer comes; `/dev/zero` never ends) and anything over [`MAX_SECRET_BYTES`], so that a
/// mistyped path makes `check-config` fail instead of hang or run out of memory.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or socket)",
        ));
    }
    let mut text = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let s = Secret::inline("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.to_string().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_reference_strips_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "s3cret\n\n").unwrap();
        let mut s = Secret {
            value: None,
            source: SecretSource::File("p".into()),
        };
        s.resolve("mqtt.password", dir.path(), None).unwrap();
        assert_eq!(s.expose(), "s3cret\n");
        assert_eq!(s.source(), &SecretSource::File(dir.path().join("p")));
    }

    /// `password = { file = "/dev/zero" }` made the loader read until it ran out of memory
    /// (a hand-written input to the config_loader fuzz target; a FIFO made it hang).
    #[test]
    fn file_reference_to_a_device_or_a_huge_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        for (path, why) in [
            (PathBuf::from("/dev/zero"), "not a regular file"),
            (huge, "larger than 1048576 bytes"),
        ] {
            let mut s = Secret {
                value: None,
                source: SecretSource::File(path.clone()),
            };
            let e = s.resolve("mqtt.password", dir.path(), None).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("mqtt.password") && msg.contains(why),
                "{path:?}: {msg}"
            );
        }
        let fits = dir.path().join("fits");
        std::fs::write(&fits, vec![b'x'; MAX_SECRET_BYTES as usize]).unwrap();
        let mut s = Secret {
            value: None,
            source: SecretSource::File(fits),
        };
        s.resolve("mqtt.password", dir.path(), None).unwrap();
        assert_eq!(s.expose().len(), MAX_SECRET_BYTES as usize);
    }

    #[test]
    fn credential_needs_the_directory() {
        let mut s = Secret {
            value: None,
            source: SecretSource::Credential("mqtt".into()),
        };
        let e = s
            .resolve("mqtt.password", Path::new("/"), None)
            .unwrap_err();
        assert!(e.to_string().contains("CREDENTIALS_DIRECTORY"), "{e}");
    }

    #[test]
    fn secret_keys() {
        assert!(is_secret_key("mqtt.password"));
        assert!(is_secret_key("mqtt.password.file"));
        assert!(is_secret_key("kafka.properties.sasl.password"));
        assert!(is_secret_key("kafka.properties.sasl.oauthbearer.config"));
        assert!(!is_secret_key("kafka.properties.linger.ms"));
        assert!(!is_secret_key("mqtt.username"));
    }
}
