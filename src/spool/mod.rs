//! The spool: frames kept on disk while the sink cannot take them, replayed when it can.
//!
//! A segment log of our own, chosen by measurement over redb 3.1.3 on this project's
//! machine (64 KB and 400 KB records at 30/s, group commit; see the README): recovery of a
//! 1 GB spool after a crash took 0.137 s against 2.25–2.82 s, and it writes 1.016 / 1.003
//! bytes to disk per byte spooled against 1.093 / 1.321 (SD card wear), with ~70 MB peak
//! memory against 530–930 MB.
//!
//! Layout: files `<first id, 20 digits>.seg` in one directory, each a sequence of records
//! ([`format`]); records are appended to the newest segment and made durable by group
//! commit ([`Spool::commit`], one `fdatasync`); a new segment starts when the current one
//! reaches [`SpoolOptions::segment_bytes`], after a commit. A segment whose records are all
//! acknowledged (or dropped) is unlinked. The spool never holds more than
//! [`SpoolOptions::max_bytes`] plus one segment: appending past it drops the oldest
//! segment, and each frame lost that way is counted ([`Dropped::full`]).
//!
//! Recovery ([`Spool::open`]) reads the newest segment whole and the older ones (synced
//! before the next started) by their record headers only: a torn tail is truncated, a
//! damaged record costs that record only ([`Recovery::corrupt`], or counted as
//! [`Dropped::corrupt`] when its body fails its checksum at replay), and everything intact
//! becomes backlog. A clean [`Spool::close`] also writes the ids acknowledged in segments still
//! kept (file `acked`), so a clean restart resends nothing; after a crash the
//! acknowledged records of a kept segment are sent again (at-least-once: `edgecam.frame_id`
//! tells the copies).

pub mod format;
pub mod seq;
pub mod storage;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io;
use std::time::{Duration, SystemTime};

pub use format::FormatError;
pub use seq::SeqFile;
pub use storage::{DirStorage, MemStorage, Storage};

use crate::record::header;
use crate::sink::Outgoing;

/// How large the spool may grow and how long it keeps frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Bytes on disk the segments may hold; the oldest segment goes when an append would
    /// pass it (the newest segment is never dropped, so the bound is this plus one segment).
    pub max_bytes: u64,
    /// Frames captured longer ago than this are dropped (counted as expired); `None` keeps
    /// them until space runs out.
    pub max_age: Option<Duration>,
    /// Bytes after which a new segment starts.
    pub segment_bytes: u64,
}

impl SpoolOptions {
    /// `max_bytes` and `max_age`, with segments of `max_bytes / 8` clamped to 64 KiB–8 MiB.
    pub fn new(max_bytes: u64, max_age: Option<Duration>) -> Self {
        SpoolOptions {
            max_bytes,
            max_age,
            segment_bytes: (max_bytes / 8).clamp(64 << 10, 8 << 20),
        }
    }
}

/// Why [`Spool::append`] did not keep a record. The caller still holds every record named
/// here and must keep it in memory (or count it lost).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The record does not fit the on-disk format (a field is too long).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Writing failed (a full disk: `ENOSPC`, an I/O error); the record was not kept.
    #[error("spool write failed: {0}")]
    Io(#[source] io::Error),
    /// Starting a new segment needed a commit, and it failed: the record was not kept, and
    /// the records appended since the last commit (`returned`, by id) were forgotten too.
    #[error("spool commit failed: {error}")]
    Commit {
        /// The I/O error.
        #[source]
        error: io::Error,
        /// Ids of the forgotten records.
        returned: Vec<u64>,
    },
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting to be sent.
    pub records: u64,
    /// Bytes of those segments.
    pub bytes: u64,
    /// Damaged records skipped (each one lost).
    pub corrupt: u64,
    /// Bytes of torn tails truncated.
    pub torn_bytes: u64,
    /// Records a clean close had marked acknowledged, not sent again.
    pub acked: u64,
}

/// Records the spool dropped without delivery, by reason, since the last
/// [`Spool::take_dropped`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Oldest segment dropped to stay under `max_bytes`.
    pub full: u64,
    /// Older than `max_age`.
    pub expired: u64,
    /// Unreadable when replayed (damaged on disk since it was written or recovered).
    pub corrupt: u64,
}

