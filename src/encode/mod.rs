//! Fitting every frame under the byte budget at the best quality that fits.
//!
//! [`Encoder::encode`] takes a captured [`Image`] and returns the bytes to publish:
//!
//! 1. **Passthrough.** A JPEG from the source that needs no transform and whose record fits
//!    is published untouched: no decode, no encode (`edgecam.quality` is then estimated
//!    from its quantisation table).
//! 2. **Ladder.** Otherwise the frame is decoded once (for JPEG, with DCT scaling when a
//!    smaller rung is wanted), transformed, and encoded at the rung the [`RateController`]
//!    picks: the best rung of the ladder (quality steps, then downscales) whose record fits.
//! 3. **Unreachable.** If even the last rung does not fit, [`EncodeError::BudgetUnreachable`]:
//!    the pipeline drops the frame, counts it, and carries on.
//!
//! The budget bounds the whole Kafka record: the value may use
//! `max_message_bytes - record::max_overhead(device)` bytes, which leaves room for the key,
//! every header at its longest, and the record batch framing.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::config::{Codec, EncodeConfig, TransformConfig};
use crate::frame::{Image, JpegImage, PixelFormat, RawImage};
use crate::limits::Limits;
use crate::record;

pub mod codec;
pub mod ladder;
pub mod planar;
pub mod ssim;
pub mod transform;

pub use codec::CodecError;
pub use ladder::{FitError, LadderSpec, RateController, Rung};

/// The quality a frame was published at, as written in the `edgecam.quality` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// JPEG quality 1–100 (encoded by edgecam, or estimated for a passed-through frame).
    Jpeg(u8),
    /// A passed-through JPEG without quantisation tables to estimate from: `unknown`.
    Unknown,
    /// PNG or zstd: `lossless`.
    Lossless,
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Jpeg(q) => write!(f, "{q}"),
            Quality::Unknown => f.write_str("unknown"),
            Quality::Lossless => f.write_str("lossless"),
        }
    }
}

/// A frame ready to publish.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The record value: a JPEG or PNG file, or zstd-compressed raw pixels.
    pub payload: Bytes,
    /// Codec of `payload`.
    pub codec: Codec,
    /// Width of the encoded image, pixels.
    pub width: u32,
    /// Height of the encoded image, pixels.
    pub height: u32,
    /// For `zstd`: layout of the raw pixels inside (`width * height * channels` bytes once
    /// decompressed). `None` for JPEG and PNG.
    pub pixel_format: Option<PixelFormat>,
    /// Quality header value.
    pub quality: Quality,
    /// `true` when `payload` is the source's JPEG, untouched.
    pub passthrough: bool,
    /// Encoder calls spent on this frame (0 for passthrough).
    pub encodes: u32,
    /// Index of the chosen rung (0 = best); 0 for passthrough.
    pub rung: usize,
}

impl Encoded {
    /// MIME type for the `content-type` header.
    pub fn content_type(&self) -> &'static str {
        match self.codec {
            Codec::Jpeg => "image/jpeg",
            Codec::Png => "image/png",
            Codec::Zstd => record::CONTENT_TYPE_RAW_ZSTD,
        }
    }
}

/// Why a frame could not be encoded. The frame is dropped and counted with
/// [`EncodeError::reason`]; the agent keeps running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Even the smallest rung of the ladder is larger than the value budget.
    #[error("budget unreachable: smallest rung is {smallest} bytes, value budget {budget} bytes")]
    BudgetUnreachable {
        /// Bytes of the last rung's encoding (0 when the budget leaves no room for a value).
        smallest: usize,
        /// Bytes available for the value.
        budget: usize,
        /// Encoder calls spent.
        attempts: u32,
    },
    /// Decoding or encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The image is over `[limits]`; nothing was decoded.
    #[error("frame too large: {0}")]
    TooLarge(#[from] crate::limits::LimitError),
}

