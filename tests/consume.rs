//! `edgecam consume` against librdkafka's mock cluster, with frames published by the real
//! agent pipeline from real footage: first runs with the defaults, agent restarts, duplicate
//! frames, conversions on the way out, and librdkafka properties from `-X` and `--config`.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::{consumed_files, read_topic, unique_topic, Rec, FIXTURE};
use edgecam::consume::{consume, ConsumeOptions, Conversion};
use edgecam::metrics::Metrics;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_edgecam");
const DEVICE: &str = "front-door";

/// The agent's configuration: the fixture footage, `frames` frames, as fast as possible.
fn agent_toml(bootstrap: &str, topic: &str, frames: u64, encode: &str) -> String {
    format!(
        r#"
[device]
id = "{DEVICE}"
[source]
kind = "mjpeg"
path = "{FIXTURE}"
fps = 0
loop = true
max_frames = {frames}
[pipeline]
overflow = "block"
[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
{encode}
"#
    )
}

/// Runs one agent to the end of its `frames` frames, with a spool of its own: a fresh
/// agent, so its `edgecam.seq` starts at 0 (as after a re-install or a lost state folder).
async fn run_agent(bootstrap: &str, topic: &str, frames: u64, encode: &str) {
    let cfg = edgecam::config::load_str(
        &agent_toml(bootstrap, topic, frames, encode),
        common::state_env(),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let report = edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
        .await
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), frames);
}

