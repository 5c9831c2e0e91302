//! `[source]`: where frames come from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::types::Side;

/// Which kind of source `[source]` describes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A V4L2 camera through `nokhwa`.
    Camera,
    /// An MJPEG byte stream (JPEGs back to back) from a file or a child process's stdout.
    Mjpeg,
    /// A directory of `.jpg`/`.jpeg`/`.png` files, replayed in name order.
    Images,
    /// A moving test pattern.
    Synthetic,
}

impl SourceKind {
    /// The name used in the file: `camera`, `mjpeg`, `images`, `synthetic`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Camera => "camera",
            SourceKind::Mjpeg => "mjpeg",
            SourceKind::Images => "images",
            SourceKind::Synthetic => "synthetic",
        }
    }
}

/// Pixel format to ask a camera for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CameraFormat {
    /// MJPEG (FourCC `MJPG`), falling back to YUYV: MJPEG frames can pass through untouched.
    #[default]
    Mjpeg,
    /// YUYV 4:2:2 (FourCC `YUYV`), converted once to full-range YCbCr planes (no RGB) and
    /// encoded to JPEG from them.
    Yuyv,
}

/// `[source]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `camera | mjpeg | images | synthetic`.
    pub kind: SourceKind,
    /// `mjpeg`: the MJPEG file; `images`: the directory. A relative path is relative to the
    /// directory of the configuration file; the loader makes it absolute.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `mjpeg`: a child process whose stdout is MJPEG, as an argv list, e.g.
    /// `["rpicam-vid", "-t", "0", "--codec", "mjpeg", "-o", "-"]`. Exclusive with `path`.
    /// The program must be found on `PATH` (or be a path to an executable).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Frames per second, 0–1000; `0` = as fast as the source gives them. For a camera this
    /// is the rate requested from the driver; for a child process (`command`), which runs at
    /// its own rate, at most this many of its frames per second are kept and the surplus is
    /// discarded (`fps_limit`).
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// `mjpeg` file and `images`: start again at the end instead of finishing.
    #[serde(default, rename = "loop")]
    pub loop_: bool,
    /// `camera`, `synthetic`: frame width in pixels, 1–16,384.
    #[serde(default = "default_width")]
    pub width: Side,
    /// `camera`, `synthetic`: frame height in pixels, 1–16,384.
    #[serde(default = "default_height")]
    pub height: Side,
    /// `camera`: V4L2 device, as an index (`"0"`) or a path (`"/dev/video0"`).
    #[serde(default = "default_camera_device")]
    pub device: String,
    /// `camera`: pixel format to ask the driver for.
    #[serde(default)]
    pub format: CameraFormat,
    /// Any source: stop after this many frames (`0` = never), then flush and exit 0.
    #[serde(default)]
    pub max_frames: u64,
}

fn default_fps() -> f64 {
    10.0
}
fn default_width() -> Side {
    Side::new(1280).expect("in range")
}
fn default_height() -> Side {
    Side::new(720).expect("in range")
}
fn default_camera_device() -> String {
    "0".to_string()
}

/// Checks `fps` (also used by live commands): a number from 0 to 1000.
pub fn check_fps(fps: f64) -> Result<(), String> {
    if !fps.is_finite() || !(0.0..=1000.0).contains(&fps) {
        return Err(format!(
            "must be a number from 0 to 1000 frames per second, 0 = as fast as the source gives \
             them (got {fps})"
        ));
    }
    Ok(())
}