impl EncodeError {
    /// Drop reason for metrics and the error topic: `budget_unreachable`, `decode_error`,
    /// `encode_error` or `frame_too_large`.
    pub fn reason(&self) -> &'static str {
        match self {
            EncodeError::BudgetUnreachable { .. } => "budget_unreachable",
            EncodeError::Codec(CodecError::Decode(_)) => "decode_error",
            EncodeError::Codec(_) => "encode_error",
            EncodeError::TooLarge(_) => "frame_too_large",
        }
    }

    /// Encoder calls spent before failing.
    pub fn attempts(&self) -> u32 {
        match self {
            EncodeError::BudgetUnreachable { attempts, .. } => *attempts,
            EncodeError::Codec(_) | EncodeError::TooLarge(_) => 0,
        }
    }
}

/// Turns images into budget-fitted payloads for one device. Holds the codec handles and the
/// rate controller's memory, so use one `Encoder` per stream, from one thread.
pub struct Encoder {
    encode: EncodeConfig,
    transform: TransformConfig,
    value_budget: usize,
    jpeg: codec::Jpeg,
    controller: RateController,
    /// The ladder last used: built for this target size and spec.
    ladder_cache: Option<((u32, u32), LadderSpec, Vec<Rung>)>,
    limits: Limits,
    /// JPEG to JPEG through YCbCr planes ([`planar`]); `false` only to compare with the
    /// RGB route (`edgecam-bench` rows 2g', 2h').
    pub(crate) planar: bool,
}

impl Encoder {
    /// An encoder for device `device_id` (its length is part of every record's overhead),
    /// with the default [`Limits`].
    ///
    /// Errors: [`CodecError`] if libjpeg-turbo cannot be initialised.
    pub fn new(
        device_id: &str,
        encode: EncodeConfig,
        transform: TransformConfig,
    ) -> Result<Self, CodecError> {
        Self::with_limits(device_id, encode, transform, Limits::default())
    }

    /// [`Encoder::new`] refusing images over `limits` (`[limits]`) before decoding them.
    ///
    /// Errors: [`CodecError`] if libjpeg-turbo cannot be initialised.
    pub fn with_limits(
        device_id: &str,
        encode: EncodeConfig,
        transform: TransformConfig,
        limits: Limits,
    ) -> Result<Self, CodecError> {
        let value_budget = (encode.max_message_bytes.get() as usize)
            .saturating_sub(record::max_overhead(device_id));
        Ok(Encoder {
            encode,
            transform,
            value_budget,
            jpeg: codec::Jpeg::with_limits(limits)?,
            controller: RateController::new(),
            ladder_cache: None,
            limits,
            planar: true,
        })
    }

    /// Bytes available for the record value: `max_message_bytes` minus the worst-case key,
    /// headers and framing.
    pub fn value_budget(&self) -> usize {
        self.value_budget
    }

    /// Replaces the settings (e.g. a config reload or an MQTT command). The controller's
    /// memory is kept: when the settings change the ladder, the next frame starts from the
    /// equivalent rung of the new one (same size, nearest quality not above;
    /// [`ladder::equivalent_rung`]), not from the rung that happens to have the old index.
    pub fn reconfigure(
        &mut self,
        device_id: &str,
        encode: EncodeConfig,
        transform: TransformConfig,
    ) {
        self.value_budget = (encode.max_message_bytes.get() as usize)
            .saturating_sub(record::max_overhead(device_id));
        self.encode = encode;
        self.transform = transform;
    }

