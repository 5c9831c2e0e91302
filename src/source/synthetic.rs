//! A moving test pattern: no hardware needed, deterministic, and detailed enough that JPEG
//! compression has real work to do.
//!
//! Layout, top to bottom: eight 75% colour bars (55% of the height); a luma ramp (left
//! half) next to a zone plate of fine concentric rings (right half, 15%); a textured band
//! (noise over a colour gradient and a checkerboard) that scrolls left by 2 px per frame
//! (30%). Over it: a bouncing box filled with a gradient whose colour cycles, a frame
//! counter in digits (top left) and the counter's low 16 bits as black/white squares (top
//! right). The static part is rendered once; a frame costs one copy plus the overlays.

use super::{Pacer, Source, SourceError};
use crate::config::SourceConfig;
use crate::frame::{Captured, Image, PixelFormat, RawImage};

/// 75% colour bars: white, yellow, cyan, green, magenta, red, blue, black.
const BARS: [[u8; 3]; 8] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
    [16, 16, 16],
];

/// 3x5 bitmap digits, one row per byte, bit 2 = left column.
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// An RGB8 canvas: `data` is row-major, `w*h*3` bytes.
struct Canvas<'a> {
    w: usize,
    h: usize,
    data: &'a mut [u8],
}

impl Canvas<'_> {
    /// Fills the rectangle clipped to the canvas.
    fn fill_rect(&mut self, x: usize, y: usize, rw: usize, rh: usize, rgb: [u8; 3]) {
        let (x1, y1) = ((x + rw).min(self.w), (y + rh).min(self.h));
        if x >= x1 || y >= y1 {
            return;
        }
        for row in y..y1 {
            let line = &mut self.data[(row * self.w + x) * 3..(row * self.w + x1) * 3];
            for px in line.chunks_exact_mut(3) {
                px.copy_from_slice(&rgb);
            }
        }
    }
}

/// Cheap deterministic per-pixel hash in 0..=255.
fn hash(x: usize, y: usize) -> u8 {
    let mut v = (x as u32).wrapping_mul(0x9E37_79B1) ^ (y as u32).wrapping_mul(0x85EB_CA77);
    v ^= v >> 15;
    v = v.wrapping_mul(0x2C1B_3C6D);
    v ^= v >> 12;
    (v >> 24) as u8
}

/// Row where the ramp/zone-plate band starts and where the scrolling band starts.
fn bands(h: usize) -> (usize, usize) {
    (h * 55 / 100, h * 70 / 100)
}

/// The static part of the pattern, RGB8 `w*h*3` bytes.
fn render_background(w: usize, h: usize) -> Vec<u8> {
    let mut data = vec![0u8; w * h * 3];
    let (b1, b2) = bands(h);
    for y in 0..h {
        let row = &mut data[y * w * 3..(y + 1) * w * 3];
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let rgb = if y < b1 {
                BARS[x * 8 / w]
            } else if y < b2 {
                if x < w / 2 {
                    let v = (x * 255 / (w / 2).max(1)) as u8;
                    [v, v, v]
                } else {
                    // Zone plate: rings whose frequency grows with the radius.
                    let cx = (x - w / 2) as f32 - (w / 4) as f32;
                    let cy = (y - b1) as f32 - ((b2 - b1) / 2) as f32;
                    let k = std::f32::consts::PI / (w as f32).max(1.0) * 2.0;
                    let v = 128.0 + 127.0 * ((cx * cx + cy * cy) * k).cos();
                    let v = v as u8;
                    [v, v, v]
                }
            } else {
                // Gradient (dark blue to orange) + checkerboard + noise.
                let t = (x * 255 / w.max(1)) as i32;
                let check = if ((x / 8) + (y / 8)) % 2 == 0 {
                    24
                } else {
                    -24
                };
                let n = hash(x, y) as i32 / 4 - 32;
                let c = |base: i32| (base + check + n).clamp(0, 255) as u8;
                [c(t), c(60 + t / 3), c(200 - t * 3 / 4)]
            };
            px.copy_from_slice(&rgb);
        }
    }
    data
}

/// Position along a back-and-forth path: `t` mapped onto `0..=range` as a triangle wave.
fn bounce(t: u64, range: usize) -> usize {
    if range == 0 {
        return 0;
    }
    let period = 2 * range as u64;
    let p = t % period;
    (if p <= range as u64 { p } else { period - p }) as usize
}

