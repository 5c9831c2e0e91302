//! `[http]` end to end: an agent publishing real footage into librdkafka's mock cluster,
//! read through its HTTP endpoints by real clients: `/metrics` parsed by Python's
//! `prometheus_client` OpenMetrics parser (installed by `scripts/setup`), `/stream.mjpeg`
//! read as a multipart stream and every part decoded, `/readyz` while the broker is down.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::http::{get, parse_metrics, read_head, sample, wait_for_status};
use common::mosquitto::free_port;
use common::{unique_topic, FIXTURE};
use edgecam::metrics::Metrics;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

/// Reads `n` parts of `/stream.mjpeg`: (seq, image bytes) each.
fn read_stream(port: u16, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /stream.mjpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    assert_eq!(status, 200);
    let ct = &headers.iter().find(|(k, _)| k == "content-type").unwrap().1;
    assert_eq!(ct, "multipart/x-mixed-replace; boundary=edgecamframe");
    // The body is chunked; undo that into a plain byte stream first.
    let mut body = Vec::new();
    let mut parts = Vec::new();
    while parts.len() < n {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let len = usize::from_str_radix(line.trim(), 16).unwrap();
        let mut chunk = vec![0; len + 2];
        r.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..len]);
        // Parse whole parts off the front.
        while let Some(head_end) = memchr::memmem::find(&body, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&body[..head_end]).into_owned();
            assert!(head.starts_with("--edgecamframe\r\n"), "part head {head:?}");
            let field = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| panic!("no {name} in {head:?}"))
            };
            assert_eq!(
                head.matches("Content-Length:").count(),
                1,
                "one Content-Length per part"
            );
            let len: usize = field("Content-Length:").parse().unwrap();
            let seq: u64 = field("X-Edgecam-Seq:").parse().unwrap();
            let start = head_end + 4;
            if body.len() < start + len + 2 {
                break;
            }
            parts.push((seq, body[start..start + len].to_vec()));
            body.drain(..start + len + 2);
        }
    }
    parts.truncate(n);
    parts
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_readiness_snapshot_and_stream_of_a_running_agent() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("http");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let port = free_port();
    let toml = format!(
        "[device]\nid = \"lobby\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nfps = 20\n\
         loop = true\n[encode]\nmax_message_bytes = 30000\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\nready_within_ms = 1000\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
    );
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    let live = Arc::new(edgecam::control::Live::new(cfg.clone()));
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(edgecam::pipeline::run_live(
        cfg,
        shutdown.clone(),
        metrics.clone(),
        live.clone(),
    ));

    // Liveness at once, readiness once frames flow.
    let health = wait_for_status(port, "/healthz", 200, "liveness").await;
    assert_eq!(health, br#"{"status":"ok"}"#);
    let ready = wait_for_status(port, "/readyz", 200, "readiness").await;
    assert_eq!(ready, br#"{"ready":true}"#);

    // The live view: every part a whole JPEG of the footage's size, in publishing order.
    let parts = tokio::task::spawn_blocking(move || read_stream(port, 8))
        .await
        .unwrap();
    for w in parts.windows(2) {
        assert!(w[1].0 > w[0].0, "seq advances: {} then {}", w[0].0, w[1].0);
    }
    for (seq, jpeg) in &parts {
        let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
            .unwrap_or_else(|e| panic!("part {seq} does not decode: {e}"));
        assert!(img.width() > 0 && img.height() > 0);
        assert!(jpeg.len() <= 30_000);
    }
    let (status, headers, snap) = tokio::task::spawn_blocking(move || get(port, "/snapshot.jpg"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "image/jpeg".into())));
    image::load_from_memory_with_format(&snap, image::ImageFormat::Jpeg).unwrap();

    // A viewer that stops reading holds no frame back: delivery goes on.
    let stalled = {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /stream.mjpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        s
    };
    let before = metrics.delivered.load(Relaxed);
    let m = metrics.clone();
    common::mosquitto::eventually("delivery goes on beside a stalled viewer", || {
        m.delivered.load(Relaxed) >= before + 60
    })
    .await;

    // The broker goes away: not ready, saying why; back: ready again.
    cluster.broker_down(1).unwrap();
    let body = wait_for_status(port, "/readyz", 503, "readiness in an outage").await;
    let why: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(why["ready"], false);
    let reasons = why["reasons"].to_string();
    assert!(reasons.contains("sink: "), "reasons: {reasons}");
    cluster.broker_up(1).unwrap();
    wait_for_status(port, "/readyz", 200, "readiness after the outage").await;

    // Pause and let the sink settle, so the counters stand still; then /metrics must show
    // exactly what the agent counted.
    live.paused.store(true, Relaxed);
    // Settled: nothing in flight or spooled, and no delivery for a whole second (frames
    // spooled in the outage are replayed and delivered too).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = metrics.delivered.load(Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if metrics.unacked.load(Relaxed) == 0
            && metrics.spool_records.load(Relaxed) == 0
            && metrics.delivered.load(Relaxed) == before
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the sink settles");
    }
    let (status, headers, text) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")));
    let text = String::from_utf8(text).unwrap();
    let prom = parse_metrics(&text);
    let types = &prom["__types__"];
    assert_eq!(types["edgecam_frames_delivered"], "counter");
    assert_eq!(types["edgecam_in_flight_records"], "gauge");
    assert_eq!(types["edgecam_record_bytes"], "histogram");
    assert_eq!(types["edgecam_delivery_latency_seconds"], "histogram");
    let d = "device=lobby";
    let delivered = metrics.delivered.load(Relaxed);
    assert!(delivered >= 60);
    assert_eq!(
        sample(&prom, "edgecam_frames_delivered_total", d),
        delivered as f64
    );
    assert_eq!(
        sample(&prom, "edgecam_delivered_bytes_total", d),
        metrics.delivered_bytes.load(Relaxed) as f64
    );
    assert_eq!(
        sample(&prom, "edgecam_frames_encoded_total", d),
        metrics.encoded.load(Relaxed) as f64
    );
    assert_eq!(
        sample(&prom, "edgecam_encode_attempts_total", d),
        metrics.encodes.load(Relaxed) as f64
    );
    assert_eq!(
        sample(&prom, "edgecam_record_bytes_count", d),
        delivered as f64
    );
    assert_eq!(
        sample(&prom, "edgecam_record_bytes_sum", d),
        metrics.delivered_bytes.load(Relaxed) as f64
    );
    assert_eq!(sample(&prom, "edgecam_in_flight_records", d), 0.0);
    assert_eq!(sample(&prom, "edgecam_sink_up", d), 1.0);
    let version = format!("device=lobby,version={}", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&prom, "edgecam_build_info", &version), 1.0);
    // Capture goes on while paused (the camera stays warm): bounded by reads either side.
    let captured = sample(&prom, "edgecam_frames_captured_total", d);
    assert!(captured >= delivered as f64 && captured <= metrics.captured.load(Relaxed) as f64);

    drop(stalled);
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The exit summary and the last scrape agree.
    let summary = metrics.summary(report.elapsed.as_secs_f64());
    assert!(
        summary.contains(&format!("delivered {delivered} ")),
        "summary: {summary}"
    );
    assert_eq!(
        report.sink.delivered.get(&topic).copied(),
        Some(delivered),
        "{report:?}"
    );
    // The server stopped with the agent.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_in_use_is_a_start_up_error_naming_http_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let toml = format!(
        "[device]\nid = \"busy\"\n[source]\nkind = \"synthetic\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [kafka]\nbootstrap_servers = \"127.0.0.1:1\"\ntopic = \"t\"\n"
    );
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    let err = edgecam::pipeline::run(cfg, CancellationToken::new(), Arc::new(Metrics::default()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("http.listen 127.0.0.1:{port}: ")) && text.contains("in use"),
        "{text}"
    );
}