    /// Size after rotation and `max_width`/`max_height`, before any ladder downscale.
    fn target_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (w, h) = match self.transform.rotate_degrees {
            90 | 270 => (height, width),
            _ => (width, height),
        };
        transform::fit_within(
            w,
            h,
            self.transform.max_width.map(|v| v.get()),
            self.transform.max_height.map(|v| v.get()),
        )
    }

    fn can_pass_through(&self, jpeg: &JpegImage) -> Option<Quality> {
        if self.encode.codec != Codec::Jpeg
            || !self.encode.passthrough
            || !self.transform.rotate_degrees.is_multiple_of(360)
            || self.target_size(jpeg.width, jpeg.height) != (jpeg.width, jpeg.height)
            || jpeg.data.len() > self.value_budget
        {
            return None;
        }
        let header = crate::jpeg::header(&jpeg.data).ok()?;
        if self.transform.grayscale && header.components != 1 {
            return None;
        }
        Some(header.quality.map_or(Quality::Unknown, Quality::Jpeg))
    }

    /// Fits `image` under the budget. See the module docs for the steps.
    ///
    /// Memory: besides `image`, at most one decode of it (the smallest DCT scale a rung has
    /// needed so far), one transformed copy at the current rung's size, and one encoded
    /// output at a time.
    ///
    /// Errors: [`EncodeError::TooLarge`] when `image` is over the limits (nothing decoded),
    /// [`EncodeError::BudgetUnreachable`] when no rung fits, [`EncodeError::Codec`] when the
    /// source JPEG is corrupt or an encoder fails.
    pub fn encode(&mut self, image: &Image) -> Result<Encoded, EncodeError> {
        self.limits
            .check_dimensions(image.width(), image.height())?;
        if let Image::Jpeg(j) = image {
            if let Some(quality) = self.can_pass_through(j) {
                return Ok(Encoded {
                    payload: j.data.clone(),
                    codec: Codec::Jpeg,
                    width: j.width,
                    height: j.height,
                    pixel_format: None,
                    quality,
                    passthrough: true,
                    encodes: 0,
                    rung: 0,
                });
            }
        }
        let (tw, th) = self.target_size(image.width(), image.height());
        let spec = LadderSpec {
            quality_max: (self.encode.codec == Codec::Jpeg)
                .then_some(self.encode.quality_max.get()),
            quality_min: self.encode.quality_min.get(),
            quality_step: self.encode.quality_step.get().min(100) as u8,
            downscale_percent: self.encode.downscale_percent.get(),
            min_side_px: self.encode.min_side_px.get(),
        };
        let rungs = match &self.ladder_cache {
            Some((dims, s, rungs)) if *dims == (tw, th) && *s == spec => rungs.clone(),
            cached => {
                let rungs = ladder::ladder(&spec, tw, th);
                // A rebuilt ladder (new settings or a new frame size): carry the controller
                // over to the equivalent rung, not the same index.
                if let Some((_, _, old)) = cached {
                    self.controller.remap(old, &rungs);
                }
                self.ladder_cache = Some(((tw, th), spec, rungs.clone()));
                rungs
            }
        };
        let format = if self.transform.grayscale {
            PixelFormat::Gray8
        } else {
            match image {
                Image::Raw(r) => r.format,
                Image::Jpeg(_) => PixelFormat::Rgb8,
                Image::Yuv(p) if p.chroma.is_none() => PixelFormat::Gray8,
                Image::Yuv(_) => PixelFormat::Rgb8,
            }
        };
        let rotate = self.transform.rotate_degrees;
        let codec = self.encode.codec;
        let zstd_level = self.encode.zstd_level;
        let budget = self.value_budget;
        let jpeg = &mut self.jpeg;
        let mut work = Work {
            image,
            format,
            rotate,
            planar: self.planar
                && codec == Codec::Jpeg
                && matches!(image, Image::Jpeg(_) | Image::Yuv(_)),
            decoded: None,
            prepared: None,
        };
        let mut encode_rung = |i: usize| -> Result<(Vec<u8>, usize), CodecError> {
            let rung = rungs[i];
            let quality = rung.quality.unwrap_or(75);
            let out = match (codec, work.pixels(jpeg, rung.width, rung.height)?) {
                (Codec::Jpeg, Pixels::Rgb(img)) => jpeg.encode(img, quality)?,
                (Codec::Jpeg, Pixels::Planes(view)) => jpeg.encode_planes(view, quality)?,
                (Codec::Png, Pixels::Rgb(img)) => codec::encode_png(img)?,
                (Codec::Zstd, Pixels::Rgb(img)) => codec::encode_zstd(img, zstd_level.get())?,
                (Codec::Png | Codec::Zstd, Pixels::Planes(_)) => {
                    return Err(CodecError::Encode {
                        codec: codec.as_str(),
                        message: "planes are for JPEG only (a bug)".into(),
                    })
                }
            };
            let len = out.len();
            Ok((out, len))
        };
        match self.controller.fit(rungs.len(), budget, &mut encode_rung) {
            Ok(f) => {
                let rung = rungs[f.rung];
                Ok(Encoded {
                    payload: Bytes::from(f.output),
                    codec,
                    width: rung.width,
                    height: rung.height,
                    pixel_format: (codec == Codec::Zstd).then_some(format),
                    quality: rung.quality.map_or(Quality::Lossless, Quality::Jpeg),
                    passthrough: false,
                    encodes: f.attempts,
                    rung: f.rung,
                })
            }
            Err(FitError::BudgetUnreachable { smallest, attempts }) => {
                Err(EncodeError::BudgetUnreachable {
                    smallest,
                    budget,
                    attempts,
                })
            }
            Err(FitError::Encoder(e)) => Err(e.into()),
        }
    }
}

