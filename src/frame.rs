//! Frames as they move through the pipeline: what a source captured, and the pixel
//! layouts the encoders understand.

use std::time::SystemTime;

use bytes::Bytes;

/// Layout of one pixel in a [`RawImage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    /// One byte per pixel, luma.
    Gray8,
    /// Three bytes per pixel: red, green, blue.
    Rgb8,
}

impl PixelFormat {
    /// Bytes per pixel: 1 for `Gray8`, 3 for `Rgb8`.
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb8 => 3,
        }
    }

    /// Name used in the `edgecam.pixel_format` header: `gray8` or `rgb8`.
    pub fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Gray8 => "gray8",
            PixelFormat::Rgb8 => "rgb8",
        }
    }

    /// Inverse of [`PixelFormat::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gray8" => Some(PixelFormat::Gray8),
            "rgb8" => Some(PixelFormat::Rgb8),
            _ => None,
        }
    }
}

/// Uncompressed pixels.
///
/// `data` is row-major with no padding between rows: `width * height * format.channels()`
/// bytes. Constructors that take outside input check that length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawImage {
    /// Width in pixels, ≥ 1.
    pub width: u32,
    /// Height in pixels, ≥ 1.
    pub height: u32,
    /// Pixel layout.
    pub format: PixelFormat,
    /// Pixels, row-major, `width * height * format.channels()` bytes.
    pub data: Vec<u8>,
}

impl RawImage {
    /// Wraps `data`; returns `None` when a dimension is 0 or `data.len()` is not
    /// `width * height * format.channels()`.
    pub fn new(width: u32, height: u32, format: PixelFormat, data: Vec<u8>) -> Option<Self> {
        let expected = (width as usize)
            .checked_mul(height as usize)?
            .checked_mul(format.channels())?;
        (width > 0 && height > 0 && data.len() == expected).then_some(RawImage {
            width,
            height,
            format,
            data,
        })
    }
}

/// A JPEG (JFIF/EXIF baseline or progressive) exactly as a source delivered it: one MJPEG
/// frame, or a `.jpg` file. Its dimensions come from the SOF marker, read without decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegImage {
    /// Width in pixels from the SOF marker.
    pub width: u32,
    /// Height in pixels from the SOF marker.
    pub height: u32,
    /// The whole file, from `FF D8` to `FF D9`.
    pub data: Bytes,
}

impl JpegImage {
    /// Parses the SOF marker of `data` for its dimensions.
    ///
    /// Errors: [`JpegHeaderError`] when `data` does not start with SOI (`FF D8`), the
    /// segments are truncated, or no SOF marker with non-zero dimensions precedes the scan.
    pub fn parse(data: Bytes) -> Result<Self, JpegHeaderError> {
        let info = crate::jpeg::header(&data)?;
        Ok(JpegImage {
            width: info.width,
            height: info.height,
            data,
        })
    }

    /// Checks `data` as it arrives from outside (a file, a camera, a stream) with
    /// [`crate::inspect::jpeg`]: size, markers, SOF dimensions within `limits`, an EOI after
    /// the scan. Keeps the bytes through the EOI; anything after it is dropped.
    ///
    /// Errors: [`Refusal::TooLarge`](crate::inspect::Refusal::TooLarge) over a limit,
    /// [`Refusal::Broken`](crate::inspect::Refusal::Broken) otherwise. Nothing is allocated.
    pub fn checked(
        mut data: Bytes,
        limits: &crate::limits::Limits,
    ) -> Result<Self, crate::inspect::Refusal> {
        let i = crate::inspect::jpeg(&data, limits)?;
        data.truncate(i.len);
        Ok(JpegImage {
            width: i.width,
            height: i.height,
            data,
        })
    }

    /// [`JpegImage::checked`] for a frame whose structure is already known to be whole: one
    /// that [`MjpegSplitter`](crate::source::mjpeg::MjpegSplitter) cut from a stream, which
    /// walked its markers and entropy-coded data through the EOI. Checks the size and the
    /// header's dimensions against `limits` without walking the scan a second time (that
    /// walk is about half the cost of a passthrough frame).
    ///
    /// Errors: as [`JpegImage::checked`].
    pub fn split_within(
        data: Bytes,
        limits: &crate::limits::Limits,
    ) -> Result<Self, crate::inspect::Refusal> {
        use crate::inspect::Refusal;
        limits.check_bytes(data.len() as u64)?;
        let h = crate::jpeg::header(&data).map_err(|e| Refusal::Broken(e.to_string()))?;
        limits.check_dimensions(h.width, h.height)?;
        Ok(JpegImage {
            width: h.width,
            height: h.height,
            data,
        })
    }
}

pub use crate::jpeg::JpegHeaderError;

/// The pixels of a captured frame: compressed as the source gave them, or raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A JPEG straight from the source (MJPEG camera, MJPEG stream, `.jpg` file). It may be
    /// published untouched when it fits the budget and no transform applies.
    Jpeg(JpegImage),
    /// Decoded pixels (YUYV camera converted to RGB8, PNG file, synthetic pattern).
    Raw(RawImage),
}

impl Image {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        match self {
            Image::Jpeg(j) => j.width,
            Image::Raw(r) => r.width,
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        match self {
            Image::Jpeg(j) => j.height,
            Image::Raw(r) => r.height,
        }
    }
}

/// What a [`Source`](crate::source::Source) hands to the pipeline.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The pixels.
    pub image: Image,
    /// Wall-clock time the frame was captured (for a file: when it was read).
    pub captured_at: SystemTime,
}

impl Captured {
    /// A frame captured now.
    pub fn now(image: Image) -> Self {
        Captured {
            image,
            captured_at: SystemTime::now(),
        }
    }
}

/// A frame accepted into the pipeline: numbered, identified, timestamped.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Sequence number, per device, from 0 at agent start, +1 per captured frame. A gap
    /// downstream means frames were dropped (counted, with a reason).
    pub seq: u64,
    /// Unique id for downstream de-duplication: a UUIDv7 (time-ordered), as text.
    pub frame_id: String,
    /// Wall-clock capture time.
    pub captured_at: SystemTime,
    /// The pixels.
    pub image: Image,
}
