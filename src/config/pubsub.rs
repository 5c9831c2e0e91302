//! `[pubsub]`: Google Cloud Pub/Sub as the sink (`sink.kind = "pubsub"`), through its REST
//! API (`POST https://pubsub.googleapis.com/v1/projects/P/topics/T:publish`).
//!
//! Authentication, in this order:
//! - `PUBSUB_EMULATOR_HOST=host:port` in the environment, as every Google client honours it:
//!   the emulator over plain HTTP, no credentials (`check-config` warns that it is in force);
//! - `credentials`: a service-account JSON key (a secret reference), which signs its own
//!   access token (a JWT, no token round trip);
//! - neither: the token of the machine's service account from the GCE metadata server.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::secret::Secret;
use super::types::{InFlight, TimeoutMs};

/// The environment variable that points every Google client at the emulator (`host:port`).
pub const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// Pub/Sub's production endpoint (`pubsub.endpoint`'s default).
pub const DEFAULT_ENDPOINT: &str = "https://pubsub.googleapis.com";

/// The largest `encode.max_message_bytes` a Pub/Sub sink takes: a publish request may carry
/// at most 10 MB, and base64 makes the image 4/3 as large in the JSON body, so about
/// 7.49 MB of image is the most one request can hold; 7,000,000 leaves room for the
/// attributes and the JSON around them.
pub const MAX_BUDGET_BYTES: u32 = 7_000_000;

/// `[pubsub]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PubsubConfig {
    /// Google Cloud project id, e.g. `my-project` (lower-case letters, digits, `-`; a
    /// domain-scoped `example.com:my-project` too). Required.
    pub project: String,
    /// Topic id within the project, e.g. `edgecam-frames`: 3–255 characters from letters,
    /// digits and `- _ . ~ + %`, starting with a letter, not with `goog`. Required.
    pub topic: String,
    /// Base URL of the Pub/Sub REST API. Default `https://pubsub.googleapis.com`; a regional
    /// endpoint (`https://europe-west1-pubsub.googleapis.com`) keeps ordered messages in one
    /// region. `PUBSUB_EMULATOR_HOST` overrides it with `http://<host:port>`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// A service-account JSON key (as downloaded from the console), by reference:
    /// `{ file = "/etc/edgecam/sa.json" }` or `{ credential = "pubsub-key" }`. Unset = the
    /// GCE metadata server's token (or no credentials with the emulator). Never printed.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// Create the topic at start when it does not exist (needs `pubsub.topics.create`).
    /// Default `false`: a missing topic is a start-up error.
    #[serde(default)]
    pub create_topic: bool,
    /// Messages published but not yet acknowledged by Pub/Sub (its `messageIds`), at most;
    /// the encoder waits when this many are outstanding. 1–1,000 (one request's limit).
    /// Default 100.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: InFlight,
    /// How long one publish request may take before it is abandoned and sent again,
    /// milliseconds. Default 30,000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: TimeoutMs,
    /// `PUBSUB_EMULATOR_HOST` when it was set at load time (from the environment, never the
    /// file): the emulator is used over plain HTTP without credentials.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub emulator_host: Option<String>,
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}
fn default_max_in_flight() -> InFlight {
    InFlight::new(100).expect("in range")
}
fn default_request_timeout_ms() -> TimeoutMs {
    TimeoutMs::new(30_000).expect("in range")
}

/// The parts of a service-account JSON key that edgecam uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccountKey {
    /// `"service_account"` for a service-account key.
    #[serde(rename = "type")]
    pub kind: String,
    /// The account, e.g. `edgecam@my-project.iam.gserviceaccount.com` (the JWT's issuer).
    pub client_email: String,
    /// The RSA private key, PEM (PKCS#8).
    pub private_key: String,
    /// The key's id (the JWT header's `kid`).
    #[serde(default)]
    pub private_key_id: Option<String>,
}

