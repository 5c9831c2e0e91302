//! MQTT over TLS against a real Mosquitto with a TLS listener (certificates made by the test,
//! see `common::tls`): mutual TLS plus a password from the agent through the broker and the
//! bridge into Kafka; a burst of budget-sized frames not paced by keep-alive; and the three
//! failures users meet (an unknown CA, an expired broker certificate, a wrong password),
//! each one clear log line, no crash, no frame counted as delivered.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::mosquitto::{Mosquitto, TlsListener};
use common::tls::Pki;
use common::{check_complete, read_topic, unique_topic, FIXTURE};
use edgecam::bridge::BridgeMetrics;
use edgecam::metrics::Metrics;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

const USERS: &[(&str, &str)] = &[("cam", "cam-secret"), ("bridge", "bridge-secret")];

/// `[mqtt]` + `[mqtt.tls]` for an agent or the bridge.
fn mqtt_toml(host: &str, port: u16, user: &str, password: &str, ca: &Path, pki: &Pki) -> String {
    format!(
        "[mqtt]\nhost = \"{host}\"\nport = {port}\nkeep_alive_secs = 30\nsilence_timeout_secs = 90\n\
         username = \"{user}\"\npassword = \"{password}\"\n\
         [mqtt.tls]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey = {{ file = \"{key}\" }}\n",
        ca = ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
    )
}

fn agent_toml(device: &str, frames: u64, budget: u32, mqtt: &str) -> String {
    format!(
        "[device]\nid = \"{device}\"\n[source]\nkind = \"mjpeg\"\npath = \"{FIXTURE}\"\nloop = true\n\
         fps = 0\nmax_frames = {frames}\n[encode]\nmax_message_bytes = {budget}\n\
         [sink]\nkind = \"mqtt\"\n{mqtt}"
    )
}

fn broker(pki: &Pki, server_cert: &Path, server_key: &Path) -> Mosquitto {
    Mosquitto::start_tls(&TlsListener {
        cafile: &pki.ca,
        certfile: server_cert,
        keyfile: server_key,
        require_certificate: true,
        users: USERS,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_agent_through_the_broker_and_the_bridge_delivers_every_frame() {
    let pki = Pki::new();
    let broker = broker(&pki, &pki.server_cert, &pki.server_key);
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique_topic("tls");
    cluster.create_topic(&topic, 1, 1).unwrap();

    // The bridge checks the broker's name as an IP address, the agent as a DNS name.
    let bridge_toml = format!(
        "[bridge]\nid = \"tls\"\n[[bridge.inputs]]\ntopic = \"edgecam/{{device}}/frame\"\nformat = \"edgecam\"\n\
         {}\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n",
        mqtt_toml("127.0.0.1", broker.tls_port(), "bridge", "bridge-secret", &pki.ca, &pki),
    );
    let cfg = edgecam::config::load_bridge_str(&bridge_toml, std::iter::empty()).unwrap();
    let stop = CancellationToken::new();
    let bridge_metrics = Arc::new(BridgeMetrics::default());
    let bridge = tokio::spawn(edgecam::bridge::run(
        cfg,
        stop.clone(),
        bridge_metrics.clone(),
    ));
    let m = bridge_metrics.clone();
    tokio::time::timeout(Duration::from_secs(15), async {
        while m.subscribed.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bridge connects over mutual TLS and subscribes");

    let n = 30;
    let mqtt = mqtt_toml(
        "localhost",
        broker.tls_port(),
        "cam",
        "cam-secret",
        &pki.ca,
        &pki,
    );
    let cfg = edgecam::config::load_str(
        &agent_toml("tls-cam", n, 100_000, &mqtt),
        common::state_env(),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let report = edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
        .await
        .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);

    let recs = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &topic, 1, n as usize, Duration::from_secs(30))
    })
    .await
    .unwrap();
    check_complete(&recs, n as usize);
    assert!(recs.iter().all(|r| r.h("edgecam.device") == "tls-cam"));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), bridge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Both clients really went through the TLS listener (the plain one is the test's).
    let log = broker.log();
    assert!(
        log.contains("as edgecam-tls-cam") && log.contains("as edgecam-bridge-tls"),
        "{}",
        common::mosquitto::tail(&log, 40)
    );
}

/// rumqtt#750: a 64 KB QoS 1 publish over TLS was acknowledged only at the next ping on a
/// Pi. With keep-alive at 30 s, a burst of budget-sized frames must be acknowledged without
/// any ping in between: the agent sends no PINGREQ while it has traffic to send.
#[tokio::test(flavor = "multi_thread")]
async fn budget_sized_burst_over_tls_is_not_paced_by_keep_alive() {
    let pki = Pki::new();
    let broker = broker(&pki, &pki.server_cert, &pki.server_key);
    let n = 300;
    let frame_bytes = common::fixture_frames()
        .iter()
        .map(|f| f.len())
        .max()
        .unwrap();
    // The budget just above the largest frame: every frame goes as it is, near the budget.
    let budget = (frame_bytes + 2_000) as u32;
    let mqtt = mqtt_toml(
        "127.0.0.1",
        broker.tls_port(),
        "cam",
        "cam-secret",
        &pki.ca,
        &pki,
    );
    let cfg =
        edgecam::config::load_str(&agent_toml("burst", n, budget, &mqtt), common::state_env())
            .unwrap();
    let metrics = Arc::new(Metrics::default());
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone()),
    )
    .await
    .expect("the burst is acknowledged")
    .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    assert!(metrics.delivered_bytes.load(Relaxed) > n * (frame_bytes as u64) / 2);
    let pings = broker
        .log()
        .matches("Received PINGREQ from edgecam-burst")
        .count();
    assert_eq!(
        pings, 0,
        "PUBACKs came without pings: the burst was not paced by keep-alive"
    );
}

