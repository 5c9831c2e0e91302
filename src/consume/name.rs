//! Where one record is written, as a pure function of its headers (see the rule in
//! [`super`]): `<device>/<YYYYMMDD>/<captured>-<seq>-<id>.<ext>`.
//!
//! Deterministic on purpose: the same record (a resend after an outage, a replay from the
//! spool, a re-delivery after a crash of the consumer) always maps to the same path, so an
//! existing file *is* the duplicate check.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest device folder name, bytes (the agent's device ids are at most 128; a foreign
/// producer's are cut to this so the whole name stays under `NAME_MAX`).
pub const MAX_DEVICE_LEN: usize = 128;

/// Last millisecond humantime can print (9999-12-31T23:59:59.999Z).
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// What a record says about itself, as read from its headers and Kafka metadata; every
/// header is optional (a foreign producer may set none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// `edgecam.device`.
    pub device: Option<String>,
    /// The record key (the device id for edgecam's records).
    pub key: Option<Vec<u8>>,
    /// `edgecam.captured_at`, RFC 3339 UTC.
    pub captured_at: Option<String>,
    /// The Kafka record timestamp, milliseconds since the Unix epoch (create or log-append
    /// time), when the record has one.
    pub timestamp_ms: Option<i64>,
    /// `edgecam.seq`, decimal.
    pub seq: Option<String>,
    /// `edgecam.frame_id`, a UUID.
    pub frame_id: Option<String>,
    /// Partition the record was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// The path of the file for a record, relative to the output folder, with extension `ext`
/// (`jpg` or `png`): `<device>/<YYYYMMDD>/<YYYYMMDDTHHMMSS.ffffffZ>-<seq 20 digits>-<id>.<ext>`.
/// Every component is made here from digits, hex and [`safe_component`]; none can be `..`
/// or hold a `/`.
pub fn relative_path(meta: &RecordMeta, ext: &str) -> PathBuf {
    let captured = compact_utc(capture_time(meta));
    let date = &captured[..8];
    let seq = meta
        .seq
        .as_deref()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(meta.offset.max(0) as u64);
    let name = format!("{captured}-{seq:020}-{}.{ext}", short_id(meta));
    PathBuf::from(device_folder(meta)).join(date).join(name)
}

/// The device folder: a non-empty `edgecam.device`, else a non-empty key, else `unknown`, through
/// [`safe_component`] and cut to [`MAX_DEVICE_LEN`] bytes.
pub fn device_folder(meta: &RecordMeta) -> String {
    let raw = meta
        .device
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            meta.key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
        })
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let mut s = safe_component(&raw);
    // ASCII only after safe_component, so any byte index is a char boundary.
    s.truncate(MAX_DEVICE_LEN);
    s
}

/// The capture time: `edgecam.captured_at` when it is RFC 3339 UTC, else the Kafka record
/// timestamp, else the Unix epoch (sorts first, and is still the same for a re-delivery).
pub fn capture_time(meta: &RecordMeta) -> SystemTime {
    meta.captured_at
        .as_deref()
        .and_then(|s| humantime::parse_rfc3339(s.trim()).ok())
        .or_else(|| {
            meta.timestamp_ms
                .filter(|ms| (0..=MAX_MILLIS).contains(ms))
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64))
        })
        .unwrap_or(UNIX_EPOCH)
}

/// `t` as `YYYYMMDDTHHMMSS.ffffffZ` (UTC, microseconds; RFC 3339 without `-` and `:`, so
/// it sorts as text in time order and is a valid file name everywhere).
pub fn compact_utc(t: SystemTime) -> String {
    let mut s = String::new();
    if write!(s, "{}", humantime::format_rfc3339_micros(t)).is_err() {
        // Only after year 9999, which capture_time never returns.
        s = "99991231T235959.999999Z".into();
        return s;
    }
    s.retain(|c| c != '-' && c != ':');
    s
}

/// The `<id>` part: for a UUID `frame_id`, its last 12 hex digits (a UUIDv7's random
/// tail; its first digits are the millisecond timestamp the name already has); for any
/// other non-empty `frame_id`, 12 hex digits of its FNV-1a hash; without one,
/// `p<partition>o<offset>` (the same for a re-delivery of the same record).
pub fn short_id(meta: &RecordMeta) -> String {
    match meta.frame_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => match uuid::Uuid::parse_str(id) {
            Ok(u) => {
                let hex = u.simple().to_string();
                hex[hex.len() - 12..].to_string()
            }
            Err(_) => format!("{:012x}", fnv1a(id.as_bytes()) & 0xffff_ffff_ffff),
        },
        _ => format!("p{}o{}", meta.partition, meta.offset),
    }
}

