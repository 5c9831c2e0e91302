//! Where frames go: Kafka ([`kafka`]) or an MQTT broker ([`mqtt`]).

pub mod kafka;
pub mod mqtt;

use crate::record::FrameRecord;

/// Which topic a record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `kafka.topic`: a frame.
    Frames,
    /// `kafka.error_topic`: a small JSON report about a frame that could not be published.
    Errors,
}

/// A record on its way to the sink, with what the sink needs for metrics.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Which topic.
    pub destination: Destination,
    /// The record.
    pub record: FrameRecord,
    /// When the frame was captured (for capture-to-delivery latency).
    pub captured_at: std::time::SystemTime,
}

/// What a sink still holds when it stops: `in_flight` records awaiting acknowledgement plus,
/// when its input was still open, whatever waits in `rx` (which is closed). Anything left is
/// logged and counted as `undelivered_at_shutdown`; returns the count.
pub(crate) fn count_undelivered(
    in_flight: usize,
    rx: &mut tokio::sync::mpsc::Receiver<Outgoing>,
    input_open: bool,
    metrics: &crate::metrics::Metrics,
) -> u64 {
    let mut left = in_flight as u64;
    if input_open {
        rx.close();
        while rx.try_recv().is_ok() {
            left += 1;
        }
    }
    if left > 0 {
        tracing::error!(
            undelivered = left,
            "shutdown grace period over; records left undelivered"
        );
        metrics.drop_frames(crate::metrics::DropReason::UndeliveredAtShutdown, left);
    }
    left
}

/// Counts a delivered frame in `metrics`: record bytes, capture-to-delivery latency, and the
/// quality it went out at, keyed `"<quality> at <width>x<height>"` (e.g. `40 at 432x324`).
pub(crate) fn count_delivered(out: &Outgoing, metrics: &crate::metrics::Metrics) {
    use crate::record::header;
    let latency = std::time::SystemTime::now()
        .duration_since(out.captured_at)
        .unwrap_or_default()
        .as_micros() as u64;
    metrics.delivered(out.record.wire_size() as u64, latency);
    let r = &out.record;
    if let (Some(q), Some(w), Some(h)) = (
        r.header(header::QUALITY),
        r.header(header::WIDTH),
        r.header(header::HEIGHT),
    ) {
        metrics.record_quality(&format!("{q} at {w}x{h}"));
    }
}
