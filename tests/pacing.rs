//! `source.fps` for a child-process source: the real agent binary reads MJPEG from a `sh`
//! loop that writes the committed footage much faster than `fps`, into librdkafka's mock
//! cluster. The agent keeps at most what the pacing rule allows (checked on the records'
//! capture timestamps, not on wall-clock speed), counts the surplus as discarded on purpose
//! (`fps_limit`), loses nothing, and applies a SIGHUP change of `source.fps` live.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use common::{read_topic, unique_topic};
use rdkafka::mocking::MockCluster;

const BIN: &str = env!("CARGO_BIN_EXE_edgecam");

/// Frames in the fixture.
const FIXTURE_FRAMES: u64 = 10;

/// Slack on a span of capture timestamps: the agent takes the pacing decision (on the
/// monotonic clock) a moment after the source stamped the frame (wall clock, microseconds),
/// and a fast stream puts kept frames right at their due times, so a span can come out a
/// little shorter than the periods it holds. 20 ms is far less than a period here (200 ms,
/// 1 s), so one frame too many still fails.
const STAMP_SLACK: Duration = Duration::from_millis(20);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vtest-10.mjpeg")
}

/// An agent config in `dir` reading MJPEG from `sh -c script` at `fps`, publishing to `topic`.
fn config(dir: &Path, bootstrap: &str, topic: &str, script: &str, fps: u32) -> PathBuf {
    let p = dir.join("cam.toml");
    std::fs::write(
        &p,
        format!(
            "[device]\nid = \"paced\"\n[source]\nkind = \"mjpeg\"\ncommand = [\"sh\", \"-c\", {}]\n\
             fps = {fps}\n[pipeline]\noverflow = \"block\"\n[encode]\nmax_message_bytes = 1000000\n[kafka]\nbootstrap_servers = \
             \"{}\"\ntopic = \"{topic}\"\n",
            toml::Value::String(script.to_string()),
            bootstrap
        ),
    )
    .unwrap();
    p
}

/// A number after `prefix` on a line of the summary (0 when no line has it).
fn number_after(stderr: &str, prefix: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map_or(0, |rest| {
            rest.split_whitespace().next().unwrap().parse().unwrap()
        })
}

/// `frames: … <word> N …` from the summary.
fn frames_field(stderr: &str, word: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("frames:"))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w.iter().position(|x| *x == word).unwrap();
    w[i + 1].parse().unwrap()
}

/// The agent, killed if the test fails before it ends (its child would wait for ever).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn capture_times(recs: &[common::Rec]) -> Vec<SystemTime> {
    let mut t: Vec<SystemTime> = recs
        .iter()
        .map(|r| humantime::parse_rfc3339(r.h("edgecam.captured_at")).unwrap())
        .collect();
    t.sort();
    t
}

#[test]
fn child_process_faster_than_fps_is_thinned_to_fps_and_the_surplus_counted() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("paced");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 40 bursts of the 10-frame fixture, 50 ms apart: 400 frames in a bit over 2 s, far
    // faster than 5 fps.
    let bursts = 40;
    let script = format!(
        "i=0; while [ $i -lt {bursts} ]; do cat '{}'; sleep 0.05; i=$((i+1)); done",
        fixture().display()
    );
    let fps = 5;
    let cfg = config(
        dir.path(),
        &cluster.bootstrap_servers(),
        &topic,
        &script,
        fps,
    );
    let out = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .env("RUST_LOG", "warn")
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let read = bursts * FIXTURE_FRAMES;
    let captured = frames_field(&stderr, "captured");
    let delivered = frames_field(&stderr, "delivered");
    let paced = number_after(&stderr, "discarded fps_limit: ");
    eprintln!("read {read}, kept {captured}, delivered {delivered}, fps_limit {paced}");
    // Nothing lost: the surplus is discarded on purpose, not dropped.
    assert_eq!(frames_field(&stderr, "dropped"), 0, "{stderr}");
    assert!(!stderr.contains("dropped fps_limit"), "{stderr}");
    assert_eq!(
        number_after(&stderr, "discarded on purpose (not lost): "),
        paced
    );
    assert_eq!(
        captured + paced,
        read,
        "kept + discarded == read:\n{stderr}"
    );
    assert_eq!(delivered, captured, "{stderr}");
    assert!(paced > 0, "{stderr}");

    let recs = read_topic(
        &cluster.bootstrap_servers(),
        &topic,
        1,
        delivered as usize,
        Duration::from_secs(60),
    );
    assert_eq!(recs.len() as u64, delivered);
    let t = capture_times(&recs);
    assert!(t.len() >= 2, "{} records", t.len());
    // The pacing rule: from the first kept frame, at most elapsed × fps + 1.
    let span = t.last().unwrap().duration_since(t[0]).unwrap() + STAMP_SLACK;
    let allowed = (span.as_secs_f64() * fps as f64).floor() as u64 + 1;
    eprintln!("kept {} over {span:?}: at most {allowed} allowed", t.len());
    assert!(
        t.len() as u64 <= allowed,
        "{} kept over {span:?} at {fps} fps",
        t.len()
    );
}

