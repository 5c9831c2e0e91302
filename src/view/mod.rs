//! `edgecam view`: a small web page that plays the cameras' frames straight from Kafka.
//!
//! The producer need not run: Kafka keeps the frames. One page, no build step (plain
//! HTML/JS/CSS embedded in the binary, [`PAGE`]), served by axum:
//!
//! | path | what |
//! | --- | --- |
//! | `GET /` | the page: devices with thumbnails, a player, a time scrubber, frame stepping |
//! | `GET /api/devices` | JSON: each device seen, with its latest frame's position and headers |
//! | `GET /api/thumb/{device}` | the device's latest frame, as a browser can show it |
//! | `GET /api/stream/{device}` | frames as `multipart/x-mixed-replace`, one `Content-Length` and the frame's position and headers per part; `?from=P:O` starts at partition `P` offset `O`, `?at=MS` at a capture time (Unix ms, through `offsets_for_times`), neither: live |
//! | `GET /api/frame/{device}?from=P:O&dir=next\|prev` | one frame: the device's first at or after `O`, or its last before `O` |
//! | `GET /api/result/{frame_id}?wait_ms=N` | with `--results-topic`: the result record of that frame (the JSON `edgecam process` published), waiting up to `N` ms (at most 5,000) for it to arrive; `404` when none came |
//!
//! **Results.** With a results topic (`ViewOptions::results_topic`), a second tail reader
//! keeps the newest [`MAX_RESULTS`] result records by `edgecam.frame_id`, and the page draws
//! each frame's boxes (`"boxes": [[x, y, w, h], …]` in the frame's pixels) and a label made
//! of the result's other fields (`people: 2`).
//!
//! **Resume.** The page stores, per topic and device, the position after the last frame it
//! showed (in the URL and in `localStorage`); reopening it continues from there, neither
//! from the start nor only from "now". Each resumed or scrubbed stream is an assign-only
//! consumer of the device's partition (no consumer group per viewer, nothing committed);
//! live viewers share the one tail reader that also keeps the device list.
//!
//! **Bounded.** The tail reader keeps one frame per device, for at most [`MAX_DEVICES`]
//! devices. A viewer's stream is pulled by its browser: the consumer hands one frame at a
//! time to a one-slot channel and waits, so a slow browser slows its own replay and never
//! grows a queue; live viewers wait on a channel that holds only the newest frame, so a
//! slow one skips frames. Replay runs at the recorded pace (gaps capped at 2 s) times
//! `?speed=`. The page opens one stream per tab (Chromium allows six HTTP/1.1 connections
//! per host).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::consume::{browser_image, record_meta, Converter};
use crate::http::BOUNDARY;
use crate::limits::Limits;

/// The page, embedded: `src/view/page.html`.
pub const PAGE: &str = include_str!("page.html");

/// Devices the tail reader keeps a latest frame for; later ones are not listed.
pub const MAX_DEVICES: usize = 256;

/// Records the tail reader reads back per partition at start, to find the devices and
/// their latest frames.
const TAIL_RECORDS: i64 = 500;

/// Result records the results tail reader keeps (the oldest goes first).
pub const MAX_RESULTS: usize = 10_000;

/// The longest `wait_ms` of `/api/result/{frame_id}`.
const MAX_RESULT_WAIT: Duration = Duration::from_secs(5);

/// How long one `poll` waits.
const POLL: Duration = Duration::from_millis(100);

/// Options of `edgecam view`.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The topic to show.
    pub topic: String,
    /// Where to serve the page.
    pub listen: SocketAddr,
    /// Extra librdkafka consumer properties `(name, value)` (TLS, SASL), set last.
    pub properties: Vec<(String, String)>,
    /// Bounds on each record's image; records over them are not shown.
    pub limits: Limits,
    /// A topic of `edgecam process` results (JSON objects with an `edgecam.frame_id`
    /// header), drawn over the frames they answer; `None`: frames only.
    pub results_topic: Option<String>,
}

/// Why `edgecam view` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// librdkafka refused the consumer configuration.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The listen address could not be bound.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

