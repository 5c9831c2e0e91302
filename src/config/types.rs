//! Bounded values that validate themselves: a rule about a kind of value (a JPEG quality, a
//! port, a device id, a Kafka topic name) is written here once, and every key of that kind
//! uses the type. Deserializing an out-of-range value fails with a message naming the range;
//! the loader adds the key, the file, the line and the column.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// An integer newtype that only holds values in `MIN..=MAX`.
///
/// `get()` returns the value; `new()` returns `None` outside the range. Deserializes from a
/// TOML integer (or, from the environment, its decimal text) and fails with
/// `must be from MIN to MAX (got N)` outside the range.
macro_rules! bounded {
    ($(#[$meta:meta])* $name:ident($t:ty), $lo:expr, $hi:expr, $what:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name($t);

        impl $name {
            /// Smallest allowed value.
            pub const MIN: $t = $lo;
            /// Largest allowed value.
            pub const MAX: $t = $hi;

            /// `Some` when `v` is in `MIN..=MAX`.
            pub const fn new(v: $t) -> Option<Self> {
                if (v as i128) >= ($lo as i128) && (v as i128) <= ($hi as i128) {
                    Some(Self(v))
                } else {
                    None
                }
            }

            /// The value, in `MIN..=MAX`.
            pub const fn get(self) -> $t {
                self.0
            }

            /// What the key takes, for messages: `an integer from 1 to 100 (JPEG quality)`.
            pub fn expected() -> String {
                format!("an integer {} ({})", range_text($lo as i128, $hi as i128), $what)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl PartialEq<$t> for $name {
            fn eq(&self, other: &$t) -> bool {
                self.0 == *other
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(&$name::expected())
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        self.visit_i128(v as i128)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        self.visit_i128(v as i128)
                    }
                    fn visit_i128<E: de::Error>(self, v: i128) -> Result<$name, E> {
                        if let Some(m) = out_of_range(v, $lo as i128, $hi as i128) {
                            return Err(E::custom(m));
                        }
                        Ok($name(v as $t))
                    }
                }
                d.deserialize_i64(V)
            }
        }
    };
}

/// `must be at least 1 (got 0)` / `must be at most 100 (got 300)`, or `None` in range.
pub(crate) fn out_of_range(v: i128, lo: i128, hi: i128) -> Option<String> {
    if v < lo {
        Some(format!("must be at least {lo} (got {v})"))
    } else if v > hi {
        Some(format!("must be at most {hi} (got {v})"))
    } else {
        None
    }
}

/// `from 1 to 100`, or `at least 1` when the top is only a type limit.
pub(crate) fn range_text(lo: i128, hi: i128) -> String {
    if hi >= u32::MAX as i128 {
        format!("at least {lo}")
    } else {
        format!("from {lo} to {hi}")
    }
}

bounded!(
    /// JPEG quality, 1–100 (`encode.quality_max`, `encode.quality_min`).
    Quality(u8), 1, 100, "JPEG quality"
);
bounded!(
    /// Per-side scale of one downscale rung, percent, 10–95 (`encode.downscale_percent`).
    DownscalePercent(u8), 10, 95, "percent per side"
);
bounded!(
    /// zstd compression level, 1–22 (`encode.zstd_level`).
    ZstdLevel(i32), 1, 22, "zstd level"
);
bounded!(
    /// A byte budget for one whole Kafka record, 4,096–1,000,000,000 bytes
    /// (`encode.max_message_bytes`, `bridge.max_message_bytes`).
    Budget(u32), 4096, 1_000_000_000, "bytes"
);
bounded!(
    /// A frame side in pixels, 1–16,384 (`source.width`, `source.height`).
    Side(u32), 1, 16_384, "pixels"
);
bounded!(
    /// Pixels one image may declare, 1–4,000,000,000 (`limits.max_pixels`).
    MaxPixels(u64), 1, 4_000_000_000, "pixels"
);
bounded!(
    /// Longest side one image may declare, 1–65,535 pixels, JPEG's own maximum
    /// (`limits.max_side_px`).
    MaxSide(u32), 1, 65_535, "pixels"
);
bounded!(
    /// Bytes of one encoded image, 1,024–1,073,741,824 (`limits.max_frame_bytes`).
    FrameBytes(usize), 1024, 1 << 30, "bytes"
);
bounded!(
    /// A positive pixel count with no upper bound but the type's (`transform.max_width`, …).
    Pixels(u32), 1, u32::MAX, "pixels"
);
bounded!(
    /// A positive count with no upper bound but the type's (`encode.quality_step`, …).
    Count(u32), 1, u32::MAX, "count"
);
bounded!(
    /// A TCP port, 1–65535 (`mqtt.port`).
    Port(u16), 1, 65_535, "TCP port"
);
bounded!(
    /// MQTT QoS edgecam supports: 0 (at most once) or 1 (at least once).
    Qos(u8), 0, 1, "MQTT QoS"
);
bounded!(
    /// A grace period, milliseconds, 0–600,000 (`pipeline.shutdown_grace_ms`, …).
    GraceMs(u64), 0, 600_000, "milliseconds"
);
bounded!(
    /// How old the last frame or delivery may be for `/readyz` to say ready, milliseconds,
    /// 100–3,600,000 (`http.ready_within_ms`).
    ReadyMs(u64), 100, 3_600_000, "milliseconds"
);
bounded!(
    /// Seconds between progress lines, 0–86,400, 0 = off (`log.progress_interval_secs`).
    ProgressSecs(u32), 0, 86_400, "seconds"
);
bounded!(
    /// MQTT keep-alive interval, seconds, 5–3600 (`mqtt.keep_alive_secs`).
    KeepAliveSecs(u16), 5, 3600, "seconds"
);

bounded!(
    /// A capacity in records or frames, 1–1,000,000 (`pipeline.queue_frames`).
    Capacity(usize), 1, 1_000_000, "frames"
);
bounded!(
    /// Records awaiting their delivery report at once, 1–100,000 (`kafka.max_in_flight`).
    InFlight(usize), 1, 100_000, "records"
);
bounded!(
    /// QoS 1 publishes awaiting their PUBACK at once, 1–65,535 (`mqtt.max_in_flight`).
    MqttInFlight(u16), 1, u16::MAX, "messages"
);
bounded!(
    /// librdkafka's `message.timeout.ms` range, 1–2,147,483,647 ms (`kafka.message_timeout_ms`).
    TimeoutMs(u32), 1, i32::MAX as u32, "milliseconds"
);
bounded!(
    /// Bytes of one HTTP request body, 1,024–1,073,741,824 (`bridge.http.max_body_bytes`).
    BodyBytes(usize), 1024, 1 << 30, "bytes"
);
bounded!(
    /// HTTP requests handled at once, 1–10,000 (`bridge.http.max_concurrent`).
    Concurrency(usize), 1, 10_000, "requests"
);
bounded!(
    /// Uploads per device per second, 1–1,000,000 (`bridge.http.per_device_per_sec`).
    PerSec(u32), 1, 1_000_000, "uploads per second"
);
bounded!(
    /// How long an upload waits for Kafka's delivery report, milliseconds, 100–600,000
    /// (`bridge.http.timeout_ms`).
    WaitMs(u64), 100, 600_000, "milliseconds"
);
bounded!(
    /// Partitions of a topic edgecam creates, 1–2,147,483,647 (Kafka's int32).
    Partitions(u32), 1, i32::MAX as u32, "partitions"
);
bounded!(
    /// Replication factor of a topic edgecam creates, 1–32,767 (Kafka's int16).
    Replication(u32), 1, i16::MAX as u32, "replicas"
);

/// Characters allowed in device ids and Kafka topic names.
pub(crate) fn is_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')
}