/// One failure case: the agent keeps retrying (more than one attempt reaches the broker),
/// logs one WARN line with `hint`, never crashes, delivers nothing and spools what it took.
fn assert_fails_clearly(case: &str, broker: &Mosquitto, toml: &str, hint: &str) {
    let before = broker
        .log()
        .matches("New connection from 127.0.0.1")
        .count();
    let stderr = common::run_refused_agent(case, toml, 6);
    let attempts = broker
        .log()
        .matches("New connection from 127.0.0.1")
        .count()
        - before;
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("MQTT connection failed"))
        .collect();
    assert_eq!(failures.len(), 1, "{case}: one WARN line, got:\n{stderr}");
    assert!(failures[0].contains("WARN"), "{case}: {}", failures[0]);
    assert!(
        failures[0].contains(hint),
        "{case}: hint {hint:?} in {}",
        failures[0]
    );
    assert!(
        (2..=12).contains(&attempts),
        "{case}: the agent retries with back-off ({attempts} attempts in 6 s)"
    );
}

#[test]
fn unknown_ca_expired_certificate_and_wrong_password_each_fail_clearly() {
    let pki = Pki::new();
    // A live source (a camera would be the same): what cannot be delivered is spooled.
    let agent = |port: u16, password: &str, ca: &Path| {
        format!(
            "[device]\nid = \"failing\"\n[source]\nkind = \"synthetic\"\nfps = 20\n\
             width = 320\nheight = 240\n[sink]\nkind = \"mqtt\"\n{}",
            mqtt_toml("127.0.0.1", port, "cam", password, ca, &pki)
        )
    };

    let good = broker(&pki, &pki.server_cert, &pki.server_key);
    assert_fails_clearly(
        "a CA that did not sign the broker's certificate",
        &good,
        &agent(good.tls_port(), "cam-secret", &pki.other_ca),
        "not signed by a CA in mqtt.tls.ca_file",
    );
    assert_fails_clearly(
        "a wrong password",
        &good,
        &agent(good.tls_port(), "wrong", &pki.ca),
        "check mqtt.username and mqtt.password",
    );
    drop(good);

    let expired = broker(&pki, &pki.expired_cert, &pki.expired_key);
    assert_fails_clearly(
        "an expired broker certificate",
        &expired,
        &agent(expired.tls_port(), "cam-secret", &pki.ca),
        "has expired",
    );
}

/// A key that is not the certificate's is refused when the file is loaded, naming the key
/// and never showing it.
#[test]
fn a_key_that_does_not_match_the_certificate_is_a_config_error() {
    let pki = Pki::new();
    let toml = format!(
        "[device]\nid = \"k\"\n[source]\nkind = \"synthetic\"\n[sink]\nkind = \"mqtt\"\n\
         [mqtt]\nhost = \"localhost\"\n[mqtt.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\n\
         key = {{ file = \"{}\" }}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.server_key.display(),
    );
    let e = edgecam::config::load_str(&toml, common::state_env())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mqtt.tls.key") && e.contains("is not the private key of the certificate"),
        "{e}"
    );
    let key = std::fs::read_to_string(&pki.server_key).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!e.contains(body), "the key is never shown: {e}");
}
