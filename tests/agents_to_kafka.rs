//! Real edgecam agents (MQTT sink, MQTT 5 and 3.1.1) → one Mosquitto → one bridge → Kafka:
//! the headers an agent computed arrive in Kafka unchanged, and a 3.1.1 agent (no
//! properties) is carried through a raw input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::mosquitto::Mosquitto;
use common::{read_topic, unique_topic, FIXTURE};
use edgecam::bridge::BridgeMetrics;
use edgecam::metrics::Metrics;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

fn agent(
    port: u16,
    device: &str,
    protocol: &str,
    template: &str,
    frames: u64,
) -> edgecam::config::Config {
    edgecam::config::load_str(
        &format!(
            "[device]\nid = \"{device}\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nloop = true\nfps = 0\nmax_frames = {frames}\n\
             [encode]\nmax_message_bytes = 20000\n[pipeline]\noverflow = \"block\"\n[sink]\nkind = \"mqtt\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nprotocol = \"{protocol}\"\ntopic_template = \"{template}\"\n"
        ),
        common::state_env(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_through_mosquitto_and_the_bridge_keep_their_headers() {
    let broker = Mosquitto::start();
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique_topic("agents");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let bridge_cfg = edgecam::config::load_bridge_str(
        &format!(
            "[bridge]\nid = \"t\"\nmax_message_bytes = 20000\n\
             [[bridge.inputs]]\ntopic = \"edgecam/{{device}}/frame\"\nformat = \"edgecam\"\n\
             [[bridge.inputs]]\ntopic = \"cameras/{{device}}/jpeg\"\nformat = \"raw\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {}\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n",
            broker.port()
        ),
        std::iter::empty(),
    )
    .unwrap();
    let stop_bridge = CancellationToken::new();
    let bridge_metrics = Arc::new(BridgeMetrics::default());
    let bridge = tokio::spawn(edgecam::bridge::run(
        bridge_cfg,
        stop_bridge.clone(),
        bridge_metrics.clone(),
    ));
    for _ in 0..300 {
        if bridge_metrics.subscribed.load(Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        bridge_metrics.subscribed.load(Relaxed) >= 1,
        "bridge subscribed"
    );

    let n = 12u64;
    let agents = [
        ("porch", "v5", "edgecam/{device}/frame"),
        ("garage", "v5", "edgecam/{device}/frame"),
        ("shed", "v311", "cameras/{device}/jpeg"),
    ];
    let mut runs = Vec::new();
    for (device, protocol, template) in agents {
        let cfg = agent(broker.port(), device, protocol, template, n);
        let metrics = Arc::new(Metrics::default());
        runs.push((
            device,
            metrics.clone(),
            tokio::spawn(edgecam::pipeline::run(
                cfg,
                CancellationToken::new(),
                metrics,
            )),
        ));
    }
    for (device, metrics, run) in runs {
        let report = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.sink.undelivered, 0, "{device}");
        assert_eq!(metrics.delivered.load(Relaxed), n, "{device}");
    }
    let total = 3 * n as usize;
    let recs = read_topic(&bootstrap, &topic, 1, total, Duration::from_secs(30));
    stop_bridge.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), bridge).await;
    assert_eq!(recs.len(), total, "every frame once");

    let mut by_device: BTreeMap<String, Vec<&common::Rec>> = BTreeMap::new();
    for r in &recs {
        by_device
            .entry(String::from_utf8(r.key.clone()).unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(
        by_device.keys().cloned().collect::<Vec<_>>(),
        ["garage", "porch", "shed"]
    );
    for (device, rs) in &by_device {
        // Per-device order: sequence numbers increase with the offset.
        let seqs: Vec<u64> = rs
            .iter()
            .map(|r| r.h("edgecam.seq").parse().unwrap())
            .collect();
        assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "{device}");
        let ids: BTreeSet<&str> = rs.iter().map(|r| r.h("edgecam.frame_id")).collect();
        // Agent frames carry the agent's UUIDv7s. The raw sensor's frames get the bridge's
        // name-based id, the same for byte-identical images: the looped 10-frame fixture
        // repeats its first images after frame 10, so ids repeat exactly as images do.
        let images: BTreeSet<&[u8]> = rs.iter().map(|r| r.value.as_slice()).collect();
        let distinct = if *device == "shed" {
            images.len()
        } else {
            n as usize
        };
        assert_eq!(ids.len(), distinct, "{device}");
        for r in rs {
            assert_eq!(r.h("edgecam.device"), device);
            assert_eq!(r.h("content-type"), "image/jpeg");
            let h = edgecam::jpeg::header(&r.value).unwrap();
            assert_eq!(r.h("edgecam.width"), h.width.to_string());
            assert!(r.value.len() + r.key.len() + r.header_bytes <= 20_000);
            assert_eq!(r.h("edgecam.codec"), "jpeg");
            assert!(h.width < 768, "downscaled by the agent to fit 20000 B");
            if device == "shed" {
                // MQTT 3.1.1 carries no properties: the bridge added the headers, estimating
                // the quality from the JPEG's quantisation table.
                let q: u8 = r.h("edgecam.quality").parse().unwrap();
                assert!((38..=42).contains(&q), "estimated quality {q}");
            } else {
                // The agent's own headers, forwarded 1:1 (it re-encoded at q40 to fit).
                assert_eq!(r.h("edgecam.quality"), "40");
            }
        }
    }
}
