//! Where frames go: Kafka ([`kafka`]) or an MQTT broker ([`mqtt`]), behind one seam.
//!
//! The seam is closed: the pipeline and `main` know only [`Sink`], the envelope types here
//! ([`Outgoing`] in, [`Ack`] per record out, [`SinkReport`] at the end), [`open`] and
//! [`max_record_bytes`]. A new backend is one module here, one variant of
//! [`SinkConfig`] with its table, and the arms the compiler then asks for (no `match` on
//! the kind has a `_ =>` arm).

pub mod kafka;
pub mod mqtt;
pub mod pubsub;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::SinkConfig;
use crate::control::Live;
use crate::metrics::Metrics;
use crate::record::FrameRecord;

/// What happened to the records a sink was given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// Records delivered, by destination topic.
    pub delivered: BTreeMap<String, u64>,
    /// Records still undelivered when the grace period ended.
    pub undelivered: u64,
}

/// Why a sink could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The Kafka producer could not be created or a topic not ensured
    /// (`kafka.create_topic_partitions`).
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSinkError),
    /// The MQTT client could not be set up: a `[mqtt.tls]` file changed since the
    /// configuration was loaded.
    #[error("mqtt: {0}")]
    Mqtt(#[from] crate::config::ConfigError),
    /// The Pub/Sub topic does not exist (and `pubsub.create_topic` is off) or cannot be
    /// created, or the HTTP client cannot be set up.
    #[error(transparent)]
    Pubsub(#[from] pubsub::PubsubError),
}

/// Opens the sink `cfg` names for the agent of `live` (its device id, and the control plane
/// an MQTT sink carries on its own connection). `budget` is `encode.max_message_bytes`,
/// which sizes the client's largest record. Kafka: creates the topics first when
/// `kafka.create_topic_partitions` is set.
///
/// Errors: [`OpenError`]; nothing is left open on error.
pub async fn open(
    cfg: &SinkConfig,
    budget: u32,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
) -> Result<Box<dyn Sink>, OpenError> {
    match cfg {
        SinkConfig::Kafka(k) => {
            if let Some(p) = k.create_topic_partitions {
                let mut topics = vec![k.topic.as_str()];
                if let Some(t) = &k.error_topic {
                    topics.push(t);
                }
                kafka::ensure_topics(
                    &k.producer_config(budget),
                    &topics,
                    p.get() as i32,
                    k.create_topic_replication.get() as i32,
                )
                .await?;
            }
            Ok(Box::new(kafka::KafkaSink::new(k, budget, metrics)?))
        }
        SinkConfig::Mqtt(m) => {
            let device = live.config.borrow().device.id.clone();
            Ok(Box::new(
                mqtt::MqttSink::new(m, &device, budget, metrics)?.with_control(live),
            ))
        }
        SinkConfig::Pubsub(p) => Ok(Box::new(pubsub::PubsubSink::open(p, metrics).await?)),
    }
}

/// The largest record, in bytes, that the sink `cfg` opened with `budget` takes: Kafka's
/// producer `message.max.bytes` ([`kafka::producer_max_bytes`]), or the MQTT client's
/// packet limit (sized from the budget). A budget raised above it by SIGHUP needs a restart.
pub fn max_record_bytes(cfg: &SinkConfig, budget: u32) -> u32 {
    match cfg {
        SinkConfig::Kafka(k) => kafka::producer_max_bytes(k, budget),
        SinkConfig::Mqtt(_) => budget,
        SinkConfig::Pubsub(_) => budget.min(crate::config::pubsub::MAX_BUDGET_BYTES),
    }
}

/// Which topic a record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `kafka.topic`: a frame.
    Frames,
    /// The agent's `kafka.error_topic` (a small JSON report about a frame that could not be
    /// published) or the bridge's `bridge.dead_letter_topic` (a message it could not
    /// forward).
    Errors,
}

/// A record on its way to the sink, with what the sink needs for metrics.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Which topic.
    pub destination: Destination,
    /// The record.
    pub record: FrameRecord,
    /// When the frame was captured (for capture-to-delivery latency).
    pub captured_at: std::time::SystemTime,
    /// The forwarder's handle for this record, echoed in its [`Ack`] (0 when untracked).
    pub ticket: u64,
}

/// Where Kafka stored a delivered record, from its delivery report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The partition (0-based).
    pub partition: i32,
    /// The record's offset in that partition.
    pub offset: i64,
}

/// What became of one record a sink was given, by [`Outgoing::ticket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The broker acknowledged it (Kafka delivery report, MQTT PUBACK, or sent at QoS 0),
    /// with where Kafka stored it (`None` from the MQTT sink, which has no such thing).
    Delivered(u64, Option<Position>),
    /// It can never be delivered: the broker or client refused the record itself (too
    /// large, malformed) or it has no destination. The text says why (the broker's or
    /// client's error), for logs and the bridge's dead letter. The sink has counted it
    /// through [`SinkMetrics::rejected`].
    Rejected(u64, String),
}

impl Ack {
    /// The record's [`Outgoing::ticket`].
    pub fn ticket(&self) -> u64 {
        match self {
            Ack::Delivered(t, _) | Ack::Rejected(t, _) => *t,
        }
    }
}

