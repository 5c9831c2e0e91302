//! `edgecam consume`: read frames back from Kafka into files, at least once.
//!
//! Each record is written to `<output-dir>/<device>/<seq>.<ext>` (`jpg`, `png`; lossless
//! zstd frames are decoded and written as PNG) through a temporary file and a rename, and
//! only then is its offset stored for commit: a crash re-delivers, it never skips.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio_util::sync::CancellationToken;

use crate::frame::PixelFormat;
use crate::inspect;
use crate::limits::Limits;
use crate::record::{header, CONTENT_TYPE_RAW_ZSTD};

/// Options of `edgecam consume`.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Topic to read.
    pub topic: String,
    /// Consumer group (`group.id`); offsets are committed for it.
    pub group_id: String,
    /// Where to write frames.
    pub output_dir: PathBuf,
    /// `auto.offset.reset` when the group has no committed offset: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Stop after this many frames (`None` = run until interrupted).
    pub max_frames: Option<u64>,
    /// Stop when no record arrived for this long (`None` = wait forever).
    pub idle_timeout: Option<Duration>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Set to `true` once the consumer group has assigned partitions to this consumer
    /// (a producer started after that cannot outrun it).
    pub assigned: Option<tokio::sync::watch::Sender<bool>>,
    /// Bounds on each record's image (checked before anything is decoded or written);
    /// records over them are skipped and counted.
    pub limits: Limits,
}

/// Tells [`ConsumeOptions::assigned`] when partitions are assigned.
struct Context {
    assigned: Option<tokio::sync::watch::Sender<bool>>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(_), Some(tx)) = (rebalance, &self.assigned) {
            let _ = tx.send(true);
        }
    }
}

/// Why consuming failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// Kafka client error (configuration, subscription, commit).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Writing a frame file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What [`consume`] did.
#[derive(Debug, Default, Clone)]
pub struct ConsumeReport {
    /// Frames written.
    pub frames: u64,
    /// Bytes of record values read.
    pub bytes: u64,
    /// Records skipped: not an image, a broken one, one over the limits, or a lossless
    /// frame that did not decode.
    pub skipped: u64,
    /// Files written, in order.
    pub files: Vec<PathBuf>,
}

