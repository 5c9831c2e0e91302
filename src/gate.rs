//! `[gate]`: publish only when the scene changes.
//!
//! Motion is measured as `motion` and Frigate do, on a small luma thumbnail: a JPEG is
//! decoded straight to gray at 1/8 scale (libjpeg-turbo's DCT scaling: a 768×576 frame costs a
//! 96×72 decode), raw pixels are box-averaged to the same size. Each thumbnail is compared
//! with a running average of the earlier ones; a pixel differing by more than
//! `pixel_threshold` counts as changed, and the frame shows motion when the changed pixels
//! are more than `changed_area_percent` of the thumbnail. The average then moves towards the
//! frame by `background_weight_percent`, so slow lighting changes and sensor noise are
//! absorbed instead of triggering.
//!
//! Around motion the gate also passes `pre_roll_frames` frames before it (held back until
//! then) and `post_roll_frames` after it; with no motion it passes one heartbeat frame every
//! `heartbeat_secs` (so a consumer knows the camera is alive). Every frame it suppresses is
//! counted as `discarded{reason="unchanged"}`, never silently lost.
//!
//! [`Gate`] is pure: it takes each frame's changed fraction and capture time and says which
//! frames go on; [`Motion`] and [`luma_thumbnail`] compute the fraction.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::config::GateConfig;
use crate::encode::codec::{CodecError, Jpeg};
use crate::frame::{Image, PixelFormat, RawImage};

/// A thumbnail is the frame scaled down by this much per side (JPEG: DCT scaling 1/8).
pub const THUMB_SCALE: u32 = 8;

/// A luma thumbnail of `image`: 1/8 of its size per side (at least 1×1), one byte per pixel.
///
/// Errors: [`CodecError`] for a JPEG libjpeg-turbo cannot decode.
pub fn luma_thumbnail(image: &Image, jpeg: &mut Jpeg) -> Result<RawImage, CodecError> {
    match image {
        Image::Jpeg(j) => {
            let (w, h) = (
                (j.width / THUMB_SCALE).max(1),
                (j.height / THUMB_SCALE).max(1),
            );
            jpeg.decode(&j.data, PixelFormat::Gray8, w, h)
        }
        Image::Raw(r) => Ok(box_luma(r, THUMB_SCALE)),
        Image::Yuv(p) if (p.y.width, p.y.height) == (p.width, p.height) => {
            Ok(box_luma(&p.y, THUMB_SCALE))
        }
        Image::Yuv(p) => Ok(box_luma(&p.luma(), THUMB_SCALE)),
    }
}

/// `img` box-averaged by `scale` per side to one luma byte per pixel (BT.601 weights).
fn box_luma(img: &RawImage, scale: u32) -> RawImage {
    let (w, h) = ((img.width / scale).max(1), (img.height / scale).max(1));
    let ch = img.format.channels();
    let mut out = Vec::with_capacity((w * h) as usize);
    for ty in 0..h {
        for tx in 0..w {
            let (x0, y0) = (tx * img.width / w, ty * img.height / h);
            let (x1, y1) = (
                ((tx + 1) * img.width / w).max(x0 + 1),
                ((ty + 1) * img.height / h).max(y0 + 1),
            );
            let mut sum = 0u64;
            for y in y0..y1 {
                let row = (y * img.width) as usize * ch;
                for x in x0..x1 {
                    let p = row + x as usize * ch;
                    let luma = if ch == 1 {
                        img.data[p] as u64 * 1000
                    } else {
                        299 * img.data[p] as u64
                            + 587 * img.data[p + 1] as u64
                            + 114 * img.data[p + 2] as u64
                    };
                    sum += luma;
                }
            }
            let n = ((x1 - x0) * (y1 - y0)) as u64 * 1000;
            out.push(((sum + n / 2) / n) as u8);
        }
    }
    RawImage::new(w, h, PixelFormat::Gray8, out).expect("w * h bytes")
}

/// The running background and the changed-pixel count of each new thumbnail.
#[derive(Debug, Clone)]
pub struct Motion {
    /// Background luma, 8.8 fixed point, one per thumbnail pixel.
    average: Vec<u16>,
    size: (u32, u32),
    pixel_threshold: u8,
    /// Weight of a new thumbnail in the average, percent.
    weight: u16,
}

impl Motion {
    /// A detector with no background yet.
    pub fn new(pixel_threshold: u8, background_weight_percent: u8) -> Self {
        Motion {
            average: Vec::new(),
            size: (0, 0),
            pixel_threshold,
            weight: background_weight_percent as u16,
        }
    }

