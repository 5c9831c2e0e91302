//! Checking an encoded image where it enters edgecam, cheaply and without decoding it.
//!
//! A JPEG is accepted when its markers parse through the first scan, its frame header (SOF)
//! declares dimensions within [`Limits`], and the entropy-coded data that follows ends in an
//! EOI: that is a walk over the bytes with `memchr`, microseconds for a camera frame. A PNG
//! is accepted when its chunks are whole with correct CRCs, from an IHDR whose dimensions,
//! bit depth and colour type are valid and within the limits, through at least one IDAT, to
//! IEND.
//!
//! A frame that passes through untouched (MJPEG from a camera, a JPEG file, a sensor's
//! payload in the bridge) is checked this way and **never fully decoded**: decoding costs
//! more than everything else edgecam does to such a frame (about 2 ms for 768×576, where a
//! passthrough frame costs about 20 µs), and what the check misses — corrupt Huffman data
//! inside a structurally whole scan — decodes to a damaged picture in every decoder, not to
//! a crash or a huge allocation. A frame that is re-encoded is decoded by libjpeg-turbo,
//! which then reports such damage as a decode error (counted as `decode_error`).

use crate::limits::{LimitError, Limits};

/// Why an image was refused. The frame is counted under [`Refusal::reason`] and the
/// agent, the bridge or `consume` goes on with the next one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Over a limit of `[limits]`: `frame_too_large`.
    #[error("too large: {0}")]
    TooLarge(#[from] LimitError),
    /// Not a whole, well-formed image: `bad_frame`. The text says what is wrong.
    #[error("{0}")]
    Broken(String),
}

impl Refusal {
    /// The counted reason: `frame_too_large` or `bad_frame`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "frame_too_large",
            Refusal::Broken(_) => "bad_frame",
        }
    }
}

/// Which format [`image`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (starts with `FF D8`).
    Jpeg,
    /// PNG (starts with the 8-byte PNG signature).
    Png,
}

/// What a checked image declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// JPEG or PNG.
    pub format: Format,
    /// Width in pixels, within the limits.
    pub width: u32,
    /// Height in pixels, within the limits.
    pub height: u32,
    /// JPEG: colour components (1 or 3); PNG: channels of the colour type (1–4).
    pub components: u8,
    /// JPEG: the IJG quality that explains its first quantisation table, when it has one.
    /// PNG: `None`.
    pub quality: Option<u8>,
    /// Bytes of the image itself: through the JPEG's EOI or the PNG's IEND chunk. Bytes
    /// after that (driver padding, appended trailers) are not part of it.
    pub len: usize,
}

/// The 8-byte signature every PNG starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Checks `data` as a JPEG or a PNG, by its first bytes.
///
/// Errors: [`Refusal::Broken`] when it is neither, or as [`jpeg`] and [`png`].
pub fn image(data: &[u8], limits: &Limits) -> Result<Inspected, Refusal> {
    if data.starts_with(&[0xFF, 0xD8]) {
        jpeg(data, limits)
    } else if data.starts_with(&PNG_SIGNATURE) {
        png(data, limits)
    } else {
        Err(Refusal::Broken(
            "neither a JPEG (FF D8) nor a PNG signature".into(),
        ))
    }
}

/// Checks a JPEG: bytes within `max_frame_bytes`, markers through the first scan, SOF
/// dimensions within the limits, an EOI after the scan.
///
/// Errors: [`Refusal::TooLarge`] (checked before the structure, so a forged header is
/// reported as too large even when the rest is garbage), [`Refusal::Broken`].
pub fn jpeg(data: &[u8], limits: &Limits) -> Result<Inspected, Refusal> {
    limits.check_bytes(data.len() as u64)?;
    let header = crate::jpeg::header(data).map_err(|e| Refusal::Broken(e.to_string()))?;
    limits.check_dimensions(header.width, header.height)?;
    let len = crate::jpeg::complete_len(data).ok_or_else(|| {
        Refusal::Broken("not a complete JPEG: broken markers, or no EOI after the scan".into())
    })?;
    Ok(Inspected {
        format: Format::Jpeg,
        width: header.width,
        height: header.height,
        components: header.components,
        quality: header.quality,
        len,
    })
}

