//! Mean structural similarity (SSIM) of two 8-bit luma images, as Wang, Bovik, Sheikh and
//! Simoncelli define it in "Image Quality Assessment: From Error Visibility to Structural
//! Similarity", IEEE Transactions on Image Processing 13(4), 2004: local means, variances
//! and covariance under an 11×11 circular-symmetric Gaussian window (σ = 1.5), with
//! C1 = (0.01·255)² and C2 = (0.03·255)², averaged over every window position that lies
//! inside the image. 1.0 means identical.

use crate::frame::{PixelFormat, RawImage};

/// Side of the Gaussian window, pixels.
const WINDOW: usize = 11;
/// Its standard deviation, pixels.
const SIGMA: f64 = 1.5;
const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);

/// The normalised 1-D Gaussian; the 2-D window is its outer product.
fn kernel() -> [f64; WINDOW] {
    let mut k = [0.0; WINDOW];
    let c = (WINDOW / 2) as f64;
    for (i, v) in k.iter_mut().enumerate() {
        let d = i as f64 - c;
        *v = (-(d * d) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// `plane` (row-major, `w` wide) filtered by the window, "valid" positions only:
/// `(w - 10) × (h - 10)` values.
fn filter(plane: &[f64], w: usize, h: usize, k: &[f64; WINDOW]) -> Vec<f64> {
    let (ow, oh) = (w - WINDOW + 1, h - WINDOW + 1);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        for x in 0..ow {
            rows[y * ow + x] = k.iter().zip(&row[x..x + WINDOW]).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..WINDOW).map(|i| k[i] * rows[(y + i) * ow + x]).sum();
        }
    }
    out
}

/// Mean SSIM of `a` and `b` (Gray8, the same size, each side at least 11 pixels); `None`
/// otherwise.
pub fn ssim(a: &RawImage, b: &RawImage) -> Option<f64> {
    if a.format != PixelFormat::Gray8
        || b.format != PixelFormat::Gray8
        || (a.width, a.height) != (b.width, b.height)
        || (a.width as usize) < WINDOW
        || (a.height as usize) < WINDOW
    {
        return None;
    }
    let (w, h) = (a.width as usize, a.height as usize);
    let k = kernel();
    let x: Vec<f64> = a.data.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.data.iter().map(|&v| v as f64).collect();
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
    let (mx, my) = (filter(&x, w, h, &k), filter(&y, w, h, &k));
    let (sxx, syy, sxy) = (
        filter(&xx, w, h, &k),
        filter(&yy, w, h, &k),
        filter(&xy, w, h, &k),
    );
    let n = mx.len();
    let total: f64 = (0..n)
        .map(|i| {
            let (ux, uy) = (mx[i], my[i]);
            let vx = sxx[i] - ux * ux;
            let vy = syy[i] - uy * uy;
            let cxy = sxy[i] - ux * uy;
            ((2.0 * ux * uy + C1) * (2.0 * cxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))
        })
        .sum();
    Some(total / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> RawImage {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y));
        RawImage::new(w, h, PixelFormat::Gray8, data.collect()).unwrap()
    }

    #[test]
    fn identical_images_score_one_and_damage_lowers_the_score() {
        let a = gray(64, 48, |x, y| ((x * 7 + y * 13) % 256) as u8);
        assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-9);
        let noisy = gray(64, 48, |x, y| {
            let v = (x * 7 + y * 13) % 256;
            (v as i32 + if (x + y) % 2 == 0 { 20 } else { -20 }).clamp(0, 255) as u8
        });
        let flat = gray(64, 48, |_, _| 128);
        let s_noisy = ssim(&a, &noisy).unwrap();
        let s_flat = ssim(&a, &flat).unwrap();
        assert!(s_noisy < 0.99 && s_flat < s_noisy, "{s_noisy} {s_flat}");
        // A uniform shift of brightness leaves structure: high, but below 1.
        let brighter = gray(64, 48, |x, y| {
            (((x * 7 + y * 13) % 256) as u8).saturating_add(10)
        });
        let s = ssim(&a, &brighter).unwrap();
        assert!(s > s_noisy && s < 1.0, "{s}");
        assert_eq!(ssim(&a, &gray(10, 48, |_, _| 0)), None);
        assert_eq!(ssim(&gray(10, 10, |_, _| 0), &gray(10, 10, |_, _| 0)), None);
    }

    #[test]
    fn the_window_is_a_normalised_gaussian() {
        let k = kernel();
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(k[5] > k[4] && k[4] > k[0] && (k[0] - k[10]).abs() < 1e-15);
    }
}
