//! MJPEG byte streams: JPEGs back to back, from a file or from a child process's stdout
//! (`rpicam-vid -t 0 --codec mjpeg -o -`, `ffmpeg … -f mjpeg -`, `cat *.mjpeg`).
//!
//! [`MjpegSplitter`] cuts the stream into frames without decoding and without I/O: it walks
//! the marker segments by their lengths up to SOS (so `FF D9` inside an EXIF block or an
//! embedded thumbnail does not end the frame), then scans the entropy-coded data, where
//! `FF 00` is a stuffed byte and `FF D0`–`FF D7` are restart markers, for the real EOI.
//! [`MjpegSource`] feeds it from a file or a pipe.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::{Pacer, Skipped, Source, SourceError};
use crate::config::SourceConfig;
use crate::frame::{Captured, Image, JpegImage};
use crate::jpeg::{scan, Phase, Step};
use crate::limits::Limits;

/// Default cap on one frame, in bytes (64 MiB, `limits.max_frame_bytes`): a stream of
/// garbage that starts like a JPEG cannot make the splitter buffer more than about this much.
pub const DEFAULT_MAX_FRAME_BYTES: usize = crate::limits::DEFAULT_MAX_FRAME_BYTES;

/// Least number of bytes without a single good frame after which [`MjpegSource`] decides
/// its input is not MJPEG ([`SourceError::NotMjpeg`]) instead of reading it for ever: 16 MiB,
/// or `limits.max_frame_bytes` when that is larger (one frame may legitimately be that big).
pub const MIN_NOT_MJPEG_BYTES: u64 = 16 << 20;

/// Bytes read from the file or pipe per `read` call (64 KiB).
pub const READ_CHUNK_BYTES: usize = 64 << 10;

/// How long a child that closed its stdout gets to exit before it is killed.
const CHILD_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Why the splitter dropped the bytes of a frame it had started (after `FF D8 FF`).
///
/// The bytes are discarded and the splitter resynchronises on the next `FF D8 FF`; the
/// source reports this as [`SourceError::BadFrame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The marker structure is broken: `what` says how, `offset` is the byte offset
    /// within the frame (from its `FF D8`) where it was noticed.
    #[error("corrupt JPEG in stream at byte {offset} of the frame: {what}")]
    Corrupt {
        /// Offset in bytes from the frame's SOI.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// The frame grew past the cap (`max` bytes) without an EOI.
    #[error("frame larger than {max} bytes without an end marker")]
    TooLarge {
        /// The cap in bytes.
        max: usize,
    },
}

/// Cuts an MJPEG byte stream (JPEGs back to back, possibly with garbage between them) into
/// whole JPEG frames, independent of I/O.
///
/// Feed bytes with [`push`](Self::push) or [`fill_from`](Self::fill_from) in chunks of any
/// size (a frame may arrive one byte at a time); take frames with
/// [`next_frame`](Self::next_frame). Each frame is a zero-copy [`Bytes`] slice of the
/// internal buffer, from `FF D8` through its `FF D9`. Bytes outside frames (before the
/// first `FF D8 FF`, between frames) are skipped and counted in
/// [`skipped_bytes`](Self::skipped_bytes). Scanning resumes where it stopped, so the total
/// work is linear in the stream length.
pub struct MjpegSplitter {
    buf: BytesMut,
    phase: Phase,
    pos: usize,
    max_frame: usize,
    skipped: u64,
}

