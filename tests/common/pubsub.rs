//! Google's Cloud Pub/Sub emulator for tests: its own process (a JVM) on a free loopback
//! port, spoken to over its REST API (plain HTTP/1.1, no auth), killed on drop.
//!
//! The emulator is the Debian package `google-cloud-cli-pubsub-emulator` (from Google's Cloud
//! SDK apt repository, not Debian's archive) and needs a Java runtime (8 or newer; 17 here).
//! [`launcher`] finds it; [`Emulator::try_start`] returns `None` when it is missing, unless
//! `EDGECAM_REQUIRE_PUBSUB=1`, where it panics naming the package.
//!
//! What the emulator does that the helpers rely on (measured with emulator 0.8.20, SDK 528):
//! - it answers `GET /` with `200 Ok` once ready, and prints `Server started, listening on
//!   PORT` on stderr; about 1–3.5 s after the start on a loaded 2-core machine;
//! - on a port already in use it prints `java.net.BindException: Address already in use` but
//!   does NOT exit: [`Emulator::try_start`] notices, kills it and tries another port;
//! - every answer has a `Content-Length`, and it keeps the connection open after answering
//!   even when asked `Connection: close`: read by length, never until EOF;
//! - a body with a `Content-Type` other than JSON (e.g. curl `-d`'s form type) gets
//!   `404 Not Found` in plain text, so the helpers always send `application/json`;
//! - topic and subscription ids need at least 3 characters, must start with a letter and not
//!   with `goog` (else `400 INVALID_ARGUMENT "Invalid [topics] name"`);
//! - `pull` honours `"returnImmediately": true` (an empty pull answers `{}` at once; without
//!   it an empty pull is held about 89 s and then answers `{}`);
//! - with `enableMessageOrdering`, the next message of an ordering key is not delivered while
//!   an earlier one of that key is outstanding (pulled, not acked): see [`Emulator::pull_n`].
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::http::{self, Response};
use super::mosquitto::free_port;

/// The Debian package that provides the emulator.
pub const PACKAGE: &str = "google-cloud-cli-pubsub-emulator";

/// Environment variable naming the launcher script to use instead of searching for it.
pub const LAUNCHER_ENV: &str = "EDGECAM_PUBSUB_EMULATOR";

/// Environment variable: when `"1"`, a missing emulator (or Java) fails the test instead of
/// letting the caller skip it.
pub const REQUIRE_ENV: &str = "EDGECAM_REQUIRE_PUBSUB";

/// Where the Debian packages put the Cloud SDK.
pub const DEFAULT_SDK_ROOT: &str = "/usr/lib/google-cloud-sdk";

/// The launcher's path inside the Cloud SDK root.
const LAUNCHER_IN_SDK: &str = "platform/pubsub-emulator/bin/cloud-pubsub-emulator";

/// How long [`Emulator::start`] waits for the emulator to answer (it takes 1–3.5 s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Read/write timeout of each REST helper call. A [`paused`](Emulator::pause) emulator makes
/// the panicking helpers fail after this long.
pub const REST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports [`Emulator::try_start`] tries when the one it picked was taken meanwhile.
const PORT_TRIES: usize = 3;

/// What to install, for the panic messages.
fn install_hint() -> String {
    format!(
        "install the Debian package {PACKAGE} (from Google's Cloud SDK apt repository, not \
         Debian's archive) and a Java runtime (e.g. openjdk-17-jre-headless), or set \
         {LAUNCHER_ENV}=/path/to/cloud-pubsub-emulator"
    )
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The emulator's launcher script (`…/platform/pubsub-emulator/bin/cloud-pubsub-emulator`),
/// or `None` when it is not installed. Looks, in order, at `$EDGECAM_PUBSUB_EMULATOR` (when
/// set, only there), the SDK that the `gcloud` on `PATH` belongs to (`<root>/bin/gcloud`,
/// symlinks resolved), [`DEFAULT_SDK_ROOT`], and last the root that
/// `gcloud info --format=value(installation.sdk_root)` prints (about 1 s). Never panics.
pub fn launcher() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(LAUNCHER_ENV) {
        let p = PathBuf::from(p);
        return is_executable(&p).then_some(p);
    }
    let mut roots = Vec::new();
    if let Some(gcloud) = on_path("gcloud") {
        if let Some(root) = std::fs::canonicalize(&gcloud)
            .ok()
            .and_then(|real| real.parent()?.parent().map(Path::to_path_buf))
        {
            roots.push(root);
        }
    }
    roots.push(PathBuf::from(DEFAULT_SDK_ROOT));
    if let Some(p) = roots
        .iter()
        .map(|r| r.join(LAUNCHER_IN_SDK))
        .find(|p| is_executable(p))
    {
        return Some(p);
    }
    let out = Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || root.is_empty() {
        return None;
    }
    let p = Path::new(&root).join(LAUNCHER_IN_SDK);
    is_executable(&p).then_some(p)
}

