//! The MQTT sink against a real Mosquitto: frames arrive intact with their properties, and a
//! broker restart mid-stream loses nothing.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mosquitto::{subscribe_with, Mosquitto};
use common::FIXTURE;
use edgecam::metrics::Metrics;
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;
use tokio_util::sync::CancellationToken;

/// A persistent-session MQTT 5 subscriber collecting everything on `filter`.
async fn subscriber(port: u16, id: &str, filter: &str) -> Arc<Mutex<Vec<Publish>>> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(600))
        .set_max_packet_size(Some(4 << 20))
        .set_keep_alive(Duration::from_secs(5));
    subscribe_with(o, filter).await.1
}

fn prop<'a>(p: &'a Publish, name: &str) -> Option<&'a str> {
    p.properties
        .as_ref()?
        .user_properties
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn config(port: u16, device: &str, extra: &str) -> edgecam::config::Config {
    edgecam::config::load_str(
        &format!(
            "[device]\nid = \"{device}\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nloop = true\n{extra}\n\
             [encode]\nmax_message_bytes = 20000\n[pipeline]\noverflow = \"block\"\n[sink]\nkind = \"mqtt\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_secs = 5\nsilence_timeout_secs = 10\n"
        ),
        common::state_env(),
    )
    .unwrap()
}

/// Every sequence number 0..n is among `f` (at least once: a lost PUBACK may duplicate one).
fn every_seq(f: &[Publish], n: u64) -> bool {
    let s: BTreeSet<u64> = f
        .iter()
        .filter_map(|p| prop(p, "edgecam.seq")?.parse().ok())
        .collect();
    s == (0..n).collect()
}

/// Waits for a spawned agent run and checks it delivered all `n` frames, none left over.
async fn finish(
    run: tokio::task::JoinHandle<Result<edgecam::pipeline::RunReport, edgecam::pipeline::RunError>>,
    metrics: &Metrics,
    n: u64,
) {
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
}

async fn wait_for(got: &Arc<Mutex<Vec<Publish>>>, f: impl Fn(&[Publish]) -> bool) -> bool {
    for _ in 0..200 {
        if f(&got.lock().unwrap()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_arrive_intact_with_their_properties_and_status() {
    let broker = Mosquitto::start();
    let frames = subscriber(broker.port(), "t-frames", "edgecam/+/frame").await;
    let status = subscriber(broker.port(), "t-status", "edgecam/+/status").await;
    let n = 20;
    let cfg = config(
        broker.port(),
        "porch",
        &format!("fps = 0\nmax_frames = {n}"),
    );
    let metrics = Arc::new(Metrics::default());
    let report = edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
        .await
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    assert!(wait_for(&frames, |f| f.len() >= n as usize).await);
    let got = frames.lock().unwrap().clone();
    let mut seqs = BTreeSet::new();
    for p in &got {
        assert_eq!(&p.topic[..], b"edgecam/porch/frame");
        assert_eq!(p.qos, QoS::AtLeastOnce);
        let props = p.properties.as_ref().expect("MQTT 5 properties");
        assert_eq!(props.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(prop(p, "edgecam.device"), Some("porch"));
        assert_eq!(prop(p, "edgecam.codec"), Some("jpeg"));
        assert!(prop(p, "edgecam.frame_id").is_some() && prop(p, "edgecam.captured_at").is_some());
        let h = edgecam::jpeg::header(&p.payload).expect("payload is the JPEG");
        assert_eq!(prop(p, "edgecam.width"), Some(h.width.to_string().as_str()));
        assert_eq!(
            prop(p, "edgecam.height"),
            Some(h.height.to_string().as_str())
        );
        assert!(p.payload.len() <= 20_000);
        seqs.insert(prop(p, "edgecam.seq").unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(seqs, (0..n).collect());
    // Retained availability: online while running, offline after a clean stop.
    assert!(wait_for(&status, |s| s.iter().any(|p| &p.payload[..] == b"offline")).await);
    let s = status.lock().unwrap();
    assert_eq!(&s[0].payload[..], b"online");
    assert_eq!(&s.last().unwrap().payload[..], b"offline");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_mid_stream_loses_nothing() {
    let mut broker = Mosquitto::start();
    let frames = subscriber(broker.port(), "t-restart", "edgecam/+/frame").await;
    let n = 80u64;
    let cfg = config(
        broker.port(),
        "gate",
        &format!("fps = 25\nmax_frames = {n}"),
    );
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run(
        cfg,
        CancellationToken::new(),
        metrics.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    broker.restart();
    finish(run, &metrics, n).await;
    assert!(
        wait_for(&frames, |f| every_seq(f, n)).await,
        "missing frames after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_broker_is_detected_and_nothing_is_lost() {
    let broker = Mosquitto::start();
    let frames = subscriber(broker.port(), "t-silent", "edgecam/+/frame").await;
    let n = 60u64;
    let mut cfg = config(
        broker.port(),
        "lane",
        &format!("fps = 10\nmax_frames = {n}"),
    );
    let m = cfg.mqtt_mut().unwrap();
    m.keep_alive_secs = edgecam::config::types::KeepAliveSecs::new(5).unwrap();
    m.silence_timeout_secs = 6;
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run(
        cfg,
        CancellationToken::new(),
        metrics.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Frozen, not closed: the TCP connection stays up but nothing comes back.
    broker.pause();
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.resume();
    finish(run, &metrics, n).await;
    // Detected by rumqttc's keep-alive or by the no-traffic watchdog, whichever is first.
    assert!(
        metrics.mqtt_reconnects.load(Relaxed) >= 1,
        "{:?}",
        metrics.last_error()
    );
    assert!(
        wait_for(&frames, |f| every_seq(f, n)).await,
        "missing frames after the stall"
    );
}

/// Agent → Mosquitto throughput: real 64 KB MJPEG frames passed through at QoS 1, counted
/// delivered on PUBACK. Run: `cargo test --release --test mqtt_sink -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_agent_to_mosquitto() {
    let broker = Mosquitto::start();
    for in_flight in [32u16, 256] {
        let n = 3000u64;
        let mut cfg = config(
            broker.port(),
            "bench",
            &format!("fps = 0\nmax_frames = {n}"),
        );
        cfg.encode.max_message_bytes = edgecam::config::types::Budget::new(1_000_000).unwrap();
        cfg.mqtt_mut().unwrap().max_in_flight =
            edgecam::config::types::MqttInFlight::new(in_flight).unwrap();
        let metrics = Arc::new(Metrics::default());
        let t = std::time::Instant::now();
        let report = edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
            .await
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let bytes = metrics.delivered_bytes.load(Relaxed) as f64;
        assert_eq!(report.sink.undelivered, 0);
        assert_eq!(metrics.delivered.load(Relaxed), n);
        println!(
            "agent -> mosquitto, QoS 1, max_in_flight {in_flight}: {n} frames of {:.0} B in {secs:.2} s = {:.0} frames/s, {:.1} MB/s",
            bytes / n as f64,
            n as f64 / secs,
            bytes / secs / 1e6
        );
    }
}
