//! Pixel codecs: JPEG through libjpeg-turbo (`turbojpeg`), PNG through `image`, lossless raw
//! pixels through `zstd`; and JPEG decoding, with libjpeg-turbo's DCT scaling when only a
//! smaller image is needed.

pub use crate::frame::{Chroma, Planes};
use turbojpeg::{Compressor, Decompressor, PixelFormat as TjFormat, ScalingFactor, Subsamp};

use crate::frame::{PixelFormat, RawImage};

/// A codec failure on one frame (counted, the frame is dropped, the agent goes on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// libjpeg-turbo could not decode the source JPEG.
    #[error("JPEG decode failed: {0}")]
    Decode(String),
    /// An encoder failed.
    #[error("{codec} encode failed: {message}")]
    Encode {
        /// `jpeg`, `png` or `zstd`.
        codec: &'static str,
        /// The library's message.
        message: String,
    },
}

fn tj_format(f: PixelFormat) -> TjFormat {
    match f {
        PixelFormat::Gray8 => TjFormat::GRAY,
        PixelFormat::Rgb8 => TjFormat::RGB,
    }
}

/// libjpeg-turbo's compressor and decompressor, kept between frames (creating them costs
/// allocations every frame otherwise).
pub struct Jpeg {
    compressor: Compressor,
    decompressor: Decompressor,
    limits: crate::limits::Limits,
}

impl Jpeg {
    /// Creates the libjpeg-turbo handles, decoding within the default [`Limits`].
    ///
    /// Errors: [`CodecError::Encode`] if libjpeg-turbo cannot allocate them.
    ///
    /// [`Limits`]: crate::limits::Limits
    pub fn new() -> Result<Self, CodecError> {
        Self::with_limits(crate::limits::Limits::default())
    }

    /// Creates the libjpeg-turbo handles; [`Jpeg::decode`] refuses a JPEG whose header
    /// (as libjpeg-turbo reads it) is over `limits`, before allocating its pixels.
    ///
    /// Errors: [`CodecError::Encode`] if libjpeg-turbo cannot allocate them.
    pub fn with_limits(limits: crate::limits::Limits) -> Result<Self, CodecError> {
        let err = |e: turbojpeg::Error| CodecError::Encode {
            codec: "jpeg",
            message: e.to_string(),
        };
        Ok(Jpeg {
            compressor: Compressor::new().map_err(err)?,
            decompressor: Decompressor::new().map_err(err)?,
            limits,
        })
    }

    /// Encodes `img` at `quality` (1–100): 4:2:0 chroma subsampling for RGB8 (what cameras and
    /// browsers expect), a single channel for Gray8.
    ///
    /// Errors: [`CodecError::Encode`].
    pub fn encode(&mut self, img: &RawImage, quality: u8) -> Result<Vec<u8>, CodecError> {
        let err = |e: turbojpeg::Error| CodecError::Encode {
            codec: "jpeg",
            message: e.to_string(),
        };
        let subsamp = match img.format {
            PixelFormat::Gray8 => Subsamp::Gray,
            PixelFormat::Rgb8 => Subsamp::Sub2x2,
        };
        self.compressor.set_subsamp(subsamp).map_err(err)?;
        self.compressor
            .set_quality(quality.clamp(1, 100) as i32)
            .map_err(err)?;
        let image = turbojpeg::Image {
            pixels: img.data.as_slice(),
            width: img.width as usize,
            pitch: img.width as usize * img.format.channels(),
            height: img.height as usize,
            format: tj_format(img.format),
        };
        self.compressor.compress_to_vec(image).map_err(err)
    }

