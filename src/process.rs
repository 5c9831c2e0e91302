//! `edgecam process`: run a program on every frame of a topic and publish its answers.
//!
//! N long-lived workers (`COMMAND`, started once, because a model loads once) speak a line
//! protocol a 20-line script can follow (see `examples/people.py`):
//!
//! ```text
//! edgecam → worker (stdin):  {"headers":{…},"topic":"t","partition":0,"offset":42,"length":N}\n
//!                            then the N bytes of the image
//! worker → edgecam (stdout): one JSON object on one line, e.g. {"people":2,"boxes":[[x,y,w,h],…]}
//! ```
//!
//! The worker's stderr goes to edgecam's. Each answer is published to the results topic,
//! keyed by device, with the frame's `edgecam.frame_id`, `edgecam.seq`, `edgecam.device`,
//! `edgecam.captured_at` and where it was read (`edgecam.source_topic`,
//! `edgecam.source_partition`, `edgecam.source_offset`); the value is the worker's JSON.
//!
//! Guarantees: at least once. A frame's offset is committed only once its result (or its
//! dead letter) has a delivery report, and offsets are committed in order per partition: a
//! later frame finished first waits for the earlier ones. Results of one partition may be
//! published out of order when several workers run (`edgecam.seq` orders them). A worker that
//! exits, or gives no answer within `--timeout-ms`, is restarted and the frame tried once
//! more; then the frame goes to the dead-letter topic (the image with its headers and
//! `edgecam.reason` = `worker_timeout`, `worker_crashed` or `bad_answer`) and processing goes
//! on. At most one frame per worker is in hand, plus one waiting per worker.
//!
//! From Pub/Sub (`--pubsub-subscription`): the same workers and protocol (the first line
//! names `subscription` and `message_id` instead of topic, partition and offset); answers and
//! dead letters are published to Pub/Sub topics of the subscription's project, with the
//! same attributes (`edgecam.source_subscription`, `edgecam.source_message_id` say where the
//! frame was read); a message is acknowledged once its answer (or dead letter) is
//! published, and its ack deadline is extended while it is in hand.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::consume::pubsub::{PubsubSource, Pulled};
use crate::record::header;
use crate::sink::pubsub::client::Client;

/// Options of `edgecam process`.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The topic of frames.
    pub topic: String,
    /// Consumer group.
    pub group_id: String,
    /// Where answers go.
    pub results_topic: String,
    /// Where frames that failed twice go (`None`: logged and counted only).
    pub dead_letter_topic: Option<String>,
    /// Worker processes, at least 1.
    pub workers: usize,
    /// How long a worker may take for one frame.
    pub timeout: Duration,
    /// The worker command and its arguments.
    pub command: Vec<String>,
    /// Extra librdkafka properties for the consumer and the producer (`-X`).
    pub properties: Vec<(String, String)>,
    /// Stop after this many frames done (`None`: until stopped).
    pub max_frames: Option<u64>,
    /// Stop when no frame arrived for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (`--listen`).
    pub listen: Option<std::net::SocketAddr>,
    /// Show a progress line (on a terminal).
    pub progress: bool,
    /// Bounds on each frame's image: a JPEG or PNG over them, or broken, goes to the
    /// dead-letter topic (`frame_too_large`, `bad_frame`) without reaching a worker.
    pub limits: crate::limits::Limits,
    /// Read this Pub/Sub subscription instead of Kafka (`--pubsub-subscription`); then
    /// `results_topic` and `dead_letter_topic` are Pub/Sub topics (`projects/P/topics/T`, or
    /// `T` in the subscription's project) and the Kafka fields are not used.
    pub pubsub: Option<PubsubSource>,
}

/// What [`run`] did.
#[derive(Debug, Default)]
pub struct ProcessReport {
    /// Frames answered and published to the results topic.
    pub processed: u64,
    /// Frames given up on, by reason (`worker_timeout`, `worker_crashed`, `bad_answer`).
    pub failed: BTreeMap<&'static str, u64>,
    /// Workers started again after a crash or a timeout.
    pub restarts: u64,
}

