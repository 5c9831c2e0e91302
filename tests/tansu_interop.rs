//! Interop with a real Kafka-compatible broker in its own process: [tansu](https://crates.io/crates/tansu)
//! (`bash scripts/install-tansu` builds it with `cargo install`).
//!
//! Each test starts its own `tansu broker` with the in-memory storage engine on a free
//! loopback port, creates a fresh topic, publishes real footage (`tests/fixtures/vtest-10.mjpeg`)
//! through edgecam's whole pipeline (source → queue → encoder → idempotent `acks=all`
//! producer), and reads it back with `edgecam consume` and with a plain rdkafka consumer.
//!
//! Finding the broker: `EDGECAM_TANSU=/path/to/tansu`, else `tansu` on `PATH`, else
//! `~/.cargo/bin/tansu`. When there is none the tests print that they are skipped and pass,
//! unless `EDGECAM_REQUIRE_TANSU=1` (CI), where they fail.
//!
//! Run: `cargo test --test tansu_interop -- --nocapture`.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgecam::consume::{consume, ConsumeOptions};
use edgecam::metrics::Metrics;
use edgecam::record::header;
use edgecam::source::mjpeg::MjpegSplitter;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vtest-10.mjpeg");
const DEVICE: &str = "tansu-cam-1";
const FRAMES: u64 = 20;
/// How long the broker gets to accept connections, the topic to appear, and a consumer to
/// wait for the next record.
const STARTUP: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Finding and running tansu
// ---------------------------------------------------------------------------------------

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `EDGECAM_TANSU`, else `tansu` on `PATH`, else `$CARGO_HOME/bin/tansu` / `~/.cargo/bin/tansu`.
fn find_tansu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGECAM_TANSU").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "EDGECAM_TANSU={} is not an executable file",
            p.display()
        );
        return Some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join("tansu"))
            .find(|p| is_executable(p))
        {
            return Some(p);
        }
    }
    let mut homes = Vec::new();
    if let Some(c) = std::env::var_os("CARGO_HOME") {
        homes.push(PathBuf::from(c));
    }
    if let Some(h) = std::env::var_os("HOME") {
        homes.push(PathBuf::from(h).join(".cargo"));
    }
    homes
        .into_iter()
        .map(|h| h.join("bin").join("tansu"))
        .find(|p| is_executable(p))
}

