//! The Kafka record edgecam publishes for a frame: key, headers, value, and the exact bytes
//! that record occupies on the wire, so the byte budget can bound the *whole* record.
//!
//! Record headers (values are UTF-8 text):
//!
//! | header | value |
//! | --- | --- |
//! | `edgecam.device` | device id (also the record key) |
//! | `edgecam.seq` | frame sequence number, per device; with the spool on it continues across restarts (it may jump forward after a crash, never back) |
//! | `edgecam.frame_id` | UUIDv7, unique per frame and kept for life (a replayed or resent copy has the same id): de-duplicate on it |
//! | `edgecam.captured_at` | capture time, RFC 3339, UTC, microseconds |
//! | `content-type` | `image/jpeg`, `image/png` or `application/vnd.edgecam.raw+zstd` |
//! | `edgecam.width`, `edgecam.height` | pixels of the image in the value |
//! | `edgecam.codec` | `jpeg`, `png` or `zstd` |
//! | `edgecam.quality` | JPEG quality 1–100 (estimated from the quantisation table for a passed-through frame), or `lossless` |
//! | `edgecam.pixel_format` | only for `zstd`: `rgb8` or `gray8` (raw pixels, row-major, no padding) |
//! | `edgecam.replayed` | `1`, only on a record sent from the spool (after an outage or a restart); every other header is as first written |

use std::borrow::Cow;

use bytes::Bytes;

/// Header names, in the order they are written.
pub mod header {
    /// Device id.
    pub const DEVICE: &str = "edgecam.device";
    /// Sequence number.
    pub const SEQ: &str = "edgecam.seq";
    /// Unique frame id (UUIDv7).
    pub const FRAME_ID: &str = "edgecam.frame_id";
    /// Capture time, RFC 3339 UTC.
    pub const CAPTURED_AT: &str = "edgecam.captured_at";
    /// MIME type of the value.
    pub const CONTENT_TYPE: &str = "content-type";
    /// Width in pixels.
    pub const WIDTH: &str = "edgecam.width";
    /// Height in pixels.
    pub const HEIGHT: &str = "edgecam.height";
    /// Codec name.
    pub const CODEC: &str = "edgecam.codec";
    /// Quality.
    pub const QUALITY: &str = "edgecam.quality";
    /// Pixel format of raw (zstd) values.
    pub const PIXEL_FORMAT: &str = "edgecam.pixel_format";
    /// `1` on a record sent again from the spool after an outage or a restart.
    pub const REPLAYED: &str = "edgecam.replayed";
    /// Why a frame could not be published (error-topic records).
    pub const REASON: &str = "edgecam.reason";

    /// Every header name edgecam writes, so a name read back from disk can be matched to
    /// its `&'static str`.
    pub const ALL: &[&str] = &[
        DEVICE,
        SEQ,
        FRAME_ID,
        CAPTURED_AT,
        CONTENT_TYPE,
        WIDTH,
        HEIGHT,
        CODEC,
        QUALITY,
        PIXEL_FORMAT,
        REPLAYED,
        REASON,
    ];

    /// The name in [`ALL`] equal to `name`, if any.
    pub fn intern(name: &[u8]) -> Option<&'static str> {
        ALL.iter().copied().find(|n| n.as_bytes() == name)
    }
}

/// MIME type of lossless frames: raw pixels (see `edgecam.pixel_format`) compressed with zstd.
pub const CONTENT_TYPE_RAW_ZSTD: &str = "application/vnd.edgecam.raw+zstd";

/// A header name: one of [`header::ALL`] (borrowed) or, for records the bridge passes
/// through from MQTT user properties, any other name (owned).
pub type HeaderName = Cow<'static, str>;

/// One Kafka record, ready to produce: a frame, an error report, or a bridge dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRecord {
    /// Record key: the device id, so one device's frames stay ordered in one partition.
    /// Empty means no key (a null key in Kafka): only a bridge dead letter whose device is
    /// unknown has none, as a device id is never empty.
    pub key: String,
    /// Headers, `(name, UTF-8 value)`, in the order they are written.
    pub headers: Vec<(HeaderName, String)>,
    /// The image itself: any Kafka client can write it to a file as is.
    pub value: Bytes,
}

