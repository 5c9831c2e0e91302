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

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
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

use super::{Destination, Outgoing};
use crate::config::KafkaConfig;
use crate::metrics::{DropReason, Metrics};

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

/// `true` for errors after which sending the same record again cannot succeed.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::UnknownTopic
        )
    )
}

/// The producer side of the pipeline.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    error_topic: Option<String>,
    max_in_flight: usize,
    metrics: Arc<Metrics>,
}

/// What happened to the records a sink was given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// Records delivered, by destination topic.
    pub delivered: BTreeMap<String, u64>,
    /// Records still undelivered when the grace period ended.
    pub undelivered: u64,
}

type InFlight =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Outgoing, Result<(), KafkaError>)> + Send>>;

impl KafkaSink {
    /// Creates the producer (librdkafka connects in the background; nothing blocks here).
    ///
    /// Errors: [`KafkaSinkError::Config`] when librdkafka rejects a property.
    pub fn new(
        cfg: &KafkaConfig,
        max_message_bytes: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaSinkError> {
        let producer: FutureProducer = cfg
            .producer_config(max_message_bytes)
            .create()
            .map_err(KafkaSinkError::Config)?;
        Ok(KafkaSink {
            producer,
            topic: cfg.topic.to_string(),
            error_topic: cfg.error_topic.as_ref().map(|t| t.to_string()),
            max_in_flight: cfg.max_in_flight.get(),
            metrics,
        })
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

    /// Hands one record to librdkafka, waiting (backpressure) while its local queue is full.
    async fn send(&self, out: Outgoing) -> Option<InFlight> {
        let topic = self.topic_for(out.destination)?.to_string();
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(out.record.headers.len());
            for (k, v) in &out.record.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let rec = FutureRecord::to(&topic)
                .key(out.record.key.as_bytes())
                .payload(out.record.value.as_ref())
                .headers(headers);
            match self.producer.send_result(rec) {
                Ok(fut) => {
                    return Some(Box::pin(async move {
                        let r = match fut.await {
                            Ok(Ok(_delivery)) => Ok(()),
                            Ok(Err((e, _msg))) => Err(e),
                            Err(_canceled) => Err(KafkaError::Canceled),
                        };
                        (out, r)
                    }))
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    // Enqueue itself failed (e.g. record too large for the client).
                    if is_permanent(&e) {
                        tracing::error!(error = %e, "record rejected by the producer; dropped");
                        self.metrics.drop_frame(DropReason::DeliveryRejected);
                        return None;
                    }
                    tracing::warn!(error = %e, "produce failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn on_delivered(&self, out: &Outgoing, report: &mut SinkReport) {
        let topic = self.topic_for(out.destination).unwrap_or_default();
        *report.delivered.entry(topic.to_string()).or_default() += 1;
        if out.destination == Destination::Frames {
            super::count_delivered(out, &self.metrics);
        } else {
            self.metrics.error_records.fetch_add(1, Relaxed);
        }
    }

    /// Publishes everything received on `rx` until it closes, then waits for the delivery
    /// reports of what is in flight. `deadline`, once it resolves (shutdown was requested),
    /// bounds that wait by `grace`: records still undelivered then are counted and the
    /// function returns.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Outgoing>,
        shutdown: tokio_util::sync::CancellationToken,
        grace: Duration,
    ) -> SinkReport {
        let mut report = SinkReport::default();
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        let mut input_open = true;
        let mut give_up_at: Option<Instant> = None;
        loop {
            if give_up_at.is_none() && shutdown.is_cancelled() {
                give_up_at = Some(Instant::now() + grace);
            }
            if !input_open && in_flight.is_empty() {
                break;
            }
            let can_take = input_open && in_flight.len() < self.max_in_flight;
            let deadline = async {
                match give_up_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => shutdown.cancelled().await,
                }
            };
            tokio::select! {
                biased;
                Some((out, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(()) => self.on_delivered(&out, &mut report),
                        Err(e) if is_permanent(&e) => {
                            tracing::error!(error = %e, seq = out.record.header(crate::record::header::SEQ), "Kafka rejected the record; dropped");
                            self.metrics.drop_frame(DropReason::DeliveryRejected);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, seq = out.record.header(crate::record::header::SEQ), "delivery failed; sending again");
                            self.metrics.set_last_error(format!("delivery failed: {e}"));
                            self.metrics.delivery_retries.fetch_add(1, Relaxed);
                            if let Some(f) = self.send(out).await {
                                in_flight.push(f);
                            }
                        }
                    }
                }
                msg = rx.recv(), if can_take => {
                    match msg {
                        Some(out) => {
                            if let Some(f) = self.send(out).await {
                                in_flight.push(f);
                            }
                        }
                        None => input_open = false,
                    }
                }
                _ = deadline => {
                    if give_up_at.is_some_and(|t| Instant::now() >= t) {
                        break;
                    }
                }
            }
        }
        // Grace period over (or everything delivered): count what is left.
        let left = super::count_undelivered(in_flight.len(), &mut rx, input_open, &self.metrics);
        report.undelivered = left;
        let _ = self.producer.flush(Duration::from_millis(100));
        report
    }
}
