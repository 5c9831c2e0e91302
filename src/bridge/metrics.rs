//! Counters of one bridge, shared with whoever watches it (tests, the summary at exit), and
//! what `/metrics` and `/readyz` make of them ([`registry`], [`not_ready`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

// `/metrics`: the bridge's collector, on the encoding helpers of `http::prom`.
use crate::http::prom::{build_info, counter, counters_by, gauge, Res};

/// Why a message was not forwarded to `kafka.topic`. Every rejected message is counted under
/// one of these, dead-lettered (when `bridge.dead_letter_topic` is set) and acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// The whole Kafka record would exceed `bridge.max_message_bytes`. (Messages larger than
    /// the bridge's MQTT maximum packet size, `max_message_bytes` + 64 KiB, are discarded by
    /// the broker itself, as MQTT 5 requires, and never reach the bridge.)
    OverBudget,
    /// Zero-byte payload.
    EmptyPayload,
    /// A payload that is neither a JPEG (`FF D8`) nor a PNG.
    NotAnImage,
    /// A JPEG or PNG that is not whole: broken markers or chunks, a wrong CRC, truncated
    /// before its EOI or IEND; or a `zstd` frame whose size is not what its properties say.
    BadFrame,
    /// An image whose header declares more than `[limits]` allows (pixels or side), or a
    /// payload over `limits.max_frame_bytes`: refused before anything was allocated.
    FrameTooLarge,
    /// The topic matches no input pattern (e.g. a subscription left in the persistent session
    /// by an older configuration), or its `{device}` level is not a device id (empty, or
    /// characters outside `A-Z a-z 0-9 . _ -`).
    TopicMismatch,
    /// An `edgecam` input without a required property (`edgecam.device`, `edgecam.seq`,
    /// `edgecam.frame_id`, `edgecam.captured_at`, content type).
    MissingProperties,
    /// An `edgecam` input whose properties are malformed: `edgecam.device` differs from the
    /// topic's device, `edgecam.seq` not a number, `edgecam.frame_id` not a UUID.
    InvalidProperties,
    /// A topic that is not UTF-8. (Brokers and rumqttc reject invalid UTF-8 in topics and
    /// properties before the bridge sees it; counted if it ever gets through.)
    InvalidUtf8,
    /// Kafka refused the record permanently as malformed or too large for the cluster.
    DeliveryRejected,
    /// An upload's `{device}` path segment is not a device id (empty, longer than 128, or
    /// characters outside `A-Z a-z 0-9 . _ -`).
    InvalidDeviceId,
    /// A `multipart/form-data` upload that is malformed or has not exactly one `file` field.
    InvalidMultipart,
}

impl RejectReason {
    /// Name in logs, the summary and the `edgecam.reason` dead-letter header.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OverBudget => "over_budget",
            RejectReason::EmptyPayload => "empty_payload",
            RejectReason::NotAnImage => "not_an_image",
            RejectReason::BadFrame => "bad_frame",
            RejectReason::FrameTooLarge => "frame_too_large",
            RejectReason::TopicMismatch => "topic_mismatch",
            RejectReason::MissingProperties => "missing_properties",
            RejectReason::InvalidProperties => "invalid_properties",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::DeliveryRejected => "delivery_rejected",
            RejectReason::InvalidDeviceId => "invalid_device_id",
            RejectReason::InvalidMultipart => "invalid_multipart",
        }
    }
}