impl ServiceAccountKey {
    /// Parses and checks a key's JSON text. `key` names the configuration key in errors.
    ///
    /// Errors ([`ConfigError::Invalid`]): not JSON, not a service-account key (an OAuth
    /// client or user credentials file), or a private key that is not an RSA key in PEM.
    /// The messages never quote the key's text.
    pub fn parse(text: &str, key: &str) -> Result<ServiceAccountKey, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            invalid(
                key,
                format!(
                    "is not a service-account JSON key: not JSON (line {}, column {}); \
                     download one with `gcloud iam service-accounts keys create`",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        match value.get("type").and_then(|t| t.as_str()) {
            Some("service_account") => {}
            Some(other) => {
                return Err(invalid(
                    key,
                    format!(
                        "is a {other:?} credentials file, not a service-account key (\"type\": \
                         \"service_account\")"
                    ),
                ))
            }
            None => {
                return Err(invalid(
                    key,
                    "is not a service-account JSON key: no \"type\": \"service_account\"",
                ))
            }
        }
        // serde names a missing or mistyped field, never a value.
        let sa: ServiceAccountKey = serde_json::from_value(value)
            .map_err(|e| invalid(key, format!("is not a usable service-account key: {e}")))?;
        let pkey = openssl::pkey::PKey::private_key_from_pem(sa.private_key.as_bytes())
            .map_err(|_| invalid(key, "private_key is not a PEM private key"))?;
        if pkey.rsa().is_err() {
            return Err(invalid(
                key,
                "private_key is not an RSA key (RS256 needs one)",
            ));
        }
        Ok(sa)
    }
}

impl PubsubConfig {
    /// Resolves the credentials reference and reads `PUBSUB_EMULATOR_HOST` from `emulator`.
    pub(crate) fn resolve(
        &mut self,
        base: &Path,
        credentials: Option<&str>,
        emulator: Option<&str>,
    ) -> Result<(), ConfigError> {
        if let Some(c) = self.credentials.as_mut() {
            c.resolve("pubsub.credentials", base, credentials)?;
        }
        self.emulator_host = emulator
            .filter(|h| !h.trim().is_empty())
            .map(str::to_string);
        Ok(())
    }

    /// The rules that need no network: names, the endpoint, the key, the budget.
    pub(crate) fn check(&self, budget: u32) -> Result<(), ConfigError> {
        check_project(&self.project)?;
        check_topic(&self.topic)?;
        check_endpoint(&self.endpoint)?;
        if let Some(host) = &self.emulator_host {
            check_endpoint(&format!("http://{host}")).map_err(|_| ConfigError::Env {
                name: EMULATOR_ENV.into(),
                message: format!("must be host:port, got {host:?}"),
            })?;
        }
        if self.max_in_flight.get() > 1000 {
            return Err(invalid(
                "pubsub.max_in_flight",
                format!(
                    "must be at most 1000 (Pub/Sub's messages per publish request), got {}",
                    self.max_in_flight.get()
                ),
            ));
        }
        if let Some(c) = &self.credentials {
            ServiceAccountKey::parse(c.expose(), "pubsub.credentials")?;
        }
        if budget > MAX_BUDGET_BYTES {
            return Err(invalid(
                "encode.max_message_bytes",
                format!(
                    "must be at most {MAX_BUDGET_BYTES} with sink.kind = \"pubsub\" (a publish \
                     request carries at most 10 MB, base64 makes the image 4/3 larger), got \
                     {budget}"
                ),
            ));
        }
        Ok(())
    }

    /// The base URL requests go to: `http://<PUBSUB_EMULATOR_HOST>` when set, else
    /// `endpoint`, without a trailing `/`.
    pub fn base_url(&self) -> String {
        match &self.emulator_host {
            Some(h) => format!("http://{h}"),
            None => self.endpoint.trim_end_matches('/').to_string(),
        }
    }

