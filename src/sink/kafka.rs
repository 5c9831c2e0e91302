//! The Kafka sink: an idempotent `acks=all` producer, bounded in-flight records, delivery
//! reports awaited, failed deliveries sent again.
//!
//! Delivery guarantee: a record handed to [`KafkaSink::run`] is either delivered (its
//! delivery report says so), or permanently rejected by Kafka (counted as
//! `delivery_rejected`), or still undelivered when the shutdown grace period ends (counted as
//! `undelivered_at_shutdown` and logged). Transient failures — a broker down longer than
//! `message.timeout.ms`, a full local queue — are retried without limit while the agent runs.
//! A retried record may land after later records of the same device; `edgecam.seq`
//! restores the order downstream.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Destination, Outgoing, Position, SinkMetrics, SinkReport};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::throttle::Throttle;

/// A Kafka failure that stops the sink from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaSinkError {
    /// librdkafka refused the configuration (e.g. an unknown property in
    /// `kafka.properties`).
    #[error("kafka producer configuration: {0}")]
    Config(KafkaError),
    /// Creating the topic failed.
    #[error("creating topic {topic}: {message}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's or client's message.
        message: String,
    },
}

/// The producer's `message.max.bytes`: `kafka.properties."message.max.bytes"` when set,
/// else the larger of the budget and librdkafka's default (1,000,000).
pub fn producer_max_bytes(cfg: &KafkaConfig, max_message_bytes: u32) -> u32 {
    cfg.properties
        .get("message.max.bytes")
        .and_then(|v| v.config_value().parse().ok())
        .unwrap_or(max_message_bytes.max(1_000_000))
}

/// Creates `topics` with `partitions` partitions if they do not exist yet.
///
/// Errors: [`KafkaSinkError::CreateTopic`] for any error other than "already exists".
pub async fn ensure_topics(
    client_config: &ClientConfig,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaSinkError> {
    let admin: AdminClient<_> = client_config.create().map_err(KafkaSinkError::Config)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results =
        admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(|e| KafkaSinkError::CreateTopic {
                topic: topics.join(","),
                message: e.to_string(),
            })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSinkError::CreateTopic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// How a failed produce or delivery is handled, the same in the agent's sink and the
/// bridge. (A producer in librdkafka's fatal state is recreated first: see
/// [`RecoverableProducer`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The record itself can never be accepted (too large, invalid): it is dropped, counted
    /// (`delivery_rejected`; the bridge dead-letters it).
    RecordRefused,
    /// The cluster refuses it for a reason an operator must fix (the topic does not exist,
    /// authorisation): kept and sent again every [`SLOW_RETRY`], never dropped, so nothing
    /// is lost while someone creates the topic or fixes the ACL.
    NeedsOperator,
    /// Anything else (broker down, timeouts, purged by a replaced producer): sent again at
    /// once.
    Transient,
}

/// How often a record refused for an [`ErrorClass::NeedsOperator`] reason is sent again.
pub(crate) const SLOW_RETRY: Duration = Duration::from_secs(1);

/// The [`ErrorClass`] of `e`.
pub(crate) fn classify(e: &KafkaError) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidRecord
            | C::InvalidMessage
            | C::MessageBatchTooLarge,
        ) => ErrorClass::RecordRefused,
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidTopic
            | C::UnknownTopic
            | C::UnknownTopicOrPartition,
        ) => ErrorClass::NeedsOperator,
        _ => ErrorClass::Transient,
    }
}

/// librdkafka's log lines and error callbacks into `tracing`, with connection failures that
/// repeat (a refused TLS handshake or password is refused again on every reconnect, once a
/// second) logged once at ERROR and then at DEBUG, with a reminder every five minutes (see
/// [`crate::repeats`]). librdkafka reports each failed connection twice, as a `FAIL` log
/// line and as an error callback with the same reason: the log line goes to DEBUG.
#[derive(Debug)]
pub(crate) struct KafkaLog(std::sync::Mutex<crate::repeats::Repeats>);

impl Default for KafkaLog {
    fn default() -> Self {
        KafkaLog(std::sync::Mutex::new(crate::repeats::Repeats::new(
            Duration::from_secs(300),
        )))
    }
}

impl KafkaLog {
    /// `Some(quiet repeats)` when `reason` is to be logged in full. The part that changes
    /// between attempts ("(after 5ms in state SSL_HANDSHAKE, 3 identical error(s)
    /// suppressed)") is not part of what is compared.
    fn first(&self, reason: &str) -> Option<u64> {
        let stable = reason.split(" (after ").next().unwrap_or(reason);
        self.0
            .lock()
            .map_or(Some(0), |mut r| r.note(stable, std::time::Instant::now()))
    }
}

