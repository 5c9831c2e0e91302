//! JPEG in, JPEG out without leaving YCbCr: decode to planes, resize each plane, rotate each
//! plane, encode 4:2:0 from the planes. libjpeg-turbo then never converts to RGB and back,
//! and the resizes move one byte per sample instead of three (luma at full size, each chroma
//! plane at a quarter).
//!
//! Alignment: a chroma plane of a `w`×`h` image subsampled by `fx`×`fy` holds
//! `ceil(w/fx)`×`ceil(h/fy)` samples, so for odd sizes it covers a little more than the
//! image. Each resize therefore takes a sub-pixel crop of the source chroma plane: the part
//! that covers the image, scaled by how much the target chroma plane overhangs the target
//! luma. The chroma of every output pixel comes from the same place as its luma.

use crate::frame::{PixelFormat, RawImage};

use super::codec::{Output, Planes};
use super::transform;

/// Resizes the `crop_w`×`crop_h` top-left region of plane `src` to exactly `w`×`h`
/// ([`transform::resize_region`]); a copy when nothing would change.
fn resize_plane(src: &RawImage, crop_w: f64, crop_h: f64, w: u32, h: u32) -> RawImage {
    let (cw, ch) = (
        crop_w.clamp(1.0, src.width as f64),
        crop_h.clamp(1.0, src.height as f64),
    );
    if (src.width, src.height) == (w, h) && cw == w as f64 && ch == h as f64 {
        return src.clone();
    }
    transform::resize_region(src, crop_w, crop_h, w, h)
}

