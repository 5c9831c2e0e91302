//! Files that are on disk before their offset is committed: write to a temporary file,
//! `fsync` it, rename it into place, `fsync` the directory; every directory created on the
//! way is `fsync`ed into its parent. After a power cut a committed offset never points past
//! a file that is not there.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What [`Dirs::write_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A new file, durable.
    New,
    /// A file of that name was already there; it was left as it is.
    Exists,
}

/// Directories known to exist durably (so each is checked and created once per run).
#[derive(Debug, Default)]
pub struct Dirs {
    known: HashSet<PathBuf>,
}

/// `fsync` of a directory, so the names created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

impl Dirs {
    /// Makes `dir` exist, creating missing parents; each directory created is made durable
    /// by an `fsync` of its parent.
    ///
    /// Errors: the OS error, e.g. a file where a directory should be (`NotADirectory`).
    pub fn ensure(&mut self, dir: &Path) -> io::Result<()> {
        if self.known.contains(dir) {
            return Ok(());
        }
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "exists and is not a directory",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = dir.parent().unwrap_or(Path::new(""));
                if !parent.as_os_str().is_empty() {
                    self.ensure(parent)?;
                }
                match fs::create_dir(dir) {
                    Ok(()) => sync_dir(parent)?,
                    // Made by someone else meanwhile: theirs to sync, and it is a directory
                    // or the next write says otherwise.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        self.known.insert(dir.to_path_buf());
        Ok(())
    }

    /// Writes `data` to `dir/name` durably unless a file of that name exists; `dir` is
    /// created as by [`Dirs::ensure`]. The temporary file is `dir/.<name>.tmp` (hidden; a
    /// leftover from a crash is overwritten by the next attempt).
    ///
    /// Errors: the OS error of any step; the temporary file is removed on failure.
    pub fn write_new(&mut self, dir: &Path, name: &str, data: &[u8]) -> io::Result<Written> {
        self.ensure(dir)?;
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            return Ok(Written::Exists);
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| Written::New)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_never_overwrites() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dev").join("20261203");
        let mut dirs = Dirs::default();
        assert_eq!(
            dirs.write_new(&dir, "a.jpg", b"first").unwrap(),
            Written::New
        );
        assert_eq!(
            dirs.write_new(&dir, "a.jpg", b"second").unwrap(),
            Written::Exists
        );
        assert_eq!(fs::read(dir.join("a.jpg")).unwrap(), b"first");
        // Nothing but the file: the temporary one was renamed.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.jpg")]);
    }

    #[test]
    fn a_file_in_the_way_is_an_error_not_a_panic() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("dev"), b"x").unwrap();
        let mut dirs = Dirs::default();
        let err = dirs
            .write_new(&root.path().join("dev").join("d"), "a.jpg", b"x")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory, "{err}");
    }
}
