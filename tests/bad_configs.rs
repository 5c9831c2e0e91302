//! The bad-configuration table: every row is a configuration (file text plus environment)
//! that `edgecam check-config` and `edgecam run` must both refuse with exit code 64, before
//! opening anything, with one message that names the key (and says what is wrong).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgecam");

const DEVICE: &str = "[device]\nid = \"cam-01\"\n";
const SYNTHETIC: &str = "kind = \"synthetic\"";
const KAFKA: &str = "bootstrap_servers = \"localhost:9092\"";

/// A document with the given `[source]` and `[kafka]` bodies, then `extra` (more tables).
fn doc(source: &str, kafka: &str, extra: &str) -> String {
    format!("{DEVICE}\n[source]\n{source}\n\n[kafka]\n{kafka}\n\n{extra}\n")
}

/// The minimal valid document plus `extra` tables.
fn min_with(extra: &str) -> String {
    doc(SYNTHETIC, KAFKA, extra)
}

/// One bad configuration and what its message must contain (the key first).
struct Bad {
    name: &'static str,
    toml: String,
    env: Vec<(String, String)>,
    expect: &'static [&'static str],
}

fn bad(name: &'static str, toml: String, expect: &'static [&'static str]) -> Bad {
    Bad {
        name,
        toml,
        env: Vec::new(),
        expect,
    }
}

fn bad_env(
    name: &'static str,
    toml: String,
    vars: &[(&str, &str)],
    expect: &'static [&'static str],
) -> Bad {
    Bad {
        name,
        toml,
        env: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        expect,
    }
}

