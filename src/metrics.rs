//! Counters and gauges of one agent, shared by every stage. Lock-free where it is hot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Why a frame was not published. Every drop is counted under one of these. All but the
/// intentional discards ([`DropReason::is_intentional`]) are frames lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The queue before the encoder was full; the oldest waiting frame made room
    /// (`pipeline.overflow = "drop_oldest"`).
    QueueFullOldest,
    /// The queue was full; the new frame was refused (`pipeline.overflow = "drop_newest"`).
    QueueFullNewest,
    /// The source delivered a frame it could not read (corrupt or truncated JPEG or PNG,
    /// unreadable file).
    BadFrame,
    /// The frame is over `[limits]` (bytes, pixels or side), refused from its header before
    /// its pixels were allocated.
    FrameTooLarge,
    /// No rung of the ladder fits the budget.
    BudgetUnreachable,
    /// The source JPEG could not be decoded for re-encoding.
    DecodeError,
    /// An encoder failed.
    EncodeError,
    /// Kafka refused the record permanently (e.g. `MSG_SIZE_TOO_LARGE`, authorisation).
    DeliveryRejected,
    /// Still undelivered when the shutdown grace period ran out, and not kept in the spool
    /// (`spool.mode = "off"`, or the spool could not take it).
    UndeliveredAtShutdown,
    /// The spool was at `spool.max_bytes`: its oldest segment was dropped to make room.
    SpoolFull,
    /// Spooled longer than `spool.max_age_secs`.
    SpoolExpired,
    /// Damaged on disk (a checksum failed at recovery or replay).
    SpoolCorrupt,
    /// The spool could not write it (a full disk, an I/O error) and memory was full too.
    SpoolWriteFailed,
    /// Intentional: `[gate]` found the scene unchanged (no motion, outside the rolls, no
    /// heartbeat due), and the frame was not published on purpose.
    Unchanged,
    /// Intentional: a source that runs at its own rate (a child process) gave a frame sooner
    /// than `source.fps` allows, and the surplus frame was discarded on purpose.
    FpsLimit,
}

impl DropReason {
    /// Name in logs, summaries and the error topic's `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFullOldest => "queue_full_oldest",
            DropReason::QueueFullNewest => "queue_full_newest",
            DropReason::BadFrame => "bad_frame",
            DropReason::FrameTooLarge => "frame_too_large",
            DropReason::BudgetUnreachable => "budget_unreachable",
            DropReason::DecodeError => "decode_error",
            DropReason::EncodeError => "encode_error",
            DropReason::DeliveryRejected => "delivery_rejected",
            DropReason::UndeliveredAtShutdown => "undelivered_at_shutdown",
            DropReason::SpoolFull => "spool_full",
            DropReason::SpoolExpired => "spool_expired",
            DropReason::SpoolCorrupt => "spool_corrupt",
            DropReason::SpoolWriteFailed => "spool_write_failed",
            DropReason::Unchanged => "unchanged",
            DropReason::FpsLimit => "fps_limit",
        }
    }

    /// `true` for a frame discarded on purpose (`fps_limit`, `unchanged`), not lost: not an error, not
    /// counted in [`Metrics::dropped_total`].
    pub fn is_intentional(self) -> bool {
        matches!(self, DropReason::FpsLimit | DropReason::Unchanged)
    }

    /// From an [`EncodeError::reason`](crate::encode::EncodeError::reason) string.
    pub fn from_encode_reason(reason: &str) -> Self {
        match reason {
            "budget_unreachable" => DropReason::BudgetUnreachable,
            "decode_error" => DropReason::DecodeError,
            "frame_too_large" => DropReason::FrameTooLarge,
            _ => DropReason::EncodeError,
        }
    }
}

/// What the last published frame looked like (for the MQTT state document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `jpeg`, `png` or `zstd`.
    pub codec: &'static str,
    /// The `edgecam.quality` header value.
    pub quality: String,
}

