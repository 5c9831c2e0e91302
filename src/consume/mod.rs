//! `edgecam consume`: read frames back from Kafka into files, at least once, each frame
//! once.
//!
//! # Where a record goes
//!
//! ```text
//! <output-dir>/<device>/<YYYYMMDD>/<YYYYMMDDTHHMMSS.ffffffZ>-<seq>-<id>.<ext>
//! e.g. out/front-door/20261203/20261203T061502.123456Z-00000000000000000042-0123456789ab.jpg
//! ```
//!
//! - `<device>`: the `edgecam.device` header, else the record key, else `unknown`; only
//!   `A-Z a-z 0-9 . _ -` are kept (anything else becomes `_`, `.` and `..` become `_`), cut
//!   to 128 bytes: a record can never name a path outside the output folder.
//! - `<YYYYMMDD>` and `<YYYYMMDDTHHMMSS.ffffffZ>`: the capture time (`edgecam.captured_at`),
//!   UTC, to the microsecond; without that header (or one that is not RFC 3339 UTC) the Kafka
//!   record timestamp; without that the Unix epoch.
//! - `<seq>`: `edgecam.seq`, zero-padded to 20 digits (any `u64`); without a numeric one, the
//!   record's offset.
//! - `<id>`: the last 12 hex digits of `edgecam.frame_id` (a UUIDv7's random part; its first
//!   digits are the millisecond time, already in the name); a frame id that is not a UUID
//!   gives 12 hex digits of its FNV-1a hash; without one, `p<partition>o<offset>`.
//! - `<ext>`: `jpg` for JPEG, `png` for PNG and for lossless zstd frames (decoded).
//!
//! So names sort (as text, also across the date folders) in capture order, then seq; an
//! agent restart (seq starting again at 0) cannot overwrite an earlier frame, because the
//! capture time moved on and the frame id differs. The name is a function of the record
//! alone: a frame the agent sent twice (a resend after an outage, a spool replay after a
//! crash: same `edgecam.frame_id`, same headers) or a record delivered again after this
//! consumer crashed gets the same name, and a file that exists is never written again; it is
//! counted in [`ConsumeReport::duplicates`].
//!
//! # Durability
//!
//! Each file is written to `.<name>.tmp` in its folder, `fsync`ed, renamed, and its folder
//! `fsync`ed (and each folder created for it `fsync`ed into its parent) before the record's
//! offset is stored for commit: a crash re-delivers, it never skips, and the re-delivered
//! record finds its file and is counted as a duplicate.

mod convert;
mod durable;
pub mod name;
pub mod progress;
pub mod pubsub;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message, OwnedMessage};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use convert::Converter;
pub use convert::{Conversion, JPEG_QUALITY};
use durable::{Dirs, Written};
use name::RecordMeta;

use crate::frame::PixelFormat;
use crate::inspect;
use crate::limits::Limits;
use crate::record::{header, CONTENT_TYPE_RAW_ZSTD};

/// Consumer properties edgecam sets from its own options, and which option to use instead
/// of `-X`.
const OWN_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "use --bootstrap-servers"),
    ("metadata.broker.list", "use --bootstrap-servers"),
    ("group.id", "use --group-id"),
    ("auto.offset.reset", "use --auto-offset-reset"),
    (
        "enable.auto.offset.store",
        "is fixed to false: an offset is stored only after its file is on disk",
    ),
];

