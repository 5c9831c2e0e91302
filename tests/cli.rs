//! The `edgecam` binary as a user and systemd see it: exit codes, messages, signals.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{check_complete, read_topic, unique_topic, FIXTURE};
use rdkafka::mocking::MockCluster;

const BIN: &str = env!("CARGO_BIN_EXE_edgecam");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("device.toml");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

#[test]
fn version_names_the_binary() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("edgecam "));
}

/// The benchmarks are a program of their own: the shipped `edgecam` has no `bench` command,
/// and `edgecam-bench` answers with its two modes.
#[test]
fn benchmarks_are_not_in_the_shipped_binary() {
    for old in ["bench", "bench-spool"] {
        let out = Command::new(BIN).arg(old).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "edgecam {old}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_edgecam-bench"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--no-kafka") && help.contains("spool"),
        "{help}"
    );
}

#[test]
fn check_config_prints_the_resolved_example() {
    let out = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["check-config", "--config", "config/edgecam.example.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Resolved: defaults filled in, parseable as TOML again.
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        v["encode"]["max_message_bytes"].as_integer(),
        Some(1_000_000)
    );
    assert!(v["device"]["id"].is_str());
}

#[test]
fn check_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[device]\nid = \"a\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[encode]\nmax_message_bytes = 0\n", "encode.max_message_bytes"),
        ("[device]\nid = \"a\"\n[source]\nkind = \"synthetic\"\nfpz = 3\n[kafka]\nbootstrap_servers = \"h:1\"\n", "source.fpz"),
        ("[device]\nid = \"a\"\n[source]\nkind = \"mjpeg\"\npath = \"/nonexistent.mjpeg\"\n[kafka]\nbootstrap_servers = \"h:1\"\n", "source.path"),
        ("not toml at all [", "line"),
    ];
    for (text, needle) in cases {
        let p = write_config(&dir, text);
        let out = Command::new(BIN)
            .env("STATE_DIRECTORY", common::state_dir())
            .args(["check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["check-config", "--config", "/nonexistent/edgecam.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn run_refuses_a_bad_config_before_opening_anything() {
    // The broker address is unreachable; the bad key must be reported first, at once.
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        &dir,
        "[device]\nid = \"a b\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"10.255.255.1:9\"\n",
    );
    let t = Instant::now();
    let out = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("device.id"));
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// Reads `key N` from the agent's summary on stderr.
fn summary_count(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("frames:"))
        .expect("summary line");
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next().unwrap().parse().unwrap();
        }
    }
    panic!("{key} not in {line}");
}

#[test]
fn sigterm_mid_stream_flushes_everything_accepted_and_exits_0() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("sigterm");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        &dir,
        &format!(
            "[device]\nid = \"front-door\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nfps = 40\nloop = true\n\
             [encode]\nmax_message_bytes = 20000\n[pipeline]\noverflow = \"block\"\nshutdown_grace_ms = 10000\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
        ),
    );
    let child = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["run", "--config"])
        .arg(&p)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "exits within the grace period"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let accepted = summary_count(&stderr, "accepted");
    let delivered = summary_count(&stderr, "delivered");
    assert!(accepted > 10, "{stderr}");
    assert_eq!(delivered, accepted, "{stderr}");
    let recs = read_topic(
        &bootstrap,
        &topic,
        1,
        accepted as usize + 1,
        Duration::from_secs(5),
    );
    // Nothing accepted was lost or doubled.
    check_complete(&recs, accepted as usize);
}

/// `edgecam run` with a mock cluster, stderr piped: (exit success, stderr).
fn run_logged(extra_toml: &str, args: &[&str]) -> (bool, String) {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("logs");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        &dir,
        &format!(
            "[device]\nid = \"logs\"\n[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\n\
             fps = 10\nmax_frames = 25\n{extra_toml}\
             [kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{topic}\"\n",
            cluster.bootstrap_servers()
        ),
    );
    let out = Command::new(BIN)
        .env("STATE_DIRECTORY", dir.path())
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logs_are_json_lines_or_plain_text_and_progress_lines_come_outside_systemd() {
    // JSON: every stderr line is one object, the exit summary included.
    let (ok, err) = run_logged("", &["--log-format", "json"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{err}");
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let summary = lines
        .iter()
        .find_map(|l| l["fields"]["summary"].as_str())
        .expect("the summary as a JSON event");
    assert!(summary.contains("delivered 25"), "{summary}");

    // Text to a pipe: no colour codes. `[log]` in the file sets the format too.
    let (ok, err) = run_logged(
        "[log]\nformat = \"text\"\nprogress_interval_secs = 1\n",
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape in piped logs: {err:?}"
    );
    assert!(err.contains(" INFO "), "{err}");
    // A 2.5 s run with a 1 s progress interval: at least one progress line.
    assert!(
        err.lines()
            .any(|l| l.contains("frames/s, ") && l.contains(" in flight")),
        "no progress line: {err}"
    );

    // --log-level beats the file's level: only warnings and errors.
    let (ok, err) = run_logged("[log]\nlevel = \"debug\"\n", &["--log-level", "warn"]);
    assert!(ok, "{err}");
    assert!(!err.contains(" INFO ") && !err.contains(" DEBUG "), "{err}");
    // The summary is not a log line: it is still printed.
    assert!(err.contains("delivered 25"), "{err}");

    // A bad level is a usage error naming the flag.
    let out = Command::new(BIN)
        .args(["--log-level", "=bad=", "check-config", "--config", "x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level"));
}

/// A broker outage shows as one line when delivery resumes, not one per record: Kafka is
/// down for the first seconds (each record's delivery times out after 1 s and is sent
/// again), then back.
#[test]
fn a_broker_outage_ends_with_one_delivers_again_line() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("again");
    cluster.create_topic(&topic, 1, 1).unwrap();
    // The outage: every answer takes 4 s, so records time out (message_timeout_ms = 1000)
    // until it ends. Not broker_down/broker_up: the mock broker closes its listener, and
    // another test's connection may take the port before it listens again.
    cluster
        .broker_round_trip_time(1, Duration::from_secs(4))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        &dir,
        &format!(
            "[device]\nid = \"again\"\n[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\n\
             fps = 10\nmax_frames = 60\n[log]\nprogress_interval_secs = 0\n\
             [kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{topic}\"\nmessage_timeout_ms = 1000\n",
            cluster.bootstrap_servers()
        ),
    );
    let child = Command::new(BIN)
        .env("STATE_DIRECTORY", dir.path())
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("Kafka delivers again").count(),
        1,
        "one line when delivery resumes: {err}"
    );
    assert!(err.contains("delivered 60 "), "{err}");
    let recs = read_topic(
        &cluster.bootstrap_servers(),
        &topic,
        1,
        60,
        Duration::from_secs(30),
    );
    assert!(recs.len() >= 60, "{} records", recs.len());
}
