//! A known secret never leaves edgecam: not in `check-config`'s output, not in its errors,
//! not in the logs of `run` and `bridge` at `RUST_LOG=debug`, not in the process
//! environment (references name a file or credential; the text is read from there), and not
//! in what the control plane publishes on MQTT.
//!
//! Every secret is `s3cr3t-<random hex>` (or a random number where the test needs one), made
//! afresh per test, so finding it anywhere means it leaked.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::mosquitto::{eventually, free_port, subscriber, tail, Mosquitto};
use rumqttc::v5::mqttbytes::v5::Publish;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_edgecam");

/// How long `run` and `bridge` run before SIGTERM.
const RUN_FOR: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------
// Secrets and where to look for them.
// ---------------------------------------------------------------------------------------

/// A secret nobody else could have written: `s3cr3t-` and 32 hex digits.
fn secret() -> String {
    format!("s3cr3t-{}", random_hex())
}

/// A secret made of digits only (16 of them, fits a TOML integer), for keys given a number.
fn numeric_secret() -> String {
    let n = u64::from_str_radix(&random_hex()[20..], 16).unwrap() % 1_000_000_000_000_000;
    format!("7{n:015}")
}

/// 32 hex digits, the last 18 random (UUID v7: a millisecond timestamp, then random bits).
fn random_hex() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Panics, showing the surroundings, when any of `secrets` occurs in `text`.
fn assert_absent(what: &str, text: &[u8], secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty());
        if let Some(i) = find(text, s.as_bytes()) {
            let from = i.saturating_sub(300);
            let to = (i + s.len() + 300).min(text.len());
            panic!(
                "secret {s:?} leaked into {what} at byte {i}:\n…{}…",
                String::from_utf8_lossy(&text[from..to])
            );
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `contents` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// `edgecam check-config --config <config>` with `envs` added to the environment.
fn check_config(config: &Path, envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["check-config", "--config"]).arg(config);
    c.env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The agent part every check-config case shares: a synthetic source and a Kafka sink.
const AGENT_HEAD: &str = "[device]\nid = \"secrets\"\n[source]\nkind = \"synthetic\"\n\
                          width = 64\nheight = 48\n[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\n";

// ---------------------------------------------------------------------------------------
// 1. check-config shows every secret as <redacted…>, whatever its source.
// ---------------------------------------------------------------------------------------

#[test]
fn check_config_redacts_inline_file_and_credential_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let creds_dir = creds.path().to_str().unwrap();

    let kafka_inline = secret();
    let mqtt_file = secret();
    let mqtt_cred = secret();
    let kafka_cred = secret();
    let mqtt_env_file = secret();
    let kafka_env = secret();
    // A file reference keeps the text up to one trailing newline.
    write(dir.path(), "mqtt.pass", &format!("{mqtt_file}\n"));
    write(creds.path(), "mqtt", &format!("{mqtt_cred}\n"));
    write(creds.path(), "kafka", &kafka_cred);
    let env_file = write(dir.path(), "env-mqtt.pass", &format!("{mqtt_env_file}\n"));
    let env_file = env_file.to_str().unwrap();

    let sasl = "\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
                \"sasl.username\" = \"edge\"\n";
    let mqtt = "[mqtt]\nhost = \"127.0.0.1\"\nusername = \"edge\"\n";
    struct Case<'a> {
        name: &'a str,
        toml: String,
        envs: Vec<(&'a str, &'a str)>,
        /// Secrets the configuration holds (all must be hidden).
        secrets: Vec<&'a str>,
        /// What `mqtt.password` and `kafka.properties."sasl.password"` must print as.
        mqtt_shown: &'a str,
        kafka_shown: &'a str,
    }
    let cases = [
        Case {
            name: "sasl.password inline, mqtt.password from a relative file",
            toml: format!(
                "{AGENT_HEAD}[kafka.properties]\n{sasl}\"sasl.password\" = \"{kafka_inline}\"\n\
                 {mqtt}password = {{ file = \"mqtt.pass\" }}\n"
            ),
            envs: vec![],
            secrets: vec![&kafka_inline, &mqtt_file],
            mqtt_shown: "<redacted: from file",
            kafka_shown: "<redacted>",
        },
        Case {
            name: "sasl.password inline, mqtt.password from a credential",
            toml: format!(
                "{AGENT_HEAD}[kafka.properties]\n{sasl}\"sasl.password\" = \"{kafka_inline}\"\n\
                 {mqtt}password = {{ credential = \"mqtt\" }}\n"
            ),
            envs: vec![("CREDENTIALS_DIRECTORY", creds_dir)],
            secrets: vec![&kafka_inline, &mqtt_cred],
            mqtt_shown: "<redacted: from credential mqtt>",
            kafka_shown: "<redacted>",
        },
        Case {
            name: "both from credentials",
            toml: format!(
                "{AGENT_HEAD}[kafka.properties]\n{sasl}\"sasl.password\" = {{ credential = \"kafka\" }}\n\
                 {mqtt}password = {{ credential = \"mqtt\" }}\n"
            ),
            envs: vec![("CREDENTIALS_DIRECTORY", creds_dir)],
            secrets: vec![&kafka_cred, &mqtt_cred],
            mqtt_shown: "<redacted: from credential mqtt>",
            kafka_shown: "<redacted: from credential kafka>",
        },
        Case {
            name: "from the environment: EDGECAM_MQTT__PASSWORD__FILE and an inline sasl.password",
            toml: format!("{AGENT_HEAD}[kafka.properties]\n{sasl}{mqtt}"),
            envs: vec![
                ("EDGECAM_MQTT__PASSWORD__FILE", env_file),
                ("EDGECAM_KAFKA__PROPERTIES__SASL_PASSWORD", &kafka_env),
            ],
            secrets: vec![&kafka_env, &mqtt_env_file],
            mqtt_shown: "<redacted: from file",
            kafka_shown: "<redacted>",
        },
    ];
    for case in &cases {
        let config = write(dir.path(), "agent.toml", &case.toml);
        for s in &case.secrets {
            // The secret is really there to leak: in the file, a referenced file or the env.
            let in_reach = case.toml.contains(s)
                || case.envs.iter().any(|(_, v)| v.contains(s))
                || [dir.path(), creds.path()].iter().any(|d| {
                    std::fs::read_dir(d).unwrap().any(|f| {
                        std::fs::read_to_string(f.unwrap().path()).is_ok_and(|t| t.contains(s))
                    })
                });
            assert!(in_reach, "{}: {s} is nowhere", case.name);
        }
        let out = check_config(&config, &case.envs);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", case.name);
        assert_absent(
            &format!("{}: stdout", case.name),
            &out.stdout,
            &case.secrets,
        );
        assert_absent(
            &format!("{}: stderr", case.name),
            &out.stderr,
            &case.secrets,
        );
        assert!(stdout.contains("<redacted"), "{}: {stdout}", case.name);
        assert!(
            stderr.contains("valid agent configuration"),
            "{}: {stderr}",
            case.name
        );
        // The resolved configuration is TOML; both secrets are there, redacted.
        let v: toml::Value = toml::from_str(&stdout).unwrap();
        let mqtt_pw = v["mqtt"]["password"].as_str().unwrap();
        let kafka_pw = v["kafka"]["properties"]["sasl.password"].as_str().unwrap();
        assert!(
            mqtt_pw.starts_with(case.mqtt_shown),
            "{}: {mqtt_pw}",
            case.name
        );
        assert!(
            kafka_pw.starts_with(case.kafka_shown),
            "{}: {kafka_pw}",
            case.name
        );
        assert_eq!(v["mqtt"]["username"].as_str(), Some("edge"));
    }
}

