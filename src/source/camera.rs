//! V4L2 cameras through `nokhwa` (V4L2 backend only, its own decoders disabled).
//!
//! MJPEG frames pass through as JPEG (trimmed to their EOI: V4L2 buffers carry padding);
//! YUYV frames become full-range YCbCr planes here ([`Planes::from_yuyv`]), the form the
//! JPEG encoder takes, so a YUYV frame never passes through RGB. `nokhwa::Camera` is
//! not `Send`, so it lives on a dedicated capture thread that hands frames over a small
//! bounded channel; [`CameraSource`] itself is `Send`.

use std::cmp::Reverse;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nokhwa::utils::{
    CameraFormat as Mode, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use nokhwa::{Buffer, Camera, NokhwaError};

use super::{Source, SourceError};
use crate::config::{CameraFormat, SourceConfig};
use crate::frame::{Captured, Image, JpegImage, Planes};
use crate::limits::Limits;

/// How long [`CameraSource::open`] waits for the driver to open and configure the device.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long dropping a [`CameraSource`] waits for the capture thread to release the device.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Frames buffered between the capture thread and [`CameraSource::next_frame`]. Small on
/// purpose: when the pipeline is slower than the camera, the capture thread blocks and
/// the driver drops frames rather than this queue holding stale ones.
const CHANNEL_FRAMES: usize = 2;

/// The V4L2 index in `device`: `"3"` → 3, or the trailing number of the last path
/// component, `"/dev/video3"` → 3. `None` when there is no such number.
///
/// Pure text; see [`resolve_device`] for symlinks like `/dev/v4l/by-id/…`.
pub fn parse_device(device: &str) -> Option<u32> {
    let name = device.trim().rsplit('/').next()?;
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().ok()
}

/// Resolves `source.device` to a V4L2 index whose `/dev/videoN` node exists. A path is
/// canonicalised first, so udev symlinks (`/dev/v4l/by-id/usb-…-video-index0`) work.
///
/// Errors: [`SourceError::NoSuchDevice`] (with `device` as given) when the path or the
/// `/dev/videoN` node does not exist; [`SourceError::Open`] when `device` names an
/// existing file that is not a `/dev/videoN` node.
pub fn resolve_device(device: &str) -> Result<u32, SourceError> {
    let trimmed = device.trim();
    let index = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        trimmed
            .parse()
            .map_err(|_| SourceError::NoSuchDevice(device.to_string()))?
    } else {
        let real = std::fs::canonicalize(trimmed)
            .map_err(|_| SourceError::NoSuchDevice(device.to_string()))?;
        let real = real.to_string_lossy();
        match (real.strip_prefix("/dev/video"), parse_device(&real)) {
            (Some(_), Some(i)) => i,
            _ => {
                return Err(SourceError::Open {
                    what: device.to_string(),
                    message: format!("{real} is not a V4L2 device node (/dev/videoN)"),
                })
            }
        }
    };
    if !Path::new(&format!("/dev/video{index}")).exists() {
        return Err(SourceError::NoSuchDevice(device.to_string()));
    }
    Ok(index)
}

/// Picks the mode to request from the modes a camera offers.
///
/// The first frame format of `preferred` that the camera offers at all wins; within it,
/// the resolution closest to `width` x `height` (Euclidean distance in pixels, ties to the
/// larger), then at that resolution the frame rate closest to `fps` (ties to the higher),
/// or the highest when `fps` is 0. `None` when no mode has a preferred format.
pub fn choose_mode(
    available: &[Mode],
    width: u32,
    height: u32,
    fps: u32,
    preferred: &[FrameFormat],
) -> Option<Mode> {
    preferred.iter().find_map(|&ff| {
        let same: Vec<&Mode> = available.iter().filter(|m| m.format() == ff).collect();
        let res = same.iter().map(|m| m.resolution()).min_by_key(|r| {
            let dx = r.width() as i64 - width as i64;
            let dy = r.height() as i64 - height as i64;
            (
                dx * dx + dy * dy,
                Reverse(r.width() as u64 * r.height() as u64),
            )
        })?;
        let at_res = same.into_iter().filter(|m| m.resolution() == res);
        if fps == 0 {
            at_res.max_by_key(|m| m.frame_rate()).copied()
        } else {
            at_res
                .min_by_key(|m| (m.frame_rate().abs_diff(fps), Reverse(m.frame_rate())))
                .copied()
        }
    })
}