    /// The fraction (0–1) of `thumb`'s pixels that differ from the background by more than
    /// the pixel threshold; then blends `thumb` into the background. The first thumbnail
    /// (or one of a new size) becomes the background and counts as fully changed.
    pub fn changed(&mut self, thumb: &RawImage) -> f64 {
        let luma = &thumb.data;
        if self.size != (thumb.width, thumb.height) || self.average.len() != luma.len() {
            self.size = (thumb.width, thumb.height);
            self.average = luma.iter().map(|&v| (v as u16) << 8).collect();
            return 1.0;
        }
        let threshold = (self.pixel_threshold as u32) << 8;
        let mut changed = 0usize;
        for (a, &v) in self.average.iter_mut().zip(luma) {
            let v = (v as u32) << 8;
            let cur = *a as u32;
            if v.abs_diff(cur) > threshold {
                changed += 1;
            }
            // a += (v - a) * weight / 100, in fixed point.
            let next = (cur as i64 + (v as i64 - cur as i64) * self.weight as i64 / 100) as u32;
            *a = next.min(u16::MAX as u32) as u16;
        }
        changed as f64 / luma.len().max(1) as f64
    }
}

/// What the gate did with the frames it was given so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateCounts {
    /// Frames passed because they showed motion.
    pub motion: u64,
    /// Frames passed as pre- or post-roll around motion.
    pub roll: u64,
    /// Frames passed as heartbeats.
    pub heartbeat: u64,
    /// Frames suppressed (`unchanged`).
    pub suppressed: u64,
}

/// The gate's decisions, pure: frames in with their changed fraction and capture time,
/// frames to publish out (in capture order), suppressed ones counted.
#[derive(Debug)]
pub struct Gate<F> {
    area: f64,
    heartbeat: Option<Duration>,
    pre_roll: usize,
    post_roll: u32,
    /// Frames held back as pre-roll, oldest first, with their capture time.
    held: VecDeque<(F, SystemTime)>,
    post_left: u32,
    last_passed: Option<SystemTime>,
    counts: GateCounts,
}

impl<F> Gate<F> {
    /// A gate with `cfg`'s thresholds and rolls.
    pub fn new(cfg: &GateConfig) -> Self {
        Gate {
            area: cfg.changed_area_percent / 100.0,
            heartbeat: (cfg.heartbeat_secs > 0)
                .then(|| Duration::from_secs(cfg.heartbeat_secs as u64)),
            pre_roll: cfg.pre_roll_frames as usize,
            post_roll: cfg.post_roll_frames,
            held: VecDeque::new(),
            post_left: 0,
            last_passed: None,
            counts: GateCounts::default(),
        }
    }

    /// What was passed and suppressed so far.
    pub fn counts(&self) -> GateCounts {
        self.counts
    }

    /// Takes `frame`, captured at `at`, whose thumbnail changed by `changed` (0–1); returns
    /// the frames to publish now, oldest first (held pre-roll frames, then this one), and
    /// how many frames were suppressed by this call (a pre-roll frame pushed out, or this
    /// one).
    pub fn push(&mut self, frame: F, changed: f64, at: SystemTime) -> (Vec<F>, u64) {
        let motion = changed > self.area;
        let heartbeat_due = self.heartbeat.is_some_and(|every| {
            self.last_passed
                .is_none_or(|last| at.duration_since(last).unwrap_or_default() >= every)
        });
        if motion {
            self.post_left = self.post_roll;
            let mut out: Vec<F> = Vec::with_capacity(self.held.len() + 1);
            self.counts.roll += self.held.len() as u64;
            out.extend(self.held.drain(..).map(|(f, _)| f));
            out.push(frame);
            self.counts.motion += 1;
            self.last_passed = Some(at);
            return (out, 0);
        }
        if self.post_left > 0 {
            self.post_left -= 1;
            self.counts.roll += 1;
            self.last_passed = Some(at);
            return (vec![frame], 0);
        }
        if heartbeat_due {
            // A heartbeat stands alone: frames held before it are older and unchanged.
            let dropped = self.held.len() as u64;
            self.held.clear();
            self.counts.suppressed += dropped;
            self.counts.heartbeat += 1;
            self.last_passed = Some(at);
            return (vec![frame], dropped);
        }
        if self.pre_roll == 0 {
            self.counts.suppressed += 1;
            return (Vec::new(), 1);
        }
        self.held.push_back((frame, at));
        if self.held.len() > self.pre_roll {
            self.held.pop_front();
            self.counts.suppressed += 1;
            return (Vec::new(), 1);
        }
        (Vec::new(), 0)
    }

    /// The frames still held as pre-roll when the input ends: suppressed, counted; returns
    /// how many.
    pub fn finish(&mut self) -> u64 {
        let n = self.held.len() as u64;
        self.held.clear();
        self.counts.suppressed += n;
        n
    }
}

/// The gate as the encoder thread runs it: thumbnails, the background, the decisions.
pub struct FrameGate {
    gate: Gate<crate::frame::Frame>,
    motion: Motion,
    jpeg: Jpeg,
}

impl FrameGate {
    /// A gate for `cfg`, decoding thumbnails within `limits`.
    ///
    /// Errors: [`CodecError`] when libjpeg-turbo cannot be initialised.
    pub fn new(cfg: &GateConfig, limits: crate::limits::Limits) -> Result<Self, CodecError> {
        Ok(FrameGate {
            gate: Gate::new(cfg),
            motion: Motion::new(cfg.pixel_threshold, cfg.background_weight_percent),
            jpeg: Jpeg::with_limits(limits)?,
        })
    }

