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

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::consume::Incoming;
use crate::record::header;

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

/// Why a try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Crashed,
    BadAnswer,
}

impl Failure {
    fn reason(self) -> &'static str {
        match self {
            Failure::Timeout => "worker_timeout",
            Failure::Crashed => "worker_crashed",
            Failure::BadAnswer => "bad_answer",
        }
    }
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

/// The first protocol line for `msg`.
fn request_line(msg: &OwnedMessage) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = msg
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| {
                    let v = std::str::from_utf8(h.value?).ok()?;
                    Some((h.key.to_string(), serde_json::Value::String(v.to_string())))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut line = serde_json::json!({
        "headers": headers,
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "length": msg.payload().map_or(0, <[u8]>::len),
    })
    .to_string();
    line.push('\n');
    line
}

/// Sends `msg` to `child` and reads its answer within `timeout`.
async fn ask(child: &mut Child, msg: &OwnedMessage, timeout: Duration) -> Result<String, Failure> {
    let exchange = async {
        child
            .stdin
            .write_all(request_line(msg).as_bytes())
            .await
            .map_err(|_| Failure::Crashed)?;
        child
            .stdin
            .write_all(msg.payload().unwrap_or_default())
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

/// A frame in hand and what became of it.
struct Done {
    partition: i32,
    offset: i64,
}

/// The result record's headers: the frame's identity and where it was read.
fn result_headers(msg: &OwnedMessage, extra: Option<(&str, &str)>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    for name in [
        header::FRAME_ID,
        header::SEQ,
        header::DEVICE,
        header::CAPTURED_AT,
    ] {
        if let Some(v) = msg.header(name) {
            h = h.insert(Header {
                key: name,
                value: Some(v),
            });
        }
    }
    let (p, o) = (msg.partition().to_string(), msg.offset().to_string());
    h = h
        .insert(Header {
            key: "edgecam.source_topic",
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: "edgecam.source_partition",
            value: Some(p.as_str()),
        })
        .insert(Header {
            key: "edgecam.source_offset",
            value: Some(o.as_str()),
        });
    if let Some((k, v)) = extra {
        h = h.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    h
}

/// Publishes until it has a delivery report (retrying a failed one every second).
async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    value: &[u8],
    headers: OwnedHeaders,
) {
    loop {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers.clone());
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::warn!(error = %e, topic, "publishing a result failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
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

/// One worker: takes frames from `jobs` until it closes.
async fn worker(
    opts: Arc<ProcessOptions>,
    jobs: Arc<Mutex<mpsc::Receiver<OwnedMessage>>>,
    done: mpsc::UnboundedSender<Done>,
    producer: FutureProducer,
    counts: Arc<Counts>,
) -> Result<(), ProcessError> {
    let mut child = Some(spawn(&opts.command)?);
    loop {
        let Some(msg) = jobs.lock().await.recv().await else {
            break;
        };
        let mut answer = Err(Failure::Crashed);
        for attempt in 0..2 {
            let c = match child.as_mut() {
                Some(c) => c,
                None => child.insert(spawn(&opts.command)?),
            };
            let started = std::time::Instant::now();
            answer = ask(c, &msg, opts.timeout).await;
            if answer.is_ok() {
                counts.seconds.observe(started.elapsed().as_secs_f64());
            }
            match answer {
                Ok(_) => break,
                Err(f) => {
                    tracing::warn!(
                        reason = f.reason(),
                        partition = msg.partition(),
                        offset = msg.offset(),
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
        let key = msg.key().unwrap_or_default().to_vec();
        match answer {
            Ok(json) => {
                publish(
                    &producer,
                    &opts.results_topic,
                    &key,
                    json.as_bytes(),
                    result_headers(&msg, None),
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
                        let headers = result_headers(&msg, Some((header::REASON, f.reason())));
                        publish(
                            &producer,
                            t,
                            &key,
                            msg.payload().unwrap_or_default(),
                            headers,
                        )
                        .await;
                    }
                    None => tracing::error!(
                        reason = f.reason(),
                        partition = msg.partition(),
                        offset = msg.offset(),
                        "frame failed twice and there is no --dead-letter-topic; skipped"
                    ),
                }
            }
        }
        let _ = done.send(Done {
            partition: msg.partition(),
            offset: msg.offset(),
        });
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

/// Processes frames until `max_frames`, the idle timeout or `shutdown`; then finishes the
/// frames in hand (within 30 s), stops the workers and commits.
///
/// Errors: [`ProcessError`] when the clients cannot be made or a worker cannot be started.
pub async fn run(
    opts: ProcessOptions,
    shutdown: CancellationToken,
) -> Result<ProcessReport, ProcessError> {
    let opts = Arc::new(opts);
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
    let started = std::time::Instant::now();
    let workers = opts.workers.max(1);
    let (job_tx, job_rx) = mpsc::channel::<OwnedMessage>(workers);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut pool = tokio::task::JoinSet::new();
    for _ in 0..workers {
        pool.spawn(worker(
            opts.clone(),
            job_rx.clone(),
            done_tx.clone(),
            producer.clone(),
            counts.clone(),
        ));
    }
    drop(done_tx);
    let mut ledger = Ledger::default();
    // Frames taken from the topic, and frames done: a frame done before an earlier one stays
    // in the ledger until that one is done, so the ledger's size counts neither.
    let mut taken = 0u64;
    let mut finished = 0u64;
    let mut last_activity = tokio::time::Instant::now();
    let store = |consumer: &StreamConsumer, partition: i32, offset: i64| {
        if let Err(e) = consumer.store_offset(&opts.topic, partition, offset) {
            tracing::warn!(error = %e, partition, offset, "storing an offset failed");
        }
    };
    let mut job_tx = Some(job_tx);
    loop {
        if opts.max_frames.is_some_and(|m| taken >= m) {
            break;
        }
        let idle = async {
            match opts.idle_timeout {
                Some(t) => tokio::time::sleep_until(last_activity + t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = idle => break,
            Some(d) = done_rx.recv() => {
                finished += 1;
                last_activity = tokio::time::Instant::now();
                bar.set_message(format!(
                    "{} processed, {} failed, {} restarts, {:.1} frames/s",
                    counts.processed.load(Relaxed),
                    counts.failed.lock().expect("not poisoned").values().sum::<u64>(),
                    counts.restarts.load(Relaxed),
                    finished as f64 / started.elapsed().as_secs_f64().max(0.001)
                ));
                if let Some(o) = ledger.done(d.partition, d.offset) {
                    store(&consumer, d.partition, o);
                }
            }
            m = consumer.recv() => match m {
                Ok(m) => {
                    let m = m.detach();
                    ledger.taken(m.partition(), m.offset());
                    taken += 1;
                    last_activity = tokio::time::Instant::now();
                    if job_tx.as_ref().expect("open").send(m).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "consume error"),
            },
        }
    }
    // Finish the frames in hand, then stop the workers (closing their input).
    job_tx = None;
    drop(job_tx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ledger.in_hand() > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(d)) => {
                if let Some(o) = ledger.done(d.partition, d.offset) {
                    store(&consumer, d.partition, o);
                }
            }
            _ => break,
        }
    }
    while let Some(r) = pool.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(e);
        }
    }
    bar.finish_and_clear();
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit");
    }
    let failed = counts.failed.lock().expect("not poisoned").clone();
    Ok(ProcessReport {
        processed: counts.processed.load(Relaxed),
        failed,
        restarts: counts.restarts.load(Relaxed),
    })
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
