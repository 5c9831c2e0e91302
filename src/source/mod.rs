//! Frame sources. Each source is a blocking iterator of [`Captured`] frames, run on its own
//! thread by the pipeline, so a slow camera or pipe never stalls the async runtime.

use crate::config::{SourceConfig, SourceKind};
use crate::frame::Captured;

pub mod camera;
pub mod images;
pub mod mjpeg;
mod pace;
pub mod synthetic;

pub use pace::Pacer;

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
    /// One frame could not be decoded (corrupt file). The pipeline counts it and goes on.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// The camera driver reported an error.
    #[error("camera error: {0}")]
    Camera(String),
}

impl SourceError {
    /// `true` when only the current frame is bad and the next call may succeed.
    pub fn is_frame_error(&self) -> bool {
        matches!(self, SourceError::BadFrame(_))
    }
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
    /// live (a camera's rate is negotiated with the driver at open; a child process paces
    /// itself): the change then needs a restart.
    fn set_fps(&mut self, fps: f64) -> bool {
        let _ = fps;
        false
    }
}

/// Opens the source described by `cfg`.
///
/// Errors: [`SourceError::Open`] for a missing file/directory or a command that cannot be
/// spawned, [`SourceError::NoSuchDevice`] for a missing camera.
pub fn open(cfg: &SourceConfig) -> Result<Box<dyn Source>, SourceError> {
    Ok(match cfg.kind {
        SourceKind::Camera => Box::new(camera::CameraSource::open(cfg)?),
        SourceKind::Mjpeg => Box::new(mjpeg::MjpegSource::open(cfg)?),
        SourceKind::Images => Box::new(images::ImagesSource::open(cfg)?),
        SourceKind::Synthetic => Box::new(synthetic::SyntheticSource::new(cfg)),
    })
}