/// The pixels one frame needs while the controller tries rungs, kept so that a frame
/// costs at most one decode and memory stays bounded whatever the ladder does.
///
/// `decoded` is the frame before rotation: a JPEG decoded at the smallest DCT scale that
/// was large enough for the rungs tried so far (a larger rung decodes again, larger, and
/// replaces it), to its own YCbCr planes when `planar` (JPEG in, JPEG out: no RGB at all,
/// see [`planar`]) or else to `format` pixels; a camera's planes ([`Image::Yuv`]) borrowed
/// on the planar route; or a raw image borrowed when already in `format`. `prepared` is the one transformed copy (resized and rotated) for the last rung
/// size asked for; quality rungs of the same size share it, and a new size replaces it.
/// That matters for progressive JPEGs, where libjpeg-turbo's DCT scaling saves little and a
/// 17.9 MP decode costs most of a second, and for memory: a 50 MP frame holds one decode
/// and one smaller copy, never a copy per rung.
struct Work<'a> {
    image: &'a Image,
    format: PixelFormat,
    rotate: u16,
    planar: bool,
    decoded: Option<Decoded<'a>>,
    prepared: Option<Prepared>,
}

/// A frame decoded for [`Work`].
enum Decoded<'a> {
    Rgb(Cow<'a, RawImage>),
    Planes(Cow<'a, codec::Planes>),
}

impl Decoded<'_> {
    fn size(&self) -> (u32, u32) {
        match self {
            Decoded::Rgb(r) => (r.width, r.height),
            Decoded::Planes(p) => (p.width, p.height),
        }
    }
}

/// A rung's pixels, made by [`Work`].
enum Prepared {
    Rgb(RawImage),
    Planes(codec::Output),
}

impl Prepared {
    fn size(&self) -> (u32, u32) {
        match self {
            Prepared::Rgb(r) => (r.width, r.height),
            Prepared::Planes(o) => (o.y.width, o.y.height),
        }
    }
}