// ---------------------------------------------------------------------------------------
// 2. A configuration error next to a secret names the key, never the secret.
// ---------------------------------------------------------------------------------------

#[test]
fn config_errors_never_contain_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let creds_dir = creds.path().to_str().unwrap();
    let s = secret();
    let n = numeric_secret();
    let mqtt = "[mqtt]\nhost = \"127.0.0.1\"\nusername = \"edge\"\n";
    write(dir.path(), "mqtt.pass", &format!("{s}\n"));
    write(creds.path(), "kafka", &s);

    /// What, the configuration, the environment, the secret, what stderr must name.
    type ErrorCase<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let mut cases: Vec<ErrorCase> = vec![
        (
            "wrong type after an inline mqtt.password",
            format!("{AGENT_HEAD}{mqtt}password = \"{s}\"\nkeep_alive_secs = \"x\"\n"),
            vec![],
            &s,
            "mqtt.keep_alive_secs",
        ),
        (
            "out of range after an inline mqtt.password",
            format!("{AGENT_HEAD}{mqtt}password = \"{s}\"\nport = 99999\n"),
            vec![],
            &s,
            "mqtt.port",
        ),
        (
            "mqtt.password without mqtt.username",
            format!("{AGENT_HEAD}[mqtt]\nhost = \"127.0.0.1\"\npassword = \"{s}\"\n"),
            vec![],
            &s,
            "mqtt.password",
        ),
        (
            "mqtt.password as an array",
            format!("{AGENT_HEAD}{mqtt}password = [\"{s}\"]\n"),
            vec![],
            &s,
            "mqtt.password",
        ),
        (
            "mqtt.password as an integer",
            format!("{AGENT_HEAD}{mqtt}password = {n}\n"),
            vec![],
            &n,
            "mqtt.password",
        ),
        (
            "mqtt.password as an inline table with the secret under an unknown key",
            format!("{AGENT_HEAD}{mqtt}password = {{ file = \"mqtt.pass\", text = \"{s}\" }}\n"),
            vec![],
            &s,
            "mqtt.password",
        ),
        (
            "mqtt.password given twice",
            format!("{AGENT_HEAD}{mqtt}password = \"{s}\"\npassword = \"{s}\"\n"),
            vec![],
            &s,
            "TOML syntax error",
        ),
        (
            "unterminated string holding the secret",
            format!("{AGENT_HEAD}{mqtt}password = \"{s}\n"),
            vec![],
            &s,
            "TOML syntax error",
        ),
        (
            "junk after the secret on its line",
            format!("{AGENT_HEAD}{mqtt}password = \"{s}\" junk\n"),
            vec![],
            &s,
            "TOML syntax error",
        ),
        (
            "sasl.password as an array",
            format!("{AGENT_HEAD}[kafka.properties]\n\"sasl.password\" = [\"{s}\"]\n"),
            vec![],
            &s,
            "kafka.properties.sasl.password",
        ),
        (
            "a property librdkafka refuses beside an inline sasl.password",
            format!(
                "{AGENT_HEAD}[kafka.properties]\n\"sasl.mechanism\" = \"PLAIN\"\n\
                 \"sasl.password\" = \"{s}\"\n\"sasl.username\" = \"u\"\n\
                 \"security.protocol\" = \"SASL_PLAINTEXT\"\n\"socket.timeout.ms\" = \"abc\"\n"
            ),
            vec![],
            &s,
            "kafka.properties.socket.timeout.ms",
        ),
        (
            // Without OpenSSL in this build librdkafka refuses the property itself and
            // quotes its value; with OpenSSL the next property is refused.
            "ssl.key.password, then a refused property",
            format!(
                "{AGENT_HEAD}[kafka.properties]\n\"ssl.key.password\" = \"{s}\"\n\
                 \"topic.metadata.refresh.interval.ms\" = \"abc\"\n"
            ),
            vec![],
            &s,
            "kafka.properties.",
        ),
        (
            "sasl.password from a credential, then a refused property",
            format!(
                "{AGENT_HEAD}[kafka.properties]\n\"sasl.password\" = {{ credential = \"kafka\" }}\n\
                 \"socket.timeout.ms\" = \"abc\"\n"
            ),
            vec![("CREDENTIALS_DIRECTORY", creds_dir)],
            &s,
            "kafka.properties.socket.timeout.ms",
        ),
        (
            "EDGECAM_MQTT__PASSWORD without a username",
            format!("{AGENT_HEAD}[mqtt]\nhost = \"127.0.0.1\"\n"),
            vec![("EDGECAM_MQTT__PASSWORD", &s)],
            &s,
            "mqtt.password",
        ),
        (
            "EDGECAM_KAFKA__PROPERTIES__SASL_PASSWORD, then a bad key in the file",
            format!("{AGENT_HEAD}[encode]\nmax_message_bytes = 0\n"),
            vec![("EDGECAM_KAFKA__PROPERTIES__SASL_PASSWORD", &s)],
            &s,
            "encode.max_message_bytes",
        ),
    ];
    let bridge_case = format!(
        "[bridge]\nid = \"b\"\n[[bridge.inputs]]\ntopic = \"cameras/{{device}}/jpeg\"\n\
         format = \"raw\"\nqos = 7\n{mqtt}password = \"{s}\"\n\
         [kafka]\nbootstrap_servers = \"127.0.0.1:9\"\n"
    );
    cases.push((
        "bridge: bad input after an inline mqtt.password",
        bridge_case,
        vec![],
        &s,
        "bridge.inputs",
    ));
    for (what, toml, envs, secret, key) in &cases {
        let config = write(dir.path(), "bad.toml", toml);
        let out = check_config(&config, envs);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
        assert!(stderr.contains(key), "{what}: {key:?} not in {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
        assert_absent(&format!("{what}: stderr"), &out.stderr, &[secret]);
    }
}