/// Renders frame `n` of a `w` x `h` pattern over `background` (from
/// [`render_background`]): RGB8, row-major, `w*h*3` bytes. Frame `n` always looks the
/// same; consecutive frames differ (box, scroll, counter).
fn render_frame(w: usize, h: usize, background: &[u8], n: u64) -> Vec<u8> {
    let mut data = background.to_vec();
    let mut c = Canvas {
        w,
        h,
        data: &mut data,
    };

    // Scroll the textured band left by 2 px per frame (rotate each row).
    let (_, b2) = bands(h);
    if w > 1 {
        let shift = (n as usize * 2) % w * 3;
        for y in b2..h {
            let src = &background[y * w * 3..(y + 1) * w * 3];
            let dst = &mut c.data[y * w * 3..(y + 1) * w * 3];
            dst[..src.len() - shift].copy_from_slice(&src[shift..]);
            dst[src.len() - shift..].copy_from_slice(&src[..shift]);
        }
    }

    // Bouncing box with a gradient fill whose hue cycles with `n`.
    let side = (w.min(h) / 5).max(1);
    let bx = bounce(n * (w / 97).max(1) as u64, w - side);
    let by = bounce(n * (h / 61).max(1) as u64, h - side);
    let border = (side / 24).max(1);
    c.fill_rect(bx, by, side, side, [255, 255, 255]);
    let inner = side.saturating_sub(2 * border);
    let phase = (n * 4 % 256) as u8;
    for dy in 0..inner {
        let row = by + border + dy;
        let start = (row * w + bx + border) * 3;
        let line = &mut c.data[start..start + inner * 3];
        let g = (dy * 255 / inner) as u8;
        for (dx, px) in line.chunks_exact_mut(3).enumerate() {
            let r = (dx * 255 / inner) as u8;
            px.copy_from_slice(&[r.wrapping_add(phase), g, phase.wrapping_sub(r / 2)]);
        }
    }

    // Frame counter in digits, top left, white on black.
    let scale = (h / 90).max(1);
    let digits = n.to_string();
    let pad = scale;
    c.fill_rect(
        0,
        0,
        pad * 2 + digits.len() * 4 * scale,
        pad * 2 + 5 * scale,
        [0, 0, 0],
    );
    for (i, d) in digits.bytes().enumerate() {
        let glyph = DIGITS[(d - b'0') as usize];
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..3 {
                if bits & (0b100 >> gx) != 0 {
                    let x = pad + (i * 4 + gx) * scale;
                    c.fill_rect(x, pad + gy * scale, scale, scale, [255, 255, 255]);
                }
            }
        }
    }

    // Low 16 bits of the counter as squares, top right (most significant bit first).
    let cell = (w / 64).max(1);
    let x0 = w.saturating_sub(16 * cell);
    for bit in 0..16 {
        let on = (n >> (15 - bit)) & 1 == 1;
        let v = if on { 255 } else { 0 };
        c.fill_rect(x0 + bit * cell, 0, cell, cell, [v, v, v]);
    }
    data
}

/// A moving RGB8 test pattern of `source.width` x `source.height` pixels at `source.fps`
/// (`0` = as fast as it renders), ending after `source.max_frames` frames (`0` = never).
///
/// Frames are [`Image::Raw`], RGB8, row-major, `width*height*3` bytes. Frame `n` is the
/// same on every run; `captured_at` is when it was rendered. Never
/// fails.
#[derive(Debug)]
pub struct SyntheticSource {
    width: u32,
    height: u32,
    background: Vec<u8>,
    n: u64,
    max_frames: u64,
    fps: f64,
    pacer: Pacer,
}

impl SyntheticSource {
    /// A pattern of `cfg.width` × `cfg.height` at `cfg.fps`, `cfg.max_frames` long. Renders
    /// the static background (`width*height*3` bytes) once, here.
    pub fn new(cfg: &SourceConfig) -> Self {
        let (width, height) = (cfg.width.get(), cfg.height.get());
        SyntheticSource {
            width,
            height,
            background: render_background(width as usize, height as usize),
            n: 0,
            max_frames: cfg.max_frames,
            fps: cfg.fps,
            pacer: Pacer::new(cfg.fps),
        }
    }
}