    /// Decodes `jpeg` to `format`, using DCT scaling (1/2, 1/4, 1/8) to the smallest size that
    /// is still at least `min_width`×`min_height`: a 5640×3172 photo needed at 1410×793 decodes
    /// at 1/4 directly, about 10× less work than a full decode plus resize.
    ///
    /// Errors: [`CodecError::Decode`] for corrupt or unsupported JPEGs, and for one whose
    /// header is over the limits (nothing is allocated for it).
    pub fn decode(
        &mut self,
        jpeg: &[u8],
        format: PixelFormat,
        min_width: u32,
        min_height: u32,
    ) -> Result<RawImage, CodecError> {
        let err = |e: turbojpeg::Error| CodecError::Decode(e.to_string());
        let header = self.header_within_limits(jpeg)?;
        let factor = scaling_factor(header.width, header.height, min_width, min_height);
        self.decompressor.set_scaling_factor(factor).map_err(err)?;
        let (w, h) = (factor.scale(header.width), factor.scale(header.height));
        let pitch = w * format.channels();
        let mut data = vec![0u8; pitch * h];
        let image = turbojpeg::Image {
            pixels: data.as_mut_slice(),
            width: w,
            pitch,
            height: h,
            format: tj_format(format),
        };
        self.decompressor.decompress(jpeg, image).map_err(err)?;
        RawImage::new(w as u32, h as u32, format, data)
            .ok_or_else(|| CodecError::Decode("decoder returned an empty image".into()))
    }
}

impl Jpeg {
    /// `jpeg`'s header as libjpeg-turbo reads it, refused when its size is over the limits
    /// (before anything is allocated for its pixels).
    fn header_within_limits(
        &mut self,
        jpeg: &[u8],
    ) -> Result<turbojpeg::DecompressHeader, CodecError> {
        let header = self
            .decompressor
            .read_header(jpeg)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        let side = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        self.limits
            .check_dimensions(side(header.width), side(header.height))
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        Ok(header)
    }

    /// Decodes `jpeg` to its own YCbCr planes (no colour conversion), with the same DCT
    /// scaling as [`Jpeg::decode`]. `Ok(None)` when its chroma subsampling has no planar
    /// decode here (the caller decodes to RGB instead).
    ///
    /// Errors: as [`Jpeg::decode`].
    pub fn decode_planes(
        &mut self,
        jpeg: &[u8],
        min_width: u32,
        min_height: u32,
    ) -> Result<Option<Planes>, CodecError> {
        let err = |e: turbojpeg::Error| CodecError::Decode(e.to_string());
        let header = self.header_within_limits(jpeg)?;
        let subsamp = header.subsamp;
        let gray = match subsamp {
            Subsamp::Gray => true,
            Subsamp::None
            | Subsamp::Sub2x1
            | Subsamp::Sub2x2
            | Subsamp::Sub1x2
            | Subsamp::Sub4x1
            | Subsamp::Sub1x4 => false,
            _ => return Ok(None),
        };
        let factor = scaling_factor(header.width, header.height, min_width, min_height);
        self.decompressor.set_scaling_factor(factor).map_err(err)?;
        let (w, h) = (factor.scale(header.width), factor.scale(header.height));
        let layout = turbojpeg::YuvImage {
            pixels: (),
            width: w,
            align: 1,
            height: h,
            subsamp,
        };
        let len = turbojpeg::yuv_pixels_len(w, 1, h, subsamp).map_err(err)?;
        let mut buf = vec![0u8; len];
        self.decompressor
            .decompress_to_yuv(
                jpeg,
                turbojpeg::YuvImage {
                    pixels: buf.as_mut_slice(),
                    width: w,
                    align: 1,
                    height: h,
                    subsamp,
                },
            )
            .map_err(err)?;
        let uv = (!gray).then(|| {
            (
                layout.uv_size(),
                (subsamp.width() as u32, subsamp.height() as u32),
            )
        });
        split(buf, w as u32, h as u32, layout.y_size(), uv).map(Some)
    }

