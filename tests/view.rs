//! `edgecam view` in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup`) opens the page against a topic an agent fills with real footage; the
//! page shows decodable frames whose seq advances, and reopening it at the position it
//! reached resumes with the next frame, neither from the start nor at "now". Screenshots
//! are kept in `target/view-screenshots/` as artefacts.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::browser::Browser;
use common::http::{get, wait_for_status};
use common::mosquitto::free_port;
use common::{unique_topic, FIXTURE};
use edgecam::metrics::Metrics;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

/// An agent of device `porch` publishing the fixture footage to `topic` at 10 fps, looped:
/// its metrics, the token that stops it, its task.
fn porch_agent(
    bootstrap: &str,
    topic: &str,
) -> (
    Arc<Metrics>,
    CancellationToken,
    tokio::task::JoinHandle<Result<edgecam::pipeline::RunReport, edgecam::pipeline::RunError>>,
) {
    let toml = format!(
        "[device]\nid = \"porch\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nfps = 10\n\
         loop = true\n[encode]\nmax_message_bytes = 40000\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
    );
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let agent = tokio::spawn(edgecam::pipeline::run(cfg, stop.clone(), metrics.clone()));
    (metrics, stop, agent)
}

/// `edgecam view` of `topic` (and `results`) on a free port, once it serves the page: the
/// port, the token that stops it, its task.
async fn serve_view(
    bootstrap: &str,
    topic: &str,
    results: Option<&str>,
) -> (
    u16,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), edgecam::view::ViewError>>,
) {
    let port = free_port();
    let stop = CancellationToken::new();
    let view = tokio::spawn(edgecam::view::serve(
        edgecam::view::ViewOptions {
            bootstrap_servers: bootstrap.to_string(),
            topic: topic.to_string(),
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            properties: Vec::new(),
            limits: edgecam::limits::Limits::default(),
            results_topic: results.map(str::to_string),
        },
        stop.clone(),
    ));
    wait_for_status(port, "/", 200, "the page").await;
    (port, stop, view)
}

