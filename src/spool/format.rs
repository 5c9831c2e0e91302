//! The on-disk record format of the spool, and the recovery scanner.
//!
//! A segment file is a sequence of records, each a 16-byte header and a body:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0–3 | magic `ECs1` |
//! | 4–7 | body length, u32 little-endian |
//! | 8–11 | CRC-32 of bytes 0–7 (so a damaged length is never trusted) |
//! | 12–15 | CRC-32 of the body |
//!
//! Body (little-endian): id u64, captured_at µs since the Unix epoch i64, destination u8
//! (0 frames, 1 errors), key length u16 + key, header count u8, then per header a name
//! length u8 + name (one of [`crate::record::header::ALL`]) and a value length u16 + value,
//! and last the value (the rest of the body).
//!
//! [`scan`] reads a segment back without trusting anything it has not checked: a record
//! whose body checksum fails costs that record only; a damaged header is skipped by
//! searching forward for the next header whose own checksum holds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::record::{header, FrameRecord, HeaderName};
use crate::sink::{Destination, Outgoing};

/// Magic bytes that start every record.
pub const MAGIC: [u8; 4] = *b"ECs1";
/// Bytes of a record header.
pub const HEADER_LEN: usize = 16;
/// Largest body [`scan`] accepts, bytes (1 GiB): a longer length is damage.
pub const MAX_BODY: u32 = 1 << 30;

/// Why a record cannot be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The record has a field longer than the format allows (key > 65,535 bytes, a header
    /// value > 65,535 bytes, more than 255 headers, a body over [`MAX_BODY`]).
    #[error("record field too long for the spool: {0}")]
    TooLong(&'static str),
    /// The body ends early or has bytes left over.
    #[error("spool record body malformed: {0}")]
    Malformed(&'static str),
}

/// `data` followed by its CRC-32 (little-endian): how the spool's small state files
/// (`acked`, `seq`) are written, so damage is noticed rather than trusted.
pub fn seal(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 4);
    v.extend_from_slice(data);
    v.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    v
}

/// The data of a [`seal`]ed file, or `None` when its checksum does not hold.
pub fn unseal(buf: &[u8]) -> Option<&[u8]> {
    let (data, crc) = buf.split_at_checked(buf.len().checked_sub(4)?)?;
    (crc32fast::hash(data).to_le_bytes() == crc).then_some(data)
}

/// Microseconds since the Unix epoch (negative before it).
pub fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_micros().min(i64::MAX as u128) as i64),
    }
}

fn from_micros(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

fn header_crc(magic_and_len: &[u8]) -> u32 {
    crc32fast::hash(magic_and_len)
}

/// Encodes `out` as record `id`: header and body, ready to append.
///
/// Errors: [`FormatError::TooLong`] when a field does not fit the format.
pub fn encode(id: u64, out: &Outgoing) -> Result<Vec<u8>, FormatError> {
    let r = &out.record;
    if r.key.len() > u16::MAX as usize {
        return Err(FormatError::TooLong("key"));
    }
    if r.headers.len() > u8::MAX as usize {
        return Err(FormatError::TooLong("header count"));
    }
    let headers_len: usize = r
        .headers
        .iter()
        .map(|(k, v)| 1 + k.len() + 2 + v.len())
        .sum();
    let body_len = 8 + 8 + 1 + 2 + r.key.len() + 1 + headers_len + r.value.len();
    if body_len > MAX_BODY as usize {
        return Err(FormatError::TooLong("value"));
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + body_len);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    let hcrc = header_crc(&buf[..8]);
    buf.extend_from_slice(&hcrc.to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // body CRC, filled below
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&micros(out.captured_at).to_le_bytes());
    buf.push(match out.destination {
        Destination::Frames => 0,
        Destination::Errors => 1,
    });
    buf.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
    buf.extend_from_slice(r.key.as_bytes());
    buf.push(r.headers.len() as u8);
    for (k, v) in &r.headers {
        if k.len() > u8::MAX as usize {
            return Err(FormatError::TooLong("header name"));
        }
        if v.len() > u16::MAX as usize {
            return Err(FormatError::TooLong("header value"));
        }
        buf.push(k.len() as u8);
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(&(v.len() as u16).to_le_bytes());
        buf.extend_from_slice(v.as_bytes());
    }
    buf.extend_from_slice(&r.value);
    let bcrc = crc32fast::hash(&buf[HEADER_LEN..]);
    buf[12..16].copy_from_slice(&bcrc.to_le_bytes());
    debug_assert_eq!(buf.len(), HEADER_LEN + body_len);
    Ok(buf)
}

/// A cursor over a body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Malformed("body ends early"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn text(&mut self, n: usize) -> Result<String, FormatError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| FormatError::Malformed("not UTF-8"))
    }
}

