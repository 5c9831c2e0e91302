//! `[bridge.http]` uploads end to end: a real HTTP client over TCP (the hand-written one in
//! `tests/common/http.rs`, and `curl` for multipart) posts real images to a bridge that
//! drains into librdkafka's mock cluster (in this process), with a real Mosquitto for its
//! MQTT side; records are read back from Kafka and compared with what the client was told.
//! Every wait is bounded; no assertion is about time.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::http::{request, Response};
use common::mosquitto::{free_port, wait_until, Mosquitto};
use common::{fixture_frames, read_topic, unique_topic, Rec};
use edgecam::bridge::{BridgeMetrics, BridgeReport, RejectReason, UploadOutcome};
use rdkafka::mocking::MockCluster;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Client-side guard on one request: far above any `timeout_ms` used here.
const REQUEST_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Images.
// ---------------------------------------------------------------------------------------

/// `jpeg` with a comment segment (COM) right after SOI: still a valid JPEG, unique per `text`.
fn with_comment(jpeg: &[u8], text: &str) -> Bytes {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((text.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&jpeg[2..]);
    out.into()
}

/// A fixture frame as a PNG, scaled to `width` pixels wide (aspect kept).
fn png_of(jpeg: &[u8], width: u32) -> Bytes {
    let img = image::load_from_memory(jpeg).unwrap().to_rgb8();
    let height = img.height() * width / img.width();
    let small = image::imageops::resize(&img, width, height, image::imageops::Triangle);
    let mut out = std::io::Cursor::new(Vec::new());
    small.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner().into()
}

/// The large real photograph (1.24 MB, `scripts/testdata`) that does not fit the budgets
/// used here.
fn raindrops() -> Bytes {
    std::fs::read(common::testdata("raindrops-1920x1200.jpg"))
        .unwrap()
        .into()
}

/// The `edgecam.frame_id` the bridge must give `image` uploaded for `device`: UUIDv5 of
/// device, NUL, image bytes, in the bridge's namespace (the id MQTT raw input uses too).
fn expected_frame_id(device: &str, image: &[u8]) -> String {
    let ns = uuid::Uuid::from_u128(0x4f1b_2c3e_9d5a_4e27_8c61_0b7f_3a9e_d214);
    let mut name = device.as_bytes().to_vec();
    name.push(0);
    name.extend_from_slice(image);
    uuid::Uuid::new_v5(&ns, &name).to_string()
}

// ---------------------------------------------------------------------------------------
// The bridge.
// ---------------------------------------------------------------------------------------

/// A bridge configuration with `[bridge.http]` on `http_port` plus `http_extra` keys.
struct Toml<'a> {
    id: &'a str,
    mqtt_port: u16,
    bootstrap: &'a str,
    topic: &'a str,
    dead_letter_topic: Option<&'a str>,
    budget: u32,
    http_port: u16,
    http_extra: &'a str,
}

impl Toml<'_> {
    fn render(&self) -> String {
        let dl = self
            .dead_letter_topic
            .map(|t| format!("dead_letter_topic = \"{t}\"\n"))
            .unwrap_or_default();
        format!(
            r#"
[bridge]
id = "{id}"
max_message_bytes = {budget}
shutdown_grace_ms = 5000
{dl}
[bridge.http]
listen = "127.0.0.1:{http_port}"
{http_extra}

[[bridge.inputs]]
topic = "cameras/{{device}}/jpeg"
format = "raw"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
keep_alive_secs = 5

[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
message_timeout_ms = 10000
max_in_flight = 64
"#,
            id = self.id,
            budget = self.budget,
            http_port = self.http_port,
            http_extra = self.http_extra,
            mqtt_port = self.mqtt_port,
            bootstrap = self.bootstrap,
            topic = self.topic,
        )
    }
}

struct InProcessBridge {
    stop: CancellationToken,
    metrics: Arc<BridgeMetrics>,
    task: JoinHandle<Result<BridgeReport, edgecam::bridge::BridgeError>>,
}

