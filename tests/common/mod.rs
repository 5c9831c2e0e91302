//! Shared helpers for the integration tests: the real footage fixture, and reading records
//! back from a Kafka topic with their headers.
#![allow(dead_code)]

pub mod browser;
pub mod http;
pub mod mosquitto;
pub mod pubsub;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Path of the committed footage excerpt (10 frames, 768x576).
pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vtest-10.mjpeg");

/// A file of the real footage and photographs that `scripts/testdata` derives from Debian
/// packages (`edgecam::testdata`). A missing file fails the test with a message naming that
/// script: the tests that need it never skip.
pub fn testdata(name: &str) -> std::path::PathBuf {
    edgecam::testdata::file(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The fixture's frames, as the files they are.
pub fn fixture_frames() -> Vec<bytes::Bytes> {
    let data = std::fs::read(FIXTURE).unwrap();
    let mut sp = edgecam::source::mjpeg::MjpegSplitter::new();
    sp.push(&data);
    let mut out = Vec::new();
    while let Some(f) = sp.next_frame() {
        out.push(f.unwrap());
    }
    out
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
    /// Bytes of the header names and values.
    pub header_bytes: usize,
}

impl Rec {
    /// A consumed message, its headers as UTF-8 text.
    pub fn of(m: &impl Message) -> Rec {
        let mut headers = HashMap::new();
        let mut header_bytes = 0;
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                let v = h
                    .value
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    .unwrap_or_default();
                header_bytes += h.key.len() + v.len();
                headers.insert(h.key.to_string(), v);
            }
        }
        Rec {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
            header_bytes,
        }
    }

    pub fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
    }
}

/// Reads `topic` (partitions `0..partitions`) from the beginning until `expected` records
/// arrived or `timeout` passed, without a consumer group.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Rec> {
    read_topic_with(bootstrap, &[], topic, partitions, expected, timeout)
}

/// [`read_topic`] with extra consumer properties (e.g. `security.protocol`).
pub fn read_topic_with(
    bootstrap: &str,
    properties: &[(&str, &str)],
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Rec> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "edgecam-tests-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "10485760");
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let until = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < until {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Rec::of(&m)),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

/// Sequence numbers 0..n, each once, frame ids unique.
pub fn check_complete(recs: &[Rec], n: usize) {
    let mut seqs: Vec<u64> = recs
        .iter()
        .map(|r| r.h("edgecam.seq").parse().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..n as u64).collect::<Vec<_>>(),
        "every frame exactly once"
    );
    let ids: HashSet<&str> = recs.iter().map(|r| r.h("edgecam.frame_id")).collect();
    assert_eq!(ids.len(), n);
}

/// A fresh directory for one agent's spool, under cargo's per-target temp directory, for
/// `STATE_DIRECTORY`: every agent a test starts gets its own spool and `edgecam.seq`.
pub fn state_dir() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("state")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

/// The environment of [`state_dir`], for `config::load_str`.
pub fn state_env() -> [(String, String); 1] {
    [("STATE_DIRECTORY".to_string(), state_dir())]
}

/// Runs `edgecam run` on the configuration `toml` (its own spool) for `secs` seconds, then
/// SIGTERM. Returns the exit code and stderr (`RUST_LOG=info`), after checking what every
/// agent whose broker refuses it must show: no panic, exit 0 or 1 (not a crash), nothing
/// delivered, and what it captured spooled, not lost.
pub fn run_refused_agent(case: &str, toml: &str, secs: u64) -> String {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, toml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args(["run", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env("STATE_DIRECTORY", state_dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{case}:\n{stderr}");
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{case}: exit {:?}\n{stderr}",
        out.status
    );
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("frames:"))
        .unwrap_or_else(|| panic!("{case}: no summary in\n{stderr}"));
    assert!(summary.contains(" delivered 0 "), "{case}: {summary}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("spool:") && !l.contains("spool: 0 spooled")),
        "{case}: what the agent took is spooled, not lost:\n{stderr}"
    );
    stderr
}

/// One file `edgecam consume` wrote, with the fields of its name
/// (`<YYYYMMDDTHHMMSS.ffffffZ>-<seq>-<id>.<ext>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Consumed {
    /// The whole path.
    pub path: std::path::PathBuf,
    /// Its date folder, `YYYYMMDD`.
    pub date: String,
    /// The capture-time part of the name.
    pub captured: String,
    /// The seq part, as a number.
    pub seq: u64,
    /// The id part.
    pub id: String,
    /// The extension.
    pub ext: String,
}

/// The files under `<dir>/<device>/<date>/`, sorted by path (so, by the naming rule, in
/// capture order). Panics on a name that does not follow the rule, or any other entry
/// (a leftover temporary file, a file outside a date folder).
pub fn consumed_files(dir: &std::path::Path, device: &str) -> Vec<Consumed> {
    let device_dir = dir.join(device);
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&device_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", device_dir.display()));
    for date in entries {
        let date = date.unwrap();
        assert!(date.file_type().unwrap().is_dir(), "{:?}", date.path());
        let date_name = date.file_name().to_string_lossy().into_owned();
        assert!(
            date_name.len() == 8 && date_name.bytes().all(|b| b.is_ascii_digit()),
            "date folder {date_name}"
        );
        for f in std::fs::read_dir(date.path()).unwrap() {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (stem, ext) = name.rsplit_once('.').unwrap_or_else(|| panic!("{name}"));
            let parts: Vec<&str> = stem.splitn(3, '-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert_eq!(parts[0].len(), "20261203T061502.123456Z".len(), "{name}");
            assert!(parts[0].starts_with(&date_name), "{name} in {date_name}");
            assert_eq!(parts[1].len(), 20, "{name}: seq zero-padded to 20 digits");
            out.push(Consumed {
                date: date_name.clone(),
                captured: parts[0].to_string(),
                seq: parts[1].parse().unwrap_or_else(|_| panic!("{name}")),
                id: parts[2].to_string(),
                ext: ext.to_string(),
                path: path.clone(),
            });
        }
    }
    out.sort();
    out
}
