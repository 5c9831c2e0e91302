//! Reading JPEG headers without decoding: dimensions from the SOF marker and an estimate of
//! the encoder's quality from the luminance quantisation table (DQT).
//!
//! This is what lets MJPEG frames pass through untouched: the pipeline learns the size and
//! quality of a frame in microseconds and only decodes when it must transform or re-encode.

/// What [`header`] learns from a JPEG's markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    /// Width in pixels (SOF).
    pub width: u32,
    /// Height in pixels (SOF).
    pub height: u32,
    /// Colour components (SOF): 1 for grayscale, 3 for YCbCr.
    pub components: u8,
    /// IJG-scale quality 1–100 that best explains the first quantisation table, when the
    /// file has one (MJPEG from some webcams omits DQT and relies on defaults: `None`).
    pub quality: Option<u8>,
}

/// Why a byte string is not a JPEG whose header we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JpegHeaderError {
    /// The data does not begin with the SOI marker `FF D8`.
    #[error("not a JPEG: missing SOI marker FF D8")]
    NoSoi,
    /// A segment runs past the end of the data.
    #[error("truncated JPEG header")]
    Truncated,
    /// The scan (SOS) or end (EOI) came before any frame header (SOF).
    #[error("JPEG has no SOF frame header")]
    NoSof,
    /// The SOF gives a width or height of 0 (height 0 means "defined by DNL", which no
    /// camera we support emits).
    #[error("JPEG frame header has a zero dimension")]
    ZeroDimension,
}

/// IJG's standard luminance quantisation table (ITU T.81 Annex K), natural order.
const STD_LUMA: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// Sum of the standard luminance table scaled to `quality` as libjpeg's
/// `jpeg_quality_scaling` does (baseline, entries clamped to 1..=255).
fn scaled_luma_sum(quality: u32) -> u32 {
    let scale = if quality < 50 {
        5000 / quality
    } else {
        200 - 2 * quality
    };
    STD_LUMA
        .iter()
        .map(|&q| ((q as u32 * scale + 50) / 100).clamp(1, 255))
        .sum()
}

/// The quality whose scaled table has the sum closest to `sum` (order-independent, so
/// zig-zag order in the file does not matter).
fn estimate_quality(sum: u32) -> u8 {
    (1..=100u32)
        .min_by_key(|&q| scaled_luma_sum(q).abs_diff(sum))
        .unwrap_or(75) as u8
}

/// Reads the markers of `data` up to the first scan.
///
/// Errors: see [`JpegHeaderError`]. Never panics on hostile input.
pub fn header(data: &[u8]) -> Result<JpegHeader, JpegHeaderError> {
    if data.len() < 2 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(JpegHeaderError::NoSoi);
    }
    let mut pos = 2;
    let mut sof: Option<(u32, u32, u8)> = None;
    let mut quality = None;
    loop {
        // Skip to the next marker; fill bytes (FF FF …) are allowed before a marker.
        while pos < data.len() && data[pos] != 0xFF {
            pos += 1;
        }
        while pos < data.len() && data[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = data.get(pos) else {
            return Err(if sof.is_some() {
                JpegHeaderError::Truncated
            } else {
                JpegHeaderError::NoSof
            });
        };
        pos += 1;
        match marker {
            // Standalone markers: TEM, RST0-7.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => break,
            _ => {}
        }
        let len = match data.get(pos..pos + 2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]) as usize,
            None => return Err(JpegHeaderError::Truncated),
        };
        if len < 2 {
            return Err(JpegHeaderError::Truncated);
        }
        let body = data
            .get(pos + 2..pos + len)
            .ok_or(JpegHeaderError::Truncated)?;
        match marker {
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF if sof.is_none() => {
                if body.len() < 6 {
                    return Err(JpegHeaderError::Truncated);
                }
                let height = u16::from_be_bytes([body[1], body[2]]) as u32;
                let width = u16::from_be_bytes([body[3], body[4]]) as u32;
                if width == 0 || height == 0 {
                    return Err(JpegHeaderError::ZeroDimension);
                }
                sof = Some((width, height, body[5]));
            }
            0xDB if quality.is_none() => {
                // The first table in the first DQT is luminance in every encoder we know.
                if let Some(&pq_tq) = body.first() {
                    let wide = pq_tq >> 4 != 0;
                    let n = if wide { 128 } else { 64 };
                    if let Some(t) = body.get(1..1 + n) {
                        let sum: u32 = if wide {
                            t.chunks_exact(2)
                                .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
                                .sum()
                        } else {
                            t.iter().map(|&v| v as u32).sum()
                        };
                        quality = Some(estimate_quality(sum));
                    }
                }
            }
            _ => {}
        }
        pos += len;
    }
    let (width, height, components) = sof.ok_or(JpegHeaderError::NoSof)?;
    Ok(JpegHeader {
        width,
        height,
        components,
        quality,
    })
}

/// Where a scan is within a JPEG, or (for [`crate::source::mjpeg::MjpegSplitter`]) within
/// an MJPEG stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Between frames: looking for `FF D8 FF`. `pos` is where to resume the search.
    Seek,
    /// Inside a frame, outside entropy-coded data: `pos` is where the next marker must be.
    Header,
    /// Inside entropy-coded data: `pos` is where to resume looking for `FF`.
    Entropy,
}

