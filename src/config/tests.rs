//! The loader's good cases and the shapes of its errors. The bad-configuration table (every
//! refusal through `check-config` and `run`) is `tests/bad_configs.rs`.

use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeOwned, Visitor};

use super::*;

const DEVICE: &str = "[device]\nid = \"cam-01\"\n";
const SYNTHETIC: &str = "kind = \"synthetic\"";
const KAFKA: &str = "bootstrap_servers = \"localhost:9092\"";

fn doc(source: &str, kafka: &str, extra: &str) -> String {
    format!("{DEVICE}\n[source]\n{source}\n\n[kafka]\n{kafka}\n\n{extra}\n")
}

fn min_with(extra: &str) -> String {
    doc(SYNTHETIC, KAFKA, extra)
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resolve(text: &str, env: Vec<(String, String)>) -> Result<Config, ConfigError> {
    load_str(text, env)
}

/// Writes `text` to `dir/name` and loads it as a file.
fn load_in(
    dir: &Path,
    name: &str,
    text: &str,
    env: Vec<(String, String)>,
) -> Result<Loaded, ConfigError> {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    load_file(&path, env)
}

#[test]
fn minimal_config_gets_defaults() {
    let c = resolve(&min_with(""), no_env()).unwrap();
    assert_eq!(c.device.id, "cam-01");
    assert_eq!(c.source.kind, SourceKind::Synthetic);
    assert_eq!(c.source.path, None);
    assert_eq!(c.source.fps, 10.0);
    assert!(!c.source.loop_);
    assert_eq!((c.source.width.get(), c.source.height.get()), (1280, 720));
    assert_eq!(c.source.device, "0");
    assert_eq!(c.source.format, CameraFormat::Mjpeg);
    assert_eq!(c.transform, TransformConfig::default());
    assert_eq!(c.encode, EncodeConfig::default());
    assert_eq!(c.encode.max_message_bytes.get(), DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(c.pipeline, PipelineConfig::default());
    assert_eq!(c.kafka().unwrap().topic, "edgecam.frames");
    assert_eq!(c.kafka().unwrap().error_topic, None);
    assert_eq!(c.kafka().unwrap().max_in_flight.get(), 8);
    assert_eq!(c.kafka().unwrap().message_timeout_ms.get(), 60_000);
    assert!(c.kafka().unwrap().properties.is_empty());
    assert!(c.mqtt().is_none());
}

#[test]
fn an_integer_is_a_number_but_nothing_else_is_converted() {
    let c = resolve(&doc("kind = \"synthetic\"\nfps = 15", KAFKA, ""), no_env()).unwrap();
    assert_eq!(c.source.fps, 15.0);
    for (extra, key, found) in [
        (
            "[encode]\nquality_max = 80.0",
            "encode.quality_max",
            "float `80`",
        ),
        (
            "[encode]\npassthrough = \"true\"",
            "encode.passthrough",
            "string \"true\"",
        ),
        (
            "[pipeline]\nqueue_frames = true",
            "pipeline.queue_frames",
            "boolean `true`",
        ),
    ] {
        match resolve(&min_with(extra), no_env()).unwrap_err() {
            ConfigError::WrongType {
                key: k,
                found: f,
                origin: Some(Origin::File { line: 11, .. }),
                ..
            } => assert_eq!((k.as_str(), f.as_str()), (key, found)),
            other => panic!("{extra}: {other:?}"),
        }
    }
}

#[test]
fn errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_in(
        dir.path(),
        "cam.toml",
        &min_with("[encode]\n  quality_max = 0"),
        no_env(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        ConfigError::Invalid {
            key: "encode.quality_max".into(),
            message: "must be at least 1 (got 0)".into(),
            origin: Some(Origin::File {
                file: Some(dir.path().join("cam.toml")),
                line: 11,
                column: 3,
            }),
        }
    );
    assert!(
        e.to_string().ends_with("cam.toml, line 11, column 3)"),
        "{e}"
    );
}

#[test]
fn unknown_keys_list_the_allowed_ones_and_suggest() {
    let e = resolve(&min_with("[encode]\nqualty_max = 50"), no_env()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "encode.qualty_max: unknown key (line 11, column 1) (did you mean `quality_max`?); \
         allowed keys in [encode]: codec, max_message_bytes, quality_max, quality_min, \
         quality_step, downscale_percent, min_side_px, zstd_level, passthrough"
    );
    let e = resolve(&min_with("[camera]\nid = 1"), no_env()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, allowed, .. }
            if key == "camera" && allowed.contains(&"[bridge]".to_string())),
        "{e:?}"
    );
}

