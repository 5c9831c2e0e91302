//! `edgecam-bench`: how fast edgecam turns real frames into budget-fitted records.
//!
//! [`run`] measures, on real footage, and returns a plain-text table (it prints nothing):
//!
//! 1. **JPEG encoders** on the same RGB8 pixels at quality 85: edgecam's
//!    [`codec::Jpeg`](crate::encode::codec::Jpeg) (libjpeg-turbo, 4:2:0), the `image` crate's
//!    pure-Rust `JpegEncoder` (which always writes 4:4:4), and libjpeg-turbo called directly
//!    through `turbojpeg::compress` at 4:2:0 and at 4:4:4 (the fair match for `image`).
//!    On 1920×1080 centre crops of two photographs, and on decoded 768×576 `vtest` frames.
//! 2. **Budget fitting** with [`Encoder`]: `vtest` frames passed through, `vtest` frames
//!    re-encoded under budgets they do not fit as they are, 1080p raw frames, and a 17.9 MP
//!    photograph that only fits after downscaling.
//! 3. **Passthrough path** up to the producer: MJPEG splitter, header parse, [`Frame`],
//!    [`Encoder`] passthrough and [`FrameRecord`], in process.
//! 4. **End to end** into librdkafka's in-process mock cluster with
//!    [`pipeline::run`](crate::pipeline::run).
//!
//! Timings are wall-clock: `ms/frame` and `frames/s` are the median over
//! [`BenchOptions::iterations`] repetitions; counts, sizes and qualities come from the first
//! repetition (every repetition starts from a fresh [`Encoder`], so they are deterministic).
//! Missing input files turn their rows into `skipped (file missing)`; a failure in one row is
//! written into that row and the others still run.

pub mod spool;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::config::{EncodeConfig, TransformConfig};
use crate::encode::codec::{self, CodecError};
use crate::encode::{Encoded, Encoder, Quality};
use crate::frame::{Frame, Image, JpegImage, PixelFormat, RawImage};
use crate::record::FrameRecord;
use crate::source::mjpeg::{MjpegSplitter, READ_CHUNK_BYTES};

/// The MJPEG stream looked for in [`BenchOptions::data_dir`]: 300 frames, 768×576.
pub const VTEST_FILE: &str = "vtest-768x576-10fps.mjpeg";
/// 1920×1280 photograph, cropped to 1920×1080.
pub const STORM_FILE: &str = "storm-1920x1280.jpg";
/// 1920×1200 photograph, cropped to 1920×1080.
pub const RAINDROPS_FILE: &str = "raindrops-1920x1200.jpg";
/// 5640×3172 (17.9 MP) photograph, 16.4 MB: too big for a 1 MB budget as it is.
pub const ELEPHANTS_FILE: &str = "elephants-5640x3172.jpg";

/// JPEG quality of the encoder comparison (rows 1x).
pub const COMPARE_QUALITY: u8 = 85;

/// Device id of every record the bench builds (its length is part of the record overhead).
const DEVICE: &str = "bench-cam";

/// Frames of the 1080p budget rows (the two crops, alternating).
const HD_FRAMES: usize = 30;
/// Frames of the 17.9 MP row.
const ELEPHANT_FRAMES: usize = 10;

/// What [`run`] measures and on which files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Folder with the real footage: [`VTEST_FILE`], [`STORM_FILE`], [`RAINDROPS_FILE`],
    /// [`ELEPHANTS_FILE`]. Default [`crate::testdata::dir`] (`target/testdata`, made by
    /// `scripts/testdata`, or `$EDGECAM_TESTDATA`).
    pub data_dir: PathBuf,
    /// MJPEG file used for the 768×576 rows when `data_dir` has no [`VTEST_FILE`]
    /// (default `tests/fixtures/vtest-10.mjpeg`, 10 frames). The other rows are then skipped.
    pub fallback: PathBuf,
    /// Timed repetitions of every measurement (0 counts as 1); the table shows the median.
    /// Default 5.
    pub iterations: u32,
    /// The "default" budget, bytes per whole Kafka record (`encode.max_message_bytes`,
    /// 4096 – 1,000,000,000). Default 1,000,000.
    pub max_message_bytes: u32,
    /// Run the end-to-end rows (4x): in-process mock Kafka cluster, 1–2 s per
    /// repetition (300 + 600 frames). Default `true`.
    pub end_to_end: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            data_dir: crate::testdata::dir(),
            fallback: PathBuf::from("tests/fixtures/vtest-10.mjpeg"),
            iterations: 5,
            max_message_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES,
            end_to_end: true,
        }
    }
}

/// Why the bench could not run at all. Failures of single rows (a corrupt input file, the
/// mock cluster not starting) are written into the row instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// None of the input files exists: neither the data folder's files nor the fallback.
    #[error("no input: {data_dir} holds none of the bench files and {fallback} is missing")]
    NoInput {
        /// [`BenchOptions::data_dir`].
        data_dir: PathBuf,
        /// [`BenchOptions::fallback`].
        fallback: PathBuf,
    },
    /// [`BenchOptions::max_message_bytes`] is not a valid `encode.max_message_bytes`.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// libjpeg-turbo could not be initialised.
    #[error("encoder: {0}")]
    Codec(#[from] CodecError),
}

/// Runs every measurement and returns the report: a header, one table row per measurement
/// (`row`, `what`, `frames`, `enc/frame` = encoder calls per frame, `ms/frame`,
/// `mean B` = mean record (rows 2–4) or payload (row 1) bytes, `frames/s`, `notes`), and
/// the targets met or missed. Prints nothing itself (the pipeline's `tracing` events of the
/// end-to-end rows go wherever the caller's subscriber sends them). Takes seconds with the
/// fallback fixture and no end-to-end rows, 1.5–3 minutes with all data and 5 iterations on
/// 2 cores (the 17.9 MP row is most of it).
///
/// Synchronous; the end-to-end rows run their own tokio runtime on a separate thread, so it
/// may also be called from inside a runtime (from `spawn_blocking` preferably: it blocks).
///
/// Errors: [`BenchError`] when no input exists at all, the budget is invalid, or
/// libjpeg-turbo cannot start.
pub fn run(opts: &BenchOptions) -> Result<String, BenchError> {
    let (header, rows) = collect(opts)?;
    Ok(render(&header, &rows))
}