fn bad_rows(dir: &Path) -> Vec<Bad> {
    let file = dir.join("clip.mjpeg");
    let file = file.display();
    let missing = dir.join("nope.mjpeg");
    let missing = missing.display();
    let d = dir.display();
    vec![
        // Syntax.
        bad(
            "malformed TOML",
            "[device\nid = \"x\"\n".into(),
            &["syntax error", "line 1"],
        ),
        bad(
            "malformed TOML later",
            min_with("[encode]\nquality_max = = 3"),
            &["syntax error", "line 11", "column 15"],
        ),
        bad(
            "duplicate key",
            min_with("[encode]\nquality_max = 3\nquality_max = 4"),
            &["syntax error", "line 12"],
        ),
        // Unknown keys.
        bad(
            "unknown top-level table",
            min_with("[camera]\nid = 1"),
            &["camera: unknown key", "line 10", "[device]", "[kafka]"],
        ),
        bad(
            "unknown key in [encode]",
            min_with("[encode]\nqualty_max = 50"),
            &["encode.qualty_max: unknown key", "line 11", "[encode]", "quality_max"],
        ),
        bad(
            "unknown key in [source]",
            doc("kind = \"synthetic\"\nfps_max = 3", KAFKA, ""),
            &["source.fps_max: unknown key", "loop", "max_frames"],
        ),
        bad(
            "keys are case-sensitive",
            min_with("[Encode]\nquality_max = 50"),
            &["Encode: unknown key"],
        ),
        bad(
            "key case in a table",
            min_with("[encode]\nQuality_Max = 50"),
            &["encode.Quality_Max: unknown key"],
        ),
        bad(
            "table given as a value",
            format!("encode = 5\n{}", min_with("")),
            &["encode: wrong type", "a table", "integer `5`"],
        ),
        // Types.
        bad(
            "string where a number belongs",
            min_with("[encode]\nquality_max = \"high\""),
            &["encode.quality_max: wrong type", "from 1 to 100", "\"high\""],
        ),
        bad(
            "string where a boolean belongs",
            min_with("[encode]\npassthrough = \"maybe\""),
            &["encode.passthrough: wrong type", "boolean", "\"maybe\""],
        ),
        bad(
            "array where a string belongs",
            "[device]\nid = [\"a\"]\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
            &["device.id: wrong type", "string"],
        ),
        bad(
            "unknown source kind",
            doc("kind = \"webcam\"", KAFKA, ""),
            &["source.kind", "\"webcam\"", "camera, mjpeg, images, synthetic"],
        ),
        bad(
            "unknown codec",
            min_with("[encode]\ncodec = \"webp\""),
            &["encode.codec", "\"webp\"", "jpeg, png, zstd"],
        ),
        bad(
            "unknown overflow policy",
            min_with("[pipeline]\noverflow = \"drop_all\""),
            &["pipeline.overflow", "drop_oldest, drop_newest, block"],
        ),
        bad(
            "unknown camera format",
            doc("kind = \"camera\"\nformat = \"h264\"", KAFKA, ""),
            &["source.format", "mjpeg, yuyv"],
        ),
        // Missing.
        bad(
            "missing device.id",
            format!("[device]\n[source]\n{SYNTHETIC}\n[kafka]\n{KAFKA}\n"),
            &["device.id: required key is missing", "EDGECAM_DEVICE__ID"],
        ),
        bad(
            "missing [device]",
            format!("[source]\n{SYNTHETIC}\n[kafka]\n{KAFKA}\n"),
            &["device: required key is missing"],
        ),
        bad(
            "missing [kafka]",
            format!("{DEVICE}[source]\n{SYNTHETIC}\n"),
            &["kafka: required key is missing", "bootstrap_servers"],
        ),
        bad(
            "missing kafka.bootstrap_servers",
            doc(SYNTHETIC, "topic = \"t\"", ""),
            &["kafka.bootstrap_servers: required key is missing"],
        ),
        bad(
            "missing source.kind",
            doc("fps = 3", KAFKA, ""),
            &["source.kind: required key is missing"],
        ),
        bad("empty file", String::new(), &["required key is missing"]),
        // device.id
        bad(
            "device id with a space",
            "[device]\nid = \"cam 01\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
            &["device.id", "A-Z a-z 0-9 . _ -", "' '"],
        ),
        bad(
            "device id with a slash",
            "[device]\nid = \"cam/01\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
            &["device.id", "'/'"],
        ),
        bad(
            "empty device id",
            "[device]\nid = \"\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n".into(),
            &["device.id", "got 0 characters"],
        ),
        bad(
            "device id too long",
            format!(
                "[device]\nid = \"{}\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"b:1\"\n",
                "a".repeat(129)
            ),
            &["device.id", "1 to 128", "got 129 characters"],
        ),
        // Sources.
        bad(
            "mjpeg with both path and command",
            doc(
                &format!("kind = \"mjpeg\"\npath = \"{file}\"\ncommand = [\"cat\"]"),
                KAFKA,
                "",
            ),
            &["source.command", "source.path", "exclusive"],
        ),
        bad(
            "mjpeg with neither path nor command",
            doc("kind = \"mjpeg\"", KAFKA, ""),
            &["source.path", "source.command", "kind = \"mjpeg\" needs"],
        ),
        bad(
            "mjpeg with an empty command",
            doc("kind = \"mjpeg\"\ncommand = []", KAFKA, ""),
            &["source.command", "non-empty argv"],
        ),
        bad(
            "mjpeg with an empty program",
            doc("kind = \"mjpeg\"\ncommand = [\"\", \"-o\"]", KAFKA, ""),
            &["source.command", "must not be empty"],
        ),
        bad(
            "mjpeg file missing",
            doc(&format!("kind = \"mjpeg\"\npath = \"{missing}\""), KAFKA, ""),
            &["source.path", "nope.mjpeg", "does not exist"],
        ),
        bad(
            "mjpeg relative file missing",
            doc("kind = \"mjpeg\"\npath = \"no/such/clip.mjpeg\"", KAFKA, ""),
            &["source.path", "does not exist", "configuration file's directory"],
        ),
        bad(
            "mjpeg path is a directory",
            doc(&format!("kind = \"mjpeg\"\npath = \"{d}\""), KAFKA, ""),
            &["source.path", "is a directory", "kind = \"images\""],
        ),
        bad(
            "images directory missing",
            doc(&format!("kind = \"images\"\npath = \"{d}/nope\""), KAFKA, ""),
            &["source.path", "does not exist"],
        ),
        bad(
            "images path is a file",
            doc(&format!("kind = \"images\"\npath = \"{file}\""), KAFKA, ""),
            &["source.path", "is not a directory"],
        ),
        bad(
            "images without a path",
            doc("kind = \"images\"", KAFKA, ""),
            &["source.path", "kind = \"images\" needs"],
        ),
        bad(
            "images with a command",
            doc(&format!("kind = \"images\"\npath = \"{d}\"\ncommand = [\"cat\"]"), KAFKA, ""),
            &["source.command", "not used by kind = \"images\""],
        ),
        bad(
            "synthetic with a path",
            doc(&format!("kind = \"synthetic\"\npath = \"{file}\""), KAFKA, ""),
            &["source.path", "not used by kind = \"synthetic\""],
        ),
        bad(
            "camera with a command",
            doc("kind = \"camera\"\ncommand = [\"cat\"]", KAFKA, ""),
            &["source.command", "not used by kind = \"camera\""],
        ),
        bad(
            "negative fps",
            doc("kind = \"synthetic\"\nfps = -1", KAFKA, ""),
            &["source.fps", "from 0 to 1000", "got -1"],
        ),
        bad(
            "fps too high",
            doc("kind = \"synthetic\"\nfps = 1000.5", KAFKA, ""),
            &["source.fps", "got 1000.5"],
        ),
        bad(
            "fps not a number",
            doc("kind = \"synthetic\"\nfps = nan", KAFKA, ""),
            &["source.fps", "got NaN"],
        ),
        bad(
            "fps infinite",
            doc("kind = \"synthetic\"\nfps = inf", KAFKA, ""),
            &["source.fps", "got inf"],
        ),
        bad(
            "width 0",
            doc("kind = \"synthetic\"\nwidth = 0", KAFKA, ""),
            &["source.width: must be at least 1 (got 0)"],
        ),
        bad(
            "height too large",
            doc("kind = \"synthetic\"\nheight = 16385", KAFKA, ""),
            &["source.height: must be at most 16384 (got 16385)"],
        ),
        // Limits.
        bad(
            "limits unknown key",
            min_with("[limits]\nmax_pixel = 5"),
            &["limits.max_pixel: unknown key", "max_pixels"],
        ),
        bad(
            "limits max_pixels 0",
            min_with("[limits]\nmax_pixels = 0"),
            &["limits.max_pixels: must be at least 1 (got 0)"],
        ),
        bad(
            "limits max_side_px over JPEG's maximum",
            min_with("[limits]\nmax_side_px = 65536"),
            &["limits.max_side_px: must be at most 65535 (got 65536)"],
        ),
        bad(
            "spool unknown mode",
            min_with("[spool]\nmode = \"sometimes\""),
            &["spool.mode", "outage", "always", "off"],
        ),
        bad(
            "spool max_bytes under 1 MiB",
            min_with("[spool]\nmax_bytes = 1000"),
            &["spool.max_bytes: must be at least 1048576 (got 1000)"],
        ),
        bad(
            "spool commit_interval_ms 0",
            min_with("[spool]\ncommit_interval_ms = 0"),
            &["spool.commit_interval_ms: must be at least 1 (got 0)"],
        ),
        bad(
            "spool replay share over 100",
            min_with("[spool]\nreplay_share_percent = 150"),
            &["spool.replay_share_percent: must be at most 100 (got 150)"],
        ),
        bad(
            "http listen not an address",
            min_with("[http]\nlisten = \"localhost\""),
            &["http.listen"],
        ),
        bad(
            "http listen a number",
            min_with("[http]\nlisten = 9187"),
            &["http.listen: wrong type"],
        ),
        bad(
            "http ready_within_ms under 100",
            min_with("[http]\nready_within_ms = 10"),
            &["http.ready_within_ms: must be at least 100 (got 10)"],
        ),
        bad(
            "http unknown key",
            min_with("[http]\nport = 9187"),
            &["http.port: unknown key", "listen"],
        ),
        bad(
            "log unknown format",
            min_with("[log]\nformat = \"xml\""),
            &["log.format", "text", "json"],
        ),
        bad(
            "log level not a filter",
            min_with("[log]\nlevel = \"=loud=\""),
            &["log.level: ", "not a level or filter"],
        ),
        bad(
            "log progress interval over a day",
            min_with("[log]\nprogress_interval_secs = 90000"),
            &["log.progress_interval_secs: must be at most 86400 (got 90000)"],
        ),
        bad(
            "gate pixel threshold 0",
            min_with("[gate]\nenabled = true\npixel_threshold = 0"),
            &["gate.pixel_threshold: must be from 1 to 255 (got 0)"],
        ),
        bad(
            "gate changed area over 100",
            min_with("[gate]\nchanged_area_percent = 150.0"),
            &["gate.changed_area_percent: must be more than 0 and at most 100 (got 150)"],
        ),
        bad(
            "gate enabled as a string",
            min_with("[gate]\nenabled = \"yes\""),
            &["gate.enabled: wrong type"],
        ),
        bad(
            "gate pre-roll over 30",
            min_with("[gate]\npre_roll_frames = 100"),
            &["gate.pre_roll_frames: must be at most 30 (got 100)"],
        ),
        bad(
            "spool dir is not a key",
            min_with("[spool]\ndir = \"/tmp/x\""),
            &["spool.dir: unknown key"],
        ),
        bad(
            "limits max_frame_bytes as text",
            min_with("[limits]\nmax_frame_bytes = \"64M\""),
            &["limits.max_frame_bytes", "integer"],
        ),
        bad_env(
            "limits max_frame_bytes too small from the environment",
            min_with(""),
            &[("EDGECAM_LIMITS__MAX_FRAME_BYTES", "100")],
            &["EDGECAM_LIMITS__MAX_FRAME_BYTES", "must be at least 1024 (got 100)"],
        ),
        bad(
            "synthetic frames over the limits",
            min_with("[limits]\nmax_pixels = 1000").replace(SYNTHETIC, "kind = \"synthetic\"\nwidth = 640\nheight = 480"),
            &["source.width", "640x480", "max_pixels"],
        ),
        bad(
            "mjpeg path is a character device",
            doc("kind = \"mjpeg\"\npath = \"/dev/zero\"", KAFKA, ""),
            &["source.path", "/dev/zero", "not a regular file", "source.command"],
        ),
        // Transform.
        bad(
            "rotate 45",
            min_with("[transform]\nrotate_degrees = 45"),
            &["transform.rotate_degrees", "0, 90, 180 or 270", "got 45"],
        ),
        bad(
            "rotate -90",
            min_with("[transform]\nrotate_degrees = -90"),
            &["transform.rotate_degrees", "got -90"],
        ),
        bad(
            "max_width 0",
            min_with("[transform]\nmax_width = 0"),
            &["transform.max_width: must be at least 1 (got 0)"],
        ),
        // Encode.
        bad(
            "budget 0",
            min_with("[encode]\nmax_message_bytes = 0"),
            &["encode.max_message_bytes: must be at least 4096 (got 0)"],
        ),
        bad(
            "budget 100",
            min_with("[encode]\nmax_message_bytes = 100"),
            &["encode.max_message_bytes: must be at least 4096 (got 100)"],
        ),
        bad(
            "budget negative",
            min_with("[encode]\nmax_message_bytes = -1"),
            &["encode.max_message_bytes: must be at least 4096 (got -1)"],
        ),
        bad(
            "budget too large",
            min_with("[encode]\nmax_message_bytes = 2000000000"),
            &["encode.max_message_bytes: must be at most 1000000000 (got 2000000000)"],
        ),
        bad(
            "budget beyond u32",
            min_with("[encode]\nmax_message_bytes = 5000000000"),
            &["encode.max_message_bytes: must be at most 1000000000 (got 5000000000)"],
        ),
        bad(
            "quality_min above quality_max",
            min_with("[encode]\nquality_min = 80\nquality_max = 50"),
            &["encode.quality_min", "encode.quality_max", "80", "50"],
        ),
        bad(
            "quality 101",
            min_with("[encode]\nquality_max = 101"),
            &["encode.quality_max: must be at most 100 (got 101)"],
        ),
        bad(
            "quality 300 (beyond u8)",
            min_with("[encode]\nquality_max = 300"),
            &["encode.quality_max: must be at most 100 (got 300)"],
        ),
        bad(
            "quality_min 0",
            min_with("[encode]\nquality_min = 0"),
            &["encode.quality_min: must be at least 1 (got 0)"],
        ),
        bad(
            "quality_step 0",
            min_with("[encode]\nquality_step = 0"),
            &["encode.quality_step: must be at least 1 (got 0)"],
        ),
        bad(
            "downscale 96",
            min_with("[encode]\ndownscale_percent = 96"),
            &["encode.downscale_percent: must be at most 95 (got 96)"],
        ),
        bad(
            "downscale 5",
            min_with("[encode]\ndownscale_percent = 5"),
            &["encode.downscale_percent: must be at least 10 (got 5)"],
        ),
        bad(
            "zstd level 0",
            min_with("[encode]\nzstd_level = 0"),
            &["encode.zstd_level: must be at least 1 (got 0)"],
        ),
        bad(
            "zstd level 23",
            min_with("[encode]\nzstd_level = 23"),
            &["encode.zstd_level: must be at most 22 (got 23)"],
        ),
        // Pipeline.
        bad(
            "shutdown grace too long",
            min_with("[pipeline]\nshutdown_grace_ms = 600001"),
            &["pipeline.shutdown_grace_ms: must be at most 600000 (got 600001)"],
        ),
        bad(
            "queue_frames 0",
            min_with("[pipeline]\nqueue_frames = 0"),
            &["pipeline.queue_frames: must be at least 1 (got 0)"],
        ),
        // Kafka.
        bad(
            "bootstrap without port",
            doc(SYNTHETIC, "bootstrap_servers = \"broker\"", ""),
            &["kafka.bootstrap_servers", "host:port", "\"broker\"", "no port"],
        ),
        bad(
            "bootstrap with a word for a port",
            doc(SYNTHETIC, "bootstrap_servers = \"a:9092,b:kafka\"", ""),
            &["kafka.bootstrap_servers", "\"b:kafka\""],
        ),
        bad(
            "bootstrap empty",
            doc(SYNTHETIC, "bootstrap_servers = \" \"", ""),
            &["kafka.bootstrap_servers", "empty"],
        ),
        bad(
            "bootstrap trailing comma",
            doc(SYNTHETIC, "bootstrap_servers = \"a:9092,\"", ""),
            &["kafka.bootstrap_servers", "an empty entry"],
        ),
        bad(
            "bootstrap without host",
            doc(SYNTHETIC, "bootstrap_servers = \":9092\"", ""),
            &["kafka.bootstrap_servers", "no host"],
        ),
        bad(
            "bad topic name",
            doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"frames/cam 1\""), ""),
            &["kafka.topic", "Kafka topic name", "'/'"],
        ),
        bad(
            "topic ..",
            doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"..\""), ""),
            &["kafka.topic", "not \".\" or \"..\""],
        ),
        bad(
            "topic too long",
            doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"{}\"", "t".repeat(250)), ""),
            &["kafka.topic", "got 250 characters"],
        ),
        bad(
            "bad error topic",
            doc(SYNTHETIC, &format!("{KAFKA}\nerror_topic = \"\""), ""),
            &["kafka.error_topic", "got 0 characters"],
        ),
        bad(
            "error topic equals topic",
            doc(SYNTHETIC, &format!("{KAFKA}\ntopic = \"t1\"\nerror_topic = \"t1\""), ""),
            &["kafka.error_topic", "must differ from kafka.topic"],
        ),
        bad(
            "max_in_flight too high",
            doc(SYNTHETIC, &format!("{KAFKA}\nmax_in_flight = 100001"), ""),
            &["kafka.max_in_flight: must be at most 100000 (got 100001)"],
        ),
        bad(
            "max_in_flight 0",
            doc(SYNTHETIC, &format!("{KAFKA}\nmax_in_flight = 0"), ""),
            &["kafka.max_in_flight: must be at least 1 (got 0)"],
        ),
        bad(
            "acks in properties",
            min_with("[kafka.properties]\nacks = \"1\""),
            &["kafka.properties.acks", "acks=all"],
        ),
        bad(
            "idempotence in properties",
            min_with("[kafka.properties]\n\"enable.idempotence\" = false"),
            &["kafka.properties.enable.idempotence", "idempotence on"],
        ),
        bad(
            "bootstrap.servers in properties",
            min_with("[kafka.properties]\n\"bootstrap.servers\" = \"b:9092\""),
            &["kafka.properties.bootstrap.servers", "kafka.bootstrap_servers"],
        ),
        bad(
            "message.timeout.ms in properties",
            min_with("[kafka.properties]\n\"message.timeout.ms\" = 5"),
            &["kafka.properties.message.timeout.ms", "kafka.message_timeout_ms"],
        ),
        bad(
            "message.max.bytes below the budget",
            min_with("[kafka.properties]\n\"message.max.bytes\" = 500000"),
            &["kafka.properties.message.max.bytes", "1000000", "got 500000"],
        ),
        bad(
            "unquoted dotted property name",
            min_with("[kafka.properties]\nlinger.ms = 5"),
            &["kafka.properties.linger", "quote", "\"linger.ms\" = 5"],
        ),
        bad(
            "float property",
            min_with("[kafka.properties]\n\"x.y\" = 0.5"),
            &["kafka.properties.x.y: wrong type", "float `0.5`"],
        ),
        bad(
            "partitions 0",
            doc(SYNTHETIC, &format!("{KAFKA}\ncreate_topic_partitions = 0"), ""),
            &["kafka.create_topic_partitions: must be at least 1 (got 0)"],
        ),
        // Environment.
        bad_env(
            "env override with a bad number",
            min_with(""),
            &[("EDGECAM_ENCODE__QUALITY_MAX", "abc")],
            &["encode.quality_max: wrong type", "\"abc\"", "EDGECAM_ENCODE__QUALITY_MAX"],
        ),
        bad_env(
            "env override out of range",
            min_with(""),
            &[("EDGECAM_ENCODE__MAX_MESSAGE_BYTES", "10")],
            &["encode.max_message_bytes: must be at least 4096 (got 10)", "EDGECAM_ENCODE__MAX_MESSAGE_BYTES"],
        ),
        bad_env(
            "env override with a bad topic",
            min_with(""),
            &[("EDGECAM_KAFKA__TOPIC", "bad topic")],
            &["kafka.topic", "' '", "EDGECAM_KAFKA__TOPIC"],
        ),
        bad_env(
            "env unknown key",
            min_with(""),
            &[("EDGECAM_KAFKA__TOPC", "x")],
            &["kafka.topc: unknown key", "EDGECAM_KAFKA__TOPC", "topic"],
        ),
        bad_env(
            "env unknown table",
            min_with(""),
            &[("EDGECAM_CAMERA__ID", "x")],
            &["camera: unknown key", "EDGECAM_CAMERA__ID", "[device]"],
        ),
        bad_env(
            "env single underscore between levels",
            min_with(""),
            &[("EDGECAM_KAFKA_TOPIC", "x")],
            &["EDGECAM_KAFKA_TOPIC", "did you mean EDGECAM_KAFKA__TOPIC"],
        ),
        bad_env(
            "env sub-key of a value",
            min_with(""),
            &[("EDGECAM_KAFKA__TOPIC__NAME", "x")],
            &["EDGECAM_KAFKA__TOPIC__NAME", "kafka.topic: wrong type", "found a table"],
        ),
        bad_env(
            "env acks property",
            min_with(""),
            &[("EDGECAM_KAFKA__PROPERTIES__ACKS", "1")],
            &["kafka.properties.acks", "EDGECAM_KAFKA__PROPERTIES__ACKS"],
        ),
        bad_env(
            "env properties without a name",
            min_with(""),
            &[("EDGECAM_KAFKA__PROPERTIES", "x")],
            &["EDGECAM_KAFKA__PROPERTIES", "one property per variable"],
        ),
        bad_env(
            "env source.command",
            doc("kind = \"mjpeg\"\ncommand = [\"cat\"]", KAFKA, ""),
            &[("EDGECAM_SOURCE__COMMAND", "cat x")],
            &["EDGECAM_SOURCE__COMMAND", "source.command: wrong type", "a list"],
        ),
        bad_env(
            "env unknown kind",
            min_with(""),
            &[("EDGECAM_SOURCE__KIND", "webcam")],
            &["source.kind", "\"webcam\""],
        ),
        // Pub/Sub.
        bad(
            "pubsub sink without [pubsub]",
            min_with("[sink]\nkind = \"pubsub\""),
            &["pubsub", "required key is missing"],
        ),
        bad(
            "pubsub without project",
            pubsub("topic = \"frames\""),
            &["pubsub", "project"],
        ),
        bad(
            "pubsub without topic",
            pubsub("project = \"my-project\""),
            &["pubsub", "topic"],
        ),
        bad(
            "pubsub project not an id",
            pubsub("project = \"My Project\"\ntopic = \"frames\""),
            &["pubsub.project", "project id"],
        ),
        bad(
            "pubsub topic reserved",
            pubsub("project = \"p-1\"\ntopic = \"google-frames\""),
            &["pubsub.topic", "goog"],
        ),
        bad(
            "pubsub endpoint not a URL",
            pubsub("project = \"p-1\"\ntopic = \"frames\"\nendpoint = \"pubsub.googleapis.com\""),
            &["pubsub.endpoint", "must be a URL"],
        ),
        bad(
            "pubsub endpoint with a path",
            pubsub("project = \"p-1\"\ntopic = \"frames\"\nendpoint = \"https://h/v1\""),
            &["pubsub.endpoint", "no path"],
        ),
        bad(
            "pubsub key unreadable",
            pubsub("project = \"p-1\"\ntopic = \"frames\"\ncredentials = { file = \"no-key.json\" }"),
            &["pubsub.credentials", "no-key.json", "does not exist"],
        ),
        bad(
            "pubsub key not a service account",
            pubsub(&format!(
                "project = \"p-1\"\ntopic = \"frames\"\ncredentials = {{ file = \"{}\" }}",
                dir.join("user.json").display()
            )),
            &["pubsub.credentials", "authorized_user", "not a service-account key"],
        ),
        bad(
            "pubsub key not JSON",
            pubsub(&format!(
                "project = \"p-1\"\ntopic = \"frames\"\ncredentials = {{ file = \"{}\" }}",
                dir.join("notes.txt").display()
            )),
            &["pubsub.credentials", "not a service-account JSON key", "not JSON"],
        ),
        bad(
            "pubsub in flight over a request",
            pubsub("project = \"p-1\"\ntopic = \"frames\"\nmax_in_flight = 1001"),
            &["pubsub.max_in_flight", "at most 1000"],
        ),
        bad(
            "pubsub budget over a request",
            format!(
                "{}[encode]\nmax_message_bytes = 8000000\n",
                pubsub("project = \"p-1\"\ntopic = \"frames\"")
            ),
            &["encode.max_message_bytes", "at most 7000000", "pubsub"],
        ),
        bad(
            "pubsub emulator_host from the file",
            pubsub("project = \"p-1\"\ntopic = \"frames\"\nemulator_host = \"h:1\""),
            &["pubsub", "emulator_host"],
        ),
        bad_env(
            "pubsub emulator host not host:port",
            pubsub("project = \"p-1\"\ntopic = \"frames\""),
            &[("PUBSUB_EMULATOR_HOST", "http://h:1/x")],
            &["PUBSUB_EMULATOR_HOST", "host:port"],
        ),
    ]
}

