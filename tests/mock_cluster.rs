//! End-to-end tests against librdkafka's mock cluster: real Kafka protocol on loopback, with
//! broker failures injected. Real footage in, records read back and checked one by one.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::{check_complete, fixture_frames, read_topic, unique_topic, Rec, FIXTURE};
use edgecam::frame::PixelFormat;
use edgecam::metrics::{DropReason, Metrics};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

fn config(bootstrap: &str, topic: &str, extra: &str, frames: u64) -> edgecam::config::Config {
    let toml = format!(
        r#"
[device]
id = "front-door"
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
{extra}
"#
    );
    // `extra` may add tables; TOML allows [encode] after [kafka] as long as keys are unique.
    edgecam::config::load_str(&toml, common::state_env()).unwrap()
}

/// Checks what every edgecam frame record must satisfy, returns the decoded size.
fn check_frame_record(r: &Rec, budget: usize) -> (u32, u32) {
    assert_eq!(r.key, b"front-door");
    assert_eq!(r.h("edgecam.device"), "front-door");
    humantime::parse_rfc3339(r.h("edgecam.captured_at")).expect("RFC 3339 capture time");
    uuid::Uuid::parse_str(r.h("edgecam.frame_id")).expect("UUID frame id");
    let (w, h): (u32, u32) = (
        r.h("edgecam.width").parse().unwrap(),
        r.h("edgecam.height").parse().unwrap(),
    );
    // The whole record (value + key + headers) fits; the exact wire framing is checked by the
    // unit tests of `record`.
    assert!(r.value.len() + r.key.len() + r.header_bytes <= budget);
    let (dw, dh) = match r.h("content-type") {
        "image/jpeg" => {
            assert_eq!(r.h("edgecam.codec"), "jpeg");
            let q: u8 = r.h("edgecam.quality").parse().unwrap();
            assert!((1..=100).contains(&q));
            let hd = edgecam::jpeg::header(&r.value).unwrap();
            (hd.width, hd.height)
        }
        "image/png" => {
            assert_eq!(r.h("edgecam.codec"), "png");
            assert_eq!(r.h("edgecam.quality"), "lossless");
            let img = image::load_from_memory(&r.value).unwrap();
            (img.width(), img.height())
        }
        "application/vnd.edgecam.raw+zstd" => {
            assert_eq!(r.h("edgecam.codec"), "zstd");
            let pf = PixelFormat::parse(r.h("edgecam.pixel_format")).unwrap();
            let raw = edgecam::encode::codec::decode_zstd(&r.value, w, h, pf).unwrap();
            (raw.width, raw.height)
        }
        other => panic!("unexpected content type {other}"),
    };
    assert_eq!((dw, dh), (w, h), "decoded size matches headers");
    (w, h)
}

