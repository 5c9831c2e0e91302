//! Where the spool's files live: a directory ([`DirStorage`]), or memory with fault
//! injection for tests ([`MemStorage`]).
//!
//! The spool needs only flat files by name: append, read, sync, truncate, remove, and an
//! atomic replace for small state files. Every operation that changes which files exist
//! (create, rename, remove) is made durable by syncing the directory as well.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Flat named files, as the spool uses them.
pub trait Storage: Send {
    /// File names present, in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// A whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// `len` bytes of `name` from byte `offset`.
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The length of `name`, bytes.
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Appends `data` to `name`, creating it (durably) when missing. Not yet synced.
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended to `name` durable (`fdatasync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Cuts `name` to `len` bytes, durably.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Removes `name`, durably. Missing is not an error.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Replaces `name` with `data` atomically and durably (write, sync, rename, sync dir).
    fn put(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
}

/// Files in one directory.
#[derive(Debug)]
pub struct DirStorage {
    dir: PathBuf,
    /// Open handles of files appended to (the active segment).
    open: HashMap<String, File>,
    /// The held `lock` file, once [`DirStorage::lock`] succeeded.
    lock: Option<File>,
}

impl DirStorage {
    /// Uses `dir`, creating it (mode 0700, parents included) when missing.
    ///
    /// Errors: the directory cannot be created or is not a directory.
    pub fn open(dir: &Path) -> io::Result<Self> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(DirStorage {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            lock: None,
        })
    }

    /// Takes an exclusive advisory lock (`flock`) on file `lock` in the directory, held
    /// until this value is dropped, so two agents never share a spool.
    ///
    /// Errors: [`io::ErrorKind::WouldBlock`] with a message naming the directory when
    /// another process holds it; other I/O errors as they come.
    pub fn lock(&mut self) -> io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.path("lock"))?;
        match f.try_lock() {
            Ok(()) => {
                self.lock = Some(f);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "spool directory {} is in use by another edgecam process (give each \
                     device its own spool.path)",
                    self.dir.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let path = self.path(name);
            let existed = path.exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .mode(0o600)
                .open(&path)?;
            if !existed {
                sync_dir(&self.dir)?;
            }
            // Keep one handle at a time: only the active segment is appended to.
            self.open.clear();
            self.open.insert(name.to_string(), f);
        }
        Ok(self.open.get_mut(name).expect("inserted above"))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage for DirStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                if let Some(n) = e.file_name().to_str() {
                    names.push(n.to_string());
                }
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(self.path(name))?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        match self.open.get(name) {
            Some(f) => f.read_exact_at(&mut buf, offset)?,
            None => File::open(self.path(name))?.read_exact_at(&mut buf, offset)?,
        }
        Ok(buf)
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(name))?.len())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(data)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        match self.open.get(name) {
            Some(f) => f.sync_data(),
            None => File::open(self.path(name))?.sync_data(),
        }
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let f = self.handle(name)?;
        f.set_len(len)?;
        f.seek(SeekFrom::End(0))?;
        f.sync_all()
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn put(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.path(&format!("{name}.tmp"));
        {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, self.path(name))?;
        self.open.remove(name);
        sync_dir(&self.dir)
    }
}

/// One file of a [`MemStorage`].
#[derive(Debug, Clone, Default)]
struct MemFile {
    /// What a power loss keeps for sure.
    synced: Vec<u8>,
    /// What a reader sees now.
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<String, MemFile>,
    /// Writes fail with `ENOSPC` while set.
    full: bool,
    /// Bytes ever appended or put (for write-amplification checks).
    written: u64,
}

/// Files in memory, for tests: clones share the same files, so a test keeps a handle while
/// the spool owns another, then simulates a power loss or a full disk.
#[derive(Debug, Clone, Default)]
pub struct MemStorage(Arc<Mutex<MemState>>);

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl MemStorage {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// A power loss: every file keeps what was synced plus, of what was not, the first
    /// `keep(name, unsynced_len)` bytes (a torn write).
    pub fn power_loss(&self, mut keep: impl FnMut(&str, usize) -> usize) {
        let mut st = self.0.lock().unwrap();
        for (name, f) in st.files.iter_mut() {
            let unsynced = f.data.len().saturating_sub(f.synced.len());
            let k = keep(name, unsynced).min(unsynced);
            let mut d = f.synced.clone();
            d.extend_from_slice(&f.data[f.synced.len()..f.synced.len() + k]);
            f.data = d;
            f.synced = f.data.clone();
        }
    }

    /// While `full`, every write fails with `ENOSPC`.
    pub fn set_full(&self, full: bool) {
        self.0.lock().unwrap().full = full;
    }

    /// Edits the bytes of `name` in place (to damage them), synced as they are.
    pub fn edit(&self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut st = self.0.lock().unwrap();
        let file = st.files.entry(name.to_string()).or_default();
        f(&mut file.data);
        file.synced = file.data.clone();
    }

    /// Bytes in every file now.
    pub fn total_bytes(&self) -> u64 {
        let st = self.0.lock().unwrap();
        st.files.values().map(|f| f.data.len() as u64).sum()
    }

    /// Bytes ever written.
    pub fn written(&self) -> u64 {
        self.0.lock().unwrap().written
    }
}

impl Storage for MemStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.0.lock().unwrap().files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let st = self.0.lock().unwrap();
        st.files
            .get(name)
            .map(|f| f.data.clone())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let st = self.0.lock().unwrap();
        let f = st
            .files
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let start = offset as usize;
        f.data
            .get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let st = self.0.lock().unwrap();
        st.files
            .get(name)
            .map(|f| f.data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        if st.full {
            return Err(enospc());
        }
        st.written += data.len() as u64;
        st.files
            .entry(name.to_string())
            .or_default()
            .data
            .extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        if let Some(f) = st.files.get_mut(name) {
            f.synced = f.data.clone();
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        let f = st.files.entry(name.to_string()).or_default();
        f.data.truncate(len as usize);
        f.synced = f.data.clone();
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.0.lock().unwrap().files.remove(name);
        Ok(())
    }

    fn put(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut st = self.0.lock().unwrap();
        if st.full {
            return Err(enospc());
        }
        st.written += data.len() as u64;
        st.files.insert(
            name.to_string(),
            MemFile {
                synced: data.to_vec(),
                data: data.to_vec(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_storage_appends_reads_truncates_replaces_and_removes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let mut s = DirStorage::open(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        s.append("x", b"hello ").unwrap();
        s.append("x", b"world").unwrap();
        s.sync("x").unwrap();
        assert_eq!(s.read("x").unwrap(), b"hello world");
        assert_eq!(s.read_at("x", 6, 5).unwrap(), b"world");
        s.truncate("x", 5).unwrap();
        s.append("x", b"!").unwrap();
        assert_eq!(s.read("x").unwrap(), b"hello!");
        s.put("state", b"1").unwrap();
        s.put("state", b"22").unwrap();
        assert_eq!(s.read("state").unwrap(), b"22");
        let mut names = s.list().unwrap();
        names.sort();
        assert_eq!(names, ["state", "x"]);
        s.remove("x").unwrap();
        s.remove("x").unwrap();
        assert_eq!(s.list().unwrap(), ["state"]);
        s.lock().unwrap();
        let mut other = DirStorage::open(&dir).unwrap();
        let e = other.lock().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(e.to_string().contains("in use by another edgecam"), "{e}");
        drop(s);
        other.lock().unwrap();
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        assert!(DirStorage::open(&tmp.path().join("file")).is_err());
    }

    #[test]
    fn mem_storage_loses_only_unsynced_bytes_and_can_be_full() {
        let mut m = MemStorage::new();
        m.append("s", b"abc").unwrap();
        m.sync("s").unwrap();
        m.append("s", b"defg").unwrap();
        m.power_loss(|_, n| n / 2);
        assert_eq!(m.read("s").unwrap(), b"abcde");
        m.set_full(true);
        assert_eq!(m.append("s", b"x").unwrap_err().raw_os_error(), Some(28));
        m.set_full(false);
        m.append("s", b"x").unwrap();
        assert_eq!(m.total_bytes(), 6);
    }
}
