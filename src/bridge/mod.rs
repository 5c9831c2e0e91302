//! `edgecam bridge`: drains MQTT topic filters into Kafka, at least once.
//!
//! Many sensors publish to one MQTT broker; one bridge subscribes and produces into Kafka, so
//! N sensors and M consumers need N + M connections instead of N × M.
//!
//! # Inputs
//!
//! Each `[[bridge.inputs]]` is a topic pattern with one `{device}` level (subscribed with that
//! level as `+`) and a format:
//!
//! * `edgecam`: frames from edgecam's own MQTT sink. MQTT 5 user properties become Kafka
//!   headers 1:1, the content-type property the `content-type` header
//!   ([`crate::mqtt::properties_to_headers`]).
//! * `raw`: foreign payloads (an ESP32-CAM publishing bare JPEG, MQTT 3.1.1 or 5). The bridge
//!   writes the edgecam headers itself: `edgecam.device` from the topic, `edgecam.seq`
//!   counted per device from 0 at bridge start, `edgecam.frame_id` (UUIDv5 of device and
//!   image, so a redelivered message keeps its id),
//!   `edgecam.captured_at` (receive time), and `content-type`, `edgecam.width`/`height`,
//!   `edgecam.codec`, `edgecam.quality` sniffed from the JPEG (SOF, DQT estimate or
//!   `unknown`) or PNG (IHDR, `lossless`).
//!
//! Besides MQTT, `[bridge.http]` takes frames uploaded over HTTP ([`upload`]): checked as
//! `raw` input, fitted under the budget when larger, and given the same headers; they share
//! the Kafka sink, the per-device sequence numbers and the in-flight bound with MQTT input,
//! and each upload is answered once Kafka's delivery report is in.
//!
//! The record key is the device id, so one device's frames stay in one partition, in the
//! order they arrived (the producer is idempotent; a record sent again after a failed
//! delivery may land after later ones, `edgecam.seq` restores the order).
//!
//! # Delivery guarantee
//!
//! The bridge uses a persistent MQTT 5 session (`clean_start = false`,
//! `mqtt.session_expiry_secs`), so the broker queues QoS 1 messages while the bridge is away,
//! and manual acknowledgements: a QoS 1 message's PUBACK is sent only after Kafka's delivery
//! report said delivered (to `kafka.topic`, or to the dead-letter topic for a rejected
//! message), in the order the messages arrived, and only on the connection the message came
//! in on. Killing the bridge at any moment therefore loses nothing the broker handed over: an
//! unacknowledged message is delivered again (and may then be in Kafka twice;
//! `edgecam.frame_id` identifies it). The Kafka side is the agent's own sink
//! ([`crate::sink::kafka::KafkaSink`]): the same idempotent producer, retry policy and
//! recovery from a fatal producer error, reporting one [`crate::sink::Ack`] per record; a
//! record Kafka refuses for good is dead-lettered as `delivery_rejected`. The MQTT receive
//! maximum is `kafka.max_in_flight`: the broker never has more unacknowledged messages out
//! to the bridge, and the bridge never holds more than that many messages between MQTT and
//! Kafka.
//!
//! # Bad input
//!
//! A message that cannot become a frame record ([`RejectReason`]) is counted, sent to
//! `bridge.dead_letter_topic` when set (headers [`REASON_HEADER`], [`MQTT_TOPIC_HEADER`],
//! [`DETAIL_HEADER`], [`PAYLOAD_BYTES_HEADER`], then the message's own properties; the
//! payload as value when it fits the budget), and then acknowledged: the bridge keeps going.
//!
//! # Connection
//!
//! The rumqttc event loop is polled in a task of its own that forwards messages over a
//! bounded channel; each connection gets a fresh client and event loop, so an
//! acknowledgement can never leak onto a later connection. Errors reconnect with backoff
//! (250 ms doubling to 10 s); a no-traffic watchdog (`mqtt.silence_timeout_secs`) drops a
//! connection that went silent. Subscriptions are (re)sent on the first connection and
//! whenever the broker reports no session.

mod acks;
pub mod config;
pub(crate) mod input;
mod metrics;
pub mod upload;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::sink::kafka::{KafkaSink, KafkaSinkError};
use crate::sink::SinkReport;
use crate::sink::{Ack, AckTx, Destination, Outgoing};
use rdkafka::error::KafkaError;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{BridgeConfig, BridgeFile, InputConfig, InputFormat, TopicPattern};
pub use metrics::{BridgeMetrics, RejectReason, UploadOutcome};