/// What [`scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The data ends before the frame does; `pos`/`phase` say where to resume.
    NeedMore,
    /// The frame is `data[..end]` (EOI included).
    End(usize),
    /// The frame is broken at `offset`; drop `data[..discard]` and seek the next SOI.
    Corrupt {
        offset: usize,
        discard: usize,
        what: &'static str,
    },
}

/// Scans the frame starting at `data[0]` (which holds `FF D8`) from `*pos` in `*phase`
/// (`Header` or `Entropy`), updating both so that a later call with more data resumes
/// without rescanning. Cost: linear in the bytes not yet scanned; `FF` is found with memchr.
pub(crate) fn scan(data: &[u8], phase: &mut Phase, pos: &mut usize) -> Step {
    loop {
        match *phase {
            Phase::Header => {
                let p = *pos;
                let (Some(&b0), Some(&m)) = (data.get(p), data.get(p + 1)) else {
                    return Step::NeedMore;
                };
                if b0 != 0xFF {
                    return Step::Corrupt {
                        offset: p,
                        discard: 2,
                        what: "expected a marker after a segment",
                    };
                }
                match m {
                    // Fill byte before a marker.
                    0xFF => *pos = p + 1,
                    0xD9 => return Step::End(p + 2),
                    0xD8 | 0x00 => {
                        return Step::Corrupt {
                            offset: p,
                            discard: 2,
                            what: "invalid marker in the header",
                        }
                    }
                    // Standalone markers (TEM, RST0-7): no length.
                    0x01 | 0xD0..=0xD7 => *pos = p + 2,
                    _ => {
                        let Some(len) = data.get(p + 2..p + 4) else {
                            return Step::NeedMore;
                        };
                        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                        if len < 2 {
                            return Step::Corrupt {
                                offset: p,
                                discard: 2,
                                what: "segment length below 2",
                            };
                        }
                        *pos = p + 2 + len;
                        if m == 0xDA {
                            *phase = Phase::Entropy;
                        }
                    }
                }
            }
            Phase::Entropy => loop {
                let Some(off) = data.get(*pos..).and_then(|d| memchr::memchr(0xFF, d)) else {
                    // Everything up to the end holds no FF (or the SOS header itself is
                    // still incomplete and `pos` is past the end): resume from there.
                    *pos = (*pos).max(data.len());
                    return Step::NeedMore;
                };
                let i = *pos + off;
                let Some(&m) = data.get(i + 1) else {
                    *pos = i;
                    return Step::NeedMore;
                };
                match m {
                    // Stuffed zero, restart markers, TEM.
                    0x00 | 0xD0..=0xD7 | 0x01 => *pos = i + 2,
                    // Fill byte: look at the next FF.
                    0xFF => *pos = i + 1,
                    0xD9 => return Step::End(i + 2),
                    0xD8 => {
                        return Step::Corrupt {
                            offset: i,
                            discard: i,
                            what: "frame truncated: a new SOI inside the scan",
                        }
                    }
                    // Any other marker ends this scan: DHT/SOS between progressive scans,
                    // DNL, … Walk it as a segment.
                    _ => {
                        *pos = i;
                        *phase = Phase::Header;
                        break;
                    }
                }
            },
            Phase::Seek => unreachable!("scan() is only called inside a frame"),
        }
    }
}

/// Length of the complete JPEG at the start of `data`: from its SOI (`FF D8`, which must
/// be at offset 0) through the first real EOI (`FF D9`), found by walking the segments as
/// [`MjpegSplitter`](crate::source::mjpeg::MjpegSplitter) does. Bytes after the EOI (driver padding, appended trailers) are not
/// counted.
///
/// Returns `None` when `data` does not start with SOI, ends before the EOI, or its marker
/// structure is broken.
pub fn complete_len(data: &[u8]) -> Option<usize> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let (mut phase, mut pos) = (Phase::Header, 2);
    match scan(data, &mut phase, &mut pos) {
        Step::End(n) => Some(n),
        Step::NeedMore | Step::Corrupt { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_gray(w: u32, h: u32, quality: u8) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode(&px, w, h, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    #[test]
    fn reads_dimensions_and_quality_of_encoded_jpeg() {
        for q in [20u8, 50, 75, 90] {
            let jpg = encode_gray(33, 17, q);
            let h = header(&jpg).unwrap();
            assert_eq!((h.width, h.height, h.components), (33, 17, 1));
            let est = h.quality.unwrap();
            assert!(est.abs_diff(q) <= 2, "q={q} estimated {est}");
        }
    }

    #[test]
    fn rejects_non_jpeg_and_truncated_input() {
        assert_eq!(header(b"\x89PNG"), Err(JpegHeaderError::NoSoi));
        assert_eq!(header(&[0xFF, 0xD8]), Err(JpegHeaderError::NoSof));
        let jpg = encode_gray(8, 8, 80);
        // Cut inside the first segment.
        assert_eq!(header(&jpg[..6]), Err(JpegHeaderError::Truncated));
    }

    #[test]
    fn never_panics_on_any_prefix_or_bit_flip() {
        let jpg = encode_gray(16, 16, 80);
        for n in 0..jpg.len() {
            let _ = header(&jpg[..n]);
        }
        for i in 0..jpg.len().min(400) {
            let mut b = jpg.clone();
            b[i] ^= 0xA5;
            let _ = header(&b);
        }
    }
}
