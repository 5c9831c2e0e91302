//! Kafka over TLS with librdkafka's real TLS handshake: librdkafka's mock cluster behind a TLS
//! terminator (`socat` with OpenSSL), its broker advertising the terminator's address, so the
//! bootstrap connection and the broker connection both go through TLS. Server verification
//! with a CA file and the broker's name checked (`localhost`), mutual TLS, and an unknown CA
//! failing clearly with nothing counted as delivered.
//!
//! Needs `socat` (scripts/setup installs it).

mod common;

use std::ffi::{CStr, CString};
use std::path::Path;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::tls::{Pki, Terminator};
use common::{check_complete, read_topic_with, unique_topic, FIXTURE};
use edgecam::metrics::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka_sys as sys;
use tokio_util::sync::CancellationToken;

/// A one-broker mock cluster reachable only through TLS on `localhost:<port>`.
struct TlsCluster {
    mock: *mut sys::rd_kafka_mock_cluster_t,
    /// The client the mock cluster lives in; dropped after it.
    _host: BaseProducer,
    _tls: Terminator,
    /// `localhost:<terminator port>`.
    bootstrap: String,
}

impl TlsCluster {
    /// `client_ca`: require a client certificate signed by it (mutual TLS).
    fn start(pki: &Pki, client_ca: Option<&Path>) -> TlsCluster {
        let host: BaseProducer = ClientConfig::new().create().unwrap();
        // SAFETY: the client outlives the cluster (destroyed first in Drop).
        let mock = unsafe { sys::rd_kafka_mock_cluster_new(host.client().native_ptr(), 1) };
        assert!(!mock.is_null());
        let plain = unsafe { CStr::from_ptr(sys::rd_kafka_mock_cluster_bootstraps(mock)) }
            .to_str()
            .unwrap()
            .to_string();
        let tls = Terminator::start(pki, client_ca, &plain);
        let localhost = CString::new("localhost").unwrap();
        // SAFETY: a live cluster; the host name is copied.
        unsafe {
            sys::rd_kafka_mock_broker_set_host_port(mock, 1, localhost.as_ptr(), tls.port as i32)
        };
        TlsCluster {
            mock,
            _host: host,
            bootstrap: format!("localhost:{}", tls.port),
            _tls: tls,
        }
    }