/// Checks a PNG header only: signature, then an IHDR chunk with valid dimensions, bit depth
/// and colour type within the limits. Cheap enough to run before reading a whole file.
///
/// Errors: as [`png`].
pub fn png_header(data: &[u8], limits: &Limits) -> Result<Inspected, Refusal> {
    let broken = |m: &str| Refusal::Broken(format!("PNG: {m}"));
    if !data.starts_with(&PNG_SIGNATURE) {
        return Err(broken("missing signature"));
    }
    let ihdr = data
        .get(8..33)
        .ok_or_else(|| broken("truncated before the end of IHDR"))?;
    if ihdr[0..4] != [0, 0, 0, 13] || &ihdr[4..8] != b"IHDR" {
        return Err(broken("the first chunk is not a 13-byte IHDR"));
    }
    let width = u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]);
    let height = u32::from_be_bytes([ihdr[12], ihdr[13], ihdr[14], ihdr[15]]);
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(broken(&format!(
            "IHDR declares {width}x{height}: each side must be 1 to 2^31-1"
        )));
    }
    limits.check_dimensions(width, height)?;
    let (depth, colour) = (ihdr[16], ihdr[17]);
    let channels = match (colour, depth) {
        (0, 1 | 2 | 4 | 8 | 16) => 1,
        (3, 1 | 2 | 4 | 8) => 1,
        (2, 8 | 16) => 3,
        (4, 8 | 16) => 2,
        (6, 8 | 16) => 4,
        _ => {
            return Err(broken(&format!(
                "IHDR has colour type {colour} with bit depth {depth}, not a valid pair"
            )))
        }
    };
    if ihdr[18] != 0 || ihdr[19] != 0 || ihdr[20] > 1 {
        return Err(broken(
            "IHDR has an unknown compression, filter or interlace method",
        ));
    }
    Ok(Inspected {
        format: Format::Png,
        width,
        height,
        components: channels,
        quality: None,
        len: 33,
    })
}