/// Decodes a body (the bytes after the header, checksum already checked) into its id and
/// record.
///
/// Header names edgecam knows come back as their `&'static str`; any other name (a spool
/// written by a newer build) comes back owned, so the record is still delivered.
///
/// Errors: [`FormatError::Malformed`].
pub fn decode_body(body: &[u8]) -> Result<(u64, Outgoing), FormatError> {
    let mut r = Reader(body);
    let id = r.u64()?;
    let captured_at = from_micros(r.u64()? as i64);
    let destination = match r.u8()? {
        0 => Destination::Frames,
        1 => Destination::Errors,
        _ => return Err(FormatError::Malformed("destination")),
    };
    let key_len = r.u16()? as usize;
    let key = r.text(key_len)?;
    let count = r.u8()? as usize;
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = r.u8()? as usize;
        let raw = r.take(n)?;
        let name = match header::intern(raw) {
            Some(known) => HeaderName::Borrowed(known),
            None => HeaderName::Owned(
                String::from_utf8(raw.to_vec())
                    .map_err(|_| FormatError::Malformed("header name not UTF-8"))?,
            ),
        };
        let n = r.u16()? as usize;
        headers.push((name, r.text(n)?));
    }
    let value = Bytes::copy_from_slice(r.0);
    Ok((
        id,
        Outgoing {
            destination,
            record: FrameRecord {
                key,
                headers,
                value,
            },
            captured_at,
            ticket: 0,
        },
    ))
}

/// Decodes one whole record (header and body) as [`encode`] wrote it.
///
/// Errors: [`FormatError::Malformed`] when the header or a checksum does not hold, or as
/// [`decode_body`].
pub fn decode(buf: &[u8]) -> Result<(u64, Outgoing), FormatError> {
    match check_header(buf) {
        Some(len) if buf.len() == HEADER_LEN + len => {}
        _ => return Err(FormatError::Malformed("record header")),
    }
    let body = &buf[HEADER_LEN..];
    if crc32fast::hash(body) != u32::from_le_bytes(buf[12..16].try_into().unwrap()) {
        return Err(FormatError::Malformed("body checksum"));
    }
    decode_body(body)
}

/// The body length when `buf` starts with a header whose magic and checksum hold.
fn check_header(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_LEN || buf[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    let crc = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    (header_crc(&buf[..8]) == crc && len <= MAX_BODY).then_some(len as usize)
}

/// A record [`scan`] found intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Byte offset of its header in the segment.
    pub offset: u64,
    /// Bytes, header included.
    pub len: u32,
    /// Its id.
    pub id: u64,
    /// Capture time, µs since the Unix epoch.
    pub captured_us: i64,
}

/// What [`scan`] found in one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Intact records, in file order.
    pub records: Vec<Found>,
    /// Damaged stretches before the last intact record (each is at least one lost record).
    pub corrupt: u64,
    /// End of the last intact record: everything after it is a torn or damaged tail.
    pub valid_end: u64,
}

