//! `[limits]`: how large one incoming image may be. Read by the agent (sources, encoder)
//! and the bridge (MQTT input); `edgecam consume` takes the same bounds as options.

use serde::{Deserialize, Serialize};

use super::types::{FrameBytes, MaxPixels, MaxSide};
use crate::limits::{Limits, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE_PX};

/// `[limits]`: checked from each image's header before its pixels are allocated. An image
/// over a limit is refused and counted as `frame_too_large` (in the bridge: dead-lettered
/// with that reason); the agent or bridge goes on with the next one.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest `width * height` an image may declare, pixels, 1–4,000,000,000. Default
    /// 50,000,000 (50 MP, above any Pi or USB camera sensor); an RGB8 decode needs 3 bytes
    /// per pixel, so the default keeps one frame's decode at 150 MB.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: MaxPixels,
    /// Longest width or height an image may declare, pixels, 1–65,535. Default 16,384.
    #[serde(default = "default_max_side_px")]
    pub max_side_px: MaxSide,
    /// Largest encoded image (an image file, one MJPEG frame, one MQTT payload), bytes,
    /// 1,024–1,073,741,824. Default 67,108,864 (64 MiB). A larger file is not read; an MJPEG
    /// frame that grows past it is dropped and the stream resynchronised.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: FrameBytes,
}

fn default_max_pixels() -> MaxPixels {
    MaxPixels::new(DEFAULT_MAX_PIXELS).expect("in range")
}
fn default_max_side_px() -> MaxSide {
    MaxSide::new(DEFAULT_MAX_SIDE_PX).expect("in range")
}
fn default_max_frame_bytes() -> FrameBytes {
    FrameBytes::new(DEFAULT_MAX_FRAME_BYTES).expect("in range")
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_pixels: default_max_pixels(),
            max_side_px: default_max_side_px(),
            max_frame_bytes: default_max_frame_bytes(),
        }
    }
}

impl LimitsConfig {
    /// The bounds as the runtime checks them.
    pub fn limits(&self) -> Limits {
        Limits {
            max_pixels: self.max_pixels.get(),
            max_side_px: self.max_side_px.get(),
            max_frame_bytes: self.max_frame_bytes.get(),
        }
    }
}
