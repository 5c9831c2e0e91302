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