/// What [`Work::pixels`] hands the encoder.
enum Pixels<'p> {
    Rgb(&'p RawImage),
    Planes(codec::PlanesView<'p>),
}

impl Work<'_> {
    /// `image` rotated by `rotate` degrees and resized to exactly `width`×`height` (the
    /// output orientation): as planes on the planar route, else as `format` pixels.
    fn pixels(
        &mut self,
        jpeg: &mut codec::Jpeg,
        width: u32,
        height: u32,
    ) -> Result<Pixels<'_>, CodecError> {
        // Size needed before rotation.
        let (pw, ph) = match self.rotate {
            90 | 270 => (height, width),
            _ => (width, height),
        };
        let fits = |(w, h): (u32, u32)| w >= pw && h >= ph;
        let keep = match (self.decoded.as_ref().map(Decoded::size), self.image) {
            (Some(d), _) if !fits(d) => false,
            // A large JPEG decoded bigger than this rung needs: decode again, smaller, rather
            // than hold the big decode and a resize of it at once (memory over CPU; see
            // codec::FINE_SCALING_ABOVE_PIXELS).
            (Some(d), Image::Jpeg(j))
                if j.width as u64 * j.height as u64 > codec::FINE_SCALING_ABOVE_PIXELS =>
            {
                codec::scaled_size(j.width, j.height, pw, ph) == d
            }
            (Some(_), _) => true,
            (None, _) => false,
        };
        if !keep {
            // Free the old decode (and what was made from it) before making the new one.
            self.decoded = None;
            self.prepared = None;
            let planes = match (self.planar, self.image) {
                (true, Image::Jpeg(j)) => jpeg.decode_planes(&j.data, pw, ph)?,
                _ => None,
            };
            self.decoded = Some(match (planes, self.image) {
                (Some(p), _) => Decoded::Planes(Cow::Owned(p)),
                (None, Image::Yuv(p)) if self.planar => Decoded::Planes(Cow::Borrowed(p)),
                (None, Image::Yuv(p)) if self.format == PixelFormat::Gray8 => {
                    Decoded::Rgb(Cow::Owned(p.luma()))
                }
                (None, Image::Yuv(p)) => Decoded::Rgb(Cow::Owned(p.to_rgb8())),
                (None, Image::Jpeg(j)) => {
                    // No planar decode for this subsampling: RGB from here on.
                    self.planar = false;
                    Decoded::Rgb(Cow::Owned(jpeg.decode(&j.data, self.format, pw, ph)?))
                }
                (None, Image::Raw(r)) if r.format == self.format => Decoded::Rgb(Cow::Borrowed(r)),
                (None, Image::Raw(r)) => Decoded::Rgb(Cow::Owned(transform::grayscale_from(r))),
            });
        }
        let base = self.decoded.as_ref().expect("set above");
        let as_is = self.rotate.is_multiple_of(360) && base.size() == (pw, ph);
        match base {
            Decoded::Rgb(b) if as_is => return Ok(Pixels::Rgb(b)),
            // A decode at the wanted size: its own planes, padding and all, no copy.
            Decoded::Planes(p) if as_is => {
                if let Some(view) = p.view(self.format == PixelFormat::Gray8) {
                    return Ok(Pixels::Planes(view));
                }
            }
            _ => {}
        }
        if self.prepared.as_ref().map(Prepared::size) != Some((width, height)) {
            self.prepared = None;
            self.prepared = Some(match base {
                // Shrink before rotating: less to move.
                Decoded::Rgb(b) => Prepared::Rgb(transform::rotate(
                    transform::resize_from(b, pw, ph),
                    self.rotate,
                )),
                Decoded::Planes(p) => Prepared::Planes(planar::prepare(
                    p,
                    pw,
                    ph,
                    self.rotate,
                    self.format == PixelFormat::Gray8,
                )),
            });
        }
        Ok(match self.prepared.as_ref().expect("set above") {
            Prepared::Rgb(r) => Pixels::Rgb(r),
            Prepared::Planes(o) => Pixels::Planes(o.view()),
        })
    }
}