/// One frame as the page gets it.
#[derive(Debug, Clone)]
pub struct ViewFrame {
    /// The device (`edgecam.device`, else the key).
    pub device: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// `edgecam.seq`, when present.
    pub seq: Option<String>,
    /// `edgecam.captured_at`, when present.
    pub captured_at: Option<String>,
    /// The record timestamp, Unix ms.
    pub timestamp_ms: Option<i64>,
    /// `edgecam.quality`, when present.
    pub quality: Option<String>,
    /// `edgecam.frame_id`, when present: what a result record is matched by.
    pub frame_id: Option<String>,
    /// Bytes of the record's value as published.
    pub record_bytes: usize,
    /// `image/jpeg` or `image/png`.
    pub content_type: &'static str,
    /// The image as a browser can show it.
    pub image: Bytes,
}

impl ViewFrame {
    /// `msg` as a frame a browser can show, or `None` when it is not one (not an image, over
    /// `limits`).
    fn of(msg: &OwnedMessage, limits: &Limits, converter: &mut Converter) -> Option<ViewFrame> {
        let meta = record_meta(msg);
        let device = meta
            .device
            .clone()
            .or_else(|| meta.key.as_ref().map(|k| String::from_utf8_lossy(k).into()))?;
        let (content_type, image) = browser_image(msg, limits, converter).ok()?;
        let quality = msg.headers().and_then(|h| {
            use rdkafka::message::Headers;
            h.iter()
                .find(|h| h.key == crate::record::header::QUALITY)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        Some(ViewFrame {
            device,
            partition: meta.partition,
            offset: meta.offset,
            seq: meta.seq,
            captured_at: meta.captured_at,
            timestamp_ms: meta.timestamp_ms,
            quality,
            frame_id: meta.frame_id,
            record_bytes: msg.payload().map_or(0, <[u8]>::len),
            content_type,
            image: Bytes::from(image),
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "device": self.device,
            "partition": self.partition,
            "offset": self.offset,
            "seq": self.seq,
            "captured_at": self.captured_at,
            "timestamp_ms": self.timestamp_ms,
            "quality": self.quality,
            "frame_id": self.frame_id,
            "record_bytes": self.record_bytes,
            "content_type": self.content_type,
        })
    }

    /// The frame's headers for an HTTP response or a multipart part.
    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Content-Type", self.content_type.to_string()),
            ("Content-Length", self.image.len().to_string()),
            ("X-Edgecam-Device", self.device.clone()),
            ("X-Kafka-Partition", self.partition.to_string()),
            ("X-Kafka-Offset", self.offset.to_string()),
            ("X-Record-Bytes", self.record_bytes.to_string()),
        ];
        if let Some(t) = self.timestamp_ms {
            h.push(("X-Kafka-Timestamp", t.to_string()));
        }
        if let Some(s) = &self.seq {
            h.push(("X-Edgecam-Seq", s.clone()));
        }
        if let Some(c) = &self.captured_at {
            h.push(("X-Edgecam-Captured-At", c.clone()));
        }
        if let Some(q) = &self.quality {
            h.push(("X-Edgecam-Quality", q.clone()));
        }
        if let Some(id) = &self.frame_id {
            h.push(("X-Edgecam-Frame-Id", id.clone()));
        }
        h
    }

    /// One part of a stream: boundary, headers, the image.
    pub fn part(&self) -> Bytes {
        crate::http::multipart_part(&self.headers(), &self.image)
    }
}

/// What the tail reader knows of one device.
struct Device {
    latest: Arc<ViewFrame>,
    live: watch::Sender<Arc<ViewFrame>>,
}

struct ViewState {
    config: ClientConfig,
    topic: String,
    limits: Limits,
    devices: Mutex<BTreeMap<String, Device>>,
    results_topic: Option<String>,
    results: Mutex<Results>,
    /// Woken when a result arrives.
    result_arrived: tokio::sync::Notify,
}