/// Sizes, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records kept and not yet acknowledged.
    pub records: u64,
    /// Of those, records waiting to be replayed (not with the sink, committed).
    pub backlog: u64,
    /// Bytes of all segments.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    offset: u64,
    len: u32,
    captured_us: i64,
    /// Acknowledged or dropped: never to be sent again.
    done: bool,
}

#[derive(Debug)]
struct Segment {
    name: String,
    bytes: u64,
    entries: Vec<Entry>,
    /// Entries not done.
    live: usize,
}

/// The spool over storage `S` (a directory in production).
pub struct Spool<S: Storage = DirStorage> {
    storage: S,
    opts: SpoolOptions,
    /// Oldest first; ids increase across and within segments.
    segments: VecDeque<Segment>,
    /// The newest segment takes appends (after open, a new one is started first).
    appending: bool,
    next_id: u64,
    /// Committed, not done, not with the sink: what [`Spool::next_backlog`] hands out.
    backlog: BTreeSet<u64>,
    /// Records the sink holds now (not replayed until [`Spool::release`]d).
    with_sink: HashSet<u64>,
    /// Appended since the last commit, oldest first.
    uncommitted: Vec<u64>,
    total_bytes: u64,
    dropped: Dropped,
    /// Records the sink held when their segment was dropped to make room: not lost (the
    /// sink still has them), but no longer on disk. See [`Spool::take_evicted`].
    evicted: Vec<u64>,
}

const SEGMENT_SUFFIX: &str = ".seg";
/// A fully acknowledged newest segment of at least this many bytes is unlinked at once
/// rather than when it fills: acknowledgements are not written to disk (except at a clean
/// close), so this bounds what a crash makes the next start send again.
pub const RETIRE_ACKED_BYTES: u64 = 256 << 10;
const ACKED_FILE: &str = "acked";

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}{SEGMENT_SUFFIX}")
}