/// `edgecam consume` as a user runs it, in a blocking thread (the mock cluster lives in
/// this process).
async fn consume_bin(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("consume")
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn opts(bootstrap: &str, topic: &str, dir: &Path) -> ConsumeOptions {
    ConsumeOptions {
        idle_timeout: Some(Duration::from_secs(5)),
        list_files: true,
        ..ConsumeOptions::new(bootstrap, topic, unique_topic("group"), dir)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_with_default_options_saves_every_frame_produced_before_it() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("first-run");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let n = 8;
    run_agent(&bootstrap, &topic, n, "").await;
    let recs = read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(10));
    assert_eq!(recs.len(), n as usize);

    // No --auto-offset-reset, no --max-frames: only the idle timeout ends it, and it starts
    // at the assignment, not before the group join.
    let out_dir = tempfile::tempdir().unwrap();
    let out = consume_bin(args(&[
        "--bootstrap-servers",
        &bootstrap,
        "--topic",
        &topic,
        "--group-id",
        &unique_topic("group"),
        "--output-dir",
        out_dir.path().to_str().unwrap(),
        "--idle-timeout-ms",
        "3000",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("consumed {n} frames")),
        "summary: {stderr}"
    );
    let files = consumed_files(out_dir.path(), DEVICE);
    assert_eq!(files.len(), n as usize, "{files:#?}");
    for (f, r) in files.iter().zip(&recs) {
        assert_eq!(f.seq.to_string(), r.h("edgecam.seq"));
        assert_eq!(
            std::fs::read(&f.path).unwrap(),
            r.value,
            "written as received"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_restarts_overwrite_nothing_and_names_sort_in_capture_order() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("restarts");
    cluster.create_topic(&topic, 1, 1).unwrap();
    // One agent, then two restarts: seq 0..4 three times.
    let per_run = 4;
    for _ in 0..3 {
        run_agent(&bootstrap, &topic, per_run, "").await;
    }
    let total = 3 * per_run as usize;
    let recs = read_topic(&bootstrap, &topic, 1, total, Duration::from_secs(10));
    assert_eq!(recs.len(), total);
    let seqs: Vec<&str> = recs.iter().map(|r| r.h("edgecam.seq")).collect();
    assert_eq!(
        seqs,
        ["0", "1", "2", "3"].repeat(3),
        "seq restarted each run"
    );

    let dir = tempfile::tempdir().unwrap();
    let report = consume(
        &opts(&bootstrap, &topic, dir.path()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.frames, total as u64);
    assert_eq!(report.duplicates, 0);
    let files = consumed_files(dir.path(), DEVICE);
    assert_eq!(files.len(), total, "one file per frame, none overwritten");
    // Sorted by name = the order the agent captured them (offset order in one partition).
    for (f, r) in files.iter().zip(&recs) {
        let captured: String = r
            .h("edgecam.captured_at")
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        assert_eq!(f.captured, captured, "{}", f.path.display());
        assert_eq!(f.seq.to_string(), r.h("edgecam.seq"));
        let id = r.h("edgecam.frame_id").replace('-', "");
        assert_eq!(f.id, id[id.len() - 12..]);
        assert_eq!(std::fs::read(&f.path).unwrap(), r.value);
    }
}

/// Produces `recs` again as they are (key, headers, value): what the agent does when it
/// resends after an outage or replays its spool after a crash.
fn resend(bootstrap: &str, topic: &str, recs: &[Rec]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for r in recs {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&r.key)
                    .payload(&r.value)
                    .headers(headers),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_sent_twice_is_written_once_and_counted() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("dups");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let n = 5;
    run_agent(&bootstrap, &topic, n, "").await;
    let recs = read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(10));
    assert_eq!(recs.len(), n as usize);
    // Every frame again, and the first one a third time.
    resend(&bootstrap, &topic, &recs);
    resend(&bootstrap, &topic, &recs[..1]);
    let all = read_topic(
        &bootstrap,
        &topic,
        1,
        2 * n as usize + 1,
        Duration::from_secs(10),
    );
    assert_eq!(all.len(), 2 * n as usize + 1);

    let dir = tempfile::tempdir().unwrap();
    let report = consume(
        &opts(&bootstrap, &topic, dir.path()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.frames, n);
    assert_eq!(report.duplicates, n + 1);
    assert_eq!(report.skipped, 0);
    let files = consumed_files(dir.path(), DEVICE);
    assert_eq!(files.len(), n as usize);
    let before: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).unwrap().modified().unwrap())
        .collect();

    // Another group reading the whole topic into the same folder (a consumer restarted
    // without its offsets): everything is a duplicate, nothing is rewritten.
    let again = consume(
        &opts(&bootstrap, &topic, dir.path()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(again.frames, 0);
    assert_eq!(again.duplicates, 2 * n + 1);
    let files_again = consumed_files(dir.path(), DEVICE);
    assert_eq!(files_again, files);
    let after: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).unwrap().modified().unwrap())
        .collect();
    assert_eq!(after, before, "no file rewritten");
    for (f, r) in files.iter().zip(&recs) {
        assert_eq!(std::fs::read(&f.path).unwrap(), r.value);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grayscale_and_max_width_convert_jpeg_and_lossless_frames() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for (codec, ext) in [("jpeg", "jpg"), ("zstd", "png")] {
        let topic = unique_topic(codec);
        cluster.create_topic(&topic, 1, 1).unwrap();
        let n = 4;
        let encode = format!("[encode]\ncodec = \"{codec}\"\nmax_message_bytes = 900000\n");
        run_agent(&bootstrap, &topic, n, &encode).await;
        let recs = read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(10));
        assert_eq!(recs.len(), n as usize);
        // The fixture is 768x576.
        assert_eq!(recs[0].h("edgecam.width"), "768");
        let dir = tempfile::tempdir().unwrap();
        let o = ConsumeOptions {
            conversion: Conversion {
                grayscale: true,
                max_width: std::num::NonZeroU32::new(320),
            },
            ..opts(&bootstrap, &topic, dir.path())
        };
        let report = consume(&o, CancellationToken::new()).await.unwrap();
        assert_eq!(report.frames, n, "{codec}");
        let files = consumed_files(dir.path(), DEVICE);
        assert_eq!(files.len(), n as usize);
        for f in &files {
            assert_eq!(f.ext, ext);
            let img = image::open(&f.path).unwrap();
            assert_eq!((img.width(), img.height()), (320, 240), "{codec}");
            assert_eq!(img.color().channel_count(), 1, "{codec}: one channel");
        }
        // Only wider frames are scaled: 1000 px leaves the 768 px frames' size alone, and
        // without --grayscale a JPEG is then written exactly as received.
        let dir = tempfile::tempdir().unwrap();
        let o = ConsumeOptions {
            conversion: Conversion {
                grayscale: false,
                max_width: std::num::NonZeroU32::new(1000),
            },
            ..opts(&bootstrap, &topic, dir.path())
        };
        consume(&o, CancellationToken::new()).await.unwrap();
        let files = consumed_files(dir.path(), DEVICE);
        assert_eq!(files.len(), n as usize);
        for (f, r) in files.iter().zip(&recs) {
            let img = image::open(&f.path).unwrap();
            assert_eq!(
                (img.width(), img.height(), img.color().channel_count()),
                (768, 576, 3)
            );
            if codec == "jpeg" {
                assert_eq!(std::fs::read(&f.path).unwrap(), r.value);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_librdkafka_properties_exit_64_naming_them_before_anything_is_made() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let root = tempfile::tempdir().unwrap();
    let out_dir = root.path().join("out");
    for (property, expect) in [
        ("fetch.wait.max.ms=banana", "fetch.wait.max.ms"),
        ("no.such.property=1", "no.such.property"),
        (
            "enable.auto.offset.store=true",
            "only after its file is on disk",
        ),
        ("group.id=other", "--group-id"),
    ] {
        let out = consume_bin(args(&[
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            "t",
            "--group-id",
            "g",
            "--output-dir",
            out_dir.to_str().unwrap(),
            "-X",
            property,
        ]))
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{property}: {stderr}");
        assert!(stderr.contains(expect), "{property}: {stderr}");
        assert!(
            !out_dir.exists(),
            "{property}: output folder made before the check"
        );
    }
    // Not NAME=VALUE: clap's usage error.
    let out = consume_bin(args(&[
        "--bootstrap-servers",
        &bootstrap,
        "--topic",
        "t",
        "--group-id",
        "g",
        "--output-dir",
        out_dir.to_str().unwrap(),
        "-X",
        "fetch.wait.max.ms",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected NAME=VALUE"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_supplies_the_kafka_table_and_its_properties() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("config");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let n = 3;
    run_agent(&bootstrap, &topic, n, "").await;

    // --config gives bootstrap servers and topic; -X goes on top.
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agent.toml");
    std::fs::write(&config, agent_toml(&bootstrap, &topic, 1, "")).unwrap();
    let run = |protocol: &str, out: &Path| {
        args(&[
            "--config",
            config.to_str().unwrap(),
            "--group-id",
            &unique_topic("group"),
            "--output-dir",
            out.to_str().unwrap(),
            "--idle-timeout-ms",
            "3000",
            "-X",
            &format!("security.protocol={protocol}"),
        ])
    };
    let plain = root.path().join("plain");
    let out = consume_bin(run("plaintext", &plain)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(consumed_files(&plain, DEVICE).len(), n as usize, "{stderr}");

    // A property librdkafka refuses in the file's [kafka.properties]: exit 64 naming it.
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        agent_toml(
            &bootstrap,
            &topic,
            1,
            "[kafka.properties]\n\"fetch.wait.max.ms\" = \"x\"\n",
        ),
    )
    .unwrap();
    let out = consume_bin(args(&[
        "--config",
        bad.to_str().unwrap(),
        "--group-id",
        "g",
        "--output-dir",
        root.path().join("never").to_str().unwrap(),
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("fetch.wait.max.ms"), "{stderr}");
}

/// Files under `<dir>/<DEVICE>/<date>/` whose names are not hidden (a `.…tmp` left by a
/// kill is not a file written).
fn visible_files(dir: &Path) -> usize {
    let Ok(dates) = std::fs::read_dir(dir.join(DEVICE)) else {
        return 0;
    };
    dates
        .flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|f| f.flatten())
        .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_run_and_restarted_every_frame_is_there_once() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("kill");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let n = 60; // 60 x 64 KB under the mock's 5 MB per partition
    run_agent(&bootstrap, &topic, n, "").await;
    let recs = read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(10));
    assert_eq!(recs.len(), n as usize);
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let group = unique_topic("group");
    // --grayscale makes each frame a decode and an encode, so the kill lands mid-run. The
    // killed member holds its partition until its session times out: -X shortens that from
    // librdkafka's 45 s to the mock broker's minimum.
    let list = args(&[
        "-X",
        "session.timeout.ms=6000",
        "--bootstrap-servers",
        &bootstrap,
        "--topic",
        &topic,
        "--group-id",
        &group,
        "--output-dir",
        out.to_str().unwrap(),
        "--grayscale",
        "--idle-timeout-ms",
        "3000",
    ]);
    let first = {
        let (list, out) = (list.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(BIN)
                .arg("consume")
                .args(&list)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            while visible_files(&out) < 5 && std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            visible_files(&out)
        })
        .await
        .unwrap()
    };
    assert!(first >= 5, "the first run wrote {first} files");
    eprintln!("killed after {first} of {n} files");

    // The same group again: what was not on disk is written now, once.
    let second = consume_bin(list).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("consumed {} frames", n as usize - first)),
        "after {first} files: {stderr}"
    );
    let files = consumed_files(&out, DEVICE);
    assert_eq!(files.len(), n as usize);
    for (f, r) in files.iter().zip(&recs) {
        assert_eq!(f.seq.to_string(), r.h("edgecam.seq"));
        let img = image::open(&f.path).unwrap();
        assert_eq!(img.color().channel_count(), 1);
    }
}