/// The newest result records by frame id, at most [`MAX_RESULTS`].
#[derive(Default)]
struct Results {
    by_frame: std::collections::HashMap<String, Bytes>,
    order: std::collections::VecDeque<String>,
}

impl Results {
    fn insert(&mut self, frame_id: String, value: Bytes) {
        if self.by_frame.insert(frame_id.clone(), value).is_none() {
            self.order.push_back(frame_id);
            while self.order.len() > MAX_RESULTS {
                if let Some(old) = self.order.pop_front() {
                    self.by_frame.remove(&old);
                }
            }
        }
    }
}

/// The frame id and value of a result record, when it is one: an `edgecam.frame_id` header
/// and a value that is a JSON object.
fn result_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> Option<(String, Bytes)> {
    use rdkafka::message::Headers;
    let id = msg.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == crate::record::header::FRAME_ID)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    })?;
    let value = msg.payload()?;
    matches!(
        serde_json::from_slice::<serde_json::Value>(value),
        Ok(serde_json::Value::Object(_))
    )
    .then(|| (id, Bytes::copy_from_slice(value)))
}

impl ViewState {
    /// An assign-only consumer (no group is joined, nothing is committed).
    fn consumer(&self) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        let mut c = self.config.clone();
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        c.create()
    }

    fn note(&self, frame: ViewFrame) {
        let frame = Arc::new(frame);
        let mut devices = self.devices.lock().unwrap();
        if let Some(d) = devices.get_mut(&frame.device) {
            d.latest = frame.clone();
            d.live.send_replace(frame);
        } else if devices.len() < MAX_DEVICES {
            let (live, _) = watch::channel(frame.clone());
            devices.insert(
                frame.device.clone(),
                Device {
                    latest: frame,
                    live,
                },
            );
        }
    }
}

/// Reads the newest [`TAIL_RECORDS`] of every partition of the results topic and then
/// everything new, keeping each result by frame id. Runs on its own thread until `stop`.
fn tail_results(state: Arc<ViewState>, topic: String, stop: CancellationToken) {
    tail_topic(&state, &topic, &stop, |m| {
        if let Some((id, value)) = result_of(m) {
            state.results.lock().unwrap().insert(id, value);
            state.result_arrived.notify_waiters();
        }
    });
}

/// Reads the newest [`TAIL_RECORDS`] of every partition and then everything new, keeping
/// each device's latest frame. Runs on its own thread until `stop`.
fn tail(state: Arc<ViewState>, stop: CancellationToken) {
    let mut converter = Converter::new(state.limits);
    let topic = state.topic.clone();
    tail_topic(&state, &topic, &stop, |m| {
        if let Some(f) = ViewFrame::of(&m.detach(), &state.limits, &mut converter) {
            state.note(f);
        }
    });
}

/// Assigns every partition of `topic` from [`TAIL_RECORDS`] before its end (retrying while
/// the topic is not readable) and hands each record to `each` until `stop`.
fn tail_topic(
    state: &ViewState,
    topic: &str,
    stop: &CancellationToken,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) {
    let consumer = match state.consumer() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, topic, "view: cannot create the tail consumer");
            return;
        }
    };
    let mut assigned = false;
    while !stop.is_cancelled() {
        if !assigned {
            match tail_assignment(&consumer, topic) {
                Ok(tpl) => {
                    if let Err(e) = consumer.assign(&tpl) {
                        tracing::warn!(error = %e, "view: cannot assign the topic's partitions");
                    } else {
                        assigned = true;
                        tracing::info!(topic, partitions = tpl.count(), "view: reading the topic");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, topic, "view: topic not readable yet; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            continue;
        }
        match consumer.poll(POLL) {
            Some(Ok(m)) => each(&m),
            Some(Err(e)) => tracing::debug!(error = %e, "view: tail poll"),
            None => {}
        }
    }
}

/// Every partition of `topic`, each from [`TAIL_RECORDS`] before its end.
fn tail_assignment(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or(rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ))?;
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
        tpl.add_partition_offset(
            topic,
            p.id(),
            Offset::Offset((high - TAIL_RECORDS).max(low)),
        )?;
    }
    Ok(tpl)
}