/// Reads every intact record of a segment. Never panics, whatever `buf` holds.
///
/// A record counts as intact when its header checksum, its body checksum and its body's
/// structure all hold. A complete record whose body is damaged is skipped (its header
/// checksum vouches for the length); a damaged header makes the scanner search forward for
/// the next valid header. Damage after the last intact record is not counted in
/// `corrupt`: it is the torn tail of an interrupted write (`valid_end` marks where it starts).
pub fn scan(buf: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut pos = 0usize;
    // Damage seen since the last intact record, not yet counted.
    let mut pending_damage = 0u64;
    while pos < buf.len() {
        // A damaged header, or a body cut short (torn, unless a valid header follows inside
        // it): resynchronise on the next valid header.
        let end = check_header(&buf[pos..])
            .map(|len| pos + HEADER_LEN + len)
            .filter(|&end| end <= buf.len());
        let Some(end) = end else {
            pending_damage += 1;
            match next_header(buf, pos + 1) {
                Some(p) => {
                    pos = p;
                    continue;
                }
                None => break,
            }
        };
        let body = &buf[pos + HEADER_LEN..end];
        let bcrc = u32::from_le_bytes(buf[pos + 12..pos + 16].try_into().unwrap());
        let intact = crc32fast::hash(body) == bcrc;
        let decoded = intact.then(|| decode_body(body)).and_then(Result::ok);
        match decoded {
            Some((id, out)) => {
                s.corrupt += pending_damage.min(1);
                pending_damage = 0;
                s.records.push(Found {
                    offset: pos as u64,
                    len: (end - pos) as u32,
                    id,
                    captured_us: micros(out.captured_at),
                });
                s.valid_end = end as u64;
                pos = end;
            }
            None => {
                // The header vouches for the length: skip this record only.
                s.corrupt += pending_damage.min(1);
                pending_damage = 1;
                pos = end;
            }
        }
    }
    s
}

/// Bytes [`scan_headers`] reads per record: the header, the id and the capture time.
const PREFIX: usize = HEADER_LEN + 16;

