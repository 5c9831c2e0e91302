//! Pixel transforms before encoding: rotate, fit inside a maximum size, grayscale, and the
//! resize used by the ladder's downscale rungs.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, Rgb};

use crate::frame::{PixelFormat, RawImage};

/// Converts RGB8 to Gray8 with ITU-R BT.601 luma weights (integer, rounded). Gray8 is
/// returned unchanged.
pub fn grayscale(img: RawImage) -> RawImage {
    if img.format == PixelFormat::Gray8 {
        return img;
    }
    grayscale_from(&img)
}

/// [`grayscale`] from borrowed pixels, without copying the RGB8 source first (a Gray8 source
/// is copied).
pub fn grayscale_from(img: &RawImage) -> RawImage {
    if img.format == PixelFormat::Gray8 {
        return img.clone();
    }
    let data: Vec<u8> = img
        .data
        .chunks_exact(3)
        .map(|p| {
            ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 32768) >> 16) as u8
        })
        .collect();
    RawImage {
        width: img.width,
        height: img.height,
        format: PixelFormat::Gray8,
        data,
    }
}

macro_rules! with_buffer {
    ($img:expr, |$buf:ident| $body:expr) => {{
        let img = $img;
        let (w, h) = (img.width, img.height);
        match img.format {
            PixelFormat::Rgb8 => {
                let $buf = ImageBuffer::<Rgb<u8>, Vec<u8>>::from_raw(w, h, img.data)
                    .expect("RawImage length invariant");
                let out = $body;
                RawImage {
                    width: out.width(),
                    height: out.height(),
                    format: PixelFormat::Rgb8,
                    data: out.into_raw(),
                }
            }
            PixelFormat::Gray8 => {
                let $buf = ImageBuffer::<Luma<u8>, Vec<u8>>::from_raw(w, h, img.data)
                    .expect("RawImage length invariant");
                let out = $body;
                RawImage {
                    width: out.width(),
                    height: out.height(),
                    format: PixelFormat::Gray8,
                    data: out.into_raw(),
                }
            }
        }
    }};
}

/// Rotates clockwise by `degrees` (0, 90, 180 or 270; anything else is treated as 0).
/// 90 and 270 swap width and height.
pub fn rotate(img: RawImage, degrees: u16) -> RawImage {
    match degrees {
        90 => with_buffer!(img, |b| imageops::rotate90(&b)),
        180 => with_buffer!(img, |b| {
            let mut b = b;
            imageops::rotate180_in_place(&mut b);
            b
        }),
        270 => with_buffer!(img, |b| imageops::rotate270(&b)),
        _ => img,
    }
}

/// Largest size with the aspect ratio of `width`×`height` that fits inside
/// `max_width`×`max_height` (`None` = no limit). Never upscales; each side ≥ 1.
pub fn fit_within(
    width: u32,
    height: u32,
    max_width: Option<u32>,
    max_height: Option<u32>,
) -> (u32, u32) {
    let sw = max_width.map_or(1.0, |m| (m as f64 / width as f64).min(1.0));
    let sh = max_height.map_or(1.0, |m| (m as f64 / height as f64).min(1.0));
    let s = sw.min(sh);
    if s >= 1.0 {
        return (width, height);
    }
    (
        ((width as f64 * s).round() as u32).clamp(1, width),
        ((height as f64 * s).round() as u32).clamp(1, height),
    )
}

/// Resizes to exactly `width`×`height` (each ≥ 1) with a bilinear (triangle) convolution,
/// using `fast_image_resize`'s SIMD kernels; returns `img` unchanged when it already has
/// that size. Chosen over `image::imageops::resize` by measurement (see the README).
pub fn resize(img: RawImage, width: u32, height: u32) -> RawImage {
    if (img.width, img.height) == (width, height) {
        return img;
    }
    resize_from(&img, width, height)
}

/// [`resize`] from borrowed pixels: always a new image (a copy when the size is the same),
/// so the source can be kept (the encoder keeps one decode per frame for all its rungs).
pub fn resize_from(img: &RawImage, width: u32, height: u32) -> RawImage {
    if (img.width, img.height) == (width, height) {
        return img.clone();
    }
    resize_region(img, img.width as f64, img.height as f64, width, height)
}