impl FrameRecord {
    /// Bytes this record occupies in a Kafka record batch of its own (see [`record_size`]).
    pub fn wire_size(&self) -> usize {
        record_size(self.key.len(), self.headers_len(), self.value.len())
    }

    fn headers_len(&self) -> impl Iterator<Item = (usize, usize)> + Clone + '_ {
        self.headers.iter().map(|(k, v)| (k.len(), v.len()))
    }

    /// The key as Kafka gets it: `None` for an empty key.
    pub fn kafka_key(&self) -> Option<&[u8]> {
        (!self.key.is_empty()).then_some(self.key.as_bytes())
    }

    /// Looks a header up by name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Size of an unsigned LEB128 varint (Kafka's zig-zag varints of non-negative values are
/// twice the value, hence `2 * v`).
fn varint_len(v: usize) -> usize {
    let mut v = (v as u64) << 1; // zig-zag of a non-negative value
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Fixed part of a Kafka v2 record batch header (magic 2): base offset, length, leader epoch,
/// magic, CRC, attributes, last offset delta, first/max timestamp, producer id/epoch, base
/// sequence, record count.
pub const BATCH_OVERHEAD: usize = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4;

/// Upper bound on the bytes a record with this key, these headers (`(name len, value len)`)
/// and a value of `value_len` bytes occupies as the only record of a v2 record batch:
/// the batch header plus the record with its varint framing (timestamp and offset deltas
/// counted at their largest).
///
/// This is what a broker compares with `message.max.bytes`, and at least what librdkafka
/// compares with its own `message.max.bytes`, so a record whose `record_size` fits the
/// budget is never rejected as too large.
pub fn record_size(
    key_len: usize,
    headers: impl Iterator<Item = (usize, usize)> + Clone,
    value_len: usize,
) -> usize {
    let count = headers.clone().count();
    let headers_bytes: usize = headers
        .map(|(k, v)| varint_len(k) + k + varint_len(v) + v)
        .sum();
    let body = 1 // attributes
        + 10 // timestamp delta, varlong at its largest
        + 5 // offset delta, varint at its largest
        + varint_len(key_len) + key_len
        + varint_len(value_len) + value_len
        + varint_len(count) + headers_bytes;
    BATCH_OVERHEAD + varint_len(body) + body
}

/// Upper bound on everything but the value, for any frame of `device`: the value budget is
/// `max_message_bytes - max_overhead(device)`. Uses the longest possible header values
/// (20-digit sequence, 10-digit dimensions, the longest content type and quality text).
pub fn max_overhead(device: &str) -> usize {
    let worst = [
        (header::DEVICE, device.len()),
        (header::SEQ, 20),
        (header::FRAME_ID, 36),
        (header::CAPTURED_AT, "9999-12-31T23:59:59.999999Z".len()),
        (header::CONTENT_TYPE, CONTENT_TYPE_RAW_ZSTD.len()),
        (header::WIDTH, 10),
        (header::HEIGHT, 10),
        (header::CODEC, 4),
        (header::QUALITY, "lossless".len()),
        (header::PIXEL_FORMAT, 5),
        (header::REPLAYED, 1),
    ];
    let headers = worst.iter().map(|(k, v)| (k.len(), *v));
    // A value whose length needs the longest varint (5 bytes) is the worst case for framing.
    record_size(device.len(), headers, 0) + 4 + 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_kafka_zigzag() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(63), 1); // zig-zag 126
        assert_eq!(varint_len(64), 2); // zig-zag 128
        assert_eq!(varint_len(8191), 2);
        assert_eq!(varint_len(8192), 3);
        assert_eq!(varint_len(1_000_000), 3);
    }

    #[test]
    fn overhead_bounds_every_real_record() {
        let dev = "front-door";
        let bound = max_overhead(dev);
        for value_len in [0usize, 1, 63, 64, 8191, 8192, 1 << 20, 999_000] {
            let headers = [(14usize, dev.len()), (11, 20), (16, 36), (19, 27), (12, 33)];
            let size = record_size(dev.len(), headers.iter().copied(), value_len);
            assert!(size - value_len <= bound, "{value_len}: {size} vs {bound}");
        }
    }
}