/// An agent publishing to Pub/Sub with `body` as its `[pubsub]` table.
fn pubsub(body: &str) -> String {
    format!("{DEVICE}\n[source]\n{SYNTHETIC}\n[sink]\nkind = \"pubsub\"\n[pubsub]\n{body}\n")
}

/// Runs `edgecam <command> --config <file>` with only `PATH` and `env` in the environment.
fn edgecam(command: &str, file: &Path, env: &[(String, String)]) -> std::process::Output {
    Command::new(BIN)
        .args([command, "--config"])
        .arg(file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// Checks one row against one command: exit 64, the message once, every expected part.
fn check(row: &Bad, command: &str, file: &Path) -> Vec<String> {
    let out = edgecam(command, file, &row.env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut failures = Vec::new();
    if out.status.code() != Some(64) {
        failures.push(format!(
            "{} ({command}): exit {:?}, not 64; stderr {stderr:?}",
            row.name,
            out.status.code()
        ));
        return failures;
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("edgecam:") && !l.starts_with("edgecam: warning"))
        .collect();
    if errors.len() != 1 {
        failures.push(format!(
            "{} ({command}): {} error lines, want 1: {stderr:?}",
            row.name,
            errors.len()
        ));
    }
    for want in row.expect {
        if !stderr.contains(want) {
            failures.push(format!(
                "{} ({command}): {stderr:?} lacks {want:?}",
                row.name
            ));
        }
    }
    if !out.stdout.is_empty() {
        failures.push(format!("{} ({command}): printed to stdout", row.name));
    }
    failures
}

fn fixtures(dir: &Path) {
    std::fs::write(dir.join("clip.mjpeg"), b"\xff\xd8\xff\xd9").unwrap();
    std::fs::write(dir.join("empty.pass"), b"").unwrap();
    std::fs::create_dir_all(dir.join("dir.pass")).unwrap();
    std::fs::create_dir_all(dir.join("creds")).unwrap();
    std::fs::write(dir.join("creds/empty"), b"\n").unwrap();
    std::fs::write(dir.join("notes.txt"), b"the key is in the safe\n").unwrap();
    // gcloud's user credentials file: JSON, but no service-account key.
    std::fs::write(
        dir.join("user.json"),
        br#"{"type": "authorized_user", "client_id": "x", "client_secret": "s3cret", "refresh_token": "r"}"#,
    )
    .unwrap();
}

/// A bridge file: `[bridge]` keys, one input plus `inputs`, `[mqtt]` and `[kafka]` extras.
fn bridge_doc(bridge: &str, inputs: &str, mqtt: &str, kafka: &str) -> String {
    format!(
        "[bridge]\nid = \"site-a\"\n{bridge}\n\n[[bridge.inputs]]\ntopic = \
         \"edgecam/{{device}}/frame\"\nformat = \"edgecam\"\n{inputs}\n\n[mqtt]\nhost = \
         \"localhost\"\n{mqtt}\n\n[kafka]\nbootstrap_servers = \"localhost:9092\"\n{kafka}\n"
    )
}

/// An agent with an MQTT sink and `mqtt` extra keys.
fn mqtt_agent(mqtt: &str) -> String {
    format!(
        "{DEVICE}\n[source]\n{SYNTHETIC}\n\n[sink]\nkind = \"mqtt\"\n\n[mqtt]\nhost = \
         \"localhost\"\n{mqtt}\n"
    )
}

/// Properties that need a librdkafka feature this build lacks, checked against
/// `builtin.features` when the file is loaded, not only when the producer starts; and
/// `[mqtt.tls]` files.
fn missing_feature_rows() -> Vec<Bad> {
    let native = rdkafka::ClientConfig::new().create_native_config().unwrap();
    let features = native.get("builtin.features").unwrap();
    let has = |f: &str| features.split(',').any(|x| x == f);
    // edgecam is built with TLS, SASL PLAIN/SCRAM/OAUTHBEARER and zstd.
    assert!(has("ssl") && has("sasl_scram") && has("zstd"), "{features}");
    vec![
        bad(
            "Kerberos: librdkafka lists it, but edgecam has no Cyrus SASL",
            min_with("[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"GSSAPI\""),
            &["kafka.properties.security.protocol", "sasl_gssapi", "Cyrus SASL", "SCRAM-SHA-512"],
        ),
        bad(
            "SASL without a mechanism is librdkafka's default GSSAPI",
            min_with("[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\""),
            &["kafka.properties.security.protocol", "sasl_gssapi", "librdkafka's default"],
        ),
        bad(
            "Kafka CA file missing",
            min_with("[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/nonexistent/ca.pem\""),
            &["kafka.properties.ssl.ca.location", "/nonexistent/ca.pem does not exist"],
        ),
        bad(
            "MQTT CA file missing",
            mqtt_agent("[mqtt.tls]\nca_file = \"/nonexistent/ca.pem\""),
            &["mqtt.tls.ca_file", "/nonexistent/ca.pem does not exist"],
        ),
        bad(
            "MQTT client certificate without its key",
            mqtt_agent("[mqtt.tls]\ncert_file = \"/etc/hostname\""),
            &["mqtt.tls.cert_file", "needs mqtt.tls.key"],
        ),
    ]
}

/// Rows added with the strict loader: coercions, secrets, librdkafka, programs, the bridge.
fn strict_rows(dir: &Path) -> Vec<Bad> {
    let d = dir.display();
    let creds = dir.join("creds");
    let creds = creds.to_str().unwrap().to_string();
    let creds: &'static str = Box::leak(creds.into_boxed_str());
    vec![
        // Coercions the `config` crate used to make silently.
        bad("boolean fps", doc("kind = \"synthetic\"\nfps = true", KAFKA, ""),
            &["source.fps: wrong type", "a number", "boolean `true`", "line 6, column 1"]),
        bad("fractional width", doc("kind = \"synthetic\"\nwidth = 1280.5", KAFKA, ""),
            &["source.width: wrong type", "an integer", "float `1280.5`"]),
        bad("fractional budget", min_with("[encode]\nmax_message_bytes = 500000.9"),
            &["encode.max_message_bytes: wrong type", "float `500000.9`", "line 11"]),
        bad("quoted quality", min_with("[encode]\nquality_max = \"80\""),
            &["encode.quality_max: wrong type", "an integer from 1 to 100", "string \"80\""]),
        bad("integer passthrough", min_with("[encode]\npassthrough = 1"),
            &["encode.passthrough: wrong type", "boolean", "integer `1`"]),
        bad("integer device id", "[device]\nid = 42\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"h:1\"\n".into(),
            &["device.id: wrong type", "a string", "integer `42`"]),
        bad("integer topic", doc(SYNTHETIC, "bootstrap_servers = \"h:1\"\ntopic = 5", ""),
            &["kafka.topic: wrong type", "a string", "integer `5`"]),
        bad("quoted port", mqtt_agent("port = \"1883\""),
            &["mqtt.port: wrong type", "an integer from 1 to 65535", "string \"1883\""]),
        bad("boolean qos", mqtt_agent("qos = true"), &["mqtt.qos: wrong type", "boolean `true`"]),
        bad_env("env fps not a number", min_with(""), &[("EDGECAM_SOURCE__FPS", "fast")],
            &["source.fps: wrong type", "a number", "EDGECAM_SOURCE__FPS"]),
        bad_env("env fractional width", min_with(""), &[("EDGECAM_SOURCE__WIDTH", "1280.5")],
            &["source.width: wrong type", "\"1280.5\"", "EDGECAM_SOURCE__WIDTH"]),
        bad_env("env boolean spelled yes", min_with(""), &[("EDGECAM_ENCODE__PASSTHROUGH", "yes")],
            &["encode.passthrough: wrong type", "a boolean", "EDGECAM_ENCODE__PASSTHROUGH"]),
        bad_env("env budget fraction", min_with(""), &[("EDGECAM_ENCODE__MAX_MESSAGE_BYTES", "500000.9")],
            &["encode.max_message_bytes: wrong type", "EDGECAM_ENCODE__MAX_MESSAGE_BYTES"]),
        // Secrets by file and credential.
        bad("password file missing", mqtt_agent("username = \"u\"\npassword = { file = \"nope.pass\" }"),
            &["mqtt.password", "secret file", "nope.pass", "does not exist"]),
        bad("password file empty", mqtt_agent("username = \"u\"\npassword = { file = \"empty.pass\" }"),
            &["mqtt.password", "empty.pass", "is empty"]),
        bad("password file unreadable (a directory)", mqtt_agent("username = \"u\"\npassword = { file = \"dir.pass\" }"),
            &["mqtt.password", "dir.pass", "cannot be read"]),
        bad("credential without CREDENTIALS_DIRECTORY", mqtt_agent("username = \"u\"\npassword = { credential = \"mqtt\" }"),
            &["mqtt.password", "CREDENTIALS_DIRECTORY", "LoadCredential=mqtt:"]),
        bad_env("credential missing", mqtt_agent("username = \"u\"\npassword = { credential = \"mqtt\" }"),
            &[("CREDENTIALS_DIRECTORY", creds)],
            &["mqtt.password", "credential", "creds/mqtt", "does not exist"]),
        bad_env("credential empty", mqtt_agent("username = \"u\"\npassword = { credential = \"empty\" }"),
            &[("CREDENTIALS_DIRECTORY", creds)],
            &["mqtt.password", "creds/empty", "is empty"]),
        bad("credential name with a slash", mqtt_agent("username = \"u\"\npassword = { credential = \"../x\" }"),
            &["mqtt.password", "plain file name"]),
        bad("secret reference with both", mqtt_agent("username = \"u\"\npassword = { file = \"a\", credential = \"b\" }"),
            &["mqtt.password", "exactly one of file or credential"]),
        bad("secret reference typo", mqtt_agent("username = \"u\"\npassword = { path = \"a\" }"),
            &["mqtt.password.path: unknown key", "file, credential"]),
        bad("secret reference empty table", mqtt_agent("username = \"u\"\npassword = {}"),
            &["mqtt.password", "needs file"]),
        bad("password of the wrong type", mqtt_agent("username = \"u\"\npassword = 5"),
            &["mqtt.password: wrong type", "<redacted>"]),
        bad("password given as an array", mqtt_agent("username = \"u\"\npassword = [\"a\"]"),
            &["mqtt.password: wrong type", "secret reference"]),
        bad_env("env password by file, missing", mqtt_agent("username = \"u\""),
            &[("EDGECAM_MQTT__PASSWORD__FILE", "/nonexistent/mqtt.pass")],
            &["mqtt.password", "/nonexistent/mqtt.pass", "does not exist"]),
        bad("kafka secret property file missing", min_with("[kafka.properties]\n\"sasl.password\" = { file = \"nope\" }"),
            &["kafka.properties.sasl.password", "does not exist"]),
        bad("kafka secret property credential without directory", min_with("[kafka.properties]\n\"sasl.password\" = { credential = \"kafka\" }"),
            &["kafka.properties.sasl.password", "CREDENTIALS_DIRECTORY"]),
        // librdkafka checks its own properties, without connecting.
        bad("librdkafka property typo", min_with("[kafka.properties]\n\"lingr.ms\" = 5"),
            &["kafka.properties.lingr.ms", "librdkafka refuses it", "line 11"]),
        bad("librdkafka bad value", min_with("[kafka.properties]\n\"linger.ms\" = \"soon\""),
            &["kafka.properties.linger.ms", "librdkafka refuses it"]),
        bad("librdkafka value out of range", min_with("[kafka.properties]\n\"batch.num.messages\" = 0"),
            &["kafka.properties.batch.num.messages", "librdkafka refuses it"]),
        bad("librdkafka unknown enum value", min_with("[kafka.properties]\n\"compression.type\" = \"brotli\""),
            &["kafka.properties.compression.type", "librdkafka refuses it"]),
        bad_env("env librdkafka property typo", min_with(""), &[("EDGECAM_KAFKA__PROPERTIES__LINGR_MS", "5")],
            &["kafka.properties.lingr.ms", "librdkafka refuses it", "EDGECAM_KAFKA__PROPERTIES__LINGR_MS"]),
        // Programs that are not there.
        bad("program not installed", doc("kind = \"mjpeg\"\ncommand = [\"edgecam-no-such-program\", \"-o\", \"-\"]", KAFKA, ""),
            &["source.command", "\"edgecam-no-such-program\" is not installed", "PATH"]),
        bad("program path missing", doc("kind = \"mjpeg\"\ncommand = [\"/nonexistent/rpicam-vid\"]", KAFKA, ""),
            &["source.command", "/nonexistent/rpicam-vid is not an executable"]),
        bad("program path not executable", doc(&format!("kind = \"mjpeg\"\ncommand = [\"{d}/clip.mjpeg\"]"), KAFKA, ""),
            &["source.command", "clip.mjpeg is not an executable"]),
        // Settings that void a guarantee.
        bad("agent qos 0 without opt-in", mqtt_agent("qos = 0"),
            &["mqtt.qos", "no-loss", "allow_message_loss"]),
        bad("device id ..", "[device]\nid = \"..\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"h:1\"\n".into(),
            &["device.id", "must not be \"..\""]),
        // The bridge, through the same loader.
        bad("bridge session expiry 0", bridge_doc("", "", "session_expiry_secs = 0", ""),
            &["mqtt.session_expiry_secs", "no-loss", "allow_message_loss"]),
        bad("bridge input qos 0", bridge_doc("", "qos = 0", "", ""),
            &["bridge.inputs[0].qos", "no-loss", "allow_message_loss"]),
        bad("bridge without [mqtt]", "[bridge]\nid = \"b\"\n[[bridge.inputs]]\ntopic = \"a/{device}\"\nformat = \"raw\"\n[kafka]\nbootstrap_servers = \"h:1\"\n".into(),
            &["mqtt: required key is missing"]),
        bad("bridge unknown key", bridge_doc("inputz = 1", "", "", ""),
            &["bridge.inputz: unknown key", "did you mean `inputs`?", "dead_letter_topic"]),
        bad("bridge id ..", bridge_doc("", "", "", "").replace("id = \"site-a\"", "id = \"..\""),
            &["bridge.id", "must not be"]),
        bad("bridge fractional budget", bridge_doc("max_message_bytes = 1.5", "", "", ""),
            &["bridge.max_message_bytes: wrong type", "float `1.5`"]),
        bad("bridge error_topic", bridge_doc("", "", "", "error_topic = \"errs\""),
            &["kafka.error_topic", "not used by the bridge"]),
        bad("bridge MQTT 3.1.1", bridge_doc("", "", "protocol = \"v311\"", ""),
            &["mqtt.protocol", "MQTT 5"]),
        bad("bridge pattern without {device}", bridge_doc("", "", "", "").replace("edgecam/{device}/frame", "edgecam/frames"),
            &["bridge.inputs[0].topic", "{device}"]),
        bad("bridge inputs overlap", bridge_doc("", "\n[[bridge.inputs]]\ntopic = \"edgecam/{device}/frame\"\nformat = \"raw\"", "", ""),
            &["bridge.inputs[1].topic", "overlaps bridge.inputs[0].topic"]),
        bad("bridge in-flight above MQTT receive maximum", bridge_doc("", "", "", "max_in_flight = 70000"),
            &["kafka.max_in_flight", "65535"]),
        bad("bridge dead letters into the frame topic", bridge_doc("dead_letter_topic = \"edgecam.frames\"", "", "", ""),
            &["bridge.dead_letter_topic", "must differ from kafka.topic"]),
        bad("bridge librdkafka typo", bridge_doc("", "", "", "[kafka.properties]\n\"lingr.ms\" = 1"),
            &["kafka.properties.lingr.ms", "librdkafka refuses it"]),
        bad_env("bridge env budget not a number", bridge_doc("", "", "", ""),
            &[("EDGECAM_BRIDGE__MAX_MESSAGE_BYTES", "big")],
            &["bridge.max_message_bytes: wrong type", "EDGECAM_BRIDGE__MAX_MESSAGE_BYTES"]),
        // [bridge.http]: uploads.
        bad("bridge.http unknown key", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\nmax_body = 5", "", "", ""),
            &["bridge.http.max_body: unknown key", "max_body_bytes"]),
        bad("bridge.http listen without a port", bridge_doc("[bridge.http]\nlisten = \"localhost\"", "", "", ""),
            &["bridge.http.listen", "invalid socket address"]),
        bad("bridge.http body limit too small", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\nmax_body_bytes = 10", "", "", ""),
            &["bridge.http.max_body_bytes", "at least 1024", "got 10"]),
        bad("bridge.http no concurrency", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\nmax_concurrent = 0", "", "", ""),
            &["bridge.http.max_concurrent", "at least 1"]),
        bad("bridge.http rate 0", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\nper_device_per_sec = 0", "", "", ""),
            &["bridge.http.per_device_per_sec", "at least 1"]),
        bad("bridge.http timeout too short", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\ntimeout_ms = 50", "", "", ""),
            &["bridge.http.timeout_ms", "at least 100", "got 50"]),
        bad("bridge.http empty token", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\ntoken = \" \"", "", "", ""),
            &["bridge.http.token", "must not be empty"]),
        bad("bridge.http token file missing", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\ntoken = { file = \"nope.token\" }", "", "", ""),
            &["bridge.http.token", "secret file", "nope.token", "does not exist"]),
        bad("bridge.http token credential without CREDENTIALS_DIRECTORY", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"\ntoken = { credential = \"upload\" }", "", "", ""),
            &["bridge.http.token", "CREDENTIALS_DIRECTORY"]),
        bad("bridge.http token without listen", bridge_doc("[bridge.http]\ntoken = \"abc\"", "", "", ""),
            &["bridge.http.token", "bridge.http.listen is not"]),
        bad("bridge.http on the [http] address", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"", "", "", "") + "\n[http]\nlisten = \"127.0.0.1:8080\"\n",
            &["bridge.http.listen", "must differ from http.listen"]),
        bad_env("bridge.http env concurrency not a number", bridge_doc("[bridge.http]\nlisten = \"127.0.0.1:8080\"", "", "", ""),
            &[("EDGECAM_BRIDGE__HTTP__MAX_CONCURRENT", "many")],
            &["bridge.http.max_concurrent: wrong type", "EDGECAM_BRIDGE__HTTP__MAX_CONCURRENT"]),
    ]
}

#[test]
fn check_config_and_run_refuse_every_bad_config_with_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let mut rows = bad_rows(dir.path());
    rows.extend(strict_rows(dir.path()));
    rows.extend(missing_feature_rows());
    assert!(rows.len() >= 120, "{} rows", rows.len());
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let file: PathBuf = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&file, &row.toml).unwrap();
        failures.extend(check(row, "check-config", &file));
        failures.extend(check(row, "run", &file));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