/// Turns one driver buffer into an [`Image`]: MJPEG → [`Image::Jpeg`] trimmed to its EOI
/// (zero-copy slice of the buffer); YUYV → [`Image::Yuv`] planes, 4:2:2.
///
/// Errors: [`SourceError::BadFrame`] for an incomplete or unparsable JPEG or a short YUYV
/// buffer; [`SourceError::TooLarge`] for a frame over `limits` (checked before converting);
/// [`SourceError::UnsupportedFormat`] for any other frame format.
fn to_image(buf: &Buffer, limits: &Limits) -> Result<Image, SourceError> {
    let data = buf.buffer();
    match buf.source_frame_format() {
        FrameFormat::MJPEG => JpegImage::checked(buf.buffer_bytes(), limits)
            .map(Image::Jpeg)
            .map_err(|r| SourceError::refused(format!("MJPEG frame of {} bytes", data.len()), r)),
        FrameFormat::YUYV => {
            let res = buf.resolution();
            limits
                .check_dimensions(res.width(), res.height())
                .map_err(|e| SourceError::TooLarge(format!("YUYV frame: {e}")))?;
            let (w, h) = (res.width() as usize, res.height() as usize);
            // nokhwa hands over the whole V4L2 buffer, not `bytesperline`: a length that is
            // a whole number of rows is taken as rows padded to that stride (Raspberry Pi
            // aligns rows), anything else as unpadded rows plus tail padding.
            let min_stride = w.div_ceil(2) * 4;
            let stride = match data.len().checked_div(h) {
                Some(s) if data.len().is_multiple_of(h) && s >= min_stride => s,
                _ => min_stride,
            };
            Planes::from_yuyv(data, w, h, stride)
                .map(Image::Yuv)
                .ok_or_else(|| {
                    SourceError::BadFrame(format!(
                        "YUYV frame of {} bytes is too short for {w}x{h}",
                        data.len()
                    ))
                })
        }
        other => Err(SourceError::UnsupportedFormat(format!(
            "driver delivered {other} frames"
        ))),
    }
}

/// Wall-clock capture time of a buffer: the driver's timestamp when it has one, else now.
fn captured_at(buf: &Buffer) -> SystemTime {
    buf.capture_timestamp()
        .map(|d| SystemTime::UNIX_EPOCH + d)
        .unwrap_or_else(SystemTime::now)
}

/// What to ask the driver for.
#[derive(Debug, Clone)]
struct Request {
    device: String,
    index: u32,
    width: u32,
    height: u32,
    fps: u32,
    preferred: Vec<FrameFormat>,
    limits: Limits,
}

fn open_error(device: &str, e: NokhwaError) -> SourceError {
    match e {
        NokhwaError::OpenDeviceError(_, msg)
            if msg.contains("No such file") || msg.contains("No such device") =>
        {
            SourceError::NoSuchDevice(device.to_string())
        }
        NokhwaError::OpenDeviceError(_, message) => SourceError::Open {
            what: device.to_string(),
            message,
        },
        NokhwaError::GetPropertyError { property, error } if property == "CameraFormat" => {
            SourceError::UnsupportedFormat(format!(
                "{device} offers neither MJPEG nor YUYV ({error})"
            ))
        }
        other => SourceError::Camera(format!("{device}: {other}")),
    }
}