impl<S: Storage> Spool<S> {
    /// Opens the spool kept in `storage`, recovering what a crash left (see the module
    /// documentation). Never fails on damaged content, only on I/O errors.
    ///
    /// Errors: listing, reading, truncating or removing a file failed.
    pub fn open(mut storage: S, opts: SpoolOptions) -> io::Result<(Self, Recovery)> {
        let mut rec = Recovery::default();
        let mut names: Vec<(u64, String)> = storage
            .list()?
            .into_iter()
            .filter_map(|n| {
                let id = n.strip_suffix(SEGMENT_SUFFIX)?.parse::<u64>().ok()?;
                Some((id, n))
            })
            .collect();
        names.sort();
        let acked: HashSet<u64> = match storage.read(ACKED_FILE) {
            Ok(b) => match format::unseal(&b) {
                Some(d) => d
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                None => {
                    // Trusting it could skip undelivered frames: resend instead.
                    tracing::warn!("spool acked file damaged; ignored (frames may be resent)");
                    HashSet::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        let mut segments = VecDeque::new();
        let mut next_id = 0u64;
        let mut last_id: Option<u64> = None;
        let count = names.len();
        for (i, (base, name)) in names.into_iter().enumerate() {
            next_id = next_id.max(base);
            // A segment before the newest was synced whole before the next one started:
            // its headers are enough now (bodies are checked when replayed). The newest,
            // or one the quick scan does not trust, is read and checked in full.
            let len = storage.len(&name)?;
            let quick = if i + 1 < count {
                format::scan_headers(len, |off, n| storage.read_at(&name, off, n))?
            } else {
                None
            };
            let (scan, file_len) = match quick {
                Some(s) => (s, len),
                None => {
                    let buf = storage.read(&name)?;
                    let len = buf.len() as u64;
                    (format::scan(&buf), len)
                }
            };
            rec.corrupt += scan.corrupt;
            let mut bytes = file_len;
            if scan.valid_end < bytes {
                rec.torn_bytes += bytes - scan.valid_end;
                if i + 1 == count {
                    storage.truncate(&name, scan.valid_end)?;
                    bytes = scan.valid_end;
                }
            }
            let mut entries = Vec::with_capacity(scan.records.len());
            for f in scan.records {
                // Ids only grow; one out of order is damage that happened to check out.
                if last_id.is_some_and(|l| f.id <= l) {
                    rec.corrupt += 1;
                    continue;
                }
                last_id = Some(f.id);
                next_id = next_id.max(f.id + 1);
                let done = acked.contains(&f.id);
                rec.acked += done as u64;
                entries.push(Entry {
                    id: f.id,
                    offset: f.offset,
                    len: f.len,
                    captured_us: f.captured_us,
                    done,
                });
            }
            let live = entries.iter().filter(|e| !e.done).count();
            if live == 0 {
                storage.remove(&name)?;
                continue;
            }
            segments.push_back(Segment {
                name,
                bytes,
                entries,
                live,
            });
        }
        // Only valid for this open: records acknowledged from now on are not in it.
        storage.remove(ACKED_FILE)?;
        let mut spool = Spool {
            storage,
            opts,
            segments,
            appending: false,
            next_id,
            backlog: BTreeSet::new(),
            with_sink: HashSet::new(),
            uncommitted: Vec::new(),
            total_bytes: 0,
            dropped: Dropped::default(),
            evicted: Vec::new(),
        };
        for s in &spool.segments {
            spool.total_bytes += s.bytes;
            spool
                .backlog
                .extend(s.entries.iter().filter(|e| !e.done).map(|e| e.id));
        }
        // A smaller max_bytes than last time: drop the oldest now.
        while spool.total_bytes > spool.opts.max_bytes && !spool.segments.is_empty() {
            spool.drop_oldest_segment()?;
        }
        rec.records = spool.backlog.len() as u64;
        rec.bytes = spool.total_bytes;
        Ok((spool, rec))
    }

    /// Appends `out` and returns its spool id. Not durable until the next [`Spool::commit`]
    /// (and not handed out as backlog before it). `with_sink`: the sink holds the record
    /// already, so it is not replayed unless [`Spool::release`]d.
    ///
    /// Errors: [`SpoolError`]; the record is not kept.
    pub fn append(&mut self, out: &Outgoing, with_sink: bool) -> Result<u64, SpoolError> {
        let id = self.next_id;
        let bytes = format::encode(id, out)?;
        let len = bytes.len() as u64;
        let roll = match self.segments.back() {
            Some(s) if self.appending => s.bytes + len > self.opts.segment_bytes && s.bytes > 0,
            _ => true,
        };
        if roll {
            self.commit()
                .map_err(|(error, returned)| SpoolError::Commit { error, returned })?;
            self.segments.push_back(Segment {
                name: segment_name(id),
                bytes: 0,
                entries: Vec::new(),
                live: 0,
            });
            self.appending = true;
        }
        while self.total_bytes + len > self.opts.max_bytes && self.segments.len() > 1 {
            self.drop_oldest_segment().map_err(SpoolError::Io)?;
        }
        let seg = self
            .segments
            .back_mut()
            .expect("a segment was started above");
        if let Err(e) = self.storage.append(&seg.name, &bytes) {
            // A partial write would shift every later offset: cut it off again.
            let _ = self.storage.truncate(&seg.name, seg.bytes);
            if seg.entries.is_empty() {
                let _ = self.storage.remove(&seg.name);
                self.segments.pop_back();
                self.appending = false;
            }
            return Err(SpoolError::Io(e));
        }
        seg.entries.push(Entry {
            id,
            offset: seg.bytes,
            len: len as u32,
            captured_us: format::micros(out.captured_at),
            done: false,
        });
        seg.bytes += len;
        seg.live += 1;
        self.total_bytes += len;
        self.next_id += 1;
        self.uncommitted.push(id);
        if with_sink {
            self.with_sink.insert(id);
        }
        Ok(id)
    }

    /// Makes every appended record durable (one `fdatasync` of the newest segment; earlier
    /// segments were synced before the next one started). Committed records that the sink
    /// does not hold become backlog.
    ///
    /// Errors: the sync failed. Then the records appended since the last commit are
    /// forgotten and their ids returned: the caller keeps them in memory.
    pub fn commit(&mut self) -> Result<(), (io::Error, Vec<u64>)> {
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let seg = self
            .segments
            .back_mut()
            .expect("uncommitted records have a segment");
        match self.storage.sync(&seg.name) {
            Ok(()) => {
                for id in std::mem::take(&mut self.uncommitted) {
                    if !self.with_sink.contains(&id) {
                        self.return_to_backlog(id);
                    }
                }
                Ok(())
            }
            Err(error) => {
                let ids = std::mem::take(&mut self.uncommitted);
                let first = ids[0];
                let keep = seg.entries.partition_point(|e| e.id < first);
                let cut = seg.entries[keep].offset;
                for e in seg.entries.drain(keep..) {
                    seg.live -= !e.done as usize;
                    self.with_sink.remove(&e.id);
                }
                self.total_bytes -= seg.bytes - cut;
                seg.bytes = cut;
                let _ = self.storage.truncate(&seg.name, cut);
                Err((error, ids))
            }
        }
    }

    /// Records appended since the last commit (an append that starts a new segment
    /// commits the ones before it).
    pub fn uncommitted(&self) -> usize {
        self.uncommitted.len()
    }

    /// Record `id` was delivered (or refused for good): forgets it, and unlinks its segment
    /// once nothing in it is left (the newest segment only when a new one starts). Unknown
    /// or already acknowledged ids are ignored.
    ///
    /// Errors: unlinking a segment failed.
    pub fn ack(&mut self, id: u64) -> io::Result<()> {
        self.finish(id);
        // The newest segment, fully acknowledged and past [`RETIRE_ACKED_BYTES`]: retire it
        // now (the next append starts a new one), so a crash resends at most that much.
        if let Some(last) = self.segments.back() {
            if self.appending
                && last.live == 0
                && self.uncommitted.is_empty()
                && last.bytes >= RETIRE_ACKED_BYTES.min(self.opts.segment_bytes)
            {
                self.appending = false;
            }
        }
        self.unlink_done()
    }

    /// The sink gave record `id` back undelivered: it becomes backlog again (once
    /// committed).
    pub fn release(&mut self, id: u64) {
        if self.with_sink.remove(&id) && !self.uncommitted.contains(&id) {
            self.return_to_backlog(id);
        }
    }

    /// Makes committed record `id` backlog, unless it is done (or gone).
    fn return_to_backlog(&mut self, id: u64) {
        if find(&self.segments, id).is_some_and(|e| !e.done) {
            self.backlog.insert(id);
        }
    }

    /// The oldest committed record waiting to be replayed, with an `edgecam.replayed: 1`
    /// header added; it counts as held by the sink until [`Spool::ack`] or
    /// [`Spool::release`]. Records older than `max_age` are dropped on the way (counted).
    ///
    /// Errors: reading failed (the record stays in the backlog). A record that no longer
    /// decodes is dropped and counted as corrupt instead.
    pub fn next_backlog(&mut self, now: SystemTime) -> io::Result<Option<(u64, Outgoing)>> {
        let cutoff = self.cutoff(now);
        while let Some(&id) = self.backlog.first() {
            let Some((name, e)) = find_with_name(&self.segments, id) else {
                self.backlog.remove(&id);
                continue;
            };
            if cutoff.is_some_and(|c| e.captured_us < c) {
                self.finish(id);
                self.dropped.expired += 1;
                continue;
            }
            let buf = self.storage.read_at(&name, e.offset, e.len as usize)?;
            match format::decode(&buf) {
                Ok((got, mut out)) if got == id => {
                    self.backlog.remove(&id);
                    self.with_sink.insert(id);
                    if out.record.header(header::REPLAYED).is_none() {
                        out.record
                            .headers
                            .push((header::REPLAYED.into(), "1".to_string()));
                    }
                    return Ok(Some((id, out)));
                }
                _ => {
                    tracing::warn!(id, segment = %name, "spool record damaged on disk; dropped");
                    self.finish(id);
                    self.dropped.corrupt += 1;
                }
            }
        }
        self.unlink_done()?;
        Ok(None)
    }

    fn cutoff(&self, now: SystemTime) -> Option<i64> {
        self.opts
            .max_age
            .map(|a| format::micros(now) - a.as_micros().min(i64::MAX as u128) as i64)
    }

    /// Drops every record older than `max_age` that the sink does not hold (counted as
    /// expired) and unlinks segments left empty.
    ///
    /// Errors: unlinking a segment failed.
    pub fn expire(&mut self, now: SystemTime) -> io::Result<()> {
        let Some(cutoff) = self.cutoff(now) else {
            return Ok(());
        };
        let old: Vec<u64> = self
            .segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| !e.done && e.captured_us < cutoff && self.backlog.contains(&e.id))
            .map(|e| e.id)
            .collect();
        for id in old {
            self.finish(id);
            self.dropped.expired += 1;
        }
        self.unlink_done()
    }

    /// Sizes now.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            records: self.segments.iter().map(|s| s.live as u64).sum(),
            backlog: self.backlog.len() as u64,
            bytes: self.total_bytes,
            segments: self.segments.len() as u64,
        }
    }

