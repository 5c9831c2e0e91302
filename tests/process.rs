//! `edgecam process` against librdkafka's mock cluster: real footage published by the agent,
//! `examples/people.py` (OpenCV's HOG people detector) as the worker, one result per frame
//! with the frame's headers and people found where people walk; a worker that hangs, one
//! that answers garbage and one that crashes once: the first two dead-lettered with their
//! reason, the third's frame retried and answered. Needs OpenCV for Python (`scripts/setup`
//! installs `opencv-python-headless`); without it the first test fails saying so.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{read_topic, unique_topic, Rec};
use edgecam::metrics::Metrics;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

/// Publishes `n` frames of the real footage as device `cam` to `topic`.
async fn publish_footage(bootstrap: &str, topic: &str, n: u64) {
    let footage = common::testdata("vtest-768x576-10fps.mjpeg");
    let cfg = edgecam::config::load_str(
        &format!(
            "[device]\nid = \"cam\"\n[source]\nkind = \"mjpeg\"\npath = \"{}\"\nfps = 0\n\
             max_frames = {n}\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n",
            footage.display()
        ),
        common::state_env(),
    )
    .unwrap();
    let report =
        edgecam::pipeline::run(cfg, CancellationToken::new(), Arc::new(Metrics::default()))
            .await
            .unwrap();
    assert_eq!(report.sink.delivered.get(topic), Some(&n));
}

/// `edgecam process` with `args`, then `--` and `command`; its stderr.
async fn process(args: Vec<String>, command: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .arg("process")
            .args(&args)
            .arg("--")
            .args(&command)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn by_seq(records: &[Rec]) -> BTreeMap<u64, &Rec> {
    records
        .iter()
        .map(|r| (r.h("edgecam.seq").parse().unwrap(), r))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn people_are_counted_on_every_frame_of_the_footage() {
    let opencv = std::process::Command::new("python3")
        .args(["-c", "import cv2; cv2.HOGDescriptor()"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        opencv,
        "OpenCV for Python with the HOG detector is needed: scripts/setup installs \
         opencv-python-headless (below 5)"
    );
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (frames, results) = (unique_topic("frames"), unique_topic("people"));
    cluster.create_topic(&frames, 1, 1).unwrap();
    cluster.create_topic(&results, 1, 1).unwrap();
    let n = 20;
    publish_footage(&bootstrap, &frames, n).await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/people.py");
    let (ok, stderr) = process(
        args(&[
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            &frames,
            "--group-id",
            &unique_topic("g"),
            "--results-topic",
            &results,
            "--workers",
            "2",
            "--max-frames",
            &n.to_string(),
            "--idle-timeout-ms",
            "20000",
        ]),
        args(&["python3", example]),
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!("processed {n} frames, failed 0")),
        "{stderr}"
    );
    let (b, r) = (bootstrap.clone(), results.clone());
    let got = tokio::task::spawn_blocking(move || {
        read_topic(&b, &r, 1, n as usize, Duration::from_secs(20))
    })
    .await
    .unwrap();
    let got = by_seq(&got);
    let sent = {
        let (b, f) = (bootstrap.clone(), frames.clone());
        tokio::task::spawn_blocking(move || {
            read_topic(&b, &f, 1, n as usize, Duration::from_secs(20))
        })
        .await
        .unwrap()
    };
    assert_eq!(got.len(), n as usize, "one result per frame");
    let mut with_people = 0;
    for frame in &sent {
        let seq: u64 = frame.h("edgecam.seq").parse().unwrap();
        let result = got[&seq];
        for h in ["edgecam.frame_id", "edgecam.device", "edgecam.captured_at"] {
            assert_eq!(result.h(h), frame.h(h), "{h} of seq {seq}");
        }
        assert_eq!(result.h("edgecam.source_topic"), frames);
        assert_eq!(result.h("edgecam.source_offset"), frame.offset.to_string());
        assert_eq!(result.key, b"cam");
        let answer: serde_json::Value = serde_json::from_slice(&result.value).unwrap();
        let people = answer["people"].as_u64().unwrap();
        assert_eq!(answer["boxes"].as_array().unwrap().len() as u64, people);
        with_people += u64::from(people > 0);
    }
    // People walk through the whole clip.
    assert!(
        with_people >= n / 2,
        "{with_people} of {n} frames with people"
    );
}

/// A worker in Python that answers `{"seq": …}`, hangs on seq 3, answers garbage on seq 5
/// and exits the first time it meets seq 7 (a marker file says it did).
const FLAKY: &str = r#"
import json, os, sys, time
marker = sys.argv[1]
for line in sys.stdin.buffer:
    meta = json.loads(line)
    sys.stdin.buffer.read(meta["length"])
    seq = int(meta["headers"]["edgecam.seq"])
    if seq == 3:
        time.sleep(3600)
    if seq == 7 and not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit(1)
    sys.stdout.write("garbage\n" if seq == 5 else json.dumps({"seq": seq}) + "\n")
    sys.stdout.flush()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_a_garbled_and_a_crashing_worker() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (frames, results, dead) = (
        unique_topic("frames"),
        unique_topic("out"),
        unique_topic("dlq"),
    );
    for t in [&frames, &results, &dead] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let n = 10;
    publish_footage(&bootstrap, &frames, n).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed-once");
    let (ok, stderr) = process(
        args(&[
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            &frames,
            "--group-id",
            &unique_topic("g"),
            "--results-topic",
            &results,
            "--dead-letter-topic",
            &dead,
            "--timeout-ms",
            "1500",
            "--max-frames",
            &n.to_string(),
            "--idle-timeout-ms",
            "20000",
        ]),
        args(&["python3", "-c", FLAKY, marker.to_str().unwrap()]),
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("processed 8 frames, failed 2 (bad_answer 1, worker_timeout 1)"),
        "{stderr}"
    );
    let (b, r, d) = (bootstrap.clone(), results.clone(), dead.clone());
    let (got, dlq) = tokio::task::spawn_blocking(move || {
        (
            read_topic(&b, &r, 1, 8, Duration::from_secs(20)),
            read_topic(&b, &d, 1, 2, Duration::from_secs(20)),
        )
    })
    .await
    .unwrap();
    let got = by_seq(&got);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 4, 6, 7, 8, 9],
        "the crashed frame 7 was tried again and answered"
    );
    let dlq = by_seq(&dlq);
    assert_eq!(dlq[&3].h("edgecam.reason"), "worker_timeout");
    assert_eq!(dlq[&5].h("edgecam.reason"), "bad_answer");
    assert!(
        dlq[&3].value.starts_with(&[0xFF, 0xD8]),
        "the frame itself is dead-lettered"
    );
    assert!(marker.exists());
}