impl std::fmt::Debug for MjpegSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the buffer itself: it can hold megabytes.
        f.debug_struct("MjpegSplitter")
            .field("buffered", &self.buf.len())
            .field("phase", &self.phase)
            .field("pos", &self.pos)
            .field("max_frame", &self.max_frame)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Default for MjpegSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl MjpegSplitter {
    /// A splitter with the [`DEFAULT_MAX_FRAME_BYTES`] cap.
    pub fn new() -> Self {
        Self::with_max_frame_bytes(DEFAULT_MAX_FRAME_BYTES)
    }

    /// A splitter that gives up on a frame (with [`SplitError::TooLarge`]) once it has
    /// buffered more than `max` bytes of it without finding its end. `max` is clamped to
    /// at least 64 bytes.
    pub fn with_max_frame_bytes(max: usize) -> Self {
        MjpegSplitter {
            buf: BytesMut::with_capacity(4 * READ_CHUNK_BYTES),
            phase: Phase::Seek,
            pos: 0,
            max_frame: max.max(64),
            skipped: 0,
        }
    }

    /// Appends `data` to the stream (copied once into the internal buffer).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Reads once from `reader`, up to `chunk` bytes, straight into the internal buffer.
    ///
    /// Returns the number of bytes read; `0` means end of stream. Errors: whatever `read`
    /// returns (including [`ErrorKind::Interrupted`], which the caller may retry).
    pub fn fill_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        chunk: usize,
    ) -> std::io::Result<usize> {
        let chunk = chunk.max(1);
        let len = self.buf.len();
        if self.buf.capacity() - len < chunk {
            // Reserve a few chunks at a time, and at least double for a frame larger than
            // that: frames handed out still share the old block, so reserving usually
            // allocates a new one and copies the partial frame.
            self.buf.reserve((4 * chunk).max(len));
        }
        self.buf.resize(len + chunk, 0);
        let res = reader.read(&mut self.buf[len..]);
        let n = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        res
    }

    /// The next complete frame, if the bytes pushed so far hold one.
    ///
    /// `None`: more input is needed. `Some(Ok(jpeg))`: one frame, `FF D8 … FF D9`.
    /// `Some(Err(_))`: a frame that started was dropped (broken marker structure, a new
    /// SOI before the EOI, or larger than the cap); call again to go on with the stream.
    pub fn next_frame(&mut self) -> Option<Result<Bytes, SplitError>> {
        if self.phase == Phase::Seek && !self.seek_soi() {
            return None;
        }
        match scan(&self.buf, &mut self.phase, &mut self.pos) {
            Step::End(end) => {
                let frame = self.buf.split_to(end).freeze();
                self.reset_phase();
                Some(Ok(frame))
            }
            Step::Corrupt {
                offset,
                discard,
                what,
            } => {
                self.buf.advance(discard.max(2));
                self.reset_phase();
                Some(Err(SplitError::Corrupt { offset, what }))
            }
            Step::NeedMore if self.buf.len() > self.max_frame => {
                // Everything before `pos` was scanned and holds no SOI where a frame
                // could start; drop it and resynchronise.
                let drop = self.pos.min(self.buf.len()).max(2);
                self.buf.advance(drop);
                self.reset_phase();
                Some(Err(SplitError::TooLarge {
                    max: self.max_frame,
                }))
            }
            Step::NeedMore => None,
        }
    }

    /// In `Seek`: drops bytes up to the next `FF D8 FF` and enters the frame. Returns
    /// `false` (keeping at most 2 bytes that may begin an SOI) when there is none yet.
    fn seek_soi(&mut self) -> bool {
        loop {
            let Some(off) = memchr::memchr(0xFF, &self.buf[self.pos..]) else {
                self.skipped += self.buf.len() as u64;
                self.buf.clear();
                self.pos = 0;
                return false;
            };
            let i = self.pos + off;
            if self.buf.len() < i + 3 {
                // Maybe the start of an SOI: keep it, drop what is before.
                self.buf.advance(i);
                self.skipped += i as u64;
                self.pos = 0;
                return false;
            }
            if self.buf[i + 1] == 0xD8 && self.buf[i + 2] == 0xFF {
                self.buf.advance(i);
                self.skipped += i as u64;
                self.phase = Phase::Header;
                self.pos = 2;
                return true;
            }
            self.pos = i + 1;
        }
    }

    fn reset_phase(&mut self) {
        self.phase = Phase::Seek;
        self.pos = 0;
    }

    /// Bytes buffered and not yet returned as a frame (a partial frame at end of stream).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Total bytes skipped as garbage outside frames (bytes of dropped frames not included).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Forgets any buffered partial frame (e.g. before replaying a file from its start).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.reset_phase();
    }
}

/// Where the MJPEG bytes come from.
#[derive(Debug)]
enum Input {
    File {
        file: File,
        path: PathBuf,
        loop_: bool,
    },
    Command {
        child: Child,
        stdout: ChildStdout,
        argv: Vec<String>,
        reaped: bool,
    },
}

/// An MJPEG stream from a file (`source.path`) or a child process's stdout
/// (`source.command`, an argv list; stderr is inherited).
///
/// Frames are yielded as [`Image::Jpeg`] without decoding, `captured_at` = when the frame
/// was handed out. A file is paced at `source.fps` (`0` = as fast as it can be read) and
/// restarts at its end when `source.loop` is set; a child process runs at its own rate, and
/// the pipeline keeps `source.fps` by discarding its surplus frames
/// ([`Source::paced_by_dropping`]; `0` = keep them all). The source ends (`Ok(None)`) at the end of the file, or when the child
/// closes its stdout, after the last complete frame; a truncated last frame is dropped.
/// The child is killed and reaped on drop.
#[derive(Debug)]
pub struct MjpegSource {
    input: Input,
    splitter: MjpegSplitter,
    pacer: Pacer,
    ended: bool,
    frames_this_pass: u64,
    frames_total: u64,
    limits: Limits,
    /// Bytes read since the last good frame (or the start).
    since_good: u64,
    /// [`SourceError::NotMjpeg`] once `since_good` passes this.
    not_mjpeg_after: u64,
    /// `splitter.skipped_bytes()` already reported by `take_skipped`.
    skipped_reported: u64,
}