/// The bridge's counters. Counts are MQTT messages unless the name says otherwise.
#[derive(Debug, Default)]
pub struct BridgeMetrics {
    /// Messages taken from the broker (QoS 0 and 1; a redelivered message counts again).
    pub received: AtomicU64,
    /// Records Kafka confirmed in `kafka.topic` (MQTT messages and uploads).
    pub forwarded: AtomicU64,
    /// Bytes of those records (whole record, as [`crate::record::record_size`] counts).
    pub forwarded_bytes: AtomicU64,
    /// Records Kafka confirmed in `bridge.dead_letter_topic`.
    pub dead_lettered: AtomicU64,
    /// Rejected messages dropped without a dead letter (no dead-letter topic configured, or
    /// the dead letter itself was refused).
    pub discarded: AtomicU64,
    /// PUBACKs written to the broker connection (QoS 1 messages fully handled).
    pub acked: AtomicU64,
    /// Deliveries that failed and were sent again.
    pub delivery_retries: AtomicU64,
    /// Kafka producers replaced after a fatal error (see the agent's
    /// `Metrics::producer_restarts`).
    pub producer_restarts: AtomicU64,
    /// Successful MQTT connections (CONNACK received), including the first.
    pub connections: AtomicU64,
    /// Connections lost or dropped by the no-traffic watchdog.
    pub disconnects: AtomicU64,
    /// SUBACKs that granted every filter.
    pub subscribed: AtomicU64,
    /// Messages handled but not acknowledged because their connection had dropped (the
    /// broker sends them again).
    pub stale: AtomicU64,
    /// Messages taken from MQTT and not yet handled (gauge).
    pub in_flight: AtomicU64,
    /// `true` while connected to the MQTT broker (CONNACK received, not lost since).
    pub mqtt_up: std::sync::atomic::AtomicBool,
    /// Wall-clock time of the last record Kafka confirmed, ms since the Unix epoch (0 =
    /// none yet).
    pub last_forward_unix_ms: AtomicU64,
    /// Uploads whose image was decoded and re-encoded to fit `bridge.max_message_bytes`
    /// (counted once stored).
    pub uploads_fitted: AtomicU64,
    uploads: Mutex<BTreeMap<UploadOutcome, u64>>,
    rejected: Mutex<BTreeMap<RejectReason, u64>>,
    devices: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<String>>,
}

/// Devices counted by name in [`BridgeMetrics::devices`]; later ones count as `other`, so
/// a sensor fleet (or a hostile client inventing names) cannot grow `/metrics` without
/// bound.
pub const MAX_DEVICES: usize = 256;

/// How an upload (`POST /v1/frames/{device}`) ended, as counted in
/// [`BridgeMetrics::uploads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UploadOutcome {
    /// `201`: Kafka confirmed the record in `kafka.topic`.
    Stored,
    /// `4xx`: the upload cannot become a frame record (the reason is counted under
    /// [`RejectReason`] too, and dead-lettered when `bridge.dead_letter_topic` is set).
    Rejected,
    /// `401`: no bearer token, or the wrong one.
    Unauthorized,
    /// `413`: the body is over `bridge.http.max_body_bytes`.
    BodyTooLarge,
    /// `429`: the device is over `bridge.http.per_device_per_sec`.
    RateLimited,
    /// `503`: no delivery report within `bridge.http.timeout_ms` (Kafka down or slow, or
    /// every upload slot busy), or the bridge is stopping.
    Unavailable,
}

impl UploadOutcome {
    /// The `outcome` label value: `stored`, `rejected`, `unauthorized`, `body_too_large`,
    /// `rate_limited`, `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadOutcome::Stored => "stored",
            UploadOutcome::Rejected => "rejected",
            UploadOutcome::Unauthorized => "unauthorized",
            UploadOutcome::BodyTooLarge => "body_too_large",
            UploadOutcome::RateLimited => "rate_limited",
            UploadOutcome::Unavailable => "unavailable",
        }
    }
}

impl BridgeMetrics {
    /// Counts one finished upload.
    pub fn count_upload(&self, outcome: UploadOutcome) {
        *self.uploads.lock().unwrap().entry(outcome).or_default() += 1;
    }

    /// Uploads so far, by outcome.
    pub fn uploads(&self) -> BTreeMap<UploadOutcome, u64> {
        self.uploads.lock().unwrap().clone()
    }

    /// Uploads of one outcome.
    pub fn uploads_for(&self, outcome: UploadOutcome) -> u64 {
        self.uploads
            .lock()
            .unwrap()
            .get(&outcome)
            .copied()
            .unwrap_or(0)
    }