    /// Ids of records the sink held whose segment was dropped to make room, since the last
    /// call: they are not counted as dropped, and whoever holds them must spool them again
    /// if the sink gives them back.
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }

    /// What was dropped since the last call.
    pub fn take_dropped(&mut self) -> Dropped {
        std::mem::take(&mut self.dropped)
    }

    /// Commits, then records which kept records were acknowledged (file `acked`), so the
    /// next [`Spool::open`] does not send them again.
    ///
    /// Errors: the commit or the write failed (the next open then resends those records).
    pub fn close(&mut self) -> io::Result<()> {
        self.commit().map_err(|(e, _)| e)?;
        let acked: Vec<u8> = self
            .segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.done)
            .flat_map(|e| e.id.to_le_bytes())
            .collect();
        if acked.is_empty() {
            self.storage.remove(ACKED_FILE)
        } else {
            self.storage.put(ACKED_FILE, &format::seal(&acked))
        }
    }

    /// The storage, for tests that reopen it.
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Marks `id` done.
    fn finish(&mut self, id: u64) {
        self.backlog.remove(&id);
        self.with_sink.remove(&id);
        let Some(seg) = find_segment(&mut self.segments, id) else {
            return;
        };
        if let Ok(i) = seg.entries.binary_search_by_key(&id, |e| e.id) {
            if !seg.entries[i].done {
                seg.entries[i].done = true;
                seg.live -= 1;
            }
        }
    }

    /// Unlinks fully done segments, except the one taking appends.
    fn unlink_done(&mut self) -> io::Result<()> {
        let mut i = 0;
        while i < self.segments.len() {
            let appending = self.appending && i + 1 == self.segments.len();
            if self.segments[i].live == 0 && !appending {
                let s = self.segments.remove(i).expect("index in range");
                self.total_bytes -= s.bytes;
                self.storage.remove(&s.name)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Drops the oldest segment, counting its live records as `full`.
    fn drop_oldest_segment(&mut self) -> io::Result<()> {
        let s = self.segments.pop_front().expect("caller checked");
        self.total_bytes -= s.bytes;
        for e in s.entries.iter().filter(|e| !e.done) {
            self.backlog.remove(&e.id);
            if self.with_sink.remove(&e.id) {
                self.evicted.push(e.id);
            } else {
                self.dropped.full += 1;
            }
        }
        if self.segments.is_empty() {
            self.appending = false;
        }
        self.storage.remove(&s.name)
    }
}

fn segment_index(segments: &VecDeque<Segment>, id: u64) -> Option<usize> {
    // Segments are named by their first id and ids increase: the last segment whose first
    // id is ≤ id.
    let i = segments.partition_point(|s| s.entries.first().is_none_or(|e| e.id <= id));
    i.checked_sub(1)
}

fn find_segment(segments: &mut VecDeque<Segment>, id: u64) -> Option<&mut Segment> {
    let i = segment_index(segments, id)?;
    segments.get_mut(i)
}

fn find(segments: &VecDeque<Segment>, id: u64) -> Option<Entry> {
    find_with_name(segments, id).map(|(_, e)| e)
}

fn find_with_name(segments: &VecDeque<Segment>, id: u64) -> Option<(String, Entry)> {
    let s = &segments[segment_index(segments, id)?];
    let i = s.entries.binary_search_by_key(&id, |e| e.id).ok()?;
    Some((s.name.clone(), s.entries[i]))
}
