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

/// A YCbCr image as 8-bit planes, full range as in JPEG (JFIF): Y 0–255, Cb and Cr centred
/// on 128. A JPEG decodes to it without colour conversion, a YUYV camera frame becomes it at
/// the source ([`Planes::from_yuyv`]), and JPEG is encoded from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planes {
    /// Visible width, pixels.
    pub width: u32,
    /// Visible height, pixels.
    pub height: u32,
    /// Luma (`Gray8`): at least `width`×`height` (libjpeg-turbo pads it to whole chroma
    /// blocks); the image is its top-left `width`×`height`.
    pub y: RawImage,
    /// Chroma, or `None` for a grayscale image.
    pub chroma: Option<Chroma>,
}

/// The two chroma planes of [`Planes`] and their subsampling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chroma {
    /// Cb (`Gray8`), at least `ceil(width/fx)`×`ceil(height/fy)` samples.
    pub u: RawImage,
    /// Cr, the same size as `u`.
    pub v: RawImage,
    /// Horizontal subsampling: luma pixels per chroma sample (1, 2 or 4).
    pub fx: u32,
    /// Vertical subsampling (1, 2 or 4).
    pub fy: u32,
}

/// BT.601 limited range (Y 16–235, Cb/Cr 16–240) to full range, per sample: the tables
/// [`Planes::from_yuyv`] maps through.
fn range_tables() -> &'static ([u8; 256], [u8; 256]) {
    static TABLES: std::sync::OnceLock<([u8; 256], [u8; 256])> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for i in 0..256 {
            let x = i as f64;
            luma[i] = ((x - 16.0) * 255.0 / 219.0).round().clamp(0.0, 255.0) as u8;
            chroma[i] = ((x - 128.0) * 255.0 / 224.0 + 128.0)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
        (luma, chroma)
    })
}

impl Planes {
    /// Converts packed YUYV 4:2:2 as V4L2 delivers it (`Y0 U Y1 V` per two pixels, BT.601
    /// limited range) to full-range planes: luma `width`×`height`, chroma 4:2:2
    /// (`ceil(width/2)`×`height`, `fx` 2, `fy` 1). One pass over the frame, a table lookup
    /// per sample; no RGB.
    ///
    /// `src` holds `height` rows of `stride` bytes, each starting with the pixels
    /// (`4 * ceil(width/2)` bytes). Returns `None` when a dimension is 0, `stride` is too
    /// small for the width, or `src` is shorter than the rows need.
    pub fn from_yuyv(src: &[u8], width: usize, height: usize, stride: usize) -> Option<Planes> {
        let pairs = width.div_ceil(2);
        if width == 0 || height == 0 || stride < pairs * 4 {
            return None;
        }
        if src.len() < stride * (height - 1) + pairs * 4 {
            return None;
        }
        let (luma, chroma) = range_tables();
        let mut y = Vec::with_capacity(width * height);
        let mut u = Vec::with_capacity(pairs * height);
        let mut v = Vec::with_capacity(pairs * height);
        for row in 0..height {
            let line = &src[row * stride..row * stride + pairs * 4];
            for q in line.chunks_exact(4) {
                y.push(luma[q[0] as usize]);
                y.push(luma[q[2] as usize]);
                u.push(chroma[q[1] as usize]);
                v.push(chroma[q[3] as usize]);
            }
            // An odd width: the last pair's second pixel is not in the image.
            y.truncate((row + 1) * width);
        }
        let plane = |w: usize, data: Vec<u8>| {
            RawImage::new(w as u32, height as u32, PixelFormat::Gray8, data)
        };
        Some(Planes {
            width: width as u32,
            height: height as u32,
            y: plane(width, y)?,
            chroma: Some(Chroma {
                u: plane(pairs, u)?,
                v: plane(pairs, v)?,
                fx: 2,
                fy: 1,
            }),
        })
    }

    /// The luma alone, exactly `width`×`height` (`Gray8`): the grayscale image.
    pub fn luma(&self) -> RawImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let stride = self.y.width as usize;
        let data = if stride == w {
            self.y.data[..w * h].to_vec()
        } else {
            self.y
                .data
                .chunks_exact(stride)
                .take(h)
                .flat_map(|r| &r[..w])
                .copied()
                .collect()
        };
        RawImage {
            width: self.width,
            height: self.height,
            format: PixelFormat::Gray8,
            data,
        }
    }

    /// RGB8 (`width`×`height`), by the JFIF equations, each chroma sample covering its
    /// `fx`×`fy` pixels: for the codecs that do not take planes (PNG, zstd). Grayscale
    /// planes give grey pixels.
    pub fn to_rgb8(&self) -> RawImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let ys = self.y.width as usize;
        let mut data = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            let yl = &self.y.data[row * ys..row * ys + w];
            match &self.chroma {
                None => data.extend(yl.iter().flat_map(|&l| [l, l, l])),
                Some(c) => {
                    let cs = c.u.width as usize;
                    let cr = row / c.fy as usize * cs;
                    for (x, &l) in yl.iter().enumerate() {
                        let i = cr + x / c.fx as usize;
                        let (cb, cr) = (c.u.data[i] as i32 - 128, c.v.data[i] as i32 - 128);
                        // JFIF, in 16.16 fixed point: 1.402, 0.344136, 0.714136, 1.772.
                        let l = (l as i32) << 16;
                        let px = |v: i32| ((v + 32768) >> 16).clamp(0, 255) as u8;
                        data.push(px(l + 91881 * cr));
                        data.push(px(l - 22554 * cb - 46802 * cr));
                        data.push(px(l + 116130 * cb));
                    }
                }
            }
        }
        RawImage {
            width: self.width,
            height: self.height,
            format: PixelFormat::Rgb8,
            data,
        }
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
    /// Decoded pixels (PNG file, synthetic pattern).
    Raw(RawImage),
    /// YCbCr planes (a YUYV camera frame, converted once at the source): encoded to JPEG
    /// without passing through RGB.
    Yuv(Planes),
}

impl Image {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        match self {
            Image::Jpeg(j) => j.width,
            Image::Raw(r) => r.width,
            Image::Yuv(p) => p.width,
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        match self {
            Image::Jpeg(j) => j.height,
            Image::Raw(r) => r.height,
            Image::Yuv(p) => p.height,
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
