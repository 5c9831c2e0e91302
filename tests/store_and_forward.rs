//! Store and forward, end to end against librdkafka's mock cluster: a broker outage while a
//! live source keeps capturing, `kill -9` at random moments with `spool.mode = "always"`,
//! and a file replay. Every check is on what a consumer reads back, by `edgecam.frame_id`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{unique_topic, FIXTURE};
use edgecam::metrics::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// One frame as a consumer read it.
#[derive(Debug, Clone)]
struct Seen {
    frame_id: String,
    seq: u64,
    captured_at: SystemTime,
    replayed: bool,
    read_at: SystemTime,
}

/// Reads `topic` (partition 0) from the beginning on a thread of its own until `stop` is
/// set, then for `linger` more. Reading while producing keeps up with the mock cluster,
/// which keeps only the newest 5 MB of a partition.
fn reader(
    bootstrap: &str,
    topic: &str,
    stop: Arc<AtomicBool>,
    linger: Duration,
) -> std::thread::JoinHandle<Vec<Seen>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "edgecam-tests-sf")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "10485760")
        // Back on the broker within half a second of its return, like the producer.
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut stopped_at = None;
        loop {
            if stopped_at.is_none() && stop.load(Relaxed) {
                stopped_at = Some(std::time::Instant::now());
            }
            if stopped_at.is_some_and(|t| t.elapsed() > linger) {
                break;
            }
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let r = common::Rec::of(&m);
            out.push(Seen {
                frame_id: r.h("edgecam.frame_id").to_string(),
                seq: r.h("edgecam.seq").parse().unwrap(),
                captured_at: humantime::parse_rfc3339(r.h("edgecam.captured_at")).unwrap(),
                replayed: r.headers.get("edgecam.replayed").is_some_and(|v| v == "1"),
                read_at: SystemTime::now(),
            });
        }
        out
    })
}

/// `edgecam.seq` never goes backwards: frames in capture order have increasing numbers
/// (copies of one frame share both).
fn assert_seq_increases(seen: &[Seen]) {
    let mut by_id: BTreeMap<&str, &Seen> = BTreeMap::new();
    for s in seen {
        let first = by_id.entry(&s.frame_id).or_insert(s);
        assert_eq!(
            (first.seq, first.captured_at),
            (s.seq, s.captured_at),
            "a copy differs"
        );
    }
    let mut frames: Vec<&Seen> = by_id.into_values().collect();
    frames.sort_by_key(|s| s.captured_at);
    for w in frames.windows(2) {
        assert!(
            w[0].seq < w[1].seq,
            "seq went backwards: {} then {}",
            w[0].seq,
            w[1].seq
        );
    }
}

/// A live source (10 fps, `drop_oldest`, like a camera) runs through a 60 s outage of the
/// only broker: every captured frame reaches Kafka; live frames come back within 2 s of the
/// broker's return, ahead of the backlog, which drains after them oldest first.
#[tokio::test(flavor = "multi_thread")]
async fn a_60_s_outage_loses_no_frame_and_live_frames_resume_first() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("outage");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let frames = 800u64;
    let toml = format!(
        "[device]\nid = \"yard\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nfps = 10\n\
         loop = true\nmax_frames = {frames}\n[encode]\nmax_message_bytes = 5000\n\
         [pipeline]\noverflow = \"drop_oldest\"\nqueue_frames = 64\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
    );
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let read = reader(&bootstrap, &topic, stop.clone(), Duration::from_secs(3));
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run(
        cfg,
        CancellationToken::new(),
        metrics.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let spooled_in_outage = metrics.spooled.load(Relaxed);
    let up = SystemTime::now();
    cluster.broker_up(1).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ends once the backlog is delivered")
        .unwrap()
        .unwrap();
    stop.store(true, Relaxed);
    let seen = read.join().unwrap();

    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
    assert_eq!(report.sink.undelivered, 0);
    assert!(spooled_in_outage > 500, "spooled {spooled_in_outage}");
    let ids: HashSet<&str> = seen.iter().map(|s| s.frame_id.as_str()).collect();
    let seqs: HashSet<u64> = seen.iter().map(|s| s.seq).collect();
    assert_eq!(
        seqs,
        (0..frames).collect::<HashSet<_>>(),
        "every captured frame"
    );
    assert_eq!(ids.len() as u64, frames);
    assert_seq_increases(&seen);
    // Live first: the first frame captured after the broker came back was read within 2 s.
    let first_live = seen
        .iter()
        .filter(|s| !s.replayed && s.captured_at >= up)
        .map(|s| s.read_at)
        .min()
        .expect("live frames after the outage");
    let lag = first_live.duration_since(up).unwrap_or_default();
    eprintln!(
        "outage: {spooled_in_outage} spooled, first live frame read {lag:?} after the broker's return"
    );
    assert!(lag <= Duration::from_secs(2), "live resumed after {lag:?}");
    // The backlog came after, oldest first.
    let replayed: Vec<&Seen> = seen.iter().filter(|s| s.replayed).collect();
    assert!(replayed.len() > 400, "{} replayed", replayed.len());
    assert!(replayed.windows(2).all(|w| w[0].seq < w[1].seq));
    let last_replayed = replayed.iter().map(|s| s.read_at).max().unwrap();
    assert!(last_replayed > first_live);
    assert_eq!(
        metrics.spool_records.load(Relaxed),
        0,
        "the spool ends empty"
    );
}