#[test]
fn env_overrides_apply_and_are_typed_strictly() {
    let c = resolve(
        &min_with(""),
        env(&[
            ("EDGECAM_KAFKA__BOOTSTRAP_SERVERS", "b:9092"),
            ("EDGECAM_ENCODE__MAX_MESSAGE_BYTES", "500000"),
            ("EDGECAM_SOURCE__FPS", "2.5"),
            ("EDGECAM_ENCODE__PASSTHROUGH", "false"),
            ("EDGECAM_ENCODE__CODEC", "zstd"),
            ("EDGECAM_KAFKA__CREATE_TOPIC_PARTITIONS", "6"),
            ("edgecam_kafka__topic", "lower.case.works"),
            ("EDGECAM_LOG", "debug"),
            ("EDGECAM", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka().unwrap().bootstrap_servers, "b:9092");
    assert_eq!(c.encode.max_message_bytes.get(), 500_000);
    assert_eq!(c.source.fps, 2.5);
    assert!(!c.encode.passthrough);
    assert_eq!(c.encode.codec, Codec::Zstd);
    assert_eq!(
        c.kafka().unwrap().create_topic_partitions.map(|p| p.get()),
        Some(6)
    );
    assert_eq!(c.kafka().unwrap().topic, "lower.case.works");
}

#[test]
fn env_supplies_a_missing_table_and_lists() {
    let text = format!("{DEVICE}[source]\nkind = \"mjpeg\"\n");
    let c = resolve(
        &text,
        env(&[
            ("EDGECAM_KAFKA__BOOTSTRAP_SERVERS", "k:9092"),
            ("EDGECAM_SOURCE__COMMAND", "[\"cat\", \"clip.mjpeg\"]"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka().unwrap().bootstrap_servers, "k:9092");
    assert_eq!(
        c.source.command,
        Some(vec!["cat".to_string(), "clip.mjpeg".to_string()])
    );
}

#[test]
fn env_strings_are_not_reparsed() {
    let c = resolve(
        &min_with(""),
        env(&[
            ("EDGECAM_DEVICE__ID", "0042"),
            ("EDGECAM_KAFKA__TOPIC", "1e3"),
            ("EDGECAM_SOURCE__DEVICE", "007"),
        ]),
    )
    .unwrap();
    assert_eq!(c.device.id, "0042");
    assert_eq!(c.kafka().unwrap().topic, "1e3");
    assert_eq!(c.source.device, "007");
}

#[test]
fn env_errors_name_the_variable() {
    let e = resolve(&min_with(""), env(&[("EDGECAM_SOURCE__WIDTH", "wide")])).unwrap_err();
    assert_eq!(
        e,
        ConfigError::WrongType {
            key: "source.width".into(),
            expected: "an integer from 1 to 16384 (pixels)".into(),
            found: "\"wide\"".into(),
            origin: Some(Origin::Env {
                var: "EDGECAM_SOURCE__WIDTH".into()
            }),
        }
    );
    let e = resolve(&min_with(""), env(&[("EDGECAM_KAFKA_TOPIC", "x")])).unwrap_err();
    assert!(matches!(&e, ConfigError::Env { name, .. } if name == "EDGECAM_KAFKA_TOPIC"));
}

#[test]
fn dotted_property_names_survive_and_env_overrides_them() {
    let text = min_with(
        "[kafka.properties]\n\"linger.ms\" = 5\n\"compression.type\" = \"lz4\"\n\
         \"socket.keepalive.enable\" = false",
    );
    let c = resolve(&text, no_env()).unwrap();
    let p = &c.kafka().unwrap().properties;
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(p["linger.ms"], PropertyValue::Int(5));
    assert_eq!(p["compression.type"], PropertyValue::Text("lz4".into()));
    assert_eq!(p["socket.keepalive.enable"], PropertyValue::Bool(false));

    let c = resolve(
        &text,
        env(&[
            ("EDGECAM_KAFKA__PROPERTIES__LINGER_MS", "20"),
            ("EDGECAM_KAFKA__PROPERTIES__CLIENT_ID", "cam-01"),
        ]),
    )
    .unwrap();
    let p = &c.kafka().unwrap().properties;
    assert_eq!(p["linger.ms"].config_value(), "20");
    assert_eq!(p["client.id"].config_value(), "cam-01");
    assert_eq!(p.len(), 4, "{p:?}");
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc/cams")).unwrap();
    std::fs::write(dir.path().join("etc/cams/clip.mjpeg"), b"\xff\xd8\xff\xd9").unwrap();
    std::fs::write(dir.path().join("etc/mqtt.pass"), "s3cret\n").unwrap();
    let text = format!(
        "{DEVICE}[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\n[sink]\nkind = \"mqtt\"\n\
         [mqtt]\nhost = \"h\"\nusername = \"u\"\npassword = {{ file = \"../mqtt.pass\" }}\n"
    );
    let loaded = load_in(dir.path(), "etc/cams/front.toml", &text, no_env()).unwrap();
    let c = loaded.agent.unwrap();
    assert_eq!(
        c.source.path.as_deref(),
        Some(dir.path().join("etc/cams/clip.mjpeg").as_path())
    );
    let password = c.mqtt().unwrap().password.as_ref().unwrap();
    assert_eq!(password.expose(), "s3cret");
    assert_eq!(
        password.source(),
        &SecretSource::File(dir.path().join("etc/cams/../mqtt.pass"))
    );
    // Not relative to the working directory: the same file elsewhere fails.
    std::fs::write(dir.path().join("mqtt.pass"), "s3cret\n").unwrap();
    let e = load_in(dir.path(), "other/front.toml", &text, no_env()).unwrap_err();
    assert_eq!(e.key(), Some("source.path"));
}

#[test]
fn secrets_come_from_credentials_and_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("kafka"), "kafka-s3cret").unwrap();
    let text = min_with(
        "[kafka.properties]\n\"sasl.password\" = { credential = \"kafka\" }\n\
         \"sasl.username\" = \"u\"\n\
         [mqtt]\nhost = \"h\"\nusername = \"u\"\npassword = \"inline-s3cret\"",
    );
    let loaded = load_in(
        dir.path(),
        "cam.toml",
        &text,
        env(&[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]),
    )
    .unwrap();
    let c = loaded.agent.as_ref().unwrap();
    let p = &c.kafka().unwrap().properties;
    assert_eq!(p["sasl.password"].config_value(), "kafka-s3cret");
    assert_eq!(
        c.mqtt().unwrap().password.as_ref().unwrap().expose(),
        "inline-s3cret"
    );
    let shown = [
        loaded.to_toml(),
        format!("{loaded:?}"),
        format!("{c:?}"),
        p["sasl.password"].to_string(),
    ];
    for text in shown {
        for secret in ["kafka-s3cret", "inline-s3cret"] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(text.contains("redacted"), "{text}");
    }
    assert!(loaded
        .to_toml()
        .contains("<redacted: from credential kafka>"));
    // The producer gets the real value.
    let native = c.kafka().unwrap().producer_config(1_000_000);
    assert_eq!(native.get("sasl.password"), Some("kafka-s3cret"));
}

#[test]
fn bridge_files_and_combined_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let b = load_bridge(&root.join("config/bridge.example.toml"), no_env()).unwrap();
    assert_eq!(b.bridge.id, "site-a");
    assert_eq!(b.bridge.inputs.len(), 2);
    assert_eq!(b.bridge.inputs[1].format, InputFormat::Raw);
    assert_eq!(b.mqtt.session_expiry_secs, 86_400);
    assert_eq!(b.client_id(), "edgecam-bridge-site-a");
    assert_eq!(b.patterns()[0].filter(), "edgecam/+/frame");
    // An agent loader refuses a bridge file, naming the right command, and vice versa.
    let e = load(&root.join("config/bridge.example.toml"), no_env()).unwrap_err();
    assert!(e.to_string().contains("edgecam bridge --config"), "{e}");
    let e = load_bridge_str(&min_with(""), no_env()).unwrap_err();
    assert!(e.to_string().contains("edgecam run --config"), "{e}");

    // One file with both: the agent's [mqtt] and [kafka] serve the bridge too.
    let both = format!(
        "{}[mqtt]\nhost = \"h\"\n[bridge]\nid = \"gw\"\n[[bridge.inputs]]\ntopic = \
         \"cams/{{device}}/jpeg\"\nformat = \"raw\"\n",
        min_with("")
    );
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_in(dir.path(), "both.toml", &both, no_env()).unwrap();
    assert!(loaded.agent.is_some() && loaded.bridge.is_some());
    let what = loaded.describe();
    assert!(
        what.contains("agent configuration (device cam-01"),
        "{what}"
    );
    assert!(
        what.contains("bridge configuration (bridge gw, 1 input)"),
        "{what}"
    );
    let printed: toml::Table = toml::from_str(&loaded.to_toml()).unwrap();
    assert_eq!(printed["bridge"]["id"].as_str(), Some("gw"));
    assert_eq!(printed["device"]["id"].as_str(), Some("cam-01"));
}

#[test]
fn footguns_are_accepted_with_the_explicit_opt_in() {
    let bridge = "[bridge]\nid = \"gw\"\n[[bridge.inputs]]\ntopic = \"c/{device}\"\nformat = \
                  \"raw\"\nqos = 0\n[mqtt]\nhost = \"h\"\nsession_expiry_secs = 0\n{opt}\n\
                  [kafka]\nbootstrap_servers = \"k:1\"\n";
    let refused = load_bridge_str(&bridge.replace("{opt}", ""), no_env()).unwrap_err();
    assert_eq!(refused.key(), Some("bridge.inputs[0].qos"));
    let b = load_bridge_str(
        &bridge.replace("{opt}", "allow_message_loss = true"),
        no_env(),
    )
    .unwrap();
    assert_eq!(b.mqtt.session_expiry_secs, 0);
}

#[test]
fn message_max_bytes_at_least_the_budget_is_accepted() {
    let text = min_with("[kafka.properties]\n\"message.max.bytes\" = 1000000");
    assert!(resolve(&text, no_env()).is_ok());
}

#[test]
fn bootstrap_forms() {
    for servers in ["b:9092", "a:1, b:2,c:3", "[::1]:9092", "10.0.0.1:9093"] {
        let text = doc(SYNTHETIC, &format!("bootstrap_servers = \"{servers}\""), "");
        assert!(resolve(&text, no_env()).is_ok(), "{servers}");
    }
}

#[test]
fn load_reports_unreadable_file() {
    let e = load(Path::new("/no/such/edgecam.toml"), no_env()).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/no/such/edgecam.toml"), "{e}");
}

#[test]
fn commands_must_be_installed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("rpicam-vid");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = doc(
        "kind = \"mjpeg\"\ncommand = [\"rpicam-vid\", \"-o\", \"-\"]",
        KAFKA,
        "",
    );
    let path = dir.path().to_str().unwrap();
    assert!(resolve(&text, env(&[("PATH", path)])).is_ok());
    let e = resolve(&text, env(&[("PATH", "/nonexistent")])).unwrap_err();
    assert_eq!(e.key(), Some("source.command"));
    assert!(e.to_string().contains("rpicam-apps"), "{e}");
}

#[test]
fn example_files_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = load(&root.join("config/edgecam.example.toml"), no_env()).unwrap();
    assert_eq!(c.source.kind, SourceKind::Synthetic);
    assert_eq!(
        c.kafka().unwrap().properties["linger.ms"],
        PropertyValue::Int(5)
    );
    // The documented defaults are the real defaults.
    assert_eq!(c.encode, EncodeConfig::default());
    assert_eq!(c.pipeline, PipelineConfig::default());
    assert_eq!(c.transform, TransformConfig::default());

    // rpicam-vid is on every Raspberry Pi OS; a stand-in plays it here.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("rpicam-vid");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = load(
        &root.join("config/csi-camera.toml"),
        env(&[("PATH", dir.path().to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(c.source.command.as_ref().unwrap()[0], "rpicam-vid");
    assert_eq!(c.transform.rotate_degrees, 180);

    let loaded = load_file(&root.join("config/usb-webcam.toml"), no_env()).unwrap();
    let c = loaded.agent.as_ref().unwrap();
    assert_eq!(c.source.kind, SourceKind::Camera);
    assert_eq!(c.source.device, "/dev/video0");
    assert_eq!(c.source.fps, 15.0);
    if !Path::new("/dev/video0").exists() {
        assert!(
            loaded.warnings[0].contains("/dev/video0"),
            "{:?}",
            loaded.warnings
        );
    }
}

/// The field names of a struct as its `Deserialize` impl knows them.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Fields {}
    impl de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    struct Probe;
    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map identifier
            ignored_any enum
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(f)) => f,
        Ok(_) => &[],
    }
}

/// Every key of every agent table appears in the example, set or commented out, in its own
/// table, and every key line is preceded by a comment.
#[test]
fn example_documents_every_key() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/edgecam.example.toml"),
    )
    .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches("# ");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_string();
            seen.push(table.clone());
            continue;
        }
        let line = line.trim_start_matches('#').trim();
        if let Some((key, _)) = line.split_once(" = ") {
            if !key.contains(' ') {
                seen.push(format!("{table}.{key}"));
            }
        }
    }
    let tables: [(&str, &[&str]); 10] = [
        ("device", fields_of::<DeviceConfig>()),
        ("source", fields_of::<SourceConfig>()),
        ("transform", fields_of::<TransformConfig>()),
        ("encode", fields_of::<EncodeConfig>()),
        ("pipeline", fields_of::<PipelineConfig>()),
        ("sink", fields_of::<SinkTable>()),
        ("kafka", fields_of::<KafkaConfig>()),
        ("mqtt", fields_of::<MqttConfig>()),
        ("mqtt.tls", fields_of::<MqttTls>()),
        ("pubsub", fields_of::<PubsubConfig>()),
    ];
    for (table, fields) in tables {
        assert!(!fields.is_empty(), "{table}");
        assert!(seen.iter().any(|s| s == table), "[{table}] missing");
        for field in fields {
            let key = format!("{table}.{field}");
            assert!(seen.contains(&key), "{key} missing from the example");
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with('#') && line.contains(" = ") {
            let prev = if i == 0 { "" } else { lines[i - 1] };
            assert!(
                prev.starts_with('#') || prev.contains(" = "),
                "line {}: {line:?} has no comment",
                i + 1
            );
        }
    }
}