/// The agent's counters. All counts are frames unless the name says bytes or ms.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Frames the source delivered (accepted into the pipeline or dropped at the queue),
    /// bad frames included; not the surplus frames of a child process discarded to keep
    /// `source.fps` (`fps_limit`): frames read = `captured` + `fps_limit`.
    pub captured: AtomicU64,
    /// Frames that entered the queue before the encoder.
    pub accepted: AtomicU64,
    /// Frames encoded (or passed through) and handed to the sink.
    pub encoded: AtomicU64,
    /// Frames published untouched.
    pub passthrough: AtomicU64,
    /// Encoder calls, summed over frames (`encodes / encoded` = encodes per frame).
    pub encodes: AtomicU64,
    /// Frames whose delivery report said "delivered".
    pub delivered: AtomicU64,
    /// Record bytes (value + key + headers + framing) delivered.
    pub delivered_bytes: AtomicU64,
    /// Largest delivered record, bytes.
    pub max_record_bytes: AtomicU64,
    /// Deliveries that failed and were sent again.
    pub delivery_retries: AtomicU64,
    /// Kafka producers replaced after a fatal error (librdkafka's idempotent producer never
    /// delivers again once fatal); what they had not delivered was sent again.
    pub producer_restarts: AtomicU64,
    /// Capture-to-delivery latency, summed over delivered frames, microseconds.
    pub latency_us_sum: AtomicU64,
    /// Largest capture-to-delivery latency, microseconds.
    pub latency_us_max: AtomicU64,
    /// Records sent to the error topic.
    pub error_records: AtomicU64,
    /// MQTT connections lost or dropped by the no-traffic watchdog (each is followed by a
    /// reconnect and a resend of everything unacknowledged).
    pub mqtt_reconnects: AtomicU64,
    /// Records written to the spool (counter).
    pub spooled: AtomicU64,
    /// Records sent again from the spool (counter).
    pub replayed: AtomicU64,
    /// Spool write or sync failures (counter); each is logged, and the records stay in
    /// memory while there is room.
    pub spool_errors: AtomicU64,
    /// Records the forwarder tracks that are not yet delivered: with the sink, waiting for
    /// it, or in memory (gauge; the spool's backlog is `spool_records`).
    pub unacked: AtomicU64,
    /// Records in the spool not yet delivered (gauge).
    pub spool_records: AtomicU64,
    /// Bytes of the spool's files (gauge).
    pub spool_bytes: AtomicU64,
    /// Bytes of input that belonged to no frame (garbage between MJPEG frames), skipped.
    pub skipped_bytes: AtomicU64,
    /// Entries of an image directory with an image's name that are not regular files
    /// (devices, FIFOs, sockets, dangling links), skipped.
    pub skipped_files: AtomicU64,
    /// Set once the source is open and the producer created (systemd `READY=1`).
    pub ready: std::sync::atomic::AtomicBool,
    last_error: Mutex<Option<String>>,
    last_frame: Mutex<Option<LastFrame>>,
    /// Wall-clock time of the last captured frame, milliseconds since the Unix epoch (0 =
    /// none yet).
    pub last_capture_unix_ms: AtomicU64,
    /// Wall-clock time of the last delivered frame, milliseconds since the Unix epoch (0 =
    /// none yet).
    pub last_delivery_unix_ms: AtomicU64,
    /// Distributions for `/metrics`.
    pub histograms: Histograms,
    dropped: Mutex<BTreeMap<DropReason, u64>>,
    quality: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Counts one dropped frame.
    pub fn drop_frame(&self, reason: DropReason) {
        *self.dropped.lock().unwrap().entry(reason).or_default() += 1;
    }

    /// Counts `n` dropped frames.
    pub fn drop_frames(&self, reason: DropReason, n: u64) {
        if n > 0 {
            *self.dropped.lock().unwrap().entry(reason).or_default() += n;
        }
    }

    /// Remembers `message` as the most recent error (shown in systemd's `STATUS=`).
    pub fn set_last_error(&self, message: impl Into<String>) {
        *self.last_error.lock().unwrap() = Some(message.into());
    }

    /// Remembers the last encoded frame.
    pub fn set_last_frame(&self, frame: LastFrame) {
        *self.last_frame.lock().unwrap() = Some(frame);
    }

    /// The last encoded frame, if any.
    pub fn last_frame(&self) -> Option<LastFrame> {
        self.last_frame.lock().unwrap().clone()
    }

    /// The most recent error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }

    /// Drops so far, by reason, intentional discards included.
    pub fn dropped(&self) -> BTreeMap<DropReason, u64> {
        self.dropped.lock().unwrap().clone()
    }

    /// Frames lost: every drop except the intentional discards
    /// ([`DropReason::is_intentional`], e.g. `fps_limit`).
    pub fn dropped_total(&self) -> u64 {
        self.dropped
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| !r.is_intentional())
            .map(|(_, n)| n)
            .sum()
    }

    /// Frames discarded on purpose ([`DropReason::is_intentional`]), not lost.
    pub fn discarded_on_purpose(&self) -> u64 {
        self.dropped
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r.is_intentional())
            .map(|(_, n)| n)
            .sum()
    }

    /// Counts one published frame under `quality` (e.g. `40 at 432x324`).
    pub fn record_quality(&self, quality: &str) {
        *self
            .quality
            .lock()
            .unwrap()
            .entry(quality.to_string())
            .or_default() += 1;
    }

    /// Frames by quality and size.
    pub fn qualities(&self) -> BTreeMap<String, u64> {
        self.quality.lock().unwrap().clone()
    }

    /// Records a delivery of a `bytes`-byte record, `latency_us` after capture.
    pub fn delivered(&self, bytes: u64, latency_us: u64) {
        self.last_delivery_unix_ms.store(unix_ms_now(), Relaxed);
        self.histograms.record_bytes.observe(bytes as f64);
        self.histograms
            .delivery_latency_seconds
            .observe(latency_us as f64 / 1e6);
        self.delivered.fetch_add(1, Relaxed);
        self.delivered_bytes.fetch_add(bytes, Relaxed);
        self.max_record_bytes.fetch_max(bytes, Relaxed);
        self.latency_us_sum.fetch_add(latency_us, Relaxed);
        self.latency_us_max.fetch_max(latency_us, Relaxed);
    }

    /// A plain-text multi-line summary, for the end of `run` and `demo`.
    pub fn summary(&self, elapsed_secs: f64) -> String {
        let delivered = self.delivered.load(Relaxed);
        let encoded = self.encoded.load(Relaxed);
        let bytes = self.delivered_bytes.load(Relaxed);
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "frames: captured {} accepted {} encoded {} (passthrough {}) delivered {} dropped {}",
            self.captured.load(Relaxed),
            self.accepted.load(Relaxed),
            encoded,
            self.passthrough.load(Relaxed),
            delivered,
            self.dropped_total()
        );
        for (reason, n) in self.dropped() {
            if reason.is_intentional() {
                continue;
            }
            let _ = writeln!(s, "  dropped {}: {}", reason.as_str(), n);
        }
        let on_purpose = self.discarded_on_purpose();
        if on_purpose > 0 {
            let _ = writeln!(s, "discarded on purpose (not lost): {on_purpose}");
            for (reason, n) in self.dropped() {
                if reason.is_intentional() {
                    let _ = writeln!(s, "  discarded {}: {}", reason.as_str(), n);
                }
            }
        }
        let spooled = self.spooled.load(Relaxed);
        if spooled + self.spool_records.load(Relaxed) > 0 {
            let _ = writeln!(
                s,
                "spool: {} spooled, {} replayed, {} left ({} bytes), {} write errors",
                spooled,
                self.replayed.load(Relaxed),
                self.spool_records.load(Relaxed),
                self.spool_bytes.load(Relaxed),
                self.spool_errors.load(Relaxed)
            );
        }
        let (skipped_bytes, skipped_files) = (
            self.skipped_bytes.load(Relaxed),
            self.skipped_files.load(Relaxed),
        );
        if skipped_bytes + skipped_files > 0 {
            let _ = writeln!(
                s,
                "skipped input: {skipped_bytes} bytes outside frames, {skipped_files} entries \
                 that are not regular files"
            );
        }
        let _ = writeln!(
            s,
            "bytes: {} delivered, mean record {} B, max record {} B",
            bytes,
            bytes.checked_div(delivered).unwrap_or(0),
            self.max_record_bytes.load(Relaxed)
        );
        let reencoded = encoded.saturating_sub(self.passthrough.load(Relaxed));
        let _ = writeln!(
            s,
            "encodes: {} total, {:.2} per re-encoded frame, {:.2} per frame",
            self.encodes.load(Relaxed),
            if reencoded > 0 {
                self.encodes.load(Relaxed) as f64 / reencoded as f64
            } else {
                0.0
            },
            if encoded > 0 {
                self.encodes.load(Relaxed) as f64 / encoded as f64
            } else {
                0.0
            },
        );
        let q: Vec<String> = self
            .qualities()
            .into_iter()
            .map(|(q, n)| format!("{q}: {n}"))
            .collect();
        let _ = writeln!(s, "quality chosen: {}", q.join(", "));
        let _ = writeln!(
            s,
            "latency capture->delivered: mean {:.1} ms, max {:.1} ms",
            if delivered > 0 {
                self.latency_us_sum.load(Relaxed) as f64 / delivered as f64 / 1000.0
            } else {
                0.0
            },
            self.latency_us_max.load(Relaxed) as f64 / 1000.0
        );
        if let Some(rss) = peak_rss_bytes() {
            let _ = writeln!(s, "memory: peak RSS {rss} bytes");
        }
        let _ = write!(
            s,
            "throughput: {:.1} frames/s delivered over {:.2} s",
            if elapsed_secs > 0.0 {
                delivered as f64 / elapsed_secs
            } else {
                0.0
            },
            elapsed_secs
        );
        s
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Histograms of one agent (Prometheus histograms: cumulative buckets, sum, count), shown by
/// `/metrics`. Observing costs a few atomic adds.
#[derive(Debug, Clone)]
pub struct Histograms {
    /// Delivered record sizes, bytes (whole record, as the budget counts it).
    pub record_bytes: prometheus_client::metrics::histogram::Histogram,
    /// Time to fit one frame under the budget (decode, transforms, every encode attempt),
    /// seconds.
    pub encode_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Capture to delivery report (or PUBACK), seconds.
    pub delivery_latency_seconds: prometheus_client::metrics::histogram::Histogram,
    /// JPEG quality of delivered frames, 1–100 (lossless frames are not observed).
    pub jpeg_quality: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
        Histograms {
            // 1 KiB … 16 MiB.
            record_bytes: Histogram::new(exponential_buckets(1024.0, 2.0, 15)),
            // 0.5 ms … ~4 s.
            encode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            // 1 ms … ~65 s: outages and spool replay included.
            delivery_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            jpeg_quality: Histogram::new((1..=10).map(|q| q as f64 * 10.0)),
        }
    }
}

/// This process's peak resident set size so far, bytes (`VmHWM` of `/proc/self/status`), or
/// `None` where there is no procfs.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_limit_is_listed_as_discarded_on_purpose_not_dropped() {
        let m = Metrics::default();
        m.drop_frames(DropReason::FpsLimit, 40);
        m.drop_frame(DropReason::QueueFullOldest);
        assert_eq!(m.dropped_total(), 1);
        assert_eq!(m.discarded_on_purpose(), 40);
        assert_eq!(m.dropped().get(&DropReason::FpsLimit), Some(&40));
        let s = m.summary(1.0);
        assert!(s.lines().next().unwrap().ends_with("dropped 1"), "{s}");
        assert!(s.contains("  dropped queue_full_oldest: 1\n"), "{s}");
        assert!(!s.contains("dropped fps_limit"), "{s}");
        assert!(s.contains("discarded on purpose (not lost): 40\n"), "{s}");
        assert!(s.contains("  discarded fps_limit: 40\n"), "{s}");
    }
}