/// Where the screenshots are kept: `target/view-screenshots/`.
fn screenshots() -> std::path::PathBuf {
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("view-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_plays_real_footage_and_a_reopened_page_resumes_where_it_was() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("view");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (metrics, stop_agent, agent) = porch_agent(&bootstrap, &topic);
    let m = metrics.clone();
    common::mosquitto::eventually("frames in Kafka", || m.delivered.load(Relaxed) >= 20).await;

    let (port, stop_view, view) = serve_view(&bootstrap, &topic, None).await;
    // The tail reader found the device.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = tokio::task::spawn_blocking(move || get(port, "/api/devices"))
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["devices"][0]["device"] == "porch" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "devices: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let shots = screenshots();
    let base = format!("http://127.0.0.1:{port}/");
    let (last_seq, resume) = tokio::task::spawn_blocking({
        let (base, shots) = (base.clone(), shots.clone());
        let m = metrics.clone();
        move || browse(&base, &shots, &m)
    })
    .await
    .unwrap();

    // Stepping: the frame before the resume point is the last one the first visit showed.
    let (status, headers, body) = tokio::task::spawn_blocking({
        let path = format!("/api/frame/porch?from={resume}&dir=prev");
        move || get(port, &path)
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let seq = &headers
        .iter()
        .find(|(k, _)| k == "x-edgecam-seq")
        .unwrap()
        .1;
    assert_eq!(seq, &last_seq.to_string());
    image::load_from_memory(&body).unwrap();
    // The time scrubber: a stream from a capture time starts at the first record at or
    // after it (offsets_for_times).
    let (_, _, body) = tokio::task::spawn_blocking(move || get(port, "/api/devices"))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (at_ms, at_offset) = (
        v["devices"][0]["timestamp_ms"].as_i64().unwrap(),
        v["devices"][0]["offset"].as_i64().unwrap(),
    );
    let head = tokio::task::spawn_blocking(move || {
        first_part_head(port, &format!("/api/stream/porch?at={at_ms}"))
    })
    .await
    .unwrap();
    assert!(
        head.contains(&format!("X-Kafka-Offset: {at_offset}\r\n")),
        "stream at {at_ms} should start at offset {at_offset}: {head}"
    );
    // A bad position is a 400 saying what is expected.
    let (status, _, body) =
        tokio::task::spawn_blocking(move || get(port, "/api/stream/porch?from=x"))
            .await
            .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("PARTITION:OFFSET"));

    stop_view.cancel();
    tokio::time::timeout(Duration::from_secs(10), view)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop_agent.cancel();
    agent.await.unwrap().unwrap();
}

/// The result the stand-in processor of the test below publishes for frame `seq`: a count
/// and that many boxes, different from frame to frame.
fn result_for(seq: u64) -> serde_json::Value {
    let n = seq % 3 + 1;
    let boxes: Vec<[u64; 4]> = (0..n)
        .map(|i| {
            [
                40 + 200 * i + seq % 17,
                60 + 40 * i,
                96 + 8 * i,
                180 + seq % 23,
            ]
        })
        .collect();
    serde_json::json!({ "people": n, "boxes": boxes })
}

/// With `--results-topic`, the page draws each frame's result over it: the boxes drawn, read
/// back from the page's layout in the frame's pixels, are the boxes of the result record of
/// the frame shown (matched by `edgecam.frame_id`), and the label is its count. A stand-in
/// for `edgecam process` answers every frame with [`result_for`] its seq.
#[tokio::test(flavor = "multi_thread")]
async fn the_page_draws_the_result_of_the_frame_shown() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let cluster = MockCluster::new(1).unwrap();
    let (topic, results) = (unique_topic("view-frames"), unique_topic("view-results"));
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.create_topic(&results, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (metrics, stop_agent, agent) = porch_agent(&bootstrap, &topic);

    // The stand-in processor: every frame's result, keyed and headed as edgecam process does.
    let stop_processor = CancellationToken::new();
    let processor = tokio::spawn({
        let (bootstrap, topic, results) = (bootstrap.clone(), topic.clone(), results.clone());
        let stop = stop_processor.clone();
        async move {
            let consumer: StreamConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "view-results-test")
                .set("auto.offset.reset", "earliest")
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            let producer: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
            let mut answered = 0u64;
            loop {
                let m = tokio::select! {
                    m = consumer.recv() => m,
                    _ = stop.cancelled() => return answered,
                };
                // librdkafka reports transient broker errors here too; the consumer goes on.
                let Ok(m) = m else { continue };
                let header = |name: &str| {
                    m.headers()
                        .and_then(|h| h.iter().find(|h| h.key == name))
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap()
                };
                let (id, seq) = (header("edgecam.frame_id"), header("edgecam.seq"));
                let value = result_for(seq.parse().unwrap()).to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "edgecam.frame_id",
                        value: Some(&id),
                    })
                    .insert(Header {
                        key: "edgecam.seq",
                        value: Some(&seq),
                    });
                producer
                    .send(
                        FutureRecord::to(&results)
                            .key("porch")
                            .payload(&value)
                            .headers(headers),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                answered += 1;
            }
        }
    });
    let m = metrics.clone();
    common::mosquitto::eventually("frames in Kafka", || m.delivered.load(Relaxed) >= 10).await;

    let (port, stop_view, view) = serve_view(&bootstrap, &topic, Some(&results)).await;
    let shots = screenshots();
    let base = format!("http://127.0.0.1:{port}/");
    let (seq, drawn) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::open(&base);
        b.wait_until("a frame decoded", |b| b.text("decoded").contains('x'));
        // Paused, the frame shown stays; its result arrives and is drawn.
        b.eval("document.getElementById('play').click()");
        b.wait_until("a result drawn", |b| !b.text("result").is_empty());
        b.screenshot(&shots.join("results.png"));
        let drawn = b.eval(
            "JSON.stringify((() => {
               const img = document.getElementById('frame');
               const i = img.getBoundingClientRect();
               const sx = img.naturalWidth / i.width, sy = img.naturalHeight / i.height;
               return {
                 id: document.getElementById('frame-id').textContent,
                 label: document.querySelector('#boxes .label').textContent,
                 boxes: [...document.querySelectorAll('#boxes .box')].map((el) => {
                   const r = el.getBoundingClientRect();
                   return [(r.left - i.left) * sx, (r.top - i.top) * sy, r.width * sx, r.height * sy];
                 }),
               };
             })())",
        );
        let drawn: serde_json::Value = serde_json::from_str(drawn.as_str().unwrap()).unwrap();
        (b.text("seq").parse::<u64>().unwrap(), drawn)
    })
    .await
    .unwrap();

    // The result record of the frame shown, as the view serves it, is the one published for
    // that frame's seq; the boxes drawn are its boxes, to within a pixel of layout rounding.
    let id = drawn["id"].as_str().unwrap().to_string();
    let (status, _, body) =
        tokio::task::spawn_blocking(move || get(port, &format!("/api/result/{id}")))
            .await
            .unwrap();
    assert_eq!(status, 200);
    let record: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let want = result_for(seq);
    assert_eq!(record, want, "the result record of frame seq {seq}");
    assert_eq!(drawn["label"], format!("people: {}", want["people"]));
    let (got, want) = (
        drawn["boxes"].as_array().unwrap(),
        want["boxes"].as_array().unwrap(),
    );
    assert_eq!(
        got.len(),
        want.len(),
        "boxes drawn: {got:?}, in the record: {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        for k in 0..4 {
            let (g, w) = (g[k].as_f64().unwrap(), w[k].as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1.5,
                "box drawn {got:?}, in the record {want:?}"
            );
        }
    }
    // An unknown frame has no result: a 404 saying so, after the wait asked for.
    let (status, _, body) =
        tokio::task::spawn_blocking(move || get(port, "/api/result/nope?wait_ms=200"))
            .await
            .unwrap();
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("no result for frame"));

    stop_view.cancel();
    tokio::time::timeout(Duration::from_secs(10), view)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop_processor.cancel();
    assert!(processor.await.unwrap() >= 1);
    stop_agent.cancel();
    agent.await.unwrap().unwrap();
}