/// How often `consume` warns while no partition is assigned (the idle timeout only starts
/// at the first assignment, so an unreachable cluster would otherwise wait in silence).
const JOIN_WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// Options of `edgecam consume`. [`ConsumeOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Topic to read.
    pub topic: String,
    /// Consumer group (`group.id`); offsets are committed for it.
    pub group_id: String,
    /// Where to write frames (created if missing).
    pub output_dir: PathBuf,
    /// `auto.offset.reset` when the group has no committed offset: `earliest` (the
    /// default: a first run saves what the topic still holds) or `latest`.
    pub auto_offset_reset: String,
    /// Stop after this many frames written (`None` = run until interrupted).
    pub max_frames: Option<u64>,
    /// Stop when no record arrived for this long, counted from the first partition
    /// assignment (joining the group can take seconds) or the last record (`None` = wait
    /// forever). Until the first assignment it waits, warning every 30 s.
    pub idle_timeout: Option<Duration>,
    /// Show a progress line (on a terminal).
    pub progress: bool,
    /// Set to `true` once the consumer group has assigned partitions to this consumer
    /// (a producer started after that cannot outrun it).
    pub assigned: Option<watch::Sender<bool>>,
    /// Bounds on each record's image (checked before anything is decoded or written);
    /// records over them are skipped and counted.
    pub limits: Limits,
    /// Extra librdkafka consumer properties `(name, value)`, set last (`-X name=value`,
    /// e.g. `security.protocol=SASL_SSL`); see [`ConsumeOptions::client_config`].
    pub properties: Vec<(String, String)>,
    /// Conversions on the way out (none by default: bytes as received).
    pub conversion: Conversion,
    /// Keep every path written in [`ConsumeReport::files`] (for tests and the demo; it
    /// grows by one path per frame, so `edgecam consume` leaves it off).
    pub list_files: bool,
}

impl ConsumeOptions {
    /// The defaults: `earliest`, no frame limit, no idle timeout, no progress line, default
    /// [`Limits`], no extra properties, no conversion, no file list.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        topic: impl Into<String>,
        group_id: impl Into<String>,
        output_dir: impl Into<PathBuf>,
    ) -> Self {
        ConsumeOptions {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            group_id: group_id.into(),
            output_dir: output_dir.into(),
            auto_offset_reset: "earliest".into(),
            max_frames: None,
            idle_timeout: None,
            progress: false,
            assigned: None,
            limits: Limits::default(),
            properties: Vec::new(),
            conversion: Conversion::default(),
            list_files: false,
        }
    }

    /// The librdkafka consumer configuration: bootstrap servers, group, `auto.offset.reset`,
    /// auto-commit of offsets edgecam stores itself (`enable.auto.offset.store = false`),
    /// 10 MB fetches; then [`ConsumeOptions::properties`] on top. librdkafka checks each
    /// property here, before anything connects.
    ///
    /// Errors: [`ConsumeError::Property`] naming the property librdkafka refuses (unknown
    /// name, bad value) or one edgecam sets itself; a secret's value (`sasl.password`, …)
    /// is never in the message.
    pub fn client_config(&self) -> Result<ClientConfig, ConsumeError> {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("enable.auto.commit", "true")
            // Offsets are stored by us, after the file is on disk.
            .set("enable.auto.offset.store", "false")
            .set("fetch.message.max.bytes", "10485760");
        let refused = |config: &ClientConfig, name: &str, value: &str| {
            config.create_native_config().map(drop).map_err(|e| {
                let mut message = e.to_string();
                if crate::config::secret::is_secret_property(name) && !value.is_empty() {
                    message = message.replace(value, "<redacted>");
                }
                ConsumeError::Property {
                    name: name.to_string(),
                    message: format!("librdkafka refuses it: {message}"),
                }
            })
        };
        refused(&base, "auto.offset.reset", &self.auto_offset_reset)?;
        for (name, value) in &self.properties {
            if let Some((_, why)) = OWN_PROPERTIES
                .iter()
                .find(|(own, _)| own.eq_ignore_ascii_case(name.trim()))
            {
                return Err(ConsumeError::Property {
                    name: name.clone(),
                    message: (*why).to_string(),
                });
            }
            let mut one = base.clone();
            one.set(name, value);
            refused(&one, name, value)?;
        }
        let mut all = base;
        for (name, value) in &self.properties {
            all.set(name, value);
        }
        Ok(all)
    }
}

/// Tells the consume loop (and [`ConsumeOptions::assigned`]) when partitions are assigned.
struct Context {
    assigned: watch::Sender<bool>,
    also: Option<watch::Sender<bool>>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            let _ = self.assigned.send(true);
            if let Some(tx) = &self.also {
                let _ = tx.send(true);
            }
        }
    }
}