    /// Encodes 4:2:0 planes at `quality`, or the luma alone as a grayscale JPEG. The planes
    /// are borrowed as they are: a decode's padded luma, or rows wider than the image, are
    /// read in place with their stride; only a luma plane short of whole 2×2 blocks (an odd
    /// side that [`planar::prepare`](super::planar::prepare) made exact) is padded by
    /// repeating its last column and row. Every plane's size is checked here first: the
    /// crate asserts them, which would abort the process.
    ///
    /// Errors: [`CodecError::Encode`] for planes too small for the view's size, chroma planes
    /// of different sizes, or an encoder failure.
    pub fn encode_planes(
        &mut self,
        view: PlanesView<'_>,
        quality: u8,
    ) -> Result<Vec<u8>, CodecError> {
        let err = |message: String| CodecError::Encode {
            codec: "jpeg",
            message,
        };
        let y = view.y;
        let (w, h) = (view.width as usize, view.height as usize);
        let (ys, yh) = (y.width as usize, y.height as usize);
        if w == 0 || h == 0 || ys < w || yh < h || y.data.len() != ys * yh {
            return Err(err(format!(
                "a luma plane of {}x{} for a {w}x{h} image",
                y.width, y.height
            )));
        }
        let Some((u, v)) = view.uv else {
            return if (ys, yh) == (w, h) {
                self.encode(y, quality)
            } else {
                let data = y.data.chunks_exact(ys).take(h).flat_map(|r| &r[..w]);
                let exact = RawImage::new(
                    w as u32,
                    h as u32,
                    PixelFormat::Gray8,
                    data.copied().collect(),
                )
                .ok_or_else(|| err("luma crop".into()))?;
                self.encode(&exact, quality)
            };
        };
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let cs = u.width as usize;
        if (u.width, u.height) != (v.width, v.height)
            || cs < cw
            || (u.height as usize) < ch
            || u.data.len() != cs * u.height as usize
            || v.data.len() != u.data.len()
        {
            return Err(err(format!(
                "chroma planes of {}x{} and {}x{} for a {w}x{h} 4:2:0 image",
                u.width, u.height, v.width, v.height
            )));
        }
        // libjpeg-turbo reads luma in whole 2x2 blocks (tj3YUVPlaneSize: stride × (2·ch − 1)
        // + 2·cw bytes): a plane short of that gets its last column or row repeated.
        let (pw, ph) = (2 * cw, 2 * ch);
        let (luma, stride): (std::borrow::Cow<'_, [u8]>, usize) = if ys >= pw && yh >= ph {
            (std::borrow::Cow::Borrowed(&y.data), ys)
        } else {
            let mut p = Vec::with_capacity(pw * ph);
            for row in y.data.chunks_exact(ys).take(h) {
                p.extend_from_slice(&row[..w]);
                p.extend(std::iter::repeat_n(row[w - 1], pw - w));
            }
            let last = p[(h - 1) * pw..].to_vec();
            for _ in h..ph {
                p.extend_from_slice(&last);
            }
            (std::borrow::Cow::Owned(p), pw)
        };
        if luma.len() < stride * (ph - 1) + pw || u.data.len() < cs * (ch - 1) + cw {
            return Err(err(format!("planes too small for a {w}x{h} 4:2:0 image")));
        }
        let tj = |e: turbojpeg::Error| err(e.to_string());
        self.compressor
            .set_quality(quality.clamp(1, 100) as i32)
            .map_err(tj)?;
        self.compressor
            .compress_yuv_planes_to_vec(&turbojpeg::YuvPlanesImage {
                y_plane: &luma[..],
                u_plane: &u.data[..],
                v_plane: &v.data[..],
                width: w,
                height: h,
                y_stride: stride,
                u_stride: cs,
                v_stride: cs,
                subsamp: Subsamp::Sub2x2,
            })
            .map_err(tj)
    }
}

