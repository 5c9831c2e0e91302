//! Fuzzes [`MjpegSplitter`]: arbitrary bytes, fed in arbitrary chunkings.
//!
//! Input layout: byte 0 = `cccc nnnn`: `nnnn` is how many chunk-size bytes follow, `ccc` (the
//! low 3 bits of `cccc`) picks a small frame cap `64 << ccc` (64 B–8 KiB) for the capped run.
//! Then `nnnn` chunk sizes (0–255 bytes each, used in turn; 0 is an empty push), then the
//! stream. Everything after the header is the MJPEG stream.
//!
//! Invariants checked, all promised by the splitter's docs:
//! - every frame starts with `FF D8`, ends with `FF D9`, and `edgecam::jpeg::complete_len`
//!   agrees that it is exactly one whole JPEG;
//! - with the default cap (64 MiB, never reached here), feeding the stream in one push or in
//!   many chunks gives the same frames and errors in the same order, the same skipped-byte
//!   count and the same leftover (chunking independence);
//! - with a small cap, `buffered()` never exceeds the cap plus the bytes of one push, and is
//!   at most the cap once `next_frame` has returned `None`.

#![no_main]

use bytes::Bytes;
use edgecam::jpeg::complete_len;
use edgecam::source::mjpeg::{MjpegSplitter, SplitError, DEFAULT_MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

/// What one run of the splitter over a whole stream produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Frames and errors, in the order `next_frame` returned them.
    events: Vec<Result<Bytes, SplitError>>,
    /// `skipped_bytes()` at the end.
    skipped: u64,
    /// `buffered()` at the end (a partial frame, or up to 2 bytes that may start an SOI).
    left: usize,
}

/// Feeds `stream` to a splitter with cap `cap`, cutting it into pushes of `sizes[0]`,
/// `sizes[1]`, … (cycling), draining `next_frame` after every push and checking the
/// per-frame and memory invariants on the way.
fn split(stream: &[u8], sizes: &[usize], cap: usize) -> Outcome {
    let mut s = MjpegSplitter::with_max_frame_bytes(cap);
    let mut events = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        s.push(chunk);
        assert!(
            s.buffered() <= cap + chunk.len(),
            "buffered {} > cap {cap} + push {}",
            s.buffered(),
            chunk.len()
        );
        while let Some(ev) = s.next_frame() {
            if let Ok(frame) = &ev {
                assert!(frame.starts_with(&[0xFF, 0xD8]), "frame without SOI");
                assert!(frame.ends_with(&[0xFF, 0xD9]), "frame without EOI");
                assert_eq!(
                    complete_len(frame),
                    Some(frame.len()),
                    "frame is not exactly one whole JPEG"
                );
            }
            assert!(s.buffered() <= cap + chunk.len());
            events.push(ev);
        }
        assert!(
            s.buffered() <= cap,
            "buffered {} > cap {cap} with no frame ready",
            s.buffered()
        );
    }
    Outcome {
        events,
        skipped: s.skipped_bytes(),
        left: s.buffered(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let n = (head & 0x0F) as usize;
    let cap = 64usize << ((head >> 4) & 0x07);
    if rest.len() < n {
        return;
    }
    let (size_bytes, stream) = rest.split_at(n);
    let mut sizes: Vec<usize> = size_bytes.iter().map(|&b| b as usize).collect();
    // Only empty pushes would never finish: fall back to one byte at a time.
    if sizes.iter().all(|&s| s == 0) {
        sizes = vec![1];
    }

    let whole = split(stream, &[stream.len().max(1)], DEFAULT_MAX_FRAME_BYTES);
    let chunked = split(stream, &sizes, DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(whole, chunked, "chunking changed the outcome");

    split(stream, &sizes, cap);
});