    fn create_topic(&self, topic: &str) {
        let t = CString::new(topic).unwrap();
        // SAFETY: a live cluster.
        let err = unsafe { sys::rd_kafka_mock_topic_create(self.mock, t.as_ptr(), 1, 1) };
        assert_eq!(err, sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_mock_cluster_new, destroyed once, before its client.
        unsafe { sys::rd_kafka_mock_cluster_destroy(self.mock) };
    }
}

/// librdkafka TLS properties: `(name, value)`.
fn tls_properties(ca: &Path, client: Option<&Pki>) -> Vec<(String, String)> {
    let mut p = vec![
        ("security.protocol".to_string(), "SSL".to_string()),
        ("ssl.ca.location".to_string(), ca.display().to_string()),
    ];
    if let Some(pki) = client {
        p.push((
            "ssl.certificate.location".into(),
            pki.client_cert.display().to_string(),
        ));
        p.push((
            "ssl.key.location".into(),
            pki.client_key.display().to_string(),
        ));
    }
    p
}

fn agent_toml(source: &str, bootstrap: &str, topic: &str, props: &[(String, String)]) -> String {
    let mut t = format!(
        "[device]\nid = \"tls-cam\"\n[source]\n{source}\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
         topic = \"{topic}\"\n[kafka.properties]\n"
    );
    for (k, v) in props {
        t.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    t
}

/// The agent produces `n` fixture frames through TLS; a TLS consumer reads them all back.
async fn delivers_through(cluster: &TlsCluster, props: Vec<(String, String)>) {
    let topic = unique_topic("kafka-tls");
    cluster.create_topic(&topic);
    let n = 20u64;
    let source =
        format!("kind = \"mjpeg\"\npath = \"{FIXTURE}\"\nloop = true\nfps = 0\nmax_frames = {n}");
    let cfg = edgecam::config::load_str(
        &agent_toml(&source, &cluster.bootstrap, &topic, &props),
        common::state_env(),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone()),
    )
    .await
    .expect("the agent finishes")
    .unwrap();
    assert_eq!(report.sink.undelivered, 0);
    assert_eq!(metrics.delivered.load(Relaxed), n);
    let bootstrap = cluster.bootstrap.clone();
    let recs = tokio::task::spawn_blocking(move || {
        let p: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        read_topic_with(
            &bootstrap,
            &p,
            &topic,
            1,
            n as usize,
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    check_complete(&recs, n as usize);
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_go_through_tls_with_the_broker_verified() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki, None);
    delivers_through(&cluster, tls_properties(&pki.ca, None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_go_through_mutual_tls() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki, Some(&pki.ca));
    delivers_through(&cluster, tls_properties(&pki.ca, Some(&pki))).await;
}

/// An agent trusting a CA that did not sign the broker's certificate: it keeps running,
/// says why (librdkafka's reason, with the certificate check named), delivers nothing and
/// spools what it took.
#[test]
fn an_unknown_ca_fails_clearly_and_delivers_nothing() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki, None);
    let topic = unique_topic("kafka-tls-bad-ca");
    cluster.create_topic(&topic);
    let toml = agent_toml(
        "kind = \"synthetic\"\nfps = 20\nwidth = 320\nheight = 240",
        &cluster.bootstrap,
        &topic,
        &tls_properties(&pki.other_ca, None),
    );
    let stderr = common::run_refused_agent("an unknown CA", &toml, 6);
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("certificate verify failed"))
        .collect();
    // librdkafka retries about once a second (reconnect.backoff.max.ms = 1000), each
    // failure reported twice; edgecam logs the reason once.
    assert_eq!(failures.len(), 1, "the reason, once:\n{stderr}");
    assert!(failures[0].contains("ERROR"), "{}", failures[0]);
}

/// `edgecam consume` in a blocking thread (the cluster lives in this process): its exit
/// status, stderr, and the number of files under `<out>/tls-cam/<date>/`.
async fn consume_bin(args: Vec<String>, out: std::path::PathBuf) -> (bool, String, usize) {
    tokio::task::spawn_blocking(move || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgecam"))
            .arg("consume")
            .args(&args)
            .args(["--group-id", &unique_topic("group"), "--output-dir"])
            .arg(&out)
            .args(["--idle-timeout-ms", "3000"])
            .output()
            .unwrap();
        let files = if out.exists() {
            common::consumed_files(&out, "tls-cam").len()
        } else {
            0
        };
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            files,
        )
    })
    .await
    .unwrap()
}

/// `edgecam consume` reads from a cluster that takes only mutual TLS, with the TLS
/// properties given as `-X`, and with them taken from the agent's own file (`--config`).
#[tokio::test(flavor = "multi_thread")]
async fn consume_reads_through_mutual_tls_with_x_and_with_config() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki, Some(&pki.ca));
    let props = tls_properties(&pki.ca, Some(&pki));
    let topic = unique_topic("kafka-tls-consume");
    cluster.create_topic(&topic);
    let n = 5u64;
    let source =
        format!("kind = \"mjpeg\"\npath = \"{FIXTURE}\"\nloop = true\nfps = 0\nmax_frames = {n}");
    let toml = agent_toml(&source, &cluster.bootstrap, &topic, &props);
    let cfg = edgecam::config::load_str(&toml, common::state_env()).unwrap();
    let metrics = Arc::new(Metrics::default());
    edgecam::pipeline::run(cfg, CancellationToken::new(), metrics.clone())
        .await
        .unwrap();
    assert_eq!(metrics.delivered.load(Relaxed), n);
    let dir = tempfile::tempdir().unwrap();

    let mut args = vec![
        "--bootstrap-servers".to_string(),
        cluster.bootstrap.clone(),
        "--topic".into(),
        topic.clone(),
    ];
    for (k, v) in &props {
        args.push("-X".into());
        args.push(format!("{k}={v}"));
    }
    let (ok, stderr, files) = consume_bin(args, dir.path().join("x")).await;
    assert!(ok, "{stderr}");
    assert_eq!(files as u64, n, "-X: {stderr}");

    let config = dir.path().join("agent.toml");
    std::fs::write(&config, &toml).unwrap();
    let args = vec!["--config".to_string(), config.display().to_string()];
    let (ok, stderr, files) = consume_bin(args, dir.path().join("config")).await;
    assert!(ok, "{stderr}");
    assert_eq!(files as u64, n, "--config: {stderr}");
}