/// The frames in a spool directory, read as the next start would (its lock is free once
/// the process is gone).
fn spool_contents(dir: &std::path::Path) -> Vec<String> {
    use edgecam::spool::{DirStorage, Spool, SpoolOptions};
    if !dir.exists() {
        return Vec::new();
    }
    let (mut spool, _) = Spool::open(
        DirStorage::open(dir).unwrap(),
        SpoolOptions::new(1 << 30, None),
    )
    .unwrap();
    let mut ids = Vec::new();
    while let Some((_, out)) = spool.next_backlog(SystemTime::now()).unwrap() {
        ids.push(
            out.record
                .header(edgecam::record::header::FRAME_ID)
                .unwrap()
                .to_string(),
        );
    }
    ids
}

/// 100 `kill -9` at random moments with `spool.mode = "always"`: every frame that was in
/// the spool when the agent died is delivered by a later run; copies are only repeated
/// `frame_id`s; `edgecam.seq` never goes backwards across the restarts.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_a_hundred_times_loses_no_spooled_frame() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("kill9");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let state = common::state_dir();
    let spool_dir = std::path::Path::new(&state).join("porch");
    let write = |max_frames: u64| {
        let p = dir.path().join(format!("porch-{max_frames}.toml"));
        std::fs::write(
            &p,
            format!(
                "[device]\nid = \"porch\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\n\
                 fps = 20\nloop = true\nmax_frames = {max_frames}\n[encode]\n\
                 max_message_bytes = 8000\n[pipeline]\noverflow = \"drop_oldest\"\n\
                 [spool]\nmode = \"always\"\n\
                 [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
            ),
        )
        .unwrap();
        p
    };
    let endless = write(0);
    let stop = Arc::new(AtomicBool::new(false));
    let read = reader(&bootstrap, &topic, stop.clone(), Duration::from_secs(3));
    let spooled_at_kill: Arc<Mutex<HashSet<String>>> = Default::default();
    // A fixed-seed LCG: the moments vary from kill to kill, and a failure can be replayed.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..100 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let after = Duration::from_millis(150 + (rng >> 33) % 750);
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .env("STATE_DIRECTORY", &state)
            .env("RUST_LOG", "error")
            .args(["run", "--config"])
            .arg(&endless)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        spooled_at_kill
            .lock()
            .unwrap()
            .extend(spool_contents(&spool_dir));
    }
    // A last run that ends by itself after one frame, once the spool is delivered.
    let last = Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .env("STATE_DIRECTORY", &state)
        .env("RUST_LOG", "warn")
        .args(["run", "--config"])
        .arg(write(1))
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    stop.store(true, Relaxed);
    let seen = read.join().unwrap();
    let delivered: HashSet<&str> = seen.iter().map(|s| s.frame_id.as_str()).collect();
    let spooled = spooled_at_kill.lock().unwrap();
    assert!(
        spooled.len() > 100,
        "the kills found frames in the spool: {}",
        spooled.len()
    );
    let lost: Vec<&String> = spooled
        .iter()
        .filter(|id| !delivered.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} spooled frames never arrived",
        lost.len(),
        spooled.len()
    );
    assert_seq_increases(&seen);
    eprintln!(
        "kill -9 x100: {} frames found in the spool after the kills, {} distinct frames \
         delivered, {} records read",
        spooled.len(),
        delivered.len(),
        seen.len()
    );
    assert!(
        spool_contents(&spool_dir).is_empty(),
        "the spool ends empty"
    );
}

/// Replaying a file as fast as it reads (`fps = 0`, the default overflow and spool): all
/// 300 frames of the footage arrive, none dropped, and the source waits for the sink
/// instead of filling the spool.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_replay_delivers_all_300_frames_without_spooling() {
    let footage = common::testdata("vtest-768x576-10fps.mjpeg");
    let footage = footage.display();
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("replay300");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let toml = format!(
        "[device]\nid = \"replay\"\n[source]\nkind = \"mjpeg\"\npath = \"{footage}\"\nfps = 0\n\
         max_frames = 300\n[encode]\nmax_message_bytes = 30000\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
    );
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let read = reader(&bootstrap, &topic, stop.clone(), Duration::from_secs(3));
    let metrics = Arc::new(Metrics::default());
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone()),
    )
    .await
    .unwrap()
    .unwrap();
    stop.store(true, Relaxed);
    let seen = read.join().unwrap();
    assert_eq!(metrics.dropped_total(), 0, "{:?}", metrics.dropped());
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.spooled.load(Relaxed), 0);
    let seqs: HashSet<u64> = seen.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..300).collect::<HashSet<_>>());
}

