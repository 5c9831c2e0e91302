//! The Google Cloud Pub/Sub sink (`sink.kind = "pubsub"`): frames published through
//! Pub/Sub's REST API (`topics.publish`), one request at a time per device so that its
//! ordering key keeps them in order, several frames per request when they queue.
//!
//! Delivery guarantee, as with Kafka: a record handed to the sink is acknowledged to the
//! forwarder (and so may leave the spool) only once Pub/Sub's answer names its message id;
//! a record Pub/Sub refuses for good (400, or one of its limits, checked here because the
//! emulator checks none, see [`message`]) is counted as `delivery_rejected`; everything else
//! is retried without limit while the agent runs:
//! - 401 and 403 (credentials, permissions: for the operator to fix) every second;
//! - 404 (the topic was deleted), 408, 429, 5xx, timeouts and failed connections with
//!   exponential backoff from 100 ms to 10 s.
//!
//! A 400 on a request of several messages is retried one message per request, so that only
//! the message Pub/Sub refuses is dropped. A request that timed out may have been stored;
//! sending it again may duplicate a frame downstream (its `edgecam.frame_id` tells).
//!
//! Batching: while a request is out, frames queue (up to `pubsub.max_in_flight`); the next
//! request carries all that queued, within Pub/Sub's 1,000 messages and 10 MB. So a frame
//! waits at most one request's round trip, and a slow link sends fewer, larger requests.

pub mod client;
pub mod message;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use hyper::Method;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::client::{Client, ClientError, Failure};
use self::message::Message;
use super::{AckTx, Destination, Outgoing, SinkMetrics, SinkReport};
use crate::config::PubsubConfig;
use crate::metrics::Metrics;

/// First wait before a request is sent again after a transient failure; it doubles up to
/// [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between tries after transient failures.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Wait between tries while Pub/Sub answers 401 or 403.
const AUTH_RETRY: Duration = Duration::from_secs(1);
/// Interval of the repeated warning while requests keep failing.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Why the Pub/Sub sink cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubsubError {
    /// The HTTP client could not be made.
    #[error("pubsub: {0}")]
    Client(#[from] ClientError),
    /// The topic does not exist and `pubsub.create_topic` is off.
    #[error(
        "pubsub: topic {topic} does not exist: create it (gcloud pubsub topics create {id} \
         --project {project}) or set pubsub.create_topic = true"
    )]
    TopicMissing {
        /// `projects/P/topics/T`.
        topic: String,
        /// The topic id.
        id: String,
        /// The project.
        project: String,
    },
    /// `pubsub.create_topic` is on and creating the topic failed.
    #[error("pubsub: creating topic {topic}: {message}")]
    CreateTopic {
        /// `projects/P/topics/T`.
        topic: String,
        /// Pub/Sub's answer.
        message: String,
    },
}

/// A record accepted by the sink, with its request entry.
struct Pending {
    out: Outgoing,
    message: Message,
}

/// One publish request in flight: its answer, and the records it carries, in order.
type Flight = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Result<Vec<String>, Failure>, Vec<Pending>)> + Send>,
>;

/// Publishes frames to one Pub/Sub topic. See the module docs.
pub struct PubsubSink {
    client: Arc<Client>,
    /// `projects/P/topics/T`.
    topic_path: String,
    /// The topic id (`pubsub.topic`), as reports and logs name it.
    topic: String,
    window: usize,
    metrics: Arc<Metrics>,
}