impl InProcessBridge {
    /// Starts the bridge and waits until the upload port accepts connections and MQTT is up.
    async fn start(toml: &str, http_port: u16) -> InProcessBridge {
        let cfg = edgecam::config::load_bridge_str(toml, std::iter::empty()).unwrap();
        let stop = CancellationToken::new();
        let metrics = Arc::new(BridgeMetrics::default());
        let task = tokio::spawn(edgecam::bridge::run(cfg, stop.clone(), metrics.clone()));
        wait_for_port(http_port).await;
        let m = metrics.clone();
        wait_until(
            "the bridge connects to MQTT",
            Duration::from_secs(20),
            || m.connections.load(Relaxed) >= 1,
        )
        .await;
        InProcessBridge {
            stop,
            metrics,
            task,
        }
    }

    async fn stop(self) -> BridgeReport {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("bridge stops within 30 s")
            .unwrap()
            .unwrap()
    }
}

async fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < until,
            "nothing listens on upload port {port} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST path` with `body`, on a blocking thread.
async fn post(port: u16, path: &str, headers: &[(&str, &str)], body: Bytes) -> Response {
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        request(port, "POST", &path, &h, &body, REQUEST_GUARD)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    })
    .await
    .unwrap()
}

/// Reads `topic` from the beginning until `expected` records or `timeout`.
async fn read_for(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Rec> {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || read_topic(&b, &t, partitions, expected, timeout))
        .await
        .unwrap()
}

/// The record at the response's partition and offset; checks the response names `topic`.
fn record_of<'r>(recs: &'r [Rec], r: &Response, topic: &str) -> &'r Rec {
    let j = r.json();
    assert_eq!(j["topic"], topic, "{j}");
    let (p, o) = (
        j["partition"].as_i64().unwrap() as i32,
        j["offset"].as_i64().unwrap(),
    );
    recs.iter()
        .find(|rec| rec.partition == p && rec.offset == o)
        .unwrap_or_else(|| panic!("no record at partition {p} offset {o} for {j}"))
}

// ---------------------------------------------------------------------------------------
// Good uploads.
// ---------------------------------------------------------------------------------------