    /// Counts one rejected message.
    pub fn reject(&self, reason: RejectReason) {
        *self.rejected.lock().unwrap().entry(reason).or_default() += 1;
    }

    /// Counts one message from `device` (see [`MAX_DEVICES`]).
    pub fn count_device(&self, device: &str) {
        let mut d = self.devices.lock().unwrap();
        if let Some(n) = d.get_mut(device) {
            *n += 1;
        } else if d.len() < MAX_DEVICES {
            d.insert(device.to_string(), 1);
        } else {
            *d.entry("other".to_string()).or_default() += 1;
        }
    }

    /// Messages so far by device (at most [`MAX_DEVICES`] names plus `other`).
    pub fn devices(&self) -> BTreeMap<String, u64> {
        self.devices.lock().unwrap().clone()
    }

    /// Rejected messages so far, by reason.
    pub fn rejected(&self) -> BTreeMap<RejectReason, u64> {
        self.rejected.lock().unwrap().clone()
    }

    /// Rejected messages of one reason.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected
            .lock()
            .unwrap()
            .get(&reason)
            .copied()
            .unwrap_or(0)
    }

    /// Remembers the most recent error.
    pub fn set_last_error(&self, message: impl Into<String>) {
        *self.last_error.lock().unwrap() = Some(message.into());
    }

    /// The most recent error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }

    /// A plain-text multi-line summary for the end of `edgecam bridge`.
    pub fn summary(&self, elapsed_secs: f64) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let forwarded = self.forwarded.load(Relaxed);
        let bytes = self.forwarded_bytes.load(Relaxed);
        let _ = writeln!(
            s,
            "messages: received {} forwarded {} dead-lettered {} discarded {} acked {} \
             delivery retries {}",
            self.received.load(Relaxed),
            forwarded,
            self.dead_lettered.load(Relaxed),
            self.discarded.load(Relaxed),
            self.acked.load(Relaxed),
            self.delivery_retries.load(Relaxed),
        );
        for (reason, n) in self.rejected() {
            let _ = writeln!(s, "  rejected {}: {}", reason.as_str(), n);
        }
        let uploads = self.uploads();
        if !uploads.is_empty() {
            let by: Vec<String> = uploads
                .iter()
                .map(|(o, n)| format!("{} {n}", o.as_str()))
                .collect();
            let _ = writeln!(
                s,
                "uploads: {} ({} fitted to the budget)",
                by.join(", "),
                self.uploads_fitted.load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "mqtt: {} connections, {} disconnects, {} handled on a dropped connection",
            self.connections.load(Relaxed),
            self.disconnects.load(Relaxed),
            self.stale.load(Relaxed),
        );
        let secs = elapsed_secs.max(1e-9);
        let _ = write!(
            s,
            "throughput: {:.1} records/s, {:.2} MB/s over {:.2} s",
            forwarded as f64 / secs,
            bytes as f64 / secs / 1e6,
            elapsed_secs
        );
        s
    }
}

/// The bridge's Kafka sink counts retries and producer restarts here; forwarded and
/// dead-lettered records are counted by the bridge from the sink's acks, as it knows which
/// MQTT message each record stands for.
impl crate::sink::SinkMetrics for BridgeMetrics {
    fn retried(&self, error: &str) {
        self.set_last_error(format!("kafka: {error}"));
        self.delivery_retries.fetch_add(1, Relaxed);
    }

    fn producer_restarted(&self, why: &str) {
        self.set_last_error(format!("Kafka producer fatal error: {why}"));
        self.producer_restarts.fetch_add(1, Relaxed);
    }

    fn last_error(&self, error: String) {
        self.set_last_error(error);
    }
}

/// Why a bridge is not ready at `now_ms`: empty when it is. Ready means connected to the
/// MQTT broker, and Kafka either delivered within `within` or has nothing waiting.
pub fn not_ready(m: &BridgeMetrics, within: Duration, now_ms: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    if !m.mqtt_up.load(Relaxed) {
        reasons.push("mqtt: not connected to the broker".to_string());
    }
    let waiting = m.in_flight.load(Relaxed);
    let last = m.last_forward_unix_ms.load(Relaxed);
    if waiting > 0 && now_ms.saturating_sub(last) > within.as_millis() as u64 {
        reasons.push(format!(
            "kafka: {waiting} messages waiting, nothing delivered for {:.1} s",
            now_ms.saturating_sub(last) as f64 / 1000.0
        ));
    }
    reasons
}