use acks::AckLedger;
use input::{Input, RawSeqs, Record, Rejection};
use upload::{UploadKind, UploadRequest, UploadResult};

/// Dead-letter header: the [`RejectReason`] name, e.g. `over_budget`.
pub const REASON_HEADER: &str = "edgecam.reason";
/// Dead-letter header: the MQTT topic the message came from (lossy UTF-8, at most 1 KiB).
pub const MQTT_TOPIC_HEADER: &str = "edgecam.mqtt_topic";
/// Dead-letter header: what exactly was wrong, for people (at most 1 KiB).
pub const DETAIL_HEADER: &str = "edgecam.detail";
/// Dead-letter header: the payload's size in bytes.
pub const PAYLOAD_BYTES_HEADER: &str = "edgecam.payload_bytes";
/// Dead-letter header, `true` when the payload and properties were left out because the
/// dead letter would not fit `bridge.max_message_bytes`.
pub const TRUNCATED_HEADER: &str = "edgecam.truncated";

/// Reconnect backoff: first delay.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Reconnect backoff: largest delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection that lasted this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// After the last delivery at shutdown: how long to wait for PUBACKs and DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the bridge could not start. Connection problems (MQTT or Kafka) after start are retried,
/// not returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// librdkafka refused the producer configuration (e.g. an unknown property in
    /// `kafka.properties`).
    #[error("kafka producer configuration: {0}")]
    Kafka(KafkaError),
    /// Creating `kafka.topic` / `bridge.dead_letter_topic` failed
    /// (`kafka.create_topic_partitions` is set).
    #[error(transparent)]
    CreateTopic(crate::sink::kafka::KafkaSinkError),
    /// `[mqtt.tls]` could not be set up: a file changed since the configuration was loaded.
    #[error("mqtt: {0}")]
    Mqtt(crate::config::ConfigError),
    /// `http.listen` could not be bound.
    #[error(transparent)]
    Http(crate::http::HttpError),
}

/// What one [`run`] did. Counts are MQTT messages, read from the `metrics` passed to [`run`]
/// when it ends (so they include earlier runs if the same metrics are reused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeReport {
    /// Messages taken from the broker (redeliveries count again).
    pub received: u64,
    /// Records delivered to `kafka.topic` (from MQTT messages and from uploads).
    pub forwarded: u64,
    /// Records delivered to the dead-letter topic.
    pub dead_lettered: u64,
    /// Rejected messages dropped without a dead letter.
    pub discarded: u64,
    /// PUBACKs written to the broker connection.
    pub acked: u64,
    /// Rejected messages by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Messages still undelivered when the shutdown grace period ended (not acknowledged:
    /// the broker delivers them again).
    pub undelivered: u64,
    /// MQTT connections made.
    pub connections: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs the bridge until `shutdown` is cancelled: connects to the broker (retrying forever),
