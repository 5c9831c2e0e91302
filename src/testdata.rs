//! Where the real footage and photographs of the tests and `edgecam-bench` live: the folder
//! that `scripts/testdata` derives from Debian packages (OpenCV's `vtest.avi` in
//! `opencv-doc`, photographs in `mate-backgrounds`) and checks by SHA-256. Nothing here
//! downloads or derives anything; a missing file is an error that names the script.

use std::path::{Path, PathBuf};

/// Environment variable that moves the folder (the same one `scripts/testdata` writes to).
pub const ENV: &str = "EDGECAM_TESTDATA";

/// The folder when [`ENV`] is unset: `target/testdata`, relative to the working directory
/// (the repository when run through cargo, which starts tests in the package root).
pub const DEFAULT_DIR: &str = "target/testdata";

/// A file of the folder that is not there.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} is missing: run scripts/testdata, which derives the real footage and photographs \
     from Debian packages into {} ({ENV} moves it)",
    path.display(),
    dir.display()
)]
pub struct Missing {
    /// The file looked for.
    pub path: PathBuf,
    /// The folder it was looked for in ([`dir`]).
    pub dir: PathBuf,
}

/// The folder: `$EDGECAM_TESTDATA` when set and not empty, else [`DEFAULT_DIR`].
pub fn dir() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

/// The absolute path of `name` (e.g. `"vtest-768x576-10fps.mjpeg"`) in [`dir`], so that it
/// can go into a configuration whatever its working directory.
///
/// # Errors
/// [`Missing`] when no such file is there.
pub fn file(name: impl AsRef<Path>) -> Result<PathBuf, Missing> {
    let dir = dir();
    let joined = dir.join(name);
    let path = std::path::absolute(&joined).unwrap_or(joined);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Missing { path, dir })
    }
}

/// `rgb` (RGB8, `width`×`height`) as a V4L2 camera sends it in YUYV: packed `Y0 U Y1 V`,
/// BT.601 limited range, each pair of pixels sharing the mean of their chroma;
/// `4 * ceil(width/2) * height` bytes. What the tests and `edgecam-bench` make YUYV camera
/// frames from, there being no camera.
pub fn yuyv_from_rgb(rgb: &crate::frame::RawImage) -> Vec<u8> {
    let f = |p: &[u8], k: [f32; 3], o: f32| {
        o + (k[0] * p[0] as f32 + k[1] * p[1] as f32 + k[2] * p[2] as f32) / 255.0
    };
    let w = rgb.width as usize;
    let mut out = Vec::with_capacity(w.div_ceil(2) * 4 * rgb.height as usize);
    for row in rgb.data.chunks_exact(w * 3) {
        for pair in row.chunks(6) {
            let a = &pair[..3];
            let b = if pair.len() == 6 { &pair[3..] } else { a };
            let y = |p| f(p, [65.481, 128.553, 24.966], 16.0).round() as u8;
            let cb = |p| f(p, [-37.797, -74.203, 112.0], 128.0);
            let cr = |p| f(p, [112.0, -93.786, -18.214], 128.0);
            out.extend([
                y(a),
                ((cb(a) + cb(b)) / 2.0).round() as u8,
                y(b),
                ((cr(a) + cr(b)) / 2.0).round() as u8,
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_the_script_that_makes_it() {
        let e = file("no-such-footage.mjpeg").unwrap_err();
        assert!(e.path.ends_with("no-such-footage.mjpeg"));
        let msg = e.to_string();
        assert!(msg.contains("scripts/testdata"), "{msg}");
        assert!(msg.contains("no-such-footage.mjpeg"), "{msg}");
    }
}
