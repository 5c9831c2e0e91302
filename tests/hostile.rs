//! Hostile input through the real agent binary, into librdkafka's mock cluster: forged
//! headers, decompression bombs, truncated and random files, a sparse 2 GB file, devices and
//! FIFOs. The agent survives, counts every refusal under its reason, delivers the good frames
//! before and after, and its peak RSS stays small: nothing was allocated for the lies.
//!
//! The corpus is generated here from the committed footage, not committed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fixture_frames, read_topic, unique_topic};
use rdkafka::mocking::MockCluster;

const BIN: &str = env!("CARGO_BIN_EXE_edgecam");

/// Peak RSS bound for an agent fed hostile frames: the whole agent, librdkafka included,
/// handling 768×576 frames. A single forged frame decoded would need gigabytes.
const RSS_BOUND_BYTES: u64 = 64 << 20;

/// A JPEG with its SOF dimensions rewritten.
fn patch_sof(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut j = jpeg.to_vec();
    let i = (2..j.len() - 1)
        .find(|&i| j[i] == 0xFF && (0xC0..=0xC2).contains(&j[i + 1]))
        .expect("a SOF marker");
    j[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
    j[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    j
}

/// A small real PNG whose IHDR (CRC fixed) declares `w`×`h`.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let img =
        edgecam::frame::RawImage::new(4, 4, edgecam::frame::PixelFormat::Gray8, (0..16).collect())
            .unwrap();
    let mut p = edgecam::encode::codec::encode_png(&img).unwrap();
    p[16..20].copy_from_slice(&w.to_be_bytes());
    p[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32fast::hash(&p[12..29]);
    p[29..33].copy_from_slice(&crc.to_be_bytes());
    p
}

/// Deterministic random bytes.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A named hostile input and the reason the agent must count it under.
type Hostile = (&'static str, Vec<u8>, &'static str);

/// The hostile frames, each with the reason the agent must count it under.
fn hostile_frames() -> Vec<Hostile> {
    let good = fixture_frames()[3].to_vec();
    let cut = |pct: usize| good[..good.len() * pct / 100].to_vec();
    vec![
        ("sof-0x576", patch_sof(&good, 0, 576), "bad_frame"),
        (
            "sof-65000",
            patch_sof(&good, 65_000, 65_000),
            "frame_too_large",
        ),
        (
            "sof-65535",
            patch_sof(&good, 65_535, 65_535),
            "frame_too_large",
        ),
        ("cut-10", cut(10), "bad_frame"),
        ("cut-50", cut(50), "bad_frame"),
        ("cut-90", cut(90), "bad_frame"),
        ("random", noise(50_000, 7), "bad_frame"),
    ]
}

/// Runs `edgecam run` on `config` to its end; returns (exit code, stderr).
fn run_agent(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dropped <reason>: N` from the summary, 0 when absent.
fn dropped(stderr: &str, reason: &str) -> u64 {
    let key = format!("dropped {reason}: ");
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix(&key))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// A number after `prefix` in the summary.
fn summary_number(stderr: &str, prefix: &str) -> u64 {
    let line = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{prefix:?} not in:\n{stderr}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// `frames: … delivered N …` from the summary.
fn delivered(stderr: &str) -> u64 {
    let line = stderr.lines().find(|l| l.starts_with("frames:")).unwrap();
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "delivered").unwrap();
    w[i + 1].parse().unwrap()
}

struct Agent {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    name: String,
    dir: tempfile::TempDir,
}

/// One agent configuration and the topic it publishes to (new for each).
struct Run {
    config: PathBuf,
    topic: String,
}

impl Agent {
    fn new(name: &str) -> Agent {
        Agent {
            cluster: MockCluster::new(1).unwrap(),
            name: name.to_string(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// An agent config with `source` as its [source] table and a budget that `budget`
    /// sets (a small one makes every good frame go through libjpeg-turbo's decoder).
    fn config(&self, source: &str, budget: u32) -> Run {
        let topic = unique_topic(&self.name);
        self.cluster.create_topic(&topic, 1, 1).unwrap();
        let p = self.dir.path().join(format!("{topic}.toml"));
        std::fs::write(
            &p,
            format!(
                "[device]\nid = \"hostile\"\n[source]\n{source}\n[encode]\nmax_message_bytes = \
                 {budget}\n[pipeline]\noverflow = \"block\"\n[kafka]\nbootstrap_servers = \
                 \"{}\"\ntopic = \"{}\"\n",
                self.cluster.bootstrap_servers(),
                topic
            ),
        )
        .unwrap();
        Run { config: p, topic }
    }

    /// Runs the agent and checks the summary: exit 0, `good` delivered and in the topic,
    /// each reason counted as expected, peak RSS under the bound.
    fn check(&self, run: &Run, good: u64, reasons: &[(&str, u64)]) -> String {
        let (code, stderr) = run_agent(&run.config);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(delivered(&stderr), good, "{stderr}");
        for (reason, n) in reasons {
            assert_eq!(dropped(&stderr, reason), *n, "{reason}:\n{stderr}");
        }
        let rss = summary_number(&stderr, "memory: peak RSS ");
        eprintln!("{}: peak RSS {rss} B", run.topic);
        assert!(rss < RSS_BOUND_BYTES, "peak RSS {rss} B:\n{stderr}");
        let recs = read_topic(
            &self.cluster.bootstrap_servers(),
            &run.topic,
            1,
            good as usize + 1,
            Duration::from_secs(10),
        );
        assert_eq!(recs.len() as u64, good);
        for r in &recs {
            // Each delivered frame is a whole JPEG within the limits.
            edgecam::inspect::jpeg(&r.value, &edgecam::limits::Limits::default()).unwrap();
        }
        stderr
    }
}

fn count(frames: &[Hostile], reason: &str) -> u64 {
    frames.iter().filter(|f| f.2 == reason).count() as u64
}

#[test]
fn images_directory_of_hostile_files() {
    let a = Agent::new("hostile-images");
    let dir = a.dir.path().join("images");
    std::fs::create_dir(&dir).unwrap();
    let good = fixture_frames();
    std::fs::write(dir.join("00-good.jpg"), &good[0]).unwrap();
    let hostile = hostile_frames();
    for (i, (name, data, _)) in hostile.iter().enumerate() {
        std::fs::write(dir.join(format!("{:02}-{name}.jpg", i + 1)), data).unwrap();
    }
    let mut extra = vec![
        ("png-12000", png_bomb(12_000, 12_000), "frame_too_large"),
        ("png-30000", png_bomb(30_000, 30_000), "frame_too_large"),
        (
            "png-2g",
            png_bomb(i32::MAX as u32, i32::MAX as u32),
            "frame_too_large",
        ),
    ];
    for (name, data, _) in &extra {
        std::fs::write(dir.join(format!("50-{name}.png")), data).unwrap();
    }
    std::fs::write(dir.join("60-empty.jpg"), b"").unwrap();
    extra.push(("empty", Vec::new(), "bad_frame"));
    let sparse = std::fs::File::create(dir.join("61-sparse.jpg")).unwrap();
    sparse.set_len(2 << 30).unwrap();
    extra.push(("sparse", Vec::new(), "frame_too_large"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("62-zero.jpg")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(dir.join("63-fifo.jpg"))
        .status()
        .unwrap()
        .success());
    std::fs::write(dir.join("99-good.jpg"), &good[1]).unwrap();
    let all: Vec<_> = hostile.into_iter().chain(extra).collect();

    // Passthrough (default budget), then every good frame re-encoded (decoder path).
    for budget in [1_000_000, 20_000] {
        let cfg = a.config(
            &format!("kind = \"images\"\npath = \"{}\"\nfps = 0", dir.display()),
            budget,
        );
        let stderr = a.check(
            &cfg,
            2,
            &[
                ("frame_too_large", count(&all, "frame_too_large")),
                ("bad_frame", count(&all, "bad_frame")),
                ("decode_error", 0),
            ],
        );
        assert!(
            stderr.contains("skipped input: 0 bytes outside frames, 2 entries"),
            "{stderr}"
        );
    }
}

/// The good frames, the hostile ones and random garbage between them, back to back.
fn hostile_stream() -> (Vec<u8>, Vec<Hostile>) {
    let good = fixture_frames();
    let hostile = hostile_frames();
    let mut stream = good[0].to_vec();
    for (_, data, _) in &hostile {
        stream.extend_from_slice(data);
    }
    // Garbage without a frame start, then the last good frame.
    stream.extend_from_slice(&[0x5A; 10_000]);
    stream.extend_from_slice(&good[1]);
    (stream, hostile)
}

#[test]
fn mjpeg_file_and_child_process_with_hostile_frames() {
    let a = Agent::new("hostile-mjpeg");
    let (stream, hostile) = hostile_stream();
    let path = a.dir.path().join("hostile.mjpeg");
    std::fs::write(&path, &stream).unwrap();
    let file = format!("kind = \"mjpeg\"\npath = \"{}\"\nfps = 0", path.display());
    let child = format!(
        "kind = \"mjpeg\"\ncommand = [\"cat\", \"{}\"]\nfps = 0",
        path.display()
    );
    for source in [file, child] {
        for budget in [1_000_000, 20_000] {
            let stderr = a.check(
                &a.config(&source, budget),
                2,
                &[
                    ("frame_too_large", count(&hostile, "frame_too_large")),
                    ("decode_error", 0),
                ],
            );
            // The splitter cannot tell where a truncated frame's bytes end and the next
            // frame's begin, so the cut and random frames become bad frames or skipped
            // bytes; every one is accounted for, and the garbage is counted.
            assert!(dropped(&stderr, "bad_frame") >= 1, "{stderr}");
            assert!(
                summary_number(&stderr, "skipped input: ") >= 10_000,
                "{stderr}"
            );
        }
    }
}

#[test]
fn check_config_refuses_a_device_or_fifo_as_the_mjpeg_file() {
    let a = Agent::new("hostile-dev");
    let fifo = a.dir.path().join("fifo.mjpeg");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [Path::new("/dev/zero"), fifo.as_path()] {
        let cfg = a.config(
            &format!("kind = \"mjpeg\"\npath = \"{}\"", path.display()),
            1_000_000,
        );
        for cmd in ["check-config", "run"] {
            let out = Command::new(BIN)
                .env("STATE_DIRECTORY", common::state_dir())
                .args([cmd, "--config"])
                .arg(&cfg.config)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{cmd}: {err}");
            assert!(err.contains("source.path"), "{err}");
            assert!(err.contains("not a regular file"), "{err}");
        }
    }
}

/// The unit's `MemoryMax=384M`, bytes.
const MEMORY_MAX_BYTES: u64 = 384 << 20;

/// A frame at the default pixel limit (50 MP) that must be re-encoded to fit the 1 MB
/// budget: the agent's peak RSS stays under the service's memory limit.
#[test]
fn largest_frame_within_the_limits_is_re_encoded_under_memory_max() {
    let a = Agent::new("hostile-50mp");
    let dir = a.dir.path().join("images");
    std::fs::create_dir(&dir).unwrap();
    let (w, h) = (8192u32, 6100u32);
    assert!(w as u64 * h as u64 <= edgecam::limits::DEFAULT_MAX_PIXELS);
    let px: Vec<u8> = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                let v = (x ^ y).wrapping_mul(2654435761) >> 24;
                [v as u8, (x / 7) as u8, (y / 5) as u8]
            })
        })
        .collect();
    let img = edgecam::frame::RawImage::new(w, h, edgecam::frame::PixelFormat::Rgb8, px).unwrap();
    let jpeg = edgecam::encode::codec::Jpeg::new()
        .unwrap()
        .encode(&img, 90)
        .unwrap();
    drop(img);
    assert!(
        jpeg.len() > 1_000_000,
        "{} B: must need a re-encode",
        jpeg.len()
    );
    std::fs::write(dir.join("big.jpg"), &jpeg).unwrap();
    let run = a.config(
        &format!("kind = \"images\"\npath = \"{}\"\nfps = 0", dir.display()),
        1_000_000,
    );
    let (code, stderr) = run_agent(&run.config);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(delivered(&stderr), 1, "{stderr}");
    let rss = summary_number(&stderr, "memory: peak RSS ");
    eprintln!("{w}x{h} re-encoded: peak RSS {rss} B");
    assert!(rss < MEMORY_MAX_BYTES, "peak RSS {rss} B:\n{stderr}");
}
