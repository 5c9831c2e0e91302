//! `/metrics`: the agent's [`Metrics`] in the Prometheus (OpenMetrics) text format, through
//! `prometheus-client`, and the helpers the bridge's collector (`bridge::metrics`) uses.
//!
//! The counters and gauges are read from the same atomics the exit summary prints, at
//! scrape time ([`Collector`]), so a scrape and the summary never disagree. Every metric has
//! the prefix `edgecam_` and a `device` label (the bridge: `bridge`); counters end in
//! `_total`, sizes are bytes and times seconds.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;

/// The encoder a collector writes to.
pub(crate) type Enc<'a> = DescriptorEncoder<'a>;
/// What encoding returns.
pub(crate) type Res = Result<(), std::fmt::Error>;

/// One counter `name` of value `v`.
pub(crate) fn counter(e: &mut Enc<'_>, name: &str, help: &str, v: u64) -> Res {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// One gauge `name` of value `v`.
pub(crate) fn gauge(e: &mut Enc<'_>, name: &str, help: &str, v: i64) -> Res {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One counter per label value: `name{label="…"}`.
pub(crate) fn counters_by<'k>(
    e: &mut Enc<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'k str, u64)>,
) -> Res {
    let mut family = e.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, n) in values {
        ConstCounter::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// `build_info` (always 1, labelled with the version).
pub(crate) fn build_info(e: &mut Enc<'_>) -> Res {
    let g = ConstGauge::new(1i64);
    let mut family = e.encode_descriptor(
        "build_info",
        "Always 1; the labels say which edgecam this is",
        None,
        g.metric_type(),
    )?;
    g.encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
}

/// The agent's counters and gauges, read at scrape time, and its sink's kind (`kafka`,
/// `mqtt`) for `frames_delivered_total{sink}`.
#[derive(Debug)]
struct AgentCollector(Arc<Metrics>, &'static str);

impl Collector for AgentCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Res {
        let m = &self.0;
        let c = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        build_info(&mut e)?;
        counter(
            &mut e,
            "frames_captured",
            "Frames the source delivered",
            c(&m.captured),
        )?;
        counter(
            &mut e,
            "frames_accepted",
            "Frames that entered the queue before the encoder",
            c(&m.accepted),
        )?;
        counter(
            &mut e,
            "frames_encoded",
            "Frames fitted under the budget (or passed through) and handed to the sink",
            c(&m.encoded),
        )?;
        counter(
            &mut e,
            "frames_passthrough",
            "Frames published untouched",
            c(&m.passthrough),
        )?;
        counters_by(
            &mut e,
            "frames_delivered",
            "Frames the broker acknowledged (Kafka delivery report, MQTT PUBACK), by sink",
            "sink",
            [(self.1, c(&m.delivered))],
        )?;
        let dropped = m.dropped();
        counters_by(
            &mut e,
            "frames_discarded",
            "Frames not published, by reason (fps_limit: a child process's surplus frames, \
             discarded on purpose to keep source.fps, not lost)",
            "reason",
            dropped.iter().map(|(r, n)| (r.as_str(), *n)),
        )?;
        counter(
            &mut e,
            "encode_attempts",
            "Encoder calls, summed over frames",
            c(&m.encodes),
        )?;
        counter(
            &mut e,
            "delivered_bytes",
            "Bytes of delivered records (value, key, headers, framing)",
            c(&m.delivered_bytes),
        )?;
        counter(
            &mut e,
            "delivery_retries",
            "Deliveries that failed and were sent again",
            c(&m.delivery_retries),
        )?;
        counter(
            &mut e,
            "producer_restarts",
            "Kafka producers recreated after a fatal error",
            c(&m.producer_restarts),
        )?;
        counter(
            &mut e,
            "error_records",
            "Records sent to the error topic",
            c(&m.error_records),
        )?;
        counter(
            &mut e,
            "mqtt_reconnects",
            "MQTT connections lost or dropped by the no-traffic watchdog",
            c(&m.mqtt_reconnects),
        )?;
        counter(
            &mut e,
            "spool_written_records",
            "Records written to the spool",
            c(&m.spooled),
        )?;
        counter(
            &mut e,
            "spool_replayed_records",
            "Records sent again from the spool",
            c(&m.replayed),
        )?;
        counter(
            &mut e,
            "spool_errors",
            "Spool write or sync failures",
            c(&m.spool_errors),
        )?;
        counter(
            &mut e,
            "skipped_input_bytes",
            "Bytes of input that belonged to no frame",
            c(&m.skipped_bytes),
        )?;
        gauge(
            &mut e,
            "in_flight_records",
            "Records accepted and not yet delivered (with the sink, waiting, in memory)",
            c(&m.unacked) as i64,
        )?;
        gauge(
            &mut e,
            "spool_records",
            "Records in the spool not yet delivered",
            c(&m.spool_records) as i64,
        )?;
        gauge(
            &mut e,
            "spool_bytes",
            "Bytes of the spool's files",
            c(&m.spool_bytes) as i64,
        )?;
        let now = crate::metrics::unix_ms_now();
        let sink_up = super::agent_not_ready(m, std::time::Duration::from_secs(5), now)
            .iter()
            .all(|r| !r.starts_with("sink:"));
        gauge(
            &mut e,
            "sink_up",
            "1 while the sink delivers (or has nothing waiting) within 5 s, else 0",
            sink_up as i64,
        )?;
        gauge(
            &mut e,
            "last_capture_timestamp_seconds",
            "Unix time of the last captured frame (0: none yet)",
            (c(&m.last_capture_unix_ms) / 1000) as i64,
        )?;
        Ok(())
    }
}

/// The registry `/metrics` renders for an agent publishing to a `sink` (`kafka`, `mqtt`):
/// the collector, and the histograms of [`crate::metrics::Histograms`], labelled `device`.
pub fn agent_registry(device: &str, sink: &'static str, metrics: Arc<Metrics>) -> Registry {
    let mut root = Registry::with_prefix_and_labels(
        "edgecam",
        [(Cow::Borrowed("device"), Cow::Owned(device.to_string()))].into_iter(),
    );
    let h = &metrics.histograms;
    root.register_with_unit(
        "record",
        "Delivered record sizes",
        prometheus_client::registry::Unit::Bytes,
        h.record_bytes.clone(),
    );
    root.register_with_unit(
        "encode",
        "Time to fit one frame under the budget",
        prometheus_client::registry::Unit::Seconds,
        h.encode_seconds.clone(),
    );
    root.register_with_unit(
        "delivery_latency",
        "Capture to delivery report (or PUBACK)",
        prometheus_client::registry::Unit::Seconds,
        h.delivery_latency_seconds.clone(),
    );
    root.register(
        "jpeg_quality",
        "JPEG quality of delivered frames",
        h.jpeg_quality.clone(),
    );
    root.register_collector(Box::new(AgentCollector(metrics, sink)));
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DropReason;

    #[test]
    fn fps_limit_discards_are_a_reason_of_frames_discarded_total() {
        let m = Arc::new(Metrics::default());
        m.drop_frames(DropReason::FpsLimit, 7);
        m.drop_frame(DropReason::BadFrame);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &agent_registry("cam", "kafka", m.clone()),
        )
        .unwrap();
        let line = |reason: &str| {
            out.lines()
                .find(|l| {
                    l.starts_with("edgecam_frames_discarded_total{")
                        && l.contains(&format!("reason=\"{reason}\""))
                })
                .unwrap_or_else(|| panic!("no {reason} in:\n{out}"))
                .to_string()
        };
        assert!(line("fps_limit").ends_with(" 7"), "{out}");
        assert!(line("bad_frame").ends_with(" 1"), "{out}");
        // Discarded on purpose is not lost.
        assert_eq!(m.dropped_total(), 1);
        assert_eq!(m.discarded_on_purpose(), 7);
    }
}
