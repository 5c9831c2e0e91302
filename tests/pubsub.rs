//! The Pub/Sub sink against Google's real emulator (a separate JVM process on a free
//! port): real footage comes back byte for byte with every attribute, in order, each
//! message within the budget; a frozen emulator loses nothing; a missing topic is a start-up
//! error unless `create_topic = true`. Pub/Sub's limits and error classes, which the
//! emulator does not enforce, are unit tests in `src/sink/pubsub/`.
//!
//! Needs the emulator (Debian package `google-cloud-cli-pubsub-emulator`, Java); without it
//! these tests say so and pass, unless `EDGECAM_REQUIRE_PUBSUB=1` (`scripts/test
//! --with-pubsub`, and CI), where its absence fails them.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::pubsub::{Emulator, Pulled};
use edgecam::metrics::Metrics;
use tokio_util::sync::CancellationToken;

const PROJECT: &str = "edgecam-test";

/// The emulator, or `None` (said on stderr) when it is not installed and not required.
fn emulator() -> Option<Emulator> {
    let e = Emulator::try_start();
    if e.is_none() {
        eprintln!("skipped: the Pub/Sub emulator is not installed (EDGECAM_REQUIRE_PUBSUB=1 makes this a failure)");
    }
    e
}

/// An agent configuration for device `device` publishing `source` to `topic` on `emu`.
fn agent(
    emu: &Emulator,
    device: &str,
    source: &str,
    topic: &str,
    extra: &str,
) -> edgecam::config::Config {
    let mut env = common::state_env().to_vec();
    env.push(("PUBSUB_EMULATOR_HOST".into(), emu.host_port()));
    edgecam::config::load_str(
        &format!(
            "[device]\nid = \"{device}\"\n[source]\n{source}\n[sink]\nkind = \"pubsub\"\n\
             [pubsub]\nproject = \"{PROJECT}\"\ntopic = \"{topic}\"\n{extra}"
        ),
        env,
    )
    .unwrap()
}

/// The frames of the MJPEG file `path`, as the files they are.
fn frames_of(path: &std::path::Path) -> Vec<bytes::Bytes> {
    let data = std::fs::read(path).unwrap();
    let mut sp = edgecam::source::mjpeg::MjpegSplitter::new();
    sp.push(&data);
    std::iter::from_fn(|| sp.next_frame().map(Result::unwrap)).collect()
}

fn seq(p: &Pulled) -> u64 {
    p.attributes["edgecam.seq"].parse().unwrap()
}