/// `planes` resized to `width`×`height` (the size before rotation), then rotated clockwise
/// by `rotate` degrees; luma alone when `gray`. Chroma becomes 4:2:0 whatever it was (a
/// 4:2:2 camera frame included); a grayscale source given colour gets neutral chroma (128).
pub fn prepare(planes: &Planes, width: u32, height: u32, rotate: u16, gray: bool) -> Output {
    let (sw, sh) = (planes.width as f64, planes.height as f64);
    let y = resize_plane(&planes.y, sw, sh, width, height);
    let uv = (!gray).then(|| {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        match &planes.chroma {
            Some(c) => {
                // The source chroma that covers the image, stretched by as much as the
                // target chroma overhangs the target luma (odd sizes).
                let crop_w = sw / c.fx as f64 * (2 * cw) as f64 / width as f64;
                let crop_h = sh / c.fy as f64 * (2 * ch) as f64 / height as f64;
                (
                    resize_plane(&c.u, crop_w, crop_h, cw, ch),
                    resize_plane(&c.v, crop_w, crop_h, cw, ch),
                )
            }
            None => {
                let neutral = || RawImage {
                    width: cw,
                    height: ch,
                    format: PixelFormat::Gray8,
                    data: vec![128; cw as usize * ch as usize],
                };
                (neutral(), neutral())
            }
        }
    });
    let turn = |p: RawImage| transform::rotate(p, rotate);
    Output {
        y: turn(y),
        uv: uv.map(|(u, v)| (turn(u), turn(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{Jpeg, Planes};
    use super::super::ssim::ssim;
    use super::*;

    /// Today's RGB route: decode to RGB (DCT-scaled), resize, encode 4:2:0.
    fn through_rgb(jpeg: &mut Jpeg, src: &[u8], w: u32, h: u32, q: u8) -> Vec<u8> {
        let rgb = jpeg.decode(src, PixelFormat::Rgb8, w, h).unwrap();
        jpeg.encode(&transform::resize_from(&rgb, w, h), q).unwrap()
    }

    /// The planar route.
    fn through_planes(jpeg: &mut Jpeg, src: &[u8], w: u32, h: u32, q: u8) -> Vec<u8> {
        let planes = jpeg
            .decode_planes(src, w, h)
            .unwrap()
            .expect("a planar decode");
        jpeg.encode_planes(prepare(&planes, w, h, 0, false).view(), q)
            .unwrap()
    }

    /// The luma of `data` at full size.
    fn luma(jpeg: &mut Jpeg, data: &[u8]) -> RawImage {
        let h = crate::jpeg::header(data).unwrap();
        jpeg.decode(data, PixelFormat::Gray8, h.width, h.height)
            .unwrap()
    }

    /// Mean luma SSIM of each route's output against the source's luma at the output size,
    /// over `sources` and sizes from full to odd halves, at q85 and q40: the planar route
    /// may not be worse than the RGB route by more than 0.001.
    fn planar_is_no_worse(sources: &[Vec<u8>], qualities: &[u8], halves: bool) {
        let mut jpeg = Jpeg::new().unwrap();
        let (mut rgb_sum, mut planar_sum, mut n) = (0.0, 0.0, 0.0);
        let (mut rgb_bytes, mut planar_bytes) = (0usize, 0usize);
        for src in sources {
            let reference = luma(&mut jpeg, src);
            let (w0, h0) = (reference.width, reference.height);
            let mut sizes = vec![(w0, h0), (w0 * 3 / 4, h0 * 3 / 4)];
            if halves {
                sizes.push((w0 / 2 + 1, h0 / 2 + 1));
            }
            for (w, h) in sizes {
                let target = transform::resize_from(&reference, w, h);
                for &q in qualities {
                    let rgb = through_rgb(&mut jpeg, src, w, h, q);
                    rgb_bytes += rgb.len();
                    let rgb = luma(&mut jpeg, &rgb);
                    let planar = through_planes(&mut jpeg, src, w, h, q);
                    planar_bytes += planar.len();
                    let planar = luma(&mut jpeg, &planar);
                    assert_eq!((planar.width, planar.height), (w, h));
                    rgb_sum += ssim(&rgb, &target).unwrap();
                    planar_sum += ssim(&planar, &target).unwrap();
                    n += 1.0;
                }
            }
        }
        let (rgb, planar) = (rgb_sum / n, planar_sum / n);
        eprintln!(
            "mean luma SSIM over {n} encodes: RGB route {rgb:.5} ({rgb_bytes} B), planar route \
             {planar:.5} ({planar_bytes} B)"
        );
        assert!(
            planar >= rgb - 0.001,
            "planar {planar:.5} < RGB {rgb:.5} - 0.001"
        );
    }

    #[test]
    fn planar_pixels_are_no_worse_on_the_footage() {
        let frames: Vec<Vec<u8>> = crate::source::mjpeg::tests::fixture_frames()
            .into_iter()
            .map(<[u8]>::to_vec)
            .step_by(3)
            .collect();
        planar_is_no_worse(&frames, &[85, 40], true);
    }

    /// 1920×1080 cut from the two real photographs (`scripts/testdata`), as 4:2:0 JPEGs at
    /// q95 such as a camera would send.
    #[test]
    fn planar_pixels_are_no_worse_at_1080p() {
        let mut jpeg = Jpeg::new().unwrap();
        let sources: Vec<Vec<u8>> = ["raindrops-1920x1200.jpg", "storm-1920x1280.jpg"]
            .iter()
            .map(|name| {
                let path = crate::testdata::file(name).unwrap_or_else(|e| panic!("{e}"));
                let photo = std::fs::read(path).unwrap();
                let rgb = jpeg.decode(&photo, PixelFormat::Rgb8, 1920, 1200).unwrap();
                let rows = 1920 * 3 * 1080;
                let cut = RawImage::new(1920, 1080, PixelFormat::Rgb8, rgb.data[..rows].to_vec())
                    .unwrap();
                jpeg.encode(&cut, 95).unwrap()
            })
            .collect();
        // Fewer sizes than on the footage: SSIM on 2 MP frames is slow in a debug build.
        planar_is_no_worse(&sources, &[85], false);
    }

    /// A YUYV camera frame (made from the footage) encoded from its planes against the route
    /// it replaced (YUYV to RGB, then RGB to JPEG): luma SSIM against the frame's own luma,
    /// at full size and at 3/4 and odd halves, q85 and q40, may not be worse by over 0.001.
    #[test]
    fn a_yuyv_frame_encodes_from_its_planes_no_worse_than_through_rgb() {
        let mut jpeg = Jpeg::new().unwrap();
        let (mut rgb_sum, mut planar_sum, mut n) = (0.0, 0.0, 0.0);
        for frame in crate::source::mjpeg::tests::fixture_frames()
            .into_iter()
            .step_by(4)
        {
            let rgb = jpeg.decode(frame, PixelFormat::Rgb8, 768, 576).unwrap();
            let yuyv = crate::testdata::yuyv_from_rgb(&rgb);
            let planes = Planes::from_yuyv(&yuyv, 768, 576, 768 * 2).unwrap();
            let reference = planes.luma();
            let via_rgb = planes.to_rgb8();
            for (w, h) in [(768, 576), (576, 432), (385, 289)] {
                let target = transform::resize_from(&reference, w, h);
                for q in [85, 40] {
                    let old = jpeg
                        .encode(&transform::resize_from(&via_rgb, w, h), q)
                        .unwrap();
                    let new = jpeg
                        .encode_planes(prepare(&planes, w, h, 0, false).view(), q)
                        .unwrap();
                    rgb_sum += ssim(&luma(&mut jpeg, &old), &target).unwrap();
                    planar_sum += ssim(&luma(&mut jpeg, &new), &target).unwrap();
                    n += 1.0;
                }
            }
        }
        let (rgb, planar) = (rgb_sum / n, planar_sum / n);
        eprintln!(
            "YUYV, mean luma SSIM over {n} encodes: through RGB {rgb:.5}, planar {planar:.5}"
        );
        assert!(n >= 12.0);
        assert!(
            planar >= rgb - 0.001,
            "planar {planar:.5} < RGB {rgb:.5} - 0.001"
        );
    }

    #[test]
    fn a_grayscale_source_gets_neutral_chroma_and_odd_sizes_encode() {
        let mut jpeg = Jpeg::new().unwrap();
        let gray = RawImage::new(
            37,
            23,
            PixelFormat::Gray8,
            (0..37 * 23).map(|i| (i % 251) as u8).collect(),
        )
        .unwrap();
        let src = jpeg.encode(&gray, 90).unwrap();
        let planes = jpeg.decode_planes(&src, 37, 23).unwrap().unwrap();
        assert!(planes.chroma.is_none());
        for (w, h, rotate) in [(37, 23, 0), (19, 11, 90), (1, 1, 0), (36, 22, 270)] {
            let out = prepare(&planes, w, h, rotate, false);
            let (u, _) = out.uv.as_ref().unwrap();
            assert!(u.data.iter().all(|&c| c == 128));
            let encoded = jpeg.encode_planes(out.view(), 80).unwrap();
            let hd = crate::jpeg::header(&encoded).unwrap();
            let (ow, oh) = if rotate % 180 == 90 { (h, w) } else { (w, h) };
            assert_eq!((hd.width, hd.height), (ow, oh));
        }
        // Planes of the wrong size are an error, not an abort.
        let mut out = prepare(&planes, 20, 20, 0, false);
        out.uv.as_mut().unwrap().0.width = 9;
        assert!(jpeg.encode_planes(out.view(), 80).is_err());
    }
}