/// Why consuming failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// A librdkafka property (`-X`, `[kafka.properties]`, or one of the options) that
    /// librdkafka or edgecam refuses; nothing was opened. A usage error (exit 64).
    #[error("property {name:?}: {message}")]
    Property {
        /// The property, e.g. `fetch.wait.max.ms`.
        name: String,
        /// Why, e.g. librdkafka's "Invalid value …".
        message: String,
    },
    /// Kafka client error (subscription, offsets).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Pub/Sub: the subscription does not exist, or Pub/Sub refuses the request.
    #[error("pubsub: {0}")]
    Pubsub(String),
    /// Writing a frame file (or creating its folder) failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What [`consume`] did.
#[derive(Debug, Default, Clone)]
pub struct ConsumeReport {
    /// Files written.
    pub frames: u64,
    /// Bytes of record values read (every record, skipped and duplicates included).
    pub bytes: u64,
    /// Bytes of the files written.
    pub bytes_written: u64,
    /// Records whose file already existed (the same frame again: a resend, a replay, a
    /// re-delivery); not written again.
    pub duplicates: u64,
    /// Records skipped: not an image, a broken one, one over the limits, or a lossless
    /// frame that did not decode.
    pub skipped: u64,
    /// Files written, in order (only with [`ConsumeOptions::list_files`]).
    pub files: Vec<PathBuf>,
    /// From the first partition assignment to the last record (`None` if never assigned;
    /// zero when no record came).
    pub elapsed: Option<Duration>,
}

impl ConsumeReport {
    /// Counts what became of one record; a skipped one is logged (rate-limited) with
    /// `position` (where it was read).
    fn tally(
        &mut self,
        outcome: Outcome,
        list_files: bool,
        warnings: &mut crate::throttle::Throttle,
        position: impl FnOnce() -> String,
    ) {
        match outcome {
            Outcome::Written { path, bytes } => {
                self.frames += 1;
                self.bytes_written += bytes;
                if list_files {
                    self.files.push(path);
                }
            }
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Skipped(why) => {
                self.skipped += 1;
                if let Some(suppressed) = warnings.allow(Instant::now()) {
                    tracing::warn!(at = %position(), suppressed, "record skipped: {why}");
                }
            }
        }
    }

    fn progress(&self) -> progress::Progress {
        progress::Progress {
            frames: self.frames,
            bytes: self.bytes_written,
            duplicates: self.duplicates,
            skipped: self.skipped,
        }
    }

    /// The summary line: `consumed 10 frames (123.4 kB written, 123456 bytes read, 2.0
    /// frames/s), 1 duplicates, 0 skipped`.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.unwrap_or_default().as_secs_f64();
        let rate = if secs > 0.0 {
            self.frames as f64 / secs
        } else {
            0.0
        };
        format!(
            "consumed {} frames ({} written, {} bytes read, {rate:.1} frames/s), {} duplicates, {} skipped",
            self.frames,
            progress::human_bytes(self.bytes_written),
            self.bytes,
            self.duplicates,
            self.skipped
        )
    }
}

/// A frame as `consume` and `view` read it back: a Kafka record, or a Pub/Sub message
/// ([`pubsub`]).
pub(crate) trait Incoming {
    /// The image (the record's value, the message's data).
    fn value(&self) -> Option<&[u8]>;
    /// A header (Kafka) or attribute (Pub/Sub) as UTF-8 text.
    fn header(&self, name: &str) -> Option<&str>;
    /// What its file name is made of.
    fn meta(&self) -> RecordMeta;
}

impl Incoming for OwnedMessage {
    fn value(&self) -> Option<&[u8]> {
        self.payload()
    }