impl ProcessReport {
    /// One line for the end of a run.
    pub fn summary(&self) -> String {
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        format!(
            "processed {} frames, failed {} ({}), {} worker restarts",
            self.processed,
            self.failed.values().sum::<u64>(),
            if failed.is_empty() {
                "none".into()
            } else {
                failed.join(", ")
            },
            self.restarts
        )
    }
}

/// Why processing could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// `--listen` cannot be bound.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// Pub/Sub refused the subscription or a topic, for good (not found, invalid).
    #[error("pubsub: {0}")]
    Pubsub(String),
    /// The worker command cannot be started.
    #[error("worker {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A worker process and its pipes.
struct Child {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: BufReader<tokio::process::ChildStdout>,
}

/// Why a frame got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Crashed,
    BadAnswer,
    /// A JPEG or PNG refused by `[limits]` before any worker saw it: `frame_too_large` or
    /// `bad_frame`.
    Refused(&'static str),
}

impl Failure {
    fn reason(self) -> &'static str {
        match self {
            Failure::Timeout => "worker_timeout",
            Failure::Crashed => "worker_crashed",
            Failure::BadAnswer => "bad_answer",
            Failure::Refused(reason) => reason,
        }
    }
}

/// A frame that says it is a JPEG or a PNG (by its first bytes) checked against `limits`
/// as the agent checks its input, without decoding: a forged or broken image never reaches
/// a worker. Other values (zstd pixels, anything else) go to the workers as they are.
fn refused(value: &[u8], limits: &crate::limits::Limits) -> Option<Failure> {
    let image =
        value.starts_with(&[0xFF, 0xD8]) || value.starts_with(&crate::inspect::PNG_SIGNATURE);
    image
        .then(|| crate::inspect::image(value, limits).err())
        .flatten()
        .map(|r| Failure::Refused(r.reason()))
}

fn spawn(command: &[String]) -> Result<Child, ProcessError> {
    let mut c = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            command: command[0].clone(),
            source,
        })?;
    Ok(Child {
        stdin: c.stdin.take().expect("piped"),
        stdout: BufReader::new(c.stdout.take().expect("piped")),
        child: c,
    })
}

/// Where a frame was read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum At {
    /// A Kafka record.
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A Pub/Sub message, acknowledged by `ack_id`.
    Pubsub {
        subscription: String,
        message_id: String,
        ack_id: String,
    },
}

/// A frame handed to a worker: the image, its key, its text headers (Kafka) or attributes
/// (Pub/Sub), and where it was read.
struct Job {
    value: Vec<u8>,
    key: Vec<u8>,
    headers: Vec<(String, String)>,
    at: At,
}

