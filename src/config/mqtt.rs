//! `[mqtt]`: the broker, the frame topic, and the control plane. Shared by the agent (sink and
//! control plane) and the bridge; [`MqttConfig::check`] holds the rules once, with the few
//! that differ as a parameter.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

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
    /// Broker TCP port, 1–65535. Default 1883, or 8883 with `[mqtt.tls]` (the loader fills
    /// it in; read it with [`MqttConfig::port`]).
    #[serde(default)]
    pub port: Option<Port>,
    /// `[mqtt.tls]`: connect over TLS. Unset = plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTls>,
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

/// `[mqtt.tls]`: TLS to the broker, through the system's OpenSSL 3 (native-tls). The
/// broker's certificate is always verified, and so is its name against `mqtt.host` (a DNS
/// name or an IP address in the certificate's subjectAltName). TLS 1.2 or newer.
///
/// ```toml
/// [mqtt.tls]
/// ca_file = "/etc/edgecam/ca.pem"         # unset = the system's trust store
/// cert_file = "/etc/edgecam/client.pem"   # mutual TLS: client certificate (chain), PEM
/// key = { credential = "mqtt-key" }       # and its private key (a secret), PEM
/// alpn = ["x-amzn-mqtt-ca"]               # AWS IoT Core on port 443
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file of the CA certificate(s) the broker's certificate must chain to; with it,
    /// only these are trusted. Unset = the system's trust store (`/etc/ssl/certs`).
    /// Relative paths are relative to the configuration file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, optionally followed by its intermediates, for
    /// mutual TLS. Needs `key`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key, PEM (PKCS#8, RSA or EC): a secret, best
    /// `{ file = "…" }` or `{ credential = "…" }`. Needs `cert_file`.
    #[serde(default)]
    pub key: Option<Secret>,
    /// ALPN protocol names offered in the handshake, e.g. `["x-amzn-mqtt-ca"]` for AWS IoT
    /// Core on port 443. Default none.
    #[serde(default)]
    pub alpn: Vec<String>,
}

impl MqttTls {
    /// Makes `ca_file` and `cert_file` absolute against `base` and reads `key`.
    ///
    /// Errors: [`ConfigError::Invalid`] naming `mqtt.tls.key` when its file or credential
    /// cannot be read.
    pub(crate) fn resolve(
        &mut self,
        base: &Path,
        credentials: Option<&str>,
    ) -> Result<(), ConfigError> {
        for p in [&mut self.ca_file, &mut self.cert_file]
            .into_iter()
            .flatten()
        {
            *p = base.join(&*p);
        }
        if let Some(k) = self.key.as_mut() {
            k.resolve("mqtt.tls.key", base, credentials)?;
        }
        Ok(())
    }

    /// The TLS connector for these settings, reading the files now: what the MQTT sink, the
    /// control plane and the bridge connect with, and what the loader builds once to check
    /// the files.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the key: `cert_file` without `key` or the
    /// reverse; a file that cannot be read or holds no PEM certificate (key); a key that is
    /// not PEM or does not belong to the certificate; an empty ALPN name.
    pub fn connector(&self) -> Result<native_tls::TlsConnector, ConfigError> {
        use openssl::pkey::PKey;

        let mut b = native_tls::TlsConnector::builder();
        b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if let Some(path) = &self.ca_file {
            let certs = read_certs("mqtt.tls.ca_file", path)?;
            b.disable_built_in_roots(true);
            for c in certs {
                let der = c
                    .to_der()
                    .map_err(|e| invalid("mqtt.tls.ca_file", e.to_string()))?;
                let cert = native_tls::Certificate::from_der(&der)
                    .map_err(|e| invalid("mqtt.tls.ca_file", e.to_string()))?;
                b.add_root_certificate(cert);
            }
        }
        match (&self.cert_file, &self.key) {
            (None, None) => {}
            (Some(_), None) => return Err(invalid("mqtt.tls.cert_file", "needs mqtt.tls.key")),
            (None, Some(_)) => return Err(invalid("mqtt.tls.key", "needs mqtt.tls.cert_file")),
            (Some(path), Some(key)) => {
                let chain = read_certs("mqtt.tls.cert_file", path)?;
                let pkey = PKey::private_key_from_pem(key.expose().as_bytes()).map_err(|_| {
                    invalid(
                        "mqtt.tls.key",
                        format!("{key} is not a PEM private key (PKCS#8, RSA or EC)"),
                    )
                })?;
                let matches = chain[0]
                    .public_key()
                    .is_ok_and(|public| public.public_eq(&pkey));
                if !matches {
                    return Err(invalid(
                        "mqtt.tls.key",
                        format!(
                            "{key} is not the private key of the certificate in {}",
                            path.display()
                        ),
                    ));
                }
                // native-tls takes the key as PKCS#8 PEM and the chain as PEM.
                let pkcs8 = pkey
                    .private_key_to_pem_pkcs8()
                    .map_err(|e| invalid("mqtt.tls.key", e.to_string()))?;
                let mut pem = Vec::new();
                for c in &chain {
                    pem.extend(
                        c.to_pem()
                            .map_err(|e| invalid("mqtt.tls.cert_file", e.to_string()))?,
                    );
                }
                let identity = native_tls::Identity::from_pkcs8(&pem, &pkcs8)
                    .map_err(|e| invalid("mqtt.tls.key", e.to_string()))?;
                b.identity(identity);
            }
        }
        if self.alpn.iter().any(|a| a.is_empty() || a.len() > 255) {
            return Err(invalid(
                "mqtt.tls.alpn",
                "each ALPN protocol name must be 1 to 255 bytes",
            ));
        }
        if !self.alpn.is_empty() {
            let names: Vec<&str> = self.alpn.iter().map(String::as_str).collect();
            b.request_alpns(&names);
        }
        b.build()
            .map_err(|e| invalid("mqtt.tls", format!("cannot set up TLS: {e}")))
    }
}

/// The PEM certificates in `path`, at least one.
fn read_certs(key: &str, path: &Path) -> Result<Vec<openssl::x509::X509>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        let why = super::error::why_unreadable(&e);
        invalid(key, format!("{} {why}", path.display()))
    })?;
    match openssl::x509::X509::stack_from_pem(&bytes) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(invalid(
            key,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        )),
    }
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
    /// The client id: `mqtt.client_id`, else `default` (`edgecam-<device>`,
    /// `edgecam-bridge-<id>`).
    pub fn client_id_or(&self, default: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| default.to_string())
    }

    /// The broker port: `port`, else 8883 with TLS, else 1883.
    pub fn port(&self) -> u16 {
        match (self.port, &self.tls) {
            (Some(p), _) => p.get(),
            (None, Some(_)) => 8883,
            (None, None) => 1883,
        }
    }

    /// Fills in the default port and resolves the secrets and paths (`password`, `[mqtt.tls]`)
    /// against `base` (the configuration file's directory) and `$CREDENTIALS_DIRECTORY`.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the secret that cannot be read.
    pub(crate) fn resolve(
        &mut self,
        base: &Path,
        credentials: Option<&str>,
    ) -> Result<(), ConfigError> {
        self.port = Port::new(self.port());
        if let Some(p) = self.password.as_mut() {
            p.resolve("mqtt.password", base, credentials)?;
        }
        if let Some(t) = self.tls.as_mut() {
            t.resolve(base, credentials)?;
        }
        Ok(())
    }

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