/// Serves `edgecam view` until `shutdown` is cancelled.
///
/// Errors: [`ViewError`] when the consumer configuration is refused or the address cannot
/// be bound.
pub async fn serve(opts: ViewOptions, shutdown: CancellationToken) -> Result<(), ViewError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &opts.bootstrap_servers)
        // Required by librdkafka for a consumer; never joined (assign only) or committed.
        .set("group.id", "edgecam-view")
        .set("fetch.message.max.bytes", "10485760");
    for (k, v) in &opts.properties {
        config.set(k, v);
    }
    let state = Arc::new(ViewState {
        config,
        topic: opts.topic.clone(),
        limits: opts.limits,
        devices: Mutex::new(BTreeMap::new()),
        results_topic: opts.results_topic.clone(),
        results: Mutex::new(Results::default()),
        result_arrived: tokio::sync::Notify::new(),
    });
    // Refused properties surface here, before the port opens.
    drop(state.consumer()?);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| crate::http::HttpError {
            addr: opts.listen,
            source,
        })?;
    let tail_thread = {
        let (state, stop) = (state.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("edgecam-view-tail".into())
            .spawn(move || tail(state, stop))
            .expect("spawn the tail reader")
    };
    let results_thread = opts.results_topic.clone().map(|topic| {
        let (state, stop) = (state.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("edgecam-view-results".into())
            .spawn(move || tail_results(state, topic, stop))
            .expect("spawn the results reader")
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/api/devices", get(devices))
        .route("/api/thumb/{device}", get(thumb))
        .route("/api/stream/{device}", get(stream))
        .route("/api/frame/{device}", get(frame))
        .route("/api/result/{frame_id}", get(result))
        .with_state(state);
    tracing::info!(
        url = %format!("http://{}/", listener.local_addr().unwrap_or(opts.listen)),
        topic = %opts.topic,
        "view: serving"
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown({
            let s = shutdown.clone();
            async move { s.cancelled().await }
        })
        .await;
    shutdown.cancel();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = tail_thread.join();
        results_thread.map(std::thread::JoinHandle::join)
    })
    .await;
    served.map_err(|source| {
        ViewError::Http(crate::http::HttpError {
            addr: opts.listen,
            source,
        })
    })
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(device: &str) -> Response {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({ "error": format!("no frame of device {device:?} seen on the topic") }),
    )
}

fn bad_request(why: String) -> Response {
    json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": why }))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn devices(State(s): State<Arc<ViewState>>) -> Response {
    let list: Vec<serde_json::Value> = s
        .devices
        .lock()
        .unwrap()
        .values()
        .map(|d| d.latest.json())
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "topic": s.topic, "results_topic": s.results_topic, "devices": list }),
    )
}

/// `?wait_ms=` of `/api/result/{frame_id}`.
#[derive(Debug, serde::Deserialize)]
struct ResultQuery {
    wait_ms: Option<u64>,
}

/// The result record of `frame_id` as JSON, waiting up to `wait_ms` for it to arrive.
async fn result(
    State(s): State<Arc<ViewState>>,
    Path(frame_id): Path<String>,
    Query(q): Query<ResultQuery>,
) -> Response {
    if s.results_topic.is_none() {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no results topic: start edgecam view with --results-topic" }),
        );
    }
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_RESULT_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before looking, so an arrival between the look and the wait wakes it.
        let arrived = s.result_arrived.notified();
        if let Some(v) = s.results.lock().unwrap().by_frame.get(&frame_id).cloned() {
            return (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                v,
            )
                .into_response();
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": format!("no result for frame {frame_id:?} on the results topic") }),
            );
        }
    }
}

