//! `[gate]`: publish only when the scene changes (see [`crate::gate`]).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[gate]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Publish only frames that show motion (plus rolls and heartbeats). Default `false`:
    /// every frame is published.
    #[serde(default)]
    pub enabled: bool,
    /// A thumbnail pixel counts as changed when its luma differs from the background by
    /// more than this, 1–255. Default 25.
    #[serde(default = "default_pixel_threshold")]
    pub pixel_threshold: u8,
    /// A frame shows motion when more than this share of its thumbnail changed, percent,
    /// more than 0 and at most 100. Default 0.5.
    #[serde(default = "default_changed_area_percent")]
    pub changed_area_percent: f64,
    /// How much of each new thumbnail goes into the background, percent, 1–100. Default 10:
    /// slow lighting changes fade in over about 10 frames.
    #[serde(default = "default_background_weight_percent")]
    pub background_weight_percent: u8,
    /// With no motion, one frame every this many seconds still goes out, 0–86,400 (0:
    /// none). Default 60.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u32,
    /// Frames before a motion frame that go out with it, 0–30. Default 2.
    #[serde(default = "default_pre_roll_frames")]
    pub pre_roll_frames: u32,
    /// Frames after the last motion frame that go out too, 0–1,000. Default 5.
    #[serde(default = "default_post_roll_frames")]
    pub post_roll_frames: u32,
}

fn default_pixel_threshold() -> u8 {
    25
}
fn default_changed_area_percent() -> f64 {
    0.5
}
fn default_background_weight_percent() -> u8 {
    10
}
fn default_heartbeat_secs() -> u32 {
    60
}
fn default_pre_roll_frames() -> u32 {
    2
}
fn default_post_roll_frames() -> u32 {
    5
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            enabled: false,
            pixel_threshold: default_pixel_threshold(),
            changed_area_percent: default_changed_area_percent(),
            background_weight_percent: default_background_weight_percent(),
            heartbeat_secs: default_heartbeat_secs(),
            pre_roll_frames: default_pre_roll_frames(),
            post_roll_frames: default_post_roll_frames(),
        }
    }
}

impl GateConfig {
    /// Checks every range.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            key: format!("gate.{key}"),
            message,
            origin: None,
        };
        if self.pixel_threshold == 0 {
            return Err(bad(
                "pixel_threshold",
                "must be from 1 to 255 (got 0)".into(),
            ));
        }
        let a = self.changed_area_percent;
        if !(a > 0.0 && a <= 100.0) {
            return Err(bad(
                "changed_area_percent",
                format!("must be more than 0 and at most 100 (got {a})"),
            ));
        }
        if !(1..=100).contains(&self.background_weight_percent) {
            return Err(bad(
                "background_weight_percent",
                format!(
                    "must be from 1 to 100 (got {})",
                    self.background_weight_percent
                ),
            ));
        }
        if self.heartbeat_secs > 86_400 {
            return Err(bad(
                "heartbeat_secs",
                format!("must be at most 86400 (got {})", self.heartbeat_secs),
            ));
        }
        if self.pre_roll_frames > 30 {
            return Err(bad(
                "pre_roll_frames",
                format!("must be at most 30 (got {})", self.pre_roll_frames),
            ));
        }
        if self.post_roll_frames > 1_000 {
            return Err(bad(
                "post_roll_frames",
                format!("must be at most 1000 (got {})", self.post_roll_frames),
            ));
        }
        Ok(())
    }
}