/// The quick scan of a segment known to be complete (not the newest): walks the record
/// headers only, reading [`PREFIX`] bytes per record through `read(offset, len)`, so a 1 GB
/// spool opens without reading 1 GB. Body checksums are not checked here; they are checked
/// when a record is replayed (a damaged one is dropped and counted then).
///
/// Returns `None` as soon as anything does not check out (a bad header, a length past the
/// end, a short body): the caller then reads the whole segment and runs [`scan`].
///
/// Errors: `read`'s.
pub fn scan_headers(
    len: u64,
    mut read: impl FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Option<Scan>> {
    let mut s = Scan::default();
    let mut pos = 0u64;
    while pos < len {
        if pos + PREFIX as u64 > len {
            return Ok(None);
        }
        let p = read(pos, PREFIX)?;
        let Some(body) = check_header(&p) else {
            return Ok(None);
        };
        let end = pos + (HEADER_LEN + body) as u64;
        if body < 20 || end > len {
            return Ok(None);
        }
        s.records.push(Found {
            offset: pos,
            len: (HEADER_LEN + body) as u32,
            id: u64::from_le_bytes(p[16..24].try_into().unwrap()),
            captured_us: i64::from_le_bytes(p[24..32].try_into().unwrap()),
        });
        pos = end;
    }
    s.valid_end = len;
    Ok(Some(s))
}

/// Offset of the next valid header at or after `from`.
fn next_header(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < buf.len() {
        let rel = memchr::memmem::find(&buf[at..], &MAGIC)?;
        let p = at + rel;
        if check_header(&buf[p..]).is_some() {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame record with id-dependent headers and a `value_len`-byte value.
    pub(crate) fn sample(id: u64, value_len: usize) -> Outgoing {
        Outgoing {
            destination: if id % 7 == 3 {
                Destination::Errors
            } else {
                Destination::Frames
            },
            record: FrameRecord {
                key: "cam-1".into(),
                headers: vec![
                    (header::DEVICE.into(), "cam-1".into()),
                    (header::SEQ.into(), id.to_string()),
                    (header::FRAME_ID.into(), format!("frame-{id}")),
                ],
                value: Bytes::from(
                    (0..value_len)
                        .map(|i| (i as u64 ^ id) as u8)
                        .collect::<Vec<u8>>(),
                ),
            },
            captured_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000 + id),
            ticket: 0,
        }
    }

    fn same(a: &Outgoing, b: &Outgoing) -> bool {
        a.destination == b.destination
            && a.record.key == b.record.key
            && a.record.headers == b.record.headers
            && a.record.value == b.record.value
            && a.captured_at == b.captured_at
    }

    fn segment(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for id in 0..n {
            starts.push(buf.len());
            buf.extend(encode(id, &sample(id, 50 + id as usize * 13)).unwrap());
        }
        (buf, starts)
    }

    fn ids(s: &Scan) -> Vec<u64> {
        s.records.iter().map(|f| f.id).collect()
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let out = sample(42, 1000);
        let buf = encode(42, &out).unwrap();
        let (id, back) = decode(&buf).unwrap();
        assert_eq!(id, 42);
        assert!(same(&out, &back));
        let s = scan(&buf);
        assert_eq!(ids(&s), vec![42]);
        assert_eq!(s.valid_end, buf.len() as u64);
        assert_eq!(s.records[0].captured_us, micros(out.captured_at));
    }

    #[test]
    fn long_fields_are_refused_and_unknown_header_names_kept() {
        let mut out = sample(1, 10);
        out.record.key = "k".repeat(70_000);
        assert_eq!(encode(1, &out), Err(FormatError::TooLong("key")));
        let mut out = sample(1, 10);
        out.record.headers[0].1 = "v".repeat(70_000);
        assert_eq!(encode(1, &out), Err(FormatError::TooLong("header value")));
        let mut buf = encode(1, &sample(1, 10)).unwrap();
        // Rename "edgecam.device" to "edgecam.devicf" and fix the body checksum.
        let p = memchr::memmem::find(&buf, b"edgecam.device").unwrap();
        buf[p + 13] = b'f';
        let crc = crc32fast::hash(&buf[HEADER_LEN..]);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        let (_, back) = decode(&buf).unwrap();
        assert_eq!(back.record.headers[0].0, "edgecam.devicf");
        assert!(matches!(back.record.headers[0].0, HeaderName::Owned(_)));
        assert!(matches!(back.record.headers[1].0, HeaderName::Borrowed(_)));
        assert_eq!(ids(&scan(&buf)), vec![1]);
    }

    /// Bit flip and zeroing in every field of the middle and of the last record, and
    /// truncation at every field boundary: at most the damaged record is lost, every other
    /// one is read back, nothing damaged is returned.
    #[test]
    fn corruption_matrix_costs_one_record_at_most() {
        let (clean, starts) = segment(5);
        // Field offsets within a record: magic, length, header CRC, body CRC, id, captured,
        // destination, key length, key, header count, first header, value.
        let fields = [0usize, 4, 8, 12, 16, 24, 32, 33, 35, 40, 41, 110];
        for victim in [2usize, 4] {
            let end = starts.get(victim + 1).copied().unwrap_or(clean.len());
            for &f in &fields {
                let at = starts[victim] + f;
                assert!(at < end);
                for damage in ["flip", "zero"] {
                    let mut buf = clean.clone();
                    match damage {
                        "flip" => buf[at] ^= 0x10,
                        _ => buf[at..(at + 4).min(end)].fill(0),
                    }
                    let s = scan(&buf);
                    let got = ids(&s);
                    let want: Vec<u64> = (0..5).filter(|&i| i != victim as u64).collect();
                    assert!(
                        got == want || (got == (0..5).collect::<Vec<_>>() && damage == "zero"),
                        "{damage} at field {f} of record {victim}: {got:?}"
                    );
                    if got == want && victim == 2 {
                        assert_eq!(s.corrupt, 1, "{damage} at field {f}");
                    }
                    // Whatever scan returns decodes and matches what was written.
                    for r in &s.records {
                        let rec = &buf[r.offset as usize..(r.offset + r.len as u64) as usize];
                        let (id, out) = decode(rec).unwrap();
                        assert!(same(&out, &sample(id, 50 + id as usize * 13)));
                    }
                }
            }
            // Truncation inside the last record: the records before it survive.
            if victim == 4 {
                for &f in &fields {
                    let s = scan(&clean[..starts[4] + f]);
                    assert_eq!(ids(&s), vec![0, 1, 2, 3], "truncated at {f}");
                    assert_eq!(s.valid_end, starts[4] as u64);
                    assert_eq!(s.corrupt, 0);
                }
            }
        }
    }

    #[test]
    fn the_header_scan_agrees_with_the_full_scan_or_gives_up() {
        let (clean, starts) = segment(6);
        let read = |buf: &[u8]| {
            let buf = buf.to_vec();
            move |off: u64, n: usize| Ok(buf[off as usize..off as usize + n].to_vec())
        };
        let quick = scan_headers(clean.len() as u64, read(&clean))
            .unwrap()
            .unwrap();
        assert_eq!(quick, scan(&clean));
        // A damaged header or a cut: the quick scan gives up, the full scan takes over.
        let mut bad = clean.clone();
        bad[starts[3] + 5] ^= 1;
        assert_eq!(scan_headers(bad.len() as u64, read(&bad)).unwrap(), None);
        let cut = &clean[..starts[5] + 20];
        assert_eq!(scan_headers(cut.len() as u64, read(cut)).unwrap(), None);
    }

    #[test]
    fn sealed_state_files_reject_any_damage() {
        let sealed = seal(b"12345678");
        assert_eq!(unseal(&sealed), Some(&b"12345678"[..]));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(unseal(&bad), None, "flip at {i}");
        }
        assert_eq!(unseal(&sealed[..3]), None);
        assert_eq!(unseal(&sealed[..sealed.len() - 1]), None);
    }

    #[test]
    fn a_zeroed_tail_is_torn_not_corrupt() {
        let (mut buf, starts) = segment(3);
        buf.extend(std::iter::repeat_n(0u8, 4096));
        let s = scan(&buf);
        assert_eq!(ids(&s), vec![0, 1, 2]);
        assert_eq!(s.corrupt, 0);
        assert!(s.valid_end > starts[2] as u64);
    }

    proptest! {
        /// Arbitrary damage never panics, never returns a record that was not written, and
        /// a damaged stretch never costs records it does not touch.
        #[test]
        fn arbitrary_damage_is_contained(
            n in 1u64..8,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let (clean, starts) = segment(n);
            let mut buf = clean.clone();
            let mut touched = std::collections::BTreeSet::new();
            for (at, b) in &edits {
                let at = at % buf.len();
                if buf[at] != *b {
                    buf[at] = *b;
                    touched.insert(starts.partition_point(|&s| s <= at) as u64 - 1);
                }
            }
            if let Some(c) = cut {
                let c = c % (buf.len() + 1);
                buf.truncate(c);
                for (i, &s) in starts.iter().enumerate() {
                    let end = starts.get(i + 1).copied().unwrap_or(clean.len());
                    if end > c { touched.insert(i as u64); }
                    let _ = s;
                }
            }
            let s = scan(&buf);
            for r in &s.records {
                let rec = &buf[r.offset as usize..(r.offset + r.len as u64) as usize];
                let (id, out) = decode(rec).unwrap();
                prop_assert!(same(&out, &sample(id, 50 + id as usize * 13)));
            }
            let got: std::collections::BTreeSet<u64> = ids(&s).into_iter().collect();
            for id in 0..n {
                if !touched.contains(&id) {
                    prop_assert!(got.contains(&id), "untouched record {} lost: {:?}", id, got);
                }
            }
        }
    }
}
