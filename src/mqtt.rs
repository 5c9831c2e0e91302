//! What the MQTT sink, the bridge and the control plane share: client options from
//! `[mqtt]`, and the mapping between Kafka record headers and MQTT 5 properties.
//!
//! Headers travel 1:1: `content-type` becomes the MQTT 5 content-type property, every other
//! header a user property with the same name and value, so the bridge can rebuild the Kafka
//! record exactly.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;

use crate::config::{ConfigError, MqttConfig};
use crate::record::header;

/// Room for the MQTT fixed header, topic and properties on top of the byte budget when
/// sizing the client's packet limit (rumqttc's default limit is 10 KiB, far too small for
/// frames).
pub const PACKET_OVERHEAD_BYTES: u32 = 64 * 1024;

/// rumqttc QoS for `mqtt.qos` (0 → at most once, anything else → at least once).
pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// The password to log in with (empty when none is set). Never log it.
fn password(cfg: &MqttConfig) -> String {
    cfg.password
        .as_ref()
        .map(|p| p.expose().to_string())
        .unwrap_or_default()
}

/// The transport for `[mqtt]`: TLS with `[mqtt.tls]`'s connector (files read now), else TCP.
///
/// Errors: [`ConfigError`] naming the `mqtt.tls` key whose file no longer reads (the loader
/// built the same connector at start, so this means a file changed since).
pub fn transport(cfg: &MqttConfig) -> Result<rumqttc::Transport, ConfigError> {
    Ok(match &cfg.tls {
        Some(tls) => rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::NativeConnector(tls.connector()?),
        ),
        None => rumqttc::Transport::tcp(),
    })
}

/// MQTT 5 options from `[mqtt]`: transport ([`transport`]), keep-alive, credentials, a
/// persistent session (`clean_start = false`, `session_expiry_secs`), and a packet limit of
/// `max_payload_bytes + PACKET_OVERHEAD_BYTES` both ways.
///
/// Errors: those of [`transport`].
pub fn v5_options(
    cfg: &MqttConfig,
    client_id: &str,
    max_payload_bytes: u32,
) -> Result<rumqttc::v5::MqttOptions, ConfigError> {
    let mut o = rumqttc::v5::MqttOptions::new(client_id, cfg.host.clone(), cfg.port());
    o.set_transport(transport(cfg)?);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs.get().into()))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(cfg.session_expiry_secs))
        .set_max_packet_size(Some(
            max_payload_bytes.saturating_add(PACKET_OVERHEAD_BYTES),
        ))
        .set_outgoing_inflight_upper_limit(cfg.max_in_flight.get());
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), password(cfg));
    }
    Ok(o)
}

/// MQTT 3.1.1 options from `[mqtt]`, like [`v5_options`] (`clean_session = false`).
///
/// Errors: those of [`transport`].
pub fn v311_options(
    cfg: &MqttConfig,
    client_id: &str,
    max_payload_bytes: u32,
) -> Result<rumqttc::MqttOptions, ConfigError> {
    let mut o = rumqttc::MqttOptions::new(client_id, cfg.host.clone(), cfg.port());
    o.set_transport(transport(cfg)?);
    let limit = (max_payload_bytes.saturating_add(PACKET_OVERHEAD_BYTES)) as usize;
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs.get().into()))
        .set_clean_session(false)
        .set_max_packet_size(limit, limit)
        .set_inflight(cfg.max_in_flight.get());
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), password(cfg));
    }
    Ok(o)
}

/// What a connection error most likely means, for the log: the TLS verification failures
/// (an unknown CA, an expired certificate, a name mismatch), a broker asking for a client
/// certificate, a plain-TCP port, refused credentials. `error` is the error's text as
/// rumqttc prints it (OpenSSL's reason included). `None` when there is nothing to add.
pub fn explain(error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    let hint = if e.contains("certificate has expired") {
        "the broker's certificate has expired (or this machine's clock is wrong)"
    } else if e.contains("certificate is not yet valid") {
        "the broker's certificate is not valid yet (is this machine's clock right?)"
    } else if e.contains("hostname mismatch") || e.contains("ip address mismatch") {
        "the broker's certificate does not name mqtt.host"
    } else if e.contains("certificate verify failed") {
        "the broker's certificate is not signed by a CA in mqtt.tls.ca_file (or, without it, \
         the system's trust store)"
    } else if e.contains("certificate required") || e.contains("handshake failure") {
        "the broker refused the handshake: it may want a client certificate \
         (mqtt.tls.cert_file and mqtt.tls.key) or one it trusts"
    } else if e.contains("unknown ca") || e.contains("bad certificate") {
        "the broker does not trust the client certificate (mqtt.tls.cert_file)"
    } else if e.contains("wrong version number") || e.contains("packet length too long") {
        "the port does not speak TLS: check mqtt.port, or remove [mqtt.tls] for plain MQTT"
    } else if e.contains("badusernamepassword") || e.contains("notauthorized") {
        "the broker refused the login: check mqtt.username and mqtt.password"
    } else {
        return None;
    };
    Some(hint)
}

