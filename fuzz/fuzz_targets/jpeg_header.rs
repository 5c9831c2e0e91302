//! Fuzzes the header readers every image passes where it enters edgecam, on arbitrary bytes:
//! [`edgecam::jpeg::header`] with [`JpegImage::parse`], and the structural check
//! [`edgecam::inspect::image`] (JPEG and PNG) with [`JpegImage::checked`].
//!
//! None may panic. An accepted JPEG header has non-zero dimensions and a quality estimate in
//! 1..=100, and `JpegImage::parse` accepts exactly what `header` accepts (it is a wrapper).
//! An inspected image has non-zero dimensions within the [`Limits`] it was checked against,
//! its `len` covers a whole image (a JPEG through its EOI, as `complete_len` measures it; a
//! PNG through its IEND chunk), and `JpegImage::checked` accepts exactly the JPEGs that
//! `inspect::jpeg` accepts, keeping `len` bytes.

#![no_main]

use bytes::Bytes;
use edgecam::frame::JpegImage;
use edgecam::inspect::{self, Format};
use edgecam::limits::Limits;
use libfuzzer_sys::fuzz_target;

/// Small limits, so that fuzzed headers reach the "too large" refusals too.
const LIMITS: Limits = Limits {
    max_pixels: 1 << 20,
    max_side_px: 4096,
    max_frame_bytes: 1 << 20,
};

/// The last 12 bytes of every PNG: the empty IEND chunk with its CRC.
const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

fuzz_target!(|data: &[u8]| {
    let header = edgecam::jpeg::header(data);
    if let Ok(h) = &header {
        assert!(h.width > 0 && h.height > 0, "zero dimension in {h:?}");
        if let Some(q) = h.quality {
            assert!((1..=100).contains(&q), "quality {q} out of range");
        }
    }
    let bytes = Bytes::copy_from_slice(data);
    let image = JpegImage::parse(bytes.clone());
    match (&header, &image) {
        (Ok(h), Ok(img)) => {
            assert_eq!((h.width, h.height), (img.width, img.height));
            assert_eq!(&img.data[..], data);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("header {header:?} but JpegImage::parse {image:?}"),
    }

    let inspected = inspect::image(data, &LIMITS);
    if let Ok(i) = &inspected {
        assert!(i.width > 0 && i.height > 0, "zero dimension in {i:?}");
        assert!(
            LIMITS.check_dimensions(i.width, i.height).is_ok(),
            "{i:?} over {LIMITS}"
        );
        assert!(
            i.len <= data.len(),
            "{i:?} longer than the {} input bytes",
            data.len()
        );
        let whole = &data[..i.len];
        match i.format {
            Format::Jpeg => {
                assert_eq!(edgecam::jpeg::complete_len(whole), Some(i.len));
                let h = header.as_ref().expect("inspected JPEG without a header");
                assert_eq!(
                    (h.width, h.height, h.quality),
                    (i.width, i.height, i.quality)
                );
            }
            Format::Png => assert!(whole.ends_with(&IEND), "PNG does not end with IEND"),
        }
    }
    let checked = JpegImage::checked(bytes, &LIMITS);
    match (inspect::jpeg(data, &LIMITS), &checked) {
        (Ok(i), Ok(img)) => {
            assert_eq!(
                (i.width, i.height, i.len),
                (img.width, img.height, img.data.len())
            );
        }
        (Err(a), Err(b)) => assert_eq!(&a, b),
        (a, b) => panic!("inspect::jpeg {a:?} but JpegImage::checked {b:?}"),
    }
});
