//! Where the real footage and photographs of the tests and `edgecam bench` live: the folder
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