impl MjpegSource {
    /// Opens `cfg.command` (preferred when set) or `cfg.path`.
    ///
    /// Errors: [`SourceError::Open`] naming the file when it cannot be opened, naming the
    /// command when it is empty or cannot be spawned, or when neither is configured.
    pub fn open(cfg: &SourceConfig, limits: &Limits) -> Result<Self, SourceError> {
        let input = if let Some(argv) = &cfg.command {
            let what = argv.join(" ");
            let Some((program, args)) = argv.split_first() else {
                return Err(SourceError::Open {
                    what: "source.command".into(),
                    message: "empty command".into(),
                });
            };
            let mut child = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| SourceError::Open {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
            let stdout = child.stdout.take().expect("stdout is piped");
            Input::Command {
                child,
                stdout,
                argv: argv.clone(),
                reaped: false,
            }
        } else if let Some(path) = &cfg.path {
            let file = File::open(path).map_err(|e| SourceError::Open {
                what: path.display().to_string(),
                message: e.to_string(),
            })?;
            Input::File {
                file,
                path: path.clone(),
                loop_: cfg.loop_,
            }
        } else {
            return Err(SourceError::Open {
                what: "mjpeg source".into(),
                message: "neither source.path nor source.command is set".into(),
            });
        };
        let pacer = match input {
            Input::File { .. } => Pacer::new(cfg.fps),
            Input::Command { .. } => Pacer::new(0.0),
        };
        Ok(MjpegSource {
            input,
            splitter: MjpegSplitter::with_max_frame_bytes(limits.max_frame_bytes),
            pacer,
            ended: false,
            frames_this_pass: 0,
            frames_total: 0,
            limits: *limits,
            since_good: 0,
            not_mjpeg_after: MIN_NOT_MJPEG_BYTES.max(limits.max_frame_bytes as u64),
            skipped_reported: 0,
        })
    }

    /// Handles end of input. Returns `true` when the stream goes on (file loop).
    fn at_eof(&mut self) -> Result<bool, SourceError> {
        let leftover = self.splitter.buffered();
        if leftover > 0 {
            tracing::warn!(
                source = %self.describe(),
                bytes = leftover,
                "dropping truncated last MJPEG frame"
            );
        }
        match &mut self.input {
            Input::File { file, loop_, .. } if *loop_ && self.frames_this_pass > 0 => {
                file.seek(SeekFrom::Start(0))?;
                self.splitter.clear();
                self.frames_this_pass = 0;
                Ok(true)
            }
            Input::File { .. } => Ok(false),
            Input::Command { child, reaped, .. } => {
                // Stdout closed: the child is normally exiting. Do not hang on one that
                // closed its stdout but keeps running.
                let deadline = Instant::now() + CHILD_EXIT_GRACE;
                let status = loop {
                    if let Some(status) = child.try_wait()? {
                        break status;
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        break child.wait()?;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                *reaped = true;
                if !status.success() {
                    tracing::warn!(source = %self.describe(), %status, "MJPEG command exited");
                }
                Ok(false)
            }
        }
    }
}

impl Source for MjpegSource {
    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        loop {
            if let Some(split) = self.splitter.next_frame() {
                let n = self.frames_total;
                self.frames_total += 1;
                let data = split.map_err(|e| match e {
                    SplitError::TooLarge { .. } => {
                        SourceError::TooLarge(format!("{} frame {n}: {e}", self.describe()))
                    }
                    e => SourceError::BadFrame(format!("{} frame {n}: {e}", self.describe())),
                })?;
                self.frames_this_pass += 1;
                let jpeg = JpegImage::split_within(data, &self.limits).map_err(|r| {
                    SourceError::refused(format_args!("{} frame {n}", self.describe()), r)
                })?;
                self.since_good = 0;
                self.pacer.wait();
                return Ok(Some(Captured::now(Image::Jpeg(jpeg))));
            }
            if self.ended {
                return Ok(None);
            }
            let reader: &mut dyn Read = match &mut self.input {
                Input::File { file, .. } => file,
                Input::Command { stdout, .. } => stdout,
            };
            if self.since_good > self.not_mjpeg_after {
                self.ended = true;
                self.splitter.clear();
                return Err(SourceError::NotMjpeg {
                    what: self.describe(),
                    bytes: self.since_good,
                });
            }
            match self.splitter.fill_from(reader, READ_CHUNK_BYTES) {
                Ok(n @ 1..) => self.since_good += n as u64,
                Ok(0) => {
                    if !self.at_eof()? {
                        self.ended = true;
                        self.splitter.clear();
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(SourceError::Read(e)),
            }
        }
    }

    fn describe(&self) -> String {
        match &self.input {
            Input::File { path, .. } => format!("mjpeg file {}", path.display()),
            Input::Command { argv, .. } => format!("mjpeg command `{}`", argv.join(" ")),
        }
    }

    fn set_fps(&mut self, fps: f64) -> bool {
        match self.input {
            Input::File { .. } => {
                self.pacer = Pacer::new(fps);
                true
            }
            // A child process delivers frames at its own rate: the pipeline thins them.
            Input::Command { .. } => false,
        }
    }

    fn paced_by_dropping(&self) -> bool {
        matches!(self.input, Input::Command { .. })
    }

    fn take_skipped(&mut self) -> Skipped {
        let total = self.splitter.skipped_bytes();
        let bytes = total - self.skipped_reported;
        self.skipped_reported = total;
        Skipped { bytes, files: 0 }
    }
}

impl Drop for MjpegSource {
    fn drop(&mut self) {
        if let Input::Command { child, reaped, .. } = &mut self.input {
            if !*reaped {
                // Already exited is fine: kill then fails harmlessly, wait reaps it.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;
    use std::sync::OnceLock;

    fn fixture_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vtest-10.mjpeg")
    }

    fn fixture() -> &'static [u8] {
        static DATA: OnceLock<Vec<u8>> = OnceLock::new();
        DATA.get_or_init(|| std::fs::read(fixture_path()).unwrap())
    }

    /// The fixture's frames cut independently: at each `FF D8 FF` (ffmpeg writes them back
    /// to back, and this file has no other SOI).
    pub(crate) fn fixture_frames() -> Vec<&'static [u8]> {
        let d = fixture();
        let starts: Vec<usize> = memchr::memmem::find_iter(d, &[0xFF, 0xD8, 0xFF]).collect();
        assert_eq!(starts.len(), 10);
        assert_eq!(starts[0], 0);
        let mut ends: Vec<usize> = starts[1..].to_vec();
        ends.push(d.len());
        let frames: Vec<&[u8]> = starts.iter().zip(&ends).map(|(&s, &e)| &d[s..e]).collect();
        for f in &frames {
            assert!(f.ends_with(&[0xFF, 0xD9]));
        }
        frames
    }

    fn split_all(chunks: impl IntoIterator<Item = Vec<u8>>) -> (Vec<Bytes>, Vec<SplitError>) {
        let mut s = MjpegSplitter::new();
        let (mut frames, mut errors) = (Vec::new(), Vec::new());
        for c in chunks {
            s.push(&c);
            while let Some(r) = s.next_frame() {
                match r {
                    Ok(f) => frames.push(f),
                    Err(e) => errors.push(e),
                }
            }
        }
        (frames, errors)
    }

    fn split_bytes(data: &[u8], chunk: usize) -> (Vec<Bytes>, Vec<SplitError>) {
        split_all(data.chunks(chunk).map(<[u8]>::to_vec))
    }

    fn cfg(toml_src: &str) -> SourceConfig {
        toml::from_str(toml_src).unwrap()
    }

    fn file_cfg(path: &Path, extra: &str) -> SourceConfig {
        cfg(&format!(
            "kind = \"mjpeg\"\npath = '{}'\n{extra}",
            path.display()
        ))
    }

    fn drain(src: &mut MjpegSource, limit: usize) -> Vec<Captured> {
        let mut out = Vec::new();
        while out.len() < limit {
            match src.next_frame().unwrap() {
                Some(c) => out.push(c),
                None => break,
            }
        }
        out
    }

    /// A tiny real JPEG (gray, 16x8) from the image crate.
    fn tiny_jpeg() -> Vec<u8> {
        let px: Vec<u8> = (0..16 * 8).map(|i| (i * 13 % 256) as u8).collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode(&px, 16, 8, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    #[test]
    fn splits_fixture_into_its_ten_frames() {
        let expected = fixture_frames();
        let (frames, errors) = split_bytes(fixture(), READ_CHUNK_BYTES);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(frames.len(), 10);
        for (f, e) in frames.iter().zip(&expected) {
            assert_eq!(&f[..], *e);
            let j = JpegImage::parse(f.clone()).unwrap();
            assert_eq!((j.width, j.height), (768, 576));
        }
    }

    #[test]
    fn splits_fixture_fed_one_byte_at_a_time() {
        let expected = fixture_frames();
        let (frames, errors) = split_bytes(fixture(), 1);
        assert!(errors.is_empty());
        assert_eq!(frames.len(), 10);
        for (f, e) in frames.iter().zip(&expected) {
            assert_eq!(&f[..], *e);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_chunking_gives_the_same_frames(sizes in prop::collection::vec(1usize..20_000, 1..40)) {
            let data = fixture();
            let mut chunks = Vec::new();
            let (mut at, mut k) = (0, 0);
            while at < data.len() {
                let n = sizes[k % sizes.len()].min(data.len() - at);
                chunks.push(data[at..at + n].to_vec());
                at += n;
                k += 1;
            }
            let (frames, errors) = split_all(chunks);
            prop_assert!(errors.is_empty());
            let expected = fixture_frames();
            prop_assert_eq!(frames.len(), expected.len());
            for (f, e) in frames.iter().zip(&expected) {
                prop_assert_eq!(&f[..], *e);
            }
        }
    }

    #[test]
    fn skips_garbage_before_between_and_after_frames() {
        let expected = fixture_frames();
        // Garbage with FF bytes, near-SOIs (FF D8 not followed by FF) and stray EOIs.
        let garbage: Vec<u8> = (0..3000u32)
            .map(|i| match i % 97 {
                0 => 0xFF,
                1 => 0xD8,
                50 => 0xFF,
                51 => 0xD9,
                _ => (i * 31 % 251) as u8,
            })
            .collect();
        let mut stream = garbage.clone();
        for f in &expected {
            stream.extend_from_slice(f);
            stream.extend_from_slice(&garbage[..1234]);
        }
        stream.extend_from_slice(&[0, 0, 0xFF]);
        for chunk in [7, 4096, READ_CHUNK_BYTES] {
            let mut s = MjpegSplitter::new();
            let mut frames = Vec::new();
            for c in stream.chunks(chunk) {
                s.push(c);
                while let Some(r) = s.next_frame() {
                    frames.push(r.unwrap());
                }
            }
            assert_eq!(frames.len(), 10);
            for (f, e) in frames.iter().zip(&expected) {
                assert_eq!(&f[..], *e);
            }
            // All garbage counted except the trailing FF kept as a possible SOI start.
            assert_eq!(s.skipped_bytes(), 3000 + 10 * 1234 + 2);
            assert!(s.buffered() <= 2);
        }
    }

    /// Frame 0 with an APP1 segment right after SOI whose payload holds a whole embedded
    /// JPEG thumbnail (its own FF D8 … FF D9) plus stray FF D9 bytes.
    fn frame_with_tricky_app1() -> Vec<u8> {
        let frame0 = fixture_frames()[0];
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&[0xFF, 0xD9, 0x00, 0xFF, 0xD9, 0xFF, 0xD8, 0xFF]);
        payload.extend_from_slice(&tiny_jpeg());
        payload.extend_from_slice(&[0xFF, 0xD9]);
        let mut out = frame0[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&frame0[2..]);
        out
    }

    #[test]
    fn eoi_bytes_inside_an_app_segment_do_not_end_the_frame() {
        let tricky = frame_with_tricky_app1();
        let frame1 = fixture_frames()[1];
        let mut stream = tricky.clone();
        stream.extend_from_slice(frame1);
        for chunk in [1, 3, 1000, 1 << 20] {
            let (frames, errors) = split_bytes(&stream, chunk);
            assert!(errors.is_empty(), "chunk {chunk}: {errors:?}");
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            assert_eq!(&frames[0][..], &tricky[..]);
            assert_eq!(&frames[1][..], frame1);
        }
        let j = JpegImage::parse(Bytes::from(tricky.clone())).unwrap();
        assert_eq!((j.width, j.height), (768, 576));
        assert_eq!(crate::jpeg::complete_len(&tricky), Some(tricky.len()));
    }

    /// SOI, a SOF0 segment, DHT, SOS, entropy data with stuffing and restarts, a second
    /// (progressive-style) DHT + SOS scan, EOI.
    fn synthetic_two_scan_jpeg() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 8, 0, 2, 0, 4, 1, 1, 0x11, 0]);
        j.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x04, 0xFF, 0xD9]); // DHT holding FF D9
        j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 63, 0]);
        j.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0x00]);
        j.extend_from_slice(&[0xFF, 0xD7, 0x99, 0xFF, 0xFF, 0x00, 0x01]);
        j.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x05, 0xFF, 0xD9, 0x00]); // DHT between scans
        j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 63, 0]);
        j.extend_from_slice(&[0xAB, 0xFF, 0x00, 0xFF, 0xD1, 0xCD]);
        j.extend_from_slice(&[0xFF, 0xFF, 0xD9]); // fill byte before EOI
        j
    }

    #[test]
    fn walks_stuffing_restarts_and_multiple_scans() {
        let j = synthetic_two_scan_jpeg();
        let mut stream = j.clone();
        stream.extend_from_slice(&j);
        for chunk in [1, 2, 5, 64] {
            let (frames, errors) = split_bytes(&stream, chunk);
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            assert_eq!(&frames[0][..], &j[..]);
            assert_eq!(&frames[1][..], &j[..]);
        }
        assert_eq!(crate::jpeg::complete_len(&j), Some(j.len()));
        let mut padded = j.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(crate::jpeg::complete_len(&padded), Some(j.len()));
        assert_eq!(crate::jpeg::complete_len(&j[..j.len() - 1]), None);
        assert_eq!(crate::jpeg::complete_len(&j[1..]), None);
    }

    #[test]
    fn truncated_last_frame_is_not_emitted() {
        let frames = fixture_frames();
        let cut = fixture().len() - frames[9].len() / 2;
        let (got, errors) = split_bytes(&fixture()[..cut], 4096);
        assert!(errors.is_empty());
        assert_eq!(got.len(), 9);
        assert_eq!(&got[8][..], frames[8]);
    }

    #[test]
    fn truncated_frame_followed_by_a_new_one_is_reported_and_skipped() {
        let frames = fixture_frames();
        let mut stream = frames[0][..frames[0].len() / 2].to_vec();
        stream.extend_from_slice(frames[1]);
        stream.extend_from_slice(frames[2]);
        let (got, errors) = split_bytes(&stream, 1000);
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0][..], frames[1]);
        assert_eq!(&got[1][..], frames[2]);
        assert!(
            matches!(errors[..], [SplitError::Corrupt { .. }]),
            "{errors:?}"
        );
    }

    #[test]
    fn broken_header_is_reported_and_stream_resyncs() {
        let frames = fixture_frames();
        let mut broken = frames[0].to_vec();
        // Make the first segment's length point into the middle of the next segment.
        broken[4] = 0x00;
        broken[5] = 0x05;
        let mut stream = broken;
        stream.extend_from_slice(frames[1]);
        let (got, errors) = split_bytes(&stream, 512);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][..], frames[1]);
    }

    #[test]
    fn oversized_frame_is_dropped_with_bounded_memory() {
        let big = fixture_frames()[0];
        let small = tiny_jpeg();
        let mut stream = big.to_vec();
        stream.extend_from_slice(&small);
        let mut s = MjpegSplitter::with_max_frame_bytes(4096);
        let (mut frames, mut errors, mut peak) = (Vec::new(), Vec::new(), 0);
        for c in stream.chunks(1000) {
            s.push(c);
            peak = peak.max(s.buffered());
            while let Some(r) = s.next_frame() {
                match r {
                    Ok(f) => frames.push(f),
                    Err(e) => errors.push(e),
                }
            }
        }
        assert_eq!(errors.first(), Some(&SplitError::TooLarge { max: 4096 }));
        assert!(peak <= 4096 + 1000 + 1000, "peak {peak}");
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], &small[..]);
    }

    #[test]
    fn file_source_yields_ten_frames_then_none() {
        let mut src =
            MjpegSource::open(&file_cfg(&fixture_path(), "fps = 0"), &Limits::default()).unwrap();
        let got = drain(&mut src, 100);
        assert_eq!(got.len(), 10);
        let expected = fixture_frames();
        for (c, e) in got.iter().zip(&expected) {
            let Image::Jpeg(j) = &c.image else {
                panic!("not a jpeg")
            };
            assert_eq!(&j.data[..], *e);
            assert_eq!((j.width, j.height), (768, 576));
        }
        assert!(src.next_frame().unwrap().is_none());
        assert!(src.describe().contains("vtest-10.mjpeg"));
    }

    #[test]
    fn file_loop_restarts_at_the_end() {
        let mut src = MjpegSource::open(
            &file_cfg(&fixture_path(), "fps = 0\nloop = true"),
            &Limits::default(),
        )
        .unwrap();
        let got = drain(&mut src, 25);
        assert_eq!(got.len(), 25);
        let expected = fixture_frames();
        for (i, c) in got.iter().enumerate() {
            let Image::Jpeg(j) = &c.image else {
                panic!("not a jpeg")
            };
            assert_eq!(&j.data[..], expected[i % 10], "frame {i}");
        }
    }

    #[test]
    fn looping_file_without_frames_ends_instead_of_spinning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.mjpeg");
        std::fs::write(&path, vec![0x42u8; 10_000]).unwrap();
        let mut src =
            MjpegSource::open(&file_cfg(&path, "fps = 0\nloop = true"), &Limits::default())
                .unwrap();
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn truncated_file_gives_complete_frames_then_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.mjpeg");
        std::fs::write(&path, &fixture()[..fixture().len() - 5000]).unwrap();
        let mut src = MjpegSource::open(&file_cfg(&path, "fps = 0"), &Limits::default()).unwrap();
        assert_eq!(drain(&mut src, 100).len(), 9);
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn unparsable_frame_is_a_bad_frame_and_the_stream_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.mjpeg");
        // A structurally complete JPEG without SOF: splits fine, fails JpegImage::parse.
        let mut data = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xD9];
        data.extend_from_slice(fixture_frames()[3]);
        std::fs::write(&path, &data).unwrap();
        let mut src = MjpegSource::open(&file_cfg(&path, "fps = 0"), &Limits::default()).unwrap();
        let err = src.next_frame().unwrap_err();
        assert!(err.is_frame_error(), "{err}");
        let Some(c) = src.next_frame().unwrap() else {
            panic!("expected a frame")
        };
        assert_eq!(c.image.width(), 768);
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn file_source_is_paced_at_fps() {
        let mut src =
            MjpegSource::open(&file_cfg(&fixture_path(), "fps = 50"), &Limits::default()).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(drain(&mut src, 6).len(), 6);
        // First frame at once, then 5 periods of 20 ms.
        let dt = t.elapsed();
        assert!(dt >= std::time::Duration::from_millis(95), "{dt:?}");
        assert!(dt < std::time::Duration::from_millis(3000), "{dt:?}");
    }

    #[test]
    fn command_source_reads_child_stdout_then_ends() {
        let c = cfg(&format!(
            "kind = \"mjpeg\"\ncommand = ['cat', '{}']\nfps = 5",
            fixture_path().display()
        ));
        let mut src = MjpegSource::open(&c, &Limits::default()).unwrap();
        assert!(src.describe().starts_with("mjpeg command `cat "));
        let t = std::time::Instant::now();
        let got = drain(&mut src, 100);
        // Not paced (10 frames at fps 5 would take 1.8 s): the child's rate rules.
        assert!(t.elapsed() < std::time::Duration::from_millis(1500));
        assert_eq!(got.len(), 10);
        let expected = fixture_frames();
        for (c, e) in got.iter().zip(&expected) {
            let Image::Jpeg(j) = &c.image else {
                panic!("not a jpeg")
            };
            assert_eq!(&j.data[..], *e);
        }
        assert!(src.next_frame().unwrap().is_none());
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn endless_stream_without_frames_is_not_mjpeg_instead_of_a_busy_loop() {
        for program in ["/dev/zero", "/dev/urandom"] {
            let c = cfg(&format!("kind = \"mjpeg\"\ncommand = ['cat', '{program}']"));
            let mut src = MjpegSource::open(&c, &Limits::default()).unwrap();
            let mut bad = 0;
            let err = loop {
                match src.next_frame() {
                    Err(e) if e.is_frame_error() => bad += 1,
                    Err(e) => break e,
                    Ok(f) => panic!("{program}: unexpected {f:?}"),
                }
            };
            match err {
                SourceError::NotMjpeg { bytes, .. } => {
                    // Default limits: the larger of 16 MiB and max_frame_bytes (64 MiB).
                    let after = DEFAULT_MAX_FRAME_BYTES as u64;
                    assert!(bytes > after, "{program}: {bytes}");
                    assert!(
                        bytes <= after + READ_CHUNK_BYTES as u64,
                        "{program}: {bytes}"
                    );
                }
                other => panic!("{program}: {other:?}"),
            }
            // Random bytes start a frame now and then (FF D8 FF); zeros never do.
            assert!(program == "/dev/urandom" || bad == 0);
            let skipped = src.take_skipped().bytes;
            assert!(skipped > MIN_NOT_MJPEG_BYTES, "{program}: {skipped}");
            assert!(src.next_frame().unwrap().is_none());
        }
    }

    #[test]
    fn garbage_between_frames_is_reported_once_and_frames_over_the_limits_refused() {
        let frames = fixture_frames();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.mjpeg");
        let mut stream = vec![0x11; 500];
        stream.extend_from_slice(frames[0]);
        stream.extend_from_slice(&[0x22; 300]);
        stream.extend_from_slice(frames[1]);
        std::fs::write(&path, &stream).unwrap();
        let mut src = MjpegSource::open(&file_cfg(&path, "fps = 0"), &Limits::default()).unwrap();
        assert_eq!(drain(&mut src, 10).len(), 2);
        assert_eq!(
            src.take_skipped(),
            Skipped {
                bytes: 800,
                files: 0
            }
        );
        assert_eq!(src.take_skipped(), Skipped::default());
        // The same frames with a 640x480 limit (they are 768x576): refused, counted.
        let small = Limits {
            max_pixels: 640 * 480,
            ..Limits::default()
        };
        let mut src = MjpegSource::open(&file_cfg(&path, "fps = 0"), &small).unwrap();
        for _ in 0..2 {
            match src.next_frame() {
                Err(SourceError::TooLarge(m)) => assert!(m.contains("max_pixels"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(src.next_frame().unwrap().is_none());
        // A byte limit below the frame size: the splitter gives up on each frame.
        let tiny = Limits {
            max_frame_bytes: 4096,
            ..Limits::default()
        };
        let mut src = MjpegSource::open(&file_cfg(&path, "fps = 0"), &tiny).unwrap();
        match src.next_frame() {
            Err(SourceError::TooLarge(m)) => assert!(m.contains("4096"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn child_that_closes_stdout_but_lingers_is_reaped() {
        let c = cfg(&format!(
            "kind = \"mjpeg\"\ncommand = ['sh', '-c', 'cat {}; exec >&-; sleep 30']",
            fixture_path().display()
        ));
        let mut src = MjpegSource::open(&c, &Limits::default()).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(drain(&mut src, 100).len(), 10);
        assert!(src.next_frame().unwrap().is_none());
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn frames_larger_than_the_read_chunk_pass_whole() {
        let (w, h) = (900u32, 700u32);
        let px: Vec<u8> = (0..w * h * 3)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut big = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut big, 95)
            .encode(&px, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(big.len() > 4 * READ_CHUNK_BYTES, "{}", big.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.mjpeg");
        let mut data = big.clone();
        data.extend_from_slice(fixture_frames()[0]);
        data.extend_from_slice(&big);
        std::fs::write(&path, &data).unwrap();
        let mut src = MjpegSource::open(&file_cfg(&path, "fps = 0"), &Limits::default()).unwrap();
        let got = drain(&mut src, 10);
        let sizes: Vec<usize> = got
            .iter()
            .map(|c| match &c.image {
                Image::Jpeg(j) => j.data.len(),
                Image::Raw(_) | Image::Yuv(_) => 0,
            })
            .collect();
        assert_eq!(sizes, [big.len(), fixture_frames()[0].len(), big.len()]);
        assert_eq!(got[2].image.width(), 900);
    }

    #[test]
    fn dropping_command_source_kills_the_child() {
        let c = cfg("kind = \"mjpeg\"\ncommand = ['sleep', '30']");
        let src = MjpegSource::open(&c, &Limits::default()).unwrap();
        let Input::Command { child, .. } = &src.input else {
            panic!("not a command")
        };
        let pid = child.id();
        let t = std::time::Instant::now();
        drop(src);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Killed and reaped: the pid no longer exists (not even as a zombie).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn missing_command_is_an_open_error_naming_it() {
        let c = cfg("kind = \"mjpeg\"\ncommand = ['edgecam-no-such-program-xyz', '-o', '-']");
        match MjpegSource::open(&c, &Limits::default()) {
            Err(SourceError::Open { what, .. }) => {
                assert!(what.contains("edgecam-no-such-program-xyz"), "{what}")
            }
            other => panic!("expected Open error, got {other:?}"),
        }
        let empty = cfg("kind = \"mjpeg\"\ncommand = []");
        assert!(matches!(
            MjpegSource::open(&empty, &Limits::default()),
            Err(SourceError::Open { .. })
        ));
    }

    #[test]
    fn missing_file_is_an_open_error_naming_it() {
        let c = file_cfg(Path::new("/nonexistent/edgecam/x.mjpeg"), "");
        match MjpegSource::open(&c, &Limits::default()) {
            Err(SourceError::Open { what, .. }) => assert!(what.contains("x.mjpeg")),
            other => panic!("expected Open error, got {other:?}"),
        }
    }
}
