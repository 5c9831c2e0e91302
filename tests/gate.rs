//! `[gate]` on real footage where the truth is known: people walking (vtest: most frames
//! pass), one frame repeated (nothing passes but the first and its post-roll), and a still
//! scene with sensor noise and a slow change of light (the same). Every suppressed frame is
//! counted as `unchanged`: passed + unchanged = captured.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use common::unique_topic;
use edgecam::metrics::{DropReason, Metrics};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

/// The 300 frames of real footage (`scripts/testdata`).
fn vtest() -> std::path::PathBuf {
    common::testdata("vtest-768x576-10fps.mjpeg")
}

/// Runs an agent over the MJPEG file `path` (as fast as it can be read) with `[gate]` on;
/// returns (delivered, unchanged, captured).
async fn gated(path: &std::path::Path, gate: &str) -> (u64, u64, u64) {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("gate");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let toml = format!(
        "[device]\nid = \"gate\"\n[source]\nkind = \"mjpeg\"\npath = \"{}\"\nfps = 0\n\
         [gate]\nenabled = true\n{gate}\n\
         [kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{topic}\"\n",
        path.display(),
        cluster.bootstrap_servers()
    );
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let report = edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
        .await
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    let unchanged = metrics
        .dropped()
        .get(&DropReason::Unchanged)
        .copied()
        .unwrap_or(0);
    // Suppressed on purpose: not a loss, and nothing else was dropped.
    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
    assert_eq!(metrics.discarded_on_purpose(), unchanged);
    (
        metrics.delivered.load(Relaxed),
        unchanged,
        metrics.captured.load(Relaxed),
    )
}

fn vtest_frames() -> Vec<bytes::Bytes> {
    let data = bytes::Bytes::from(std::fs::read(vtest()).unwrap());
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(start) = memchr::memmem::find(&data[at..], &[0xFF, 0xD8]) {
        let s = at + start;
        let Some(end) = memchr::memmem::find(&data[s..], &[0xFF, 0xD9]) else {
            break;
        };
        frames.push(data.slice(s..s + end + 2));
        at = s + end + 2;
    }
    frames
}

fn write_mjpeg(dir: &tempfile::TempDir, name: &str, frames: &[Vec<u8>]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, frames.concat()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_passes_people_walking_and_suppresses_a_still_scene() {
    // People walking: most of the 300 frames show motion.
    let (passed, unchanged, captured) = gated(&vtest(), "heartbeat_secs = 0").await;
    assert_eq!(captured, 300);
    assert_eq!(passed + unchanged, captured);
    assert!(
        passed >= 240,
        "people walk through the whole clip: {passed} of 300 passed"
    );

    let dir = tempfile::tempdir().unwrap();
    let frames = vtest_frames();
    assert!(frames.len() >= 300);
    // One frame repeated: the first passes (it sets the background), then its post-roll.
    let still: Vec<Vec<u8>> = (0..120).map(|_| frames[40].to_vec()).collect();
    let path = write_mjpeg(&dir, "still.mjpeg", &still);
    let (passed, unchanged, captured) = gated(
        &path,
        "heartbeat_secs = 0\npost_roll_frames = 5\npre_roll_frames = 2",
    )
    .await;
    assert_eq!((passed, unchanged, captured), (6, 114, 120));

    // A still scene with sensor noise (±6) and the light rising by 24 levels over the clip.
    let base = image::load_from_memory(&frames[40]).unwrap().to_rgb8();
    let mut x = 0x9e37_79b9u32;
    let noisy: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            let mut img = base.clone();
            for p in img.pixels_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let n = (x % 13) as i32 - 6 + i * 24 / 100;
                for c in p.0.iter_mut() {
                    *c = (*c as i32 + n).clamp(0, 255) as u8;
                }
            }
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&img)
                .unwrap();
            out
        })
        .collect();
    let path = write_mjpeg(&dir, "noisy.mjpeg", &noisy);
    let (passed, unchanged, captured) =
        gated(&path, "heartbeat_secs = 0\npost_roll_frames = 5").await;
    assert_eq!((passed, unchanged, captured), (6, 94, 100));
}

/// Benchmark: CPU per frame of the gate (thumbnail decode at 1/8, background, decision) on
/// the 300 vtest frames. `cargo test --release --test gate -- --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn bench_gate_cpu_per_frame() {
    let frames = vtest_frames();
    let cfg = edgecam::config::GateConfig {
        enabled: true,
        ..Default::default()
    };
    let metrics = Metrics::default();
    for round in 0..3 {
        let mut gate = edgecam::gate::FrameGate::new(&cfg, Default::default()).unwrap();
        let start = std::time::Instant::now();
        let mut passed = 0;
        for f in &frames {
            let img =
                edgecam::frame::Image::Jpeg(edgecam::frame::JpegImage::parse(f.clone()).unwrap());
            let frame = edgecam::frame::Frame {
                seq: 0,
                frame_id: String::new(),
                captured_at: std::time::SystemTime::now(),
                image: img,
            };
            passed += gate.pass(frame, &metrics).len();
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / frames.len() as f64;
        println!(
            "gate round {round}: {per:.0} µs per 768x576 frame, {passed} of {} passed",
            frames.len()
        );
    }
}
