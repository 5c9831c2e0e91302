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
        sample(
            &prom,
            "edgecam_frames_delivered_total",
            "device=lobby,sink=kafka"
        ),
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

/// CPU seconds (user + system) and (current, peak) RSS bytes of process `pid`.
fn cpu_and_rss(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name in parentheses: utime and stime are the 12th and 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    // USER_HZ is 100 on Linux.
    (ticks / 100.0, kb("VmRSS:") * 1024, kb("VmHWM:") * 1024)
}

/// Benchmark: the agent binary at 10 fps 1080p (synthetic frames, JPEG re-encoded under a
/// 150 kB budget) into the mock cluster for 30 s, without `[http]`, then with `/metrics`
/// scraped every second and one `/stream.mjpeg` viewer. Prints CPU and RSS of each run.
/// `cargo test --release --test http -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_http_overhead_1080p_10fps() {
    let secs = 30u64;
    for with_http in [false, true] {
        let cluster = MockCluster::new(1).unwrap();
        let topic = unique_topic("http-bench");
        cluster.create_topic(&topic, 1, 1).unwrap();
        let port = free_port();
        let http = if with_http {
            format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")
        } else {
            String::new()
        };
        let toml = format!(
            "[device]\nid = \"bench\"\n[source]\nkind = \"synthetic\"\nwidth = 1920\n\
             height = 1080\nfps = 10\n[encode]\nmax_message_bytes = 150000\n{http}\
             [kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{topic}\"\n",
            cluster.bootstrap_servers()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.toml");
        std::fs::write(&path, toml).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .args(["run", "--config"])
            .arg(&path)
            .env("STATE_DIRECTORY", dir.path())
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let pid = child.id();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut helpers = Vec::new();
        if with_http {
            wait_for_status(port, "/readyz", 200, "bench readiness").await;
            let s = stop.clone();
            helpers.push(std::thread::spawn(move || {
                let mut scrapes = 0u64;
                while !s.load(Relaxed) {
                    assert_eq!(get(port, "/metrics").0, 200);
                    scrapes += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
                scrapes
            }));
            let s = stop.clone();
            helpers.push(std::thread::spawn(move || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                write!(c, "GET /stream.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let mut bytes = 0u64;
                while !s.load(Relaxed) {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => bytes += n as u64,
                    }
                }
                bytes
            }));
        } else {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let (cpu0, _, _) = cpu_and_rss(pid);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu1, rss, peak) = cpu_and_rss(pid);
        stop.store(true, Relaxed);
        let done: Vec<u64> = helpers.into_iter().map(|h| h.join().unwrap()).collect();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}");
        println!(
            "http {}: CPU {:.2} s over {secs} s ({:.1} % of a core), RSS {:.1} MB, peak RSS \
             {:.1} MB{}",
            if with_http { "on " } else { "off" },
            cpu1 - cpu0,
            (cpu1 - cpu0) / secs as f64 * 100.0,
            rss as f64 / 1e6,
            peak as f64 / 1e6,
            if with_http {
                format!(
                    " ({} scrapes, {:.1} MB streamed)",
                    done[0],
                    done[1] as f64 / 1e6
                )
            } else {
                String::new()
            }
        );
    }
}