/// A raw JPEG, a raw PNG (as application/octet-stream: sniffed, not trusted) and a
/// multipart JPEG sent by curl are stored byte for byte with the MQTT raw-input headers; the
/// partition and offset in each 201 are where the record is; an upload sent again gets the
/// same frame_id and the next seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_jpeg_and_png_uploads_are_stored_byte_for_byte() {
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("up-frames");
    cluster.create_topic(&topic, 3, 1).unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let toml = Toml {
        id: "up-good",
        mqtt_port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        budget: 200_000,
        http_port: port,
        http_extra: "",
    }
    .render()
        + &format!("\n[http]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    let bridge = InProcessBridge::start(&toml, port).await;
    let frames = fixture_frames();
    let jpeg = frames[0].clone();
    let png = png_of(&frames[1], 384);
    assert!(png.starts_with(b"\x89PNG"));

    let r1 = post(
        port,
        "/v1/frames/esp-1",
        &[("Content-Type", "image/jpeg")],
        jpeg.clone(),
    )
    .await;
    assert_eq!(r1.status, 201, "{}", String::from_utf8_lossy(&r1.body));
    assert_eq!(r1.header("content-type"), Some("application/json"));
    let r2 = post(
        port,
        "/v1/frames/esp-1",
        &[("Content-Type", "application/octet-stream")],
        png.clone(),
    )
    .await;
    assert_eq!(r2.status, 201, "{}", String::from_utf8_lossy(&r2.body));
    // The same JPEG again (a client retrying): same frame id, a new record, the next seq.
    let r3 = post(
        port,
        "/v1/frames/esp-1",
        &[("Content-Type", "image/jpeg")],
        jpeg.clone(),
    )
    .await;
    assert_eq!(r3.status, 201);
    // multipart/form-data from curl, another device.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frame.jpg");
    let third = frames[2].clone();
    std::fs::write(&file, &third).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-F"])
        .arg(format!("file=@{};type=image/jpeg", file.display()))
        .arg("-F")
        .arg("note=from curl")
        .arg(format!("http://127.0.0.1:{port}/v1/frames/esp-2"))
        .args(["-w", "\n%{http_code}"])
        .output()
        .expect("curl (Debian package curl) is needed for the multipart upload");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (json, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(
        code,
        "201",
        "curl: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r4 = Response {
        status: 201,
        headers: Vec::new(),
        body: json.as_bytes().to_vec(),
    };

    let recs = read_for(&bootstrap, &topic, 3, 4, Duration::from_secs(20)).await;
    assert_eq!(recs.len(), 4, "four records");
    let cases = [
        (&r1, &jpeg, "esp-1", "0", "image/jpeg", "jpeg"),
        (&r2, &png, "esp-1", "1", "image/png", "png"),
        (&r3, &jpeg, "esp-1", "2", "image/jpeg", "jpeg"),
        (&r4, &third, "esp-2", "0", "image/jpeg", "jpeg"),
    ];
    for (resp, image, device, seq, ct, codec) in cases {
        let rec = record_of(&recs, resp, &topic);
        let j = resp.json();
        assert_eq!(rec.value, image.to_vec(), "byte for byte");
        assert_eq!(rec.key, device.as_bytes());
        assert_eq!(rec.h("edgecam.device"), device);
        assert_eq!(rec.h("edgecam.seq"), seq);
        assert_eq!(j["seq"].as_u64().unwrap().to_string(), seq);
        assert_eq!(rec.h("edgecam.frame_id"), j["frame_id"].as_str().unwrap());
        assert_eq!(rec.h("edgecam.frame_id"), expected_frame_id(device, image));
        assert_eq!(rec.h("content-type"), ct);
        assert_eq!(rec.h("edgecam.codec"), codec);
        assert_eq!(j["fitted"], false);
        assert_eq!(j["bytes"].as_u64().unwrap() as usize, image.len());
        let decoded = image::load_from_memory(&rec.value).unwrap();
        assert_eq!(rec.h("edgecam.width"), decoded.width().to_string());
        assert_eq!(rec.h("edgecam.height"), decoded.height().to_string());
        humantime::parse_rfc3339(rec.h("edgecam.captured_at")).unwrap();
        if codec == "png" {
            assert_eq!(rec.h("edgecam.quality"), "lossless");
        } else {
            let q: u8 = rec.h("edgecam.quality").parse().unwrap();
            assert!((1..=100).contains(&q));
        }
    }
    assert_eq!(
        r1.json()["frame_id"],
        r3.json()["frame_id"],
        "a retried upload keeps its id"
    );
    assert_ne!(r1.json()["offset"], r3.json()["offset"]);
    assert_eq!(bridge.metrics.uploads_for(UploadOutcome::Stored), 4);
    assert_eq!(bridge.metrics.forwarded.load(Relaxed), 4);

    // The counters on /metrics.
    let (status, _, text) =
        tokio::task::spawn_blocking(move || common::http::get(metrics_port, "/metrics"))
            .await
            .unwrap();
    assert_eq!(status, 200);
    let prom = common::http::parse_metrics(&String::from_utf8(text).unwrap());
    assert_eq!(
        common::http::sample(
            &prom,
            "edgecam_bridge_uploads_total",
            "bridge=up-good,outcome=stored"
        ),
        4.0
    );
    assert_eq!(
        common::http::sample(
            &prom,
            "edgecam_bridge_uploads_fitted_total",
            "bridge=up-good"
        ),
        0.0
    );
    let report = bridge.stop().await;
    assert_eq!(report.forwarded, 4);
}

/// A 1.24 MB photograph and a full-size PNG, both over a 200 kB budget, are fitted under it
/// by the agent's encoder: the records fit, decode, and their headers describe the fitted
/// image; the frame id still comes from what was uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_are_fitted_under_the_budget() {
    const BUDGET: usize = 200_000;
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("up-fit");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let port = free_port();
    let toml = Toml {
        id: "up-fit",
        mqtt_port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        budget: BUDGET as u32,
        http_port: port,
        http_extra: "",
    }
    .render();
    let bridge = InProcessBridge::start(&toml, port).await;
    let photo = raindrops();
    assert!(photo.len() > BUDGET);
    let png = png_of(&fixture_frames()[3], 768);
    assert!(png.len() > BUDGET, "full-size PNG is {} bytes", png.len());
    let mut responses = Vec::new();
    for (body, ct) in [(photo.clone(), "image/jpeg"), (png.clone(), "image/png")] {
        let r = post(port, "/v1/frames/esp-big", &[("Content-Type", ct)], body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["fitted"], true);
        responses.push(r);
    }
    let recs = read_for(&bootstrap, &topic, 1, 2, Duration::from_secs(20)).await;
    assert_eq!(recs.len(), 2);
    for (r, original, (w, h)) in [
        (&responses[0], &photo, (1920, 1200)),
        (&responses[1], &png, (768, 576)),
    ] {
        let rec = record_of(&recs, r, &topic);
        let size = edgecam::record::record_size(
            rec.key.len(),
            rec.headers.iter().map(|(k, v)| (k.len(), v.len())),
            rec.value.len(),
        );
        assert!(size <= BUDGET, "record of {size} bytes over {BUDGET}");
        let decoded = image::load_from_memory(&rec.value).unwrap();
        assert_eq!(rec.h("content-type"), "image/jpeg");
        assert_eq!(rec.h("edgecam.codec"), "jpeg");
        assert_eq!(rec.h("edgecam.width"), decoded.width().to_string());
        assert_eq!(rec.h("edgecam.height"), decoded.height().to_string());
        assert!(decoded.width() <= w && decoded.height() <= h);
        let q: u8 = rec.h("edgecam.quality").parse().unwrap();
        assert_eq!(r.json()["quality"], q.to_string());
        assert_eq!(
            rec.h("edgecam.frame_id"),
            expected_frame_id("esp-big", original)
        );
        println!(
            "fitted {} bytes ({}x{}) to {} bytes: {}x{} at quality {q}",
            original.len(),
            w,
            h,
            rec.value.len(),
            decoded.width(),
            decoded.height()
        );
    }
    assert_eq!(bridge.metrics.uploads_fitted.load(Relaxed), 2);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------------------
// Bad uploads, authentication, limits.
// ---------------------------------------------------------------------------------------

/// A truncated JPEG, a text body, an empty body, a bad device id and a multipart body
/// without a `file` field each get a 4xx with `{error, reason}` and are dead-lettered with
/// `edgecam.reason`; nothing reaches the frame topic. A body over `max_body_bytes` gets 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_4xx_and_are_dead_lettered() {
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("up-bad");
    let dead = unique_topic("up-dead");
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.create_topic(&dead, 1, 1).unwrap();
    let port = free_port();
    let toml = Toml {
        id: "up-bad",
        mqtt_port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: Some(&dead),
        budget: 200_000,
        http_port: port,
        http_extra: "max_body_bytes = 150000",
    }
    .render();
    let bridge = InProcessBridge::start(&toml, port).await;
    let frame = fixture_frames()[0].clone();
    let truncated = frame.slice(..frame.len() / 2);
    let boundary = "XyZzY";
    let no_file = Bytes::from(format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"picture\"; \
         filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nnot here\r\n--{boundary}--\r\n"
    ));
    let multipart_ct = format!("multipart/form-data; boundary={boundary}");
    let cases: Vec<(&str, &str, Bytes, u16, RejectReason)> = vec![
        (
            "/v1/frames/esp-1",
            "image/jpeg",
            truncated.clone(),
            422,
            RejectReason::BadFrame,
        ),
        (
            "/v1/frames/esp-1",
            "image/jpeg",
            Bytes::from_static(b"{\"temp\": 21.5}"),
            415,
            RejectReason::NotAnImage,
        ),
        (
            "/v1/frames/esp-1",
            "image/jpeg",
            Bytes::new(),
            400,
            RejectReason::EmptyPayload,
        ),
        (
            "/v1/frames/bad%20device!",
            "image/jpeg",
            frame.clone(),
            400,
            RejectReason::InvalidDeviceId,
        ),
        (
            "/v1/frames/%FF%FE",
            "image/jpeg",
            frame.clone(),
            400,
            RejectReason::InvalidDeviceId,
        ),
        (
            "/v1/frames/esp-1",
            &multipart_ct,
            no_file.clone(),
            400,
            RejectReason::InvalidMultipart,
        ),
    ];
    for (path, ct, body, status, reason) in &cases {
        let r = post(port, path, &[("Content-Type", ct)], body.clone()).await;
        assert_eq!(r.status, *status, "{path} {reason:?}");
        let j = r.json();
        assert_eq!(j["reason"], reason.as_str(), "{j}");
        assert!(!j["error"].as_str().unwrap().is_empty(), "{j}");
    }
    // Over max_body_bytes: refused from Content-Length, not dead-lettered.
    let big = Bytes::from(vec![0xAB; 150_001]);
    let r = post(
        port,
        "/v1/frames/esp-1",
        &[("Content-Type", "image/jpeg")],
        big,
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["reason"], "body_too_large");

    let letters = read_for(&bootstrap, &dead, 1, cases.len(), Duration::from_secs(20)).await;
    assert_eq!(letters.len(), cases.len(), "one dead letter per bad upload");
    for (rec, (path, _, body, _, reason)) in letters.iter().zip(&cases) {
        assert_eq!(rec.h("edgecam.reason"), reason.as_str());
        assert_eq!(rec.h("edgecam.http_path"), *path);
        assert_eq!(rec.h("edgecam.payload_bytes"), body.len().to_string());
        assert_eq!(rec.value, body.to_vec());
        assert!(!rec.h("edgecam.detail").is_empty());
        if *reason == RejectReason::InvalidDeviceId {
            assert!(rec.key.is_empty(), "no key for an invalid device");
        } else {
            assert_eq!(rec.key, b"esp-1");
        }
    }
    let frames = read_for(&bootstrap, &topic, 1, 1, Duration::from_secs(2)).await;
    assert!(frames.is_empty(), "nothing in the frame topic");
    let m = &bridge.metrics;
    assert_eq!(m.uploads_for(UploadOutcome::Rejected), cases.len() as u64);
    assert_eq!(m.uploads_for(UploadOutcome::BodyTooLarge), 1);
    assert_eq!(m.rejected_for(RejectReason::BadFrame), 1);
    assert_eq!(m.rejected_for(RejectReason::InvalidDeviceId), 2);
    assert_eq!(m.dead_lettered.load(Relaxed), cases.len() as u64);
    bridge.stop().await;
}