#[test]
fn sink_and_mqtt_rules_name_the_key() {
    let base = "[device]\nid = \"cam\"\n[source]\nkind = \"synthetic\"\n";
    let mqtt = "[mqtt]\nhost = \"localhost\"\n";
    let cases = [
        (base.to_string(), "kafka: required key is missing"),
        (
            format!("{base}[sink]\nkind = \"mqtt\"\n"),
            "mqtt: required key is missing",
        ),
        (
            format!("{base}[sink]\nkind = \"nats\"\n{mqtt}"),
            "sink.kind",
        ),
        (
            format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}qos = 2\n"),
            "mqtt.qos",
        ),
        (
            format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}password = \"x\"\n"),
            "mqtt.password",
        ),
        (
            format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}protocol = \"v4\"\n"),
            "mqtt.protocol",
        ),
    ];
    for (text, needle) in cases {
        let err = resolve(&text, no_env()).unwrap_err().to_string();
        assert!(
            err.contains(needle),
            "{needle:?} not in {err:?} for\n{text}"
        );
    }
    let ok = resolve(&format!("{base}[sink]\nkind = \"mqtt\"\n{mqtt}"), no_env()).unwrap();
    assert!(ok.kafka().is_none());
    let m = ok.mqtt().unwrap();
    assert_eq!(
        (m.port(), m.qos.get(), m.frame_topic("cam").as_str()),
        (1883, 1, "edgecam/cam/frame")
    );
}