/// The bridge's counters and gauges, read at scrape time.
#[derive(Debug)]
struct BridgeCollector(Arc<BridgeMetrics>);

impl Collector for BridgeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Res {
        let m = &self.0;
        let c = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        build_info(&mut e)?;
        counter(
            &mut e,
            "bridge_messages_received",
            "MQTT messages taken from the broker (a redelivered one counts again)",
            c(&m.received),
        )?;
        counter(
            &mut e,
            "bridge_records_forwarded",
            "Records Kafka confirmed in kafka.topic",
            c(&m.forwarded),
        )?;
        counter(
            &mut e,
            "bridge_forwarded_bytes",
            "Bytes of the forwarded records",
            c(&m.forwarded_bytes),
        )?;
        counter(
            &mut e,
            "bridge_records_dead_lettered",
            "Records Kafka confirmed in the dead-letter topic",
            c(&m.dead_lettered),
        )?;
        counter(
            &mut e,
            "bridge_messages_discarded",
            "Rejected messages dropped without a dead letter",
            c(&m.discarded),
        )?;
        let rejected = m.rejected();
        counters_by(
            &mut e,
            "bridge_messages_rejected",
            "Messages that could not become a frame record, by reason",
            "reason",
            rejected.iter().map(|(r, n)| (r.as_str(), *n)),
        )?;
        let uploads = m.uploads();
        counters_by(
            &mut e,
            "bridge_uploads",
            "HTTP uploads (POST /v1/frames/{device}) by outcome",
            "outcome",
            uploads.iter().map(|(o, n)| (o.as_str(), *n)),
        )?;
        counter(
            &mut e,
            "bridge_uploads_fitted",
            "Stored uploads that were re-encoded to fit bridge.max_message_bytes",
            c(&m.uploads_fitted),
        )?;
        counter(
            &mut e,
            "bridge_messages_acked",
            "PUBACKs sent (QoS 1 messages fully handled)",
            c(&m.acked),
        )?;
        counter(
            &mut e,
            "bridge_delivery_retries",
            "Kafka deliveries that failed and were sent again",
            c(&m.delivery_retries),
        )?;
        counter(
            &mut e,
            "bridge_producer_restarts",
            "Kafka producers recreated after a fatal error",
            c(&m.producer_restarts),
        )?;
        counter(
            &mut e,
            "bridge_mqtt_connections",
            "MQTT connections made",
            c(&m.connections),
        )?;
        counter(
            &mut e,
            "bridge_mqtt_disconnects",
            "MQTT connections lost",
            c(&m.disconnects),
        )?;
        gauge(
            &mut e,
            "bridge_in_flight_messages",
            "Messages taken from MQTT and not yet handled",
            c(&m.in_flight) as i64,
        )?;
        gauge(
            &mut e,
            "bridge_mqtt_up",
            "1 while connected to the MQTT broker",
            m.mqtt_up.load(Relaxed) as i64,
        )?;
        let devices = m.devices();
        counters_by(
            &mut e,
            "bridge_device_messages",
            "Messages received per device (the first 256 devices seen; the rest as \"other\")",
            "source_device",
            devices.iter().map(|(d, n)| (d.as_str(), *n)),
        )?;
        Ok(())
    }
}

/// The registry `/metrics` renders for a bridge, labelled `bridge`.
pub fn registry(bridge_id: &str, metrics: Arc<BridgeMetrics>) -> Registry {
    let mut root = Registry::with_prefix_and_labels(
        "edgecam",
        [(Cow::Borrowed("bridge"), Cow::Owned(bridge_id.to_string()))].into_iter(),
    );
    root.register_collector(Box::new(BridgeCollector(metrics)));
    root
}