impl rdkafka::client::ClientContext for KafkaLog {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning if fac == "FAIL" => {
                tracing::debug!(target: "librdkafka", facility = fac, "{message}")
            }
            L::Emerg | L::Alert | L::Critical | L::Error => match self.first(message) {
                Some(repeats) => {
                    tracing::error!(target: "librdkafka", facility = fac, repeats, "{message}")
                }
                None => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
            },
            L::Warning => match self.first(message) {
                Some(repeats) => {
                    tracing::warn!(target: "librdkafka", facility = fac, repeats, "{message}")
                }
                None => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
            },
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match self.first(reason) {
            Some(repeats) => tracing::error!(target: "librdkafka", %error, repeats, "{reason}"),
            None => tracing::debug!(target: "librdkafka", %error, "{reason}"),
        }
    }
}

/// A producer that is replaced when librdkafka declares it fatally failed. Shared by the
/// Kafka sink and the bridge, so both recover the same way.
///
/// The idempotent producer enters a fatal state on some broker errors (for example
/// `OUT_OF_ORDER_SEQUENCE_NUMBER`) and then never delivers again: every send and every
/// delivery report fails. [`RecoverableProducer::replace_if_fatal`] swaps in a new producer
/// from the same configuration; the old one is dropped on a blocking thread, and its drop
/// purges what it still held, so those delivery reports fail and the caller sends the
/// records again through the new producer. A new producer has a new producer id, so a
/// record resent this way may be duplicated downstream (`edgecam.frame_id` tells).
pub(crate) struct RecoverableProducer {
    producer: FutureProducer<KafkaLog>,
    config: ClientConfig,
}

impl RecoverableProducer {
    /// Creates the producer from `config`.
    ///
    /// Errors: librdkafka's, when it refuses the configuration.
    pub(crate) fn new(config: ClientConfig) -> Result<Self, KafkaError> {
        Ok(RecoverableProducer {
            producer: config.create_with_context(KafkaLog::default())?,
            config,
        })
    }

    /// The current producer.
    pub(crate) fn get(&self) -> &FutureProducer<KafkaLog> {
        &self.producer
    }

    /// When the producer is in librdkafka's fatal state, replaces it and returns the fatal
    /// error as text; `None` when it is healthy (or a new one cannot be created, which is
    /// logged and tried again at the next failure).
    pub(crate) fn replace_if_fatal(&mut self) -> Option<String> {
        let (code, reason) = self.producer.client().fatal_error()?;
        let fresh: FutureProducer<KafkaLog> =
            match self.config.create_with_context(KafkaLog::default()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot recreate the Kafka producer");
                    return None;
                }
            };
        let why = format!("{code}: {reason}");
        tracing::error!(
            error = %why,
            "the Kafka producer failed fatally; recreated it, sending again what was not acknowledged"
        );
        let old = std::mem::replace(&mut self.producer, fresh);
        tokio::task::spawn_blocking(move || drop(old));
        Some(why)
    }
}

/// The producer side of the pipeline, and of the bridge.
pub struct KafkaSink {
    producer: RecoverableProducer,
    topic: String,
    error_topic: Option<String>,
    max_in_flight: usize,
    metrics: Arc<dyn SinkMetrics>,
    /// Rate limit of the "produce failed" warning (a broken producer repeats it).
    warnings: Throttle,
    /// Where each record's fate is reported.
    acks: super::AckTx,
    /// Deliveries that failed since the last one that succeeded: the first success after
    /// failures is logged once ("delivers again"), so an outage shows as one line down
    /// (librdkafka's, deduplicated) and one line up.
    failures: u64,
}

/// A record waiting for its delivery report (where Kafka stored it, or the error), or
/// (`Err(None)`) for its slow retry.
type InFlight = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Outgoing, Result<Position, Option<KafkaError>>)> + Send>,
>;

/// `out`, handed back after `delay` for sending again.
fn retry_later(out: Outgoing, delay: Duration) -> InFlight {
    Box::pin(async move {
        tokio::time::sleep(delay).await;
        (out, Err(None))
    })
}

/// When the sink stops waiting: never until shutdown is requested, then `grace` after the
/// sink first notices it. Every wait in the sink (delivery reports, a full local queue, a
/// resend back-off) ends there, so SIGTERM is honoured within the grace period whatever
/// state the producer is in.
struct Deadline {
    shutdown: CancellationToken,
    grace: Duration,
    at: Option<Instant>,
}

impl Deadline {
    /// The give-up instant, once shutdown has been requested.
    fn at(&mut self) -> Option<Instant> {
        if self.at.is_none() && self.shutdown.is_cancelled() {
            self.at = Some(Instant::now() + self.grace);
        }
        self.at
    }