#[test]
fn the_spool_directory_follows_state_directory_then_path_then_xdg_then_home() {
    use super::spool::SpoolMode;
    let c = resolve(&min_with(""), no_env()).unwrap();
    assert_eq!(c.spool.mode, SpoolMode::Outage);
    assert_eq!(c.spool.max_bytes.get(), 1 << 30);
    assert_eq!(c.spool.commit_interval_ms.get(), 200);
    assert_eq!(c.spool.dir, None, "nothing to choose from");
    let home = resolve(&min_with(""), env(&[("HOME", "/home/pi")])).unwrap();
    assert_eq!(
        home.spool.dir.as_deref(),
        Some(Path::new("/home/pi/.local/state/edgecam/cam-01"))
    );
    let xdg = resolve(
        &min_with(""),
        env(&[("HOME", "/home/pi"), ("XDG_STATE_HOME", "/xdg")]),
    )
    .unwrap();
    assert_eq!(
        xdg.spool.dir.as_deref(),
        Some(Path::new("/xdg/edgecam/cam-01"))
    );
    let tmp = tempfile::tempdir().unwrap();
    let l = load_in(
        tmp.path(),
        "cam.toml",
        &min_with("[spool]\npath = \"spool\""),
        env(&[("HOME", "/home/pi")]),
    )
    .unwrap();
    assert_eq!(l.agent.unwrap().spool.dir, Some(tmp.path().join("spool")));
    let systemd = resolve(
        &min_with("[spool]\npath = \"/x\""),
        env(&[
            ("STATE_DIRECTORY", "/var/lib/edgecam:/other"),
            ("HOME", "/h"),
        ]),
    )
    .unwrap();
    assert_eq!(
        systemd.spool.dir.as_deref(),
        Some(Path::new("/var/lib/edgecam/cam-01"))
    );
    let off = resolve(&min_with("[spool]\nmode = \"off\""), env(&[("HOME", "/h")])).unwrap();
    assert_eq!(off.spool.dir, None);
}