async fn publish(cfg: edgecam::config::Config) -> (Arc<Metrics>, edgecam::pipeline::RunReport) {
    let metrics = Arc::new(Metrics::default());
    let report = edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
        .await
        .unwrap();
    (metrics, report)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_footage_passes_through_untouched_and_comes_back_complete() {
    let cluster = MockCluster::new(3).unwrap();
    let topic = unique_topic("passthrough");
    cluster.create_topic(&topic, 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let n = 40; // 40 x 64 KB stays under the mock's 5 MB per partition
    let (metrics, report) = publish(config(&bootstrap, &topic, "", n)).await;
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    assert_eq!(metrics.passthrough.load(Relaxed), n);
    assert_eq!(metrics.encodes.load(Relaxed), 0);

    let recs = read_topic(&bootstrap, &topic, 3, n as usize, Duration::from_secs(20));
    assert_eq!(recs.len(), n as usize);
    check_complete(&recs, n as usize);
    // Keyed by device: one partition holds them all, in sequence order.
    assert!(recs.iter().all(|r| r.partition == recs[0].partition));
    let frames = fixture_frames();
    for r in &recs {
        assert_eq!(check_frame_record(r, 1_000_000), (768, 576));
        let seq: usize = r.h("edgecam.seq").parse().unwrap();
        assert_eq!(
            r.value,
            frames[seq % frames.len()],
            "frame {seq} is the source JPEG, byte for byte"
        );
        assert_eq!(
            r.offset as usize, seq,
            "per-device order kept in the partition"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_codec_fits_a_tight_budget_and_decodes() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for (codec, budget) in [("jpeg", 20_000u32), ("png", 120_000), ("zstd", 150_000)] {
        let topic = unique_topic(codec);
        cluster.create_topic(&topic, 1, 1).unwrap();
        let extra = format!("[encode]\ncodec = \"{codec}\"\nmax_message_bytes = {budget}\n");
        let n = 20;
        let (metrics, _) = publish(config(&bootstrap, &topic, &extra, n)).await;
        assert_eq!(metrics.delivered.load(Relaxed), n, "{codec}");
        assert!(metrics.max_record_bytes.load(Relaxed) <= budget as u64);
        let recs = read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(20));
        check_complete(&recs, n as usize);
        for r in &recs {
            let (w, h) = check_frame_record(r, budget as usize);
            // Downscaled to fit, aspect ratio kept (768:576 = 4:3) within a pixel.
            assert!(w < 768 && h < 576, "{codec}: {w}x{h}");
            assert!(
                ((w as f64 / h as f64) - 4.0 / 3.0).abs() < 0.02,
                "{codec}: {w}x{h}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_budget_drops_counts_and_reports_to_the_error_topic() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("frames");
    let errors = unique_topic("errors");
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.create_topic(&errors, 1, 1).unwrap();
    let extra = format!(
        "error_topic = \"{errors}\"\n[encode]\nmax_message_bytes = 4096\nmin_side_px = 400\n"
    );
    let n = 5;
    let (metrics, report) = publish(config(&bootstrap, &topic, &extra, n)).await;
    assert_eq!(metrics.delivered.load(Relaxed), 0);
    assert_eq!(
        metrics.dropped().get(&DropReason::BudgetUnreachable),
        Some(&n)
    );
    assert_eq!(metrics.error_records.load(Relaxed), n);
    assert_eq!(report.sink.delivered.get(&errors), Some(&n));
    let recs = read_topic(&bootstrap, &errors, 1, n as usize, Duration::from_secs(20));
    assert_eq!(recs.len(), n as usize);
    for r in &recs {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(v["reason"], "budget_unreachable");
        assert_eq!(v["device"], "front-door");
        assert_eq!(r.h("edgecam.reason"), "budget_unreachable");
    }
    assert!(read_topic(&bootstrap, &topic, 1, 1, Duration::from_secs(2)).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_mid_stream_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("outage");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let n = 60;
    let mut cfg = config(
        &bootstrap,
        &topic,
        "message_timeout_ms = 1500\n[encode]\nmax_message_bytes = 20000\n",
        n,
    );
    cfg.source.fps = 30.0;
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run(
        cfg,
        CancellationToken::new(),
        metrics.clone(),
    ));
    // Let some frames through, then take the only broker down for longer than
    // message.timeout.ms so librdkafka gives up and edgecam has to send again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    cluster.broker_up(1).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    assert!(
        metrics.delivery_retries.load(Relaxed) > 0,
        "the outage forced retries"
    );
    let recs = read_topic(
        &bootstrap,
        &topic,
        1,
        n as usize + 50,
        Duration::from_secs(10),
    );
    // Retried records may be duplicated (a lost acknowledgement), never missing.
    let seqs: HashSet<u64> = recs
        .iter()
        .map(|r| r.h("edgecam.seq").parse().unwrap())
        .collect();
    assert_eq!(seqs, (0..n).collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_what_was_accepted() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("shutdown");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let mut cfg = config(
        &bootstrap,
        &topic,
        "[encode]\nmax_message_bytes = 20000\n",
        0,
    );
    cfg.source.fps = 50.0;
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let run = tokio::spawn(edgecam::pipeline::run(cfg, stop.clone(), metrics.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let accepted = metrics.accepted.load(Relaxed);
    assert!(accepted > 10, "frames flowed before the stop: {accepted}");
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.dropped_total(), 0);
    assert_eq!(metrics.delivered.load(Relaxed), accepted);
    let recs = read_topic(
        &bootstrap,
        &topic,
        1,
        accepted as usize,
        Duration::from_secs(10),
    );
    check_complete(&recs, accepted as usize);
}

/// librdkafka's mock cluster does not implement CreateTopics (tansu does: see
/// tests/tansu_interop.rs). Against it, start-up must fail with a clear error, not hang.
#[tokio::test(flavor = "multi_thread")]
async fn topic_creation_failure_is_a_clear_startup_error() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("created");
    let cfg = config(&bootstrap, &topic, "create_topic_partitions = 3\n", 3);
    let t = std::time::Instant::now();
    let err = edgecam::pipeline::run(cfg, CancellationToken::new(), Arc::new(Metrics::default()))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(30));
    let msg = err.to_string();
    assert!(
        msg.contains("creating topic") && msg.contains(&topic),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consume_writes_lossless_frames_as_png_and_jpeg_as_is() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for (codec, ext) in [("zstd", "png"), ("jpeg", "jpg")] {
        let topic = unique_topic(codec);
        cluster.create_topic(&topic, 1, 1).unwrap();
        let extra = format!("[encode]\ncodec = \"{codec}\"\nmax_message_bytes = 150000\n");
        let n = 6;
        let (metrics, _) = publish(config(&bootstrap, &topic, &extra, n)).await;
        assert_eq!(metrics.delivered.load(Relaxed), n);
        let dir = tempfile::tempdir().unwrap();
        let opts = edgecam::consume::ConsumeOptions {
            max_frames: Some(n),
            idle_timeout: Some(Duration::from_secs(20)),
            ..edgecam::consume::ConsumeOptions::new(
                &bootstrap,
                &topic,
                unique_topic("group"),
                dir.path(),
            )
        };
        let report = edgecam::consume::consume(&opts, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.frames, n);
        let recs = read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(10));
        let files = common::consumed_files(dir.path(), "front-door");
        assert_eq!(files.len(), recs.len());
        for r in &recs {
            let seq: u64 = r.h("edgecam.seq").parse().unwrap();
            let file = files.iter().find(|f| f.seq == seq).expect("a file per seq");
            assert_eq!(file.ext, ext);
            let path = &file.path;
            let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(img.width().to_string(), r.h("edgecam.width"));
            assert_eq!(img.height().to_string(), r.h("edgecam.height"));
            if codec == "jpeg" {
                assert_eq!(std::fs::read(path).unwrap(), r.value, "JPEG written as is");
            } else {
                // Lossless: the PNG holds exactly the pixels of the zstd value.
                let raw = edgecam::encode::codec::decode_zstd(
                    &r.value,
                    img.width(),
                    img.height(),
                    PixelFormat::Rgb8,
                )
                .unwrap();
                assert_eq!(img.to_rgb8().into_raw(), raw.data);
            }
        }
    }
}

/// One `OUT_OF_ORDER_SEQUENCE_NUMBER` on Produce puts librdkafka's idempotent producer in its
/// fatal state, where it accepts and delivers nothing more. The sink recreates the producer
/// and sends again every record that was not acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn fatal_producer_error_recreates_the_producer_and_loses_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("fatal");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let n = 60;
    let mut cfg = config(
        &bootstrap,
        &topic,
        "[encode]\nmax_message_bytes = 20000\n",
        n,
    );
    cfg.source.fps = 30.0;
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run(
        cfg,
        CancellationToken::new(),
        metrics.clone(),
    ));
    let m = metrics.clone();
    tokio::time::timeout(Duration::from_secs(20), async move {
        while m.delivered.load(Relaxed) < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("frames flow before the fault");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the agent is not wedged")
        .unwrap()
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    assert!(
        metrics.producer_restarts.load(Relaxed) >= 1,
        "the fault was injected and handled"
    );
    let recs = read_topic(
        &bootstrap,
        &topic,
        1,
        n as usize + 50,
        Duration::from_secs(10),
    );
    let seqs: HashSet<u64> = recs
        .iter()
        .map(|r| r.h("edgecam.seq").parse().unwrap())
        .collect();
    assert_eq!(seqs, (0..n).collect::<HashSet<_>>());
}

/// A producer that keeps failing fatally (every new one hits the fault again) must not hold
/// the agent past its shutdown grace period: what is left is counted, and `run` returns.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_during_a_persistent_fatal_fault_ends_within_the_grace_period() {
    shutdown_during_a_fatal_fault(edgecam::config::SpoolMode::Outage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_during_a_persistent_fatal_fault_without_a_spool_counts_what_is_left() {
    shutdown_during_a_fatal_fault(edgecam::config::SpoolMode::Off).await;
}

/// A fault that never clears, then SIGTERM: the run ends within the grace period; with a
/// spool every accepted frame is kept in it, without one each frame left is counted.
async fn shutdown_during_a_fatal_fault(mode: edgecam::config::SpoolMode) {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("fatal-stop");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let mut cfg = config(
        &bootstrap,
        &topic,
        "[encode]\nmax_message_bytes = 20000\n",
        0,
    );
    cfg.source.fps = 30.0;
    cfg.pipeline.shutdown_grace_ms = edgecam::config::types::GraceMs::new(2000).unwrap();
    cfg.spool.mode = mode;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER; 10_000],
    );
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let run = tokio::spawn(edgecam::pipeline::run(cfg, stop.clone(), metrics.clone()));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(metrics.producer_restarts.load(Relaxed) >= 1);
    let t = std::time::Instant::now();
    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "grace 2 s, returned after {took:?}"
    );
    let accepted = metrics.accepted.load(Relaxed);
    assert!(accepted > 0);
    if mode != edgecam::config::SpoolMode::Off {
        // Nothing is lost: what was not delivered is in the spool for the next start.
        assert_eq!(report.sink.undelivered, 0, "{report:?}");
        assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
        let kept = metrics.spool_records.load(Relaxed);
        assert!(kept > 0);
        assert_eq!(metrics.delivered.load(Relaxed) + kept, accepted);
        return;
    }
    // The fault never cleared, so frames were left; each is counted, none twice.
    assert!(report.sink.undelivered > 0, "{report:?}");
    assert_eq!(
        metrics
            .dropped()
            .get(&DropReason::UndeliveredAtShutdown)
            .copied(),
        Some(report.sink.undelivered)
    );
    assert!(metrics.delivered.load(Relaxed) + report.sink.undelivered <= accepted);
}

/// Replaying a file as fast as it reads (`fps = 0`) with the default `pipeline.overflow`
/// (`auto`): the source waits for the encoder instead of dropping, so every frame arrives
/// even when each needs a re-encode.
#[tokio::test(flavor = "multi_thread")]
async fn file_replay_with_the_default_overflow_drops_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("replay");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let n = 120;
    let toml = format!(
        "[device]\nid = \"front-door\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\n\
         fps = 0\nloop = true\nmax_frames = {n}\n[encode]\nmax_message_bytes = 20000\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
    );
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    assert_eq!(cfg.pipeline.overflow, edgecam::config::OverflowPolicy::Auto);
    let (metrics, report) = publish(cfg).await;
    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    let recs = read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(10));
    check_complete(&recs, n as usize);
}

/// Kafka refusing records for a reason an operator must fix (here: topic authorisation) does
/// not drop them: the sink keeps each one and sends it again slowly, so once the ACL is
/// fixed (the injected errors run out) every frame arrives. The bridge treats these errors
/// the same way.
#[tokio::test(flavor = "multi_thread")]
async fn authorisation_errors_are_retried_until_fixed_not_dropped() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("acl");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let n = 20;
    let cfg = config(&bootstrap, &topic, "", n);
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
    );
    let metrics = Arc::new(Metrics::default());
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone()),
    )
    .await
    .expect("finishes once the errors stop")
    .unwrap();
    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    assert!(
        metrics.delivery_retries.load(Relaxed) > 0,
        "the errors were seen"
    );
    let recs = read_topic(
        &bootstrap,
        &topic,
        1,
        n as usize + 20,
        Duration::from_secs(10),
    );
    let seqs: HashSet<u64> = recs
        .iter()
        .map(|r| r.h("edgecam.seq").parse().unwrap())
        .collect();
    assert_eq!(seqs, (0..n).collect::<HashSet<_>>());
}