    /// `true` once the grace period is over.
    fn passed(&mut self) -> bool {
        self.at().is_some_and(|t| Instant::now() >= t)
    }

    /// Sleeps for `d`, or less when the deadline comes first (or shutdown sets it).
    async fn sleep(&mut self, d: Duration) {
        let until = Instant::now() + d;
        match self.at() {
            Some(t) => tokio::time::sleep_until(until.min(t)).await,
            None => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = self.shutdown.cancelled() => {}
                }
            }
        }
    }

    /// Resolves when shutdown is requested (first call) or when the grace period ends.
    async fn reached(&mut self) {
        match self.at() {
            Some(t) => tokio::time::sleep_until(t).await,
            None => self.shutdown.cancelled().await,
        }
    }
}

impl KafkaSink {
    /// Creates the producer (librdkafka connects in the background; nothing blocks here).
    ///
    /// Errors: [`KafkaSinkError::Config`] when librdkafka rejects a property.
    pub fn new(
        cfg: &KafkaConfig,
        max_message_bytes: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaSinkError> {
        Self::with_producer(
            cfg.producer_config(max_message_bytes),
            cfg.topic.to_string(),
            cfg.error_topic.as_ref().map(|t| t.to_string()),
            cfg.max_in_flight.get(),
            metrics,
        )
    }

    /// A sink producing with `producer_config` to `topic` ([`Destination::Frames`]) and
    /// `error_topic` ([`Destination::Errors`]; a record for it is rejected when `None`),
    /// with at most `max_in_flight` records awaiting their delivery report, counting into
    /// `metrics`. The bridge builds its sink this way.
    ///
    /// Errors: [`KafkaSinkError::Config`] when librdkafka rejects a property.
    pub(crate) fn with_producer(
        producer_config: ClientConfig,
        topic: String,
        error_topic: Option<String>,
        max_in_flight: usize,
        metrics: Arc<dyn SinkMetrics>,
    ) -> Result<Self, KafkaSinkError> {
        let producer = RecoverableProducer::new(producer_config).map_err(KafkaSinkError::Config)?;
        Ok(KafkaSink {
            producer,
            topic,
            error_topic,
            max_in_flight,
            metrics,
            warnings: Throttle::frames(),
            acks: super::AckTx::default(),
            failures: 0,
        })
    }

    /// Reports every record's fate to `acks` (see [`super::Sink`]).
    pub fn with_acks(mut self, acks: super::AckTx) -> Self {
        self.acks = acks;
        self
    }

    /// The frame topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn topic_for(&self, d: Destination) -> Option<&str> {
        match d {
            Destination::Frames => Some(&self.topic),
            Destination::Errors => self.error_topic.as_deref(),
        }
    }

    /// [`RecoverableProducer::replace_if_fatal`], counted. `true` when it was replaced.
    fn recover_if_fatal(&mut self) -> bool {
        let Some(why) = self.producer.replace_if_fatal() else {
            return false;
        };
        self.metrics.producer_restarted(&why);
        true
    }

