//! The control plane against a real Mosquitto: the last will says `offline` when the agent
//! is killed; commands change behaviour and the retained state; bad commands are rejected.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::mosquitto::{eventually, subscriber, Inbox, Mosquitto};
use edgecam::metrics::Metrics;
use edgecam::pipeline::Live;
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;
use tokio_util::sync::CancellationToken;

fn last_state(inbox: &Inbox) -> Option<serde_json::Value> {
    let m = inbox.lock().unwrap();
    serde_json::from_slice(&m.last()?.payload).ok()
}

fn frame_count(inbox: &Inbox) -> usize {
    inbox.lock().unwrap().len()
}

fn quality(p: &Publish) -> String {
    p.properties
        .as_ref()
        .unwrap()
        .user_properties
        .iter()
        .find(|(k, _)| k == "edgecam.quality")
        .unwrap()
        .1
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_change_behaviour_and_state_bad_ones_are_rejected() {
    let broker = Mosquitto::start();
    let port = broker.port();
    let (_f, frames) = subscriber(port, "t-frames", "edgecam/yard/frame").await;
    let (_s, state) = subscriber(port, "t-state", "edgecam/yard/state").await;
    let (cmd, _) = subscriber(port, "t-cmd", "unused/topic").await;
    let cfg = edgecam::config::load_str(
        &format!(
            "[device]\nid = \"yard\"\n[source]\nkind = \"synthetic\"\nwidth = 96\nheight = 64\nfps = 20\n\
             [encode]\nquality_max = 90\nquality_min = 30\n[sink]\nkind = \"mqtt\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n"
        ),
        common::state_env(),
    )
    .unwrap();
    let live = Arc::new(Live::new(cfg.clone()));
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run_live(
        cfg,
        stop.clone(),
        metrics.clone(),
        live.clone(),
    ));
    eventually("first frames", || frame_count(&frames) >= 5).await;
    assert!(frames.lock().unwrap().iter().all(|p| quality(p) == "90"));

    let set = |name: &'static str, value: &'static str| {
        let cmd = cmd.clone();
        async move {
            cmd.publish(
                format!("edgecam/yard/set/{name}"),
                QoS::AtLeastOnce,
                false,
                value,
            )
            .await
            .unwrap()
        }
    };

    // quality_max: later frames use the new ceiling, the state says so.
    set("quality_max", "50").await;
    eventually("state quality_max 50", || {
        last_state(&state).is_some_and(|v| v["quality_max"] == 50)
    })
    .await;
    let mark = frame_count(&frames);
    eventually("frames after quality change", || {
        frame_count(&frames) >= mark + 5
    })
    .await;
    assert!(frames.lock().unwrap()[mark + 1..]
        .iter()
        .all(|p| quality(p).parse::<u8>().unwrap() <= 50));

    // paused: nothing published; snapshot: exactly one frame; resume.
    set("paused", "true").await;
    eventually("state paused", || {
        last_state(&state).is_some_and(|v| v["paused"] == true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = frame_count(&frames);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(frame_count(&frames), paused_at, "no frames while paused");
    set("snapshot", "").await;
    eventually("snapshot frame", || frame_count(&frames) == paused_at + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(frame_count(&frames), paused_at + 1, "exactly one snapshot");
    set("paused", "false").await;
    eventually("resumed", || frame_count(&frames) >= paused_at + 6).await;

    // Bad commands: rejected with a reason, nothing changes.
    set("fps", "fast").await;
    eventually("rejection", || {
        last_state(&state)
            .is_some_and(|v| v["last_command"]["name"] == "fps" && v["last_command"]["ok"] == false)
    })
    .await;
    let v = last_state(&state).unwrap();
    assert!(v["last_command"]["error"]
        .as_str()
        .unwrap()
        .contains("number"));
    assert_eq!(v["fps"], 20.0);
    set("quality_max", "10").await; // below quality_min
    eventually("second rejection", || {
        last_state(&state)
            .is_some_and(|v| v["last_command"]["value"] == "10" && v["last_command"]["ok"] == false)
    })
    .await;
    assert_eq!(live.config.borrow().encode.quality_max, 50);

    // fps applies live.
    set("fps", "5").await;
    eventually("state fps 5", || {
        last_state(&state).is_some_and(|v| v["fps"] == 5.0)
    })
    .await;
    assert_eq!(live.config.borrow().source.fps, 5.0);

    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert!(metrics.delivered.load(Relaxed) > 0);
    // A clean stop brings the retained state up to date before saying offline: a
    // subscriber arriving now reads the final counts.
    let (_l, late) = subscriber(port, "t-late-state", "edgecam/yard/state").await;
    eventually("retained final state", || last_state(&late).is_some()).await;
    let v = last_state(&late).unwrap();
    assert_eq!(v["frames_published"], metrics.delivered.load(Relaxed));
    assert_eq!(v["frames_captured"], metrics.captured.load(Relaxed));
}

/// `set/fps` for a child-process source (it used to answer "ok" and change nothing): at
/// `fps = 0` every frame the child writes is kept; after `set/fps 2` its surplus frames are
/// discarded on purpose (`fps_limit`), and nothing counts as lost.
#[tokio::test(flavor = "multi_thread")]
async fn set_fps_thins_a_child_process_live() {
    let broker = Mosquitto::start();
    let port = broker.port();
    let (_f, frames) = subscriber(port, "t-frames", "edgecam/pipe/frame").await;
    let (_s, state) = subscriber(port, "t-state", "edgecam/pipe/state").await;
    let (cmd, _) = subscriber(port, "t-cmd", "unused/topic").await;
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vtest-10.mjpeg");
    // About 100 frames/s until the agent stops (and kills it).
    let script = format!("while :; do cat '{fixture}'; sleep 0.1; done");
    let cfg = edgecam::config::load_str(
        &format!(
            "[device]\nid = \"pipe\"\n[source]\nkind = \"mjpeg\"\ncommand = [\"sh\", \"-c\", {}]\n\
             fps = 0\n[pipeline]\noverflow = \"block\"\n[sink]\nkind = \"mqtt\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n",
            toml::Value::String(script)
        ),
        common::state_env(),
    )
    .unwrap();
    let live = Arc::new(Live::new(cfg.clone()));
    let stop = CancellationToken::new();
    // A failed assertion must stop the agent too: its source thread reads the endless child
    // until then, and the runtime waits for it.
    let _stop_on_panic = stop.clone().drop_guard();
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run_live(
        cfg,
        stop.clone(),
        metrics.clone(),
        live.clone(),
    ));
    let paced = |m: &Metrics| {
        m.dropped()
            .get(&edgecam::metrics::DropReason::FpsLimit)
            .copied()
            .unwrap_or(0)
    };
    eventually("first frames", || frame_count(&frames) >= 20).await;
    assert_eq!(paced(&metrics), 0, "fps = 0 keeps every frame");

    cmd.publish("edgecam/pipe/set/fps", QoS::AtLeastOnce, false, "2")
        .await
        .unwrap();
    eventually("state fps 2", || {
        last_state(&state).is_some_and(|v| v["fps"] == 2.0 && v["last_command"]["ok"] == true)
    })
    .await;
    // Surplus frames are now discarded: at ~100 frames/s against 2 kept per second.
    eventually("frames discarded by fps_limit", || paced(&metrics) >= 50).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (kept, discarded) = (metrics.captured.load(Relaxed), paced(&metrics));
    eprintln!("kept {kept}, discarded fps_limit {discarded}");
    assert!(discarded >= 50);
    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
    assert_eq!(metrics.discarded_on_purpose(), discarded);
}

#[tokio::test(flavor = "multi_thread")]
async fn last_will_says_offline_when_the_agent_is_killed() {
    let broker = Mosquitto::start();
    let port = broker.port();
    let (_s, status) = subscriber(port, "t-lwt", "edgecam/door/status").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("door.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"door\"\n[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\nfps = 5\n\
             [sink]\nkind = \"mqtt\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_secs = 5\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .env("STATE_DIRECTORY", common::state_dir())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let payloads = |i: &Inbox| {
        i.lock()
            .unwrap()
            .iter()
            .map(|p| p.payload.to_vec())
            .collect::<Vec<_>>()
    };
    eventually("online", || payloads(&status).contains(&b"online".to_vec())).await;
    child.kill().unwrap(); // SIGKILL: no clean shutdown, only the will
    child.wait().unwrap();
    eventually("offline from the last will", || {
        payloads(&status).last() == Some(&b"offline".to_vec())
    })
    .await;
    // Retained: a subscriber arriving now is told at once.
    let (_n, late) = subscriber(port, "t-late", "edgecam/door/status").await;
    eventually("retained offline", || {
        payloads(&late) == vec![b"offline".to_vec()]
    })
    .await;
}

/// A Kafka agent with `[mqtt]` gets its control plane on a connection of its own that
/// carries no frames: status `online`, commands applied to the running agent and shown in
/// the retained state, and at a clean stop the final state, then a retained `offline`.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_agent_has_the_control_plane_on_a_connection_of_its_own() {
    let broker = Mosquitto::start();
    let port = broker.port();
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let topic = common::unique_topic("control-beside-kafka");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let (_s, status) = subscriber(port, "t-k-status", "edgecam/gate-k/status").await;
    let (_t, state) = subscriber(port, "t-k-state", "edgecam/gate-k/state").await;
    let (_f, frames) = subscriber(port, "t-k-frames", "edgecam/gate-k/frame").await;
    let (cmd, _) = subscriber(port, "t-k-cmd", "unused/topic").await;
    let cfg = edgecam::config::load_str(
        &format!(
            "[device]\nid = \"gate-k\"\n[source]\nkind = \"synthetic\"\nwidth = 96\nheight = 64\nfps = 20\n\
             [encode]\nquality_max = 90\nquality_min = 30\n\
             [kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{topic}\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n",
            cluster.bootstrap_servers()
        ),
        common::state_env(),
    )
    .unwrap();
    let live = Arc::new(Live::new(cfg.clone()));
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run_live(
        cfg,
        stop.clone(),
        metrics.clone(),
        live.clone(),
    ));
    let payloads = |i: &Inbox| {
        i.lock()
            .unwrap()
            .iter()
            .map(|p| p.payload.to_vec())
            .collect::<Vec<_>>()
    };
    eventually("online", || payloads(&status).contains(&b"online".to_vec())).await;
    eventually("frames delivered to Kafka", || {
        metrics.delivered.load(Relaxed) >= 5
    })
    .await;
    cmd.publish(
        "edgecam/gate-k/set/quality_max",
        QoS::AtLeastOnce,
        false,
        "50",
    )
    .await
    .unwrap();
    eventually("state quality_max 50", || {
        last_state(&state).is_some_and(|v| v["quality_max"] == 50)
    })
    .await;
    assert_eq!(live.config.borrow().encode.quality_max, 50);

    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    let delivered = metrics.delivered.load(Relaxed);
    assert_eq!(report.sink.delivered.get(&topic).copied(), Some(delivered));
    eventually("offline after a clean stop", || {
        payloads(&status).last() == Some(&b"offline".to_vec())
    })
    .await;
    let v = last_state(&state).unwrap();
    assert_eq!(v["frames_published"], delivered, "the final state");
    assert_eq!(frame_count(&frames), 0, "frames go to Kafka, never to MQTT");
}