/// With `token = { file = … }`: no token and a wrong one get 401 and store nothing; the
/// right one gets 201. `check-config` shows the token redacted. A device over
/// `per_device_per_sec` gets 429 with Retry-After while another device is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_rate_limit_are_enforced() {
    const TOKEN: &str = "upl0ad-t0ken-7f3a";
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("up-auth");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("upload.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let extra = format!(
        "token = {{ file = \"{}\" }}\nper_device_per_sec = 1",
        token_file.display()
    );
    let toml = Toml {
        id: "up-auth",
        mqtt_port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        budget: 200_000,
        http_port: port,
        http_extra: &extra,
    }
    .render();
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, &toml).unwrap();
    let shown = Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let shown_text = String::from_utf8_lossy(&shown.stdout).to_string()
        + &String::from_utf8_lossy(&shown.stderr);
    assert!(shown.status.success(), "{shown_text}");
    assert!(!shown_text.contains(TOKEN), "token shown: {shown_text}");
    assert!(shown_text.contains("<redacted: from file"), "{shown_text}");

    let bridge = InProcessBridge::start(&toml, port).await;
    let frames = fixture_frames();
    let bearer = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    for auth in [None, Some(wrong.as_str()), Some("Basic dXNlcjpwYXNz")] {
        let mut h = vec![("Content-Type", "image/jpeg")];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        let r = post(port, "/v1/frames/esp-1", &h, frames[0].clone()).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.json()["reason"], "unauthorized");
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains(TOKEN), "the token is not echoed");
    }
    let auth = [
        ("Content-Type", "image/jpeg"),
        ("Authorization", bearer.as_str()),
    ];
    let ok = post(port, "/v1/frames/esp-1", &auth, frames[0].clone()).await;
    assert_eq!(ok.status, 201, "{}", String::from_utf8_lossy(&ok.body));
    let recs = read_for(&bootstrap, &topic, 1, 2, Duration::from_secs(5)).await;
    assert_eq!(recs.len(), 1, "only the authorised upload is in Kafka");
    assert_eq!(recs[0].value, frames[0].to_vec());
    assert_eq!(bridge.metrics.uploads_for(UploadOutcome::Unauthorized), 3);

    // Rate limit: 1 per device per second. Back-to-back uploads of one device: the second
    // in the same window is refused (the loop only guards against a machine so slow that
    // every upload takes over a second); another device still gets in.
    let mut limited = None;
    for i in 0..20 {
        let img = with_comment(&frames[1], &format!("rate {i}"));
        let r = post(port, "/v1/frames/esp-rate", &auth, img).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 201);
    }
    let limited = limited.expect("a 429 within 20 back-to-back uploads of one device");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json()["reason"], "rate_limited");
    let other = post(port, "/v1/frames/esp-other", &auth, frames[2].clone()).await;
    assert_eq!(other.status, 201);
    assert!(bridge.metrics.uploads_for(UploadOutcome::RateLimited) >= 1);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------------------