    fn header(&self, name: &str) -> Option<&str> {
        let h = self.headers()?;
        h.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn meta(&self) -> RecordMeta {
        let text = |name| self.header(name).map(str::to_string);
        RecordMeta {
            device: text(header::DEVICE),
            key: self.key().map(<[u8]>::to_vec),
            captured_at: text(header::CAPTURED_AT),
            timestamp_ms: self.timestamp().to_millis(),
            seq: text(header::SEQ),
            frame_id: text(header::FRAME_ID),
            partition: self.partition(),
            offset: self.offset(),
        }
    }
}

/// What a record holds, checked without decoding pixels.
enum Kind {
    /// A JPEG of `len` bytes (through EOI), `width` pixels wide, `components` channels.
    Jpeg {
        len: usize,
        width: u32,
        components: u8,
    },
    /// A PNG of `len` bytes (through IEND).
    Png {
        len: usize,
        width: u32,
        components: u8,
    },
    /// Raw pixels compressed with zstd.
    Zstd {
        width: u32,
        height: u32,
        format: PixelFormat,
    },
}

impl Kind {
    fn ext(&self) -> &'static str {
        match self {
            Kind::Jpeg { .. } => "jpg",
            Kind::Png { .. } | Kind::Zstd { .. } => "png",
        }
    }
}

/// What the record is, or why it is skipped.
///
/// Every image is checked first: a JPEG or PNG with [`inspect::image`] (structure,
/// dimensions within `limits`; written without bytes after its EOI or IEND), a zstd frame's
/// stated dimensions against `limits` before its pixels are allocated.
fn classify(msg: &impl Incoming, limits: &Limits) -> Result<Kind, String> {
    let value = msg.value().ok_or("no value")?;
    let checked =
        |data: &[u8]| inspect::image(data, limits).map_err(|e| format!("{}: {e}", e.reason()));
    let is_png = |v: &[u8]| v.starts_with(&inspect::PNG_SIGNATURE);
    match msg.header(header::CONTENT_TYPE) {
        Some(ct) if ct == CONTENT_TYPE_RAW_ZSTD => {
            let dim = |name| {
                msg.header(name)
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| format!("zstd frame without a numeric {name}"))
            };
            let (width, height) = (dim(header::WIDTH)?, dim(header::HEIGHT)?);
            limits
                .check_dimensions(width, height)
                .map_err(|e| format!("frame_too_large: {e}"))?;
            let format = msg
                .header(header::PIXEL_FORMAT)
                .and_then(PixelFormat::parse)
                .ok_or("zstd frame without a pixel format")?;
            Ok(Kind::Zstd {
                width,
                height,
                format,
            })
        }
        Some("image/png") | None if is_png(value) => {
            let i = checked(value)?;
            Ok(Kind::Png {
                len: i.len,
                width: i.width,
                components: i.components,
            })
        }
        Some("image/jpeg") | None if value.starts_with(&[0xFF, 0xD8]) => {
            let i = checked(value)?;
            Ok(Kind::Jpeg {
                len: i.len,
                width: i.width,
                components: i.components,
            })
        }
        Some(ct @ ("image/png" | "image/jpeg")) => {
            Err(format!("content type {ct} but the value is not one"))
        }
        other => Err(format!("not an edgecam frame (content type {other:?})")),
    }
}

/// The image of a record as a browser can show it, for `edgecam view`: a JPEG or PNG as
/// published (cut at its EOI or IEND), a lossless zstd frame decoded and written as PNG.
/// Returns `(content type, bytes)`.
///
/// Errors: why the record is not a frame a browser can be given (the reason text of
/// [`classify`], or the decode failure).
pub(crate) fn browser_image(
    msg: &OwnedMessage,
    limits: &Limits,
    converter: &mut Converter,
) -> Result<(&'static str, Vec<u8>), String> {
    let value = msg.payload().unwrap_or_default();
    match classify(msg, limits)? {
        Kind::Jpeg { len, .. } => Ok(("image/jpeg", value[..len].to_vec())),
        Kind::Png { len, .. } => Ok(("image/png", value[..len].to_vec())),
        Kind::Zstd {
            width,
            height,
            format,
        } => {
            let raw = crate::encode::codec::decode_zstd(value, width, height, format)
                .ok_or("zstd frame does not decompress to its stated size")?;
            let png = converter
                .raw_to_png(raw, &Conversion::default())
                .map_err(|e| e.to_string())?;
            Ok(("image/png", png))
        }
    }
}

