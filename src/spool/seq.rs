//! `edgecam.seq` across restarts: the next sequence number, kept in file `seq` of the spool
//! directory.
//!
//! Numbers are reserved in blocks of [`BLOCK`]: the file holds the end of the current
//! block, written (atomically, durably) before the first number of a block is handed out,
//! and the exact next number at a clean [`SeqFile::close`]. After a crash the sequence
//! therefore jumps forward by less than [`BLOCK`] and never goes backwards.

use std::io;

use super::Storage;

/// Numbers reserved per write of the `seq` file.
pub const BLOCK: u64 = 1024;

const FILE: &str = "seq";

/// The persistent sequence counter.
pub struct SeqFile {
    storage: Box<dyn Storage>,
    next: u64,
    reserved_until: u64,
    write_failed: bool,
}

impl SeqFile {
    /// Reads the counter (0 when the file is missing or unreadable; the latter is logged).
    ///
    /// Errors: reading failed for a reason other than the file being missing.
    pub fn open(storage: Box<dyn Storage>) -> io::Result<Self> {
        let next = match storage.read(FILE) {
            Ok(b) => match super::format::unseal(&b).and_then(|d| <[u8; 8]>::try_from(d).ok()) {
                Some(a) => u64::from_le_bytes(a),
                None => {
                    tracing::warn!(
                        bytes = b.len(),
                        "spool seq file damaged; edgecam.seq restarts at 0"
                    );
                    0
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(SeqFile {
            storage,
            next,
            reserved_until: next,
            write_failed: false,
        })
    }

    /// The next number, without taking it.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Takes the next number. When a new block must be reserved and the write fails, the
    /// number is still handed out (frames are not held up by the disk) and
    /// [`SeqFile::write_failed`] turns `true`: a crash before the next successful write may
    /// then repeat numbers.
    pub fn take(&mut self) -> u64 {
        if self.next >= self.reserved_until {
            let until = self.next + BLOCK;
            match self
                .storage
                .put(FILE, &super::format::seal(&until.to_le_bytes()))
            {
                Ok(()) => {
                    self.reserved_until = until;
                    self.write_failed = false;
                }
                Err(e) => {
                    if !self.write_failed {
                        tracing::error!(error = %e, "cannot write the spool seq file");
                    }
                    self.write_failed = true;
                }
            }
        }
        self.next += 1;
        self.next - 1
    }

    /// `true` when the last reservation could not be written.
    pub fn write_failed(&self) -> bool {
        self.write_failed
    }

    /// Writes the exact next number, so a clean restart continues without a gap.
    ///
    /// Errors: the write failed (the reserved block end stays, so a restart jumps forward).
    pub fn close(&mut self) -> io::Result<()> {
        self.storage
            .put(FILE, &super::format::seal(&self.next.to_le_bytes()))?;
        self.reserved_until = self.next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemStorage;
    use super::*;

    #[test]
    fn continues_after_close_and_jumps_forward_after_a_crash() {
        let mem = MemStorage::new();
        let mut s = SeqFile::open(Box::new(mem.clone())).unwrap();
        let first: Vec<u64> = (0..5).map(|_| s.take()).collect();
        assert_eq!(first, [0, 1, 2, 3, 4]);
        s.close().unwrap();
        let mut s = SeqFile::open(Box::new(mem.clone())).unwrap();
        assert_eq!(s.take(), 5);
        for _ in 0..2000 {
            s.take();
        }
        let last = s.peek() - 1;
        drop(s); // crash: no close
        mem.power_loss(|_, _| 0);
        let mut s = SeqFile::open(Box::new(mem.clone())).unwrap();
        let after = s.take();
        assert!(after > last, "{after} after {last}");
        assert!(after - last <= BLOCK, "{after} after {last}");
    }

    #[test]
    fn a_damaged_seq_file_is_not_trusted() {
        let mem = MemStorage::new();
        let mut s = SeqFile::open(Box::new(mem.clone())).unwrap();
        s.take();
        s.close().unwrap();
        // A bit flip in the number: without the checksum it would read as another number.
        mem.edit("seq", |d| d[0] ^= 0x40);
        let s = SeqFile::open(Box::new(mem)).unwrap();
        assert_eq!(s.peek(), 0);
    }

    #[test]
    fn a_full_disk_does_not_stop_numbering() {
        let mem = MemStorage::new();
        let mut s = SeqFile::open(Box::new(mem.clone())).unwrap();
        mem.set_full(true);
        assert_eq!((s.take(), s.take()), (0, 1));
        assert!(s.write_failed());
        mem.set_full(false);
        for _ in 0..BLOCK {
            s.take();
        }
        assert!(!s.write_failed());
    }
}
