//! A real Mosquitto broker for tests: its own process on a free loopback port, persistence in
//! a temporary directory, killed on drop.
//!
//! The binary is `$MOSQUITTO`, else `/usr/sbin/mosquitto`, else `mosquitto` on `PATH`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// How long [`Mosquitto::start`] and [`Mosquitto::restart`] wait for the port to accept.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener for [`Mosquitto::start_tls`].
pub struct TlsListener<'a> {
    /// CA that client certificates must chain to (`cafile`).
    pub cafile: &'a Path,
    /// The broker's certificate and key (PEM).
    pub certfile: &'a Path,
    pub keyfile: &'a Path,
    /// Mutual TLS: clients must present a certificate signed by `cafile`.
    pub require_certificate: bool,
    /// `(user, password)` pairs; when not empty, anonymous clients are refused on this
    /// listener.
    pub users: &'a [(&'a str, &'a str)],
}

/// A running `mosquitto`.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// The broker binary to run.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MOSQUITTO") {
        return PathBuf::from(p);
    }
    let default = Path::new("/usr/sbin/mosquitto");
    if default.exists() {
        return default.to_path_buf();
    }
    PathBuf::from("mosquitto")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Mosquitto {
    /// Starts a broker logging everything (`log_type all`).
    pub fn start() -> Mosquitto {
        Self::start_with(true)
    }

    /// Starts a broker logging connections and errors only (for benchmarks).
    pub fn start_quiet() -> Mosquitto {
        Self::start_with(false)
    }

    /// Starts a broker with a plain listener ([`port`](Self::port), anonymous, for the
    /// test's own clients) and a TLS listener ([`tls_port`](Self::tls_port)).
    pub fn start_tls(tls: &TlsListener) -> Mosquitto {
        Self::start_with_tls(true, Some(tls))
    }

    fn start_with(verbose: bool) -> Mosquitto {
        Self::start_with_tls(verbose, None)
    }

    fn start_with_tls(verbose: bool, tls: Option<&TlsListener>) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls_port = tls.map(|_| free_port());
        let listeners = match (tls, tls_port) {
            (Some(t), Some(tls_port)) => {
                let mut l = format!(
                    "per_listener_settings true\n\
                     listener {port} 127.0.0.1\n\
                     allow_anonymous true\n\
                     listener {tls_port} 127.0.0.1\n\
                     cafile {}\n\
                     certfile {}\n\
                     keyfile {}\n\
                     require_certificate {}\n",
                    t.cafile.display(),
                    t.certfile.display(),
                    t.keyfile.display(),
                    t.require_certificate,
                );
                if t.users.is_empty() {
                    l.push_str("allow_anonymous true\n");
                } else {
                    let file = dir.path().join("passwords");
                    for (i, (user, password)) in t.users.iter().enumerate() {
                        let mut c = Command::new("mosquitto_passwd");
                        if i == 0 {
                            c.arg("-c");
                        }
                        let ok = c
                            .arg("-b")
                            .arg(&file)
                            .arg(user)
                            .arg(password)
                            .status()
                            .is_ok_and(|s| s.success());
                        assert!(ok, "mosquitto_passwd failed (package mosquitto)");
                    }
                    l.push_str(&format!(
                        "allow_anonymous false\npassword_file {}\n",
                        file.display()
                    ));
                }
                l
            }
            _ => format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        };
        let config = dir.path().join("mosquitto.conf");
        let log_types = if verbose {
            "log_type all\n".to_string()
        } else {
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n".to_string()
        };
        let text = format!(
            "{listeners}\
             persistence true\n\
             persistence_location {dir}/\n\
             max_inflight_messages 100\n\
             max_queued_messages 100000\n\
             log_dest file {dir}/mosquitto.log\n\
             {log_types}\
             sys_interval 1\n\
             # Run as whoever runs the tests (as root, mosquitto would switch to the user\n\
             # `mosquitto`, which cannot write the temporary directory).\n\
             user {user}\n",
            dir = dir.path().display(),
            user = std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".into()),
        );
        std::fs::write(&config, text).unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            tls_port,
            dir,
            config,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("stderr.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        self.child = Some(child);
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "mosquitto exited with {status}: {}\n{}",
                    std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
                    self.log()
                );
            }
            assert!(
                Instant::now() < until,
                "mosquitto did not accept connections on port {} within {READY_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and starts it again on
    /// the same port with the same persistence: sessions and queued QoS 1 messages survive.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGTERM, then waits (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered, like a
    /// hung broker or a dead network path.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`pause`](Self::pause)d broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port on 127.0.0.1 ([`start_tls`](Self::start_tls) only).
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("started with start_tls")
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Client ids that connected so far (from the log's `New client connected … as <id>`
    /// lines), each once.
    pub fn connected_client_ids(&self) -> BTreeSet<String> {
        self.connections().into_iter().collect()
    }

    /// Client ids of every connection so far, in order (a reconnect appears again).
    pub fn connections(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = l.split_once("New client connected from ")?.1;
                let id = rest.split_once(" as ")?.1;
                Some(id.rsplit_once(" (").map_or(id, |(id, _)| id).to_string())
            })
            .collect()
    }

    /// Waits until the log contains `needle` `count` times; panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < until,
                "mosquitto log did not show {needle:?} {count} times within {timeout:?}:\n{}",
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's own count of connected clients (`$SYS/broker/clients/connected`,
    /// refreshed every second), read with a short-lived MQTT 5 client of its own, which the
    /// count includes. Waits until the count equals `expected` or `timeout` passes and
    /// returns the last value seen.
    pub async fn clients_connected(&self, expected: u64, timeout: Duration) -> Option<u64> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut o = MqttOptions::new(
            format!("sys-probe-{}", std::process::id()),
            "127.0.0.1",
            self.port,
        );
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 10);
        client
            .subscribe(
                "$SYS/broker/clients/connected",
                rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            )
            .await
            .unwrap();
        let until = tokio::time::Instant::now() + timeout;
        let mut last = None;
        while let Ok(ev) = tokio::time::timeout_at(until, el.poll()).await {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    last = std::str::from_utf8(&p.payload)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    if last == Some(expected) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), el.poll()).await;
        last
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Messages a [`subscriber`] received, in order.
pub type Inbox = Arc<Mutex<Vec<Publish>>>;

/// An MQTT 5 client subscribed to `filter` (waits for the SUBACK), collecting messages.
pub async fn subscriber(port: u16, id: &str, filter: &str) -> (AsyncClient, Inbox) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(Some(4 << 20))
        .set_keep_alive(Duration::from_secs(5));
    subscribe_with(o, filter).await
}

/// Like [`subscriber`], with the caller's options (e.g. a persistent session). The client
/// stays connected for the rest of the test even when the caller drops its handle.
pub async fn subscribe_with(o: MqttOptions, filter: &str) -> (AsyncClient, Inbox) {
    let (c, mut el) = AsyncClient::new(o, 100);
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let inbox: Inbox = Default::default();
    let sink = inbox.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let keep_open = c.clone();
    tokio::spawn(async move {
        let _keep_open = keep_open; // the request channel stays open while the loop runs
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push(p),
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    (c, inbox)
}

/// Waits up to 10 s for `f`.
/// Polls `f` every 20 ms until it holds, or panics after `timeout` naming `what`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