fn frame_response(f: &ViewFrame) -> Response {
    let mut r = f.image.clone().into_response();
    for (k, v) in f.headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn thumb(State(s): State<Arc<ViewState>>, Path(device): Path<String>) -> Response {
    let latest = s
        .devices
        .lock()
        .unwrap()
        .get(&device)
        .map(|d| d.latest.clone());
    match latest {
        Some(f) => frame_response(&f),
        None => not_found(&device),
    }
}

/// Where a stream or a step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Partition and offset.
    At(i32, i64),
    /// The first record at or after this capture time, Unix ms.
    Time(i64),
    /// Live: the next frame published.
    Live,
}

/// `from=P:O`, `at=MS` or neither.
///
/// Errors: what is wrong with the parameter, for a `400`.
pub fn parse_start(from: Option<&str>, at: Option<&str>) -> Result<Start, String> {
    match (from, at) {
        (Some(f), _) => {
            let (p, o) = f
                .split_once(':')
                .ok_or_else(|| format!("from={f:?}: expected PARTITION:OFFSET"))?;
            let p: i32 = p
                .parse()
                .map_err(|_| format!("from={f:?}: partition is not a number"))?;
            let o: i64 = o
                .parse()
                .map_err(|_| format!("from={f:?}: offset is not a number"))?;
            if p < 0 || o < 0 {
                return Err(format!("from={f:?}: partition and offset are not negative"));
            }
            Ok(Start::At(p, o))
        }
        (None, Some(a)) => a
            .parse::<i64>()
            .map(Start::Time)
            .map_err(|_| format!("at={a:?}: expected a Unix time in milliseconds")),
        (None, None) => Ok(Start::Live),
    }
}

/// How long to wait before showing `next` after `prev` when replaying at `speed`: the gap
/// between their record timestamps, at most 2 s, never negative.
pub fn replay_gap(prev_ms: Option<i64>, next_ms: Option<i64>, speed: f64) -> Duration {
    match (prev_ms, next_ms) {
        (Some(a), Some(b)) if b > a && speed > 0.0 => {
            Duration::from_millis(((b - a).min(2_000) as f64 / speed) as u64)
        }
        _ => Duration::ZERO,
    }
}

/// The device's partition, from the tail reader.
fn partition_of(s: &ViewState, device: &str) -> Option<i32> {
    s.devices
        .lock()
        .unwrap()
        .get(device)
        .map(|d| d.latest.partition)
}

/// An assign-only consumer of `device`'s frames from `start` (not [`Start::Live`]).
fn consumer_from(
    s: &ViewState,
    device: &str,
    start: Start,
) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    let consumer = s.consumer()?;
    let mut tpl = TopicPartitionList::new();
    match start {
        Start::At(p, o) => {
            tpl.add_partition_offset(&s.topic, p, Offset::Offset(o))?;
        }
        Start::Time(ms) => {
            let p = partition_of(s, device).unwrap_or(0);
            let offset = offset_for_time(s, &consumer, p, ms)?;
            tpl.add_partition_offset(&s.topic, p, offset)?;
        }
        Start::Live => {
            let p = partition_of(s, device).unwrap_or(0);
            tpl.add_partition_offset(&s.topic, p, Offset::End)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// The first offset of partition `p` whose record timestamp is at least `ms`, or
/// [`Offset::End`] when every record is older. Asks the broker (`offsets_for_times`); when
/// it gives no offset although the newest record is that late (a broker that does not
/// implement the lookup, as librdkafka's mock cluster), finds it by binary search over the
/// records' own timestamps.
fn offset_for_time(
    s: &ViewState,
    consumer: &BaseConsumer,
    p: i32,
    ms: i64,
) -> Result<Offset, rdkafka::error::KafkaError> {
    let mut q = TopicPartitionList::new();
    q.add_partition_offset(&s.topic, p, Offset::Offset(ms))?;
    let found = consumer.offsets_for_times(q, Duration::from_secs(5))?;
    if let Some(Offset::Offset(o)) = found.find_partition(&s.topic, p).map(|e| e.offset()) {
        return Ok(Offset::Offset(o));
    }
    let (low, high) = consumer.fetch_watermarks(&s.topic, p, Duration::from_secs(5))?;
    let probe = s.consumer()?;
    let ts = |o: i64| -> Result<Option<i64>, rdkafka::error::KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&s.topic, p, Offset::Offset(o))?;
        probe.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = probe.poll(POLL) {
                return Ok(m.timestamp().to_millis());
            }
        }
        Ok(None)
    };
    if high <= low || ts(high - 1)?.is_none_or(|t| t < ms) {
        return Ok(Offset::End);
    }
    // The first record in [lo, hi) with a timestamp >= ms; records without one count as
    // later (they cannot be placed).
    let (mut lo, mut hi) = (low, high - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if ts(mid)?.is_none_or(|t| t >= ms) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Offset::Offset(lo))
}