/// Pub/Sub's own count of a message: data, attribute keys and values, ordering key.
fn pubsub_size(p: &Pulled) -> usize {
    p.data.len()
        + p.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + p.ordering_key.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_footage_comes_back_byte_for_byte_in_order_and_within_the_budget() {
    let Some(emu) = emulator() else { return };
    emu.create_topic(PROJECT, "frames");
    emu.create_subscription(PROJECT, "all", "frames", true);
    let footage = common::testdata("vtest-768x576-10fps.mjpeg");
    let originals = frames_of(&footage);
    let n = 120;

    // A budget the camera's frames fit: published untouched.
    let cfg = agent(
        &emu,
        "porch",
        &format!(
            "kind = \"mjpeg\"\npath = \"{}\"\nfps = 0\nmax_frames = {n}",
            footage.display()
        ),
        "frames",
        "",
    );
    let metrics = Arc::new(Metrics::default());
    let report = edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
        .await
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(report.sink.delivered.get("frames"), Some(&(n as u64)));
    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());

    // A tight one: every frame re-encoded to fit.
    let budget = 20_000;
    let cfg = agent(
        &emu,
        "yard",
        &format!(
            "kind = \"mjpeg\"\npath = \"{}\"\nfps = 0\nmax_frames = {n}",
            footage.display()
        ),
        "frames",
        &format!("[encode]\nmax_message_bytes = {budget}\n"),
    );
    let report =
        edgecam::pipeline::run(cfg, CancellationToken::new(), Arc::new(Metrics::default()))
            .await
            .unwrap();
    assert_eq!(report.sink.delivered.get("frames"), Some(&(n as u64)));

    let pulled = tokio::task::spawn_blocking(move || {
        let p = emu.pull_n(PROJECT, "all", 2 * n, Duration::from_secs(120));
        (emu, p)
    })
    .await
    .unwrap()
    .1;
    assert_eq!(pulled.len(), 2 * n);
    let mut by_device: BTreeMap<String, Vec<&Pulled>> = BTreeMap::new();
    for p in &pulled {
        assert_eq!(p.ordering_key, p.attributes["edgecam.device"]);
        by_device.entry(p.ordering_key.clone()).or_default().push(p);
    }
    let porch = &by_device["porch"];
    let yard = &by_device["yard"];
    // In per-device order, every frame once.
    for frames in [porch, yard] {
        let seqs: Vec<u64> = frames.iter().map(|p| seq(p)).collect();
        assert_eq!(seqs, (0..n as u64).collect::<Vec<_>>());
    }
    for (p, original) in porch.iter().zip(&originals) {
        assert_eq!(p.data, original.as_ref(), "seq {}", seq(p));
        for name in [
            "edgecam.device",
            "edgecam.seq",
            "edgecam.frame_id",
            "edgecam.captured_at",
            "content-type",
            "edgecam.width",
            "edgecam.height",
            "edgecam.codec",
            "edgecam.quality",
        ] {
            assert!(
                p.attributes.contains_key(name),
                "{name} missing: {:?}",
                p.attributes
            );
        }
        assert_eq!(p.attributes["content-type"], "image/jpeg");
        assert_eq!(p.attributes["edgecam.width"], "768");
    }
    for p in yard {
        assert!(
            pubsub_size(p) <= budget,
            "seq {}: {} bytes over the {budget}-byte budget",
            seq(p),
            pubsub_size(p)
        );
        assert!(p.data.starts_with(&[0xFF, 0xD8]) && p.data.ends_with(&[0xFF, 0xD9]));
    }
    let ids: std::collections::HashSet<&str> = pulled
        .iter()
        .map(|p| p.attributes["edgecam.frame_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2 * n, "every frame has its own frame_id");
}

/// The emulator frozen (SIGSTOP) for 20 s while frames flow at 10 fps: requests time out and
/// are sent again, frames wait in the spool, and after SIGCONT every frame arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_emulator_loses_nothing() {
    let Some(emu) = emulator() else { return };
    emu.create_topic(PROJECT, "frozen");
    emu.create_subscription(PROJECT, "frozen-all", "frozen", true);
    let footage = common::testdata("vtest-768x576-10fps.mjpeg");
    let n = 300u64;
    let cfg = agent(
        &emu,
        "gate",
        &format!(
            "kind = \"mjpeg\"\npath = \"{}\"\nfps = 10\nmax_frames = {n}",
            footage.display()
        ),
        "frozen",
        "request_timeout_ms = 2000\n",
    );
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run(
        cfg,
        CancellationToken::new(),
        metrics.clone(),
    ));
    common::mosquitto::eventually("frames before the freeze", || {
        metrics.delivered.load(Relaxed) >= 30
    })
    .await;
    emu.pause();
    let frozen_at = metrics.delivered.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Nothing can have been delivered to a stopped process (one answer may have been on
    // its way when it stopped).
    assert!(metrics.delivered.load(Relaxed) <= frozen_at + 10);
    emu.resume();
    let report = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the agent finishes after the emulator resumes")
        .unwrap()
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
    assert!(
        metrics.delivery_retries.load(Relaxed) >= 1,
        "the freeze was noticed"
    );
    // A request that timed out while the emulator was stopped was stored when it resumed,
    // and sent again too: duplicates carry the same frame_id; nothing may be missing.
    let (pulled, first) = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + Duration::from_secs(120);
        let mut pulled: Vec<Pulled> = Vec::new();
        let mut first: BTreeMap<u64, String> = BTreeMap::new();
        while first.len() < n as usize && std::time::Instant::now() < until {
            for p in emu.pull_n(PROJECT, "frozen-all", 100, Duration::from_secs(5)) {
                let id = p.attributes["edgecam.frame_id"].clone();
                let known = first.entry(seq(&p)).or_insert_with(|| id.clone());
                assert_eq!(*known, id, "seq {} under two frame ids", seq(&p));
                pulled.push(p);
            }
        }
        (pulled, first)
    })
    .await
    .unwrap();
    eprintln!(
        "{} messages pulled for {} frames ({} duplicates from requests sent again)",
        pulled.len(),
        first.len(),
        pulled.len() - first.len()
    );
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>(),
        "every frame arrived"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_stops_the_start_unless_it_may_be_created() {
    let Some(emu) = emulator() else { return };
    let source = "kind = \"synthetic\"\nwidth = 64\nheight = 48\nfps = 0\nmax_frames = 5";
    let err = edgecam::pipeline::run(
        agent(&emu, "cam", source, "nosuchtopic", ""),
        CancellationToken::new(),
        Arc::new(Metrics::default()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("projects/edgecam-test/topics/nosuchtopic does not exist")
            && err.contains("create_topic"),
        "{err}"
    );
    let report = edgecam::pipeline::run(
        agent(&emu, "cam", source, "madeatstart", "create_topic = true\n"),
        CancellationToken::new(),
        Arc::new(Metrics::default()),
    )
    .await
    .unwrap();
    assert_eq!(report.sink.delivered.get("madeatstart"), Some(&5));
    assert!(
        tokio::task::spawn_blocking(move || emu.get_topic(PROJECT, "madeatstart"))
            .await
            .unwrap()
            .is_some()
    );
}

/// Every file under `dir`, relative, sorted (as `ls -R | sort` shows capture order).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// `edgecam consume --pubsub-subscription … --idle-timeout-ms 3000` against `emu`.
async fn consume_bin(emu: &Emulator, sub: &str, out: &std::path::Path) -> (bool, String) {
    let (host, sub, out) = (emu.host_port(), sub.to_string(), out.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .args(["consume", "--pubsub-subscription"])
            .arg(format!("projects/{PROJECT}/subscriptions/{sub}"))
            .arg("--output-dir")
            .arg(&out)
            .args(["--idle-timeout-ms", "3000"])
            .env("PUBSUB_EMULATOR_HOST", host)
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

/// What the agent published comes back through `consume --pubsub-subscription` as the same
/// files, named as from Kafka; everything is acknowledged (a second run finds nothing); a
/// message delivered again finds its file and is counted as a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn consume_writes_the_frames_of_a_subscription_and_acknowledges_them() {
    let Some(emu) = emulator() else { return };
    emu.create_topic(PROJECT, "toconsume");
    emu.create_subscription(PROJECT, "files", "toconsume", true);
    emu.create_subscription(PROJECT, "audit", "toconsume", true);
    let footage = common::testdata("vtest-768x576-10fps.mjpeg");
    let originals = frames_of(&footage);
    let n = 30;
    let cfg = agent(
        &emu,
        "porch",
        &format!(
            "kind = \"mjpeg\"\npath = \"{}\"\nfps = 0\nmax_frames = {n}",
            footage.display()
        ),
        "toconsume",
        "",
    );
    edgecam::pipeline::run(cfg, CancellationToken::new(), Arc::new(Metrics::default()))
        .await
        .unwrap();

    // A file that cannot be written: consume fails and acknowledges nothing it did not
    // write (the device folder is taken by a file).
    let blocked = tempfile::tempdir().unwrap();
    std::fs::write(blocked.path().join("porch"), b"in the way").unwrap();
    let (ok, stderr) = consume_bin(&emu, "files", blocked.path()).await;
    assert!(!ok && stderr.contains("porch"), "{stderr}");

    let out = tempfile::tempdir().unwrap();
    let (ok, stderr) = consume_bin(&emu, "files", out.path()).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!("consumed {n} frames")) && stderr.contains("0 duplicates"),
        "{stderr}"
    );
    let files = files_under(out.path());
    assert_eq!(files.len(), n, "{files:?}");
    for (i, (f, original)) in files.iter().zip(&originals).enumerate() {
        // porch/<date>/<time>-<seq, 20 digits>-<id>.jpg, in capture order.
        let name = f.to_str().unwrap();
        assert!(name.starts_with("porch/"), "{name}");
        assert!(
            name.contains(&format!("-{i:020}-")) && name.ends_with(".jpg"),
            "{name}"
        );
        assert_eq!(
            std::fs::read(out.path().join(f)).unwrap(),
            original.as_ref(),
            "{name}"
        );
    }

    // All acknowledged: nothing comes again, and the idle timeout ends the empty wait.
    let again = tempfile::tempdir().unwrap();
    let (ok, stderr) = consume_bin(&emu, "files", again.path()).await;
    assert!(ok && stderr.contains("consumed 0 frames"), "{stderr}");

    // The same frame published again (a resend, with the attributes the agent gave it):
    // its file exists, it is not written twice.
    let (ok, stderr) = {
        let emu = &emu;
        let first = tokio::task::block_in_place(|| {
            emu.pull_n(PROJECT, "audit", 1, Duration::from_secs(30))
        });
        let first = &first[0];
        assert_eq!(seq(first), 0);
        let attrs: Vec<(&str, &str)> = first
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tokio::task::block_in_place(|| {
            emu.publish(
                PROJECT,
                "toconsume",
                &first.data,
                &attrs,
                &first.ordering_key,
            )
        });
        consume_bin(emu, "files", out.path()).await
    };
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("consumed 0 frames") && stderr.contains("1 duplicates"),
        "{stderr}"
    );
    assert_eq!(files_under(out.path()), files);
}

