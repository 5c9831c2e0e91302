//! The agent as systemd runs it: the sd_notify protocol (READY, WATCHDOG only while frames
//! flow, STATUS, STOPPING) and SIGHUP reloads.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{read_topic, unique_topic, FIXTURE};
use rdkafka::mocking::MockCluster;

const BIN: &str = env!("CARGO_BIN_EXE_edgecam");

fn kill(pid: u32, signal: &str) {
    assert!(Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Starts `edgecam run --config cfg` under a fake systemd: `NOTIFY_SOCKET` at `sock`, a
/// 400 ms watchdog, a spool of its own.
fn run_notified(cfg: &std::path::Path, sock: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["run", "--config"])
        .arg(cfg)
        .env("NOTIFY_SOCKET", sock)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn notify_ready_watchdog_only_while_frames_flow_then_stopping() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("notify");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Frames for about 2 s (10 bursts of 10 frames), then a stalled camera for 3 s, then EOF.
    let script =
        format!("for i in 1 2 3 4 5 6 7 8 9 10; do cat '{FIXTURE}'; sleep 0.2; done; sleep 3");
    let cfg = dir.path().join("cam.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"cam\"\n[source]\nkind = \"mjpeg\"\ncommand = [\"sh\", \"-c\", {}]\n\
             [encode]\nmax_message_bytes = 20000\n[kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{topic}\"\n",
            toml::Value::String(script),
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = run_notified(&cfg, &sock_path);
    let mut msgs: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = m.contains("STOPPING=1");
            msgs.push((started.elapsed(), m));
            if stop {
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let at = |needle: &str| {
        msgs.iter()
            .filter(|(_, m)| m.contains(needle))
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
    };
    let ready = at("READY=1");
    let watchdog = at("WATCHDOG=1");
    let stopping = at("STOPPING=1");
    assert_eq!(ready.len(), 1, "{msgs:?}");
    assert_eq!(stopping.len(), 1, "{msgs:?}");
    assert!(watchdog.len() >= 3, "pinged while frames flowed: {msgs:?}");
    assert!(watchdog.iter().all(|t| *t > ready[0] && *t < stopping[0]));
    // The stall: a gap of at least 2 s without WATCHDOG while STATUS kept coming.
    let last_ping = *watchdog.last().unwrap();
    assert!(
        stopping[0] - last_ping >= Duration::from_secs(2),
        "{msgs:?}"
    );
    let statuses_in_stall = msgs
        .iter()
        .filter(|(t, m)| {
            *t > last_ping && *t < stopping[0] && m.contains("STATUS=") && !m.contains("WATCHDOG")
        })
        .count();
    assert!(statuses_in_stall >= 3, "{msgs:?}");
    assert!(msgs.iter().any(|(_, m)| m.contains("frames/s")));
}

#[test]
fn sighup_changes_fps_and_quality_live_and_rejects_a_bad_file() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("reload");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cam.toml");
    let write = |fps: u32, qmax: u32| {
        std::fs::write(
            &cfg,
            format!(
                "[device]\nid = \"cam\"\n[source]\nkind = \"synthetic\"\nwidth = 96\nheight = 64\nfps = {fps}\n\
                 [encode]\nquality_max = {qmax}\nquality_min = 40\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
            ),
        )
        .unwrap()
    };
    write(5, 90);
    let child = Command::new(BIN)
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(2000));
    write(40, 50);
    let reloaded_at = SystemTime::now();
    kill(pid, "-HUP");
    std::thread::sleep(Duration::from_millis(2000));
    write(40, 500); // invalid: quality_max out of range
    let rejected_at = SystemTime::now();
    kill(pid, "-HUP");
    std::thread::sleep(Duration::from_millis(1000));
    kill(pid, "-TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "still running after the bad file: {stderr}"
    );
    assert!(
        stderr.contains("encode.quality_max"),
        "the rejection names the key: {stderr}"
    );

    let recs = read_topic(&bootstrap, &topic, 1, 1000, Duration::from_secs(3));
    let frames: Vec<(SystemTime, u32)> = recs
        .iter()
        .map(|r| {
            (
                humantime::parse_rfc3339(r.h("edgecam.captured_at")).unwrap(),
                r.h("edgecam.quality").parse().unwrap(),
            )
        })
        .collect();
    let before: Vec<_> = frames.iter().filter(|(t, _)| *t < reloaded_at).collect();
    let after: Vec<_> = frames
        .iter()
        .filter(|(t, _)| *t > reloaded_at + Duration::from_millis(300))
        .collect();
    assert!(before.iter().all(|(_, q)| *q == 90), "{before:?}");
    assert!(
        !after.is_empty() && after.iter().all(|(_, q)| *q == 50),
        "{after:?}"
    );
    // 5 fps for ~2 s before, 40 fps for ~3 s after (kept after the rejected file).
    assert!(before.len() <= 15, "{} frames before", before.len());
    assert!(after.len() >= 60, "{} frames after", after.len());
    assert!(
        frames
            .iter()
            .any(|(t, _)| *t > rejected_at + Duration::from_millis(300)),
        "frames kept flowing"
    );
}

/// Runs the agent for 5 s against a broker that is down from the start, at 20 fps, and
/// returns the times (after READY) of its WATCHDOG pings.
fn watchdog_pings_with_the_broker_down(spool_mode: &str) -> Vec<Duration> {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("wedged");
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.broker_down(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let cfg = dir.path().join("cam.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"cam\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nloop = true\n\
             fps = 20\n[encode]\nmax_message_bytes = 20000\n[pipeline]\noverflow = \"drop_oldest\"\n\
             shutdown_grace_ms = 500\n[spool]\nmode = \"{spool_mode}\"\n\
             [kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{topic}\"\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let mut child = run_notified(&cfg, &sock_path);
    let mut ready_at = None;
    let mut pings = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(6) {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains("READY=1") {
                ready_at = Some(Instant::now());
            }
            if m.contains("WATCHDOG=1") {
                pings.push(ready_at.expect("READY first").elapsed());
            }
        }
    }
    kill(child.id(), "-TERM");
    child.wait().unwrap();
    assert!(ready_at.is_some());
    pings
}

/// The watchdog follows end-to-end progress: with the broker down and no spool, frames are
/// captured but go nowhere, so the pings stop (systemd would restart the wedged agent);
/// with the spool taking the frames, the pings go on.
#[test]
fn watchdog_pings_only_while_frames_are_delivered_or_spooled() {
    let without = watchdog_pings_with_the_broker_down("off");
    let late: Vec<&Duration> = without
        .iter()
        .filter(|t| **t > Duration::from_secs(1))
        .collect();
    assert!(
        late.is_empty(),
        "pinged with nowhere to put frames: {without:?}"
    );
    let with = watchdog_pings_with_the_broker_down("outage");
    let late = with.iter().filter(|t| **t > Duration::from_secs(3)).count();
    assert!(late >= 3, "no pings while spooling: {with:?}");
}