impl Source for SyntheticSource {
    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        if self.max_frames != 0 && self.n >= self.max_frames {
            return Ok(None);
        }
        self.pacer.wait();
        let data = render_frame(
            self.width as usize,
            self.height as usize,
            &self.background,
            self.n,
        );
        self.n += 1;
        let raw = RawImage::new(self.width, self.height, PixelFormat::Rgb8, data)
            .expect("pattern is width*height*3 bytes");
        Ok(Some(Captured::now(Image::Raw(raw))))
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "synthetic {}x{} @ {} fps",
            self.width, self.height, self.fps
        );
        if self.max_frames != 0 {
            s += &format!(", {} frames", self.max_frames);
        }
        s
    }

    fn set_fps(&mut self, fps: f64) -> bool {
        self.pacer = Pacer::new(fps);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(w: u32, h: u32, fps: f64, max_frames: u64) -> SourceConfig {
        toml::from_str(&format!(
            "kind = \"synthetic\"\nwidth = {w}\nheight = {h}\nfps = {fps:?}\nmax_frames = {max_frames}"
        ))
        .unwrap()
    }

    fn raw(c: Captured) -> RawImage {
        match c.image {
            Image::Raw(r) => r,
            Image::Jpeg(_) | Image::Yuv(_) => panic!("synthetic frames are raw"),
        }
    }

    #[test]
    fn frames_have_the_configured_size_and_stop_after_max_frames() {
        let mut src = SyntheticSource::new(&cfg(320, 240, 0.0, 3));
        for _ in 0..3 {
            let r = raw(src.next_frame().unwrap().unwrap());
            assert_eq!((r.width, r.height, r.format), (320, 240, PixelFormat::Rgb8));
            assert_eq!(r.data.len(), 320 * 240 * 3);
        }
        assert!(src.next_frame().unwrap().is_none());
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn consecutive_frames_differ_and_are_deterministic() {
        let mut a = SyntheticSource::new(&cfg(160, 120, 0.0, 0));
        let mut b = SyntheticSource::new(&cfg(160, 120, 0.0, 0));
        let f: Vec<RawImage> = (0..5)
            .map(|_| raw(a.next_frame().unwrap().unwrap()))
            .collect();
        for w in f.windows(2) {
            let differing = w[0]
                .data
                .iter()
                .zip(&w[1].data)
                .filter(|(x, y)| x != y)
                .count();
            assert!(differing > 100, "only {differing} bytes differ");
        }
        assert_eq!(raw(b.next_frame().unwrap().unwrap()).data, f[0].data);
    }

    #[test]
    fn pattern_has_colour_bars_and_detail() {
        let r = raw(SyntheticSource::new(&cfg(640, 480, 0.0, 1))
            .next_frame()
            .unwrap()
            .unwrap());
        let px = |x: usize, y: usize| &r.data[(y * 640 + x) * 3..(y * 640 + x) * 3 + 3];
        // Yellow bar (second of eight) below the counter, away from the box at frame 0.
        assert_eq!(px(120, 200), &[191, 191, 0]);
        assert_eq!(px(600, 200), &[16, 16, 16]);
        // The pattern compresses, but not to nothing: a JPEG at q=85 is well above a flat
        // image's size.
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 85)
            .encode(&r.data, 640, 480, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(jpg.len() > 40_000, "{} bytes", jpg.len());
        assert!(jpg.len() < 640 * 480 * 3 / 4, "{} bytes", jpg.len());
    }

    #[test]
    fn tiny_and_odd_sizes_do_not_panic() {
        for (w, h) in [(1, 1), (2, 1), (1, 7), (3, 3), (17, 9), (97, 61)] {
            let mut src = SyntheticSource::new(&cfg(w, h, 0.0, 0));
            for _ in 0..300 {
                let r = raw(src.next_frame().unwrap().unwrap());
                assert_eq!(r.data.len(), (w * h * 3) as usize);
            }
        }
    }

    #[test]
    fn box_stays_inside_the_frame() {
        for t in 0..1000 {
            assert!(bounce(t, 37) <= 37);
        }
        assert_eq!(bounce(0, 10), 0);
        assert_eq!(bounce(10, 10), 10);
        assert_eq!(bounce(13, 10), 7);
        assert_eq!(bounce(5, 0), 0);
    }

    /// `cargo test --release --lib synthetic_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn synthetic_speed_1280x720() {
        let mut src = SyntheticSource::new(&cfg(1280, 720, 0.0, 0));
        let t = std::time::Instant::now();
        for _ in 0..500 {
            src.next_frame().unwrap().unwrap();
        }
        let fps = 500.0 / t.elapsed().as_secs_f64();
        println!("{fps:.0} frames/s");
        assert!(fps > 200.0, "{fps:.0} frames/s");
    }
}