/// The edgecam headers and Kafka position of `msg` (see [`name::RecordMeta`]).
pub(crate) fn record_meta(msg: &OwnedMessage) -> RecordMeta {
    msg.meta()
}

/// What happened to one record.
enum Outcome {
    Written { path: PathBuf, bytes: u64 },
    Duplicate,
    Skipped(String),
}

/// The blocking half of consuming: decoding, converting, writing and `fsync`ing, run on
/// tokio's blocking pool one record at a time.
struct Writer {
    output_dir: PathBuf,
    limits: Limits,
    conversion: Conversion,
    converter: Converter,
    dirs: Dirs,
}

impl Writer {
    /// The writer for `opts`, with the output folder made (and `fsync`ed into its parent).
    fn new(opts: &ConsumeOptions) -> Result<Writer, ConsumeError> {
        let mut w = Writer {
            output_dir: opts.output_dir.clone(),
            limits: opts.limits,
            conversion: opts.conversion,
            converter: Converter::new(opts.limits),
            dirs: Dirs::default(),
        };
        w.dirs
            .ensure(&opts.output_dir)
            .map_err(|source| ConsumeError::Write {
                path: opts.output_dir.clone(),
                source,
            })?;
        Ok(w)
    }

    /// [`Writer::write`] on tokio's blocking pool; the writer goes there and back.
    async fn write_off_runtime<M: Incoming + Send + 'static>(
        slot: &mut Option<Writer>,
        msg: M,
    ) -> Result<Outcome, ConsumeError> {
        let mut w = slot.take().expect("the writer is always returned");
        let (w, outcome) = match tokio::task::spawn_blocking(move || {
            let outcome = w.write(&msg);
            (w, outcome)
        })
        .await
        {
            Ok(r) => r,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        *slot = Some(w);
        outcome
    }

    fn write(&mut self, msg: &impl Incoming) -> Result<Outcome, ConsumeError> {
        let kind = match classify(msg, &self.limits) {
            Ok(k) => k,
            Err(why) => return Ok(Outcome::Skipped(why)),
        };
        let rel = name::relative_path(&msg.meta(), kind.ext());
        let path = self.output_dir.join(&rel);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Ok(Outcome::Duplicate);
        }
        let value = msg.value().unwrap_or_default();
        let c = self.conversion;
        let data: Vec<u8> = match kind {
            Kind::Jpeg {
                len,
                width,
                components,
            } if c.leaves_alone(width, components) => value[..len].to_vec(),
            Kind::Png {
                len,
                width,
                components,
            } if c.leaves_alone(width, components) => value[..len].to_vec(),
            Kind::Jpeg { len, .. } => match self.converter.jpeg_to_jpeg(&value[..len], &c) {
                Ok(d) => d,
                Err(e) => return Ok(Outcome::Skipped(format!("bad_frame: {e}"))),
            },
            Kind::Png { len, .. } => match self.converter.png_to_png(&value[..len], &c) {
                Ok(d) => d,
                Err(e) => return Ok(Outcome::Skipped(format!("bad_frame: {e}"))),
            },
            Kind::Zstd {
                width,
                height,
                format,
            } => {
                let Some(raw) = crate::encode::codec::decode_zstd(value, width, height, format)
                else {
                    return Ok(Outcome::Skipped(
                        "zstd frame does not decompress to its stated size".into(),
                    ));
                };
                match self.converter.raw_to_png(raw, &c) {
                    Ok(d) => d,
                    Err(e) => return Ok(Outcome::Skipped(e.to_string())),
                }
            }
        };
        let dir = path
            .parent()
            .expect("relative_path has a folder")
            .to_path_buf();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("relative_path makes ASCII names")
            .to_string();
        match self.dirs.write_new(&dir, &file, &data) {
            Ok(Written::New) => Ok(Outcome::Written {
                path,
                bytes: data.len() as u64,
            }),
            Ok(Written::Exists) => Ok(Outcome::Duplicate),
            Err(source) => Err(ConsumeError::Write { path, source }),
        }
    }
}

