//! The device control plane over MQTT: commands on `<prefix>/<device>/set/<name>` and the
//! retained state document on `<prefix>/<device>/state`.
//!
//! Commands (payload is UTF-8 text):
//!
//! | name | payload | effect |
//! | --- | --- | --- |
//! | `fps` | number, 0–1000 (0 = as fast as the source gives) | `source.fps`, live |
//! | `quality_max` | integer, `encode.quality_min`–100 | `encode.quality_max`, live |
//! | `paused` | `true` / `false` | stop / resume publishing (capture continues) |
//! | `snapshot` | anything | publish the next frame even while paused |
//!
//! A command is validated first; a bad one changes nothing and the state document says why.
//! The transport (subscribing, publishing the state) lives in the MQTT sink; this module is
//! pure logic over [`Live`] and [`Metrics`], so it is unit-tested without a broker.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::metrics::Metrics;

/// The outcome of the last command, as shown in the state document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutcome {
    /// Command name, e.g. `fps`.
    pub name: String,
    /// The payload as received (lossy UTF-8).
    pub value: String,
    /// `true` when applied.
    pub ok: bool,
    /// Why it was rejected (`None` when applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Validates and applies one command. Returns `Err(reason)` (nothing changed) for an unknown
/// name or a bad value.
pub fn apply(name: &str, payload: &[u8], live: &Live) -> Result<(), String> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| "payload is not UTF-8".to_string())?
        .trim();
    match name {
        "fps" => {
            let fps: f64 = text
                .parse()
                .map_err(|_| format!("fps must be a number, got {text:?}"))?;
            crate::config::source::check_fps(fps).map_err(|m| format!("fps {m}"))?;
            live.config.send_modify(|c| c.source.fps = fps);
        }
        "quality_max" => {
            let q: u8 = text
                .parse()
                .map_err(|_| format!("quality_max must be an integer 1-100, got {text:?}"))?;
            let min = live.config.borrow().encode.quality_min;
            let q = match crate::config::Quality::new(q) {
                Some(q) if q >= min => q,
                _ => {
                    return Err(format!(
                        "quality_max must be {min}-100 (quality_min-100), got {q}"
                    ))
                }
            };
            live.config.send_modify(|c| c.encode.quality_max = q);
        }
        "paused" => {
            let p = match text {
                "true" | "1" | "on" => true,
                "false" | "0" | "off" => false,
                _ => return Err(format!("paused must be true or false, got {text:?}")),
            };
            live.paused.store(p, Relaxed);
        }
        "snapshot" => live.snapshot.store(true, Relaxed),
        _ => {
            return Err(format!(
                "unknown command {name:?} (fps, quality_max, paused, snapshot)"
            ))
        }
    }
    Ok(())
}

/// Handles a command and records the outcome for the state document.
pub fn handle(name: &str, payload: &[u8], live: &Live) -> CommandOutcome {
    let result = apply(name, payload, live);
    if let Err(e) = &result {
        tracing::warn!(command = name, error = %e, "command rejected");
    } else {
        tracing::info!(command = name, value = %String::from_utf8_lossy(payload), "command applied");
    }
    CommandOutcome {
        name: name.to_string(),
        value: String::from_utf8_lossy(payload).into_owned(),
        ok: result.is_ok(),
        error: result.err(),
    }
}

/// A capture older than this makes the source `stalled` in the state document.
const STALLED_AFTER_MS: u64 = 5_000;