/// `edgecam run` publishing to the emulator: `/metrics` counts `frames_delivered_total` under
/// `sink="pubsub"`, `/readyz` says ready, and SIGTERM stops it with exit 0 and every frame it
/// captured delivered.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_reports_pubsub_in_metrics_and_stops_cleanly_on_sigterm() {
    let Some(emu) = emulator() else { return };
    emu.create_topic(PROJECT, "daemon");
    emu.create_subscription(PROJECT, "daemon-all", "daemon", true);
    let dir = tempfile::tempdir().unwrap();
    let port = common::mosquitto::free_port();
    let cfg = dir.path().join("cam.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"yard\"\n[source]\nkind = \"synthetic\"\nwidth = 160\nheight = 120\n\
             fps = 20\n[http]\nlisten = \"127.0.0.1:{port}\"\n[sink]\nkind = \"pubsub\"\n\
             [pubsub]\nproject = \"{PROJECT}\"\ntopic = \"daemon\"\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("PUBSUB_EMULATOR_HOST", emu.host_port())
        .env("STATE_DIRECTORY", common::state_dir())
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let delivered = |text: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with("edgecam_frames_delivered_total{") && l.contains("sink=\"pubsub\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut metrics = String::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _, body) =
            tokio::task::spawn_blocking(move || common::http::get(port, "/metrics"))
                .await
                .unwrap();
        if status == 200 {
            metrics = String::from_utf8_lossy(&body).into_owned();
            if delivered(&metrics) >= 20 {
                break;
            }
        }
    }
    assert!(delivered(&metrics) >= 20, "{metrics}");
    let (status, _, body) = tokio::task::spawn_blocking(move || common::http::get(port, "/readyz"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Every frame it captured is on the subscription: seq 0..n without a gap.
    let pulled = tokio::task::spawn_blocking(move || {
        let p = emu.pull_n(PROJECT, "daemon-all", 100_000, Duration::from_secs(5));
        (emu, p)
    })
    .await
    .unwrap()
    .1;
    let mut seqs: Vec<u64> = pulled.iter().map(seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert!(seqs.len() >= 20, "{} frames", seqs.len());
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "{stderr}");
    // As many as the summary says it captured and delivered, none dropped.
    let line = stderr
        .lines()
        .find(|l| l.starts_with("frames: captured"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let n = seqs.len();
    assert!(
        line.starts_with(&format!("frames: captured {n} "))
            && line.contains(&format!("delivered {n} dropped 0")),
        "{line} for {n} frames on the subscription"
    );
}

/// `edgecam process --pubsub-subscription`: every frame published by an agent is handed to a
/// worker and its answer published to a Pub/Sub topic with the frame's identity and where
/// it was read; a frame the worker answers with garbage twice goes to the dead-letter topic
/// with its bytes and `edgecam.reason = bad_answer`, a forged JPEG goes there as
/// `frame_too_large` without reaching a worker; everything is acknowledged afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn process_answers_every_frame_of_a_subscription() {
    let Some(emu) = emulator() else { return };
    emu.create_topic(PROJECT, "toprocess");
    emu.create_subscription(PROJECT, "workers", "toprocess", true);
    for t in ["answers", "failed"] {
        emu.create_topic(PROJECT, t);
        emu.create_subscription(PROJECT, &format!("{t}-read"), t, false);
    }
    let footage = common::testdata("vtest-768x576-10fps.mjpeg");
    let originals = frames_of(&footage);
    let n = 12;
    let cfg = agent(
        &emu,
        "porch",
        &format!(
            "kind = \"mjpeg\"\npath = \"{}\"\nfps = 0\nmax_frames = {n}",
            footage.display()
        ),
        "toprocess",
        "",
    );
    edgecam::pipeline::run(cfg, CancellationToken::new(), Arc::new(Metrics::default()))
        .await
        .unwrap();
    // A forged JPEG (its SOF says 65000x65000): refused by [limits], never given to a worker.
    let forged = [
        0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFD, 0xE8, 0xFD, 0xE8, 0x03, 0x01, 0x22, 0x00,
        0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9,
    ];
    tokio::task::block_in_place(|| {
        emu.publish(
            PROJECT,
            "toprocess",
            &forged,
            &[("edgecam.seq", "99"), ("edgecam.device", "mallory")],
            "",
        )
    });

    // A worker in a few lines: the image's length and seq, and garbage for seq 5.
    let worker = r#"
import json, sys
for line in sys.stdin.buffer:
    meta = json.loads(line)
    data = sys.stdin.buffer.read(meta["length"])
    seq = meta["headers"]["edgecam.seq"]
    answer = {"bytes": len(data), "seq": seq, "message_id": meta["message_id"]}
    sys.stdout.write("not json\n" if seq == "5" else json.dumps(answer) + "\n")
    sys.stdout.flush()
"#;
    let host = emu.host_port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .arg("process")
            .arg("--pubsub-subscription")
            .arg(format!("projects/{PROJECT}/subscriptions/workers"))
            .args(["--results-topic", "answers", "--dead-letter-topic"])
            .arg(format!("projects/{PROJECT}/topics/failed"))
            .args([
                "--workers",
                "2",
                "--idle-timeout-ms",
                "3000",
                "--",
                "python3",
                "-c",
            ])
            .arg(worker)
            .env("PUBSUB_EMULATOR_HOST", host)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "processed {} frames, failed 2 (bad_answer 1, frame_too_large 1)",
            n - 1
        )),
        "{stderr}"
    );

    let answers = tokio::task::block_in_place(|| {
        emu.pull_n(PROJECT, "answers-read", n - 1, Duration::from_secs(30))
    });
    assert_eq!(answers.len(), n - 1);
    let mut seqs: Vec<u64> = Vec::new();
    for a in &answers {
        let s = seq(a);
        seqs.push(s);
        let v: serde_json::Value = serde_json::from_slice(&a.data).unwrap();
        assert_eq!(v["bytes"], originals[s as usize].len(), "answer {v}");
        assert_eq!(v["seq"], s.to_string());
        assert_eq!(a.attributes["edgecam.device"], "porch");
        assert_eq!(a.ordering_key, "porch");
        assert!(!a.attributes["edgecam.frame_id"].is_empty());
        assert_eq!(
            a.attributes["edgecam.source_subscription"],
            format!("projects/{PROJECT}/subscriptions/workers")
        );
        assert_eq!(a.attributes["edgecam.source_message_id"], v["message_id"]);
    }
    seqs.sort();
    let want: Vec<u64> = (0..n as u64).filter(|&s| s != 5).collect();
    assert_eq!(seqs, want);

    let mut failed = tokio::task::block_in_place(|| {
        emu.pull_n(PROJECT, "failed-read", 2, Duration::from_secs(30))
    });
    failed.sort_by_key(seq);
    assert_eq!(failed.len(), 2);
    assert_eq!(seq(&failed[0]), 5);
    assert_eq!(failed[0].attributes["edgecam.reason"], "bad_answer");
    assert_eq!(failed[0].data, originals[5].as_ref());
    assert_eq!(seq(&failed[1]), 99);
    assert_eq!(failed[1].attributes["edgecam.reason"], "frame_too_large");
    assert_eq!(failed[1].data, forged);

    // Every frame acknowledged: none is delivered again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tokio::task::block_in_place(|| emu.pull(PROJECT, "workers", 100)).is_empty());
}