/// The tansu binary, or `None` after printing why the test is skipped. Panics instead when
/// `EDGECAM_REQUIRE_TANSU=1`.
fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    match find_tansu() {
        Some(p) => Some(p),
        None if std::env::var("EDGECAM_REQUIRE_TANSU").as_deref() == Ok("1") => panic!(
            "{test}: EDGECAM_REQUIRE_TANSU=1 but no tansu broker was found \
             (set EDGECAM_TANSU=/path/to/tansu, put tansu on PATH, or run scripts/install-tansu)"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: tansu not found (EDGECAM_TANSU, PATH, ~/.cargo/bin); \
                 run scripts/install-tansu to enable this test"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Last `n` lines of a log file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return format!("({} unreadable)", path.display());
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` to completion within `limit`, killing it past that. Output goes to `log`.
fn run_bounded(mut cmd: Command, log: &Path, limit: Duration) -> std::process::ExitStatus {
    let out = File::create(log).expect("create log");
    let err = out.try_clone().expect("clone log");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; output:\n{}",
                tail(log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `tansu broker` child process with in-memory storage, killed on drop.
struct Broker {
    bin: PathBuf,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it accepts connections.
    /// A port taken between choosing and binding is retried with another.
    fn start(bin: &Path) -> Broker {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let log = dir.path().join("broker.log");
            let out = File::create(&log).expect("create broker log");
            let err = out.try_clone().expect("clone log");
            let child = Command::new(bin)
                .arg("broker")
                .arg("--storage-engine")
                .arg("memory://tansu/")
                .arg("--listener-url")
                .arg(&url)
                .arg("--advertised-listener-url")
                .arg(&url)
                // tansu reads a `.env` from its working directory: give it an empty one.
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {} broker: {e}", bin.display()));
            let mut broker = Broker {
                bin: bin.to_path_buf(),
                child,
                port,
                dir,
            };
            let started = Instant::now();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            loop {
                if let Some(status) = broker.child.try_wait().expect("try_wait") {
                    last_err = format!(
                        "tansu broker exited with {status} on port {port}; log:\n{}",
                        tail(&broker.log(), 40)
                    );
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    eprintln!(
                        "tansu broker up on {url} after {:?} (pid {})",
                        started.elapsed(),
                        broker.child.id()
                    );
                    return broker;
                }
                if started.elapsed() > STARTUP {
                    panic!(
                        "tansu broker did not accept connections on {url} within {STARTUP:?}; log:\n{}",
                        tail(&broker.log(), 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("tansu broker did not start: {last_err}");
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// `host:port` for librdkafka.
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topic` (1 partition) with `tansu topic create`, then waits until the broker's
    /// metadata lists it with its partition.
    fn create_topic(&self, topic: &str) {
        let log = self.dir.path().join(format!("topic-create-{topic}.log"));
        let mut cmd = Command::new(&self.bin);
        cmd.args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", "1", topic])
            .current_dir(self.dir.path());
        let status = run_bounded(cmd, &log, STARTUP);
        assert!(
            status.success(),
            "tansu topic create {topic} failed ({status}); output:\n{}\nbroker log:\n{}",
            tail(&log, 40),
            tail(&self.log(), 40)
        );
        self.wait_for_topic(topic);
    }

    /// A client for metadata requests that never asks the broker to create topics.
    fn metadata_client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("allow.auto.create.topics", "false")
            .create()
            .expect("metadata client")
    }

    /// Whether the broker's metadata lists `topic` without error (one request).
    fn topic_listed(&self, topic: &str) -> bool {
        let md = self
            .metadata_client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata request");
        md.topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    }

    /// Polls metadata until `topic` exists with at least one partition and no error.
    fn wait_for_topic(&self, topic: &str) {
        let client = self.metadata_client();
        let started = Instant::now();
        let mut last = String::from("no answer");
        while started.elapsed() < STARTUP {
            match client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(md) => {
                    let t = md.topics().iter().find(|t| t.name() == topic);
                    match t {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => return,
                        Some(t) => {
                            last = format!(
                                "error {:?}, {} partitions",
                                t.error(),
                                t.partitions().len()
                            )
                        }
                        None => last = "not listed".into(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("topic {topic} not in the broker's metadata within {STARTUP:?}: {last}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- tansu broker log (last lines) ---\n{}",
                tail(&self.log(), 60)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures and helpers
// ---------------------------------------------------------------------------------------

/// A topic name no other test (or earlier run against the same broker) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// The fixture's frames, split by edgecam's own MJPEG splitter.
fn fixture_frames() -> Vec<Bytes> {
    let data = std::fs::read(FIXTURE).expect("read fixture");
    let mut s = MjpegSplitter::new();
    s.push(&data);
    let mut frames = Vec::new();
    while let Some(f) = s.next_frame() {
        frames.push(f.expect("fixture frame splits cleanly"));
    }
    assert_eq!(frames.len(), 10, "fixture has 10 frames");
    frames
}

fn agent_config(bootstrap: &str, topic: &str, extra_encode: &str, extra_kafka: &str) -> String {
    format!(
        r#"
[device]
id = "{DEVICE}"
[source]
kind = "mjpeg"
path = {path}
fps = 0
loop = true
max_frames = {FRAMES}
[encode]
{extra_encode}
[pipeline]
overflow = "block"
[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
{extra_kafka}
"#,
        path = toml_string(FIXTURE),
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs the agent to completion and checks every frame was delivered.
async fn publish(toml: &str) -> (Arc<Metrics>, Duration) {
    let state = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("state")
        .join(uuid::Uuid::now_v7().simple().to_string());
    let env = [(
        "STATE_DIRECTORY".to_string(),
        state.to_string_lossy().into_owned(),
    )];
    let cfg = edgecam::config::load_str(toml, env).expect("valid config");
    let metrics = Arc::new(Metrics::default());
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone()),
    )
    .await
    .expect("pipeline finished within 120 s")
    .expect("pipeline ran");
    let elapsed = started.elapsed();
    eprintln!(
        "published in {elapsed:?} (run report {:?}):\n{}",
        report.elapsed,
        metrics.summary(report.elapsed.as_secs_f64())
    );
    assert_eq!(report.sink.undelivered, 0, "undelivered records");
    assert_eq!(metrics.delivered.load(Relaxed), FRAMES, "frames delivered");
    assert_eq!(metrics.dropped_total(), 0, "drops: {:?}", metrics.dropped());
    (metrics, elapsed)
}

/// Consumes the topic with `edgecam consume` into `dir` and checks the files are
/// `<dir>/<DEVICE>/<date>/<captured>-<seq>-<id>.jpg`, seq 0 … FRAMES-1 in capture order.
/// Returns their contents by seq.
async fn consume_files(bootstrap: &str, topic: &str, dir: &Path) -> Vec<Vec<u8>> {
    let opts = ConsumeOptions {
        max_frames: Some(FRAMES),
        idle_timeout: Some(IDLE),
        list_files: true,
        ..ConsumeOptions::new(bootstrap, topic, unique("edgecam-it-group"), dir)
    };
    let started = Instant::now();
    let report = consume(&opts, CancellationToken::new())
        .await
        .expect("consume ran");
    eprintln!(
        "consumed {} frames ({} bytes, {} skipped) in {:?}",
        report.frames,
        report.bytes,
        report.skipped,
        started.elapsed()
    );
    assert_eq!(report.frames, FRAMES, "frames consumed");
    assert_eq!(report.skipped, 0, "records skipped");
    assert_eq!(report.files.len() as u64, FRAMES);

    let device_dir = dir.join(DEVICE);
    let files = common::consumed_files(dir, DEVICE);
    let seqs: Vec<u64> = files.iter().map(|f| f.seq).collect();
    assert_eq!(
        seqs,
        (0..FRAMES).collect::<Vec<_>>(),
        "files under {} in capture order",
        device_dir.display()
    );
    assert!(files.iter().all(|f| f.ext == "jpg"));
    for f in &report.files {
        assert!(
            f.starts_with(&device_dir),
            "{} outside {}",
            f.display(),
            device_dir.display()
        );
    }
    files
        .iter()
        .map(|f| std::fs::read(&f.path).expect("read frame file"))
        .collect()
}

/// One record as a plain Kafka client sees it.
#[derive(Debug)]
struct RawRecord {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl RawRecord {
    fn header(&self, name: &str) -> &str {
        let mut found = self.headers.iter().filter(|(k, _)| k == name);
        let (_, v) = found
            .next()
            .unwrap_or_else(|| panic!("header {name} missing in {:?}", self.header_names()));
        assert!(found.next().is_none(), "header {name} repeated");
        std::str::from_utf8(v).unwrap_or_else(|e| panic!("header {name} not UTF-8: {e}"))
    }

    fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Reads `n` records from the start of `topic` with a plain rdkafka `StreamConsumer`.
async fn read_raw(bootstrap: &str, topic: &str, n: u64) -> Vec<RawRecord> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("edgecam-it-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "10485760")
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let msg = tokio::time::timeout(IDLE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("no record within {IDLE:?} after {} of {n}", out.len()))
            .expect("raw consumer recv");
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(RawRecord {
            key: msg.key().unwrap_or_default().to_vec(),
            value: msg.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Frames that fit the default budget pass through untouched: what comes back from tansu is
/// byte for byte the camera's JPEG.
#[tokio::test(flavor = "multi_thread")]
async fn tansu_passthrough_frames_round_trip_byte_identical() {
    let Some(bin) = tansu_or_skip("tansu_passthrough_frames_round_trip_byte_identical") else {
        return;
    };
    let broker = Broker::start(&bin);
    let topic = unique("edgecam-it-pass");
    broker.create_topic(&topic);
    let fixture = fixture_frames();

    let (metrics, _) = publish(&agent_config(&broker.bootstrap(), &topic, "", "")).await;
    assert_eq!(
        metrics.passthrough.load(Relaxed),
        FRAMES,
        "all frames passed through"
    );

    let out = tempfile::tempdir().expect("tempdir");
    let files = consume_files(&broker.bootstrap(), &topic, out.path()).await;
    for (i, data) in files.iter().enumerate() {
        let h = edgecam::jpeg::header(data)
            .unwrap_or_else(|e| panic!("{i}.jpg is not a readable JPEG: {e}"));
        assert_eq!((h.width, h.height), (768, 576), "{i}.jpg dimensions");
        let want = &fixture[i % fixture.len()];
        assert!(
            data.as_slice() == want.as_ref(),
            "{i}.jpg ({} bytes) differs from fixture frame {} ({} bytes)",
            data.len(),
            i % fixture.len(),
            want.len()
        );
    }
}

/// A 20,000-byte budget forces re-encoding: every record (value + key + headers + framing)
/// fits it, every value is a JPEG whose size matches its headers, and the headers are what
/// `record.rs` documents.
#[tokio::test(flavor = "multi_thread")]
async fn tansu_budget_frames_fit_and_carry_headers() {
    const BUDGET: usize = 20_000;
    let Some(bin) = tansu_or_skip("tansu_budget_frames_fit_and_carry_headers") else {
        return;
    };
    let broker = Broker::start(&bin);
    let topic = unique("edgecam-it-budget");
    broker.create_topic(&topic);

    let toml = agent_config(
        &broker.bootstrap(),
        &topic,
        &format!("max_message_bytes = {BUDGET}"),
        "",
    );
    let (metrics, _) = publish(&toml).await;
    assert_eq!(
        metrics.passthrough.load(Relaxed),
        0,
        "no frame fits untouched"
    );
    assert!(metrics.max_record_bytes.load(Relaxed) <= BUDGET as u64);

    // edgecam's own consumer.
    let out = tempfile::tempdir().expect("tempdir");
    let files = consume_files(&broker.bootstrap(), &topic, out.path()).await;
    for (i, data) in files.iter().enumerate() {
        assert!(data.len() <= BUDGET, "{i}.jpg is {} bytes", data.len());
        edgecam::jpeg::header(data).unwrap_or_else(|e| panic!("{i}.jpg: {e}"));
    }

    // A plain Kafka client: key, headers, sizes.
    let started = Instant::now();
    let mut records = read_raw(&broker.bootstrap(), &topic, FRAMES).await;
    eprintln!(
        "raw consumer read {} records in {:?}",
        records.len(),
        started.elapsed()
    );
    records.sort_by_key(|r| {
        r.header(header::SEQ)
            .parse::<u64>()
            .expect("seq is a number")
    });
    let mut frame_ids = BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.key, DEVICE.as_bytes(), "record {i} key");
        assert_eq!(r.header(header::DEVICE), DEVICE);
        assert_eq!(
            r.header(header::SEQ),
            i.to_string(),
            "seq contiguous from 0"
        );
        let id = r.header(header::FRAME_ID);
        uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("frame_id {id}: {e}"));
        assert!(frame_ids.insert(id.to_string()), "frame_id {id} repeated");
        let at = r.header(header::CAPTURED_AT);
        humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("captured_at {at}: {e}"));
        assert_eq!(r.header(header::CONTENT_TYPE), "image/jpeg");
        assert_eq!(r.header(header::CODEC), "jpeg");
        let q: u8 = r
            .header(header::QUALITY)
            .parse()
            .expect("quality is a number");
        assert!((1..=100).contains(&q), "quality {q}");
        let h = edgecam::jpeg::header(&r.value).unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(
            r.header(header::WIDTH),
            h.width.to_string(),
            "record {i} width"
        );
        assert_eq!(
            r.header(header::HEIGHT),
            h.height.to_string(),
            "record {i} height"
        );

        let headers_len: usize = r.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let plain = r.value.len() + r.key.len() + headers_len;
        assert!(
            plain <= BUDGET,
            "record {i}: {plain} bytes of key, value and headers"
        );
        let framed = edgecam::record::record_size(
            r.key.len(),
            r.headers.iter().map(|(k, v)| (k.len(), v.len())),
            r.value.len(),
        );
        assert!(framed <= BUDGET, "record {i}: {framed} bytes framed");
        assert_eq!(files[i], r.value, "{i}.jpg is the record's value");
    }
}

/// The agent creates its topic itself through the Kafka admin API
/// (`kafka.create_topic_partitions = 1`) before publishing. (tansu does not create topics
/// on first use: without this, or `tansu topic create`, every record is rejected with
/// `UNKNOWN_TOPIC_OR_PARTITION` after librdkafka's 30 s metadata wait.)
#[tokio::test(flavor = "multi_thread")]
async fn tansu_agent_creates_topic_via_admin_api() {
    let Some(bin) = tansu_or_skip("tansu_agent_creates_topic_via_admin_api") else {
        return;
    };
    let broker = Broker::start(&bin);
    let topic = unique("edgecam-it-admin");
    assert!(
        !broker.topic_listed(&topic),
        "{topic} exists before the agent ran"
    );
    let toml = agent_config(
        &broker.bootstrap(),
        &topic,
        "",
        "create_topic_partitions = 1",
    );
    publish(&toml).await;
    assert!(
        broker.topic_listed(&topic),
        "{topic} listed after the agent ran"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let files = consume_files(&broker.bootstrap(), &topic, out.path()).await;
    let fixture = fixture_frames();
    for (i, data) in files.iter().enumerate() {
        assert!(
            data.as_slice() == fixture[i % fixture.len()].as_ref(),
            "{i}.jpg"
        );
    }
}