    /// `projects/<project>/topics/<topic>`.
    pub fn topic_path(&self) -> String {
        format!("projects/{}/topics/{}", self.project, self.topic)
    }

    /// A warning for `check-config` when the emulator is in force.
    pub(crate) fn warning(&self) -> Option<String> {
        self.emulator_host.as_ref().map(|h| {
            format!(
                "{EMULATOR_ENV}={h} is set: Pub/Sub requests go to the emulator at http://{h}, \
                 without credentials (pubsub.endpoint and pubsub.credentials are not used)"
            )
        })
    }
}

/// Google's project id rule, loosely: 1–100 characters from `a-z 0-9 - . :` (domain-scoped
/// ids have `.` and `:`), starting with a letter.
fn check_project(p: &str) -> Result<(), ConfigError> {
    let ok = !p.is_empty()
        && p.len() <= 100
        && p.starts_with(|c: char| c.is_ascii_lowercase())
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "pubsub.project",
            format!(
                "must be a Google Cloud project id (lower-case letters, digits and '-', \
                 starting with a letter), got {p:?}"
            ),
        ))
    }
}

/// Pub/Sub's resource-name rule for a topic id (Google Cloud docs, "Resource names":
/// 3–255 characters, starts with a letter, letters, digits, `- _ . ~ + %`, not `goog…`).
fn check_topic(t: &str) -> Result<(), ConfigError> {
    let ok = (3..=255).contains(&t.len())
        && t.starts_with(|c: char| c.is_ascii_alphabetic())
        && !t.to_ascii_lowercase().starts_with("goog")
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "pubsub.topic",
            format!(
                "must be a topic id: 3-255 characters from letters, digits and - _ . ~ + %, \
                 starting with a letter and not with \"goog\", got {t:?}"
            ),
        ))
    }
}

/// `http://` or `https://`, a host, and no path, query or fragment.
fn check_endpoint(e: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| {
        invalid(
            "pubsub.endpoint",
            format!("must be a URL such as https://pubsub.googleapis.com: {why}, got {e:?}"),
        )
    };
    let uri: hyper::Uri = e.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => {
            return Err(bad(
                "the scheme must be https:// (or http:// for a local server)",
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("no path or query may follow the host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_googles_rules() {
        assert!(check_project("my-project-123").is_ok());
        assert!(check_project("example.com:cams").is_ok());
        for bad in ["", "My-Project", "1abc", "a b"] {
            assert!(check_project(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic("edgecam-frames").is_ok());
        assert!(check_topic("a.b_c~d+e%f").is_ok());
        for bad in ["ab", "1topic", "google-frames", "a/b", &"t".repeat(256)] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_endpoint_must_be_a_url_with_a_host_only() {
        for good in [
            "https://pubsub.googleapis.com",
            "https://europe-west1-pubsub.googleapis.com/",
            "http://127.0.0.1:8085",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "pubsub.googleapis.com",
            "ftp://x",
            "https://",
            "https://h/v1",
            "not a url",
        ] {
            let e = check_endpoint(bad).unwrap_err().to_string();
            assert!(e.contains("pubsub.endpoint"), "{e}");
        }
    }

    #[test]
    fn a_key_that_is_not_a_service_account_key_is_refused_without_quoting_it() {
        let user = r#"{"type": "authorized_user", "client_email": "x", "private_key": "s3cret"}"#;
        let e = ServiceAccountKey::parse(user, "pubsub.credentials")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("authorized_user") && !e.contains("s3cret"),
            "{e}"
        );
        let e = ServiceAccountKey::parse("not json s3cret", "pubsub.credentials")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON") && !e.contains("s3cret"), "{e}");
        let no_rsa = r#"{"type": "service_account", "client_email": "x", "private_key": "s3cret"}"#;
        let e = ServiceAccountKey::parse(no_rsa, "pubsub.credentials")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PEM") && !e.contains("s3cret"), "{e}");
    }
}