/// Opens, configures and starts the camera. Runs on the capture thread.
fn open_camera(req: &Request) -> Result<(Camera, Mode), SourceError> {
    const WANTED: [FrameFormat; 2] = [FrameFormat::MJPEG, FrameFormat::YUYV];
    // nokhwa's `Closest` only works when the exact resolution exists, so open with any
    // usable mode, list the modes, and pick ourselves.
    let mut cam = Camera::new(
        CameraIndex::Index(req.index),
        RequestedFormat::with_formats(RequestedFormatType::None, &WANTED),
    )
    .map_err(|e| open_error(&req.device, e))?;
    let modes = cam
        .compatible_camera_formats()
        .map_err(|e| SourceError::Camera(format!("{}: listing modes: {e}", req.device)))?;
    let chosen =
        choose_mode(&modes, req.width, req.height, req.fps, &req.preferred).ok_or_else(|| {
            let offered: Vec<String> = modes.iter().map(ToString::to_string).collect();
            SourceError::UnsupportedFormat(format!(
                "{} offers no MJPEG or YUYV mode (offers: {})",
                req.device,
                offered.join(", ")
            ))
        })?;
    if cam.camera_format() != chosen {
        let exact = [chosen.format()];
        let request = RequestedFormat::with_formats(RequestedFormatType::Exact(chosen), &exact);
        if let Err(e) = cam.set_camera_requset(request) {
            // Drivers may round the frame rate; accept that, not another size or format.
            let now = cam
                .refresh_camera_format()
                .map_err(|e| SourceError::Camera(format!("{}: {e}", req.device)))?;
            if now.resolution() != chosen.resolution() || now.format() != chosen.format() {
                return Err(SourceError::Camera(format!(
                    "{}: cannot set {chosen}: {e}",
                    req.device
                )));
            }
            tracing::warn!(device = %req.device, requested = %chosen, got = %now, "camera adjusted the mode");
        }
    }
    let mode = cam.camera_format();
    cam.open_stream()
        .map_err(|e| SourceError::Camera(format!("{}: starting stream: {e}", req.device)))?;
    Ok((cam, mode))
}