/// Decodes a PNG to RGB8, or Gray8 when it has no colour: palettes expanded, 16-bit samples
/// reduced to 8, alpha dropped (not composited). Memory: one output buffer of at most 4
/// bytes per pixel (RGBA before the alpha is dropped in place), so a PNG within `limits`
/// decodes in at most `4 * max_pixels` bytes; the decoder's own allocation limit is set to
/// that too.
///
/// Errors: [`CodecError::Decode`] for a corrupt PNG or one over `limits` (callers check
/// the header with [`crate::inspect::png`] first, which says which limit).
pub fn decode_png(data: &[u8], limits: &crate::limits::Limits) -> Result<RawImage, CodecError> {
    use png::ColorType;
    let err = |e: png::DecodingError| CodecError::Decode(format!("PNG: {e}"));
    let budget = (limits.max_pixels as usize)
        .saturating_mul(4)
        .saturating_add(1 << 20);
    let mut decoder =
        png::Decoder::new_with_limits(std::io::Cursor::new(data), png::Limits { bytes: budget });
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(err)?;
    let (width, height) = reader.info().size();
    limits
        .check_dimensions(width, height)
        .map_err(|e| CodecError::Decode(format!("PNG: {e}")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| CodecError::Decode("PNG: image too large for this machine".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(err)?;
    let (format, channels) = match info.color_type {
        ColorType::Grayscale => (PixelFormat::Gray8, 1),
        ColorType::GrayscaleAlpha => (PixelFormat::Gray8, 2),
        ColorType::Rgb => (PixelFormat::Rgb8, 3),
        ColorType::Rgba => (PixelFormat::Rgb8, 4),
        ColorType::Indexed => {
            return Err(CodecError::Decode(
                "PNG: palette not expanded by the decoder".into(),
            ))
        }
    };
    let keep = format.channels();
    let pixels = width as usize * height as usize;
    if info.line_size != width as usize * channels || buf.len() < pixels * channels {
        return Err(CodecError::Decode(format!(
            "PNG: decoder returned {} bytes per row for {width} pixels of {channels} channels",
            info.line_size
        )));
    }
    if channels != keep {
        // Drop alpha in place: pixel i moves from i*channels to i*keep, never forward.
        for i in 0..pixels {
            buf.copy_within(i * channels..i * channels + keep, i * keep);
        }
    }
    buf.truncate(pixels * keep);
    buf.shrink_to_fit();
    RawImage::new(width, height, format, buf)
        .ok_or_else(|| CodecError::Decode(format!("PNG of {width}x{height} has no pixels")))
}

/// Sources larger than this, pixels, decode at any of libjpeg-turbo's M/8 scales (1/8 …
/// 7/8), not only 1/8, 1/4 and 1/2: for them memory matters more than the few percent of
/// CPU the SIMD-accelerated power-of-two scales save. A 50 MP frame needed at ¾ size then
/// decodes to 84 MB directly, instead of 150 MB plus a resize whose intermediate buffer
/// is another 2.25 bytes per source pixel. Camera-sized frames keep the power-of-two scales.
pub const FINE_SCALING_ABOVE_PIXELS: u64 = 8_000_000;

/// The smallest DCT scaling factor that still gives at least `min_width`×`min_height` from
/// a `width`×`height` JPEG (see [`FINE_SCALING_ABOVE_PIXELS`]); `1` when none does.
fn scaling_factor(width: usize, height: usize, min_width: u32, min_height: u32) -> ScalingFactor {
    let fits = |f: &ScalingFactor| {
        f.scale(width) >= min_width as usize && f.scale(height) >= min_height as usize
    };
    let fine = width as u64 * height as u64 > FINE_SCALING_ABOVE_PIXELS;
    let candidates: Vec<ScalingFactor> = if fine {
        (1..8).map(|m| ScalingFactor::new(m, 8)).collect()
    } else {
        vec![
            ScalingFactor::ONE_EIGHTH,
            ScalingFactor::ONE_QUARTER,
            ScalingFactor::ONE_HALF,
        ]
    };
    candidates
        .into_iter()
        .find(fits)
        .unwrap_or(ScalingFactor::ONE)
}

/// The size [`Jpeg::decode`] gives a `width`×`height` JPEG asked for at least
/// `min_width`×`min_height`.
pub fn scaled_size(width: u32, height: u32, min_width: u32, min_height: u32) -> (u32, u32) {
    let f = scaling_factor(width as usize, height as usize, min_width, min_height);
    (
        f.scale(width as usize) as u32,
        f.scale(height as usize) as u32,
    )
}

/// Encodes `img` as PNG (default compression, adaptive filtering).
///
/// Errors: [`CodecError::Encode`].
pub fn encode_png(img: &RawImage) -> Result<Vec<u8>, CodecError> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    let color = match img.format {
        PixelFormat::Gray8 => image::ExtendedColorType::L8,
        PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
    };
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&img.data, img.width, img.height, color)
        .map_err(|e| CodecError::Encode {
            codec: "png",
            message: e.to_string(),
        })?;
    Ok(out)
}

/// Compresses `img.data` (raw pixels, row-major) with zstd at `level` (1–22).
///
/// Errors: [`CodecError::Encode`].
pub fn encode_zstd(img: &RawImage, level: i32) -> Result<Vec<u8>, CodecError> {
    zstd::bulk::compress(&img.data, level).map_err(|e| CodecError::Encode {
        codec: "zstd",
        message: e.to_string(),
    })
}

/// Decompresses a zstd value back into a [`RawImage`] of the given shape (the consumer's
/// side of `codec = "zstd"`). Returns `None` if the data is corrupt or not exactly
/// `width * height * format.channels()` bytes.
pub fn decode_zstd(data: &[u8], width: u32, height: u32, format: PixelFormat) -> Option<RawImage> {
    let expected = (width as usize)
        .checked_mul(height as usize)?
        .checked_mul(format.channels())?;
    let pixels = zstd::bulk::decompress(data, expected).ok()?;
    RawImage::new(width, height, format, pixels)
}

/// The planes of one output image, made by [`planar::prepare`](super::planar::prepare):
/// luma exactly `width`×`height`, chroma 4:2:0 (`ceil(width/2)`×`ceil(height/2)`), or luma
/// alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Luma, exactly the output size.
    pub y: RawImage,
    /// Cb and Cr at 4:2:0, or `None` for a grayscale output.
    pub uv: Option<(RawImage, RawImage)>,
}