/// What a sink counts, so one sink serves the agent ([`crate::metrics::Metrics`]) and the
/// bridge ([`crate::bridge::BridgeMetrics`]) alike. Methods default to counting nothing.
pub trait SinkMetrics: Send + Sync {
    /// `out` was delivered.
    fn delivered(&self, _out: &Outgoing) {}
    /// `out` was refused for good (see [`Ack::Rejected`]).
    fn rejected(&self, _out: &Outgoing) {}
    /// A delivery failed with `error` and the record is sent again.
    fn retried(&self, _error: &str) {}
    /// The producer failed fatally (`why`) and was recreated.
    fn producer_restarted(&self, _why: &str) {}
    /// The most recent error, for status lines.
    fn last_error(&self, _error: String) {}
    /// `n` records were still undelivered when the grace period ended, with no spool to
    /// keep them.
    fn undelivered_at_shutdown(&self, _n: u64) {}
}

impl SinkMetrics for crate::metrics::Metrics {
    fn delivered(&self, out: &Outgoing) {
        match out.destination {
            Destination::Frames => count_delivered(out, self),
            Destination::Errors => {
                self.error_records
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn rejected(&self, _out: &Outgoing) {
        self.drop_frame(crate::metrics::DropReason::DeliveryRejected);
    }

    fn retried(&self, error: &str) {
        self.set_last_error(format!("delivery failed: {error}"));
        self.delivery_retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn producer_restarted(&self, why: &str) {
        self.set_last_error(format!("Kafka producer fatal error: {why}"));
        self.producer_restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn last_error(&self, error: String) {
        self.set_last_error(error);
    }

    fn undelivered_at_shutdown(&self, n: u64) {
        self.drop_frames(crate::metrics::DropReason::UndeliveredAtShutdown, n);
    }
}

/// Where a sink reports each record's [`Ack`]; a default `AckTx` reports nowhere.
#[derive(Debug, Clone, Default)]
pub struct AckTx(Option<tokio::sync::mpsc::UnboundedSender<Ack>>);

impl AckTx {
    /// Reports to `tx`.
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Ack>) -> Self {
        AckTx(Some(tx))
    }

    /// `true` when someone listens: what the sink still holds at shutdown is then theirs
    /// to keep (the spool), not a drop.
    pub fn tracked(&self) -> bool {
        self.0.is_some()
    }

    /// Reports `out` delivered, stored at `at` when the sink knows where.
    pub fn delivered(&self, out: &Outgoing, at: Option<Position>) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Ack::Delivered(out.ticket, at));
        }
    }

    /// Reports `out` rejected, because of `why`.
    pub fn rejected(&self, out: &Outgoing, why: impl std::fmt::Display) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Ack::Rejected(out.ticket, why.to_string()));
        }
    }
}

/// A sink: takes records from a channel, delivers them with its own retries, and reports
/// each record's fate as an [`Ack`]. Implemented by [`kafka::KafkaSink`] and
/// [`mqtt::MqttSink`]; the forwarder ([`crate::forward`]) stands in front of either.
pub trait Sink: Send {
    /// The frame topic.
    fn topic(&self) -> &str;
    /// Records the sink keeps in flight at most (`kafka.max_in_flight`,
    /// `mqtt.max_in_flight`).
    fn window(&self) -> usize;
    /// Delivers what arrives on `rx` until it closes and everything is acknowledged, or
    /// until `grace` after `shutdown` is cancelled; every record's fate goes to `acks`.
    fn run(
        self: Box<Self>,
        rx: tokio::sync::mpsc::Receiver<Outgoing>,
        acks: AckTx,
        shutdown: tokio_util::sync::CancellationToken,
        grace: std::time::Duration,
    ) -> futures::future::BoxFuture<'static, SinkReport>;
}

/// What a sink still holds when it stops: `in_flight` records awaiting acknowledgement plus,
/// when its input was still open, whatever waits in `rx` (which is closed). Anything left is
/// logged and, unless `acks` is tracked (the forwarder spools it), counted as
/// `undelivered_at_shutdown`; returns the count.
pub(crate) fn count_undelivered(
    in_flight: usize,
    rx: &mut tokio::sync::mpsc::Receiver<Outgoing>,
    input_open: bool,
    metrics: &dyn SinkMetrics,
    acks: &AckTx,
) -> u64 {
    let mut left = in_flight as u64;
    if input_open {
        rx.close();
        while rx.try_recv().is_ok() {
            left += 1;
        }
    }
    if left > 0 && acks.tracked() {
        tracing::info!(
            undelivered = left,
            "shutdown grace period over; records not yet delivered stay in the spool"
        );
    } else if left > 0 {
        tracing::error!(
            undelivered = left,
            "shutdown grace period over; records left undelivered"
        );
        metrics.undelivered_at_shutdown(left);
    }
    left
}

/// Counts a delivered frame in `metrics`: record bytes, capture-to-delivery latency, and the
/// quality it went out at, keyed `"<quality> at <width>x<height>"` (e.g. `40 at 432x324`).
pub(crate) fn count_delivered(out: &Outgoing, metrics: &crate::metrics::Metrics) {
    use crate::record::header;
    let latency = std::time::SystemTime::now()
        .duration_since(out.captured_at)
        .unwrap_or_default()
        .as_micros() as u64;
    metrics.delivered(out.record.wire_size() as u64, latency);
    let r = &out.record;
    if let (Some(q), Some(w), Some(h)) = (
        r.header(header::QUALITY),
        r.header(header::WIDTH),
        r.header(header::HEIGHT),
    ) {
        metrics.record_quality(&format!("{q} at {w}x{h}"));
        if let Ok(q) = q.parse::<u8>() {
            metrics.histograms.jpeg_quality.observe(q as f64);
        }
    }
}