/// Whether the launcher will find a `java`: `$JAVA_HOME/bin/java` when `JAVA_HOME` is set
/// (the launcher then uses only that), else `java` on `PATH`.
pub fn java_available() -> bool {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if !home.is_empty() => is_executable(&Path::new(&home).join("bin/java")),
        _ => on_path("java").is_some(),
    }
}

/// `kill -SIG -- -PGID`. The `--` is required: procps-ng's `kill -KILL -12345` (4.0.2, as
/// here) takes `-12345` for an option and calls `kill(-1, SIGKILL)`, every process the user
/// may signal, and still exits 0.
fn signal_group(sig: &str, pgid: u32) -> bool {
    Command::new("kill")
        .args([sig, "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

enum Readiness {
    Ready,
    PortTaken,
    Exited(ExitStatus),
    TimedOut,
}

/// One message as pulled from a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The id to [`ack`](Emulator::ack) it with (`projects/P/subscriptions/S:N` here; a new
    /// one at every delivery).
    pub ack_id: String,
    /// The payload, base64-decoded (empty when the message had none).
    pub data: Vec<u8>,
    /// The attributes (empty when it had none).
    pub attributes: BTreeMap<String, String>,
    /// The ordering key ("" when it had none).
    pub ordering_key: String,
    /// The id the publish answered with (decimal counters "1", "2", … on the emulator).
    pub message_id: String,
    /// The server's publish time, RFC 3339 with milliseconds (`2026-12-07T22:26:37.968Z`).
    pub publish_time: String,
}

/// A running Pub/Sub emulator on `127.0.0.1:`[`port`](Self::port), in its own process
/// group, which is SIGKILLed on drop. Its stdout and stderr go to a file in a temporary
/// directory (see [`log`](Self::log)): it logs several lines per request.
pub struct Emulator {
    child: Child,
    port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts the emulator and waits until it answers, or returns `None` when it (or Java) is
    /// not installed. Panics instead, naming [`PACKAGE`], when `EDGECAM_REQUIRE_PUBSUB=1`.
    /// Also panics when an installed emulator exits early or does not answer within
    /// [`READY_TIMEOUT`], with the tail of its output.
    pub fn try_start() -> Option<Emulator> {
        let why = match launcher() {
            Some(l) if java_available() => return Some(Self::spawn(&l)),
            Some(l) => format!("no java for {} (JAVA_HOME, PATH)", l.display()),
            None => format!(
                "no cloud-pubsub-emulator launcher found (${LAUNCHER_ENV}, the gcloud on \
                 PATH, {DEFAULT_SDK_ROOT})"
            ),
        };
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!(
                "{REQUIRE_ENV}=1 but the Pub/Sub emulator cannot run: {why}; {}",
                install_hint()
            );
        }
        None
    }

    /// [`try_start`](Self::try_start), panicking when the emulator is not installed (message
    /// naming the Debian package [`PACKAGE`]).
    pub fn start() -> Emulator {
        Self::try_start().unwrap_or_else(|| {
            panic!(
                "the Pub/Sub emulator is not installed or cannot run: {}",
                install_hint()
            )
        })
    }

    fn spawn(launcher: &Path) -> Emulator {
        let dir = tempfile::Builder::new()
            .prefix("pubsub-emulator")
            .tempdir()
            .unwrap();
        let mut taken = Vec::new();
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let log_path = dir.path().join(format!("emulator-{port}.log"));
            let log = File::create(&log_path).unwrap();
            let mut child = Command::new(launcher)
                .arg("--host=127.0.0.1")
                .arg(format!("--port={port}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", launcher.display()));
            match Self::wait_ready(&mut child, port, &log_path) {
                Readiness::Ready => {
                    return Emulator {
                        child,
                        port,
                        log_path,
                        _dir: dir,
                    }
                }
                Readiness::PortTaken => {
                    Self::kill_child(&mut child);
                    taken.push(port);
                }
                Readiness::Exited(status) => panic!(
                    "the Pub/Sub emulator ({}) exited with {status} before answering on port \
                     {port}:\n{}",
                    launcher.display(),
                    tail(&read_log(&log_path), 40)
                ),
                Readiness::TimedOut => {
                    Self::kill_child(&mut child);
                    panic!(
                        "the Pub/Sub emulator ({}) did not answer on port {port} within \
                         {READY_TIMEOUT:?}:\n{}",
                        launcher.display(),
                        tail(&read_log(&log_path), 40)
                    )
                }
            }
        }
        panic!("the Pub/Sub emulator found ports {taken:?} already in use, {PORT_TRIES} times")
    }

    /// Ready when its log says it listens on `port` and `GET /` answers 200 (checking the log
    /// too: on a port taken by another server, `GET /` could answer for that one).
    fn wait_ready(child: &mut Child, port: u16, log_path: &Path) -> Readiness {
        let until = Instant::now() + READY_TIMEOUT;
        let started = format!("Server started, listening on {port}");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Readiness::Exited(status);
            }
            let log = read_log(log_path);
            if log.contains("Address already in use") || log.contains("BindException") {
                return Readiness::PortTaken;
            }
            if log.contains(&started)
                && http::request(port, "GET", "/", &[], b"", Duration::from_secs(2))
                    .is_ok_and(|r| r.status == 200)
            {
                return Readiness::Ready;
            }
            if Instant::now() >= until {
                return Readiness::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL to the child's process group (the launcher execs `java`, so the group is the
    /// JVM), then to the child itself in case the group signal failed, then reaps it.
    fn kill_child(child: &mut Child) {
        signal_group("-KILL", child.id());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:PORT"`, the form of `PUBSUB_EMULATOR_HOST`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `"http://127.0.0.1:PORT"`, the REST API's root (paths start with `/v1/`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The PID of the serving JVM (also its process group id: the launcher script execs
    /// `java` and the group was made for it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The emulator's stdout and stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Freezes the emulator (SIGSTOP to its process group): connections are still accepted
    /// (by the kernel's backlog) but nothing is answered until [`resume`](Self::resume); a
    /// request sent meanwhile is answered after it. Panics when `kill` fails.
    pub fn pause(&self) {
        assert!(
            signal_group("-STOP", self.child.id()),
            "kill -STOP -- -{}",
            self.child.id()
        );
    }

    /// Lets a [`pause`](Self::pause)d emulator run again (SIGCONT to its process group).
    /// Panics when `kill` fails.
    pub fn resume(&self) {
        assert!(
            signal_group("-CONT", self.child.id()),
            "kill -CONT -- -{}",
            self.child.id()
        );
    }

    /// One REST call: `method path` with `body` as `application/json` (send `b""` for none),
    /// timing out after `timeout` (read and write). Returns the I/O error (refused, timed out
    /// while [`pause`](Self::pause)d) instead of panicking. Any status is returned as is.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> std::io::Result<Response> {
        http::request(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json")],
            body,
            timeout,
        )
    }

    /// [`request`](Self::request) with a JSON body (or none) and [`REST_TIMEOUT`]; panics on
    /// an I/O error, naming the call. Any status is returned as is.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.request(method, path, &bytes, REST_TIMEOUT)
            .unwrap_or_else(|e| panic!("Pub/Sub emulator {method} {path}: {e}"))
    }

    /// [`call`](Self::call), panicking (with status and body) unless the answer is 200; its
    /// JSON body.
    fn call_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.call(method, path, body);
        assert_eq!(
            r.status,
            200,
            "Pub/Sub emulator {method} {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// Creates `projects/{project}/topics/{topic}` (`PUT`, no body). Panics on any answer but
    /// 200, e.g. 409 ALREADY_EXISTS, or 400 for an id shorter than 3 characters.
    pub fn create_topic(&self, project: &str, topic: &str) {
        self.call_ok(
            "PUT",
            &format!("/v1/projects/{project}/topics/{topic}"),
            None,
        );
    }

    /// The topic's JSON (`{"name": "projects/P/topics/T"}`), or `None` when it does not exist
    /// (404 NOT_FOUND "Topic not found"). Panics on any other answer.
    pub fn get_topic(&self, project: &str, topic: &str) -> Option<Value> {
        let path = format!("/v1/projects/{project}/topics/{topic}");
        let r = self.call("GET", &path, None);
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!(
                "Pub/Sub emulator GET {path}: {s} {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }

    /// Creates `projects/{project}/subscriptions/{sub}` on `projects/{project}/topics/{topic}`
    /// with a 60 s ack deadline, with message ordering when `ordering`. Panics on any answer
    /// but 200 (404 "Subscription topic does not exist", 409 ALREADY_EXISTS, …).
    /// Only messages published after this call reach it.
    pub fn create_subscription(&self, project: &str, sub: &str, topic: &str, ordering: bool) {
        self.call_ok(
            "PUT",
            &format!("/v1/projects/{project}/subscriptions/{sub}"),
            Some(&json!({
                "topic": format!("projects/{project}/topics/{topic}"),
                "enableMessageOrdering": ordering,
                "ackDeadlineSeconds": 60,
            })),
        );
    }

    /// Publishes one message (`data` base64-encoded, `attributes`, and `ordering_key` unless
    /// it is "") to the topic; its message id. Panics on any answer but 200 (404 "Topic not
    /// found"; 400 for a message with neither data nor attributes). The emulator refuses
    /// nothing up to about 11,000,000 bytes of message, and never answers a larger one.
    pub fn publish(
        &self,
        project: &str,
        topic: &str,
        data: &[u8],
        attributes: &[(&str, &str)],
        ordering_key: &str,
    ) -> String {
        let mut m = serde_json::Map::new();
        if !data.is_empty() {
            m.insert(
                "data".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .into(),
            );
        }
        if !attributes.is_empty() {
            let attrs: serde_json::Map<String, Value> = attributes
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect();
            m.insert("attributes".into(), Value::Object(attrs));
        }
        if !ordering_key.is_empty() {
            m.insert("orderingKey".into(), ordering_key.into());
        }
        let path = format!("/v1/projects/{project}/topics/{topic}:publish");
        let v = self.call_ok("POST", &path, Some(&json!({ "messages": [m] })));
        v["messageIds"][0]
            .as_str()
            .unwrap_or_else(|| panic!("POST {path}: no messageIds in {v}"))
            .to_string()
    }

    /// One pull of at most `max` (≥ 1) messages, answered at once (`"returnImmediately":
    /// true`, which the emulator honours): an empty `Vec` when nothing is deliverable now.
    /// Pulled messages are outstanding until [`ack`](Self::ack)ed or their ack deadline (60 s
    /// with [`create_subscription`](Self::create_subscription)) passes, then redelivered with
    /// new ack ids. Panics on any answer but 200 (404 "Subscription does not exist", 400 for
    /// `max` 0) or on a message that does not parse.
    pub fn pull(&self, project: &str, sub: &str, max: u32) -> Vec<Pulled> {
        let v = self.call_ok(
            "POST",
            &format!("/v1/projects/{project}/subscriptions/{sub}:pull"),
            Some(&json!({ "maxMessages": max, "returnImmediately": true })),
        );
        parse_pulled(&v)
    }

    /// Pulls and acks until `n` messages arrived or `timeout` passed (polling every 50 ms);
    /// what arrived, in delivery order, possibly fewer than `n` (or more, when one pull
    /// returned more than asked). Acking each batch is what lets an ordered subscription
    /// deliver the next messages of a key. Panics as [`pull`](Self::pull) and
    /// [`ack`](Self::ack) do.
    pub fn pull_n(&self, project: &str, sub: &str, n: usize, timeout: Duration) -> Vec<Pulled> {
        let until = Instant::now() + timeout;
        let mut out: Vec<Pulled> = Vec::new();
        while out.len() < n {
            let want = (n - out.len()).min(1000) as u32;
            let batch = self.pull(project, sub, want);
            if batch.is_empty() {
                if Instant::now() >= until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let ids: Vec<&str> = batch.iter().map(|p| p.ack_id.as_str()).collect();
            self.ack(project, sub, &ids);
            out.extend(batch);
        }
        out
    }

    /// Acknowledges the messages with these ack ids (does nothing for none: the emulator
    /// answers 400 "No ack ids specified." to an empty list). An unknown or stale id is
    /// ignored (200). Panics on any answer but 200.
    pub fn ack<S: AsRef<str>>(&self, project: &str, sub: &str, ack_ids: &[S]) {
        if ack_ids.is_empty() {
            return;
        }
        let ids: Vec<&str> = ack_ids.iter().map(AsRef::as_ref).collect();
        self.call_ok(
            "POST",
            &format!("/v1/projects/{project}/subscriptions/{sub}:acknowledge"),
            Some(&json!({ "ackIds": ids })),
        );
    }

    /// Sets the ack deadline of these outstanding messages to `seconds` from now; 0 is a
    /// nack (redelivered at the next pull; on an ordered subscription, once no later message
    /// of the key is outstanding). Does nothing for no ids. Panics on any answer but 200
    /// (400 "Invalid ack id" for a malformed id).
    pub fn modify_ack_deadline<S: AsRef<str>>(
        &self,
        project: &str,
        sub: &str,
        ack_ids: &[S],
        seconds: u32,
    ) {
        if ack_ids.is_empty() {
            return;
        }
        let ids: Vec<&str> = ack_ids.iter().map(AsRef::as_ref).collect();
        self.call_ok(
            "POST",
            &format!("/v1/projects/{project}/subscriptions/{sub}:modifyAckDeadline"),
            Some(&json!({ "ackIds": ids, "ackDeadlineSeconds": seconds })),
        );
    }
}

/// The messages of a pull answer (`{}` when there are none). Panics naming the answer when a
/// message lacks its ack id or message id, or its data is not base64.
fn parse_pulled(v: &Value) -> Vec<Pulled> {
    let Some(list) = v.get("receivedMessages") else {
        return Vec::new();
    };
    let list = list
        .as_array()
        .unwrap_or_else(|| panic!("receivedMessages is not a list: {v}"));
    list.iter()
        .map(|rm| {
            let m = &rm["message"];
            let text = |field: &Value| field.as_str().unwrap_or_default().to_string();
            let data = match m.get("data").and_then(Value::as_str) {
                Some(d) => base64::engine::general_purpose::STANDARD
                    .decode(d)
                    .unwrap_or_else(|e| panic!("data is not base64 ({e}): {rm}")),
                None => Vec::new(),
            };
            let attributes: BTreeMap<String, String> = m
                .get("attributes")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let v = v
                                .as_str()
                                .unwrap_or_else(|| panic!("attribute {k} is not text: {rm}"));
                            (k.clone(), v.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            Pulled {
                ack_id: rm["ackId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no ackId in {rm}"))
                    .to_string(),
                data,
                attributes,
                ordering_key: text(&m["orderingKey"]),
                message_id: m["messageId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no messageId in {rm}"))
                    .to_string(),
                publish_time: text(&m["publishTime"]),
            }
        })
        .collect()
}

impl Drop for Emulator {
    /// SIGKILL to the whole process group (works on a paused one too), then reaps it.
    fn drop(&mut self) {
        Self::kill_child(&mut self.child);
    }
}