impl Job {
    fn kafka(msg: &impl Message) -> Job {
        Job {
            value: msg.payload().unwrap_or_default().to_vec(),
            key: msg.key().unwrap_or_default().to_vec(),
            headers: msg
                .headers()
                .map(|h| {
                    h.iter()
                        .filter_map(|h| {
                            let v = std::str::from_utf8(h.value?).ok()?;
                            Some((h.key.to_string(), v.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            at: At::Kafka {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
            },
        }
    }

    fn pubsub(m: Pulled, subscription: &str) -> Job {
        Job {
            key: m.ordering_key.into_bytes(),
            headers: m.attributes.into_iter().collect(),
            value: m.data,
            at: At::Pubsub {
                subscription: subscription.to_string(),
                message_id: m.message_id,
                ack_id: m.ack_id,
            },
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers of its result (or dead letter): the frame's identity, where it was
    /// read, and `extra`.
    fn result_headers(&self, extra: Option<(&str, &str)>) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = [
            header::FRAME_ID,
            header::SEQ,
            header::DEVICE,
            header::CAPTURED_AT,
        ]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), self.header(name)?.to_string())))
        .collect();
        match &self.at {
            At::Kafka {
                topic,
                partition,
                offset,
            } => h.extend([
                ("edgecam.source_topic".into(), topic.clone()),
                ("edgecam.source_partition".into(), partition.to_string()),
                ("edgecam.source_offset".into(), offset.to_string()),
            ]),
            At::Pubsub {
                subscription,
                message_id,
                ..
            } => h.extend([
                ("edgecam.source_subscription".into(), subscription.clone()),
                ("edgecam.source_message_id".into(), message_id.clone()),
            ]),
        }
        if let Some((k, v)) = extra {
            h.push((k.to_string(), v.to_string()));
        }
        h
    }

    /// The first protocol line.
    fn request_line(&self) -> String {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut line = match &self.at {
            At::Kafka {
                topic,
                partition,
                offset,
            } => serde_json::json!({
                "headers": headers,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "length": self.value.len(),
            }),
            At::Pubsub {
                subscription,
                message_id,
                ..
            } => serde_json::json!({
                "headers": headers,
                "subscription": subscription,
                "message_id": message_id,
                "length": self.value.len(),
            }),
        }
        .to_string();
        line.push('\n');
        line
    }

    /// For log lines: where the frame was read.
    fn place(&self) -> String {
        match &self.at {
            At::Kafka {
                partition, offset, ..
            } => format!("{partition}:{offset}"),
            At::Pubsub { message_id, .. } => format!("message {message_id}"),
        }
    }
}

/// Sends `job` to `child` and reads its answer within `timeout`.
async fn ask(child: &mut Child, job: &Job, timeout: Duration) -> Result<String, Failure> {
    let exchange = async {
        child
            .stdin
            .write_all(job.request_line().as_bytes())
            .await
            .map_err(|_| Failure::Crashed)?;
        child
            .stdin
            .write_all(&job.value)
            .await
            .map_err(|_| Failure::Crashed)?;
        child.stdin.flush().await.map_err(|_| Failure::Crashed)?;
        let mut answer = String::new();
        let n = child
            .stdout
            .read_line(&mut answer)
            .await
            .map_err(|_| Failure::Crashed)?;
        if n == 0 {
            return Err(Failure::Crashed);
        }
        match serde_json::from_str::<serde_json::Value>(answer.trim()) {
            Ok(v) if v.is_object() => Ok(v.to_string()),
            _ => Err(Failure::BadAnswer),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// Where answers and dead letters go.
#[derive(Clone)]
enum Publisher {
    Kafka(FutureProducer),
    /// Topics are `projects/P/topics/T`.
    Pubsub(Arc<Client>),
}

impl Publisher {
    /// Publishes until it is stored: Kafka's delivery report, or Pub/Sub's message id
    /// (retrying a failure every second; a message Pub/Sub can never take is logged and
    /// dropped, as Kafka's producer reports a record too large).
    async fn publish(&self, topic: &str, key: &[u8], value: &[u8], headers: &[(String, String)]) {
        match self {
            Publisher::Kafka(producer) => {
                let mut h = OwnedHeaders::new();
                for (k, v) in headers {
                    h = h.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                loop {
                    let record = FutureRecord::to(topic)
                        .key(key)
                        .payload(value)
                        .headers(h.clone());
                    match producer.send(record, Duration::from_secs(30)).await {
                        Ok(_) => return,
                        Err((e, _)) => {
                            tracing::warn!(error = %e, topic, "publishing a result failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
            Publisher::Pubsub(client) => {
                let record = crate::record::FrameRecord {
                    key: String::from_utf8_lossy(key).into_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.clone().into(), v.clone()))
                        .collect(),
                    value: bytes::Bytes::copy_from_slice(value),
                };
                let message = match crate::sink::pubsub::message::to_message(&record) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!(error = %e, topic, "Pub/Sub cannot take this answer; dropped");
                        return;
                    }
                };
                let body = crate::sink::pubsub::message::request_body([&message]);
                loop {
                    match client.publish(topic, body.clone(), 1).await {
                        Ok(_) => return,
                        Err(f) => {
                            tracing::warn!(
                                error = f.text(),
                                topic,
                                "publishing a result failed; retrying"
                            );
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }
    }
}

/// Counters shared by the workers, read by `/metrics` at scrape time and by the summary.
struct Counts {
    processed: AtomicU64,
    restarts: AtomicU64,
    failed: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    /// Seconds from handing a frame to a worker to its answer (answered frames).
    seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Counts {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
        Counts {
            processed: AtomicU64::default(),
            restarts: AtomicU64::default(),
            failed: std::sync::Mutex::default(),
            // 1 ms … 32 s.
            seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

/// `/metrics` of `edgecam process`: `edgecam_process_frames_processed_total`,
/// `edgecam_process_frames_failed_total{reason}`, `edgecam_process_worker_restarts_total`
/// and the `edgecam_process_seconds` histogram, labelled `group`.
#[derive(Debug)]
struct Collector(Arc<Counts>);

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counts").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::http::prom::{build_info, counter, counters_by};
        let c = &self.0;
        build_info(&mut e)?;
        counter(
            &mut e,
            "process_frames_processed",
            "Frames answered by a worker and published to the results topic",
            c.processed.load(Relaxed),
        )?;
        let failed = c.failed.lock().expect("not poisoned").clone();
        counters_by(
            &mut e,
            "process_frames_failed",
            "Frames given up on after a retry, by reason",
            "reason",
            failed.iter().map(|(r, n)| (*r, *n)),
        )?;
        counter(
            &mut e,
            "process_worker_restarts",
            "Workers started again after a crash or a timeout",
            c.restarts.load(Relaxed),
        )
    }
}

/// The registry of `/metrics`, labelled with the consumer group.
fn registry(group: &str, counts: Arc<Counts>) -> prometheus_client::registry::Registry {
    let mut root = prometheus_client::registry::Registry::with_prefix_and_labels(
        "edgecam",
        [(
            std::borrow::Cow::Borrowed("group"),
            std::borrow::Cow::Owned(group.to_string()),
        )]
        .into_iter(),
    );
    root.register_with_unit(
        "process",
        "Time from handing a frame to a worker to its answer",
        prometheus_client::registry::Unit::Seconds,
        counts.seconds.clone(),
    );
    root.register_collector(Box::new(Collector(counts)));
    root
}

/// One worker: takes frames from `jobs` until it closes; reports where each was read to
/// `done` once its answer or dead letter is stored.
async fn worker(
    opts: Arc<ProcessOptions>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    done: mpsc::UnboundedSender<At>,
    publisher: Publisher,
    counts: Arc<Counts>,
) -> Result<(), ProcessError> {
    let mut child = Some(spawn(&opts.command)?);
    loop {
        let Some(job) = jobs.lock().await.recv().await else {
            break;
        };
        let mut answer = Err(Failure::Crashed);
        if let Some(f) = refused(&job.value, &opts.limits) {
            answer = Err(f);
        }
        for attempt in 0..2 {
            if matches!(answer, Err(Failure::Refused(_))) {
                break;
            }
            let c = match child.as_mut() {
                Some(c) => c,
                None => child.insert(spawn(&opts.command)?),
            };
            let started = std::time::Instant::now();
            answer = ask(c, &job, opts.timeout).await;
            if answer.is_ok() {
                counts.seconds.observe(started.elapsed().as_secs_f64());
            }
            match answer {
                Ok(_) => break,
                Err(f) => {
                    tracing::warn!(
                        reason = f.reason(),
                        frame = job.place(),
                        attempt = attempt + 1,
                        "worker failed on a frame; restarting it"
                    );
                    if let Some(mut c) = child.take() {
                        let _ = c.child.kill().await;
                    }
                    counts.restarts.fetch_add(1, Relaxed);
                }
            }
        }
        match answer {
            Ok(json) => {
                publisher
                    .publish(
                        &opts.results_topic,
                        &job.key,
                        json.as_bytes(),
                        &job.result_headers(None),
                    )
                    .await;
                counts.processed.fetch_add(1, Relaxed);
            }
            Err(f) => {
                *counts
                    .failed
                    .lock()
                    .expect("not poisoned")
                    .entry(f.reason())
                    .or_default() += 1;
                match &opts.dead_letter_topic {
                    Some(t) => {
                        let headers = job.result_headers(Some((header::REASON, f.reason())));
                        publisher.publish(t, &job.key, &job.value, &headers).await;
                    }
                    None => tracing::error!(
                        reason = f.reason(),
                        frame = job.place(),
                        "frame failed twice and there is no --dead-letter-topic; skipped"
                    ),
                }
            }
        }
        let _ = done.send(job.at);
    }
    if let Some(mut c) = child {
        drop(c.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
    }
    Ok(())
}

/// Offsets in hand per partition; [`Ledger::done`] says which offset may be stored, so
/// commits follow the partition's order whatever order frames finish in.
#[derive(Default)]
struct Ledger(HashMap<i32, BTreeMap<i64, bool>>);

impl Ledger {
    fn taken(&mut self, partition: i32, offset: i64) {
        self.0.entry(partition).or_default().insert(offset, false);
    }

    /// Marks `offset` done; the highest offset whose predecessors are all done, if it moved.
    fn done(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.0.get_mut(&partition)?;
        if let Some(d) = p.get_mut(&offset) {
            *d = true;
        }
        let mut last = None;
        while let Some((&o, &d)) = p.iter().next() {
            if !d {
                break;
            }
            p.remove(&o);
            last = Some(o);
        }
        last
    }

    fn in_hand(&self) -> usize {
        self.0.values().map(BTreeMap::len).sum()
    }
}

/// `topic` as a Pub/Sub topic path: itself when it is one (`projects/P/topics/T`), else
/// `T` in the project of `subscription` (`projects/P/subscriptions/S`).
fn pubsub_topic(topic: &str, subscription: &str) -> String {
    if topic.starts_with("projects/") {
        return topic.to_string();
    }
    let project = subscription.split('/').nth(1).unwrap_or_default();
    format!("projects/{project}/topics/{topic}")
}

/// What the intake loop needs of the rest of [`run`].
struct Intake<'a> {
    opts: &'a ProcessOptions,
    shutdown: &'a CancellationToken,
    jobs: mpsc::Sender<Job>,
    done: mpsc::UnboundedReceiver<At>,
    counts: &'a Counts,
    bar: &'a indicatif::ProgressBar,
    started: std::time::Instant,
    finished: u64,
}

impl Intake<'_> {
    /// Counts a frame done and updates the progress line.
    fn finished_one(&mut self) {
        self.finished += 1;
        self.bar.set_message(format!(
            "{} processed, {} failed, {} restarts, {:.1} frames/s",
            self.counts.processed.load(Relaxed),
            self.counts
                .failed
                .lock()
                .expect("not poisoned")
                .values()
                .sum::<u64>(),
            self.counts.restarts.load(Relaxed),
            self.finished as f64 / self.started.elapsed().as_secs_f64().max(0.001)
        ));
    }
}

/// When to stop for lack of frames: `timeout` after `last_activity`, or never.
async fn idle(timeout: Option<Duration>, last_activity: tokio::time::Instant) {
    match timeout {
        Some(t) => tokio::time::sleep_until(last_activity + t).await,
        None => std::future::pending().await,
    }
}

/// Processes frames until `max_frames`, the idle timeout or `shutdown`; then finishes the
/// frames in hand (within 30 s), stops the workers and commits (Kafka) or acknowledges
/// (Pub/Sub).
///
/// Errors: [`ProcessError`] when the clients cannot be made, a worker cannot be started,
/// or (Pub/Sub) the subscription does not exist.
pub async fn run(
    mut opts: ProcessOptions,
    shutdown: CancellationToken,
) -> Result<ProcessReport, ProcessError> {
    let (publisher, kafka) = match &opts.pubsub {
        Some(source) => {
            let client = Client::with(
                source.base_url.clone(),
                source.credentials.as_ref(),
                source.emulator,
                Duration::from_secs(30),
            )
            .map_err(|e| ProcessError::Pubsub(e.to_string()))?;
            opts.results_topic = pubsub_topic(&opts.results_topic, &source.subscription);
            opts.dead_letter_topic = opts
                .dead_letter_topic
                .as_deref()
                .map(|t| pubsub_topic(t, &source.subscription));
            (Publisher::Pubsub(Arc::new(client)), None)
        }
        None => {
            let mut common = ClientConfig::new();
            common.set("bootstrap.servers", &opts.bootstrap_servers);
            for (k, v) in &opts.properties {
                common.set(k, v);
            }
            let consumer: StreamConsumer = common
                .clone()
                .set("group.id", &opts.group_id)
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "true")
                .set("enable.auto.offset.store", "false")
                .create()?;
            let producer: FutureProducer = common
                .clone()
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create()?;
            consumer.subscribe(&[&opts.topic])?;
            (Publisher::Kafka(producer), Some(consumer))
        }
    };
    let opts = Arc::new(opts);
    let counts = Arc::new(Counts::default());
    let http_stop = shutdown.child_token();
    let _http_guard = http_stop.clone().drop_guard();
    if let Some(addr) = opts.listen {
        crate::http::serve_service(
            addr,
            registry(&opts.group_id, counts.clone()),
            Arc::new(|_, _| Vec::new()),
            Duration::from_secs(60),
            http_stop.clone(),
        )
        .await?;
    }
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(250));
        b.set_message("waiting for frames");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let workers = opts.workers.max(1);
    let (job_tx, job_rx) = mpsc::channel::<Job>(workers);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<At>();
    let mut pool = tokio::task::JoinSet::new();
    for _ in 0..workers {
        pool.spawn(worker(
            opts.clone(),
            job_rx.clone(),
            done_tx.clone(),
            publisher.clone(),
            counts.clone(),
        ));
    }
    drop(done_tx);
    let intake = Intake {
        opts: &opts,
        shutdown: &shutdown,
        jobs: job_tx,
        done: done_rx,
        counts: &counts,
        bar: &bar,
        started: std::time::Instant::now(),
        finished: 0,
    };
    let intake = match (&kafka, &opts.pubsub) {
        (Some(consumer), _) => from_kafka(intake, consumer).await,
        (None, Some(source)) => from_pubsub(intake, &source.subscription, &publisher).await,
        (None, None) => unreachable!("a Kafka consumer or a Pub/Sub source"),
    };
    while let Some(r) = pool.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(e);
        }
    }
    intake?;
    bar.finish_and_clear();
    if let Some(consumer) = &kafka {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
    }
    let failed = counts.failed.lock().expect("not poisoned").clone();
    Ok(ProcessReport {
        processed: counts.processed.load(Relaxed),
        failed,
        restarts: counts.restarts.load(Relaxed),
    })
}

/// Frames of a Kafka consumer group to the workers; each offset stored once it and every
/// earlier one of its partition is done. Returns when it stops taking frames and the frames
/// in hand are done (at most 30 s later); dropping the job sender stops the workers.
async fn from_kafka(mut x: Intake<'_>, consumer: &StreamConsumer) -> Result<(), ProcessError> {
    let mut ledger = Ledger::default();
    // Frames taken from the topic: a frame done before an earlier one stays in the ledger
    // until that one is done, so the ledger's size does not count them.
    let mut taken = 0u64;
    let mut last_activity = tokio::time::Instant::now();
    let topic = x.opts.topic.clone();
    let store = |partition: i32, offset: i64| {
        if let Err(e) = consumer.store_offset(&topic, partition, offset) {
            tracing::warn!(error = %e, partition, offset, "storing an offset failed");
        }
    };
    let on_done = |ledger: &mut Ledger, at: At| {
        if let At::Kafka {
            partition, offset, ..
        } = at
        {
            if let Some(o) = ledger.done(partition, offset) {
                store(partition, o);
            }
        }
    };
    loop {
        if x.opts.max_frames.is_some_and(|m| taken >= m) {
            break;
        }
        tokio::select! {
            _ = x.shutdown.cancelled() => break,
            _ = idle(x.opts.idle_timeout, last_activity) => break,
            Some(at) = x.done.recv() => {
                x.finished_one();
                last_activity = tokio::time::Instant::now();
                on_done(&mut ledger, at);
            }
            m = consumer.recv() => match m {
                Ok(m) => {
                    ledger.taken(m.partition(), m.offset());
                    let job = Job::kafka(&m);
                    drop(m);
                    taken += 1;
                    last_activity = tokio::time::Instant::now();
                    if x.jobs.send(job).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "consume error"),
            },
        }
    }
    // Finish the frames in hand; the workers stop when the job channel closes.
    drop(x.jobs);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ledger.in_hand() > 0 {
        match tokio::time::timeout_at(deadline, x.done.recv()).await {
            Ok(Some(at)) => on_done(&mut ledger, at),
            _ => break,
        }
    }
    Ok(())
}

/// Wait after an empty pull; it doubles up to 1 s.
const EMPTY_PULL_WAIT: Duration = Duration::from_millis(100);
/// Ack deadline set for messages in hand, seconds, renewed every third of it.
const PUBSUB_ACK_DEADLINE_SECS: u64 = 60;

/// Messages of a Pub/Sub subscription to the workers, pulled no faster than the workers
/// take them; each acknowledged once its answer (or dead letter) is published. Messages in
/// hand have their ack deadline extended to [`PUBSUB_ACK_DEADLINE_SECS`] every 20 s.
async fn from_pubsub(
    mut x: Intake<'_>,
    subscription: &str,
    publisher: &Publisher,
) -> Result<(), ProcessError> {
    use hyper::Method;
    let Publisher::Pubsub(client) = publisher else {
        unreachable!("a Pub/Sub source publishes to Pub/Sub")
    };
    let client: &Client = client;
    // Ack ids in hand (pulled, not yet acknowledged).
    let mut in_hand: std::collections::HashSet<String> = Default::default();
    let mut taken = 0u64;
    let mut last_activity = tokio::time::Instant::now();
    let mut empty_wait = EMPTY_PULL_WAIT;
    let mut next_pull = tokio::time::Instant::now();
    let extend_every = Duration::from_secs(PUBSUB_ACK_DEADLINE_SECS / 3);
    let mut extend_at = tokio::time::Instant::now() + extend_every;
    let capacity = 2 * x.opts.workers.max(1);
    let mut stopping = None;
    loop {
        if stopping.is_none() && x.opts.max_frames.is_some_and(|m| taken >= m) {
            stopping = Some(tokio::time::Instant::now() + Duration::from_secs(30));
        }
        if let Some(deadline) = stopping {
            if in_hand.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let room = capacity.saturating_sub(in_hand.len());
        let want = x
            .opts
            .max_frames
            .map_or(room as u64, |m| m.saturating_sub(taken).min(room as u64));
        let pull = stopping.is_none() && want > 0;
        tokio::select! {
            _ = x.shutdown.cancelled(), if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + Duration::from_secs(30));
            }
            _ = idle(x.opts.idle_timeout, last_activity), if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + Duration::from_secs(30));
            }
            _ = tokio::time::sleep_until(stopping.unwrap_or(extend_at)), if stopping.is_some() => {}
            Some(at) = x.done.recv() => {
                x.finished_one();
                last_activity = tokio::time::Instant::now();
                if let At::Pubsub { ack_id, .. } = at {
                    in_hand.remove(&ack_id);
                    crate::consume::pubsub::ack(client, subscription, &[ack_id]).await;
                }
            }
            _ = tokio::time::sleep_until(extend_at) => {
                extend_at = tokio::time::Instant::now() + extend_every;
                if !in_hand.is_empty() {
                    let ids: Vec<&String> = in_hand.iter().collect();
                    let body = serde_json::json!({
                        "ackIds": ids,
                        "ackDeadlineSeconds": PUBSUB_ACK_DEADLINE_SECS,
                    });
                    let path = format!("{subscription}:modifyAckDeadline");
                    if let Err(f) = client.call(Method::POST, &path, Some(body.to_string())).await {
                        tracing::warn!(error = f.text(), "could not extend the ack deadline");
                    }
                }
            }
            _ = tokio::time::sleep_until(next_pull), if pull => {
                let body = serde_json::json!({ "maxMessages": want, "returnImmediately": true });
                let answer = client
                    .call(Method::POST, &format!("{subscription}:pull"), Some(body.to_string()))
                    .await;
                let batch = match answer {
                    Ok((status, body)) if status.is_success() => {
                        crate::consume::pubsub::parse_pull(&body).map_err(ProcessError::Pubsub)?
                    }
                    Ok((status, body)) => {
                        let f = crate::sink::pubsub::client::Failure::of(status, &body);
                        if matches!(f, crate::sink::pubsub::client::Failure::NotFound(_)) {
                            return Err(ProcessError::Pubsub(format!(
                                "subscription {subscription} does not exist ({})", f.text()
                            )));
                        }
                        tracing::warn!(error = f.text(), subscription, "pull failed; retrying");
                        next_pull = tokio::time::Instant::now() + Duration::from_secs(1);
                        continue;
                    }
                    Err(f) => {
                        tracing::warn!(error = f.text(), subscription, "pull failed; retrying");
                        next_pull = tokio::time::Instant::now() + Duration::from_secs(1);
                        continue;
                    }
                };
                if batch.is_empty() {
                    next_pull = tokio::time::Instant::now() + empty_wait;
                    empty_wait = (empty_wait * 2).min(Duration::from_secs(1));
                    continue;
                }
                empty_wait = EMPTY_PULL_WAIT;
                last_activity = tokio::time::Instant::now();
                for m in batch {
                    taken += 1;
                    in_hand.insert(m.ack_id.clone());
                    // The channel holds one job per worker; `capacity` bounds the rest.
                    if x.jobs.send(Job::pubsub(m, subscription)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    // What is still in hand after the grace period is handed back for redelivery.
    if !in_hand.is_empty() {
        let ids: Vec<&String> = in_hand.iter().collect();
        let body = serde_json::json!({ "ackIds": ids, "ackDeadlineSeconds": 0 });
        let _ = client
            .call(
                Method::POST,
                &format!("{subscription}:modifyAckDeadline"),
                Some(body.to_string()),
            )
            .await;
    }
    drop(x.jobs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_in_partition_order_whatever_order_frames_finish_in() {
        let mut l = Ledger::default();
        for o in [10, 11, 12] {
            l.taken(0, o);
        }
        l.taken(1, 5);
        assert_eq!(l.done(0, 11), None, "10 is still in hand");
        assert_eq!(l.done(1, 5), Some(5));
        assert_eq!(l.done(0, 10), Some(11));
        assert_eq!(l.in_hand(), 1);
        assert_eq!(l.done(0, 12), Some(12));
        assert_eq!(l.in_hand(), 0);
    }
}
