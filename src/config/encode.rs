//! `[transform]` and `[encode]`: what happens to pixels, and how frames fit the byte budget.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::types::{Budget, Count, DownscalePercent, Pixels, Quality, ZstdLevel};

/// Default `encode.max_message_bytes`: librdkafka's default `message.max.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1_000_000;

/// `[transform]`: applied to every frame before encoding, in this order: rotate, resize,
/// grayscale. A frame that needs any of them is decoded (no passthrough).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Clockwise rotation in degrees: 0, 90, 180 or 270 (cameras are often mounted upside
    /// down: 180).
    #[serde(default)]
    pub rotate_degrees: u16,
    /// Largest width in pixels after rotation; wider frames are scaled down keeping the
    /// aspect ratio. Unset = no limit.
    #[serde(default)]
    pub max_width: Option<Pixels>,
    /// Largest height in pixels after rotation. Unset = no limit.
    #[serde(default)]
    pub max_height: Option<Pixels>,
    /// Convert to 8-bit grayscale.
    #[serde(default)]
    pub grayscale: bool,
}

impl TransformConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if ![0, 90, 180, 270].contains(&self.rotate_degrees) {
            return Err(invalid(
                "transform.rotate_degrees",
                format!(
                    "must be 0, 90, 180 or 270 (clockwise degrees; got {})",
                    self.rotate_degrees
                ),
            ));
        }
        Ok(())
    }
}

/// Output codec.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// JPEG (`image/jpeg`): quality ladder, then downscale.
    #[default]
    Jpeg,
    /// PNG (`image/png`): lossless; downscale when it does not fit.
    Png,
    /// Raw pixels compressed with zstd (`application/vnd.edgecam.raw+zstd`): lossless,
    /// cheap to decode; downscale when it does not fit.
    Zstd,
}

impl Codec {
    /// Name used in the `edgecam.codec` header: `jpeg`, `png` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Jpeg => "jpeg",
            Codec::Png => "png",
            Codec::Zstd => "zstd",
        }
    }
}

/// `[encode]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    /// `jpeg | png | zstd`.
    #[serde(default)]
    pub codec: Codec,
    /// Upper bound on the whole Kafka record: value + key + headers + record and batch
    /// framing, bytes, 4,096–1,000,000,000. Default 1,000,000, librdkafka's
    /// `message.max.bytes`. Every published record is at most this large.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: Budget,
    /// Highest JPEG quality (1–100) the ladder starts from.
    #[serde(default = "default_quality_max")]
    pub quality_max: Quality,
    /// Lowest JPEG quality (1–100, at most `quality_max`) before the ladder downscales.
    #[serde(default = "default_quality_min")]
    pub quality_min: Quality,
    /// Quality step between rungs of the JPEG ladder (at least 1).
    #[serde(default = "default_quality_step")]
    pub quality_step: Count,
    /// Each downscale rung multiplies width and height by this percentage (10–95).
    #[serde(default = "default_downscale_percent")]
    pub downscale_percent: DownscalePercent,
    /// Downscaling stops before either side falls under this many pixels; a frame that does
    /// not fit by then is dropped (reason `budget_unreachable`).
    #[serde(default = "default_min_side_px")]
    pub min_side_px: Pixels,
    /// zstd compression level (1–22) for `codec = "zstd"`.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: ZstdLevel,
    /// Publish JPEG frames from the source untouched when they fit and no transform
    /// applies.
    #[serde(default = "default_true")]
    pub passthrough: bool,
}

fn default_max_message_bytes() -> Budget {
    Budget::new(DEFAULT_MAX_MESSAGE_BYTES).expect("in range")
}
fn default_quality_max() -> Quality {
    Quality::new(90).expect("in range")
}
fn default_quality_min() -> Quality {
    Quality::new(40).expect("in range")
}
fn default_quality_step() -> Count {
    Count::new(5).expect("in range")
}
fn default_downscale_percent() -> DownscalePercent {
    DownscalePercent::new(75).expect("in range")
}
fn default_min_side_px() -> Pixels {
    Pixels::new(32).expect("in range")
}
fn default_zstd_level() -> ZstdLevel {
    ZstdLevel::new(3).expect("in range")
}
pub(crate) fn default_true() -> bool {
    true
}

impl Default for EncodeConfig {
    fn default() -> Self {
        EncodeConfig {
            codec: Codec::default(),
            max_message_bytes: default_max_message_bytes(),
            quality_max: default_quality_max(),
            quality_min: default_quality_min(),
            quality_step: default_quality_step(),
            downscale_percent: default_downscale_percent(),
            min_side_px: default_min_side_px(),
            zstd_level: default_zstd_level(),
            passthrough: true,
        }
    }
}

impl EncodeConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.quality_min > self.quality_max {
            return Err(invalid(
                "encode.quality_min",
                format!(
                    "must not be greater than encode.quality_max (got quality_min = {}, \
                     quality_max = {})",
                    self.quality_min, self.quality_max
                ),
            ));
        }
        Ok(())
    }
}