/// The retained state document (JSON): settings in force, what the last frame looked like,
/// source health, counters, last error and last command.
pub fn state_json(live: &Live, metrics: &Metrics, last_command: Option<&CommandOutcome>) -> String {
    let cfg = live.config.borrow().clone();
    let last = metrics.last_frame();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let captured_ms = metrics.last_capture_unix_ms.load(Relaxed);
    let source = if captured_ms == 0 {
        "starting"
    } else if now_ms.saturating_sub(captured_ms) > STALLED_AFTER_MS {
        "stalled"
    } else {
        "ok"
    };
    serde_json::json!({
        "device": cfg.device.id,
        "fps": cfg.source.fps,
        "paused": live.paused.load(Relaxed),
        "codec": cfg.encode.codec.as_str(),
        "quality_max": cfg.encode.quality_max,
        "quality_min": cfg.encode.quality_min,
        "max_message_bytes": cfg.encode.max_message_bytes.get(),
        "width": last.as_ref().map(|f| f.width),
        "height": last.as_ref().map(|f| f.height),
        "quality": last.as_ref().map(|f| f.quality.clone()),
        "source": source,
        "frames_captured": metrics.captured.load(Relaxed),
        "frames_published": metrics.delivered.load(Relaxed),
        "frames_dropped": metrics.dropped_total(),
        "last_error": metrics.last_error(),
        "last_command": last_command,
    })
    .to_string()
}

/// What can change while an agent runs, shared by the pipeline, SIGHUP and the MQTT control
/// plane.
#[derive(Debug)]
pub struct Live {
    /// The live settings: the source picks up `source.fps`, the encoder `[encode]` and
    /// `[transform]`, from the next frame on (see [`crate::reload`] for what may change).
    pub config: tokio::sync::watch::Sender<crate::config::Config>,
    /// While `true`, frames are captured but not published (MQTT `set/paused`).
    pub paused: std::sync::atomic::AtomicBool,
    /// When set, the next captured frame is published even while paused; then it clears
    /// (MQTT `set/snapshot`).
    pub snapshot: std::sync::atomic::AtomicBool,
}

impl Live {
    /// Live controls starting from `cfg`, not paused.
    pub fn new(cfg: crate::config::Config) -> Self {
        Live {
            config: tokio::sync::watch::Sender::new(cfg),
            paused: Default::default(),
            snapshot: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Live {
        Live::new(
            crate::config::load_str(
                "[device]\nid = \"cam\"\n[source]\nkind = \"synthetic\"\n[kafka]\nbootstrap_servers = \"h:1\"\n",
                std::iter::empty(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn good_commands_apply_live() {
        let l = live();
        let mut rx = l.config.subscribe();
        assert!(handle("fps", b"2.5", &l).ok);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().source.fps, 2.5);
        assert!(handle("quality_max", b" 55 ", &l).ok);
        assert_eq!(l.config.borrow().encode.quality_max, 55);
        assert!(handle("paused", b"true", &l).ok);
        assert!(l.paused.load(Relaxed));
        assert!(handle("snapshot", b"", &l).ok);
        assert!(l.snapshot.load(Relaxed));
    }

    #[test]
    fn bad_commands_change_nothing_and_say_why() {
        let l = live();
        let before = l.config.borrow().clone();
        for (name, value, needle) in [
            ("fps", &b"fast"[..], "number"),
            ("fps", b"-1", "0 to 1000"),
            ("fps", b"NaN", "0 to 1000"),
            ("quality_max", b"500", "integer"),
            ("quality_max", b"10", "quality_min"),
            ("paused", b"maybe", "true or false"),
            ("reboot", b"now", "unknown command"),
            ("fps", b"\xff", "UTF-8"),
        ] {
            let o = handle(name, value, &l);
            assert!(!o.ok);
            assert!(o.error.as_deref().unwrap().contains(needle), "{o:?}");
        }
        assert_eq!(*l.config.borrow(), before);
        assert!(!l.paused.load(Relaxed));
    }

    #[test]
    fn state_document_reports_settings_health_and_last_command() {
        let l = live();
        let m = Metrics::default();
        let o = handle("fps", b"abc", &l);
        let v: serde_json::Value = serde_json::from_str(&state_json(&l, &m, Some(&o))).unwrap();
        assert_eq!(v["device"], "cam");
        assert_eq!(v["fps"], 10.0);
        assert_eq!(v["source"], "starting");
        assert_eq!(v["paused"], false);
        assert_eq!(v["last_command"]["ok"], false);
        assert!(v["last_command"]["error"]
            .as_str()
            .unwrap()
            .contains("number"));
    }
}
