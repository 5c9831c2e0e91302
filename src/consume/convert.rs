//! `--grayscale` and `--max-width`: decode, convert with the encoder's transforms
//! ([`crate::encode::transform`]), encode again. JPEG stays JPEG (quality
//! [`JPEG_QUALITY`]); lossless input (PNG, zstd raw pixels) stays lossless as PNG.

use std::num::NonZeroU32;

use crate::encode::codec::{self, CodecError, Jpeg};
use crate::encode::transform;
use crate::frame::{PixelFormat, RawImage};
use crate::limits::Limits;

/// JPEG quality of a converted JPEG (libjpeg-turbo's scale, 1–100): high enough that a
/// converted archive copy shows no new artefacts worth the name, at about a third of the
/// bytes of quality 100.
pub const JPEG_QUALITY: u8 = 90;

/// Conversions on the way out. The default converts nothing: bytes are written as
/// received (a lossless zstd frame is still written as PNG).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conversion {
    /// Write one channel (ITU-R BT.601 luma, as the agent's `transform.grayscale`).
    pub grayscale: bool,
    /// Scale down, keeping the aspect ratio, to at most this many pixels wide; narrower
    /// images are not scaled up.
    pub max_width: Option<NonZeroU32>,
}

impl Conversion {
    /// `true` when nothing is converted.
    pub fn is_none(&self) -> bool {
        !self.grayscale && self.max_width.is_none()
    }

    /// `true` when an image of `width` pixels with `channels` colour channels would come
    /// out exactly as it went in (so its bytes can be written as they are).
    pub fn leaves_alone(&self, width: u32, channels: u8) -> bool {
        let narrow = self.max_width.is_none_or(|m| width <= m.get());
        let gray = !self.grayscale || channels == 1;
        narrow && gray
    }

    /// The size an image of `width`×`height` is converted to.
    pub fn target_size(&self, width: u32, height: u32) -> (u32, u32) {
        transform::fit_within(width, height, self.max_width.map(NonZeroU32::get), None)
    }

    fn apply(&self, img: RawImage) -> RawImage {
        let (w, h) = self.target_size(img.width, img.height);
        let img = transform::resize(img, w, h);
        if self.grayscale {
            transform::grayscale(img)
        } else {
            img
        }
    }
}

/// Decoders and encoders kept between records.
pub struct Converter {
    jpeg: Option<Jpeg>,
    limits: Limits,
}

impl Converter {
    /// A converter that decodes within `limits` (the caller has checked the header
    /// against them already; this is the decoder's own guard).
    pub fn new(limits: Limits) -> Self {
        Converter { jpeg: None, limits }
    }

    fn jpeg(&mut self) -> Result<&mut Jpeg, CodecError> {
        if self.jpeg.is_none() {
            self.jpeg = Some(Jpeg::with_limits(self.limits)?);
        }
        Ok(self.jpeg.as_mut().expect("just set"))
    }

    /// A JPEG converted by `c`: decoded straight to gray when asked, with libjpeg-turbo's
    /// DCT scaling to the smallest size still at least the target, resized to the target,
    /// and encoded at [`JPEG_QUALITY`].
    ///
    /// Errors: [`CodecError`] for a JPEG libjpeg-turbo cannot decode.
    pub fn jpeg_to_jpeg(&mut self, data: &[u8], c: &Conversion) -> Result<Vec<u8>, CodecError> {
        let format = if c.grayscale {
            PixelFormat::Gray8
        } else {
            PixelFormat::Rgb8
        };
        let header = crate::jpeg::header(data).map_err(|e| CodecError::Decode(e.to_string()))?;
        let (w, h) = c.target_size(header.width, header.height);
        let jpeg = self.jpeg()?;
        let img = jpeg.decode(data, format, w, h)?;
        let img = c.apply(img);
        jpeg.encode(&img, JPEG_QUALITY)
    }

    /// A PNG converted by `c`, as PNG.
    ///
    /// Errors: [`CodecError`] for a PNG that does not decode.
    pub fn png_to_png(&mut self, data: &[u8], c: &Conversion) -> Result<Vec<u8>, CodecError> {
        let img = codec::decode_png(data, &self.limits)?;
        codec::encode_png(&c.apply(img))
    }

    /// Raw pixels (a decoded zstd frame) converted by `c`, as PNG.
    ///
    /// Errors: [`CodecError::Encode`].
    pub fn raw_to_png(&mut self, img: RawImage, c: &Conversion) -> Result<Vec<u8>, CodecError> {
        codec::encode_png(&c.apply(img))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RawImage {
        let data = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 255 / w) as u8, (y * 255 / h) as u8, 128]
            })
            .collect();
        RawImage::new(w, h, PixelFormat::Rgb8, data).unwrap()
    }

    #[test]
    fn jpeg_is_scaled_and_grayed() {
        let mut enc = Jpeg::new().unwrap();
        let src = enc.encode(&gradient(768, 576), 85).unwrap();
        let mut conv = Converter::new(Limits::default());
        let c = Conversion {
            grayscale: true,
            max_width: NonZeroU32::new(320),
        };
        let out = conv.jpeg_to_jpeg(&src, &c).unwrap();
        let img = image::load_from_memory(&out).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
        assert_eq!(img.color().channel_count(), 1);
    }

    #[test]
    fn lossless_stays_lossless() {
        let mut conv = Converter::new(Limits::default());
        let c = Conversion {
            grayscale: false,
            max_width: NonZeroU32::new(100),
        };
        let out = conv.raw_to_png(gradient(400, 300), &c).unwrap();
        let img = image::load_from_memory_with_format(&out, image::ImageFormat::Png).unwrap();
        assert_eq!((img.width(), img.height()), (100, 75));
        assert_eq!(img.color().channel_count(), 3);
        let again = conv
            .png_to_png(
                &out,
                &Conversion {
                    grayscale: true,
                    max_width: None,
                },
            )
            .unwrap();
        let img = image::load_from_memory(&again).unwrap();
        assert_eq!(
            (img.width(), img.height(), img.color().channel_count()),
            (100, 75, 1)
        );
    }

    #[test]
    fn what_needs_no_conversion_is_left_alone() {
        let c = Conversion {
            grayscale: true,
            max_width: NonZeroU32::new(640),
        };
        assert!(c.leaves_alone(640, 1));
        assert!(!c.leaves_alone(641, 1));
        assert!(!c.leaves_alone(640, 3));
        assert!(Conversion::default().is_none());
        assert!(Conversion::default().leaves_alone(10_000, 3));
    }
}