// Load and failures.
// ---------------------------------------------------------------------------------------

/// 50 clients upload at once (more than `max_concurrent`, 16 by default, so some wait for a
/// turn): all get 201, with 50 distinct frame ids and 50 distinct records, each where its
/// response says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_uploaders_all_get_201() {
    const CLIENTS: usize = 50;
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("up-fifty");
    cluster.create_topic(&topic, 4, 1).unwrap();
    let port = free_port();
    let toml = Toml {
        id: "up-fifty",
        mqtt_port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        budget: 200_000,
        http_port: port,
        http_extra: "timeout_ms = 60000",
    }
    .render();
    let bridge = InProcessBridge::start(&toml, port).await;
    let frames = fixture_frames();
    let start = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let img = with_comment(&frames[i % frames.len()], &format!("client {i}"));
        let start = start.clone();
        clients.push(tokio::spawn(async move {
            start.wait().await;
            let device = format!("esp-{}", i % 10);
            let r = post(
                port,
                &format!("/v1/frames/{device}"),
                &[("Content-Type", "image/jpeg")],
                img.clone(),
            )
            .await;
            (r, img, device)
        }));
    }
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    for (r, _, _) in &results {
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let ids: HashSet<String> = results
        .iter()
        .map(|(r, _, _)| r.json()["frame_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), CLIENTS, "distinct frame ids");
    let recs = read_for(&bootstrap, &topic, 4, CLIENTS + 1, Duration::from_secs(10)).await;
    assert_eq!(recs.len(), CLIENTS, "exactly one record per upload");
    for (r, img, device) in &results {
        let rec = record_of(&recs, r, &topic);
        assert_eq!(rec.value, img.to_vec());
        assert_eq!(rec.h("edgecam.device"), device);
    }
    // Per device, seqs 0..5 each once.
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for rec in &recs {
        seqs.entry(rec.h("edgecam.device").to_string())
            .or_default()
            .push(rec.h("edgecam.seq").parse().unwrap());
    }
    for (d, mut s) in seqs {
        s.sort_unstable();
        assert_eq!(s, (0..5).collect::<Vec<u64>>(), "{d}");
    }
    assert_eq!(
        bridge.metrics.uploads_for(UploadOutcome::Stored),
        CLIENTS as u64
    );
    bridge.stop().await;
}

/// Kafka frozen (the mock cluster's only broker down): the upload gets 503 with Retry-After
/// once `timeout_ms` has passed without a delivery report. With the broker back, the client
/// sends the same image again and gets 201 with the same frame id; every copy in Kafka is
/// the same image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_gives_503_with_retry_after() {
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("up-down");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let port = free_port();
    let toml = Toml {
        id: "up-down",
        mqtt_port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        budget: 200_000,
        http_port: port,
        http_extra: "timeout_ms = 1500",
    }
    .render();
    let bridge = InProcessBridge::start(&toml, port).await;
    let frames = fixture_frames();
    let ct = [("Content-Type", "image/jpeg")];
    let first = post(port, "/v1/frames/esp-1", &ct, frames[0].clone()).await;
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );

    cluster.broker_down(1).unwrap();
    let frozen = frames[1].clone();
    let r = post(port, "/v1/frames/esp-1", &ct, frozen.clone()).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("retry-after"),
        Some("2"),
        "ceil(1500 ms) in seconds"
    );
    let j = r.json();
    assert_eq!(j["reason"], "unavailable");
    let id = expected_frame_id("esp-1", &frozen);
    assert!(
        j["error"].as_str().unwrap().contains(&id),
        "the 503 names the frame id: {j}"
    );
    assert_eq!(bridge.metrics.uploads_for(UploadOutcome::Unavailable), 1);

    cluster.broker_up(1).unwrap();
    // The client retries until Kafka answers in time again (each try bounded by timeout_ms).
    let mut retried = None;
    for _ in 0..20 {
        let r = post(port, "/v1/frames/esp-1", &ct, frozen.clone()).await;
        if r.status == 201 {
            retried = Some(r);
            break;
        }
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    }
    let retried = retried.expect("201 within 20 retries once the broker is back");
    assert_eq!(retried.json()["frame_id"], id.as_str());
    let recs = read_for(&bootstrap, &topic, 1, 3, Duration::from_secs(20)).await;
    let copies: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.h("edgecam.frame_id") == id)
        .collect();
    assert!(!copies.is_empty());
    for c in &copies {
        assert_eq!(c.value, frozen.to_vec(), "a duplicate is the same image");
    }
    println!("copies of the frozen upload in Kafka: {}", copies.len());
    bridge.stop().await;
}