/// Checks a PNG: bytes within `max_frame_bytes`, [`png_header`], then every chunk whole with
/// a correct CRC, at least one IDAT, through IEND.
///
/// Errors: [`Refusal::TooLarge`] (bytes or IHDR dimensions), [`Refusal::Broken`] naming the
/// first problem.
pub fn png(data: &[u8], limits: &Limits) -> Result<Inspected, Refusal> {
    limits.check_bytes(data.len() as u64)?;
    let mut out = png_header(data, limits)?;
    let broken = |m: String| Refusal::Broken(format!("PNG: {m}"));
    let mut pos = 8;
    let mut idat = false;
    loop {
        let head = data
            .get(pos..pos + 8)
            .ok_or_else(|| broken(format!("truncated at byte {pos}, before IEND")))?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = [head[4], head[5], head[6], head[7]];
        let end = pos
            .checked_add(12)
            .and_then(|p| p.checked_add(len))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                broken(format!(
                    "chunk {:?} at byte {pos} declares {len} bytes, past the end",
                    String::from_utf8_lossy(&kind)
                ))
            })?;
        let crc = u32::from_be_bytes(data[end - 4..end].try_into().expect("4 bytes"));
        if crc32fast::hash(&data[pos + 4..end - 4]) != crc {
            return Err(broken(format!(
                "chunk {:?} at byte {pos} has a wrong CRC",
                String::from_utf8_lossy(&kind)
            )));
        }
        match &kind {
            b"IDAT" => idat = true,
            b"IEND" if idat => {
                out.len = end;
                return Ok(out);
            }
            b"IEND" => return Err(broken("IEND before any IDAT: no pixels".into())),
            _ => {}
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = crate::frame::RawImage::new(
            w,
            h,
            crate::frame::PixelFormat::Rgb8,
            (0..w * h * 3).map(|i| (i % 253) as u8).collect(),
        )
        .unwrap();
        crate::encode::codec::encode_png(&img).unwrap()
    }

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode(&px, w, h, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    /// Rewrites the SOF dimensions of a JPEG made by `jpeg_bytes`.
    fn patch_sof(jpg: &mut [u8], w: u16, h: u16) {
        let i = (2..jpg.len() - 1)
            .find(|&i| jpg[i] == 0xFF && jpg[i + 1] == 0xC0)
            .unwrap();
        jpg[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
        jpg[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    }

    /// Rewrites IHDR's dimensions and fixes its CRC, as a careful attacker would.
    fn patch_ihdr(png: &mut [u8], w: u32, h: u32) {
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32fast::hash(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn accepts_whole_images_and_reports_their_size() {
        let l = Limits::default();
        let j = jpeg_bytes(33, 17);
        let got = image(&j, &l).unwrap();
        assert_eq!(
            (got.format, got.width, got.height, got.len),
            (Format::Jpeg, 33, 17, j.len())
        );
        let mut padded = j.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(image(&padded, &l).unwrap().len, j.len());
        let p = png_bytes(20, 10);
        let got = image(&p, &l).unwrap();
        assert_eq!(
            (got.format, got.width, got.height, got.components),
            (Format::Png, 20, 10, 3)
        );
        assert_eq!(got.len, p.len());
    }

    #[test]
    fn forged_jpeg_dimensions_are_too_large_before_anything_else() {
        let l = Limits::default();
        for (w, h) in [(65_000, 65_000), (65_535, 1), (10_000, 10_000)] {
            let mut j = jpeg_bytes(256, 256);
            patch_sof(&mut j, w, h);
            let e = jpeg(&j, &l).unwrap_err();
            assert_eq!(e.reason(), "frame_too_large", "{w}x{h}: {e}");
            // Truncated inside the scan too: reported as too large, from the header alone.
            let e = jpeg(&j[..j.len() * 6 / 10], &l).unwrap_err();
            assert_eq!(e.reason(), "frame_too_large");
        }
        let mut j = jpeg_bytes(16, 16);
        patch_sof(&mut j, 0, 16);
        assert_eq!(jpeg(&j, &l).unwrap_err().reason(), "bad_frame");
    }

    #[test]
    fn truncated_jpeg_is_broken_at_every_cut() {
        let l = Limits::default();
        let j = jpeg_bytes(64, 48);
        for pct in [10, 50, 90, 99] {
            let cut = j.len() * pct / 100;
            let e = jpeg(&j[..cut], &l).unwrap_err();
            assert_eq!(e.reason(), "bad_frame", "{pct}%: {e}");
        }
        assert!(jpeg(&j[..j.len() - 1], &l).is_err());
    }

    #[test]
    fn png_bombs_are_too_large_and_broken_pngs_broken() {
        let l = Limits::default();
        for (w, h) in [
            (12_000, 12_000),
            (30_000, 30_000),
            (i32::MAX as u32, i32::MAX as u32),
        ] {
            let mut p = png_bytes(8, 8);
            patch_ihdr(&mut p, w, h);
            assert_eq!(
                png(&p, &l).unwrap_err().reason(),
                "frame_too_large",
                "{w}x{h}"
            );
        }
        let mut p = png_bytes(8, 8);
        patch_ihdr(&mut p, u32::MAX, 1);
        assert_eq!(png(&p, &l).unwrap_err().reason(), "bad_frame");
        let p = png_bytes(40, 30);
        for cut in [8, 20, 40, p.len() / 2, p.len() - 1] {
            assert_eq!(
                png(&p[..cut], &l).unwrap_err().reason(),
                "bad_frame",
                "cut {cut}"
            );
        }
        let mut flipped = p.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        let e = png(&flipped, &l).unwrap_err();
        assert!(e.to_string().contains("CRC"), "{e}");
    }

    #[test]
    fn byte_limit_applies_to_both_formats() {
        let l = Limits {
            max_frame_bytes: 1024,
            ..Limits::default()
        };
        let j = jpeg_bytes(200, 200);
        assert!(j.len() > 1024);
        assert!(matches!(
            jpeg(&j, &l),
            Err(Refusal::TooLarge(LimitError::Bytes { .. }))
        ));
        assert_eq!(image(b"GIF89a", &l).unwrap_err().reason(), "bad_frame");
        assert_eq!(image(b"", &l).unwrap_err().reason(), "bad_frame");
    }

    #[test]
    fn never_panics_on_prefixes_and_bit_flips() {
        let l = Limits::default();
        for data in [jpeg_bytes(16, 16), png_bytes(9, 7)] {
            for n in 0..data.len() {
                let _ = image(&data[..n], &l);
            }
            for i in 0..data.len() {
                let mut b = data.clone();
                b[i] ^= 0x5A;
                if let Ok(got) = image(&b, &l) {
                    assert!(got.len <= b.len());
                    assert!(l.check_dimensions(got.width, got.height).is_ok());
                }
            }
        }
    }
}