#[test]
fn mqtt_tls_defaults_its_port_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = |tls: &str| format!("[sink]\nkind = \"mqtt\"\n[mqtt]\nhost = \"broker\"\n{tls}");
    let c = resolve(&min_with(&mqtt("")), no_env()).unwrap();
    assert_eq!(c.mqtt().unwrap().port(), 1883);
    // With TLS and the system's trust store, the port is 8883, and check-config shows it.
    let loaded = load_in(
        dir.path(),
        "a.toml",
        &min_with(&mqtt("[mqtt.tls]\n")),
        no_env(),
    )
    .unwrap();
    let c = loaded.agent.as_ref().unwrap();
    assert_eq!(c.mqtt().unwrap().port(), 8883);
    assert!(
        loaded.to_toml().contains("port = 8883"),
        "{}",
        loaded.to_toml()
    );

    let err = |tls: &str| {
        load_in(dir.path(), "b.toml", &min_with(&mqtt(tls)), no_env())
            .unwrap_err()
            .to_string()
    };
    let e = err("[mqtt.tls]\nca_file = \"missing-ca.pem\"\n");
    assert!(
        e.contains("mqtt.tls.ca_file") && e.contains("does not exist"),
        "{e}"
    );
    // Relative to the file's directory.
    assert!(
        e.contains(&dir.path().join("missing-ca.pem").display().to_string()),
        "{e}"
    );
    std::fs::write(dir.path().join("not-pem.pem"), "hello").unwrap();
    let e = err("[mqtt.tls]\nca_file = \"not-pem.pem\"\n");
    assert!(
        e.contains("mqtt.tls.ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = err("[mqtt.tls]\ncert_file = \"not-pem.pem\"\n");
    assert!(
        e.contains("mqtt.tls.cert_file") && e.contains("needs mqtt.tls.key"),
        "{e}"
    );
    let e = err("[mqtt.tls]\nkey = { file = \"missing.key\" }\n");
    assert!(
        e.contains("mqtt.tls.key") && e.contains("does not exist"),
        "{e}"
    );
    let e = err("[mqtt.tls]\nalpn = [\"\"]\n");
    assert!(e.contains("mqtt.tls.alpn"), "{e}");
    let e = err("[mqtt.tls]\nca = \"x\"\n");
    assert!(e.contains("ca_file"), "unknown key suggests: {e}");
}