/// The capture thread: open, report, then capture until told to stop or the receiver is
/// gone. A driver read error is sent on and ends the thread.
fn capture_thread(
    req: Request,
    init: SyncSender<Result<Mode, SourceError>>,
    frames: SyncSender<Result<Captured, SourceError>>,
    stop: Arc<AtomicBool>,
) {
    let mut cam = match open_camera(&req) {
        Ok((cam, mode)) => {
            if init.send(Ok(mode)).is_err() {
                return; // open() gave up waiting.
            }
            cam
        }
        Err(e) => {
            let _ = init.send(Err(e));
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let item = match cam.frame() {
            Ok(buf) => to_image(&buf, &req.limits).map(|image| Captured {
                image,
                captured_at: captured_at(&buf),
            }),
            Err(e) => {
                let _ = frames.send(Err(SourceError::Camera(format!("{}: {e}", req.device))));
                break;
            }
        };
        if frames.send(item).is_err() {
            break;
        }
    }
    let _ = cam.stop_stream();
}

/// A V4L2 camera (`source.device`: an index `"0"` or a path `"/dev/video0"`), asked for
/// `source.width` x `source.height` at `source.fps` (`0` = the highest the mode offers)
/// in `source.format`, falling back to YUYV when MJPEG is not offered.
///
/// MJPEG frames are [`Image::Jpeg`], untouched except trimmed to their EOI; YUYV frames
/// are [`Image::Raw`] RGB8 (`width*height*3` bytes, BT.601). The actual mode may differ
/// from the request (closest the camera offers): see [`Source::describe`]. `captured_at`
/// is the driver's timestamp. Capture runs on its own thread; the device is released when
/// the source is dropped (waiting up to 2 s for the thread).
#[derive(Debug)]
pub struct CameraSource {
    frames: Option<Receiver<Result<Captured, SourceError>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    desc: String,
}

impl CameraSource {
    /// Opens and starts the camera named by `cfg.device`.
    ///
    /// Errors: [`SourceError::NoSuchDevice`] (at once, without touching the driver) when
    /// the device node does not exist; [`SourceError::Open`] when it cannot be opened
    /// (permissions, busy) or is not a `/dev/videoN` node;
    /// [`SourceError::UnsupportedFormat`] when it offers neither MJPEG nor YUYV;
    /// [`SourceError::Camera`] for other driver errors or when opening takes over 15 s.
    pub fn open(cfg: &SourceConfig, limits: &Limits) -> Result<Self, SourceError> {
        let index = resolve_device(&cfg.device)?;
        let preferred = match cfg.format {
            CameraFormat::Mjpeg => vec![FrameFormat::MJPEG, FrameFormat::YUYV],
            CameraFormat::Yuyv => vec![FrameFormat::YUYV],
        };
        let fps = if cfg.fps.is_finite() && cfg.fps > 0.0 {
            (cfg.fps.round() as u32).max(1)
        } else {
            0
        };
        let req = Request {
            device: cfg.device.clone(),
            index,
            width: cfg.width.get(),
            height: cfg.height.get(),
            fps,
            preferred,
            limits: *limits,
        };
        let (init_tx, init_rx) = sync_channel(1);
        let (tx, rx) = sync_channel(CHANNEL_FRAMES);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (req, stop) = (req.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("edgecam-camera{index}"))
                .spawn(move || capture_thread(req, init_tx, tx, stop))
                .map_err(|e| SourceError::Camera(format!("spawning capture thread: {e}")))?
        };
        let mode = match init_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(mode)) => mode,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(RecvTimeoutError::Timeout) => {
                stop.store(true, Ordering::Relaxed);
                return Err(SourceError::Camera(format!(
                    "{}: timed out opening the camera",
                    req.device
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                return Err(SourceError::Camera(format!(
                    "{}: capture thread failed while opening",
                    req.device
                )));
            }
        };
        let path = format!("/dev/video{index}");
        let device = if cfg.device.trim() == path || cfg.device.trim() == index.to_string() {
            path
        } else {
            format!("{} ({path})", cfg.device)
        };
        Ok(CameraSource {
            frames: Some(rx),
            stop,
            thread: Some(thread),
            desc: format!("camera {device} {mode}"),
        })
    }
}

impl Source for CameraSource {
    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        let rx = self
            .frames
            .as_ref()
            .ok_or_else(|| SourceError::Camera("camera closed".into()))?;
        match rx.recv() {
            Ok(item) => item.map(Some),
            Err(_) => Err(SourceError::Camera(format!(
                "{}: capture thread stopped",
                self.desc
            ))),
        }
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A capture thread blocked on a full channel wakes up with a send error.
        self.frames = None;
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!(camera = %self.desc, "capture thread still blocked in the driver; detaching it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use nokhwa::utils::Resolution;

    fn cfg(device: &str) -> SourceConfig {
        toml::from_str(&format!("kind = \"camera\"\ndevice = '{device}'")).unwrap()
    }

    #[test]
    fn missing_device_is_no_such_device_quickly() {
        for dev in [
            "/dev/video99",
            "99",
            "/dev/v4l/by-id/edgecam-no-such-camera",
        ] {
            let t = Instant::now();
            match CameraSource::open(&cfg(dev), &Limits::default()) {
                Err(SourceError::NoSuchDevice(name)) => assert_eq!(name, dev),
                other => panic!("{dev}: expected NoSuchDevice, got {other:?}"),
            }
            assert!(t.elapsed() < Duration::from_secs(1), "{dev}");
        }
    }

    #[test]
    fn existing_file_that_is_not_a_video_node_is_an_open_error() {
        match CameraSource::open(&cfg("/dev/null"), &Limits::default()) {
            Err(SourceError::Open { what, message }) => {
                assert_eq!(what, "/dev/null");
                assert!(message.contains("/dev/videoN"), "{message}");
            }
            other => panic!("expected Open, got {other:?}"),
        }
    }

    #[test]
    fn device_index_parsing() {
        assert_eq!(parse_device("0"), Some(0));
        assert_eq!(parse_device("12"), Some(12));
        assert_eq!(parse_device("/dev/video3"), Some(3));
        assert_eq!(parse_device(" /dev/video10 "), Some(10));
        assert_eq!(parse_device("/dev/video"), None);
        assert_eq!(parse_device("/dev/video3/"), None);
        assert_eq!(parse_device("camera"), None);
        assert_eq!(parse_device(""), None);
    }

    fn mode(w: u32, h: u32, ff: FrameFormat, fps: u32) -> Mode {
        Mode::new(Resolution::new(w, h), ff, fps)
    }

    #[test]
    fn choose_mode_prefers_format_then_resolution_then_fps() {
        use FrameFormat::{MJPEG, YUYV};
        let modes = [
            mode(640, 480, YUYV, 30),
            mode(1280, 720, YUYV, 10),
            mode(640, 480, MJPEG, 30),
            mode(1280, 720, MJPEG, 15),
            mode(1280, 720, MJPEG, 30),
            mode(1920, 1080, MJPEG, 30),
            mode(1280, 720, FrameFormat::NV12, 60),
        ];
        let mj = [MJPEG, YUYV];
        assert_eq!(choose_mode(&modes, 1280, 720, 30, &mj), Some(modes[4]));
        assert_eq!(choose_mode(&modes, 1280, 720, 14, &mj), Some(modes[3]));
        // fps 0: let the driver run at its fastest for that size.
        assert_eq!(choose_mode(&modes, 1280, 720, 0, &mj), Some(modes[4]));
        // Closest size when the exact one is missing.
        assert_eq!(choose_mode(&modes, 1600, 900, 30, &mj), Some(modes[5]));
        assert_eq!(choose_mode(&modes, 320, 240, 30, &mj), Some(modes[2]));
        assert_eq!(choose_mode(&modes, 1280, 720, 30, &[YUYV]), Some(modes[1]));
        // Fallback to YUYV when MJPEG is not offered at all.
        assert_eq!(choose_mode(&modes[..2], 1280, 720, 30, &mj), Some(modes[1]));
        assert_eq!(choose_mode(&modes[6..], 1280, 720, 30, &mj), None);
        assert_eq!(choose_mode(&[], 1280, 720, 30, &mj), None);
    }

    fn near(a: &[u8], b: [u8; 3]) -> bool {
        a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= 2)
    }

    /// YUYV through the planes and back to RGB, as the PNG and zstd codecs see it.
    fn to_rgb(src: &[u8], w: usize, h: usize, stride: usize) -> Option<Vec<u8>> {
        Planes::from_yuyv(src, w, h, stride).map(|p| p.to_rgb8().data)
    }

    #[test]
    fn yuyv_to_rgb_matches_bt601_reference_colours() {
        // (Y, U, V) → RGB for 100% bars, BT.601 limited range.
        let cases: [([u8; 3], [u8; 3]); 8] = [
            ([16, 128, 128], [0, 0, 0]),
            ([235, 128, 128], [255, 255, 255]),
            ([126, 128, 128], [128, 128, 128]),
            ([81, 90, 240], [255, 0, 0]),
            ([145, 54, 34], [0, 255, 0]),
            ([41, 240, 110], [0, 0, 255]),
            ([210, 16, 146], [255, 255, 0]),
            ([170, 166, 16], [0, 255, 255]),
        ];
        for ([y, u, v], rgb) in cases {
            let out = to_rgb(&[y, u, y, v], 2, 1, 4).unwrap();
            assert!(
                near(&out[..3], rgb),
                "YUV {y},{u},{v} → {:?}, want {rgb:?}",
                &out[..3]
            );
            assert_eq!(out[..3], out[3..]);
        }
    }

    #[test]
    fn yuyv_pairs_share_chroma_and_respect_stride() {
        // 3x2 (odd width), stride 12 with 4 bytes of row padding (0xEE).
        let src = [
            16, 128, 235, 128, 81, 90, 81, 240, 0xEE, 0xEE, 0xEE, 0xEE, //
            235, 128, 16, 128, 41, 240, 41, 110, 0xEE, 0xEE, 0xEE, 0xEE,
        ];
        let planes = Planes::from_yuyv(&src, 3, 2, 12).unwrap();
        let c = planes.chroma.as_ref().unwrap();
        assert_eq!(
            (planes.y.width, planes.y.height, c.u.width, c.u.height),
            (3, 2, 2, 2)
        );
        assert_eq!((c.fx, c.fy), (2, 1));
        // Limited range stretched to full: 16 -> 0, 235 -> 255, 240 -> 255, 128 stays.
        assert_eq!(planes.y.data, [0, 255, 76, 255, 0, 29]);
        assert_eq!(c.v.data, [128, 255, 128, 108]);
        let out = planes.to_rgb8().data;
        assert_eq!(out.len(), 3 * 2 * 3);
        assert!(near(&out[0..3], [0, 0, 0]));
        assert!(near(&out[3..6], [255, 255, 255]));
        assert!(near(&out[6..9], [255, 0, 0]));
        assert!(near(&out[9..12], [255, 255, 255]));
        assert!(near(&out[12..15], [0, 0, 0]));
        assert!(near(&out[15..18], [0, 0, 255]));
        assert_eq!(to_rgb(&src[..19], 3, 2, 12), None);
        assert_eq!(to_rgb(&src, 3, 2, 7), None);
        assert_eq!(to_rgb(&src, 0, 2, 12), None);
    }

    fn fixture_frame() -> Vec<u8> {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/vtest-10.mjpeg"
        ))
        .unwrap();
        let n = crate::jpeg::complete_len(&data).unwrap();
        data[..n].to_vec()
    }

    #[test]
    fn mjpeg_buffer_is_trimmed_to_its_eoi() {
        let frame = fixture_frame();
        let mut padded = frame.clone();
        padded.resize(frame.len() + 4096, 0);
        let buf = Buffer::new(Resolution::new(768, 576), &padded, FrameFormat::MJPEG);
        let Image::Jpeg(j) = to_image(&buf, &Limits::default()).unwrap() else {
            panic!("expected jpeg")
        };
        assert_eq!(j.data, Bytes::from(frame.clone()));
        assert_eq!((j.width, j.height), (768, 576));

        let cut = Buffer::new(
            Resolution::new(768, 576),
            &frame[..frame.len() / 2],
            FrameFormat::MJPEG,
        );
        assert!(to_image(&cut, &Limits::default())
            .unwrap_err()
            .is_frame_error());
    }

    #[test]
    fn yuyv_buffer_becomes_planes() {
        let (w, h) = (4usize, 2usize);
        let mut data: Vec<u8> = [235, 128, 235, 128].repeat(w / 2 * h);
        let buf = Buffer::new(Resolution::new(4, 2), &data, FrameFormat::YUYV);
        let Image::Yuv(p) = to_image(&buf, &Limits::default()).unwrap() else {
            panic!("expected planes")
        };
        assert_eq!((p.width, p.height), (4, 2));
        assert!(p.y.data.iter().all(|&v| v == 255));
        assert!(p.to_rgb8().data.iter().all(|&v| v == 255));
        data.truncate(10);
        let short = Buffer::new(Resolution::new(4, 2), &data, FrameFormat::YUYV);
        assert!(to_image(&short, &Limits::default())
            .unwrap_err()
            .is_frame_error());
    }

    #[test]
    fn frames_over_the_limits_are_refused_before_conversion() {
        let small = Limits {
            max_pixels: 4,
            ..Limits::default()
        };
        let data = [235u8, 128, 235, 128].repeat(4);
        let buf = Buffer::new(Resolution::new(4, 2), &data, FrameFormat::YUYV);
        assert!(matches!(
            to_image(&buf, &small),
            Err(SourceError::TooLarge(m)) if m.contains("max_pixels")
        ));
        let frame = fixture_frame();
        let buf = Buffer::new(Resolution::new(768, 576), &frame, FrameFormat::MJPEG);
        assert!(matches!(
            to_image(&buf, &small),
            Err(SourceError::TooLarge(_))
        ));
    }

    #[test]
    fn camera_source_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<CameraSource>();
    }
}