/// A worker that answers `{"seq": …}` after 200 ms per frame.
const SLOW: &str = r#"
import json, sys, time
for line in sys.stdin.buffer:
    meta = json.loads(line)
    sys.stdin.buffer.read(meta["length"])
    time.sleep(0.2)
    sys.stdout.write(json.dumps({"seq": int(meta["headers"]["edgecam.seq"])}) + "\n")
    sys.stdout.flush()
"#;

/// `edgecam process` SIGKILLed mid-stream, then started again in the same group: every
/// frame has a result (at least once; a frame answered before the kill but not yet committed
/// may be answered twice).
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_process_command_loses_no_frame() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (frames, results) = (unique_topic("frames"), unique_topic("out"));
    for t in [&frames, &results] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let n = 40;
    publish_footage(&bootstrap, &frames, n).await;
    let group = unique_topic("g");
    let run_args = |extra: &[&str]| {
        let mut a = args(&[
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            &frames,
            "--group-id",
            &group,
            "--results-topic",
            &results,
            // The killed member leaves the group after 6 s, not librdkafka's default 45 s.
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=1000",
        ]);
        a.extend(args(extra));
        a
    };
    let port = common::mosquitto::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .arg("process")
        .args(run_args(&["--listen", &listen]))
        .args(["--", "python3", "-c", SLOW])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some results are out, but not all.
    let (b, r) = (bootstrap.clone(), results.clone());
    let before =
        tokio::task::spawn_blocking(move || read_topic(&b, &r, 1, 5, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(
        before.len() >= 5 && before.len() < n as usize,
        "{} results",
        before.len()
    );
    // /metrics counts what the workers did so far.
    let (status, _, body) =
        tokio::task::spawn_blocking(move || common::http::get(port, "/metrics"))
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{text}");
    let processed: u64 = text
        .lines()
        .find(|l| l.starts_with("edgecam_process_frames_processed_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(processed >= 5, "{text}");
    assert!(text.contains("edgecam_process_seconds_count{"), "{text}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (ok, stderr) = process(
        run_args(&["--idle-timeout-ms", "20000"]),
        args(&["python3", "-c", SLOW]),
    )
    .await;
    assert!(ok, "{stderr}");
    let (b, r) = (bootstrap.clone(), results.clone());
    // Everything on the topic, duplicates included: read until nothing more comes.
    let all =
        tokio::task::spawn_blocking(move || read_topic(&b, &r, 1, 10_000, Duration::from_secs(10)))
            .await
            .unwrap();
    let seqs: std::collections::BTreeSet<u64> = all
        .iter()
        .map(|r| r.h("edgecam.seq").parse().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..n).collect(),
        "{} results for {n} frames",
        all.len()
    );
}