impl SourceConfig {
    /// Rules that need no file system: which keys each kind takes, `fps`, `device`.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let kind = self.kind.as_str();
        let unused = |key: &str| {
            invalid(
                key,
                format!(
                    "is not used by kind = \"{kind}\" (only by \"mjpeg\"{}); remove it",
                    if key == "source.path" {
                        " and \"images\""
                    } else {
                        ""
                    }
                ),
            )
        };
        match self.kind {
            SourceKind::Mjpeg => {
                match (&self.path, &self.command) {
                    (Some(_), Some(_)) => return Err(invalid(
                        "source.command",
                        "source.path and source.command are exclusive for kind = \"mjpeg\": set \
                         only one (a file, or a program writing MJPEG to stdout)",
                    )),
                    (None, None) => return Err(invalid(
                        "source.path",
                        "kind = \"mjpeg\" needs source.path (an MJPEG file) or source.command (a \
                         program writing MJPEG to stdout, as an argv list)",
                    )),
                    (None, Some(argv)) => match argv.first() {
                        None => return Err(invalid(
                            "source.command",
                            "must be a non-empty argv list, e.g. [\"rpicam-vid\", \"-t\", \"0\", \
                             \"--codec\", \"mjpeg\", \"-o\", \"-\"]",
                        )),
                        Some(p) if p.trim().is_empty() => {
                            return Err(invalid(
                                "source.command",
                                "the first element (the program to run) must not be empty",
                            ))
                        }
                        Some(_) => {}
                    },
                    (Some(_), None) => {}
                }
            }
            SourceKind::Images => {
                if self.command.is_some() {
                    return Err(unused("source.command"));
                }
                if self.path.is_none() {
                    return Err(invalid(
                        "source.path",
                        "kind = \"images\" needs source.path, a directory of .jpg/.jpeg/.png \
                         files",
                    ));
                }
            }
            SourceKind::Camera | SourceKind::Synthetic => {
                if self.path.is_some() {
                    return Err(unused("source.path"));
                }
                if self.command.is_some() {
                    return Err(unused("source.command"));
                }
            }
        }
        if let Some(p) = &self.path {
            if p.as_os_str().is_empty() {
                return Err(invalid("source.path", "must not be empty"));
            }
        }
        check_fps(self.fps).map_err(|m| invalid("source.fps", m))?;
        if self.kind == SourceKind::Camera && self.device.trim().is_empty() {
            return Err(invalid(
                "source.device",
                "must be a V4L2 device index (\"0\") or path (\"/dev/video0\"), not empty",
            ));
        }
        Ok(())
    }

    /// `camera` and `synthetic` frames of `width`×`height` must be within `[limits]`: a
    /// camera asked for more than the limits allow would have every frame refused.
    pub(crate) fn check_limits(&self, limits: &super::LimitsConfig) -> Result<(), ConfigError> {
        if !matches!(self.kind, SourceKind::Camera | SourceKind::Synthetic) {
            return Ok(());
        }
        limits
            .limits()
            .check_dimensions(self.width.get(), self.height.get())
            .map_err(|e| {
                invalid(
                    "source.width",
                    format!(
                        "{}x{} frames are over [limits]: {e}; lower source.width/height or raise                          the limit",
                        self.width, self.height
                    ),
                )
            })
    }

    /// Makes `path` absolute against `base` (the config file's directory).
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &self.path {
            self.path = Some(base.join(p));
        }
    }

    /// Checks against the file system: `path` exists and is a directory (`images`) or not
    /// (`mjpeg`), and is readable.
    pub(crate) fn check_files(&self) -> Result<(), ConfigError> {
        const KEY: &str = "source.path";
        let Some(path) = &self.path else {
            return Ok(());
        };
        let want_dir = self.kind == SourceKind::Images;
        let what = if want_dir {
            "directory of images"
        } else {
            "MJPEG file"
        };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(
                    KEY,
                    format!(
                        "{what} {} does not exist (relative paths are relative to the \
                         configuration file's directory)",
                        path.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(invalid(
                    KEY,
                    format!("cannot access {}: {e}", path.display()),
                ))
            }
        };
        match (want_dir, meta.is_dir()) {
            (true, false) => {
                return Err(invalid(
                    KEY,
                    format!(
                        "{} is not a directory; kind = \"images\" needs a directory of images \
                         (use kind = \"mjpeg\" for an MJPEG file)",
                        path.display()
                    ),
                ))
            }
            (false, true) => {
                return Err(invalid(
                    KEY,
                    format!(
                        "{} is a directory; kind = \"mjpeg\" needs an MJPEG file (use kind = \
                         \"images\" for a directory of images)",
                        path.display()
                    ),
                ))
            }
            _ => {}
        }
        if !want_dir && !meta.is_file() {
            // A character device (`/dev/zero`, `/dev/urandom`) or a FIFO never ends: the agent
            // would read it for ever. A program's output goes through source.command.
            return Err(invalid(
                KEY,
                format!(
                    "{} is not a regular file (a device, FIFO or socket); kind = \"mjpeg\" reads \
                     an MJPEG file, or a program's stdout through source.command",
                    path.display()
                ),
            ));
        }
        let readable = if want_dir {
            std::fs::read_dir(path).map(|_| ())
        } else {
            std::fs::File::open(path).map(|_| ())
        };
        readable.map_err(|e| invalid(KEY, format!("cannot read {}: {e}", path.display())))
    }

    /// Checks that `command[0]` is an executable: a path to one, or found on `search_path`
    /// (`$PATH`).
    pub(crate) fn check_command(&self, search_path: Option<&str>) -> Result<(), ConfigError> {
        let Some(program) = self.command.as_ref().and_then(|c| c.first()) else {
            return Ok(());
        };
        if program.contains('/') {
            return if is_executable(Path::new(program)) {
                Ok(())
            } else {
                Err(invalid(
                    "source.command",
                    format!("{program} is not an executable file"),
                ))
            };
        }
        let dirs = search_path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
        if std::env::split_paths(dirs).any(|d| is_executable(&d.join(program))) {
            return Ok(());
        }
        let hint = if program == "rpicam-vid" || program == "libcamera-vid" {
            " (on Raspberry Pi OS: sudo apt install rpicam-apps)"
        } else {
            ""
        };
        Err(invalid(
            "source.command",
            format!("program {program:?} is not installed: not found on PATH ({dirs}){hint}"),
        ))
    }

    /// One line saying what the source is, for `check-config`'s summary.
    pub(crate) fn describe(&self) -> String {
        match (self.kind, &self.path, &self.command) {
            (_, Some(p), _) => format!("{} {}", self.kind.as_str(), p.display()),
            (_, _, Some(c)) => format!("{} `{}`", self.kind.as_str(), c.join(" ")),
            (SourceKind::Camera, _, _) => format!("camera {}", self.device),
            _ => self.kind.as_str().to_string(),
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