/// A spinner line on stderr showing `waiting` until the first frame, or a hidden one.
fn progress_bar(show: bool, waiting: &'static str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b.set_message(waiting);
    b.enable_steady_tick(Duration::from_millis(250));
    b
}

/// Consumes `opts.topic` until `max_frames`, the idle timeout, or `shutdown`.
///
/// Errors: [`ConsumeError::Property`] before anything is opened; [`ConsumeError`] on client
/// or file-system failures. Records that are not edgecam frames are skipped and counted.
pub async fn consume(
    opts: &ConsumeOptions,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, ConsumeError> {
    let config = opts.client_config()?;
    let (assigned_tx, mut assigned_rx) = watch::channel(false);
    let consumer: StreamConsumer<Context> = config.create_with_context(Context {
        assigned: assigned_tx,
        also: opts.assigned.clone(),
    })?;
    let mut writer = Some(Writer::new(opts)?);
    consumer.subscribe(&[&opts.topic])?;
    let bar = progress_bar(opts.progress, "waiting for a partition assignment");
    let mut report = ConsumeReport::default();
    let mut warnings = crate::throttle::Throttle::frames();
    // Set at the first assignment: the rate and the idle timer start there.
    let mut assigned_at: Option<Instant> = None;
    let started = Instant::now();
    let mut last_activity = started;
    let mut next_join_warning = started + JOIN_WARNING_INTERVAL;
    loop {
        if opts.max_frames.is_some_and(|m| report.frames >= m) {
            break;
        }
        let idle_deadline = match (opts.idle_timeout, assigned_at) {
            (Some(t), Some(_)) => Some(last_activity + t),
            _ => None,
        };
        let idle = async move {
            match idle_deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = idle => break,
            _ = tokio::time::sleep_until(next_join_warning.into()), if assigned_at.is_none() => {
                // The idle timer has not started: say why nothing happens.
                tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    topic = %opts.topic,
                    "no partitions assigned yet: is the cluster reachable with these \
                     properties (TLS, SASL), and does the topic exist?"
                );
                next_join_warning += JOIN_WARNING_INTERVAL;
                continue;
            }
            changed = assigned_rx.wait_for(|a| *a), if assigned_at.is_none() => {
                if changed.is_ok() {
                    tracing::info!(
                        after_ms = started.elapsed().as_millis() as u64,
                        "partitions assigned"
                    );
                    assigned_at = Some(Instant::now());
                    last_activity = Instant::now();
                }
                continue;
            }
            m = consumer.recv() => match m {
                Ok(m) => m.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
            }
        };
        let now = Instant::now();
        assigned_at.get_or_insert(now);
        report.bytes += msg.payload().map_or(0, <[u8]>::len) as u64;
        let (partition, offset) = (msg.partition(), msg.offset());
        let outcome = Writer::write_off_runtime(&mut writer, msg).await?;
        report.tally(outcome, opts.list_files, &mut warnings, || {
            format!("partition {partition} offset {offset}")
        });
        // Only now, with the file durable (or the record skipped on purpose).
        consumer.store_offset(&opts.topic, partition, offset)?;
        last_activity = Instant::now();
        if let Some(t) = assigned_at {
            bar.set_message(progress::line(&report.progress(), t.elapsed()));
        }
    }
    // The rate is over reading, not over the idle wait that ended it.
    report.elapsed = assigned_at.map(|t| last_activity.saturating_duration_since(t));
    bar.finish_and_clear();
    // Commit what was stored; harmless when nothing was.
    if report.frames + report.skipped + report.duplicates > 0 {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            // Auto-commit already committed everything stored.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
            Ok(()) => {}
        }
    }
    Ok(report)
}