/// The browser part: returns the last seq the first visit showed and the position after it.
fn browse(base: &str, shots: &std::path::Path, metrics: &Metrics) -> (u64, String) {
    // First visit: the only device is picked and played live. The frame shown decodes, and
    // the seq advances while it plays.
    let mut b = Browser::open(base);
    b.wait_until("a frame decoded", |b| b.text("decoded").contains('x'));
    let decoded = b.text("decoded");
    let (w, h) = decoded.split_once('x').unwrap();
    assert!(w.parse::<u32>().unwrap() > 0 && h.parse::<u32>().unwrap() > 0);
    let first_seq: u64 = b.text("first-seq").parse().unwrap();
    b.wait_until("the seq advances", |b| {
        b.text("seq").parse::<u64>().unwrap_or(0) >= first_seq + 5
    });
    b.screenshot(&shots.join("live.png"));
    // Pause: the position stays where the last frame shown left it.
    b.eval("document.getElementById('play').click()");
    std::thread::sleep(Duration::from_millis(300));
    let last_seq: u64 = b.text("seq").parse().unwrap();
    let position = b.text("position");
    let (p, o) = position.split_once(':').unwrap();
    let resume = format!("{p}:{}", o.parse::<i64>().unwrap() + 1);
    let stored = b.eval("JSON.stringify(localStorage)");
    assert!(
        stored.as_str().unwrap().contains(&resume),
        "position {resume} kept in localStorage: {stored}"
    );

    // Let the camera run ahead, then reload: the next frame comes first, not the live one.
    std::thread::sleep(Duration::from_secs(2));
    let live_then = metrics.delivered.load(Relaxed);
    b.eval("window.beforeReload = true; location.reload()");
    b.wait_until("a frame after the reload", |b| {
        b.eval("window.beforeReload === undefined") == true
            && b.text("first-seq").parse::<u64>().is_ok()
    });
    let resumed: u64 = b.text("first-seq").parse().unwrap();
    assert_eq!(
        resumed,
        last_seq + 1,
        "resumed right after the last frame shown (live was near {live_then})"
    );
    b.wait_until("the replay plays on", |b| {
        b.text("seq").parse::<u64>().unwrap_or(0) > resumed
    });
    b.screenshot(&shots.join("resumed.png"));
    drop(b);

    // A new browser (no localStorage) opened at the URL the page keeps resumes too.
    let mut b = Browser::open(&format!("{base}#device=porch&from={resume}"));
    b.wait_until("a frame", |b| b.text("first-seq").parse::<u64>().is_ok());
    assert_eq!(b.text("first-seq").parse::<u64>().unwrap(), last_seq + 1);
    for s in ["live.png", "resumed.png"] {
        let img = image::open(shots.join(s)).unwrap();
        assert!(img.width() >= 800 && img.height() >= 600, "{s}");
    }
    (last_seq, resume)
}

/// The headers of the first part of the multipart stream at `path`.
fn first_part_head(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Past the response head, up to the end of the first part's head.
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(at) = text.find("--edgecamframe\r\n") {
            if let Some(end) = text[at..].find("\r\n\r\n") {
                return text[at..at + end + 2].to_string();
            }
        }
    }
}
