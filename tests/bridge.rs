//! `edgecam bridge` end to end: simulated sensors publish to a real Mosquitto, the bridge
//! drains it into librdkafka's mock cluster (in this process), records are read back and
//! checked one by one. Everything on loopback, every wait bounded.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::mosquitto::{tail, wait_until, Mosquitto};
use common::{read_topic, unique_topic, Rec};
use edgecam::bridge::{BridgeMetrics, BridgeReport, RejectReason};
use rdkafka::mocking::MockCluster;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// Images and edgecam-format properties.
// ---------------------------------------------------------------------------------------

/// A small real JPEG, `w`×`h`, content varying with `seed`.
fn jpeg(w: u32, h: u32, seed: u32) -> Bytes {
    let px: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i * 7 + seed * 31) % 251) as u8)
        .collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode(&px, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out.into()
}

/// `jpeg` with a comment segment (COM) right after SOI: still a valid JPEG, unique per `text`.
fn with_comment(jpeg: &[u8], text: &str) -> Bytes {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((text.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&jpeg[2..]);
    out.into()
}

/// A small real PNG, `w`×`h` grayscale.
fn png(w: u32, h: u32, seed: u32) -> Bytes {
    let px: Vec<u8> = (0..w * h).map(|i| ((i + seed) % 251) as u8).collect();
    let img = edgecam::frame::RawImage::new(w, h, edgecam::frame::PixelFormat::Gray8, px).unwrap();
    edgecam::encode::codec::encode_png(&img).unwrap().into()
}

/// The headers edgecam's MQTT sink sends for a JPEG frame, in its order.
fn edgecam_headers(device: &str, seq: u64, jpeg: &[u8]) -> Vec<(String, String)> {
    let h = edgecam::jpeg::header(jpeg).unwrap();
    vec![
        ("edgecam.device".into(), device.into()),
        ("edgecam.seq".into(), seq.to_string()),
        ("edgecam.frame_id".into(), uuid::Uuid::now_v7().to_string()),
        (
            "edgecam.captured_at".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        ),
        ("content-type".into(), "image/jpeg".into()),
        ("edgecam.width".into(), h.width.to_string()),
        ("edgecam.height".into(), h.height.to_string()),
        ("edgecam.codec".into(), "jpeg".into()),
        ("edgecam.quality".into(), h.quality.unwrap().to_string()),
    ]
}

fn props(headers: &[(String, String)]) -> PublishProperties {
    edgecam::mqtt::headers_to_properties(
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        None,
    )
}

// ---------------------------------------------------------------------------------------
// Simulated sensors: one MQTT connection each, QoS 1, one publish at a time.
// ---------------------------------------------------------------------------------------

enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// What a sensor's event loop reports: a PUBLISH written with its packet id, a PUBACK.
enum Ev {
    Sent(u16),
    Acked(u16),
}

/// A sensor connection whose event loop runs in its own task and reports PUBLISH/PUBACK.
struct Sensor {
    client: Client,
    events: mpsc::UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const SENSOR_PACKET_LIMIT: u32 = 4 << 20;

impl Sensor {
    /// Connects an MQTT 5 client and waits for its CONNACK.
    async fn v5(port: u16, id: &str) -> Sensor {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(SENSOR_PACKET_LIMIT));
        let (client, mut el) = AsyncClient::new(o, 64);
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (up_tx, mut up) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = up_tx.send(());
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                        let _ = ev_tx.send(Ev::Sent(pkid));
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        use rumqttc::v5::mqttbytes::v5::PubAckReason;
                        assert!(
                            matches!(
                                a.reason,
                                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                            ),
                            "{a:?}"
                        );
                        let _ = ev_tx.send(Ev::Acked(a.pkid));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), up.recv())
            .await
            .expect("sensor connects");
        Sensor {
            client: Client::V5(client),
            events,
            task,
        }
    }

    /// Connects an MQTT 3.1.1 client (no properties: a foreign camera) and waits for its
    /// CONNACK.
    async fn v311(port: u16, id: &str) -> Sensor {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(SENSOR_PACKET_LIMIT as usize, SENSOR_PACKET_LIMIT as usize);
        let (client, mut el) = AsyncClient::new(o, 64);
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (up_tx, mut up) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = up_tx.send(());
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                        let _ = ev_tx.send(Ev::Sent(pkid));
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        let _ = ev_tx.send(Ev::Acked(a.pkid));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), up.recv())
            .await
            .expect("sensor connects");
        Sensor {
            client: Client::V311(client),
            events,
            task,
        }
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK of that very packet id: `true`
    /// when it came within 10 s.
    async fn publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        properties: Option<PublishProperties>,
    ) -> bool {
        match &self.client {
            Client::V5(c) => {
                let q = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                match properties {
                    Some(p) => c
                        .publish_bytes_with_properties(topic, q, false, payload, p)
                        .await
                        .unwrap(),
                    None => c.publish_bytes(topic, q, false, payload).await.unwrap(),
                }
            }
            Client::V311(c) => {
                assert!(properties.is_none(), "MQTT 3.1.1 has no properties");
                c.publish_bytes(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap()
            }
        }
        let events = &mut self.events;
        let acked = async {
            let mut pkid = None;
            while let Some(ev) = events.recv().await {
                match (ev, pkid) {
                    (Ev::Sent(p), None) => pkid = Some(p),
                    (Ev::Acked(a), Some(p)) if a == p => return true,
                    _ => {} // a late PUBACK of an earlier publish
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(10), acked)
            .await
            .unwrap_or(false)
    }

    /// Publishes without waiting for the PUBACK (pipelined; the client's in-flight window
    /// applies).
    async fn publish_nowait(&self, topic: &str, payload: Bytes, properties: PublishProperties) {
        let Client::V5(c) = &self.client else {
            panic!("v5 only")
        };
        c.publish_bytes_with_properties(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            payload,
            properties,
        )
        .await
        .unwrap();
    }

    async fn disconnect(self) {
        match &self.client {
            Client::V5(c) => {
                let _ = c.disconnect().await;
            }
            Client::V311(c) => {
                let _ = c.disconnect().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The bridge: configuration, in-process runs, child processes.
// ---------------------------------------------------------------------------------------

struct BridgeToml<'a> {
    id: &'a str,
    port: u16,
    bootstrap: &'a str,
    topic: &'a str,
    dead_letter_topic: Option<&'a str>,
    max_message_bytes: u32,
    max_in_flight: usize,
}

impl BridgeToml<'_> {
    fn render(&self) -> String {
        let dl = self
            .dead_letter_topic
            .map(|t| format!("dead_letter_topic = \"{t}\"\n"))
            .unwrap_or_default();
        format!(
            r#"
[bridge]
id = "{id}"
max_message_bytes = {max}
shutdown_grace_ms = 5000
{dl}
[[bridge.inputs]]
topic = "edgecam/{{device}}/frame"
format = "edgecam"

[[bridge.inputs]]
topic = "cameras/{{device}}/jpeg"
format = "raw"

[mqtt]
host = "127.0.0.1"
port = {port}
keep_alive_secs = 5
silence_timeout_secs = 15

[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
message_timeout_ms = 10000
max_in_flight = {in_flight}
"#,
            id = self.id,
            max = self.max_message_bytes,
            port = self.port,
            bootstrap = self.bootstrap,
            topic = self.topic,
            in_flight = self.max_in_flight,
        )
    }
}

struct InProcessBridge {
    stop: CancellationToken,
    metrics: Arc<BridgeMetrics>,
    task: JoinHandle<Result<BridgeReport, edgecam::bridge::BridgeError>>,
}

impl InProcessBridge {
    fn start(toml: &str) -> InProcessBridge {
        let cfg = edgecam::config::load_bridge_str(toml, std::iter::empty()).unwrap();
        let stop = CancellationToken::new();
        let metrics = Arc::new(BridgeMetrics::default());
        let task = tokio::spawn(edgecam::bridge::run(cfg, stop.clone(), metrics.clone()));
        InProcessBridge {
            stop,
            metrics,
            task,
        }
    }

    /// Waits until the first connection is up (and, for a new session, subscribed).
    async fn wait_ready(&self, new_session: bool) {
        let m = self.metrics.clone();
        wait_until("the bridge connects", Duration::from_secs(15), || {
            m.connections.load(Relaxed) >= 1 && (!new_session || m.subscribed.load(Relaxed) >= 1)
        })
        .await;
    }

    async fn stop(self) -> BridgeReport {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("bridge stops within 30 s")
            .unwrap()
            .unwrap()
    }
}

/// `edgecam bridge --config …` as a child process, killed on drop.
struct BridgeProcess {
    child: Option<Child>,
    stderr: std::path::PathBuf,
}

impl BridgeProcess {
    fn spawn(config: &Path, stderr: &Path) -> BridgeProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .arg("bridge")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(stderr)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        BridgeProcess {
            child: Some(child),
            stderr: stderr.to_path_buf(),
        }
    }

    /// SIGKILL: no chance to acknowledge, flush or disconnect.
    fn kill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        let status = c.wait().unwrap();
        assert!(!status.success(), "killed: {status}");
    }

    /// SIGTERM and the exit status (bounded wait).
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > until {
                let _ = c.kill();
                panic!(
                    "bridge did not exit within 30 s of SIGTERM:\n{}",
                    tail(
                        &std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                        30
                    )
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until the broker's log shows `needle` at least `count` times.
async fn wait_for_log(m: &Mosquitto, needle: &str, count: usize, timeout: Duration) {
    let until = Instant::now() + timeout;
    while m.log().matches(needle).count() < count {
        assert!(
            Instant::now() < until,
            "mosquitto log did not show {needle:?} {count} times within {timeout:?}:\n{}",
            tail(&m.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the topic from the beginning in a blocking thread (`read_topic` polls a
/// `BaseConsumer`) until `expected` records or 20 s.
async fn read_all(bootstrap: &str, topic: &str, partitions: i32, expected: usize) -> Vec<Rec> {
    read_for(
        bootstrap,
        topic,
        partitions,
        expected,
        Duration::from_secs(20),
    )
    .await
}

/// Like [`read_all`], until `expected` records or `timeout`.
async fn read_for(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Rec> {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || read_topic(&b, &t, partitions, expected, timeout))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// a. Fan-in.
// ---------------------------------------------------------------------------------------

/// 40 edgecam sensors (MQTT 5, properties) and 10 foreign cameras (MQTT 3.1.1, bare JPEG or
/// PNG) publish 10 frames each through one Mosquitto; one bridge forwards all 500 to Kafka,
/// keyed by sensor, in order, with correct headers. The broker sees 51 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_in_fifty_sensors_through_one_bridge() {
    const EDGECAM_SENSORS: u32 = 40;
    const RAW_SENSORS: u32 = 10;
    const FRAMES: u64 = 10;
    const PARTITIONS: i32 = 4;
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("fan-in");
    cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    let bridge = InProcessBridge::start(
        &BridgeToml {
            id: "fan-in",
            port: broker.port(),
            bootstrap: &bootstrap,
            topic: &topic,
            dead_letter_topic: None,
            max_message_bytes: 100_000,
            max_in_flight: 32,
        }
        .render(),
    );
    bridge.wait_ready(true).await;

    // Connect everyone first, so the broker's own count can be checked with all of them up.
    let mut sensors = Vec::new();
    for s in 0..EDGECAM_SENSORS {
        sensors.push((
            format!("sensor-{s:02}"),
            Sensor::v5(broker.port(), &format!("sensor-{s:02}")).await,
        ));
    }
    for r in 0..RAW_SENSORS {
        sensors.push((
            format!("esp-{r:02}"),
            Sensor::v311(broker.port(), &format!("esp-{r:02}")).await,
        ));
    }

    // Publish concurrently; remember what each sensor sent.
    type Frames = Vec<(Bytes, Vec<(String, String)>)>;
    type Sent = (String, Frames);
    let mut tasks: Vec<JoinHandle<(Sent, Sensor)>> = Vec::new();
    for (i, (id, mut sensor)) in sensors.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for seq in 0..FRAMES {
                let i = i as u32;
                if id.starts_with("sensor-") {
                    let img = jpeg(16 + i, 12, seq as u32);
                    let headers = edgecam_headers(&id, seq, &img);
                    let topic = format!("edgecam/{id}/frame");
                    assert!(
                        sensor
                            .publish(&topic, img.clone(), Some(props(&headers)))
                            .await
                    );
                    sent.push((img, headers));
                } else {
                    // Width encodes the frame number: order and sniffing checked at once.
                    let r = i - EDGECAM_SENSORS;
                    let img = if r < 2 {
                        png(20 + seq as u32, 10 + r, r)
                    } else {
                        jpeg(20 + seq as u32, 10 + r, r)
                    };
                    let topic = format!("cameras/{id}/jpeg");
                    assert!(sensor.publish(&topic, img.clone(), None).await);
                    sent.push((img, Vec::new()));
                }
            }
            ((id, sent), sensor)
        }));
    }
    let mut sent: BTreeMap<String, Frames> = BTreeMap::new();
    let mut connected = Vec::new();
    for t in tasks {
        let ((id, frames), sensor) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("publishing finishes")
            .unwrap();
        sent.insert(id, frames);
        connected.push(sensor);
    }
    let total = ((EDGECAM_SENSORS + RAW_SENSORS) as u64 * FRAMES) as usize;

    // N + M connections: 50 sensors + 1 bridge, (+ the $SYS probe itself).
    let n = broker.clients_connected(52, Duration::from_secs(10)).await;
    assert_eq!(
        n,
        Some(52),
        "$SYS/broker/clients/connected with everyone up (incl. probe)"
    );
    let ids: Vec<String> = broker
        .connections()
        .into_iter()
        .filter(|id| !id.starts_with("sys-probe-"))
        .collect();
    assert_eq!(ids.len(), 51, "connections: {ids:?}");
    assert_eq!(
        ids.iter()
            .filter(|id| *id == "edgecam-bridge-fan-in")
            .count(),
        1,
        "one bridge connection"
    );

    let m = bridge.metrics.clone();
    wait_until("all frames forwarded", Duration::from_secs(60), || {
        m.forwarded.load(Relaxed) as usize >= total
    })
    .await;
    let recs = read_all(&bootstrap, &topic, PARTITIONS, total).await;
    assert_eq!(recs.len(), total);

    // Per sensor: every frame once, keyed by the sensor, one partition, in order.
    let mut by_key: HashMap<String, Vec<&Rec>> = HashMap::new();
    for r in &recs {
        by_key
            .entry(String::from_utf8(r.key.clone()).unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(by_key.len(), (EDGECAM_SENSORS + RAW_SENSORS) as usize);
    for (id, frames) in &sent {
        let mut got = by_key
            .remove(id)
            .unwrap_or_else(|| panic!("{id}: nothing in Kafka"));
        assert!(
            got.iter().all(|r| r.partition == got[0].partition),
            "{id}: one partition"
        );
        got.sort_by_key(|r| r.offset);
        let seqs: Vec<u64> = got
            .iter()
            .map(|r| r.h("edgecam.seq").parse().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (0..FRAMES).collect::<Vec<_>>(),
            "{id}: seq in offset order"
        );
        for (r, (img, headers)) in got.iter().zip(frames) {
            assert_eq!(&r.value[..], &img[..], "{id}: payload untouched");
            assert_eq!(r.h("edgecam.device"), id);
            if headers.is_empty() {
                // Raw: headers written by the bridge.
                let seq: u32 = r.h("edgecam.seq").parse().unwrap();
                uuid::Uuid::parse_str(r.h("edgecam.frame_id")).unwrap();
                humantime::parse_rfc3339(r.h("edgecam.captured_at")).unwrap();
                assert_eq!(r.h("edgecam.width"), (20 + seq).to_string(), "{id}");
                let is_png = img.starts_with(b"\x89PNG");
                if is_png {
                    assert_eq!(r.h("content-type"), "image/png");
                    assert_eq!(r.h("edgecam.codec"), "png");
                    assert_eq!(r.h("edgecam.quality"), "lossless");
                    let d = image::load_from_memory(&r.value).unwrap();
                    assert_eq!(r.h("edgecam.height"), d.height().to_string());
                } else {
                    assert_eq!(r.h("content-type"), "image/jpeg");
                    assert_eq!(r.h("edgecam.codec"), "jpeg");
                    let q: u8 = r.h("edgecam.quality").parse().unwrap();
                    assert!(q.abs_diff(80) <= 2, "{id}: quality {q}");
                    let d = edgecam::jpeg::header(&r.value).unwrap();
                    assert_eq!(r.h("edgecam.height"), d.height.to_string());
                }
            } else {
                // edgecam: properties became headers 1:1.
                let want: HashMap<String, String> = headers.iter().cloned().collect();
                assert_eq!(r.headers, want, "{id}");
            }
        }
    }

    for s in connected {
        s.disconnect().await;
    }
    let report = bridge.stop().await;
    assert_eq!(report.forwarded, total as u64);
    assert_eq!(report.received, total as u64);
    assert_eq!(report.acked, total as u64);
    assert_eq!(report.undelivered, 0);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.connections, 1);
}

// ---------------------------------------------------------------------------------------
// b. SIGKILL.
// ---------------------------------------------------------------------------------------

/// The bridge runs as its own process and is SIGKILLed three times while sensors publish at
/// QoS 1. Every frame the broker acknowledged to a sensor ends up in Kafka at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bridge_killed_mid_stream_loses_nothing() {
    const KILLS: usize = 3;
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("kill");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        BridgeToml {
            id: "kill",
            port: broker.port(),
            bootstrap: &bootstrap,
            topic: &topic,
            dead_letter_topic: None,
            max_message_bytes: 100_000,
            max_in_flight: 32,
        }
        .render(),
    )
    .unwrap();
    let stderr = dir.path().join("bridge.stderr");
    let mut bridge = BridgeProcess::spawn(&config, &stderr);
    // The session and its subscriptions must exist before anything is published.
    wait_for_log(
        &broker,
        "Sending SUBACK to edgecam-bridge-kill",
        1,
        Duration::from_secs(20),
    )
    .await;

    // 4 edgecam sensors and 2 raw cameras, publishing one frame at a time until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_ids = Arc::new(Mutex::new(HashSet::<String>::new()));
    let acked_raw = Arc::new(Mutex::new(HashSet::<Vec<u8>>::new()));
    let mut publishers = Vec::new();
    for s in 0..6u32 {
        let (stop, acked_ids, acked_raw) = (stop.clone(), acked_ids.clone(), acked_raw.clone());
        let port = broker.port();
        publishers.push(tokio::spawn(async move {
            let raw = s >= 4;
            let id = if raw {
                format!("esp-{s}")
            } else {
                format!("cam-{s}")
            };
            let mut sensor = if raw {
                Sensor::v311(port, &id).await
            } else {
                Sensor::v5(port, &id).await
            };
            let mut seq = 0u64;
            while !stop.load(Relaxed) {
                // Each payload unique (the raw ones are recognised by their bytes).
                let img = with_comment(&jpeg(24, 16, s), &format!("{id} frame {seq}"));
                if raw {
                    if sensor
                        .publish(&format!("cameras/{id}/jpeg"), img.clone(), None)
                        .await
                    {
                        acked_raw.lock().unwrap().insert(img.to_vec());
                    }
                } else {
                    let headers = edgecam_headers(&id, seq, &img);
                    let frame_id = headers[2].1.clone();
                    if sensor
                        .publish(&format!("edgecam/{id}/frame"), img, Some(props(&headers)))
                        .await
                    {
                        acked_ids.lock().unwrap().insert(frame_id);
                    }
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            sensor.disconnect().await;
            seq
        }));
    }

    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        bridge.kill();
        // Publishing goes on while the bridge is away: the broker queues for its session.
        tokio::time::sleep(Duration::from_millis(300 + 200 * k as u64)).await;
        bridge = BridgeProcess::spawn(&config, &stderr);
        wait_for_log(
            &broker,
            "as edgecam-bridge-kill ",
            k + 2,
            Duration::from_secs(20),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Relaxed);
    let mut published = 0;
    for p in publishers {
        published += tokio::time::timeout(Duration::from_secs(30), p)
            .await
            .unwrap()
            .unwrap();
    }
    let ids = acked_ids.lock().unwrap().clone();
    let raws = acked_raw.lock().unwrap().clone();
    assert!(
        ids.len() > 100 && raws.len() > 50,
        "{} + {} frames acknowledged",
        ids.len(),
        raws.len()
    );

    // Everything acknowledged by the broker reaches Kafka (duplicates allowed).
    let until = Instant::now() + Duration::from_secs(60);
    let (recs, missing_ids, missing_raw) = loop {
        let recs = read_for(&bootstrap, &topic, 2, usize::MAX, Duration::from_secs(3)).await;
        let got_ids: HashSet<&str> = recs
            .iter()
            .filter(|r| r.key.starts_with(b"cam-"))
            .map(|r| r.h("edgecam.frame_id"))
            .collect();
        let got_raw: HashSet<&[u8]> = recs
            .iter()
            .filter(|r| r.key.starts_with(b"esp-"))
            .map(|r| &r.value[..])
            .collect();
        let missing_ids = ids.iter().filter(|i| !got_ids.contains(i.as_str())).count();
        let missing_raw = raws.iter().filter(|v| !got_raw.contains(&v[..])).count();
        if (missing_ids == 0 && missing_raw == 0) || Instant::now() > until {
            break (recs.len(), missing_ids, missing_raw);
        }
    };
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert_eq!(
        (missing_ids, missing_raw),
        (0, 0),
        "frames acknowledged by the broker but not in Kafka ({recs} records read); bridge log:\n{}",
        tail(&log, 60)
    );
    let status = bridge.terminate().await;
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(status.success(), "{status}\n{}", tail(&log, 30));
    assert!(
        log.contains("messages: received"),
        "summary printed:\n{}",
        tail(&log, 30)
    );
    let acked = ids.len() + raws.len();
    // The broker marks a message it sends again (unacknowledged when the bridge died) dup.
    let redelivered = broker
        .log()
        .lines()
        .filter(|l| l.contains("Sending PUBLISH to edgecam-bridge-kill (d1"))
        .count();
    println!(
        "published {published}, acknowledged by the broker {acked}, records in Kafka {recs} \
         ({} duplicates), redelivered by the broker after kills: {redelivered}",
        recs.saturating_sub(acked)
    );
    assert!(recs >= acked);
}

// ---------------------------------------------------------------------------------------
// c. Bad input.
// ---------------------------------------------------------------------------------------

/// An MQTT 5 CONNECT and a QoS 1 PUBLISH whose user property value is not UTF-8, written by
/// hand (no client library produces one). Returns whether the broker acknowledged it.
fn publish_invalid_utf8_property(port: u16, topic: &str) -> bool {
    use std::io::{Read, Write};
    fn vbi(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return;
            }
        }
    }
    fn string(b: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![kind];
        vbi(body.len(), &mut p);
        p.extend_from_slice(body);
        p
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut connect = Vec::new();
    string(b"MQTT", &mut connect);
    connect.extend_from_slice(&[5, 0x02, 0, 30, 0]); // v5, clean start, keep alive 30, no props
    string(b"bad-utf8", &mut connect);
    s.write_all(&packet(0x10, &connect)).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(n >= 4 && buf[0] == 0x20, "CONNACK");
    let mut props = vec![0x26]; // user property
    string(b"edgecam.device", &mut props);
    string(b"\xff\xfe", &mut props);
    let mut publish = Vec::new();
    string(topic.as_bytes(), &mut publish);
    publish.extend_from_slice(&1u16.to_be_bytes());
    vbi(props.len(), &mut publish);
    publish.extend_from_slice(&props);
    publish.extend_from_slice(b"payload");
    s.write_all(&packet(0x32, &publish)).unwrap();
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[0] == 0x40)
}

/// Over-budget, empty, non-image, property-less, wrongly-propertied and mistopic'd messages:
/// each counted by reason, dead-lettered with its reason, acknowledged (a restarted bridge
/// does not get them again), and the good frames around them still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_counted_dead_lettered_and_acknowledged() {
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("frames");
    let dead = unique_topic("dead");
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.create_topic(&dead, 1, 1).unwrap();
    let toml = BridgeToml {
        id: "bad-input",
        port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: Some(&dead),
        max_message_bytes: 100_000,
        max_in_flight: 32,
    }
    .render();
    let bridge = InProcessBridge::start(&toml);
    bridge.wait_ready(true).await;

    let mut s = Sensor::v5(broker.port(), "mixed").await;
    let good = |seq: u64| {
        let img = jpeg(32, 24, seq as u32);
        let h = edgecam_headers("cam-a", seq, &img);
        (img, props(&h))
    };
    let edgecam_topic = "edgecam/cam-a/frame";
    let raw_topic = "cameras/esp-a/jpeg";
    // Good frame first.
    let (img, p) = good(0);
    assert!(s.publish(edgecam_topic, img, Some(p)).await);
    // Over budget: 120 kB with a 100 kB budget (within the bridge's packet limit, budget +
    // 64 KiB: anything larger the broker drops itself).
    // A valid JPEG made large by two comment segments (padding after the EOI would be cut).
    let first = with_comment(&jpeg(32, 24, 9), &"a".repeat(60_000));
    let big = with_comment(&first, &"b".repeat(120_000 - first.len() - 4));
    assert_eq!(big.len(), 120_000);
    let h = edgecam_headers("cam-a", 99, &big);
    assert!(s.publish(edgecam_topic, big, Some(props(&h))).await);
    // Empty payload.
    assert!(s.publish(raw_topic, Bytes::new(), None).await);
    // Not an image on a raw input.
    assert!(
        s.publish(raw_topic, Bytes::from_static(b"{\"temp\": 21.5}"), None)
            .await
    );
    // An edgecam input without properties.
    assert!(s.publish(edgecam_topic, jpeg(8, 8, 1), None).await);
    // Topics the filter `cameras/+/jpeg` delivers that are not a device: an empty level,
    // characters outside the device-id alphabet. (`+` never matches more or fewer levels.)
    assert!(s.publish("cameras//jpeg", jpeg(8, 8, 2), None).await);
    assert!(
        s.publish("cameras/bad device!/jpeg", jpeg(8, 8, 3), None)
            .await
    );
    // Properties that contradict the topic.
    let img = jpeg(8, 8, 4);
    let h = edgecam_headers("cam-b", 0, &img);
    assert!(s.publish(edgecam_topic, img, Some(props(&h))).await);
    // Hostile images on a raw input: a JPEG whose SOF claims 65000x65000, a 74-byte PNG
    // claiming 2^31-1 x 2^31-1 (CRC fixed), a JPEG cut in half.
    let mut forged = jpeg(16, 16, 6).to_vec();
    let sof = (2..forged.len() - 1)
        .find(|&i| forged[i] == 0xFF && forged[i + 1] == 0xC0)
        .unwrap();
    forged[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    assert!(s.publish(raw_topic, forged.into(), None).await);
    let mut bomb = png(1, 1, 0).to_vec();
    bomb[16..24].copy_from_slice(&[0x7F, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF]);
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    assert!(s.publish(raw_topic, bomb.into(), None).await);
    let whole = jpeg(64, 48, 7);
    assert!(
        s.publish(raw_topic, whole.slice(..whole.len() / 2), None)
            .await
    );
    // Invalid UTF-8 in a user property: the broker itself refuses it (and drops the
    // publisher), so it never reaches the bridge.
    let port = broker.port();
    let acked = tokio::task::spawn_blocking(move || {
        publish_invalid_utf8_property(port, "edgecam/cam-a/frame")
    })
    .await
    .unwrap();
    assert!(!acked, "the broker refuses invalid UTF-8 in properties");
    assert!(
        broker.log().contains("Malformed UTF-8"),
        "{}",
        tail(&broker.log(), 20)
    );
    // Good frames after.
    assert!(s.publish(raw_topic, jpeg(40, 30, 5), None).await);
    let (img, p) = good(1);
    assert!(s.publish(edgecam_topic, img, Some(p)).await);

    let m = bridge.metrics.clone();
    wait_until(
        "everything handled and acknowledged",
        Duration::from_secs(30),
        || {
            m.forwarded.load(Relaxed) == 3
                && m.dead_lettered.load(Relaxed) == 10
                && m.acked.load(Relaxed) == 13
        },
    )
    .await;
    let expected: BTreeMap<RejectReason, u64> = [
        (RejectReason::OverBudget, 1),
        (RejectReason::EmptyPayload, 1),
        (RejectReason::NotAnImage, 1),
        (RejectReason::MissingProperties, 1),
        (RejectReason::TopicMismatch, 2),
        (RejectReason::InvalidProperties, 1),
        (RejectReason::FrameTooLarge, 2),
        (RejectReason::BadFrame, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(m.rejected(), expected);

    let frames = read_all(&bootstrap, &topic, 1, 3).await;
    let got: Vec<(String, String)> = frames
        .iter()
        .map(|r| {
            (
                r.h("edgecam.device").to_string(),
                r.h("edgecam.seq").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("cam-a", "0"), ("esp-a", "0"), ("cam-a", "1")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let letters = read_all(&bootstrap, &dead, 1, 10).await;
    let reasons: Vec<(&str, &str)> = letters
        .iter()
        .map(|r| (r.h("edgecam.reason"), r.h("edgecam.mqtt_topic")))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("over_budget", edgecam_topic),
            ("empty_payload", raw_topic),
            ("not_an_image", raw_topic),
            ("missing_properties", edgecam_topic),
            ("topic_mismatch", "cameras//jpeg"),
            ("topic_mismatch", "cameras/bad device!/jpeg"),
            ("invalid_properties", edgecam_topic),
            ("frame_too_large", raw_topic),
            ("frame_too_large", raw_topic),
            ("bad_frame", raw_topic),
        ]
    );
    // The over-budget payload does not fit a dead letter either: left out, size recorded.
    assert_eq!(letters[0].h("edgecam.truncated"), "true");
    assert_eq!(letters[0].h("edgecam.payload_bytes"), "120000");
    assert!(letters[0].value.is_empty());
    // The others carry their payload and a key when the topic named a device.
    assert_eq!(letters[2].value, b"{\"temp\": 21.5}");
    assert_eq!(letters[2].key, b"esp-a");
    assert!(letters[4].key.is_empty());
    assert_eq!(
        letters[6].h("edgecam.device"),
        "cam-b",
        "original properties kept"
    );

    let report = bridge.stop().await;
    assert_eq!(report.undelivered, 0);
    assert_eq!(report.acked, 13);

    // Acknowledged means gone from the broker: a new bridge on the same session gets only
    // what is published now.
    let bridge = InProcessBridge::start(&toml);
    bridge.wait_ready(false).await;
    let (img, p) = good(2);
    assert!(s.publish(edgecam_topic, img, Some(p)).await);
    let m = bridge.metrics.clone();
    wait_until("the new frame forwarded", Duration::from_secs(30), || {
        m.forwarded.load(Relaxed) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = bridge.stop().await;
    assert_eq!(report.received, 1, "nothing redelivered");
    assert!(report.rejected.is_empty());
    s.disconnect().await;
}

/// One `OUT_OF_ORDER_SEQUENCE_NUMBER` on Produce puts the bridge's idempotent producer in
/// librdkafka's fatal state. The bridge recreates it and forwards every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fatal_producer_error_recreates_the_producer_and_forwards_everything() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("fatal-frames");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let toml = BridgeToml {
        id: "fatal",
        port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        max_message_bytes: 100_000,
        max_in_flight: 8,
    }
    .render();
    let bridge = InProcessBridge::start(&toml);
    bridge.wait_ready(true).await;
    let mut s = Sensor::v311(broker.port(), "fatal-sensor").await;
    let n = 20u32;
    let m = bridge.metrics.clone();
    for i in 0..n {
        if i == n / 2 {
            wait_until("the first half forwarded", Duration::from_secs(30), || {
                m.forwarded.load(Relaxed) == (n / 2) as u64
            })
            .await;
            cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
            );
        }
        assert!(s.publish("cameras/esp-f/jpeg", jpeg(24, 16, i), None).await);
    }
    wait_until("every frame forwarded", Duration::from_secs(60), || {
        m.forwarded.load(Relaxed) >= n as u64 && m.acked.load(Relaxed) == n as u64
    })
    .await;
    assert!(
        m.producer_restarts.load(Relaxed) >= 1,
        "the fault was handled"
    );
    let recs = read_all(&bootstrap, &topic, 1, n as usize).await;
    let ids: HashSet<&str> = recs.iter().map(|r| r.h("edgecam.frame_id")).collect();
    assert_eq!(
        ids.len(),
        n as usize,
        "every frame, duplicates only as repeated ids"
    );
    let report = bridge.stop().await;
    assert_eq!(report.undelivered, 0);
    s.disconnect().await;
}

/// Kafka refuses one record for good (`MSG_SIZE_TOO_LARGE` injected on Produce): the bridge's
/// sink reports it rejected with the broker's reason, the bridge dead-letters the message as
/// `delivery_rejected` and acknowledges it, and the frames around it are forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_kafka_refuses_is_dead_lettered_with_the_reason() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("refused-frames");
    let dead = unique_topic("refused-dead");
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.create_topic(&dead, 1, 1).unwrap();
    let toml = BridgeToml {
        id: "refused",
        port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: Some(&dead),
        max_message_bytes: 100_000,
        // One record per Produce request, so the injected error hits exactly one.
        max_in_flight: 1,
    }
    .render();
    let bridge = InProcessBridge::start(&toml);
    bridge.wait_ready(true).await;
    let mut s = Sensor::v311(broker.port(), "refused-sensor").await;
    let m = bridge.metrics.clone();
    let frames: Vec<Bytes> = (0..3).map(|i| jpeg(24, 16, 100 + i)).collect();
    assert!(
        s.publish("cameras/esp-r/jpeg", frames[0].clone(), None)
            .await
    );
    wait_until("the first frame forwarded", Duration::from_secs(30), || {
        m.forwarded.load(Relaxed) == 1
    })
    .await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    assert!(
        s.publish("cameras/esp-r/jpeg", frames[1].clone(), None)
            .await
    );
    wait_until(
        "the refused frame dead-lettered",
        Duration::from_secs(30),
        || m.dead_lettered.load(Relaxed) == 1,
    )
    .await;
    assert!(
        s.publish("cameras/esp-r/jpeg", frames[2].clone(), None)
            .await
    );
    wait_until(
        "every message acknowledged",
        Duration::from_secs(30),
        || m.acked.load(Relaxed) == 3,
    )
    .await;
    assert_eq!(m.rejected_for(RejectReason::DeliveryRejected), 1);
    assert_eq!(m.forwarded.load(Relaxed), 2);

    let dl = read_all(&bootstrap, &dead, 1, 1).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].h("edgecam.reason"), "delivery_rejected");
    let detail = dl[0].h("edgecam.detail");
    assert!(
        detail.starts_with("Kafka refused the record: ") && detail.contains("too large"),
        "detail: {detail}"
    );
    assert_eq!(
        dl[0].value,
        frames[1].to_vec(),
        "the refused image is in the dead letter"
    );
    assert_eq!(dl[0].key, b"esp-r");
    let recs = read_all(&bootstrap, &topic, 1, 2).await;
    let values: Vec<&[u8]> = recs.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(values, vec![&frames[0][..], &frames[2][..]]);
    let report = bridge.stop().await;
    assert_eq!(report.undelivered, 0);
    s.disconnect().await;
}

/// The bridge's `[http]`: ready once connected, `/metrics` counts what it forwarded (parsed
/// by Python's OpenMetrics parser), and not ready, saying why, while the MQTT broker is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bridge_metrics_and_readiness_over_http() {
    use common::http::{get, parse_metrics, sample, wait_for_status};
    let mut broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("http-frames");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let port = common::mosquitto::free_port();
    let toml = BridgeToml {
        id: "watched",
        port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        max_message_bytes: 100_000,
        max_in_flight: 8,
    }
    .render()
        + &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\nready_within_ms = 1000\n");
    let bridge = InProcessBridge::start(&toml);
    wait_for_status(port, "/readyz", 200, "bridge readiness").await;
    bridge.wait_ready(true).await;
    let mut s = Sensor::v311(broker.port(), "watched-sensor").await;
    for i in 0..5 {
        assert!(s.publish("cameras/esp-w/jpeg", jpeg(24, 16, i), None).await);
    }
    assert!(
        s.publish("cameras/esp-w/jpeg", Bytes::from_static(b"nope"), None)
            .await
    );
    let m = bridge.metrics.clone();
    wait_until("all handled", Duration::from_secs(30), || {
        m.acked.load(Relaxed) == 6
    })
    .await;
    let (status, _, text) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let prom = parse_metrics(&String::from_utf8(text).unwrap());
    let b = "bridge=watched";
    assert_eq!(
        sample(&prom, "edgecam_bridge_messages_received_total", b),
        6.0
    );
    assert_eq!(
        sample(&prom, "edgecam_bridge_records_forwarded_total", b),
        5.0
    );
    assert_eq!(
        sample(&prom, "edgecam_bridge_forwarded_bytes_total", b),
        m.forwarded_bytes.load(Relaxed) as f64
    );
    assert_eq!(
        sample(
            &prom,
            "edgecam_bridge_messages_rejected_total",
            "bridge=watched,reason=not_an_image"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &prom,
            "edgecam_bridge_device_messages_total",
            "bridge=watched,source_device=esp-w"
        ),
        6.0
    );
    assert_eq!(sample(&prom, "edgecam_bridge_mqtt_up", b), 1.0);
    assert_eq!(
        prom["__types__"]["edgecam_bridge_in_flight_messages"],
        "gauge"
    );

    broker.stop();
    let body = wait_for_status(port, "/readyz", 503, "bridge readiness without a broker").await;
    assert!(
        String::from_utf8_lossy(&body).contains("mqtt: not connected"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let report = bridge.stop().await;
    assert_eq!(report.forwarded, 5);
    drop(s);
}

// ---------------------------------------------------------------------------------------
// Broker restart.
// ---------------------------------------------------------------------------------------

/// Mosquitto restarts (persistence on) while the bridge runs: the bridge reconnects on its
/// own, its session survives, and frames published around the restart all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_reconnects_and_resumes_the_session() {
    let mut broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("restart");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bridge = InProcessBridge::start(
        &BridgeToml {
            id: "restart",
            port: broker.port(),
            bootstrap: &bootstrap,
            topic: &topic,
            dead_letter_topic: None,
            max_message_bytes: 100_000,
            max_in_flight: 32,
        }
        .render(),
    );
    bridge.wait_ready(true).await;
    let mut s = Sensor::v5(broker.port(), "cam-r").await;
    for seq in 0..5 {
        let img = jpeg(16, 16, seq as u32);
        let h = edgecam_headers("cam-r", seq, &img);
        assert!(s.publish("edgecam/cam-r/frame", img, Some(props(&h))).await);
    }
    let m = bridge.metrics.clone();
    wait_until(
        "the first frames acknowledged",
        Duration::from_secs(30),
        || m.acked.load(Relaxed) >= 5,
    )
    .await;
    drop(s);
    // Let the broker process the PUBACKs before it saves its state and stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    wait_until("the bridge reconnects", Duration::from_secs(30), || {
        m.connections.load(Relaxed) >= 2
    })
    .await;
    let mut s = Sensor::v5(broker.port(), "cam-r").await;
    for seq in 5..10 {
        let img = jpeg(16, 16, seq as u32);
        let h = edgecam_headers("cam-r", seq, &img);
        assert!(s.publish("edgecam/cam-r/frame", img, Some(props(&h))).await);
    }
    wait_until("all frames forwarded", Duration::from_secs(30), || {
        m.forwarded.load(Relaxed) >= 10
    })
    .await;
    let recs = read_all(&bootstrap, &topic, 1, 10).await;
    let seqs: Vec<u64> = recs
        .iter()
        .map(|r| r.h("edgecam.seq").parse().unwrap())
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    assert_eq!(
        m.received.load(Relaxed),
        10,
        "acknowledged frames not redelivered"
    );
    assert_eq!(
        m.subscribed.load(Relaxed),
        1,
        "session resumed: no second SUBSCRIBE"
    );
    s.disconnect().await;
    let report = bridge.stop().await;
    assert_eq!(report.undelivered, 0);
}

/// A broker that stops answering (SIGSTOP) without closing the connection: the no-traffic
/// watchdog (`mqtt.silence_timeout_secs`) drops the connection, the bridge reconnects once
/// the broker is back, and frames flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_broker_trips_the_watchdog_and_the_bridge_reconnects() {
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("watchdog");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let toml = BridgeToml {
        id: "watchdog",
        port: broker.port(),
        bootstrap: &bootstrap,
        topic: &topic,
        dead_letter_topic: None,
        max_message_bytes: 100_000,
        max_in_flight: 32,
    }
    .render()
    .replace("silence_timeout_secs = 15", "silence_timeout_secs = 6");
    let bridge = InProcessBridge::start(&toml);
    bridge.wait_ready(true).await;
    let m = bridge.metrics.clone();

    broker.pause();
    let paused_at = Instant::now();
    wait_until(
        "the watchdog drops the connection",
        Duration::from_secs(20),
        || m.disconnects.load(Relaxed) >= 1,
    )
    .await;
    let after = paused_at.elapsed();
    broker.resume();
    assert!(
        m.last_error().unwrap_or_default().contains("watchdog"),
        "{:?}",
        m.last_error()
    );
    // rumqttc's own keep-alive check would take two keep-alive periods (10 s).
    assert!(after < Duration::from_secs(9), "dropped after {after:?}");
    wait_until("the bridge reconnects", Duration::from_secs(30), || {
        m.connections.load(Relaxed) >= 2
    })
    .await;

    let mut s = Sensor::v5(broker.port(), "cam-w").await;
    let img = jpeg(16, 16, 1);
    let h = edgecam_headers("cam-w", 0, &img);
    assert!(s.publish("edgecam/cam-w/frame", img, Some(props(&h))).await);
    wait_until("the frame forwarded", Duration::from_secs(30), || {
        m.forwarded.load(Relaxed) == 1
    })
    .await;
    s.disconnect().await;
    let report = bridge.stop().await;
    assert_eq!(report.undelivered, 0);
}

// ---------------------------------------------------------------------------------------
// Command line.
// ---------------------------------------------------------------------------------------

/// `edgecam bridge` exits 64 naming the key for a bad file, and for a missing one, before
/// connecting anywhere.
#[test]
fn bridge_command_rejects_bad_configuration_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let toml = BridgeToml {
        id: "cli",
        port: 1,
        bootstrap: "127.0.0.1:1",
        topic: "frames",
        dead_letter_topic: Some("frames"),
        max_message_bytes: 100_000,
        max_in_flight: 32,
    }
    .render();
    std::fs::write(&bad, toml).unwrap();
    for (path, needle) in [
        (bad.clone(), "bridge.dead_letter_topic"),
        (dir.path().join("missing.toml"), "cannot read config file"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .args(["bridge", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// Bench.
// ---------------------------------------------------------------------------------------

/// Throughput of 100 KB frames: 8 MQTT 5 sensors publish pipelined at QoS 1 through
/// Mosquitto, the bridge forwards into the mock cluster. Run with
/// `cargo test --release --test bridge -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark"]
async fn bench_bridge_throughput_100kb() {
    const SENSORS: usize = 8;
    const FRAMES: usize = 1000;
    const PAYLOAD: usize = 100_000;
    for max_in_flight in [32usize, 256] {
        let broker = Mosquitto::start_quiet();
        let cluster = MockCluster::new(1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let topic = unique_topic("bench");
        cluster.create_topic(&topic, 4, 1).unwrap();
        let bridge = InProcessBridge::start(
            &BridgeToml {
                id: "bench",
                port: broker.port(),
                bootstrap: &bootstrap,
                topic: &topic,
                dead_letter_topic: None,
                max_message_bytes: 1_000_000,
                max_in_flight,
            }
            .render(),
        );
        bridge.wait_ready(true).await;
        let mut sensors = Vec::new();
        for s in 0..SENSORS {
            sensors.push(Sensor::v5(broker.port(), &format!("bench-{s}")).await);
        }
        let mut payload = jpeg(64, 48, 1).to_vec();
        payload.resize(PAYLOAD, 0x5A);
        let payload = Bytes::from(payload);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (s, sensor) in sensors.into_iter().enumerate() {
            let payload = payload.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("bench-{s}");
                let topic = format!("edgecam/{id}/frame");
                for seq in 0..FRAMES as u64 {
                    let h = edgecam_headers(&id, seq, &payload);
                    sensor
                        .publish_nowait(&topic, payload.clone(), props(&h))
                        .await;
                }
                sensor
            }));
        }
        let mut keep = Vec::new();
        for t in tasks {
            keep.push(
                tokio::time::timeout(Duration::from_secs(300), t)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let published = started.elapsed();
        let m = bridge.metrics.clone();
        let total = (SENSORS * FRAMES) as u64;
        wait_until("all forwarded", Duration::from_secs(300), || {
            m.forwarded.load(Relaxed) >= total
        })
        .await;
        let elapsed = started.elapsed();
        let bytes = m.forwarded_bytes.load(Relaxed);
        println!(
            "bridge throughput, {PAYLOAD} B payloads, {SENSORS} sensors x {FRAMES}, \
             kafka.max_in_flight = {max_in_flight}: {total} frames in {:.2} s = {:.0} frames/s, \
             {:.1} MB/s of records (publishers done after {:.2} s)",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            bytes as f64 / elapsed.as_secs_f64() / 1e6,
            published.as_secs_f64(),
        );
        for s in keep {
            s.disconnect().await;
        }
        let report = bridge.stop().await;
        assert_eq!(report.forwarded, total);
        assert_eq!(report.rejected.len(), 0);
    }
}