/// The Kafka record of an encoded frame. Written here, beside [`Encoded`], so that
/// [`record`] (the wire format) does not depend on the encoder.
impl record::FrameRecord {
    /// Builds the record for `frame` of device `device`, encoded as `encoded`: key = the
    /// device id, the headers of [`record`]'s table, value = the encoded image.
    pub fn new(device: &str, frame: &crate::frame::Frame, encoded: &Encoded) -> Self {
        use record::header;
        let e = encoded;
        let mut headers = vec![
            (header::DEVICE.into(), device.to_string()),
            (header::SEQ.into(), frame.seq.to_string()),
            (header::FRAME_ID.into(), frame.frame_id.clone()),
            (
                header::CAPTURED_AT.into(),
                humantime::format_rfc3339_micros(frame.captured_at).to_string(),
            ),
            (header::CONTENT_TYPE.into(), e.content_type().to_string()),
            (header::WIDTH.into(), e.width.to_string()),
            (header::HEIGHT.into(), e.height.to_string()),
            (header::CODEC.into(), e.codec.as_str().to_string()),
            (header::QUALITY.into(), e.quality.to_string()),
        ];
        if let Some(pf) = e.pixel_format {
            headers.push((header::PIXEL_FORMAT.into(), pf.as_str().to_string()));
        }
        record::FrameRecord {
            key: device.to_string(),
            headers,
            value: e.payload.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::record::FrameRecord;
    use proptest::prelude::*;

    fn fixture_frames() -> Vec<JpegImage> {
        crate::source::mjpeg::tests::fixture_frames()
            .into_iter()
            .map(|f| JpegImage::parse(Bytes::from_static(f)).unwrap())
            .collect()
    }

    fn cfg(codec: Codec, budget: u32) -> EncodeConfig {
        EncodeConfig {
            codec,
            max_message_bytes: crate::config::types::Budget::new(budget).unwrap(),
            ..EncodeConfig::default()
        }
    }

    fn frame(image: Image) -> Frame {
        Frame {
            seq: u64::MAX,
            frame_id: uuid::Uuid::now_v7().to_string(),
            captured_at: std::time::SystemTime::now(),
            image,
        }
    }

    /// Decodes `e.payload` and checks it is an image of the size the headers will state.
    fn assert_decodes_to_stated_size(e: &Encoded) {
        let (w, h) = match e.codec {
            Codec::Jpeg => {
                let hd = crate::jpeg::header(&e.payload).expect("valid JPEG");
                (hd.width, hd.height)
            }
            Codec::Png => {
                let img = image::load_from_memory(&e.payload).expect("valid PNG");
                (img.width(), img.height())
            }
            Codec::Zstd => {
                let raw =
                    codec::decode_zstd(&e.payload, e.width, e.height, e.pixel_format.unwrap())
                        .expect("valid zstd raw frame");
                (raw.width, raw.height)
            }
        };
        assert_eq!((w, h), (e.width, e.height));
    }

    #[test]
    fn fitting_jpeg_passes_through_untouched() {
        let frames = fixture_frames();
        let mut enc = Encoder::new("cam", cfg(Codec::Jpeg, 1_000_000), Default::default()).unwrap();
        for j in &frames {
            let e = enc.encode(&Image::Jpeg(j.clone())).unwrap();
            assert!(e.passthrough);
            assert_eq!(e.payload, j.data);
            assert_eq!(e.encodes, 0);
            // ffmpeg -q:v 4 on this footage: the estimate must be a plausible JPEG quality.
            assert!(matches!(e.quality, Quality::Jpeg(q) if (50..=100).contains(&q)));
        }
    }

    #[test]
    fn rotate_or_gray_forbids_passthrough_and_changes_geometry() {
        let j = fixture_frames().remove(0);
        let t = TransformConfig {
            rotate_degrees: 90,
            grayscale: true,
            ..Default::default()
        };
        let mut enc = Encoder::new("cam", cfg(Codec::Jpeg, 1_000_000), t).unwrap();
        let e = enc.encode(&Image::Jpeg(j)).unwrap();
        assert!(!e.passthrough);
        assert_eq!((e.width, e.height), (576, 768));
        let h = crate::jpeg::header(&e.payload).unwrap();
        assert_eq!((h.width, h.height, h.components), (576, 768, 1));
    }

    #[test]
    fn max_width_downscales_keeping_aspect() {
        let j = fixture_frames().remove(0);
        let t = TransformConfig {
            max_width: crate::config::types::Pixels::new(384),
            ..Default::default()
        };
        let mut enc = Encoder::new("cam", cfg(Codec::Jpeg, 1_000_000), t).unwrap();
        let e = enc.encode(&Image::Jpeg(j)).unwrap();
        assert_eq!((e.width, e.height), (384, 288));
        assert_decodes_to_stated_size(&e);
    }

    #[test]
    fn tight_budget_walks_the_ladder_and_steadies_at_about_one_encode() {
        let frames = fixture_frames();
        let budget = 20_000;
        let mut enc = Encoder::new("cam", cfg(Codec::Jpeg, budget), Default::default()).unwrap();
        let mut encodes = 0;
        for (i, j) in frames.iter().cycle().take(40).enumerate() {
            let f = frame(Image::Jpeg(j.clone()));
            let e = enc.encode(&f.image).unwrap();
            assert!(!e.passthrough);
            assert!(FrameRecord::new("cam", &f, &e).wire_size() <= budget as usize);
            assert_decodes_to_stated_size(&e);
            if i > 0 {
                encodes += e.encodes;
            }
        }
        // After the first frame: one encode per frame plus a probe every PROBE_INTERVAL.
        assert!(
            encodes <= 39 + 39 / ladder::PROBE_INTERVAL + 1,
            "{encodes} encodes for 39 frames"
        );
    }

    #[test]
    fn a_live_quality_max_change_keeps_the_full_size() {
        // The reported case: at a 50 KB budget the footage fits at 768x576 and a middle
        // quality; `set/quality_max 60` then sent frames at 324x243 and later 768x576 q40.
        let frames = fixture_frames();
        let mut c = cfg(Codec::Jpeg, 50_000);
        c.quality_max = crate::config::types::Quality::new(90).unwrap();
        let mut enc = Encoder::new("cam", c.clone(), Default::default()).unwrap();
        let mut before = None;
        for j in frames.iter().cycle().take(20) {
            before = Some(enc.encode(&Image::Jpeg(j.clone())).unwrap());
        }
        let before = before.unwrap();
        let Quality::Jpeg(q_before) = before.quality else {
            panic!("{:?}", before.quality)
        };
        assert_eq!((before.width, before.height), (768, 576));
        assert!((41..90).contains(&q_before), "settled at q{q_before}");
        c.quality_max = crate::config::types::Quality::new(60).unwrap();
        enc.reconfigure("cam", c, Default::default());
        let mut seen = Vec::new();
        for j in frames.iter().cycle().skip(20).take(20) {
            let e = enc.encode(&Image::Jpeg(j.clone())).unwrap();
            let Quality::Jpeg(q) = e.quality else {
                panic!("{:?}", e.quality)
            };
            seen.push((e.width, e.height, q));
        }
        eprintln!("before: 768x576 q{q_before}; after quality_max 60: {seen:?}");
        assert!(
            seen.iter().all(|&(w, h, _)| (w, h) == (768, 576)),
            "{seen:?}"
        );
        // The first frame after the change: the nearest quality not above the old one.
        assert_eq!(seen[0].2, q_before.min(60), "{seen:?}");
        assert!(seen.iter().all(|&(_, _, q)| q <= 60), "{seen:?}");
    }

    #[test]
    fn unreachable_budget_is_an_error_not_an_oversized_record() {
        let j = fixture_frames().remove(0);
        let mut c = cfg(Codec::Jpeg, 4096);
        c.min_side_px = crate::config::types::Pixels::new(500).unwrap();
        let mut enc = Encoder::new("cam", c, Default::default()).unwrap();
        let err = enc.encode(&Image::Jpeg(j)).unwrap_err();
        assert_eq!(err.reason(), "budget_unreachable");
        assert!(err.attempts() >= 1);
    }

    #[test]
    fn corrupt_jpeg_is_a_decode_error() {
        let mut j = fixture_frames().remove(0);
        let mut bad = j.data.to_vec();
        let n = bad.len();
        bad[n / 2..n - 2].fill(0x00);
        bad.truncate(n / 2);
        j.data = bytes::Bytes::from(bad);
        let mut enc = Encoder::new("cam", cfg(Codec::Png, 1_000_000), Default::default()).unwrap();
        // libjpeg-turbo may decode a truncated file with warnings; either way no panic, and
        // a success must still be a valid image.
        match enc.encode(&Image::Jpeg(j)) {
            Ok(e) => assert_decodes_to_stated_size(&e),
            Err(e) => assert_eq!(e.reason(), "decode_error"),
        }
    }

    fn raw_image() -> impl Strategy<Value = RawImage> {
        (1u32..160, 1u32..120, any::<bool>(), any::<u64>(), 0u8..3).prop_map(
            |(w, h, gray, seed, kind)| {
                let format = if gray {
                    PixelFormat::Gray8
                } else {
                    PixelFormat::Rgb8
                };
                let n = (w * h) as usize * format.channels();
                let mut x = seed | 1;
                let data = (0..n)
                    .map(|i| match kind {
                        // noise: the hardest content for every codec
                        0 => {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u8
                        }
                        // gradient
                        1 => (i % 251) as u8,
                        // flat
                        _ => (seed % 256) as u8,
                    })
                    .collect();
                RawImage::new(w, h, format, data).unwrap()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// The hard guarantee: whatever the image (RGB, gray or YUYV planes), codec, budget
        /// and transforms, a frame
        /// that is published has a whole record within the budget and decodes to the size
        /// its headers state; otherwise it is refused as unreachable.
        #[test]
        fn every_published_record_fits_the_budget(
            img in raw_image(),
            codec in prop_oneof![Just(Codec::Jpeg), Just(Codec::Png), Just(Codec::Zstd)],
            budget in 4096u32..80_000,
            rotate in prop_oneof![Just(0u16), Just(90), Just(180), Just(270)],
            gray in any::<bool>(),
            yuv in any::<bool>(),
            qmin in 1u8..60,
            qspan in 0u8..40,
            min_side in 1u32..40,
            device in "[a-z0-9-]{1,40}",
        ) {
            let mut c = cfg(codec, budget);
            c.quality_min = crate::config::Quality::new(qmin).unwrap();
            c.quality_max = crate::config::Quality::new(qmin + qspan).unwrap();
            c.min_side_px = crate::config::types::Pixels::new(min_side).unwrap();
            let t = TransformConfig { rotate_degrees: rotate, grayscale: gray, ..Default::default() };
            let mut enc = Encoder::new(&device, c, t).unwrap();
            // Half the cases as a YUYV camera frame: the same bytes read as packed YUYV.
            let image = if yuv {
                let (w, h) = (img.width as usize, img.height as usize);
                let stride = w.div_ceil(2) * 4;
                let bytes: Vec<u8> = img.data.iter().cycle().take(stride * h).copied().collect();
                Image::Yuv(crate::frame::Planes::from_yuyv(&bytes, w, h, stride).unwrap())
            } else {
                Image::Raw(img)
            };
            let f = frame(image);
            for _ in 0..2 {
                match enc.encode(&f.image) {
                    Ok(e) => {
                        let size = FrameRecord::new(&device, &f, &e).wire_size();
                        prop_assert!(size <= budget as usize, "{} > {}", size, budget);
                        assert_decodes_to_stated_size(&e);
                        if let Quality::Jpeg(q) = e.quality {
                            prop_assert!(q >= qmin && q <= qmin + qspan);
                        }
                    }
                    Err(EncodeError::BudgetUnreachable { smallest, budget: b, .. }) => {
                        prop_assert!(smallest > b);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The same guarantee on real camera frames (JPEG in: passthrough or re-encode).
        #[test]
        fn real_frames_fit_any_budget(
            i in 0usize..10,
            codec in prop_oneof![Just(Codec::Jpeg), Just(Codec::Png), Just(Codec::Zstd)],
            budget in 4096u32..1_200_000,
            rotate in prop_oneof![Just(0u16), Just(180)],
        ) {
            let j = fixture_frames().swap_remove(i);
            let t = TransformConfig { rotate_degrees: rotate, ..Default::default() };
            let mut enc = Encoder::new("front-door", cfg(codec, budget), t).unwrap();
            let f = frame(Image::Jpeg(j));
            match enc.encode(&f.image) {
                Ok(e) => {
                    prop_assert!(FrameRecord::new("front-door", &f, &e).wire_size() <= budget as usize);
                    assert_decodes_to_stated_size(&e);
                }
                Err(EncodeError::BudgetUnreachable { smallest, budget: b, .. }) => prop_assert!(smallest > b),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