/// Waits (at most 30 s, else fails) until `f` holds.
async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) at `dir`. Needs root, as CI
    /// has; anything else fails the test.
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed (the test needs root)");
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The disk fills up during an outage (a 256 KB tmpfs): a clear error, the agent keeps
/// running with frames in memory, and spooling resumes once there is space again; when the
/// broker returns, frames are delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_keeps_the_agent_running_and_spooling_resumes_with_space() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("enospc");
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.broker_down(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("spool"), "256k");
    let toml = format!(
        "[device]\nid = \"shed\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nfps = 20\n\
         loop = true\n[encode]\nmax_message_bytes = 20000\n[pipeline]\noverflow = \"drop_oldest\"\n\
         queue_frames = 64\nshutdown_grace_ms = 1000\n[spool]\npath = {}\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n",
        toml::Value::String(fs.0.display().to_string())
    );
    let cfg = edgecam::config::load_str(&toml, std::iter::empty()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let run = tokio::spawn(edgecam::pipeline::run(cfg, stop.clone(), metrics.clone()));
    wait_for("a failed spool write", || {
        metrics.spool_errors.load(Relaxed) > 0
    })
    .await;
    assert!(!run.is_finished(), "the agent keeps running");
    let error = metrics.last_error().unwrap_or_default();
    assert!(error.contains("No space left"), "{error}");
    let before = metrics.spooled.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    fs.resize("64m");
    wait_for("spooling again", || {
        metrics.spooled.load(Relaxed) > before + 40
    })
    .await;
    cluster.broker_up(1).unwrap();
    let delivered_before = metrics.delivered.load(Relaxed);
    wait_for("deliveries after the outage", || {
        metrics.delivered.load(Relaxed) > delivered_before + 40
    })
    .await;
    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    // What memory could not hold while the disk was full is counted, nothing else lost
    // (a live source may also have dropped frames at the queue while the encoder lagged).
    use edgecam::metrics::DropReason;
    let dropped = metrics.dropped();
    assert!(
        dropped.keys().all(|r| matches!(
            r,
            DropReason::SpoolWriteFailed | DropReason::QueueFullOldest
        )),
        "{dropped:?}"
    );
}

/// A long outage fills a small spool (1 MiB): the oldest frames go first, each one counted
/// as `spool_full`; the files never pass `max_bytes` plus one segment; after the broker's
/// return every frame is either read back or counted, and every lost frame is older than
/// every replayed one.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_drops_the_oldest_counts_each_and_stays_bounded() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("spoolfull");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let state = common::state_dir();
    let frames = 200u64;
    let max_bytes = 1u64 << 20;
    let toml = format!(
        "[device]\nid = \"gate\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nfps = 15\n\
         loop = true\nmax_frames = {frames}\n[encode]\nmax_message_bytes = 20000\n\
         [pipeline]\noverflow = \"drop_oldest\"\nqueue_frames = 64\n[spool]\nmax_bytes = {max_bytes}\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n"
    );
    let env = [("STATE_DIRECTORY".to_string(), state.clone())];
    let cfg = edgecam::config::load_str(&toml, env).unwrap();
    cluster.broker_down(1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let read = reader(&bootstrap, &topic, stop.clone(), Duration::from_secs(3));
    let metrics = Arc::new(Metrics::default());
    let run = tokio::spawn(edgecam::pipeline::run(
        cfg,
        CancellationToken::new(),
        metrics.clone(),
    ));
    let dir = std::path::Path::new(&state).join("gate");
    let bound = max_bytes + (128 << 10); // one segment: max_bytes / 8
    let mut largest = 0u64;
    while metrics.accepted.load(Relaxed) < frames {
        let size: u64 = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        largest = largest.max(size);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        largest <= bound,
        "spool grew to {largest} bytes, bound {bound}"
    );
    assert!(largest > max_bytes / 2, "the spool was used: {largest}");
    cluster.broker_up(1).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop.store(true, Relaxed);
    let seen = read.join().unwrap();
    assert_eq!(report.sink.undelivered, 0);
    let dropped = metrics.dropped();
    let full = dropped
        .get(&edgecam::metrics::DropReason::SpoolFull)
        .copied()
        .unwrap_or(0);
    assert!(full > 0, "{dropped:?}");
    assert_eq!(metrics.dropped_total(), full, "{dropped:?}");
    let got: HashSet<u64> = seen.iter().map(|s| s.seq).collect();
    let missing: Vec<u64> = (0..frames).filter(|s| !got.contains(s)).collect();
    assert_eq!(missing.len() as u64, full, "each lost frame counted once");
    let first_replayed = seen
        .iter()
        .filter(|s| s.replayed)
        .map(|s| s.seq)
        .min()
        .unwrap();
    assert!(
        missing.iter().all(|m| *m < first_replayed),
        "the oldest went first: lost {missing:?}, replay from {first_replayed}"
    );
}