#[test]
fn kafka_tls_files_resolve_and_features_are_checked_against_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let with = |props: &str| {
        load_in(
            dir.path(),
            "k.toml",
            &doc(
                SYNTHETIC,
                &format!("{KAFKA}\n[kafka.properties]\n{props}"),
                "",
            ),
            no_env(),
        )
    };
    // This build has TLS, SCRAM, PLAIN, OAUTHBEARER and zstd.
    let features = kafka::builtin_features();
    for f in [
        "ssl",
        "sasl_plain",
        "sasl_scram",
        "sasl_oauthbearer",
        "zstd",
        "lz4",
    ] {
        assert!(features.iter().any(|b| b == f), "{f} in {features:?}");
    }
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    let ok = with(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"u\"\n\"sasl.password\" = \"p\"\n\"ssl.ca.location\" = \"ca.pem\"\n\
         \"compression.type\" = \"zstd\"\n",
    )
    .unwrap();
    let k = ok.agent.unwrap().kafka().unwrap().clone();
    assert_eq!(
        k.properties["ssl.ca.location"].config_value(),
        dir.path().join("ca.pem").display().to_string()
    );
    // "probe" is librdkafka's keyword, not a file.
    with("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"probe\"\n").unwrap();

    let e = with("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"nope.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kafka.properties.ssl.ca.location") && e.contains("does not exist"),
        "{e}"
    );
    // SASL without a mechanism is GSSAPI (librdkafka's default), which this build lacks.
    let e = with("\"security.protocol\" = \"SASL_SSL\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kafka.properties.security.protocol")
            && e.contains("sasl_gssapi")
            && e.contains("SCRAM-SHA-512"),
        "{e}"
    );
}