    /// The frames to encode now for `frame` (none, it, or held pre-roll frames and it);
    /// what is suppressed is counted in `metrics` as `unchanged`. A frame whose thumbnail
    /// cannot be decoded goes on (the encoder reports it).
    pub fn pass(
        &mut self,
        frame: crate::frame::Frame,
        metrics: &crate::metrics::Metrics,
    ) -> Vec<crate::frame::Frame> {
        let changed = match luma_thumbnail(&frame.image, &mut self.jpeg) {
            Ok(t) => self.motion.changed(&t),
            Err(_) => 1.0,
        };
        let at = frame.captured_at;
        let (out, suppressed) = self.gate.push(frame, changed, at);
        metrics.drop_frames(crate::metrics::DropReason::Unchanged, suppressed);
        out
    }

    /// Counts the frames still held as pre-roll as `unchanged` (the input ended).
    pub fn finish(&mut self, metrics: &crate::metrics::Metrics) {
        metrics.drop_frames(crate::metrics::DropReason::Unchanged, self.gate.finish());
    }

    /// What the gate passed and suppressed so far.
    pub fn counts(&self) -> GateCounts {
        self.gate.counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GateConfig {
        GateConfig {
            enabled: true,
            pixel_threshold: 25,
            changed_area_percent: 1.0,
            background_weight_percent: 10,
            heartbeat_secs: 10,
            pre_roll_frames: 2,
            post_roll_frames: 3,
        }
    }

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn motion_passes_with_pre_and_post_roll_and_heartbeats_keep_a_still_scene_alive() {
        let mut g = Gate::new(&cfg());
        let mut passed = Vec::new();
        let mut suppressed = 0;
        // Frame i at i*100 ms; motion at frames 20 and 21 only.
        for i in 0..200u64 {
            let changed = if i == 20 || i == 21 { 0.5 } else { 0.0 };
            let (out, s) = g.push(i, changed, t(i * 100));
            passed.extend(out);
            suppressed += s;
        }
        suppressed += g.finish();
        // Frame 0 is the first heartbeat; 18, 19 pre-roll; 20, 21 motion; 22-24 post-roll;
        // then a heartbeat 10 s after the last frame passed (24 at 2.4 s: frame 124), and 224
        // would be next.
        assert_eq!(passed, vec![0, 18, 19, 20, 21, 22, 23, 24, 124]);
        assert_eq!(suppressed, 200 - passed.len() as u64);
        let c = g.counts();
        assert_eq!(
            c,
            GateCounts {
                motion: 2,
                roll: 5,
                heartbeat: 2,
                suppressed
            }
        );
    }

    #[test]
    fn without_heartbeat_or_roll_only_motion_passes() {
        let mut c = cfg();
        c.heartbeat_secs = 0;
        c.pre_roll_frames = 0;
        c.post_roll_frames = 0;
        let mut g = Gate::new(&c);
        let passed: Vec<u64> = (0..50u64)
            .flat_map(|i| g.push(i, if i % 10 == 5 { 0.2 } else { 0.001 }, t(i)).0)
            .collect();
        assert_eq!(passed, vec![5, 15, 25, 35, 45]);
        assert_eq!(g.counts().suppressed, 45);
    }

    fn gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> RawImage {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y));
        RawImage::new(w, h, PixelFormat::Gray8, data.collect()).unwrap()
    }

    #[test]
    fn noise_and_slow_lighting_are_absorbed_a_moving_block_is_not() {
        let mut m = Motion::new(25, 10);
        let mut x = 0x2545_f491u32;
        let mut noise = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 17) as i32 - 8
        };
        let scene = |x: u32, y: u32| ((x * 3 + y * 5) % 200) as i32 + 20;
        assert_eq!(m.changed(&gray(96, 72, |x, y| scene(x, y) as u8)), 1.0);
        // 100 frames of ±8 sensor noise while the light rises by 30 levels.
        for i in 0..100 {
            let lift = i * 30 / 100;
            let frame: Vec<u8> = (0..72)
                .flat_map(|y| (0..96).map(move |x| (x, y)))
                .map(|(x, y)| (scene(x, y) + lift + noise()).clamp(0, 255) as u8)
                .collect();
            let f = RawImage::new(96, 72, PixelFormat::Gray8, frame).unwrap();
            assert!(m.changed(&f) < 0.01, "frame {i}");
        }
        // A 16×16 bright block appears: 3.7 % of the thumbnail.
        let c = m.changed(&gray(96, 72, |x, y| {
            if (40..56).contains(&x) && (30..46).contains(&y) {
                255
            } else {
                (scene(x, y) + 30) as u8
            }
        }));
        assert!(c > 0.03, "block changed {c}");
    }

    #[test]
    fn raw_frames_are_box_averaged_to_luma() {
        let rgb = RawImage::new(
            16,
            8,
            PixelFormat::Rgb8,
            (0..16 * 8).flat_map(|_| [255u8, 0, 0]).collect(),
        )
        .unwrap();
        let t = box_luma(&rgb, 8);
        assert_eq!((t.width, t.height), (2, 1));
        // Pure red: 0.299 * 255.
        assert_eq!(t.data, vec![76, 76]);
    }
}