// ---------------------------------------------------------------------------------------
// 3 and 4. `run` and `bridge` at RUST_LOG=debug.
// ---------------------------------------------------------------------------------------

/// A spawned `edgecam`, stdout and stderr going to files; killed on drop.
struct Process {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    fn spawn(args: &[&str], config: &Path, creds: &Path, logs: &Path) -> Process {
        let stdout = logs.join("stdout.log");
        let stderr = logs.join("stderr.log");
        let child = Command::new(BIN)
            .env("STATE_DIRECTORY", common::state_dir())
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "debug")
            .env("CREDENTIALS_DIRECTORY", creds)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Process {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Panics (with the log) when the process has already exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "edgecam exited early ({status}):\n{}",
                tail(&self.stderr(), 40)
            );
        }
    }

    /// The process's environment as `/proc` shows it, checked for the secrets; returns it.
    fn environ_without(&mut self, secrets: &[&str]) -> Vec<u8> {
        self.assert_running();
        let env = std::fs::read(format!("/proc/{}/environ", self.pid())).unwrap();
        assert_absent("/proc/<pid>/environ", &env, secrets);
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid())).unwrap();
        assert_absent("/proc/<pid>/cmdline", &cmdline, secrets);
        env
    }

    /// SIGTERM; waits (at most 20 s) for the exit; returns stdout and stderr.
    async fn terminate(&mut self) -> (Vec<u8>, Vec<u8>) {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {}", child.id());
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "edgecam did not exit within 20 s of SIGTERM:\n{}",
                    tail(&self.stderr(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (
            std::fs::read(&self.stdout).unwrap(),
            std::fs::read(&self.stderr).unwrap(),
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Everything a message carries, as bytes: topic, payload, user properties, content type.
fn message_bytes(p: &Publish) -> Vec<u8> {
    let mut b = p.topic.to_vec();
    b.extend_from_slice(&p.payload);
    if let Some(props) = &p.properties {
        for (k, v) in &props.user_properties {
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        if let Some(ct) = &props.content_type {
            b.extend_from_slice(ct.as_bytes());
        }
    }
    b
}

fn topic_is(p: &Publish, t: &str) -> bool {
    p.topic.as_ref() == t.as_bytes()
}

/// Checks a finished process's output: the secrets are absent, debug logging was on, and
/// `connected` (the log line of an MQTT login) is there.
fn check_output(stdout: &[u8], stderr: &[u8], secrets: &[&str], connected: &str) {
    assert_absent("stdout", stdout, secrets);
    assert_absent("stderr", stderr, secrets);
    let err = text(stderr);
    assert!(
        err.contains("DEBUG"),
        "RUST_LOG=debug took effect:\n{}",
        tail(&err, 40)
    );
    assert!(err.contains(connected), "{}", tail(&err, 40));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_keeps_secrets_out_of_logs_environment_and_mqtt_state() {
    let broker = Mosquitto::start();
    let port = broker.port();
    let device = format!("sec-{}", &random_hex()[24..]);
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let kafka_secret = secret();
    let mqtt_secret = secret();
    let secrets = [kafka_secret.as_str(), mqtt_secret.as_str()];
    write(creds.path(), "kafka", &format!("{kafka_secret}\n"));
    write(creds.path(), "mqtt", &format!("{mqtt_secret}\n"));
    let config = write(
        dir.path(),
        "agent.toml",
        &format!(
            "[device]\nid = \"{device}\"\n\
             [source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\nfps = 20\nmax_frames = 0\n\
             [pipeline]\nshutdown_grace_ms = 500\n\
             [kafka]\nbootstrap_servers = \"127.0.0.1:{closed}\"\nmessage_timeout_ms = 2000\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"u\"\n\
             \"sasl.password\" = {{ credential = \"kafka\" }}\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_secs = 5\n\
             username = \"edge-user\"\npassword = {{ credential = \"mqtt\" }}\n",
            closed = free_port(),
        ),
    );
    // The configuration is valid as written (librdkafka accepts SASL_PLAINTEXT here).
    let creds_dir = creds.path().to_str().unwrap();
    let out = check_config(&config, &[("CREDENTIALS_DIRECTORY", creds_dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let (_all, inbox) = subscriber(port, "t-all", &format!("edgecam/{device}/#")).await;
    let started = Instant::now();
    let mut agent = Process::spawn(&["run"], &config, creds.path(), dir.path());

    let state_topic = format!("edgecam/{device}/state");
    let status_topic = format!("edgecam/{device}/status");
    eventually("the state document and `online`", || {
        let m = inbox.lock().unwrap();
        m.iter().any(|p| topic_is(p, &state_topic))
            && m.iter()
                .any(|p| topic_is(p, &status_topic) && p.payload.as_ref() == b"online")
    })
    .await;

    // The environment holds where the secrets are, not the secrets.
    let env = agent.environ_without(&secrets);
    let creds_var = format!("CREDENTIALS_DIRECTORY={creds_dir}");
    assert!(
        env.split(|b| *b == 0).any(|v| v == creds_var.as_bytes()),
        "{creds_var} in the environment"
    );

    // A subscriber arriving now gets the retained state document.
    let (_late, late) = subscriber(port, "t-late", &state_topic).await;
    eventually("the retained state document", || {
        late.lock().unwrap().iter().any(|p| p.retain)
    })
    .await;

    tokio::time::sleep(RUN_FOR.saturating_sub(started.elapsed())).await;
    agent.environ_without(&secrets);
    let (stdout, stderr) = agent.terminate().await;
    check_output(&stdout, &stderr, &secrets, "MQTT connected");
    let err = text(&stderr);
    assert!(err.contains("SIGTERM"), "{}", tail(&err, 40));
    assert!(
        err.lines().any(|l| l.starts_with("frames: captured")),
        "the summary is there: {}",
        tail(&err, 40)
    );

    // Everything published under edgecam/<device>/ is free of secrets; the state is JSON.
    let published: Vec<Publish> = inbox
        .lock()
        .unwrap()
        .iter()
        .chain(late.lock().unwrap().iter())
        .cloned()
        .collect();
    let mut states = 0;
    for p in &published {
        assert_absent(
            &format!("MQTT message on {}", text(&p.topic)),
            &message_bytes(p),
            &secrets,
        );
        if topic_is(p, &state_topic) {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            assert!(v.is_object(), "{v}");
            states += 1;
        }
    }
    assert!(states >= 2, "state documents seen: {states}");

    // The broker saw the login with the configured user name (so the password was loaded
    // and sent along).
    let log = broker.log();
    assert!(
        log.contains(&format!("as edgecam-{device} ")) && log.contains("u'edge-user'"),
        "{}",
        tail(&log, 40)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_keeps_secrets_out_of_logs_and_environment() {
    let broker = Mosquitto::start();
    let port = broker.port();
    let id = format!("sec-{}", &random_hex()[24..]);
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let mqtt_secret = secret();
    let kafka_secret = secret();
    let secrets = [mqtt_secret.as_str(), kafka_secret.as_str()];
    write(creds.path(), "mqtt", &format!("{mqtt_secret}\n"));
    write(dir.path(), "kafka.pass", &format!("{kafka_secret}\n"));
    let config = write(
        dir.path(),
        "bridge.toml",
        &format!(
            "[bridge]\nid = \"{id}\"\nshutdown_grace_ms = 500\n\
             [[bridge.inputs]]\ntopic = \"edgecam/{{device}}/frame\"\nformat = \"edgecam\"\n\
             [[bridge.inputs]]\ntopic = \"cameras/{{device}}/jpeg\"\nformat = \"raw\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_secs = 5\n\
             username = \"bridge-user\"\npassword = {{ credential = \"mqtt\" }}\n\
             [kafka]\nbootstrap_servers = \"127.0.0.1:{closed}\"\nmessage_timeout_ms = 2000\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"u\"\n\
             \"sasl.password\" = {{ file = \"kafka.pass\" }}\n",
            closed = free_port(),
        ),
    );
    let creds_dir = creds.path().to_str().unwrap();
    let out = check_config(&config, &[("CREDENTIALS_DIRECTORY", creds_dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bridge"),
        "{}",
        text(&out.stderr)
    );

    let started = Instant::now();
    let mut bridge = Process::spawn(&["bridge"], &config, creds.path(), dir.path());
    let client_id = format!("as edgecam-bridge-{id} ");
    eventually("the bridge's MQTT login", || {
        broker.log().contains(&client_id)
    })
    .await;
    let env = bridge.environ_without(&secrets);
    let creds_var = format!("CREDENTIALS_DIRECTORY={creds_dir}");
    assert!(
        env.split(|b| *b == 0).any(|v| v == creds_var.as_bytes()),
        "{creds_var} in the environment"
    );
    assert!(
        broker.log().contains("u'bridge-user'"),
        "{}",
        tail(&broker.log(), 40)
    );

    tokio::time::sleep(RUN_FOR.saturating_sub(started.elapsed())).await;
    bridge.environ_without(&secrets);
    let (stdout, stderr) = bridge.terminate().await;
    check_output(&stdout, &stderr, &secrets, "connected to the MQTT broker");
    let err = text(&stderr);
    assert!(err.contains("SIGTERM"), "{}", tail(&err, 40));
    assert!(
        err.lines().any(|l| l.starts_with("messages: received")),
        "the summary is there: {}",
        tail(&err, 40)
    );
}

#[test]
fn numeric_secret_property_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let n = numeric_secret();
    let c = write(
        dir.path(),
        "a.toml",
        &format!("{AGENT_HEAD}[kafka.properties]\n\"sasl.password\" = {n}\n"),
    );
    let out = check_config(&c, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_absent("stdout", &out.stdout, &[&n]);
    assert_absent("stderr", &out.stderr, &[&n]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"sasl.password\" = \"<redacted>\""));
    let c = write(
        dir.path(),
        "b.toml",
        &format!(
            "{AGENT_HEAD}[kafka.properties]\n\"ssl.key.password\" = {n}\n\
             \"ssl.key.location\" = \"/nonexistent/client.key\"\n"
        ),
    );
    // Refused (the key file is missing): the error does not show the password.
    let out = check_config(&c, &[]);
    assert_eq!(out.status.code(), Some(64));
    assert_absent("stderr", &out.stderr, &[&n]);
}