#[test]
fn sighup_changes_the_fps_of_a_child_process_live() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("paced-hup");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (phase1, go) = (dir.path().join("phase1"), dir.path().join("go"));
    // Phase 1: 10 bursts (100 frames) at 1 fps; half a second later the child says it is
    // done (the file `phase1`), waits until the test says the reload is in (the file `go`),
    // then writes 5 bursts back to back (50 frames).
    let script = format!(
        "i=0; while [ $i -lt 10 ]; do cat '{f}'; sleep 0.05; i=$((i+1)); done; \
         sleep 0.5; : > '{p1}'; while [ ! -e '{go}' ]; do sleep 0.05; done; \
         i=0; while [ $i -lt 5 ]; do cat '{f}'; i=$((i+1)); done",
        f = fixture().display(),
        p1 = phase1.display(),
        go = go.display()
    );
    let cfg = config(dir.path(), &cluster.bootstrap_servers(), &topic, &script, 1);
    let child = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .env("RUST_LOG", "info")
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let wait_for = |needle: &str| loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("no {needle:?} in the agent's log: {e}"),
        }
    };
    // fps 1 -> 0 (keep every frame) once phase 1 is over, while the child waits for `go`.
    wait_for("running");
    while !phase1.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("fps = 1\n", "fps = 0\n"),
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("SIGHUP: applying live");
    let released = SystemTime::now();
    std::fs::write(&go, b"").unwrap();
    let status = child.0.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "{stderr}");

    let delivered = frames_field(&stderr, "delivered");
    let recs = read_topic(
        &cluster.bootstrap_servers(),
        &topic,
        1,
        delivered as usize,
        Duration::from_secs(60),
    );
    assert_eq!(recs.len() as u64, delivered);
    assert_eq!(frames_field(&stderr, "dropped"), 0, "{stderr}");
    let t = capture_times(&recs);
    let phase1: Vec<SystemTime> = t.iter().copied().filter(|&x| x < released).collect();
    let before = phase1.len() as u64;
    let after = t.iter().filter(|&&x| x > released).count() as u64;
    let paced = number_after(&stderr, "discarded fps_limit: ");
    eprintln!("kept {before} before the change, {after} after; fps_limit {paced}");
    assert_eq!(before + after + paced, 150, "{stderr}");
    // Phase 1 at 1 fps: at most span × 1 + 1 by the pacing rule.
    assert!(before >= 1, "{stderr}");
    let span = phase1.last().unwrap().duration_since(phase1[0]).unwrap() + STAMP_SLACK;
    assert!(
        before <= span.as_secs_f64().floor() as u64 + 1,
        "{before} kept over {span:?} at 1 fps:\n{stderr}"
    );
    // After the change every frame is kept, except perhaps the first of phase 2, which the
    // source loop may have taken before it saw the reload.
    assert!(after >= 49, "{after} of 50 kept at fps 0:\n{stderr}");
}