/// `edgecam bridge --config …` as a child process, killed on drop.
struct BridgeProcess(Option<Child>);

impl BridgeProcess {
    fn spawn(config: &Path, stderr: &Path) -> BridgeProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .arg("bridge")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        BridgeProcess(Some(child))
    }

    /// SIGKILL: no chance to answer, flush or disconnect.
    fn kill(&mut self) {
        let mut c = self.0.take().unwrap();
        c.kill().unwrap();
        assert!(!c.wait().unwrap().success());
    }

    /// SIGTERM, then the exit status (30 s at most).
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().unwrap();
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > until {
                let _ = c.kill();
                panic!("the bridge did not exit within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the back-to-back clients saw.
#[derive(Default)]
struct Seen {
    /// (frame id, image) of every upload answered 201.
    stored: Vec<(String, Vec<u8>)>,
    /// Uploads answered 503 (the bridge stopping).
    unavailable: usize,
    /// Clients whose request got no answer (connection refused or cut).
    cut_off: usize,
    /// Of those, requests cut after the connection was made (not refused).
    cut_mid_request: usize,
}

/// `CLIENTS` threads uploading unique fixture frames to `kill-<n>` back to back until `stop`
/// or until a request gets no answer.
fn start_clients(
    port: u16,
    clients: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let frames = fixture_frames();
    (0..clients)
        .map(|c| {
            let (stop, seen, frames) = (stop.clone(), seen.clone(), frames.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Relaxed) {
                    let img = with_comment(&frames[n % frames.len()], &format!("client {c} #{n}"));
                    n += 1;
                    let headers = [("Content-Type", "image/jpeg")];
                    let path = format!("/v1/frames/kill-{c}");
                    match request(port, "POST", &path, &headers, &img, REQUEST_GUARD) {
                        Ok(r) if r.status == 201 => {
                            let id = r.json()["frame_id"].as_str().unwrap().to_string();
                            seen.lock().unwrap().stored.push((id, img.to_vec()));
                        }
                        Ok(r) if r.status == 503 => seen.lock().unwrap().unavailable += 1,
                        Ok(r) => panic!(
                            "unexpected {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        Err(e) => {
                            let mut s = seen.lock().unwrap();
                            s.cut_off += 1;
                            if e.kind() != std::io::ErrorKind::ConnectionRefused {
                                s.cut_mid_request += 1;
                            }
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Reads the topic and checks that every upload answered 201 is in it, byte for byte.
/// Returns the number of records in the topic.
async fn check_every_201_stored(bootstrap: &str, topic: &str, seen: &Seen) -> usize {
    let recs = read_for(
        bootstrap,
        topic,
        2,
        seen.stored.len() + 1000,
        Duration::from_secs(10),
    )
    .await;
    let in_kafka: HashMap<&str, &Rec> = recs.iter().map(|r| (r.h("edgecam.frame_id"), r)).collect();
    let mut missing = 0;
    for (id, img) in &seen.stored {
        match in_kafka.get(id.as_str()) {
            Some(rec) => assert_eq!(&rec.value, img),
            None => missing += 1,
        }
    }
    assert_eq!(missing, 0, "every 201 is in Kafka");
    recs.len()
}

/// A bridge child process over a slow Kafka (150 ms round trip: each record spends a while
/// between the bridge's send and its delivery report, so a stop finds uploads in that
/// window, where an early 201 would be a lie).
async fn slow_kafka_bridge(
    id: &str,
) -> (
    Mosquitto,
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    String,
    u16,
    tempfile::TempDir,
    BridgeProcess,
) {
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic(id);
    cluster.create_topic(&topic, 2, 1).unwrap();
    cluster
        .broker_round_trip_time(1, Duration::from_millis(150))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        Toml {
            id,
            mqtt_port: broker.port(),
            bootstrap: &bootstrap,
            topic: &topic,
            dead_letter_topic: None,
            budget: 200_000,
            http_port: port,
            http_extra: "",
        }
        .render(),
    )
    .unwrap();
    let bridge = BridgeProcess::spawn(&config, &dir.path().join("bridge.stderr"));
    wait_for_port(port).await;
    (broker, cluster, bootstrap, topic, port, dir, bridge)
}

/// Six clients upload unique frames back to back while the bridge process is SIGKILLed:
/// every upload that got a 201 is in Kafka, because 201 is only sent after the delivery
/// report. (Uploads cut off by the kill got no answer and may or may not be stored: the
/// client sends those again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_killed_mid_request_keeps_every_201() {
    let (_broker, _cluster, bootstrap, topic, port, _dir, mut bridge) =
        slow_kafka_bridge("up-kill").await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients = start_clients(port, 6, stop.clone(), seen.clone());
    let s = seen.clone();
    wait_until("40 uploads stored", Duration::from_secs(60), || {
        s.lock().unwrap().stored.len() >= 40
    })
    .await;
    bridge.kill();
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let total = check_every_201_stored(&bootstrap, &topic, &seen).await;
    println!(
        "SIGKILL: {} uploads answered 201, {} answered 503, {} clients cut off ({} mid-request); \
         {total} records in Kafka",
        seen.stored.len(),
        seen.unavailable,
        seen.cut_off,
        seen.cut_mid_request
    );
    assert_eq!(seen.unavailable, 0, "no 503 before the kill");
    assert!(total >= seen.stored.len());
}

/// The same load, stopped with SIGTERM: the bridge stops taking uploads, waits for the
/// delivery reports of those in flight, answers them, and exits 0; every 201 is in Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_uploads_in_flight_and_keeps_every_201() {
    let (_broker, _cluster, bootstrap, topic, port, _dir, mut bridge) =
        slow_kafka_bridge("up-term").await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients = start_clients(port, 6, stop.clone(), seen.clone());
    let s = seen.clone();
    wait_until("40 uploads stored", Duration::from_secs(60), || {
        s.lock().unwrap().stored.len() >= 40
    })
    .await;
    let before = seen.lock().unwrap().stored.len();
    let status = bridge.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let total = check_every_201_stored(&bootstrap, &topic, &seen).await;
    println!(
        "SIGTERM: {} uploads answered 201 ({} of them after the signal was sent or in flight \
         then), {} answered 503, {} clients cut off ({} mid-request); {total} records in Kafka",
        seen.stored.len(),
        seen.stored.len() - before,
        seen.unavailable,
        seen.cut_off,
        seen.cut_mid_request
    );
}
