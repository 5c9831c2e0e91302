//! Frame sources. Each source is a blocking iterator of [`Captured`] frames, run on its own
//! thread by the pipeline, so a slow camera or pipe never stalls the async runtime.

use crate::config::{SourceConfig, SourceKind};
use crate::frame::Captured;
use crate::limits::Limits;

pub mod camera;
pub mod images;
pub mod mjpeg;
mod pace;
pub mod synthetic;

pub use pace::{Pacer, RateLimit};

/// Why a source could not open or could not deliver a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The configured file, directory or device does not exist or cannot be opened.
    #[error("cannot open {what}: {message}")]
    Open {
        /// The path, device or command.
        what: String,
        /// The OS or driver error.
        message: String,
    },
    /// No such camera (`source.device`). The agent retries with backoff.
    #[error("no such camera: {0}")]
    NoSuchDevice(String),
    /// The camera does not offer a format edgecam can use.
    #[error("camera format not supported: {0}")]
    UnsupportedFormat(String),
    /// Reading failed after the source was open (device unplugged, pipe error).
    #[error("read error: {0}")]
    Read(#[from] std::io::Error),
    /// One frame could not be decoded (corrupt file). The pipeline counts it (`bad_frame`)
    /// and goes on.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// One frame is over `[limits]` (bytes, pixels or side): refused before its pixels were
    /// allocated. The pipeline counts it (`frame_too_large`) and goes on.
    #[error("frame too large: {0}")]
    TooLarge(String),
    /// The stream holds no frame start (`FF D8 FF`) in `bytes` bytes: it is not MJPEG (a
    /// device like `/dev/zero`, the wrong program). The source gives up instead of spinning.
    #[error("no JPEG frame start in {bytes} bytes: {what} is not an MJPEG stream")]
    NotMjpeg {
        /// The file or command.
        what: String,
        /// Bytes read without a frame start.
        bytes: u64,
    },
    /// The camera driver reported an error.
    #[error("camera error: {0}")]
    Camera(String),
}

impl SourceError {
    /// `true` when only the current frame is bad and the next call may succeed.
    pub fn is_frame_error(&self) -> bool {
        matches!(self, SourceError::BadFrame(_) | SourceError::TooLarge(_))
    }

    /// A frame refused at the door by [`crate::inspect`], as a frame error naming `what`
    /// (the file, or the stream and frame number).
    pub fn refused(what: impl std::fmt::Display, refusal: crate::inspect::Refusal) -> Self {
        match refusal {
            crate::inspect::Refusal::TooLarge(e) => SourceError::TooLarge(format!("{what}: {e}")),
            r => SourceError::BadFrame(format!("{what}: {r}")),
        }
    }
}

/// Input a source skipped outside frames, since the last [`Source::take_skipped`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Bytes between frames of a stream that belong to no frame (garbage, padding).
    pub bytes: u64,
    /// Directory entries with an image's name that are not regular files (devices, FIFOs,
    /// sockets, dangling links, directories).
    pub files: u64,
}

/// A blocking stream of frames.
pub trait Source: Send {
    /// Blocks until the next frame is available (paced at the configured fps, if any).
    ///
    /// `Ok(None)`: the source has ended (a file without `loop`, a child process that
    /// exited); the agent flushes and exits. `Err` with [`SourceError::is_frame_error`]:
    /// skip this frame and call again. Other errors: the source is broken; the agent may
    /// reopen it.
    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError>;

    /// Short human description for logs, e.g. `mjpeg file vtest.mjpeg`.
    fn describe(&self) -> String;

    /// Changes the pace to `fps` frames per second (0 = as fast as possible) from the next
    /// frame on, without reopening. Returns `false` when this source cannot change its rate
    /// live (a camera's rate is negotiated with the driver at open): the change then needs a
    /// restart. A child process returns `false` too, but the pipeline never asks it: it is
    /// thinned instead ([`Source::paced_by_dropping`]).
    fn set_fps(&mut self, fps: f64) -> bool {
        let _ = fps;
        false
    }

    /// `true` when this source runs at its own rate, which edgecam cannot set (a child
    /// process such as `rpicam-vid`): the pipeline then keeps `source.fps` by discarding
    /// surplus frames ([`RateLimit`], counted as `fps_limit`), and applies a live change of
    /// `source.fps` the same way. `false` (the default): the source paces itself or has its
    /// rate set at open ([`Source::set_fps`]).
    fn paced_by_dropping(&self) -> bool {
        false
    }

    /// What was skipped outside frames since the last call (counted by the pipeline as
    /// `edgecam_skipped_bytes` and `skipped_files`). Sources that skip nothing return zeros.
    fn take_skipped(&mut self) -> Skipped {
        Skipped::default()
    }
}

/// Opens the source described by `cfg`; every frame it yields is within `limits`.
///
/// Errors: [`SourceError::Open`] for a missing file/directory or a command that cannot be
/// spawned, [`SourceError::NoSuchDevice`] for a missing camera.
pub fn open(cfg: &SourceConfig, limits: &Limits) -> Result<Box<dyn Source>, SourceError> {
    Ok(match cfg.kind {
        SourceKind::Camera => Box::new(camera::CameraSource::open(cfg, limits)?),
        SourceKind::Mjpeg => Box::new(mjpeg::MjpegSource::open(cfg, limits)?),
        SourceKind::Images => Box::new(images::ImagesSource::open(cfg, limits)?),
        SourceKind::Synthetic => Box::new(synthetic::SyntheticSource::new(cfg)),
    })
}