    /// Hands one record to librdkafka, waiting (backpressure) while its local queue is full.
    /// `Ok(None)`: the record was dropped as one Kafka can never take (counted). `Err`: the
    /// shutdown deadline passed first; the record is handed back, undelivered.
    async fn send(
        &mut self,
        out: Outgoing,
        deadline: &mut Deadline,
    ) -> Result<Option<InFlight>, Outgoing> {
        let Some(topic) = self.topic_for(out.destination).map(str::to_string) else {
            self.acks.rejected(&out, "no error topic is configured");
            return Ok(None);
        };
        loop {
            if deadline.passed() {
                return Err(out);
            }
            let mut headers = OwnedHeaders::new_with_capacity(out.record.headers.len());
            for (k, v) in &out.record.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut rec = FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(out.record.value.as_ref())
                .headers(headers);
            if let Some(key) = out.record.kafka_key() {
                rec = rec.key(key);
            }
            let error = match self.producer.get().send_result(rec) {
                Ok(fut) => {
                    return Ok(Some(Box::pin(async move {
                        let r = match fut.await {
                            Ok(Ok(d)) => Ok(Position {
                                partition: d.partition,
                                offset: d.offset,
                            }),
                            Ok(Err((e, _msg))) => Err(Some(e)),
                            Err(_canceled) => Err(Some(KafkaError::Canceled)),
                        };
                        (out, r)
                    })))
                }
                Err((e, _)) => e,
            };
            if let KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) = error {
                deadline.sleep(Duration::from_millis(5)).await;
                continue;
            }
            if self.recover_if_fatal() {
                continue;
            }
            // Enqueue itself failed (e.g. record too large for the client).
            let class = classify(&error);
            if class == ErrorClass::RecordRefused {
                tracing::error!(error = %error, "record rejected by the producer; dropped");
                self.metrics.rejected(&out);
                self.acks.rejected(&out, &error);
                return Ok(None);
            }
            if let Some(suppressed) = self.warnings.allow(std::time::Instant::now()) {
                tracing::warn!(error = %error, suppressed, "produce failed; retrying");
            }
            self.metrics.last_error(format!("produce failed: {error}"));
            deadline
                .sleep(match class {
                    ErrorClass::NeedsOperator => SLOW_RETRY,
                    _ => Duration::from_millis(100),
                })
                .await;
        }
    }

    fn on_delivered(&mut self, out: &Outgoing, at: Position, report: &mut SinkReport) {
        if self.failures > 0 {
            tracing::info!(failed_deliveries = self.failures, "Kafka delivers again");
            self.failures = 0;
        }
        let topic = self.topic_for(out.destination).unwrap_or_default();
        *report.delivered.entry(topic.to_string()).or_default() += 1;
        self.acks.delivered(out, Some(at));
        self.metrics.delivered(out);
    }

    /// Publishes everything received on `rx` until it closes, then waits for the delivery
    /// reports of what is in flight. Once `shutdown` is cancelled, every wait is bounded by
    /// `grace`: records still undelivered then are counted and the function returns.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Outgoing>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> SinkReport {
        let mut report = SinkReport::default();
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let mut input_open = true;
        let mut deadline = Deadline {
            shutdown,
            grace,
            at: None,
        };
        // Records handed back by `send` at the deadline.
        let mut gave_up = 0usize;
        loop {
            if !input_open && in_flight.is_empty() {
                break;
            }
            if deadline.passed() {
                break;
            }
            let can_take = input_open && in_flight.len() < self.max_in_flight;
            // What the select! below decided, acted on after it (the sink is borrowed there).
            enum Next {
                Report(Outgoing, Result<Position, Option<KafkaError>>),
                Input(Option<Outgoing>),
                Deadline,
            }
            let next = tokio::select! {
                biased;
                Some((out, result)) = in_flight.next(), if !in_flight.is_empty() => Next::Report(out, result),
                msg = rx.recv(), if can_take => Next::Input(msg),
                _ = deadline.reached() => Next::Deadline,
            };
            let to_send = match next {
                Next::Report(out, Ok(at)) => {
                    self.on_delivered(&out, at, &mut report);
                    None
                }
                // A slow retry is due.
                Next::Report(out, Err(None)) => Some(out),
                Next::Report(out, Err(Some(e))) => {
                    let seq = out.record.header(crate::record::header::SEQ);
                    match classify(&e) {
                        ErrorClass::RecordRefused => {
                            tracing::error!(error = %e, seq, "Kafka refused the record; not sending it again");
                            self.metrics.rejected(&out);
                            self.acks.rejected(&out, &e);
                            None
                        }
                        class => {
                            self.failures += 1;
                            let replaced = self.recover_if_fatal();
                            if let Some(suppressed) = self.warnings.allow(std::time::Instant::now())
                            {
                                tracing::warn!(error = %e, seq, suppressed, "delivery failed; sending again");
                            }
                            self.metrics.retried(&e.to_string());
                            if class == ErrorClass::NeedsOperator && !replaced {
                                // Check the topic and the ACLs; the record waits.
                                in_flight.push(retry_later(out, SLOW_RETRY));
                                None
                            } else {
                                Some(out)
                            }
                        }
                    }
                }
                Next::Input(Some(out)) => Some(out),
                Next::Input(None) => {
                    input_open = false;
                    None
                }
                Next::Deadline => None,
            };
            if let Some(out) = to_send {
                match self.send(out, &mut deadline).await {
                    Ok(Some(f)) => in_flight.push(f),
                    Ok(None) => {}
                    Err(_undelivered) => gave_up += 1,
                }
            }
        }
        // Grace period over (or everything delivered): count what is left.
        let left = super::count_undelivered(
            in_flight.len() + gave_up,
            &mut rx,
            input_open,
            &*self.metrics,
            &self.acks,
        );
        report.undelivered = left;
        let _ = self.producer.get().flush(Duration::from_millis(100));
        report
    }
}

impl super::Sink for KafkaSink {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn window(&self) -> usize {
        self.max_in_flight
    }

    fn run(
        self: Box<Self>,
        rx: mpsc::Receiver<Outgoing>,
        acks: super::AckTx,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> futures::future::BoxFuture<'static, SinkReport> {
        Box::pin(self.with_acks(acks).run(rx, shutdown, grace))
    }
}