/// The top-left `crop_w`×`crop_h` region of `img` (fractional: a sub-pixel crop, clamped to
/// the image, at least one pixel) resized to exactly `width`×`height` with the bilinear
/// convolution of [`resize`]. The planar JPEG route uses the crop to keep chroma aligned.
pub fn resize_region(
    img: &RawImage,
    crop_w: f64,
    crop_h: f64,
    width: u32,
    height: u32,
) -> RawImage {
    use fast_image_resize as fr;
    let pixel_type = match img.format {
        PixelFormat::Gray8 => fr::PixelType::U8,
        PixelFormat::Rgb8 => fr::PixelType::U8x3,
    };
    let (w, h, format) = (img.width, img.height, img.format);
    let src = fr::images::ImageRef::new(w, h, &img.data, pixel_type)
        .expect("RawImage length invariant; u8 pixels need no alignment");
    let mut dst = fr::images::Image::new(width, height, pixel_type);
    let mut options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    let (crop_w, crop_h) = (crop_w.clamp(1.0, w as f64), crop_h.clamp(1.0, h as f64));
    if (crop_w, crop_h) != (w as f64, h as f64) {
        options = options.crop(0.0, 0.0, crop_w, crop_h);
    }
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("same pixel type on both sides; the crop lies inside the image");
    RawImage {
        width,
        height,
        format,
        data: dst.into_vec(),
    }
}

/// [`resize`] with the `image` crate's triangle filter: the reference it was measured
/// against, kept for the benchmark and the agreement test.
pub fn resize_with_image_crate(img: RawImage, width: u32, height: u32) -> RawImage {
    if (img.width, img.height) == (width, height) {
        return img;
    }
    with_buffer!(img, |b| imageops::resize(
        &b,
        width,
        height,
        FilterType::Triangle
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(w: u32, h: u32) -> RawImage {
        let data = (0..w * h * 3).map(|i| (i % 256) as u8).collect();
        RawImage::new(w, h, PixelFormat::Rgb8, data).unwrap()
    }

    #[test]
    fn rotate_moves_pixels_clockwise() {
        // 2x1 image: red | blue. Rotated 90° clockwise: 1x2, red on top.
        let img = RawImage::new(2, 1, PixelFormat::Rgb8, vec![255, 0, 0, 0, 0, 255]).unwrap();
        let r = rotate(img.clone(), 90);
        assert_eq!((r.width, r.height), (1, 2));
        assert_eq!(r.data, vec![255, 0, 0, 0, 0, 255]);
        let r = rotate(img.clone(), 180);
        assert_eq!(r.data, vec![0, 0, 255, 255, 0, 0]);
        let r = rotate(img.clone(), 270);
        assert_eq!((r.width, r.height), (1, 2));
        assert_eq!(r.data, vec![0, 0, 255, 255, 0, 0]);
        assert_eq!(rotate(img.clone(), 0), img);
    }

    #[test]
    fn grayscale_uses_bt601_weights() {
        let img = RawImage::new(
            3,
            1,
            PixelFormat::Rgb8,
            vec![255, 0, 0, 0, 255, 0, 255, 255, 255],
        )
        .unwrap();
        let g = grayscale(img);
        assert_eq!(g.format, PixelFormat::Gray8);
        assert_eq!(g.data, vec![76, 150, 255]);
    }

    #[test]
    fn fit_within_keeps_aspect_and_never_upscales() {
        assert_eq!(fit_within(1920, 1080, Some(1280), None), (1280, 720));
        assert_eq!(fit_within(1920, 1080, Some(1280), Some(500)), (889, 500));
        assert_eq!(fit_within(640, 480, Some(1280), Some(720)), (640, 480));
        assert_eq!(fit_within(640, 480, None, None), (640, 480));
    }

    #[test]
    fn resize_gives_requested_size() {
        let r = resize(rgb(64, 48), 16, 12);
        assert_eq!((r.width, r.height, r.data.len()), (16, 12, 16 * 12 * 3));
        let g = grayscale(rgb(7, 5));
        let r = resize(g, 3, 2);
        assert_eq!(
            (r.width, r.height, r.data.len(), r.format),
            (3, 2, 6, PixelFormat::Gray8)
        );
    }

    #[test]
    fn resize_agrees_with_the_image_crate() {
        // A smooth gradient: both bilinear filters must give nearly the same pixels.
        let (w, h) = (96u32, 64u32);
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x * 2) as u8, (y * 3) as u8, 128]))
            .collect();
        let img = RawImage::new(w, h, PixelFormat::Rgb8, data).unwrap();
        let a = resize(img.clone(), 40, 30);
        let b = resize_with_image_crate(img, 40, 30);
        let max_diff = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(max_diff <= 3, "max channel difference {max_diff}");
    }
}