#[derive(serde::Deserialize)]
struct StreamQuery {
    from: Option<String>,
    at: Option<String>,
    speed: Option<f64>,
}

async fn stream(
    State(s): State<Arc<ViewState>>,
    Path(device): Path<String>,
    Query(q): Query<StreamQuery>,
) -> Response {
    let start = match parse_start(q.from.as_deref(), q.at.as_deref()) {
        Ok(st) => st,
        Err(why) => return bad_request(why),
    };
    let speed = q.speed.unwrap_or(1.0);
    if !(speed > 0.0 && speed <= 1000.0) {
        return bad_request(format!(
            "speed={speed}: expected more than 0 and at most 1000"
        ));
    }
    let parts: futures::stream::BoxStream<'static, Result<Bytes, std::convert::Infallible>> =
        match start {
            Start::Live => {
                let rx = s
                    .devices
                    .lock()
                    .unwrap()
                    .get(&device)
                    .map(|d| d.live.subscribe());
                let Some(mut rx) = rx else {
                    return not_found(&device);
                };
                rx.mark_unchanged();
                Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                    rx.changed().await.ok()?;
                    let f = rx.borrow_and_update().clone();
                    Some((Ok(f.part()), rx))
                }))
            }
            start => {
                // Positioning may ask the broker several times (offsets by time): off the
                // runtime's threads.
                let positioned = tokio::task::spawn_blocking({
                    let (s, device) = (s.clone(), device.clone());
                    move || consumer_from(&s, &device, start)
                })
                .await
                .expect("consumer_from does not panic");
                let consumer = match positioned {
                    Ok(c) => c,
                    Err(e) => {
                        return json(
                            StatusCode::BAD_GATEWAY,
                            serde_json::json!({ "error": format!("kafka: {e}") }),
                        )
                    }
                };
                // One slot: the consumer waits for the browser.
                let (tx, rx) = mpsc::channel::<Bytes>(1);
                let limits = s.limits;
                std::thread::Builder::new()
                    .name("edgecam-view-replay".into())
                    .spawn(move || replay(consumer, device, limits, speed, tx))
                    .expect("spawn a replay reader");
                Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                    let part = rx.recv().await?;
                    Some((Ok(part), rx))
                }))
            }
        };
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(parts),
    )
        .into_response()
}

/// Reads `device`'s frames from `consumer` into `tx` at the recorded pace, until the viewer
/// goes away (`tx` closed).
fn replay(
    consumer: BaseConsumer,
    device: String,
    limits: Limits,
    speed: f64,
    tx: mpsc::Sender<Bytes>,
) {
    let mut converter = Converter::new(limits);
    let mut last_ms: Option<i64> = None;
    while !tx.is_closed() {
        let Some(Ok(m)) = consumer.poll(POLL) else {
            continue;
        };
        let m = m.detach();
        let Some(f) = ViewFrame::of(&m, &limits, &mut converter) else {
            continue;
        };
        if f.device != device {
            continue;
        }
        std::thread::sleep(replay_gap(last_ms, f.timestamp_ms, speed));
        last_ms = f.timestamp_ms;
        if tx.blocking_send(f.part()).is_err() {
            return;
        }
    }
}

#[derive(serde::Deserialize)]
struct FrameQuery {
    from: Option<String>,
    dir: Option<String>,
}

