//! Fuzzes the JPEG header reader: [`edgecam::jpeg::header`] and [`JpegImage::parse`] on
//! arbitrary bytes. Neither may panic; an accepted header has non-zero dimensions and a
//! quality estimate in 1..=100; `JpegImage::parse` accepts exactly what `header` accepts,
//! with the same dimensions (it is documented as a wrapper around it).

#![no_main]

use bytes::Bytes;
use edgecam::frame::JpegImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = edgecam::jpeg::header(data);
    if let Ok(h) = &header {
        assert!(h.width > 0 && h.height > 0, "zero dimension in {h:?}");
        if let Some(q) = h.quality {
            assert!((1..=100).contains(&q), "quality {q} out of range");
        }
    }
    let image = JpegImage::parse(Bytes::copy_from_slice(data));
    match (&header, &image) {
        (Ok(h), Ok(img)) => {
            assert_eq!((h.width, h.height), (img.width, img.height));
            assert_eq!(&img.data[..], data);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("header {header:?} but JpegImage::parse {image:?}"),
    }
});