impl PubsubSink {
    /// Makes the client and checks the topic: it must exist, or is created when
    /// `pubsub.create_topic` is on. When the topic cannot be checked (no network at boot,
    /// credentials that may publish but not read topics, a server error), the sink starts
    /// anyway, warns, and keeps frames until Pub/Sub takes them.
    ///
    /// Errors: [`PubsubError`].
    pub async fn open(cfg: &PubsubConfig, metrics: Arc<Metrics>) -> Result<Self, PubsubError> {
        let client = Client::new(cfg)?;
        let topic_path = cfg.topic_path();
        match client.call(Method::GET, &topic_path, None).await {
            Ok((s, _)) if s.is_success() => {}
            Ok((s, _)) if s.as_u16() == 404 && cfg.create_topic => {
                match client
                    .call(Method::PUT, &topic_path, Some("{}".into()))
                    .await
                {
                    Ok((s, _)) if s.is_success() || s.as_u16() == 409 => {
                        tracing::info!(topic = %topic_path, "Pub/Sub topic created");
                    }
                    Ok((s, body)) => {
                        return Err(PubsubError::CreateTopic {
                            topic: topic_path,
                            message: Failure::of(s, &body).text().to_string(),
                        })
                    }
                    Err(f) => {
                        return Err(PubsubError::CreateTopic {
                            topic: topic_path,
                            message: f.text().to_string(),
                        })
                    }
                }
            }
            Ok((s, _)) if s.as_u16() == 404 => {
                return Err(PubsubError::TopicMissing {
                    topic: topic_path,
                    id: cfg.topic.clone(),
                    project: cfg.project.clone(),
                })
            }
            Ok((s, body)) => tracing::warn!(
                topic = %topic_path,
                error = Failure::of(s, &body).text(),
                "cannot check that the Pub/Sub topic exists; publishing anyway"
            ),
            Err(f) => tracing::warn!(
                topic = %topic_path,
                error = f.text(),
                "Pub/Sub not reachable at start; frames are kept until it is"
            ),
        }
        Ok(PubsubSink {
            client: Arc::new(client),
            topic_path,
            topic: cfg.topic.clone(),
            window: cfg.max_in_flight.get(),
            metrics,
        })
    }

    /// The request for the first `n` records of `queue`, taken out of it.
    fn request(&self, queue: &mut VecDeque<Pending>, n: usize) -> Flight {
        let batch: Vec<Pending> = queue.drain(..n).collect();
        let body = message::request_body(batch.iter().map(|p| &p.message));
        let (client, topic) = (self.client.clone(), self.topic_path.clone());
        Box::pin(async move {
            let count = batch.len();
            (client.publish(&topic, body, count).await, batch)
        })
    }

    /// Delivers what arrives on `rx` (see [`super::Sink::run`]).
    async fn run(
        self,
        mut rx: mpsc::Receiver<Outgoing>,
        acks: AckTx,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> SinkReport {
        let mut report = SinkReport::default();
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let mut flight: FuturesUnordered<Flight> = FuturesUnordered::new();
        let mut in_flight = 0usize;
        let mut input_open = true;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = INITIAL_BACKOFF;
        // After a 400 on a batch: this many records go one per request.
        let mut solo = 0usize;
        let mut give_up_at: Option<Instant> = None;
        let mut failures = 0u64;
        let mut last_warning: Option<Instant> = None;
        loop {
            if give_up_at.is_none() && shutdown.is_cancelled() {
                give_up_at = Some(Instant::now() + grace);
            }
            if !input_open && queue.is_empty() && in_flight == 0 {
                break;
            }
            if in_flight == 0 && retry_at.is_none() && !queue.is_empty() {
                let n = if solo > 0 {
                    1
                } else {
                    message::batch_len(queue.iter().map(|p| &p.message), self.window)
                };
                in_flight = n;
                flight.push(self.request(&mut queue, n));
            }
            let can_take = input_open && queue.len() + in_flight < self.window;
            let deadline = async {
                match give_up_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => shutdown.cancelled().await,
                }
            };
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some((result, batch)) = flight.next(), if in_flight > 0 => {
                    in_flight = 0;
                    match result {
                        Ok(_ids) => {
                            if failures > 0 {
                                tracing::info!(failed_requests = failures, "Pub/Sub delivers again");
                                failures = 0;
                            }
                            backoff = INITIAL_BACKOFF;
                            solo = solo.saturating_sub(batch.len());
                            for p in batch {
                                *report.delivered.entry(self.topic.clone()).or_default() += 1;
                                SinkMetrics::delivered(&*self.metrics, &p.out);
                                acks.delivered(&p.out, None);
                            }
                        }
                        Err(Failure::Rejected(why)) if batch.len() > 1 => {
                            // Find the message Pub/Sub refuses: one per request.
                            tracing::warn!(error = %why, messages = batch.len(), "Pub/Sub refused a publish request; sending its messages one by one");
                            solo = batch.len();
                            for p in batch.into_iter().rev() {
                                queue.push_front(p);
                            }
                        }
                        Err(Failure::Rejected(why)) => {
                            solo = solo.saturating_sub(1);
                            for p in batch {
                                tracing::error!(error = %why, "Pub/Sub refused a message; dropped");
                                self.metrics.rejected(&p.out);
                                acks.rejected(&p.out, &why);
                            }
                        }
                        Err(failure) => {
                            failures += 1;
                            let wait = match failure {
                                Failure::Auth(_) => AUTH_RETRY,
                                _ => backoff,
                            };
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            let now = Instant::now();
                            if last_warning.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
                                last_warning = Some(now);
                                let hint = match failure {
                                    Failure::Auth(_) => "check pubsub.credentials and the account's roles/pubsub.publisher",
                                    Failure::NotFound(_) => "the topic does not exist",
                                    _ => "retrying",
                                };
                                tracing::warn!(error = failure.text(), failed_requests = failures, retry_in_ms = wait.as_millis() as u64, hint, "Pub/Sub publish failed");
                            }
                            self.metrics.retried(failure.text());
                            retry_at = Some(now + wait);
                            for p in batch.into_iter().rev() {
                                queue.push_front(p);
                            }
                        }
                    }
                }
                msg = rx.recv(), if can_take => match msg {
                    Some(out) if out.destination == Destination::Errors => {
                        self.metrics.rejected(&out);
                        acks.rejected(&out, "the Pub/Sub sink has no error topic");
                    }
                    Some(out) => match message::to_message(&out.record) {
                        Ok(message) => queue.push_back(Pending { out, message }),
                        Err(e) => {
                            tracing::error!(error = %e, "frame breaks a Pub/Sub limit; dropped");
                            self.metrics.rejected(&out);
                            acks.rejected(&out, format!("Pub/Sub limit: {e}"));
                        }
                    },
                    None => input_open = false,
                },
                _ = retry => retry_at = None,
                _ = deadline => {
                    if give_up_at.is_some_and(|t| Instant::now() >= t) {
                        break;
                    }
                }
            }
        }
        report.undelivered = super::count_undelivered(
            queue.len() + in_flight,
            &mut rx,
            input_open,
            &*self.metrics,
            &acks,
        );
        report
    }
}