impl Output {
    /// The whole of it, for [`Jpeg::encode_planes`].
    pub fn view(&self) -> PlanesView<'_> {
        PlanesView {
            width: self.y.width,
            height: self.y.height,
            y: &self.y,
            uv: self.uv.as_ref().map(|(u, v)| (u, v)),
        }
    }
}

/// Planes borrowed for [`Jpeg::encode_planes`]: the top-left `width`×`height` of `y` (rows
/// of `y.width` samples) and, for colour, the top-left `ceil(width/2)`×`ceil(height/2)` of
/// `u` and `v` (4:2:0). A decode's own planes at the size wanted, or an [`Output`].
#[derive(Debug, Clone, Copy)]
pub struct PlanesView<'a> {
    /// Image width, pixels.
    pub width: u32,
    /// Image height, pixels.
    pub height: u32,
    /// Luma, at least `width`×`height`.
    pub y: &'a RawImage,
    /// Cb and Cr, or `None` to encode the luma alone (grayscale).
    pub uv: Option<(&'a RawImage, &'a RawImage)>,
}

impl Planes {
    /// These planes as they are, for [`Jpeg::encode_planes`], when they can be encoded
    /// without a copy: colour with 4:2:0 chroma, or `gray` (the luma alone). `None`
    /// otherwise (the caller resamples with `prepare`).
    pub fn view(&self, gray: bool) -> Option<PlanesView<'_>> {
        let uv = match (&self.chroma, gray) {
            (_, true) => None,
            (Some(c), false) if (c.fx, c.fy) == (2, 2) => Some((&c.u, &c.v)),
            // Other subsampling is resampled; a grayscale source asked for colour gets
            // neutral chroma from `prepare`, as at every other size.
            (_, false) => return None,
        };
        Some(PlanesView {
            width: self.width,
            height: self.height,
            y: &self.y,
            uv,
        })
    }
}

/// Splits the single buffer libjpeg-turbo decoded to (`align` 1: Y, then U, then V, each
/// row-major without padding) into [`Planes`].
///
/// Errors: [`CodecError::Decode`] when the buffer does not have the planes' sizes.
fn split(
    mut buf: Vec<u8>,
    width: u32,
    height: u32,
    y_size: (usize, usize),
    uv: Option<((usize, usize), (u32, u32))>,
) -> Result<Planes, CodecError> {
    let bad = || CodecError::Decode("decoder returned planes of unexpected sizes".into());
    let y_len = y_size.0 * y_size.1;
    let plane = |data: Vec<u8>, (w, h): (usize, usize)| {
        RawImage::new(w as u32, h as u32, PixelFormat::Gray8, data).ok_or_else(bad)
    };
    let chroma = match uv {
        None => {
            if buf.len() != y_len {
                return Err(bad());
            }
            None
        }
        Some((size, (fx, fy))) => {
            let c_len = size.0 * size.1;
            if buf.len() != y_len + 2 * c_len {
                return Err(bad());
            }
            let v = buf.split_off(y_len + c_len);
            let u = buf.split_off(y_len);
            Some(Chroma {
                u: plane(u, size)?,
                v: plane(v, size)?,
                fx,
                fy,
            })
        }
    };
    Ok(Planes {
        width,
        height,
        y: plane(buf, y_size)?,
        chroma,
    })
}