async fn frame(
    State(s): State<Arc<ViewState>>,
    Path(device): Path<String>,
    Query(q): Query<FrameQuery>,
) -> Response {
    let Ok(Start::At(p, o)) = parse_start(q.from.as_deref(), None) else {
        return bad_request("from=PARTITION:OFFSET is required".into());
    };
    let prev = match q.dir.as_deref() {
        None | Some("next") => false,
        Some("prev") => true,
        Some(other) => return bad_request(format!("dir={other:?}: expected next or prev")),
    };
    let found = tokio::task::spawn_blocking(move || step(&s, &device, p, o, prev)).await;
    match found {
        Ok(Ok(Some(f))) => frame_response(&f),
        Ok(Ok(None)) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no such frame" }),
        ),
        Ok(Err(e)) => json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({ "error": format!("kafka: {e}") }),
        ),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": "step failed" }),
        ),
    }
}

/// The device's first frame at or after offset `o` of partition `p` (`prev`: its last
/// before `o`), scanning at most 5,000 records.
fn step(
    s: &ViewState,
    device: &str,
    p: i32,
    o: i64,
    prev: bool,
) -> Result<Option<ViewFrame>, rdkafka::error::KafkaError> {
    let probe = s.consumer()?;
    let (low, high) = probe.fetch_watermarks(&s.topic, p, Duration::from_secs(5))?;
    drop(probe);
    let mut converter = Converter::new(s.limits);
    // Windows of records to scan, nearest first.
    let windows: Vec<(i64, i64)> = if prev {
        let mut w = Vec::new();
        let mut end = o.min(high);
        while end > low && w.len() < 10 {
            let begin = (end - 500).max(low);
            w.push((begin, end));
            end = begin;
        }
        w
    } else {
        vec![(o.max(low), high.min(o.max(low) + 5_000))]
    };
    for (begin, end) in windows {
        if begin >= end {
            continue;
        }
        let consumer = consumer_from(s, device, Start::At(p, begin))?;
        let mut best: Option<ViewFrame> = None;
        // The first record may take a while on a busy machine (the consumer connects and
        // fetches); after that the window is read while records keep coming.
        let mut deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut at = begin;
        while at < end && std::time::Instant::now() < deadline {
            let Some(Ok(m)) = consumer.poll(POLL) else {
                continue;
            };
            deadline = std::time::Instant::now() + Duration::from_secs(5);
            at = m.offset() + 1;
            let m = m.detach();
            if m.offset() >= end {
                break;
            }
            if let Some(f) = ViewFrame::of(&m, &s.limits, &mut converter) {
                if f.device == device {
                    if !prev {
                        return Ok(Some(f));
                    }
                    best = Some(f);
                }
            }
        }
        if best.is_some() {
            return Ok(best);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse_or_say_what_is_wrong() {
        assert_eq!(parse_start(Some("2:1500"), None), Ok(Start::At(2, 1500)));
        assert_eq!(
            parse_start(None, Some("1764700000000")),
            Ok(Start::Time(1_764_700_000_000))
        );
        assert_eq!(parse_start(None, None), Ok(Start::Live));
        assert!(parse_start(Some("2"), None)
            .unwrap_err()
            .contains("PARTITION:OFFSET"));
        assert!(parse_start(Some("a:1"), None)
            .unwrap_err()
            .contains("partition"));
        assert!(parse_start(Some("0:-1"), None).is_err());
        assert!(parse_start(None, Some("noon"))
            .unwrap_err()
            .contains("milliseconds"));
    }

    #[test]
    fn replay_keeps_the_recorded_pace_with_gaps_capped() {
        assert_eq!(
            replay_gap(Some(1_000), Some(1_100), 1.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            replay_gap(Some(1_000), Some(1_100), 4.0),
            Duration::from_millis(25)
        );
        assert_eq!(
            replay_gap(Some(0), Some(3_600_000), 1.0),
            Duration::from_secs(2)
        );
        assert_eq!(replay_gap(Some(5), Some(1), 1.0), Duration::ZERO);
        assert_eq!(replay_gap(None, Some(1), 1.0), Duration::ZERO);
    }
}
