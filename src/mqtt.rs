//! What the MQTT sink, the bridge and the control plane share: client options from
//! `[mqtt]`, and the mapping between Kafka record headers and MQTT 5 properties.
//!
//! Headers travel 1:1: `content-type` becomes the MQTT 5 content-type property, every other
//! header a user property with the same name and value, so the bridge can rebuild the Kafka
//! record exactly.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;

use crate::config::MqttConfig;
use crate::record::header;

/// Room for the MQTT fixed header, topic and properties on top of the byte budget when
/// sizing the client's packet limit (rumqttc's default limit is 10 KiB, far too small for
/// frames).
pub const PACKET_OVERHEAD_BYTES: u32 = 64 * 1024;

/// The client id: `mqtt.client_id`, else `default`.
pub fn client_id(cfg: &MqttConfig, default: &str) -> String {
    cfg.client_id.clone().unwrap_or_else(|| default.to_string())
}

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

/// MQTT 5 options from `[mqtt]`: keep-alive, credentials, a persistent session
/// (`clean_start = false`, `session_expiry_secs`), and a packet limit of
/// `max_payload_bytes + PACKET_OVERHEAD_BYTES` both ways.
pub fn v5_options(
    cfg: &MqttConfig,
    client_id: &str,
    max_payload_bytes: u32,
) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(client_id, cfg.host.clone(), cfg.port.get());
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
    o
}

/// MQTT 3.1.1 options from `[mqtt]`, like [`v5_options`] (`clean_session = false`).
pub fn v311_options(
    cfg: &MqttConfig,
    client_id: &str,
    max_payload_bytes: u32,
) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, cfg.host.clone(), cfg.port.get());
    let limit = (max_payload_bytes.saturating_add(PACKET_OVERHEAD_BYTES)) as usize;
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs.get().into()))
        .set_clean_session(false)
        .set_max_packet_size(limit, limit)
        .set_inflight(cfg.max_in_flight.get());
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), password(cfg));
    }
    o
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
pub fn properties_to_headers(p: &PublishProperties) -> Vec<(String, String)> {
    let mut h = Vec::with_capacity(p.user_properties.len() + 1);
    if let Some(ct) = &p.content_type {
        h.push((header::CONTENT_TYPE.to_string(), ct.clone()));
    }
    h.extend(p.user_properties.iter().cloned());
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
        let mut a: Vec<_> = back.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut b = headers.to_vec();
        a.sort();
        b.sort();
        assert_eq!(a, b);
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