/// One line of the table.
#[derive(Debug, Clone)]
struct Row {
    id: &'static str,
    what: String,
    result: Result<Stats, String>,
}

/// The figures of a row that ran.
#[derive(Debug, Clone, Default)]
struct Stats {
    frames: u64,
    encodes_per_frame: Option<f64>,
    ms_per_frame: f64,
    mean_bytes: Option<f64>,
    frames_per_s: f64,
    notes: String,
}

impl Row {
    fn ok(id: &'static str, what: impl Into<String>, stats: Stats) -> Self {
        Row {
            id,
            what: what.into(),
            result: Ok(stats),
        }
    }

    fn failed(id: &'static str, what: impl Into<String>, why: impl Into<String>) -> Self {
        Row {
            id,
            what: what.into(),
            result: Err(why.into()),
        }
    }

    fn stats(&self) -> Option<&Stats> {
        self.result.as_ref().ok()
    }
}

const MISSING: &str = "skipped (file missing)";

/// Reads `path`; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("error: reading {}: {e}", path.display())),
    }
}

/// An input file: present, missing, or unreadable (the message says why).
type Input<T> = Result<Option<T>, String>;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u64);
    for x in v {
        sum += x;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

fn encode_config(max_message_bytes: u32) -> Result<EncodeConfig, crate::config::ConfigError> {
    let toml = format!(
        "[device]\nid = \"{DEVICE}\"\n[source]\nkind = \"synthetic\"\n[encode]\n\
         max_message_bytes = {max_message_bytes}\n[kafka]\nbootstrap_servers = \"localhost:9092\"\n"
    );
    Ok(crate::config::load_str(&toml, std::iter::empty())?.encode)
}

/// Splits an MJPEG stream into its frames (broken frames are left out).
fn split_mjpeg(data: &[u8]) -> Vec<Bytes> {
    let mut s = MjpegSplitter::new();
    s.push(data);
    let mut frames = Vec::new();
    while let Some(r) = s.next_frame() {
        if let Ok(f) = r {
            frames.push(f);
        }
    }
    frames
}

/// Decodes a JPEG at full size, RGB8.
fn decode_full(jpeg: &mut codec::Jpeg, data: &[u8]) -> Result<RawImage, String> {
    let j = JpegImage::parse(Bytes::copy_from_slice(data)).map_err(|e| e.to_string())?;
    jpeg.decode(&j.data, PixelFormat::Rgb8, j.width, j.height)
        .map_err(|e| e.to_string())
}

/// The centre `width`×`height` of an RGB8 image.
fn center_crop(img: &RawImage, width: u32, height: u32) -> Result<RawImage, String> {
    if img.width < width || img.height < height {
        return Err(format!(
            "{}x{} is smaller than {width}x{height}",
            img.width, img.height
        ));
    }
    let ch = img.format.channels();
    let x0 = ((img.width - width) / 2) as usize;
    let y0 = ((img.height - height) / 2) as usize;
    let stride = img.width as usize * ch;
    let mut data = Vec::with_capacity(width as usize * height as usize * ch);
    for y in y0..y0 + height as usize {
        let start = y * stride + x0 * ch;
        data.extend_from_slice(&img.data[start..start + width as usize * ch]);
    }
    RawImage::new(width, height, img.format, data).ok_or_else(|| "empty crop".to_string())
}

/// Header facts for the report.
#[derive(Debug, Clone)]
struct Header {
    lines: Vec<String>,
}

/// Runs everything; the rows in table order.
fn collect(opts: &BenchOptions) -> Result<(Header, Vec<Row>), BenchError> {
    let iterations = opts.iterations.max(1);
    let default_cfg = encode_config(opts.max_message_bytes)?;
    let mut jpeg = codec::Jpeg::new()?;

    // Inputs.
    let data_vtest = opts.data_dir.join(VTEST_FILE);
    let (vtest_path, vtest_bytes): (Option<PathBuf>, Input<Vec<u8>>) =
        match read_optional(&data_vtest) {
            Ok(Some(b)) => (Some(data_vtest), Ok(Some(b))),
            Ok(None) => match read_optional(&opts.fallback) {
                Ok(Some(b)) => (Some(opts.fallback.clone()), Ok(Some(b))),
                Ok(None) => (None, Ok(None)),
                Err(e) => (Some(opts.fallback.clone()), Err(e)),
            },
            Err(e) => (Some(data_vtest), Err(e)),
        };
    let vtest: Input<Vec<Bytes>> = match &vtest_bytes {
        Ok(Some(b)) => {
            let frames = split_mjpeg(b);
            if frames.is_empty() {
                Err("error: no JPEG frame in the MJPEG file".to_string())
            } else {
                Ok(Some(frames))
            }
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    };
    let hd: Input<Vec<RawImage>> = (|| {
        let mut crops = Vec::new();
        for name in [STORM_FILE, RAINDROPS_FILE] {
            let Some(b) = read_optional(&opts.data_dir.join(name))? else {
                return Ok(None);
            };
            let full = decode_full(&mut jpeg, &b).map_err(|e| format!("error: {name}: {e}"))?;
            crops.push(center_crop(&full, 1920, 1080).map_err(|e| format!("error: {name}: {e}"))?);
        }
        Ok(Some(crops))
    })();
    let elephants: Input<Image> = match read_optional(&opts.data_dir.join(ELEPHANTS_FILE)) {
        Ok(Some(b)) => JpegImage::parse(Bytes::from(b))
            .map(|j| Some(Image::Jpeg(j)))
            .map_err(|e| format!("error: {ELEPHANTS_FILE}: {e}")),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    if matches!(vtest, Ok(None)) && matches!(hd, Ok(None)) && matches!(elephants, Ok(None)) {
        return Err(BenchError::NoInput {
            data_dir: opts.data_dir.clone(),
            fallback: opts.fallback.clone(),
        });
    }
    // Two decoded vtest frames (first and middle) for the 768x576 encoder comparison.
    let sd: Input<Vec<RawImage>> = match &vtest {
        Ok(Some(frames)) => {
            let picks = [0, frames.len() / 2];
            picks
                .iter()
                .map(|&i| decode_full(&mut jpeg, &frames[i]).map_err(|e| format!("error: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    };
    let vtest_images: Input<Vec<Image>> = match &vtest {
        Ok(Some(frames)) => frames
            .iter()
            .map(|f| {
                JpegImage::parse(f.clone())
                    .map(Image::Jpeg)
                    .map_err(|e| format!("error: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    };

    let mut header = Header { lines: Vec::new() };
    header.lines.push(format!(
        "edgecam-bench: {} repetition(s) per row; ms/frame and frames/s are medians, counts and sizes from the first repetition",
        iterations
    ));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .map(|l| format!(", load average at start {l}"))
        .unwrap_or_default();
    header.lines.push(format!(
        "machine: {cpus} CPU(s){load}; build: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    ));
    match (&vtest_path, &vtest) {
        (Some(p), Ok(Some(f))) => header.lines.push(format!(
            "768x576 input: {} ({} frames, mean {} B)",
            p.display(),
            f.len(),
            mean(f.iter().map(|b| b.len() as f64))
                .unwrap_or(0.0)
                .round()
        )),
        _ => header
            .lines
            .push("768x576 input: none (rows skipped)".to_string()),
    }
    header.lines.push(format!(
        "data folder: {}{}",
        opts.data_dir.display(),
        if opts.data_dir.is_dir() {
            ""
        } else {
            " (missing)"
        }
    ));

    let mut rows = Vec::new();

    // 1. Encoder comparison.
    rows.extend(compare_rows(
        ["1a", "1b", "1c", "1d"],
        "1920x1080",
        &hd,
        iterations,
    ));
    rows.extend(compare_rows(
        ["1e", "1f", "1g", "1h"],
        "768x576",
        &sd,
        iterations,
    ));

    // 2. Budget fitting.
    let cfg_at = |b: u32| -> Result<EncodeConfig, String> {
        encode_config(b).map_err(|e| format!("error: {e}"))
    };
    let budget = opts.max_message_bytes;
    let vtest_fit = |id, what: String, cfg: Result<EncodeConfig, String>| match (&vtest_images, cfg)
    {
        (Ok(Some(images)), Ok(cfg)) => {
            let order: Vec<usize> = (0..images.len()).collect();
            fit_row(id, what, images, &order, &cfg, iterations)
        }
        (Ok(None), _) => Row::failed(id, what, MISSING),
        (Err(e), _) => Row::failed(id, what, e.clone()),
        (_, Err(e)) => Row::failed(id, what, e),
    };
    rows.push(vtest_fit(
        "2a",
        format!("fit vtest 768x576 @ {budget} B (passthrough)"),
        Ok(default_cfg.clone()),
    ));
    rows.push(vtest_fit(
        "2b",
        "fit vtest 768x576 @ 30000 B (re-encode)".into(),
        cfg_at(30_000),
    ));
    rows.push(vtest_fit(
        "2c",
        "fit vtest 768x576 @ 20000 B (re-encode)".into(),
        cfg_at(20_000),
    ));
    // The re-encode of the planar-YUV issue: decode + JPEG q85 at the same size.
    let mut q85 = default_cfg.clone();
    q85.passthrough = false;
    q85.quality_max = crate::config::Quality::new(85).expect("in range");
    for (id, planar, route) in [("2g", true, "YUV planes"), ("2g'", false, "RGB")] {
        let what = format!("re-encode vtest 768x576 q85, {route}");
        rows.push(match &vtest_images {
            Ok(Some(images)) => {
                let order: Vec<usize> = (0..images.len()).collect();
                fit_row_via(id, what, images, &order, &q85, iterations, planar)
            }
            Ok(None) => Row::failed(id, what, MISSING),
            Err(e) => Row::failed(id, what, e.clone()),
        });
    }
    // A YUYV camera: the footage as packed YUYV (BT.601 limited range), converted once at
    // the source to planes and encoded from them, against the RGB route it replaced (the
    // same frames as RGB8; that route also paid a YUYV-to-RGB conversion at the source).
    let yuyv: Input<Vec<crate::frame::Planes>> = match &vtest_images {
        Ok(Some(images)) => images
            .iter()
            .map(|i| match i {
                Image::Jpeg(j) => {
                    let rgb = jpeg
                        .decode(&j.data, PixelFormat::Rgb8, j.width, j.height)
                        .map_err(|e| format!("error: {e}"))?;
                    let (w, h) = (rgb.width as usize, rgb.height as usize);
                    crate::frame::Planes::from_yuyv(
                        &crate::testdata::yuyv_from_rgb(&rgb),
                        w,
                        h,
                        w.div_ceil(2) * 4,
                    )
                    .ok_or_else(|| "error: YUYV conversion".to_string())
                }
                _ => Err("error: the footage is not JPEG".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    };
    for (id, route) in [("2i", "YUYV planes"), ("2i'", "RGB")] {
        let what = format!("re-encode YUYV camera 768x576 q85, {route}");
        rows.push(match &yuyv {
            Ok(Some(planes)) => {
                let images: Vec<Image> = planes
                    .iter()
                    .map(|p| match route {
                        "RGB" => Image::Raw(p.to_rgb8()),
                        _ => Image::Yuv(p.clone()),
                    })
                    .collect();
                let order: Vec<usize> = (0..images.len()).collect();
                fit_row_via(id, what, &images, &order, &q85, iterations, true)
            }
            Ok(None) => Row::failed(id, what, MISSING),
            Err(e) => Row::failed(id, what, e.clone()),
        });
    }
    let hd_images: Input<Vec<Image>> = match &hd {
        Ok(Some(c)) => Ok(Some(c.iter().cloned().map(Image::Raw).collect())),
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    };
    for (id, b) in [("2d", budget), ("2e", 200_000)] {
        let what = format!("fit 1080p raw RGB8 x{HD_FRAMES} @ {b} B");
        rows.push(match (&hd_images, cfg_at(b)) {
            (Ok(Some(images)), Ok(cfg)) => {
                let order: Vec<usize> = (0..HD_FRAMES).map(|i| i % images.len()).collect();
                fit_row(id, what, images, &order, &cfg, iterations)
            }
            (Ok(None), _) => Row::failed(id, what, MISSING),
            (Err(e), _) => Row::failed(id, what, e.clone()),
            (_, Err(e)) => Row::failed(id, what, e),
        });
    }
    // 1080p JPEGs as a camera sends them (the photographs' crops at q95, 4:2:0), fitted
    // under 150 KB.

    let hd_jpegs: Result<Option<Vec<Image>>, String> = match &hd {
        Ok(Some(crops)) => crops
            .iter()
            .map(|c| {
                let data = jpeg.encode(c, 95).map_err(|e| format!("error: {e}"))?;
                JpegImage::parse(Bytes::from(data))
                    .map(Image::Jpeg)
                    .map_err(|e| format!("error: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    };
    for (id, planar, route) in [("2h", true, "YUV planes"), ("2h'", false, "RGB")] {
        let what = format!("fit 1080p JPEG x{HD_FRAMES} @ 150000 B, {route}");
        rows.push(match (&hd_jpegs, cfg_at(150_000)) {
            (Ok(Some(images)), Ok(cfg)) => {
                let order: Vec<usize> = (0..HD_FRAMES).map(|i| i % images.len()).collect();
                fit_row_via(id, what, images, &order, &cfg, iterations, planar)
            }
            (Ok(None), _) => Row::failed(id, what, MISSING),
            (Err(e), _) => Row::failed(id, what, e.clone()),
            (_, Err(e)) => Row::failed(id, what, e),
        });
    }
    let what = format!("fit 17.9 MP JPEG x{ELEPHANT_FRAMES} @ {budget} B");
    rows.push(match &elephants {
        Ok(Some(img)) => {
            let order = vec![0; ELEPHANT_FRAMES];
            fit_row(
                "2f",
                what,
                std::slice::from_ref(img),
                &order,
                &default_cfg,
                iterations,
            )
        }
        Ok(None) => Row::failed("2f", what, MISSING),
        Err(e) => Row::failed("2f", what, e.clone()),
    });

    // 3. Passthrough path up to the producer.
    let what = "mjpeg split+parse+Frame+passthrough+FrameRecord";
    rows.push(match (&vtest, &vtest_bytes) {
        (Ok(Some(_)), Ok(Some(bytes))) => {
            passthrough_row("3", what, bytes, &default_cfg, iterations)
        }
        (Err(e), _) => Row::failed("3", what, e.clone()),
        _ => Row::failed("3", what, MISSING),
    });

    // 4. End to end.
    let e2e_ids = ["4a", "4b", "4c"];
    let e2e_what = [
        "e2e 300 frames -> mock cluster".to_string(),
        "e2e 600 frames -> mock cluster".to_string(),
        "e2e rate after the first delivery".to_string(),
    ];
    match (&vtest_path, &vtest, opts.end_to_end) {
        (_, _, false) => {
            for (id, what) in e2e_ids.into_iter().zip(e2e_what) {
                rows.push(Row::failed(id, what, "skipped (end_to_end off)"));
            }
        }
        (Some(path), Ok(Some(_)), true) => {
            rows.extend(e2e_rows(e2e_ids, e2e_what, path, budget, iterations));
        }
        (_, Err(e), true) => {
            for (id, what) in e2e_ids.into_iter().zip(e2e_what) {
                rows.push(Row::failed(id, what, e.clone()));
            }
        }
        _ => {
            for (id, what) in e2e_ids.into_iter().zip(e2e_what) {
                rows.push(Row::failed(id, what, MISSING));
            }
        }
    }
    Ok((header, rows))
}

/// Which JPEG encoder a comparison row times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Edgecam,
    ImageCrate,
    Turbo420,
    Turbo444,
}

impl Contender {
    const ALL: [Contender; 4] = [
        Contender::Edgecam,
        Contender::ImageCrate,
        Contender::Turbo420,
        Contender::Turbo444,
    ];

    fn label(self) -> &'static str {
        match self {
            Contender::Edgecam => "edgecam codec::Jpeg (turbo, 4:2:0)",
            Contender::ImageCrate => "image 0.25 JpegEncoder (4:4:4 only)",
            Contender::Turbo420 => "raw turbojpeg::compress 4:2:0",
            Contender::Turbo444 => "raw turbojpeg::compress 4:4:4",
        }
    }

    /// Encodes `img` (RGB8) at [`COMPARE_QUALITY`]; returns the output size.
    fn encode(self, jpeg: &mut codec::Jpeg, img: &RawImage) -> Result<usize, String> {
        let tj = |subsamp| {
            let image = turbojpeg::Image {
                pixels: img.data.as_slice(),
                width: img.width as usize,
                pitch: img.width as usize * 3,
                height: img.height as usize,
                format: turbojpeg::PixelFormat::RGB,
            };
            turbojpeg::compress(image, COMPARE_QUALITY as i32, subsamp)
                .map(|b| b.len())
                .map_err(|e| e.to_string())
        };
        match self {
            Contender::Edgecam => jpeg
                .encode(img, COMPARE_QUALITY)
                .map(|v| v.len())
                .map_err(|e| e.to_string()),
            Contender::ImageCrate => {
                use image::ImageEncoder;
                let mut out = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, COMPARE_QUALITY)
                    .write_image(
                        &img.data,
                        img.width,
                        img.height,
                        image::ExtendedColorType::Rgb8,
                    )
                    .map_err(|e| e.to_string())?;
                Ok(out.len())
            }
            Contender::Turbo420 => tj(turbojpeg::Subsamp::Sub2x2),
            Contender::Turbo444 => tj(turbojpeg::Subsamp::None),
        }
    }
}

/// Rows 1x: the four encoders on `frames` (RGB8, same size). Every repetition runs each
/// encoder on each frame `rounds` times, the encoders interleaved in a rotating order so
/// that load from other processes spreads over all of them.
fn compare_rows(
    ids: [&'static str; 4],
    size: &str,
    frames: &Input<Vec<RawImage>>,
    iterations: u32,
) -> Vec<Row> {
    let what = |c: Contender| format!("{size} q{COMPARE_QUALITY} {}", c.label());
    let frames = match frames {
        Ok(Some(f)) if !f.is_empty() => f,
        other => {
            let why = match other {
                Err(e) => e.clone(),
                _ => MISSING.to_string(),
            };
            return ids
                .iter()
                .zip(Contender::ALL)
                .map(|(&id, c)| Row::failed(id, what(c), why.clone()))
                .collect();
        }
    };
    let mut jpeg = match codec::Jpeg::new() {
        Ok(j) => j,
        Err(e) => {
            return ids
                .iter()
                .zip(Contender::ALL)
                .map(|(&id, c)| Row::failed(id, what(c), format!("error: {e}")))
                .collect()
        }
    };
    let pixels = frames[0].width as usize * frames[0].height as usize;
    let rounds = (10_000_000 / pixels.max(1)).clamp(1, 20);
    let per_rep = (rounds * frames.len()) as u64;
    let mut ms: [Vec<f64>; 4] = Default::default();
    let mut bytes: [Vec<f64>; 4] = Default::default();
    let mut errors: [Option<String>; 4] = Default::default();
    // One warm-up encode each (allocations, lazy tables), not timed.
    for (k, c) in Contender::ALL.into_iter().enumerate() {
        match c.encode(&mut jpeg, &frames[0]) {
            Ok(_) => {}
            Err(e) => errors[k] = Some(e),
        }
    }
    for rep in 0..iterations as usize {
        for j in 0..4 {
            let k = (rep + j) % 4;
            if errors[k].is_some() {
                continue;
            }
            let c = Contender::ALL[k];
            let t = Instant::now();
            for _ in 0..rounds {
                for f in frames {
                    match c.encode(&mut jpeg, f) {
                        Ok(n) if rep == 0 => bytes[k].push(n as f64),
                        Ok(_) => {}
                        Err(e) => errors[k] = Some(e),
                    }
                }
            }
            ms[k].push(t.elapsed().as_secs_f64() * 1000.0 / per_rep as f64);
        }
    }
    let med: Vec<f64> = ms.iter().map(|v| median(v.clone())).collect();
    let sizes: Vec<f64> = bytes
        .iter()
        .map(|v| mean(v.iter().copied()).unwrap_or(0.0))
        .collect();
    let raw420 = med[2];
    let raw444 = med[3];
    Contender::ALL
        .into_iter()
        .enumerate()
        .map(|(k, c)| {
            if let Some(e) = &errors[k] {
                return Row::failed(ids[k], what(c), format!("error: {e}"));
            }
            let ratio = |base: f64| {
                if base > 0.0 {
                    med[k] / base
                } else {
                    0.0
                }
            };
            let notes = match c {
                Contender::Edgecam => {
                    format!("{:.2}x raw 4:2:0 time (target <= 1.25)", ratio(raw420))
                }
                Contender::ImageCrate => format!(
                    "{:.2}x raw 4:2:0 time, {:.2}x raw 4:4:4 time; {:.2}x raw 4:4:4 bytes",
                    ratio(raw420),
                    ratio(raw444),
                    if sizes[3] > 0.0 {
                        sizes[k] / sizes[3]
                    } else {
                        0.0
                    }
                ),
                Contender::Turbo420 => "baseline; new Compressor per call".to_string(),
                Contender::Turbo444 => format!("{:.2}x raw 4:2:0 time", ratio(raw420)),
            };
            Row::ok(
                ids[k],
                what(c),
                Stats {
                    frames: per_rep,
                    encodes_per_frame: Some(1.0),
                    ms_per_frame: med[k],
                    mean_bytes: Some(sizes[k]),
                    frames_per_s: if med[k] > 0.0 { 1000.0 / med[k] } else { 0.0 },
                    notes,
                },
            )
        })
        .collect()
}

/// What the first repetition of a fit row saw, frame by frame.
#[derive(Debug, Default)]
struct FitLog {
    encodes: Vec<u32>,
    record_bytes: Vec<usize>,
    qualities: Vec<Quality>,
    sizes: BTreeMap<(u32, u32), u64>,
    passthrough: u64,
    over_budget: u64,
    dropped: BTreeMap<&'static str, u64>,
}

/// Builds the record `encoded` would be published as (the frame's pixels are not used by
/// [`FrameRecord::new`], so a placeholder image stands in).
fn record_for(seq: u64, encoded: &Encoded) -> FrameRecord {
    let frame = Frame {
        seq,
        frame_id: uuid::Uuid::now_v7().to_string(),
        captured_at: SystemTime::now(),
        image: Image::Raw(RawImage {
            width: 1,
            height: 1,
            format: PixelFormat::Gray8,
            data: vec![0],
        }),
    };
    FrameRecord::new(DEVICE, &frame, encoded)
}

fn quality_summary(q: &[Quality]) -> String {
    let mut hist: BTreeMap<String, u64> = BTreeMap::new();
    let mut nums = Vec::new();
    for x in q {
        *hist.entry(x.to_string()).or_default() += 1;
        if let Quality::Jpeg(v) = x {
            nums.push(*v as f64);
        }
    }
    if hist.len() <= 4 {
        let parts: Vec<String> = hist.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        format!("q {}", parts.join(" "))
    } else {
        let lo = nums.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = nums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(
            "q mean {:.1} [{lo}-{hi}]",
            mean(nums.iter().copied()).unwrap_or(0.0)
        )
    }
}

/// Rows 2x: a fresh [`Encoder`] per repetition fits `images[order[i]]` for every `i`.
fn fit_row(
    id: &'static str,
    what: String,
    images: &[Image],
    order: &[usize],
    cfg: &EncodeConfig,
    iterations: u32,
) -> Row {
    fit_row_via(id, what, images, order, cfg, iterations, true)
}

/// [`fit_row`], through the planar route or (`planar` false) the RGB route it replaced.
fn fit_row_via(
    id: &'static str,
    what: String,
    images: &[Image],
    order: &[usize],
    cfg: &EncodeConfig,
    iterations: u32,
    planar: bool,
) -> Row {
    let budget = cfg.max_message_bytes.get() as usize;
    let mut log = FitLog::default();
    let mut total_ms = Vec::new();
    let mut first_ms = Vec::new();
    let mut rest_ms = Vec::new();
    for rep in 0..iterations {
        let mut enc = match Encoder::new(DEVICE, cfg.clone(), TransformConfig::default()) {
            Ok(e) => e,
            Err(e) => return Row::failed(id, what, format!("error: {e}")),
        };
        enc.planar = planar;
        enc.planar = planar;
        let mut total = 0.0;
        for (i, &k) in order.iter().enumerate() {
            let t = Instant::now();
            let r = enc.encode(&images[k]);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            total += ms;
            if i == 0 {
                first_ms.push(ms);
            }
            if rep > 0 {
                continue;
            }
            match r {
                Ok(e) => {
                    let rec = record_for(i as u64, &e);
                    let size = rec.wire_size();
                    log.encodes.push(e.encodes);
                    log.record_bytes.push(size);
                    log.qualities.push(e.quality);
                    *log.sizes.entry((e.width, e.height)).or_default() += 1;
                    log.passthrough += e.passthrough as u64;
                    log.over_budget += (size > budget) as u64;
                }
                Err(e) => {
                    log.encodes.push(e.attempts());
                    *log.dropped.entry(e.reason()).or_default() += 1;
                }
            }
        }
        if order.len() > 1 {
            rest_ms
                .push((total - first_ms.last().copied().unwrap_or(0.0)) / (order.len() - 1) as f64);
        }
        total_ms.push(total);
    }
    let frames = order.len() as u64;
    let ms = median(total_ms) / frames as f64;
    let first = log.encodes.first().copied().unwrap_or(0);
    let rest = mean(log.encodes.iter().skip(1).map(|&e| e as f64));
    let mut notes = format!(
        "enc first {first} / rest {}; ms first {:.1} / rest {}",
        rest.map_or("-".to_string(), |r| format!("{r:.2}")),
        median(first_ms),
        if rest_ms.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", median(rest_ms))
        }
    );
    if !log.qualities.is_empty() {
        let _ = write!(notes, "; {}", quality_summary(&log.qualities));
    }
    let sizes: Vec<String> = log
        .sizes
        .iter()
        .map(|((w, h), n)| {
            if log.sizes.len() == 1 {
                format!("{w}x{h}")
            } else {
                format!("{w}x{h}:{n}")
            }
        })
        .collect();
    if !sizes.is_empty() {
        let _ = write!(notes, "; {}", sizes.join(" "));
    }
    let max_rec = log.record_bytes.iter().copied().max().unwrap_or(0);
    let _ = write!(
        notes,
        "; max record {max_rec} B {} budget",
        if log.over_budget == 0 { "<=" } else { "OVER" }
    );
    if log.passthrough > 0 {
        let _ = write!(notes, "; passthrough {}", log.passthrough);
    }
    for (reason, n) in &log.dropped {
        let _ = write!(notes, "; dropped {reason} {n}");
    }
    Row::ok(
        id,
        what,
        Stats {
            frames,
            encodes_per_frame: mean(log.encodes.iter().map(|&e| e as f64)),
            ms_per_frame: ms,
            mean_bytes: mean(log.record_bytes.iter().map(|&b| b as f64)),
            frames_per_s: if ms > 0.0 { 1000.0 / ms } else { 0.0 },
            notes,
        },
    )
}

/// Row 3: the in-process path of an MJPEG source up to the producer, on the file's bytes
/// (already in memory, fed in [`READ_CHUNK_BYTES`] chunks like the source reads them).
fn passthrough_row(
    id: &'static str,
    what: &str,
    stream: &[u8],
    cfg: &EncodeConfig,
    iterations: u32,
) -> Row {
    let mut per_frame_ms = Vec::new();
    let (mut frames, mut encodes, mut passthrough, mut bytes, mut failed) = (0u64, 0u64, 0, 0, 0);
    for rep in 0..iterations {
        let mut enc = match Encoder::new(DEVICE, cfg.clone(), TransformConfig::default()) {
            Ok(e) => e,
            Err(e) => return Row::failed(id, what, format!("error: {e}")),
        };
        let mut splitter = MjpegSplitter::new();
        let (mut n, mut e_sum, mut p, mut b, mut f) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let t = Instant::now();
        for chunk in stream.chunks(READ_CHUNK_BYTES) {
            splitter.push(chunk);
            while let Some(r) = splitter.next_frame() {
                let Ok(data) = r else {
                    f += 1;
                    continue;
                };
                // As the MJPEG source does: [limits] at the door (the splitter walked the rest).
                let Ok(jpeg) = JpegImage::split_within(data, &crate::limits::Limits::default())
                else {
                    f += 1;
                    continue;
                };
                let frame = Frame {
                    seq: n,
                    frame_id: uuid::Uuid::now_v7().to_string(),
                    captured_at: SystemTime::now(),
                    image: Image::Jpeg(jpeg),
                };
                n += 1;
                match enc.encode(&frame.image) {
                    Ok(e) => {
                        let rec = FrameRecord::new(DEVICE, &frame, &e);
                        b += rec.wire_size() as u64;
                        e_sum += e.encodes as u64;
                        p += e.passthrough as u64;
                    }
                    Err(_) => f += 1,
                }
            }
        }
        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
        if n == 0 {
            return Row::failed(id, what, "error: no frame in the stream");
        }
        per_frame_ms.push(elapsed / n as f64);
        if rep == 0 {
            (frames, encodes, passthrough, bytes, failed) = (n, e_sum, p, b, f);
        }
    }
    let ms = median(per_frame_ms);
    let ok = frames - failed.min(frames);
    Row::ok(
        id,
        what,
        Stats {
            frames,
            encodes_per_frame: Some(encodes as f64 / frames as f64),
            ms_per_frame: ms,
            mean_bytes: (ok > 0).then(|| bytes as f64 / ok as f64),
            frames_per_s: if ms > 0.0 { 1000.0 / ms } else { 0.0 },
            notes: format!(
                "passthrough {passthrough}/{frames}{}; target >= 2000 frames/s",
                if failed > 0 {
                    format!(", failed {failed}")
                } else {
                    String::new()
                }
            ),
        },
    )
}

/// One end-to-end run's figures.
#[derive(Debug, Clone, Copy)]
struct E2e {
    delivered: u64,
    elapsed_s: f64,
    encodes: u64,
    encoded: u64,
    bytes: u64,
    latency_mean_ms: f64,
    latency_max_ms: f64,
    dropped: u64,
    /// Seconds from the start of `pipeline::run` to the first delivery report.
    first_delivery_s: Option<f64>,
    /// Frames per second from the first delivery to the last: `(delivered - 1) / (t_last -
    /// t_first)`, both instants seen by a 1 ms poll of the delivery counter.
    after_first_fps: Option<f64>,
}

/// Publishes `frames` frames of the MJPEG file at `path` (looped) into a fresh mock cluster
/// with [`pipeline::run`](crate::pipeline::run), source unpaced, overflow `block`.
async fn e2e_once(path: &Path, frames: u64, budget: u32, run_no: u32) -> Result<E2e, String> {
    let cluster =
        rdkafka::mocking::MockCluster::new(3).map_err(|e| format!("mock cluster: {e}"))?;
    let topic = format!("edgecam.bench.{run_no}");
    cluster
        .create_topic(&topic, 1, 1)
        .map_err(|e| format!("create topic: {e}"))?;
    let toml = format!(
        "[device]\nid = \"{DEVICE}\"\n[source]\nkind = \"mjpeg\"\npath = {path}\nfps = 0\n\
         loop = true\nmax_frames = {frames}\n[encode]\nmax_message_bytes = {budget}\n\
         [pipeline]\noverflow = \"block\"\n[spool]\nmode = \"off\"\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n",
        path = toml::Value::String(path.display().to_string()),
        bootstrap = cluster.bootstrap_servers(),
    );
    let cfg = crate::config::load_str(&toml, std::iter::empty()).map_err(|e| e.to_string())?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    // Watches the delivery counter: when it first moves, and when it last moved.
    let watcher = {
        let (metrics, stop) = (metrics.clone(), stop.clone());
        tokio::spawn(async move {
            let mut first: Option<Instant> = None;
            let mut last: Option<(Instant, u64)> = None;
            let mut seen = 0u64;
            loop {
                let done = stop.load(Relaxed);
                let d = metrics.delivered.load(Relaxed);
                if d > seen {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = Some((now, d));
                    seen = d;
                }
                if done {
                    return (first, last);
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
    };
    let result = crate::pipeline::run(
        cfg,
        tokio_util::sync::CancellationToken::new(),
        metrics.clone(),
    )
    .await;
    stop.store(true, Relaxed);
    let (first, last) = watcher.await.unwrap_or((None, None));
    let report = result.map_err(|e| e.to_string())?;
    let delivered = metrics.delivered.load(Relaxed);
    let after_first_fps = match (first, last) {
        (Some(f), Some((l, d))) if d > 1 && l > f => {
            Some((d - 1) as f64 / l.duration_since(f).as_secs_f64())
        }
        _ => None,
    };
    Ok(E2e {
        delivered,
        elapsed_s: report.elapsed.as_secs_f64(),
        encodes: metrics.encodes.load(Relaxed),
        encoded: metrics.encoded.load(Relaxed),
        bytes: metrics.delivered_bytes.load(Relaxed),
        latency_mean_ms: if delivered > 0 {
            metrics.latency_us_sum.load(Relaxed) as f64 / delivered as f64 / 1000.0
        } else {
            0.0
        },
        latency_max_ms: metrics.latency_us_max.load(Relaxed) as f64 / 1000.0,
        dropped: metrics.dropped_total(),
        first_delivery_s: first.map(|f| f.duration_since(started).as_secs_f64()),
        after_first_fps,
    })
}

/// Rows 4x. The runs happen on a thread of their own with its own runtime, so the caller
/// may be inside a runtime.
fn e2e_rows(
    ids: [&'static str; 3],
    whats: [String; 3],
    path: &Path,
    budget: u32,
    iterations: u32,
) -> Vec<Row> {
    let path = path.to_path_buf();
    let result = std::thread::Builder::new()
        .name("edgecam-bench-e2e".into())
        .spawn(move || -> Result<Vec<(E2e, E2e)>, String> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            let mut runs = Vec::new();
            for i in 0..iterations {
                let short = rt.block_on(e2e_once(&path, 300, budget, 2 * i))?;
                let long = rt.block_on(e2e_once(&path, 600, budget, 2 * i + 1))?;
                runs.push((short, long));
            }
            Ok(runs)
        })
        .map_err(|e| format!("spawning the end-to-end thread: {e}"))
        .and_then(|h| {
            h.join()
                .map_err(|_| "the end-to-end thread panicked".to_string())?
        });
    let runs = match result {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => Vec::new(),
        Err(e) => {
            return ids
                .into_iter()
                .zip(whats)
                .map(|(id, w)| Row::failed(id, w, format!("error: {e}")))
                .collect()
        }
    };
    let startup = |pick: fn(&(E2e, E2e)) -> E2e| {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| pick(r).first_delivery_s)
            .collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        if v.is_empty() {
            "no delivery".to_string()
        } else {
            format!("{:.2} s [{lo:.2}-{hi:.2}]", median(v))
        }
    };
    let row = |id, what: String, pick: fn(&(E2e, E2e)) -> E2e| {
        let first = pick(&runs[0]);
        let fps = median(
            runs.iter()
                .map(|r| {
                    let e = pick(r);
                    e.delivered as f64 / e.elapsed_s.max(1e-9)
                })
                .collect(),
        );
        let lat = median(runs.iter().map(|r| pick(r).latency_mean_ms).collect());
        let lat_max = median(runs.iter().map(|r| pick(r).latency_max_ms).collect());
        let elapsed = median(runs.iter().map(|r| pick(r).elapsed_s).collect());
        Row::ok(
            id,
            what,
            Stats {
                frames: first.delivered,
                encodes_per_frame: (first.encoded > 0)
                    .then(|| first.encodes as f64 / first.encoded as f64),
                ms_per_frame: if fps > 0.0 { 1000.0 / fps } else { 0.0 },
                mean_bytes: (first.delivered > 0)
                    .then(|| first.bytes as f64 / first.delivered as f64),
                frames_per_s: fps,
                notes: format!(
                    "all included; elapsed {elapsed:.2} s; first delivery after {} \
                     (producer-id start-up); latency mean {lat:.1} ms, max {lat_max:.1} ms; \
                     dropped {}",
                    startup(pick),
                    first.dropped
                ),
            },
        )
    };
    let mut rows = vec![
        row(ids[0], whats[0].clone(), |r| r.0),
        row(ids[1], whats[1].clone(), |r| r.1),
    ];
    let steady = |pick: fn(&(E2e, E2e)) -> E2e| -> Vec<f64> {
        runs.iter()
            .filter_map(|r| pick(r).after_first_fps)
            .collect()
    };
    let (long, short) = (steady(|r| r.1), steady(|r| r.0));
    rows.push(if long.is_empty() {
        Row::failed(ids[2], whats[2].clone(), "n/a (fewer than 2 deliveries)")
    } else {
        let fps = median(long);
        Row::ok(
            ids[2],
            whats[2].clone(),
            Stats {
                frames: runs[0].1.delivered.saturating_sub(1),
                encodes_per_frame: None,
                ms_per_frame: 1000.0 / fps,
                mean_bytes: None,
                frames_per_s: fps,
                notes: format!(
                    "600-frame runs, first to last delivery (1 ms poll); 300-frame runs: {:.0} frames/s",
                    median(short)
                ),
            },
        )
    });
    rows
}

fn render(header: &Header, rows: &[Row]) -> String {
    let mut s = String::new();
    for l in &header.lines {
        let _ = writeln!(s, "{l}");
    }
    let what_w = rows.iter().map(|r| r.what.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        s,
        "\n{:<4} {:<what_w$} {:>6} {:>9} {:>9} {:>9} {:>9}  notes",
        "row", "what", "frames", "enc/frame", "ms/frame", "mean B", "frames/s"
    );
    let _ = writeln!(s, "{}", "-".repeat(4 + what_w + 6 + 4 * 10 + 10));
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |x| format!("{x:.prec$}"));
    for r in rows {
        match &r.result {
            Ok(st) => {
                let _ = writeln!(
                    s,
                    "{:<4} {:<what_w$} {:>6} {:>9} {:>9.2} {:>9} {:>9.1}  {}",
                    r.id,
                    r.what,
                    st.frames,
                    opt(st.encodes_per_frame, 2),
                    st.ms_per_frame,
                    opt(st.mean_bytes, 0),
                    st.frames_per_s,
                    st.notes
                );
            }
            Err(why) => {
                let _ = writeln!(s, "{:<4} {:<what_w$} {why}", r.id, r.what);
            }
        }
    }
    let _ = writeln!(s, "\ntargets:");
    let find = |id: &str| rows.iter().find(|r| r.id == id).and_then(Row::stats);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for (size, e, raw) in [("1080p", "1a", "1c"), ("768x576", "1e", "1g")] {
        match (find(e), find(raw)) {
            (Some(a), Some(b)) if b.ms_per_frame > 0.0 => {
                let ratio = a.ms_per_frame / b.ms_per_frame;
                let _ = writeln!(
                    s,
                    "  edgecam JPEG encode / raw libjpeg-turbo, {size}: {ratio:.2} (<= 1.25: {})",
                    verdict(ratio <= 1.25)
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "  edgecam JPEG encode / raw libjpeg-turbo, {size}: not measured"
                );
            }
        }
    }
    match find("3") {
        Some(st) => {
            let _ = writeln!(
                s,
                "  passthrough path 768x576: {:.0} frames/s (>= 2000: {})",
                st.frames_per_s,
                verdict(st.frames_per_s >= 2000.0)
            );
        }
        None => {
            let _ = writeln!(s, "  passthrough path 768x576: not measured");
        }
    }
    for id in ["2b", "2c"] {
        match find(id) {
            Some(st) => {
                let e = st.encodes_per_frame.unwrap_or(0.0);
                let _ = writeln!(
                    s,
                    "  encodes per frame, vtest re-encode row {id}: {e:.2} (<= 1.2: {})",
                    verdict(e <= 1.2)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  encodes per frame, vtest re-encode row {id}: not measured"
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BenchOptions {
        BenchOptions {
            data_dir: PathBuf::from("tests/fixtures/no-such-data-dir"),
            fallback: PathBuf::from("tests/fixtures/vtest-10.mjpeg"),
            iterations: 1,
            max_message_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES,
            end_to_end: false,
        }
    }

    #[test]
    fn fallback_fixture_runs_the_768_rows() {
        let (_, rows) = collect(&tiny()).unwrap();
        for id in ["1e", "1f", "1g", "1h", "2a", "2b", "2c", "3"] {
            let r = rows.iter().find(|r| r.id == id).unwrap();
            let st = r
                .stats()
                .unwrap_or_else(|| panic!("row {id} did not run: {:?}", r.result));
            assert!(st.frames > 0, "{id}");
            assert!(st.ms_per_frame > 0.0, "{id}");
            assert!(st.frames_per_s > 0.0, "{id}");
            assert!(st.mean_bytes.unwrap() > 0.0, "{id}");
        }
        let st = |id: &str| rows.iter().find(|r| r.id == id).unwrap().stats().unwrap();
        // Passthrough: no encoder call; under 30 kB every frame is re-encoded.
        assert_eq!(st("2a").encodes_per_frame, Some(0.0));
        assert_eq!(st("3").encodes_per_frame, Some(0.0));
        assert_eq!(st("2a").frames, 10);
        assert!(st("2b").encodes_per_frame.unwrap() >= 1.0);
        assert!(st("2b").mean_bytes.unwrap() <= 30_000.0);
        assert!(st("2c").mean_bytes.unwrap() <= 20_000.0);
        for id in ["1a", "1b", "1c", "1d", "2d", "2e", "2f"] {
            let r = rows.iter().find(|r| r.id == id).unwrap();
            assert_eq!(r.result.as_ref().unwrap_err(), MISSING, "{id}");
        }
        let report = render(&Header { lines: vec![] }, &rows);
        for needle in [
            "1e ",
            "2b ",
            "3 ",
            "skipped (file missing)",
            "skipped (end_to_end off)",
            "targets:",
        ] {
            assert!(report.contains(needle), "{needle} missing in\n{report}");
        }
    }

    #[test]
    fn no_input_at_all_is_an_error() {
        let opts = BenchOptions {
            fallback: PathBuf::from("tests/fixtures/no-such-file.mjpeg"),
            ..tiny()
        };
        assert!(matches!(run(&opts), Err(BenchError::NoInput { .. })));
    }

    #[test]
    fn invalid_budget_is_an_error() {
        let opts = BenchOptions {
            max_message_bytes: 10,
            ..tiny()
        };
        assert!(matches!(run(&opts), Err(BenchError::Config(_))));
    }

    #[test]
    fn crop_takes_the_centre() {
        let data: Vec<u8> = (0..4 * 4 * 3).map(|i| (i / 3) as u8).collect();
        let img = RawImage::new(4, 4, PixelFormat::Rgb8, data).unwrap();
        let c = center_crop(&img, 2, 2).unwrap();
        // Pixels 5, 6, 9, 10 of the 4x4 image.
        assert_eq!(c.data, vec![5, 5, 5, 6, 6, 6, 9, 9, 9, 10, 10, 10]);
        assert!(center_crop(&img, 5, 2).is_err());
    }

    /// The real figures: `cargo test --release --lib bench::tests::real_data -- --ignored
    /// --nocapture` (needs `scripts/testdata`).
    #[test]
    #[ignore = "minutes of CPU; run by hand in release mode"]
    fn real_data() {
        let opts = BenchOptions {
            data_dir: crate::testdata::dir(),
            iterations: std::env::var("EDGECAM_BENCH_ITERATIONS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
            ..BenchOptions::default()
        };
        println!("{}", run(&opts).unwrap());
    }
}