/// 64-bit FNV-1a: stable across builds and platforms (std's hashers are not promised to be).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// File name part safe for any device id (`device.id` is validated, but foreign producers
/// may write anything): keeps `[A-Za-z0-9._-]`, replaces the rest with `_`; `""`, `.` and
/// `..` become `_`.
pub fn safe_component(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RecordMeta {
        RecordMeta {
            device: Some("front-door".into()),
            key: Some(b"front-door".to_vec()),
            captured_at: Some("2026-12-03T06:15:02.123456Z".into()),
            timestamp_ms: Some(1_796_278_502_200),
            seq: Some("42".into()),
            frame_id: Some("019ae2f1-7c3a-7d12-9abc-0123456789ab".into()),
            partition: 2,
            offset: 7,
        }
    }

    #[test]
    fn full_headers_give_the_documented_name() {
        assert_eq!(
            relative_path(&meta(), "jpg"),
            PathBuf::from(
                "front-door/20261203/20261203T061502.123456Z-00000000000000000042-0123456789ab.jpg"
            )
        );
    }

    #[test]
    fn missing_headers_fall_back_to_kafka_metadata() {
        let m = RecordMeta {
            device: None,
            key: None,
            captured_at: None,
            seq: None,
            frame_id: None,
            ..meta()
        };
        // 1_796_278_502_200 ms = 2026-12-03T06:15:02.200Z
        assert_eq!(
            relative_path(&m, "png"),
            PathBuf::from("unknown/20261203/20261203T061502.200000Z-00000000000000000007-p2o7.png")
        );
        let m = RecordMeta {
            timestamp_ms: None,
            captured_at: Some("yesterday".into()),
            seq: Some("-3".into()),
            frame_id: Some("not-a-uuid".into()),
            device: None,
            ..meta()
        };
        let p = relative_path(&m, "jpg");
        let name = p.to_str().unwrap();
        assert!(
            name.starts_with("front-door/19700101/19700101T000000.000000Z-00000000000000000007-"),
            "{name}"
        );
        // The hash of the id: the same for the same id, different for another.
        let other = RecordMeta {
            frame_id: Some("not-a-uuie".into()),
            ..m.clone()
        };
        assert_eq!(relative_path(&m, "jpg"), p);
        assert_ne!(relative_path(&other, "jpg"), p);
        // A timestamp humantime cannot print falls back to the epoch, without a panic.
        let far = RecordMeta {
            captured_at: None,
            timestamp_ms: Some(i64::MAX),
            ..meta()
        };
        assert!(relative_path(&far, "jpg").starts_with("front-door/19700101"));
    }

    #[test]
    fn device_ids_never_leave_the_output_folder() {
        for (device, folder) in [
            ("../../etc", ".._.._etc"),
            ("..", "_"),
            (".", "_"),
            ("", "front-door"), // empty header: the key
            ("a/b\\c d", "a_b_c_d"),
            ("kamera-ü", "kamera-_"),
        ] {
            let m = RecordMeta {
                device: Some(device.into()),
                ..meta()
            };
            let p = relative_path(&m, "jpg");
            assert_eq!(p.components().count(), 3, "{p:?}");
            assert_eq!(p.iter().next().unwrap().to_str().unwrap(), folder);
        }
        let long = RecordMeta {
            device: Some("x".repeat(1000)),
            ..meta()
        };
        assert_eq!(device_folder(&long).len(), MAX_DEVICE_LEN);
    }

    #[test]
    fn names_sort_in_capture_order_across_seq_restarts() {
        // An agent restart: seq starts again at 0, capture time goes on.
        let frames = [
            ("2026-12-03T23:59:59.999998Z", "8"),
            ("2026-12-03T23:59:59.999999Z", "9"),
            ("2026-12-04T00:00:00.000001Z", "0"),
            ("2026-12-04T00:00:00.000001Z", "1"), // same microsecond: seq decides
            ("2026-12-04T00:00:01Z", "2"),
        ];
        let paths: Vec<PathBuf> = frames
            .iter()
            .enumerate()
            .map(|(i, (t, seq))| {
                relative_path(
                    &RecordMeta {
                        captured_at: Some(t.to_string()),
                        seq: Some(seq.to_string()),
                        frame_id: Some(uuid::Uuid::now_v7().to_string()),
                        offset: i as i64,
                        ..meta()
                    },
                    "jpg",
                )
            })
            .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(sorted, paths);
        let unique: std::collections::HashSet<_> = paths.iter().collect();
        assert_eq!(unique.len(), paths.len());
    }
}