/// subscribes to every input, forwards messages to Kafka and acknowledges them after
/// delivery. On shutdown it stops taking messages, waits up to `bridge.shutdown_grace_ms`
/// for the deliveries in flight, acknowledges what was delivered and disconnects (the session
/// stays on the broker for `mqtt.session_expiry_secs`).
///
/// `metrics` is updated live. Errors: [`BridgeError`] when the producer cannot be created or
/// topics cannot be created at start; nothing after start is an error.
pub async fn run(
    cfg: BridgeFile,
    shutdown: CancellationToken,
    metrics: Arc<BridgeMetrics>,
) -> Result<BridgeReport, BridgeError> {
    let started = Instant::now();
    let max_bytes = cfg.bridge.max_message_bytes.get();
    // Stops when this function returns, whichever way.
    let http_stop = shutdown.child_token();
    let _http_guard = http_stop.clone().drop_guard();
    if let Some(addr) = cfg.http.listen {
        let m = metrics.clone();
        crate::http::serve_service(
            addr,
            metrics::registry(cfg.bridge.id.as_str(), metrics.clone()),
            Arc::new(move |within, now_ms| metrics::not_ready(&m, within, now_ms)),
            Duration::from_millis(cfg.http.ready_within_ms.get()),
            http_stop.clone(),
        )
        .await
        .map_err(BridgeError::Http)?;
    }
    let (uploads, upload_server) = match cfg.bridge.http.listen {
        Some(addr) => {
            let (tx, rx) = mpsc::channel(cfg.bridge.http.max_concurrent.get());
            let server = upload::serve(
                addr,
                &cfg.bridge.http,
                tx,
                cfg.kafka.topic.as_str(),
                max_bytes as usize,
                cfg.limits.limits(),
                metrics.clone(),
                http_stop.clone(),
            )
            .await
            .map_err(BridgeError::Http)?;
            (Some(rx), Some(server))
        }
        None => (None, None),
    };
    let producer_config = cfg.kafka.producer_config(max_bytes);
    if let Some(partitions) = cfg.kafka.create_topic_partitions {
        let mut topics = vec![cfg.kafka.topic.as_str()];
        if let Some(dl) = &cfg.bridge.dead_letter_topic {
            topics.push(dl);
        }
        crate::sink::kafka::ensure_topics(
            &producer_config,
            &topics,
            partitions.get() as i32,
            cfg.kafka.create_topic_replication.get() as i32,
        )
        .await
        .map_err(BridgeError::CreateTopic)?;
    }
    let max_in_flight = cfg.kafka.max_in_flight.get().min(u16::MAX as usize);
    let sink = KafkaSink::with_producer(
        producer_config,
        cfg.kafka.topic.to_string(),
        cfg.bridge.dead_letter_topic.as_ref().map(|t| t.to_string()),
        max_in_flight,
        metrics.clone(),
    )
    .map_err(|e| match e {
        KafkaSinkError::Config(k) => BridgeError::Kafka(k),
        other => BridgeError::CreateTopic(other),
    })?;
    let patterns = cfg.patterns();
    let filters: Vec<Filter> = cfg
        .bridge
        .inputs
        .iter()
        .zip(&patterns)
        .map(|(i, p)| {
            let mut f = Filter::new(p.filter(), crate::mqtt::qos(i.qos.get()));
            // Retained messages only when the subscription is new, not on every restart.
            f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
            f
        })
        .collect();
    let inputs: Vec<Input> = cfg
        .bridge
        .inputs
        .iter()
        .zip(patterns)
        .map(|(i, p)| Input::new(i, p))
        .collect();
    let mut options = crate::mqtt::v5_options(&cfg.mqtt, &cfg.client_id(), max_bytes)
        .map_err(BridgeError::Mqtt)?;
    options
        .set_manual_acks(true)
        .set_receive_maximum(Some(max_in_flight as u16));

    let (tx, rx) = mpsc::channel(max_in_flight);
    let (conn_tx, conn_rx) = watch::channel(None);
    let draining = CancellationToken::new();
    let mqtt = MqttTask {
        options,
        filters,
        tx,
        conn_tx,
        metrics: metrics.clone(),
        draining: draining.clone(),
        silence: Duration::from_secs(cfg.mqtt.silence_timeout_secs as u64),
        request_capacity: max_in_flight + 16,
    };
    let mqtt_task = tokio::spawn(mqtt.run());
    tracing::info!(
        client_id = %cfg.client_id(),
        broker = %format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port()),
        inputs = cfg.bridge.inputs.len(),
        topic = %cfg.kafka.topic,
        "bridge starting"
    );

    // A child: the forwarder may stop itself (and the sink) without cancelling the
    // caller's token.
    let stop = shutdown.child_token();
    let (sink_tx, sink_rx) = mpsc::channel(max_in_flight);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let sink = tokio::spawn(sink.with_acks(AckTx::new(ack_tx)).run(
        sink_rx,
        stop.clone(),
        Duration::from_millis(cfg.bridge.shutdown_grace_ms.get()),
    ));
    let mut fwd = Forwarder {
        dead_letter: cfg.bridge.dead_letter_topic.is_some(),
        max_bytes: max_bytes as usize,
        limits: cfg.limits.limits(),
        warnings: crate::throttle::Throttle::frames(),
        inputs,
        seqs: RawSeqs::default(),
        metrics: metrics.clone(),
        ledger: AckLedger::default(),
        pending: HashMap::new(),
        sink: Some(sink_tx),
        acks: VecDeque::new(),
        conn_rx,
        shutdown: stop,
    };
    let undelivered = fwd.run(rx, uploads, ack_rx, sink, &draining).await;

    // Acknowledge what was delivered, then disconnect (after the PUBACKs: same queue).
    let deadline = Instant::now() + DISCONNECT_TIMEOUT;
    while !fwd.acks.is_empty() && Instant::now() < deadline {
        fwd.flush_acks();
        if !fwd.acks.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let conn = fwd.conn_rx.borrow().clone();
    if let Some(conn) = conn {
        while conn.client.try_disconnect().is_err() && Instant::now() < deadline {
            if fwd.conn_rx.borrow().as_ref().map(|c| c.id) != Some(conn.id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    draining.cancel();
    let mut mqtt_task = mqtt_task;
    if tokio::time::timeout_at(deadline, &mut mqtt_task)
        .await
        .is_err()
    {
        tracing::warn!("MQTT disconnect did not complete in time; closing the connection");
        mqtt_task.abort();
    }
    // Let the upload server write the answers the drain produced (201s for what was
    // delivered; 503 for uploads still waiting, now that the forwarder is gone) before the
    // process may exit.
    http_stop.cancel();
    if let Some(mut server) = upload_server {
        if tokio::time::timeout_at(deadline, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("upload connections still open at the end of shutdown; closing them");
            server.abort();
        }
    }

    let report = BridgeReport {
        received: metrics.received.load(Relaxed),
        forwarded: metrics.forwarded.load(Relaxed),
        dead_lettered: metrics.dead_lettered.load(Relaxed),
        discarded: metrics.discarded.load(Relaxed),
        acked: metrics.acked.load(Relaxed),
        rejected: metrics.rejected(),
        undelivered,
        connections: metrics.connections.load(Relaxed),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        received = report.received,
        forwarded = report.forwarded,
        dead_lettered = report.dead_lettered,
        undelivered = report.undelivered,
        "bridge stopped"
    );
    Ok(report)
}

/// The current broker connection, as the forwarder needs it for acknowledgements.
#[derive(Clone)]
struct Conn {
    /// Connection number, from 1 per run.
    id: u64,
    client: AsyncClient,
}

/// One message from the broker, tagged with its connection.
struct Incoming {
    publish: Publish,
    conn: u64,
    at: SystemTime,
}

/// Owns the MQTT connection: connects, subscribes, polls, forwards, reconnects.
struct MqttTask {
    options: MqttOptions,
    filters: Vec<Filter>,
    tx: mpsc::Sender<Incoming>,
    conn_tx: watch::Sender<Option<Conn>>,
    metrics: Arc<BridgeMetrics>,
    /// Cancelled at shutdown: stop forwarding (messages are left unacknowledged) and do not
    /// reconnect; keep polling a live connection until the forwarder's DISCONNECT went out.
    draining: CancellationToken,
    silence: Duration,
    request_capacity: usize,
}

/// How one connection ended.
enum ConnEnd {
    /// DISCONNECT sent, or shutdown while not connected: stop.
    Stopped,
    /// Lost; reconnect.
    Lost(String),
}

impl MqttTask {
    async fn run(self) {
        let mut id = 0u64;
        let mut subscribed = false;
        let mut backoff = BACKOFF_MIN;
        let mut errors = crate::mqtt::ErrorLog::default();
        loop {
            if self.draining.is_cancelled() {
                break;
            }
            id += 1;
            let started = Instant::now();
            let (end, connected) = self.connection(id, &mut subscribed).await;
            self.conn_tx.send_replace(None);
            self.metrics.mqtt_up.store(false, Relaxed);
            match end {
                ConnEnd::Stopped => break,
                ConnEnd::Lost(why) => {
                    if connected {
                        self.metrics.disconnects.fetch_add(1, Relaxed);
                    }
                    if self.draining.is_cancelled() {
                        break;
                    }
                    if started.elapsed() >= BACKOFF_RESET_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                    if connected {
                        errors.reset();
                    }
                    errors.log("MQTT connection lost", &why, backoff);
                    self.metrics.set_last_error(format!("mqtt: {why}"));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.draining.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One connection, from CONNECT to its end. Returns how it ended and whether it was
    /// ever established.
    async fn connection(&self, id: u64, subscribed: &mut bool) -> (ConnEnd, bool) {
        let (client, mut el) = AsyncClient::new(self.options.clone(), self.request_capacity);
        let mut connected = false;
        let mut last_rx = Instant::now();
        loop {
            let wait = self.silence.saturating_sub(last_rx.elapsed());
            let polled = tokio::select! {
                biased;
                _ = self.draining.cancelled(), if !connected => return (ConnEnd::Stopped, false),
                r = tokio::time::timeout(wait, el.poll()) => r,
            };
            let event = match polled {
                Err(_) => {
                    return (
                        ConnEnd::Lost(format!(
                            "no traffic from the broker for {} s (watchdog)",
                            self.silence.as_secs()
                        )),
                        connected,
                    )
                }
                Ok(Err(e)) => return (ConnEnd::Lost(e.to_string()), connected),
                Ok(Ok(event)) => event,
            };
            match event {
                Event::Incoming(packet) => {
                    last_rx = Instant::now();
                    match packet {
                        Packet::ConnAck(ack) => {
                            connected = true;
                            self.metrics.connections.fetch_add(1, Relaxed);
                            self.metrics.mqtt_up.store(true, Relaxed);
                            if !ack.session_present {
                                if id > 1 || *subscribed {
                                    tracing::warn!(
                                        "the broker has no session for the bridge (expired or \
                                         lost): messages published meanwhile were not queued"
                                    );
                                } else {
                                    tracing::info!("new MQTT session");
                                }
                            }
                            if !ack.session_present || !*subscribed {
                                if let Err(e) = client.try_subscribe_many(self.filters.clone()) {
                                    return (
                                        ConnEnd::Lost(format!("subscribe request failed: {e}")),
                                        connected,
                                    );
                                }
                            }
                            tracing::info!(
                                connection = id,
                                session_present = ack.session_present,
                                "connected to the MQTT broker"
                            );
                            self.conn_tx.send_replace(Some(Conn {
                                id,
                                client: client.clone(),
                            }));
                        }
                        Packet::SubAck(s) => {
                            use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
                            let failed: Vec<_> = s
                                .return_codes
                                .iter()
                                .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                                .collect();
                            if failed.is_empty() {
                                *subscribed = true;
                                self.metrics.subscribed.fetch_add(1, Relaxed);
                                tracing::info!(filters = ?self.filters.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), "subscribed");
                            } else {
                                tracing::error!(codes = ?s.return_codes, "the broker refused subscriptions");
                                self.metrics
                                    .set_last_error(format!("subscription refused: {failed:?}"));
                            }
                        }
                        Packet::Publish(publish) => {
                            let msg = Incoming {
                                publish,
                                conn: id,
                                at: SystemTime::now(),
                            };
                            // Backpressure: wait while the forwarder is full. While draining,
                            // drop it unacknowledged (the broker sends it again).
                            tokio::select! {
                                biased;
                                _ = self.draining.cancelled() => {}
                                r = self.tx.send(msg) => {
                                    if r.is_err() {
                                        return (ConnEnd::Stopped, connected);
                                    }
                                }
                            }
                            // Time spent waiting for the forwarder is not broker silence.
                            last_rx = Instant::now();
                        }
                        Packet::Disconnect(d) => {
                            tracing::warn!(reason = ?d.reason_code, "the broker closed the connection");
                        }
                        _ => {}
                    }
                }
                Event::Outgoing(rumqttc::Outgoing::PubAck(_)) => {
                    self.metrics.acked.fetch_add(1, Relaxed);
                }
                Event::Outgoing(rumqttc::Outgoing::Disconnect) => {
                    return (ConnEnd::Stopped, connected);
                }
                Event::Outgoing(_) => {}
            }
        }
    }
}

/// What the bridge remembers of a message while the sink holds its record: enough to count
/// it when its ack comes, and to dead-letter it if Kafka refuses the record.
struct Pending {
    destination: Destination,
    /// Whole-record bytes ([`crate::record::FrameRecord::wire_size`]).
    size: usize,
    /// The device, when known (the record's key).
    device: Option<String>,
    /// Where the record came from, to build a dead letter from and to answer.
    origin: Origin,
}

/// Where a record came from.
enum Origin {
    /// An MQTT message.
    Mqtt(Publish),
    /// An HTTP upload ([`upload`]).
    Upload(UploadSlot),
}

/// An upload in the forwarder: what its dead letter needs, and its answer.
struct UploadSlot {
    /// The request path (`edgecam.http_path` of a dead letter).
    path: String,
    /// The image (the dead letter's value).
    payload: Bytes,
    /// Where the answer goes (the client may have given up: then nobody listens).
    reply: Option<tokio::sync::oneshot::Sender<UploadResult>>,
    /// Set once rejected: what the answer says after the dead letter's delivery report.
    rejection: Option<(RejectReason, String)>,
    /// The image was re-encoded to fit the budget.
    fitted: bool,
    /// `edgecam.seq` of the record.
    seq: u64,
}

impl UploadSlot {
    fn answer(&mut self, result: UploadResult) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(result);
        }
    }

    /// Answers "refused" with the rejection recorded, or `fallback`.
    fn refuse(&mut self, fallback: (RejectReason, String)) {
        let (reason, detail) = self.rejection.take().unwrap_or(fallback);
        self.answer(UploadResult::Refused { reason, detail });
    }
}

/// The next message of an optional channel; never resolves for `None`.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The bridge's middle: converts messages into records for the Kafka sink, tracks one slot
/// per message, and acknowledges messages in arrival order as the sink's acks come in.
struct Forwarder {
    /// `bridge.dead_letter_topic` is set.
    dead_letter: bool,
    max_bytes: usize,
    /// `[limits]`: the bounds on each message's image.
    limits: crate::limits::Limits,
    /// Rate limit of the "message rejected" warning (a hostile sensor can repeat it).
    warnings: crate::throttle::Throttle,
    inputs: Vec<Input>,
    seqs: RawSeqs,
    metrics: Arc<BridgeMetrics>,
    /// Messages in arrival order, each acknowledged once it and all before it are handled:
    /// (connection id, QoS, packet id) per QoS 1 message.
    ledger: AckLedger<(u64, QoS, u16)>,
    /// Messages whose record the sink holds, by slot (= the record's ticket).
    pending: HashMap<u64, Pending>,
    /// The sink's input; `None` once the sink is stopping.
    sink: Option<mpsc::Sender<Outgoing>>,
    /// PUBACKs to send, in order, with their connection.
    acks: VecDeque<(u64, QoS, u16)>,
    conn_rx: watch::Receiver<Option<Conn>>,
    shutdown: CancellationToken,
}

impl Forwarder {
    /// The main loop, until shutdown has been requested and every message is handled, or
    /// the sink stopped at the end of its grace period. Returns the number of messages
    /// still unhandled then (left unacknowledged: the broker delivers them again).
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Incoming>,
        mut uploads: Option<mpsc::Receiver<UploadRequest>>,
        mut sink_acks: mpsc::UnboundedReceiver<Ack>,
        mut sink: tokio::task::JoinHandle<SinkReport>,
        draining: &CancellationToken,
    ) -> u64 {
        let max_in_flight = rx.max_capacity();
        let mut sink_ended = false;
        loop {
            if !draining.is_cancelled() && self.shutdown.is_cancelled() {
                tracing::info!(in_flight = self.ledger.len(), "stopping: no new messages");
                draining.cancel();
            }
            if draining.is_cancelled() && self.ledger.is_empty() {
                break;
            }
            let can_take = !draining.is_cancelled() && self.ledger.len() < max_in_flight;
            self.metrics
                .in_flight
                .store(self.ledger.len() as u64, Relaxed);
            tokio::select! {
                biased;
                Some(ack) = sink_acks.recv() => self.on_ack(ack).await,
                _ = tokio::time::sleep(Duration::from_millis(5)), if !self.acks.is_empty() => {
                    self.flush_acks();
                }
                msg = rx.recv(), if can_take => match msg {
                    Some(m) => self.on_message(m).await,
                    None => {
                        tracing::error!("the MQTT connection task ended; stopping");
                        self.shutdown.cancel();
                    }
                },
                req = recv_opt(&mut uploads), if can_take && uploads.is_some() => match req {
                    Some(r) => self.on_upload(r).await,
                    None => uploads = None,
                },
                _ = self.shutdown.cancelled(), if !draining.is_cancelled() => {}
                _ = &mut sink => {
                    // The grace period is over (or the sink failed).
                    sink_ended = true;
                    break;
                }
            }
        }
        // Close the sink's input: with nothing in flight it ends at once, else at its
        // deadline. Then take the acks that came in meanwhile.
        self.sink = None;
        if !sink_ended {
            let _ = sink.await;
        }
        while let Ok(ack) = sink_acks.try_recv() {
            self.on_ack(ack).await;
        }
        let undelivered = self.ledger.unfinished() as u64;
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                "shutdown grace period over: messages left unacknowledged (the broker keeps them)"
            );
        }
        undelivered
    }

    async fn on_message(&mut self, m: Incoming) {
        self.metrics.received.fetch_add(1, Relaxed);
        let p = m.publish;
        let slot = self
            .ledger
            .push((p.qos != QoS::AtMostOnce).then_some((m.conn, p.qos, p.pkid)));
        match input::convert(
            &self.inputs,
            &p.topic,
            p.properties.as_ref(),
            &p.payload,
            self.max_bytes,
            &self.limits,
            &mut self.seqs,
            m.at,
        ) {
            Ok(record) => {
                self.metrics.count_device(&record.key);
                self.send(slot, Destination::Frames, record, Origin::Mqtt(p))
                    .await
            }
            Err(rejection) => {
                if let Some(d) = &rejection.device {
                    self.metrics.count_device(d);
                }
                self.reject(slot, rejection, Origin::Mqtt(p)).await
            }
        }
    }

    /// One upload: a checked frame gets its sequence number and goes to the sink; bad input
    /// is rejected (dead-lettered). Its slot is in the ledger with nothing to acknowledge, so
    /// it counts against `kafka.max_in_flight` and is waited for at shutdown like a message.
    async fn on_upload(&mut self, req: UploadRequest) {
        let slot = self.ledger.push(None);
        match req.kind {
            UploadKind::Frame(p) => {
                self.metrics.count_device(&p.device);
                let seq = self.seqs.peek(&p.device);
                let record = Record {
                    key: p.device.clone(),
                    headers: input::raw_headers(
                        &p.device,
                        seq,
                        p.frame_id,
                        p.received_at,
                        &p.sniffed,
                    ),
                    value: p.image.clone(),
                };
                let size = record.wire_size();
                let origin = Origin::Upload(UploadSlot {
                    path: format!("/v1/frames/{}", p.device),
                    payload: p.image,
                    reply: Some(req.reply),
                    rejection: None,
                    fitted: p.fitted,
                    seq,
                });
                if size > self.max_bytes {
                    let rejection = Rejection {
                        reason: RejectReason::OverBudget,
                        detail: format!(
                            "record of {size} bytes exceeds bridge.max_message_bytes ({})",
                            self.max_bytes
                        ),
                        device: Some(p.device),
                    };
                    self.reject(slot, rejection, origin).await;
                    return;
                }
                self.seqs.commit(&p.device, seq);
                self.send(slot, Destination::Frames, record, origin).await
            }
            UploadKind::Rejected {
                rejection,
                path,
                payload,
            } => {
                if let Some(d) = &rejection.device {
                    self.metrics.count_device(d);
                }
                let origin = Origin::Upload(UploadSlot {
                    path,
                    payload,
                    reply: Some(req.reply),
                    rejection: None,
                    fitted: false,
                    seq: 0,
                });
                self.reject(slot, rejection, origin).await
            }
        }
    }

    /// Counts a rejected message or upload and dead-letters it (or finishes its slot and,
    /// for an upload, answers at once).
    async fn reject(&mut self, slot: u64, rejection: Rejection, origin: Origin) {
        self.metrics.reject(rejection.reason);
        if let Some(suppressed) = self.warnings.allow(std::time::Instant::now()) {
            let from = match &origin {
                Origin::Mqtt(p) => format!("mqtt {}", String::from_utf8_lossy(&p.topic)),
                Origin::Upload(u) => format!("http {}", u.path),
            };
            tracing::warn!(
                reason = rejection.reason.as_str(),
                from = %from,
                detail = %rejection.detail,
                suppressed,
                "message rejected"
            );
        }
        let record = match &origin {
            _ if !self.dead_letter => None,
            Origin::Mqtt(p) => Some(input::dead_letter(
                &rejection,
                &p.topic,
                p.properties.as_ref(),
                &p.payload,
                self.max_bytes,
            )),
            Origin::Upload(u) => Some(input::dead_letter_from(
                &rejection,
                upload::HTTP_PATH_HEADER,
                u.path.as_bytes(),
                None,
                &u.payload,
                self.max_bytes,
            )),
        };
        let origin = match origin {
            Origin::Upload(mut u) => {
                u.rejection = Some((rejection.reason, rejection.detail));
                Origin::Upload(u)
            }
            o => o,
        };
        let Some(record) = record else {
            self.metrics.discarded.fetch_add(1, Relaxed);
            if let Origin::Upload(mut u) = origin {
                u.refuse((RejectReason::DeliveryRejected, String::new()));
            }
            self.finish(slot);
            return;
        };
        self.send(slot, Destination::Errors, record, origin).await;
    }

    /// Hands `record` to the sink as slot `slot`'s ticket. When the sink is stopping, the
    /// message stays unhandled (and unacknowledged).
    async fn send(&mut self, slot: u64, destination: Destination, record: Record, origin: Origin) {
        let Some(sink) = &self.sink else {
            return;
        };
        self.pending.insert(
            slot,
            Pending {
                destination,
                size: record.wire_size(),
                device: record.kafka_key().map(|_| record.key.clone()),
                origin,
            },
        );
        let out = Outgoing {
            destination,
            record,
            captured_at: SystemTime::now(),
            ticket: slot,
        };
        // Never waits long: the sink's input holds `max_in_flight` records and the ledger
        // never has more messages than that.
        if sink.send(out).await.is_err() {
            self.pending.remove(&slot);
        }
    }

    /// The sink's report on one record.
    async fn on_ack(&mut self, ack: Ack) {
        let Some(mut p) = self.pending.remove(&ack.ticket()) else {
            return;
        };
        match (ack, p.destination) {
            (Ack::Delivered(slot, at), Destination::Frames) => {
                self.metrics
                    .last_forward_unix_ms
                    .store(crate::metrics::unix_ms_now(), Relaxed);
                self.metrics.forwarded.fetch_add(1, Relaxed);
                self.metrics
                    .forwarded_bytes
                    .fetch_add(p.size as u64, Relaxed);
                if let Origin::Upload(u) = &mut p.origin {
                    if u.fitted {
                        self.metrics.uploads_fitted.fetch_add(1, Relaxed);
                    }
                    u.answer(UploadResult::Stored {
                        position: at,
                        seq: u.seq,
                    });
                }
                self.finish(slot);
            }
            (Ack::Delivered(slot, _), Destination::Errors) => {
                self.metrics.dead_lettered.fetch_add(1, Relaxed);
                if let Origin::Upload(u) = &mut p.origin {
                    u.refuse((RejectReason::DeliveryRejected, String::new()));
                }
                self.finish(slot);
            }
            (Ack::Rejected(slot, why), Destination::Frames) => {
                let rejection = Rejection {
                    reason: RejectReason::DeliveryRejected,
                    detail: format!("Kafka refused the record: {why}"),
                    device: p.device,
                };
                self.reject(slot, rejection, p.origin).await;
            }
            (Ack::Rejected(slot, why), Destination::Errors) => {
                tracing::error!(error = %why, "Kafka refused the dead letter; message dropped");
                self.metrics
                    .set_last_error(format!("dead letter refused: {why}"));
                self.metrics.discarded.fetch_add(1, Relaxed);
                if let Origin::Upload(u) = &mut p.origin {
                    u.refuse((RejectReason::DeliveryRejected, why));
                }
                self.finish(slot);
            }
        }
    }

    /// Marks a slot handled, then acknowledges the handled prefix in arrival order.
    fn finish(&mut self, slot: u64) {
        self.ledger.finish(slot, &mut self.acks);
        self.flush_acks();
    }

    /// Hands queued PUBACKs to the client of their connection; drops those whose connection
    /// is gone (the broker sends those messages again).
    fn flush_acks(&mut self) {
        let conn = self.conn_rx.borrow().clone();
        while let Some(&(conn_id, qos, pkid)) = self.acks.front() {
            match &conn {
                Some(c) if c.id == conn_id => {
                    let p = Publish {
                        qos,
                        pkid,
                        ..Default::default()
                    };
                    if c.client.try_ack(&p).is_err() {
                        // Request queue full (or the connection just ended): try again soon.
                        return;
                    }
                }
                _ => {
                    self.metrics.stale.fetch_add(1, Relaxed);
                }
            }
            self.acks.pop_front();
        }
    }
}
