//! How large one incoming image may be, checked from its header before anything is
//! allocated for its pixels.
//!
//! Every place where image bytes enter edgecam (the agent's sources, the encoder's
//! decoders, the bridge's MQTT input, `edgecam consume`) checks the same three limits: the
//! bytes of the file or payload, the pixels the header declares, and the longest side. A
//! header is a promise the decoder would keep by allocating `width * height * channels`
//! bytes, so a 74-byte PNG that claims 2³¹−1 × 2³¹−1 pixels is refused here, not by the
//! allocator aborting the process. The limits come from `[limits]` in the configuration
//! ([`crate::config::LimitsConfig`]).

use std::fmt;

/// The bounds on one image. Leaf type: no I/O, no configuration parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width * height` a header may declare, pixels.
    pub max_pixels: u64,
    /// Largest width or height a header may declare, pixels.
    pub max_side_px: u32,
    /// Largest encoded image (a file, an MJPEG frame, an MQTT payload), bytes.
    pub max_frame_bytes: usize,
}

/// Default `max_pixels`: 50 MP, above the largest sensors on a Pi or a USB camera (the Pi HQ
/// camera has 12.3 MP, 64 MP modules bin to 16 MP for video) and above the 17.9 MP
/// photograph in the test data. An RGB8 decode of 50 MP needs 150 MB, which fits the
/// service's `MemoryMax=384M`.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;
/// Default `max_side_px`: 16,384 pixels, libjpeg-turbo's and browsers' comfortable maximum;
/// anything longer is a panorama edgecam does not serve, or a forged header.
pub const DEFAULT_MAX_SIDE_PX: u32 = 16_384;
/// Default `max_frame_bytes`: 64 MiB. The largest real JPEG in the test data is 16.4 MB
/// (17.9 MP, quality 98); a 50 MP JPEG at high quality stays under 40 MB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_side_px: DEFAULT_MAX_SIDE_PX,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Which limit an image broke; the frame is refused and counted as `frame_too_large`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The encoded image has more bytes than `max_frame_bytes`.
    #[error("{bytes} bytes, over limits.max_frame_bytes ({max})")]
    Bytes {
        /// Bytes of the file or payload (at least; a reader may stop at `max + 1`).
        bytes: u64,
        /// `max_frame_bytes`.
        max: usize,
    },
    /// The header declares more pixels than `max_pixels`.
    #[error("{width}x{height} is {} pixels, over limits.max_pixels ({max})", *width as u64 * *height as u64)]
    Pixels {
        /// Declared width, pixels.
        width: u32,
        /// Declared height, pixels.
        height: u32,
        /// `max_pixels`.
        max: u64,
    },
    /// The header declares a side longer than `max_side_px`.
    #[error("{width}x{height} has a side over limits.max_side_px ({max})")]
    Side {
        /// Declared width, pixels.
        width: u32,
        /// Declared height, pixels.
        height: u32,
        /// `max_side_px`.
        max: u32,
    },
}

impl Limits {
    /// Checks the encoded size, bytes.
    ///
    /// Errors: [`LimitError::Bytes`] when `bytes > max_frame_bytes`.
    pub fn check_bytes(&self, bytes: u64) -> Result<(), LimitError> {
        if bytes > self.max_frame_bytes as u64 {
            return Err(LimitError::Bytes {
                bytes,
                max: self.max_frame_bytes,
            });
        }
        Ok(())
    }

    /// Checks declared dimensions, pixels. The product is computed in `u64`, so no header
    /// can overflow it.
    ///
    /// Errors: [`LimitError::Side`] first (a side over `max_side_px`), then
    /// [`LimitError::Pixels`] (`width * height > max_pixels`).
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), LimitError> {
        if width > self.max_side_px || height > self.max_side_px {
            return Err(LimitError::Side {
                width,
                height,
                max: self.max_side_px,
            });
        }
        if width as u64 * height as u64 > self.max_pixels {
            return Err(LimitError::Pixels {
                width,
                height,
                max: self.max_pixels,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} pixels, {} px per side, {} bytes",
            self.max_pixels, self.max_side_px, self.max_frame_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_checked_without_overflow() {
        let l = Limits::default();
        assert_eq!(l.check_dimensions(8000, 6000), Ok(()));
        assert!(matches!(
            l.check_dimensions(65_000, 65_000),
            Err(LimitError::Side { max: 16_384, .. })
        ));
        assert!(matches!(
            l.check_dimensions(u32::MAX, u32::MAX),
            Err(LimitError::Side { .. })
        ));
        // Both sides allowed, the product is not: 16384 x 16384 = 268 MP.
        assert!(matches!(
            l.check_dimensions(16_384, 16_384),
            Err(LimitError::Pixels { .. })
        ));
        let wide = Limits {
            max_side_px: u32::MAX,
            max_pixels: u64::MAX - 1,
            ..l
        };
        assert!(wide.check_dimensions(u32::MAX, u32::MAX).is_ok());
    }

    #[test]
    fn bytes_are_checked_inclusively() {
        let l = Limits {
            max_frame_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(l.check_bytes(100), Ok(()));
        assert_eq!(
            l.check_bytes(101),
            Err(LimitError::Bytes {
                bytes: 101,
                max: 100
            })
        );
        assert!(l
            .check_bytes(101)
            .unwrap_err()
            .to_string()
            .contains("max_frame_bytes"));
    }
}