#[test]
fn a_pubsub_agent_keeps_its_key_secret_and_says_when_the_emulator_is_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let pem = String::from_utf8(
        openssl::pkey::PKey::from_rsa(rsa)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap(),
    )
    .unwrap();
    let key = serde_json::json!({
        "type": "service_account",
        "client_email": "cam@p-1.iam.gserviceaccount.com",
        "private_key": pem,
        "private_key_id": "abc123",
    });
    std::fs::write(dir.path().join("sa.json"), key.to_string()).unwrap();
    let text = format!(
        "{DEVICE}[source]\n{SYNTHETIC}\n[sink]\nkind = \"pubsub\"\n[pubsub]\nproject = \"p-1\"\n\
         topic = \"frames\"\ncredentials = {{ file = \"sa.json\" }}\n"
    );
    let loaded = load_in(dir.path(), "cam.toml", &text, no_env()).unwrap();
    let c = loaded.agent.as_ref().unwrap();
    let p = c.sink.pubsub().unwrap();
    assert_eq!(p.base_url(), "https://pubsub.googleapis.com");
    assert_eq!(p.topic_path(), "projects/p-1/topics/frames");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let printed = loaded.to_toml();
    assert!(printed.contains("kind = \"pubsub\"") && printed.contains("<redacted"));
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    assert!(loaded.describe().contains("sink pubsub"));

    let emulated = load_in(
        dir.path(),
        "cam.toml",
        &text,
        env(&[("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")]),
    )
    .unwrap();
    let p = emulated.agent.as_ref().unwrap().sink.pubsub().unwrap();
    assert_eq!(p.base_url(), "http://127.0.0.1:8085");
    assert!(
        emulated
            .warnings
            .iter()
            .any(|w| w.contains("PUBSUB_EMULATOR_HOST=127.0.0.1:8085")),
        "{:?}",
        emulated.warnings
    );
}