/// A string newtype checked by `$check` (a `fn(&str) -> Result<(), String>`); derefs to
/// `str`, prints as itself.
macro_rules! checked_str {
    ($(#[$meta:meta])* $name:ident, $check:path, $expected:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `s`; the error says what is allowed and what was found.
            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                $check(&s)?;
                Ok(Self(s))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expected)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::new(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

const DEVICE_ID_RULE: &str = "1 to 128 characters from A-Z a-z 0-9 . _ -";

fn check_device_id(id: &str) -> Result<(), String> {
    let len = id.chars().count();
    if len == 0 || len > 128 {
        return Err(format!("must be {DEVICE_ID_RULE} (got {len} characters)"));
    }
    if let Some(bad) = id.chars().find(|&ch| !is_name_char(ch)) {
        return Err(format!(
            "must be {DEVICE_ID_RULE} (got {id:?}, which contains {bad:?})"
        ));
    }
    if id == "." || id == ".." {
        return Err(format!(
            "must not be {id:?}: device ids become file and directory names downstream"
        ));
    }
    Ok(())
}

checked_str!(
    /// A device (or bridge) id: 1–128 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..`.
    /// The Kafka record key, the `edgecam.device` header, a level of MQTT topics and a
    /// directory name in `edgecam consume`'s output, so it must be safe in all four.
    DeviceId,
    check_device_id,
    "a string: a device id (1 to 128 characters from A-Z a-z 0-9 . _ -)"
);

fn check_topic(topic: &str) -> Result<(), String> {
    const ALLOWED: &str =
        "a Kafka topic name: 1 to 249 characters from A-Z a-z 0-9 . _ -, not \".\" or \"..\"";
    let len = topic.chars().count();
    let problem = if len == 0 || len > 249 {
        Some(format!("{len} characters"))
    } else if topic == "." || topic == ".." {
        Some(format!("{topic:?}"))
    } else {
        topic
            .chars()
            .find(|&ch| !is_name_char(ch))
            .map(|bad| format!("{topic:?}, which contains {bad:?}"))
    };
    match problem {
        Some(problem) => Err(format!("must be {ALLOWED} (got {problem})")),
        None => Ok(()),
    }
}

checked_str!(
    /// A Kafka topic name: 1–249 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..`.
    TopicName,
    check_topic,
    "a string: a Kafka topic name"
);

/// `true` for ids edgecam accepts as device ids (and Kafka keys); see [`DeviceId`].
pub fn valid_device_id(id: &str) -> bool {
    check_device_id(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_new_checks_the_range() {
        assert_eq!(Quality::new(0), None);
        assert_eq!(Quality::new(1).map(Quality::get), Some(1));
        assert_eq!(Quality::new(101), None);
        assert_eq!(Port::new(0), None);
        assert_eq!(Qos::new(2), None);
    }

    #[test]
    fn names() {
        assert!(DeviceId::new("cam-01").is_ok());
        assert!(DeviceId::new("..").is_err());
        assert!(DeviceId::new("a/b").unwrap_err().contains("'/'"));
        assert!(TopicName::new("edgecam.frames").is_ok());
        assert!(TopicName::new("").is_err());
        assert!(TopicName::new("x".repeat(250)).is_err());
        assert!(valid_device_id("ok_1"));
        assert!(!valid_device_id(""));
    }
}
bounded!(
    /// Bytes the spool may hold on disk, 1 MiB–1 TiB (`spool.max_bytes`).
    SpoolBytes(u64), 1u64 << 20, 1u64 << 40, "bytes"
);
bounded!(
    /// Age after which a spooled frame is dropped, seconds, 1–31,536,000 (a year;
    /// `spool.max_age_secs`).
    AgeSecs(u64), 1, 31_536_000, "seconds"
);
bounded!(
    /// Milliseconds, 1–60,000 (`spool.commit_interval_ms`, `spool.spill_after_ms`).
    SpoolMs(u64), 1, 60_000, "milliseconds"
);
bounded!(
    /// A share, percent, 1–100 (`spool.replay_share_percent`).
    Percent(u8), 1, 100, "percent"
);