impl super::Sink for PubsubSink {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn window(&self) -> usize {
        self.window
    }

    fn run(
        self: Box<Self>,
        rx: mpsc::Receiver<Outgoing>,
        acks: AckTx,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> futures::future::BoxFuture<'static, SinkReport> {
        Box::pin((*self).run(rx, acks, shutdown, grace))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    use super::*;
    use crate::record::FrameRecord;
    use crate::sink::{Ack, Sink};

    /// What the fake Pub/Sub saw and does: the first `fail_first` publish requests answer
    /// `status`; a request holding a message with attribute `poison` answers 400.
    #[derive(Default)]
    struct Fake {
        fail_first: usize,
        status: u16,
        requests: AtomicUsize,
        batch_sizes: Mutex<Vec<usize>>,
        stored: Mutex<Vec<String>>,
    }

    async fn publish(State(fake): State<Arc<Fake>>, body: String) -> (StatusCode, String) {
        let n = fake.requests.fetch_add(1, Ordering::SeqCst);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let messages = v["messages"].as_array().unwrap();
        fake.batch_sizes.lock().unwrap().push(messages.len());
        if n < fake.fail_first {
            return (
                StatusCode::from_u16(fake.status).unwrap(),
                r#"{"error":{"message":"scripted failure"}}"#.into(),
            );
        }
        if messages
            .iter()
            .any(|m| m["attributes"]["poison"].is_string())
        {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"error":{"message":"Invalid message"}}"#.into(),
            );
        }
        let mut ids = Vec::new();
        for m in messages {
            let seq = m["attributes"]["edgecam.seq"].as_str().unwrap().to_string();
            fake.stored.lock().unwrap().push(seq.clone());
            ids.push(serde_json::Value::String(format!("id-{seq}")));
        }
        (
            StatusCode::OK,
            serde_json::json!({ "messageIds": ids }).to_string(),
        )
    }

    /// Serves the fake on a free port; `host:port`.
    async fn serve(fake: Arc<Fake>) -> String {
        let app = axum::Router::new()
            .route("/v1/projects/p/topics/t", get(|| async { "{}" }))
            .route("/v1/projects/p/topics/{call}", post(publish))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr.to_string()
    }

    fn config(host: String) -> PubsubConfig {
        let mut cfg: PubsubConfig = toml::from_str("project = \"p\"\ntopic = \"t\"\n").unwrap();
        cfg.emulator_host = Some(host);
        cfg
    }

    fn outgoing(seq: u64, poison: bool) -> Outgoing {
        let mut headers = vec![
            ("edgecam.device".into(), "cam".to_string()),
            ("edgecam.seq".into(), seq.to_string()),
        ];
        if poison {
            headers.push(("poison".into(), "yes".to_string()));
        }
        Outgoing {
            destination: Destination::Frames,
            record: FrameRecord {
                key: "cam".into(),
                headers,
                value: bytes::Bytes::from(vec![0xFF, 0xD8, seq as u8, 0xFF, 0xD9]),
            },
            captured_at: std::time::SystemTime::now(),
            ticket: seq + 1,
        }
    }

    /// Sends `records` through a sink against `fake`; the acks by ticket and the report.
    async fn deliver(fake: Arc<Fake>, records: Vec<Outgoing>) -> (Vec<Ack>, SinkReport) {
        let host = serve(fake).await;
        let metrics = Arc::new(Metrics::default());
        let sink = PubsubSink::open(&config(host), metrics).await.unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        for r in records {
            tx.send(r).await.unwrap();
        }
        drop(tx);
        let report = tokio::time::timeout(
            Duration::from_secs(30),
            Box::new(sink).run(
                rx,
                AckTx::new(ack_tx),
                CancellationToken::new(),
                Duration::from_secs(5),
            ),
        )
        .await
        .unwrap();
        let mut acks = Vec::new();
        while let Ok(a) = ack_rx.try_recv() {
            acks.push(a);
        }
        acks.sort_by_key(Ack::ticket);
        (acks, report)
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_every_message_has_its_id() {
        let fake = Arc::new(Fake {
            fail_first: 3,
            status: 503,
            ..Fake::default()
        });
        let (acks, report) =
            deliver(fake.clone(), (0..20).map(|s| outgoing(s, false)).collect()).await;
        assert_eq!(report.delivered.get("t"), Some(&20));
        assert_eq!(report.undelivered, 0);
        assert!(
            acks.iter().all(|a| matches!(a, Ack::Delivered(_, None))),
            "{acks:?}"
        );
        assert_eq!(acks.len(), 20);
        // Stored once each, in order, after three refused tries.
        let stored = fake.stored.lock().unwrap().clone();
        assert_eq!(stored, (0..20).map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(fake.requests.load(Ordering::SeqCst) >= 4);
        // Frames that queued while a request was out went together.
        assert!(fake.batch_sizes.lock().unwrap().iter().any(|&n| n > 1));
    }

    #[tokio::test]
    async fn a_refused_batch_is_split_so_only_the_bad_message_is_dropped() {
        let fake = Arc::new(Fake::default());
        let records = (0..6).map(|s| outgoing(s, s == 3)).collect();
        let (acks, report) = deliver(fake.clone(), records).await;
        assert_eq!(report.delivered.get("t"), Some(&5));
        for a in &acks {
            match a {
                Ack::Rejected(4, why) => assert!(why.contains("Invalid message"), "{why}"),
                Ack::Delivered(t, None) => assert_ne!(*t, 4),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(acks.len(), 6);
        let stored = fake.stored.lock().unwrap().clone();
        assert_eq!(stored, ["0", "1", "2", "4", "5"]);
    }

    #[tokio::test]
    async fn auth_failures_are_retried_and_a_limit_breach_is_refused_before_sending() {
        let fake = Arc::new(Fake {
            fail_first: 2,
            status: 403,
            ..Fake::default()
        });
        let mut bad = outgoing(1, false);
        bad.record
            .headers
            .push(("edgecam.note".into(), "x".repeat(1025)));
        let (acks, report) = deliver(fake.clone(), vec![outgoing(0, false), bad]).await;
        assert_eq!(report.delivered.get("t"), Some(&1));
        assert_eq!(acks[0], Ack::Delivered(1, None));
        assert!(matches!(&acks[1], Ack::Rejected(2, why) if why.contains("1025-byte value")));
        // The over-long attribute never reached the server.
        assert_eq!(fake.stored.lock().unwrap().clone(), ["0"]);
        assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
    }
}