/// Logs the errors of one MQTT connection that keeps failing: the first occurrence of an
/// error at WARN with its [`explain`]ation, identical repeats at DEBUG, with a WARN reminder
/// (and the number of repeats) every [`ErrorLog::REMIND`] (see [`crate::repeats`]).
#[derive(Debug)]
pub struct ErrorLog(crate::repeats::Repeats);

impl Default for ErrorLog {
    fn default() -> Self {
        ErrorLog(crate::repeats::Repeats::new(Self::REMIND))
    }
}

impl ErrorLog {
    /// How often a repeating error is logged at WARN again.
    pub const REMIND: Duration = Duration::from_secs(300);

    /// Logs `error` (`what` says what failed, e.g. "MQTT connection lost"; `retry_in` the
    /// back-off before the next attempt).
    pub fn log(&mut self, what: &str, error: &str, retry_in: Duration) {
        let retry_in_ms = retry_in.as_millis() as u64;
        match self.0.note(error, std::time::Instant::now()) {
            Some(repeats) => {
                let hint = explain(error).unwrap_or("");
                tracing::warn!(error, hint, retry_in_ms, repeats, "{what}");
            }
            None => tracing::debug!(error, retry_in_ms, "{what}"),
        }
    }

    /// The connection works again: the next error is logged at WARN whatever it is.
    pub fn reset(&mut self) {
        self.0.clear();
    }
}

/// MQTT 5 publish properties carrying `headers`: `content-type` as the content-type
/// property, the rest as user properties in order; `expiry_secs` as the message expiry.
pub fn headers_to_properties<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    expiry_secs: Option<u32>,
) -> PublishProperties {
    let mut p = PublishProperties {
        message_expiry_interval: expiry_secs,
        ..Default::default()
    };
    for (k, v) in headers {
        if k == header::CONTENT_TYPE {
            p.content_type = Some(v.to_string());
        } else {
            p.user_properties.push((k.to_string(), v.to_string()));
        }
    }
    p
}

/// The inverse of [`headers_to_properties`]: `(name, value)` pairs, content type first.
/// Names edgecam writes come back as their `&'static str` ([`header::intern`]), others
/// owned.
pub fn properties_to_headers(p: &PublishProperties) -> Vec<(crate::record::HeaderName, String)> {
    let mut h = Vec::with_capacity(p.user_properties.len() + 1);
    if let Some(ct) = &p.content_type {
        h.push((header::CONTENT_TYPE.into(), ct.clone()));
    }
    h.extend(p.user_properties.iter().map(|(k, v)| {
        let name = match header::intern(k.as_bytes()) {
            Some(known) => known.into(),
            None => k.clone().into(),
        };
        (name, v.clone())
    }));
    h
}

/// Topics of one device's control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlTopics {
    /// `<prefix>/<device>/status`: retained `online` / `offline` (also the last will).
    pub status: String,
    /// `<prefix>/<device>/state`: retained JSON.
    pub state: String,
    /// `<prefix>/<device>/set/+`: commands, one per name.
    pub set_filter: String,
    /// `<prefix>/<device>/set/`: prefix of a command topic.
    pub set_prefix: String,
}

/// The control topics of `device` under `mqtt.control_prefix`.
pub fn control_topics(cfg: &MqttConfig, device: &str) -> ControlTopics {
    let base = format!("{}/{device}", cfg.control_prefix);
    ControlTopics {
        status: format!("{base}/status"),
        state: format!("{base}/state"),
        set_filter: format!("{base}/set/+"),
        set_prefix: format!("{base}/set/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_properties() {
        let headers = [
            ("edgecam.device", "cam"),
            ("edgecam.seq", "7"),
            ("content-type", "image/jpeg"),
            ("edgecam.width", "768"),
        ];
        let p = headers_to_properties(headers.iter().copied(), Some(30));
        assert_eq!(p.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(p.message_expiry_interval, Some(30));
        assert_eq!(p.user_properties.len(), 3);
        let back = properties_to_headers(&p);
        let mut a: Vec<_> = back.iter().map(|(k, v)| (k.as_ref(), v.as_str())).collect();
        let mut b = headers.to_vec();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn tls_and_login_failures_are_explained() {
        let unknown_ca = "TLS: Native TLS error error:0A000086:SSL routines:\
            tls_post_process_server_certificate:certificate verify failed:\
            ../ssl/statem/statem_clnt.c:1889: (unable to get local issuer certificate)";
        assert!(explain(unknown_ca).unwrap().contains("mqtt.tls.ca_file"));
        let expired =
            "error:0A000086:SSL routines::certificate verify failed: (certificate has expired)";
        assert!(explain(expired).unwrap().contains("expired"));
        let refused = "Connection refused, return code: `BadUserNamePassword`";
        assert!(explain(refused).unwrap().contains("mqtt.password"));
        assert_eq!(explain("I/O: Connection refused (os error 111)"), None);
    }

    #[test]
    fn control_topics_follow_the_prefix() {
        let cfg: MqttConfig = toml::from_str("host = \"h\"\ncontrol_prefix = \"site/a\"").unwrap();
        let t = control_topics(&cfg, "cam-1");
        assert_eq!(t.status, "site/a/cam-1/status");
        assert_eq!(t.state, "site/a/cam-1/state");
        assert_eq!(t.set_filter, "site/a/cam-1/set/+");
    }
}