fn header_str<'a>(msg: &'a BorrowedMessage<'a>, name: &str) -> Option<&'a str> {
    let h = msg.headers()?;
    h.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// File name part safe for any device id (`device.id` is validated, but foreign producers
/// may write anything): keeps `[A-Za-z0-9._-]`, replaces the rest with `_`.
fn safe_component(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}

/// The bytes and extension to write for one record, or why it is skipped.
///
/// Every image is checked first: a JPEG or PNG with [`inspect::image`] (structure,
/// dimensions within `limits`; written without bytes after its EOI or IEND), a zstd frame's
/// stated dimensions against `limits` before its pixels are allocated.
fn file_contents(
    msg: &BorrowedMessage<'_>,
    limits: &Limits,
) -> Result<(Vec<u8>, &'static str), String> {
    let value = msg.payload().ok_or("no value")?;
    let checked = |data: &[u8]| {
        inspect::image(data, limits)
            .map(|i| data[..i.len].to_vec())
            .map_err(|e| format!("{}: {e}", e.reason()))
    };
    match header_str(msg, header::CONTENT_TYPE) {
        Some("image/png") => Ok((checked(value)?, "png")),
        Some(ct) if ct == CONTENT_TYPE_RAW_ZSTD => {
            let dim = |name| {
                header_str(msg, name)
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| format!("zstd frame without a numeric {name}"))
            };
            let (w, h) = (dim(header::WIDTH)?, dim(header::HEIGHT)?);
            limits
                .check_dimensions(w, h)
                .map_err(|e| format!("frame_too_large: {e}"))?;
            let pf = header_str(msg, header::PIXEL_FORMAT)
                .and_then(PixelFormat::parse)
                .ok_or("zstd frame without a pixel format")?;
            let raw = crate::encode::codec::decode_zstd(value, w, h, pf)
                .ok_or("zstd frame does not decompress to its stated size")?;
            let png = crate::encode::codec::encode_png(&raw).map_err(|e| e.to_string())?;
            Ok((png, "png"))
        }
        Some("image/jpeg") | None if value.starts_with(&[0xFF, 0xD8]) => {
            Ok((checked(value)?, "jpg"))
        }
        None if value.starts_with(&inspect::PNG_SIGNATURE) => Ok((checked(value)?, "png")),
        other => Err(format!("not an edgecam frame (content type {other:?})")),
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Consumes `opts.topic` until `max_frames`, the idle timeout, or `shutdown`.
///
/// Errors: [`ConsumeError`] on client or file-system failures; records that are not edgecam
/// frames are skipped and counted.
pub async fn consume(
    opts: &ConsumeOptions,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, ConsumeError> {
    let consumer: StreamConsumer<Context> = ClientConfig::new()
        .set("bootstrap.servers", &opts.bootstrap_servers)
        .set("group.id", &opts.group_id)
        .set("auto.offset.reset", &opts.auto_offset_reset)
        .set("enable.auto.commit", "true")
        // Offsets are stored by us, after the file is on disk.
        .set("enable.auto.offset.store", "false")
        .set("fetch.message.max.bytes", "10485760")
        .create_with_context(Context {
            assigned: opts.assigned.clone(),
        })?;
    consumer.subscribe(&[&opts.topic])?;
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(opts.max_frames.unwrap_or(0));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} frames {binary_bytes} {per_sec} {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let bar = Arc::new(bar);
    let mut report = ConsumeReport::default();
    let mut warnings = crate::throttle::Throttle::frames();
    std::fs::create_dir_all(&opts.output_dir).map_err(|source| ConsumeError::Write {
        path: opts.output_dir.clone(),
        source,
    })?;
    loop {
        if opts.max_frames.is_some_and(|m| report.frames >= m) {
            break;
        }
        let next = async {
            match opts.idle_timeout {
                Some(t) => tokio::time::timeout(t, consumer.recv()).await.ok(),
                None => Some(consumer.recv().await),
            }
        };
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = next => match m {
                None => break, // idle timeout
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
            }
        };
        report.bytes += msg.payload_len() as u64;
        let (data, ext) = match file_contents(&msg, &opts.limits) {
            Ok(c) => c,
            Err(why) => {
                report.skipped += 1;
                if let Some(suppressed) = warnings.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        partition = msg.partition(),
                        offset = msg.offset(),
                        suppressed,
                        "record skipped: {why}"
                    );
                }
                consumer.store_offset_from_message(&msg)?;
                continue;
            }
        };
        let device = header_str(&msg, header::DEVICE)
            .map(str::to_string)
            .or_else(|| msg.key().map(|k| String::from_utf8_lossy(k).into_owned()))
            .unwrap_or_else(|| "unknown".into());
        let seq = header_str(&msg, header::SEQ)
            .map(str::to_string)
            .unwrap_or_else(|| format!("p{}-o{}", msg.partition(), msg.offset()));
        let dir = opts.output_dir.join(safe_component(&device));
        let path = dir.join(format!("{}.{ext}", safe_component(&seq)));
        std::fs::create_dir_all(&dir)
            .and_then(|_| write_atomic(&path, &data))
            .map_err(|source| ConsumeError::Write {
                path: path.clone(),
                source,
            })?;
        consumer.store_offset_from_message(&msg)?;
        report.frames += 1;
        report.files.push(path);
        bar.inc(1);
        bar.inc_length(if opts.max_frames.is_none() { 1 } else { 0 });
    }
    bar.finish_and_clear();
    // Commit what was stored; harmless when nothing was.
    if report.frames + report.skipped > 0 {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            // Auto-commit already committed everything stored.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
            Ok(()) => {}
        }
    }
    Ok(report)
}
