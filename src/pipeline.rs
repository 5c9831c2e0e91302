//! Wiring one agent: source thread → bounded queue → encoder thread → Kafka sink task.
//!
//! Shutdown has one path: cancelling the root [`CancellationToken`] (SIGINT/SIGTERM, or the
//! source ending) stops the *source* only. The queue is closed, the encoder drains what was
//! accepted, its channel closes, and the sink waits for delivery reports within the grace
//! period. Every stage ends because its input ended.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SinkConfig, SpoolMode};
pub use crate::control::Live;
use crate::encode::Encoder;
use crate::frame::Frame;
use crate::metrics::{DropReason, Metrics};
use crate::queue::{FrameQueue, Push};
use crate::record::FrameRecord;
use crate::sink::mqtt::MqttControlPlane;
use crate::sink::{AckTx, Destination, Outgoing, SinkReport};
use crate::source::{self, RateLimit, Source, SourceError};
use crate::spool::{DirStorage, SeqFile, Spool, SpoolOptions};
use crate::throttle::Throttle;

/// Why an agent could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The source could not be opened (and is not a camera worth waiting for).
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The sink could not be opened: the Kafka producer could not be created or the topic
    /// not ensured, or the MQTT client not set up.
    #[error(transparent)]
    Sink(#[from] crate::sink::OpenError),
    /// libjpeg-turbo could not be initialised.
    #[error("encoder: {0}")]
    Encoder(#[from] crate::encode::CodecError),
    /// The encoder thread panicked (a bug); the process must exit non-zero.
    #[error("the encoder thread panicked")]
    EncoderPanicked,
    /// The spool is on but no directory could be chosen: none of `STATE_DIRECTORY`,
    /// `spool.path`, `XDG_STATE_HOME`, `HOME` is set.
    #[error("no spool directory: set spool.path (or STATE_DIRECTORY, XDG_STATE_HOME or HOME), or spool.mode = \"off\"")]
    NoSpoolDirectory,
    /// The MQTT control plane's `[mqtt.tls]` could not be set up: a file changed since the
    /// configuration was loaded.
    #[error("mqtt: {0}")]
    Mqtt(#[from] crate::config::ConfigError),
    /// `http.listen` could not be bound.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The forwarder thread panicked (a bug).
    #[error("the forwarder thread panicked")]
    ForwarderPanicked,
    /// The spool directory cannot be used (permissions, another agent holds it).
    #[error("spool {dir}: {error}")]
    Spool {
        /// The directory.
        dir: std::path::PathBuf,
        /// What failed.
        #[source]
        error: std::io::Error,
    },
}

/// The outcome of [`run`].
#[derive(Debug, Clone)]
pub struct RunReport {
    /// What the sink delivered and left.
    pub sink: SinkReport,
    /// Wall-clock duration of the run.
    pub elapsed: Duration,
}

/// Capacity of the channel between the encoder and the sink: encoded frames waiting for the
/// producer. Small, so backpressure reaches the frame queue (and its overflow policy) fast.
const ENCODED_CHANNEL: usize = 4;

/// Opens the source, retrying a missing camera with exponential backoff (1 s … 30 s) until it
/// appears or `shutdown` is cancelled. Other open errors are returned at once.
fn open_source(
    cfg: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<Box<dyn Source>>, SourceError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match source::open(&cfg.source, &cfg.limits.limits()) {
            Ok(s) => return Ok(Some(s)),
            Err(e @ SourceError::NoSuchDevice(_))
                if cfg.source.kind == crate::config::SourceKind::Camera =>
            {
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "camera not available; retrying");
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if shutdown.is_cancelled() {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How the source loop numbers frames.
struct Numbering {
    /// Stop after this many frames (0: never).
    max_frames: u64,
    /// Where `edgecam.seq` continues from and is kept (with the spool).
    seq_file: Option<SeqFile>,
}

/// The source loop, on its own thread: numbers frames and pushes them into `queue` until the
/// source ends, `max_frames` are accepted, or `shutdown` is cancelled. Closes `queue`.
fn source_loop(
    mut src: Box<dyn Source>,
    queue: &FrameQueue<Frame>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    device: &str,
    live: &Live,
    numbering: Numbering,
) {
    let Numbering {
        max_frames,
        mut seq_file,
    } = numbering;
    let mut reload = live.config.subscribe();
    let _span = tracing::info_span!("source", device).entered();
    let mut seq = seq_file.as_ref().map_or(0, SeqFile::peek);
    let mut numbered = 0u64;
    let mut warnings = Throttle::frames();
    // A source that runs at its own rate (a child process) is thinned to source.fps here.
    let thin = src.paced_by_dropping();
    let mut rate = RateLimit::new(if thin {
        live.config.borrow().source.fps
    } else {
        0.0
    });
    while !shutdown.is_cancelled() && (max_frames == 0 || numbered < max_frames) {
        if reload.has_changed().unwrap_or(false) {
            let fps = reload.borrow_and_update().source.fps;
            if thin {
                rate.set_fps(fps);
                tracing::info!(fps, "source.fps changed (surplus frames are discarded)");
            } else if src.set_fps(fps) {
                tracing::info!(fps, "source.fps changed");
            } else {
                tracing::warn!(
                    fps,
                    "this source cannot change source.fps live: restart to apply"
                );
            }
        }
        let next = src.next_frame();
        let skipped = src.take_skipped();
        metrics.skipped_bytes.fetch_add(skipped.bytes, Relaxed);
        metrics.skipped_files.fetch_add(skipped.files, Relaxed);
        match next {
            Ok(Some(c)) => {
                if shutdown.is_cancelled() {
                    break;
                }
                // Capture time: the source hands a frame out as soon as it is read.
                if !rate.admit(Instant::now()) {
                    metrics.drop_frame(DropReason::FpsLimit);
                    continue;
                }
                metrics.captured.fetch_add(1, Relaxed);
                metrics.last_capture_unix_ms.store(
                    c.captured_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    Relaxed,
                );
                // Paused: keep capturing (the camera stays warm, the watchdog fed) but
                // publish nothing, unless a snapshot was asked for.
                if live.paused.load(Relaxed) && !live.snapshot.swap(false, Relaxed) {
                    continue;
                }
                if let Some(f) = seq_file.as_mut() {
                    seq = f.take();
                }
                let frame = Frame {
                    seq,
                    frame_id: uuid::Uuid::now_v7().to_string(),
                    captured_at: c.captured_at,
                    image: c.image,
                };
                seq += 1;
                numbered += 1;
                match queue.push(frame) {
                    Push::Accepted => {
                        metrics.accepted.fetch_add(1, Relaxed);
                    }
                    Push::DroppedOldest(old) => {
                        metrics.accepted.fetch_add(1, Relaxed);
                        metrics.drop_frame(DropReason::QueueFullOldest);
                        tracing::debug!(seq = old.seq, "queue full: dropped oldest frame");
                    }
                    Push::DroppedNewest(f) => {
                        metrics.drop_frame(DropReason::QueueFullNewest);
                        tracing::debug!(seq = f.seq, "queue full: dropped new frame");
                    }
                    Push::Closed(_) => break,
                }
            }
            Ok(None) => {
                tracing::info!("source ended");
                break;
            }
            Err(e) if e.is_frame_error() => {
                metrics.captured.fetch_add(1, Relaxed);
                let reason = match e {
                    SourceError::TooLarge(_) => DropReason::FrameTooLarge,
                    _ => DropReason::BadFrame,
                };
                metrics.drop_frame(reason);
                metrics.set_last_error(format!("frame refused: {e}"));
                if let Some(suppressed) = warnings.allow(Instant::now()) {
                    tracing::warn!(error = %e, reason = reason.as_str(), suppressed, "frame refused");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, source = src.describe(), "source failed");
                metrics.set_last_error(format!("source failed: {e}"));
                break;
            }
        }
    }
    queue.close();
    if let Some(mut f) = seq_file {
        if let Err(e) = f.close() {
            tracing::warn!(error = %e, "cannot write the spool seq file; edgecam.seq jumps forward at the next start");
        }
    }
}

/// Opens the spool and the seq file in `spool.dir` (nothing for `spool.mode = "off"`),
/// locking the directory and recovering what a crash left.
///
/// Errors: [`RunError::Spool`] when the directory cannot be created, locked or read.
fn open_spool(
    cfg: &Config,
    metrics: &Metrics,
) -> Result<(Option<Spool>, Option<SeqFile>), RunError> {
    if cfg.spool.mode == SpoolMode::Off {
        return Ok((None, None));
    }
    let dir = cfg.spool.dir.clone().ok_or(RunError::NoSpoolDirectory)?;
    let err = |error| RunError::Spool {
        dir: dir.clone(),
        error,
    };
    let mut storage = DirStorage::open(&dir).map_err(err)?;
    storage.lock().map_err(err)?;
    let opts = SpoolOptions::new(
        cfg.spool.max_bytes.get(),
        cfg.spool.max_age_secs.map(|s| Duration::from_secs(s.get())),
    );
    let started = Instant::now();
    let (spool, rec) = Spool::open(storage, opts).map_err(err)?;
    if rec.corrupt > 0 || rec.torn_bytes > 0 {
        tracing::warn!(
            corrupt = rec.corrupt,
            torn_bytes = rec.torn_bytes,
            "spool: damaged records skipped at recovery"
        );
        metrics.drop_frames(DropReason::SpoolCorrupt, rec.corrupt);
    }
    tracing::info!(
        dir = %dir.display(),
        mode = ?cfg.spool.mode,
        records = rec.records,
        bytes = rec.bytes,
        recovery_ms = started.elapsed().as_millis() as u64,
        "spool open"
    );
    let seq = SeqFile::open(Box::new(DirStorage::open(&dir).map_err(err)?)).map_err(err)?;
    Ok((Some(spool), Some(seq)))
}

/// `true` when dropped frames are reported to the sink's error topic.
fn has_error_topic(cfg: &Config) -> bool {
    cfg.sink.error_topic().is_some()
}

/// A small JSON report for the error topic.
fn error_record(device: &str, frame: &Frame, reason: &str, detail: &str) -> FrameRecord {
    let body = serde_json::json!({
        "device": device,
        "seq": frame.seq,
        "frame_id": frame.frame_id,
        "captured_at": humantime::format_rfc3339_micros(frame.captured_at).to_string(),
        "width": frame.image.width(),
        "height": frame.image.height(),
        "reason": reason,
        "detail": detail,
    });
    FrameRecord {
        key: device.to_string(),
        headers: vec![
            (crate::record::header::DEVICE.into(), device.to_string()),
            (crate::record::header::SEQ.into(), frame.seq.to_string()),
            (
                crate::record::header::FRAME_ID.into(),
                frame.frame_id.clone(),
            ),
            (
                crate::record::header::CONTENT_TYPE.into(),
                "application/json".to_string(),
            ),
            (crate::record::header::REASON.into(), reason.to_string()),
        ],
        value: bytes::Bytes::from(body.to_string()),
    }
}

/// The encoder loop, on its own thread: pops frames, fits them under the budget, sends
/// records to the sink. Ends when the queue is closed and drained.
fn encode_loop(
    cfg: &Config,
    mut encoder: Encoder,
    queue: &FrameQueue<Frame>,
    tx: mpsc::Sender<Outgoing>,
    metrics: &Metrics,
    mut reload: watch::Receiver<Config>,
    preview: &crate::http::PreviewTx,
) {
    reload.mark_unchanged();
    let device = cfg.device.id.as_str();
    let _span = tracing::info_span!("encode", device).entered();
    let mut max = cfg.encode.max_message_bytes.get() as usize;
    let mut error_topic = has_error_topic(cfg);
    let mut warnings = Throttle::frames();
    let mut gate = if cfg.gate.enabled {
        match crate::gate::FrameGate::new(&cfg.gate, cfg.limits.limits()) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::error!(error = %e, "[gate] cannot start; publishing every frame");
                None
            }
        }
    } else {
        None
    };
    // Frames the gate let through, in capture order.
    let mut pending: std::collections::VecDeque<Frame> = std::collections::VecDeque::new();
    loop {
        let frame = match pending.pop_front() {
            Some(f) => f,
            None => {
                let Some(f) = queue.pop() else { break };
                match gate.as_mut() {
                    None => f,
                    Some(g) => {
                        pending.extend(g.pass(f, metrics));
                        continue;
                    }
                }
            }
        };
        if reload.has_changed().unwrap_or(false) {
            let new = reload.borrow_and_update().clone();
            encoder.reconfigure(device, new.encode.clone(), new.transform.clone());
            max = new.encode.max_message_bytes.get() as usize;
            error_topic = has_error_topic(&new);
            tracing::info!(budget_bytes = max, "encode and transform settings changed");
        }
        let _span = tracing::debug_span!("frame", seq = frame.seq).entered();
        let started = Instant::now();
        let result = encoder.encode(&frame.image);
        metrics
            .histograms
            .encode_seconds
            .observe(started.elapsed().as_secs_f64());
        let out = match result {
            Ok(enc) => {
                metrics.encodes.fetch_add(enc.encodes as u64, Relaxed);
                let record = FrameRecord::new(device, &frame, &enc);
                let size = record.wire_size();
                if size > max {
                    // The overhead bound makes this unreachable; never publish over budget.
                    tracing::error!(size, max, "record over budget after encoding; dropped");
                    metrics.drop_frame(DropReason::BudgetUnreachable);
                    continue;
                }
                metrics.encoded.fetch_add(1, Relaxed);
                metrics.set_last_frame(crate::metrics::LastFrame {
                    width: enc.width,
                    height: enc.height,
                    codec: enc.codec.as_str(),
                    quality: enc.quality.to_string(),
                });
                if enc.passthrough {
                    metrics.passthrough.fetch_add(1, Relaxed);
                }
                if preview.receiver_count() > 0 {
                    preview.send_replace(Some(Arc::new(crate::http::Preview {
                        seq: frame.seq,
                        content_type: enc.content_type().to_string(),
                        image: record.value.clone(),
                    })));
                }
                Outgoing {
                    destination: Destination::Frames,
                    record,
                    captured_at: frame.captured_at,
                    ticket: 0,
                }
            }
            Err(e) => {
                metrics.encodes.fetch_add(e.attempts() as u64, Relaxed);
                metrics.drop_frame(DropReason::from_encode_reason(e.reason()));
                if let Some(suppressed) = warnings.allow(Instant::now()) {
                    tracing::warn!(error = %e, seq = frame.seq, suppressed, "frame dropped");
                }
                metrics.set_last_error(format!("frame {} dropped: {e}", frame.seq));
                if !error_topic {
                    continue;
                }
                Outgoing {
                    destination: Destination::Errors,
                    record: error_record(device, &frame, e.reason(), &e.to_string()),
                    captured_at: frame.captured_at,
                    ticket: 0,
                }
            }
        };
        if tx.blocking_send(out).is_err() {
            // The sink is gone (grace period over): nothing more can be delivered.
            break;
        }
    }
    if !pending.is_empty() {
        // The sink went away with frames the gate had let through still here.
        metrics.drop_frames(DropReason::UndeliveredAtShutdown, pending.len() as u64);
    }
    if let Some(g) = gate.as_mut() {
        g.finish(metrics);
        let c = g.counts();
        tracing::info!(
            motion = c.motion,
            roll = c.roll,
            heartbeat = c.heartbeat,
            unchanged = c.suppressed,
            "gate: frames passed and suppressed"
        );
    }
}

/// Runs one agent until its source ends or `shutdown` is cancelled, then drains and flushes
/// within `pipeline.shutdown_grace_ms`.
///
/// Errors: [`RunError`] only for start-up failures (source cannot open, producer cannot be
/// created, topic cannot be created). Failures on single frames are counted in `metrics`.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<RunReport, RunError> {
    let live = Arc::new(Live::new(cfg.clone()));
    run_live(cfg, shutdown, metrics, live).await
}

/// [`run`] with live controls (see [`Live`]).
///
/// Errors: as [`run`].
pub async fn run_live(
    cfg: Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
) -> Result<RunReport, RunError> {
    let reload = live.config.subscribe();
    let started = Instant::now();
    let max_bytes = cfg.encode.max_message_bytes.get();
    let (preview, preview_rx) = watch::channel(None);
    // First, so /healthz answers (and /readyz says "starting") while the rest opens. It
    // stops when this function returns, whichever way.
    let http_stop = shutdown.child_token();
    let _http_guard = http_stop.clone().drop_guard();
    let http = match cfg.http.listen {
        Some(addr) => Some(
            crate::http::serve_agent(
                addr,
                &cfg.device.id,
                cfg.sink.kind().as_str(),
                Duration::from_millis(cfg.http.ready_within_ms.get()),
                metrics.clone(),
                preview_rx,
                http_stop.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let sink = crate::sink::open(&cfg.sink, max_bytes, metrics.clone(), live.clone()).await?;
    let (spool, seq_file) = open_spool(&cfg, &metrics)?;
    // The MQTT control plane, as a task of its own beside a sink that does not carry it. It
    // ends when `control_stop` is cancelled, after the sink.
    let control_stop = CancellationToken::new();
    let _control_guard = control_stop.clone().drop_guard();
    let control = match &cfg.sink {
        SinkConfig::Kafka(_) | SinkConfig::Pubsub(_) => match &cfg.control {
            Some(m) => MqttControlPlane::new(m, live.clone(), metrics.clone())?,
            None => None,
        },
        // The MQTT sink's own connection carries it.
        SinkConfig::Mqtt(_) => None,
    };
    let control_task = control.map(|c| {
        let grace = Duration::from_millis(cfg.pipeline.shutdown_grace_ms.get());
        tokio::spawn(c.run(control_stop.clone(), grace))
    });
    let encoder = Encoder::with_limits(
        &cfg.device.id,
        cfg.encode.clone(),
        cfg.transform.clone(),
        cfg.limits.limits(),
    )?;

    let src = {
        let cfg = cfg.clone();
        let shutdown = shutdown.clone();
        tokio::task::spawn_blocking(move || open_source(&cfg, &shutdown))
            .await
            .expect("open_source does not panic")?
    };
    let Some(src) = src else {
        return Ok(RunReport {
            sink: SinkReport::default(),
            elapsed: started.elapsed(),
        });
    };
    tracing::info!(
        device = %cfg.device.id,
        source = src.describe(),
        topic = sink.topic(),
        budget_bytes = max_bytes,
        "running"
    );

    let overflow = cfg.pipeline.overflow.for_source(&cfg.source);
    let queue = Arc::new(FrameQueue::new(cfg.pipeline.queue_frames.get(), overflow));
    let (tx, rx) = mpsc::channel(ENCODED_CHANNEL);
    let window = sink.window();
    let (sink_tx, sink_rx) = mpsc::channel(window + 1);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let forwarder_thread = {
        let opts = crate::forward::ForwardOptions::new(
            &cfg.spool,
            window,
            overflow == crate::config::OverflowPolicy::Block,
        );
        let fwd = crate::forward::Forwarder::new(opts, spool, metrics.clone());
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("edgecam-forward".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime");
                rt.block_on(crate::forward::run(fwd, rx, sink_tx, ack_rx, shutdown))
            })
            .expect("spawn forwarder thread")
    };
    let source_thread = {
        let (queue, metrics, shutdown) = (queue.clone(), metrics.clone(), shutdown.clone());
        let max_frames = cfg.source.max_frames;
        let device = cfg.device.id.clone();
        std::thread::Builder::new()
            .name("edgecam-source".into())
            .spawn({
                let live = live.clone();
                move || {
                    let numbering = Numbering {
                        max_frames,
                        seq_file,
                    };
                    source_loop(src, &queue, &metrics, &shutdown, &device, &live, numbering)
                }
            })
            .expect("spawn source thread")
    };
    let encoder_thread = {
        let (queue, metrics, cfg) = (queue.clone(), metrics.clone(), cfg.clone());
        std::thread::Builder::new()
            .name("edgecam-encode".into())
            .spawn(move || encode_loop(&cfg, encoder, &queue, tx, &metrics, reload, &preview))
            .expect("spawn encoder thread")
    };
    metrics.ready.store(true, Relaxed);
    let grace = Duration::from_millis(cfg.pipeline.shutdown_grace_ms.get());
    let mut report = sink
        .run(sink_rx, AckTx::new(ack_tx), shutdown.clone(), grace)
        .await;
    // The sink returns once the encoder closed its channel or the grace period ended.
    queue.close();
    let encoder_result = tokio::task::spawn_blocking(move || encoder_thread.join()).await;
    if !matches!(encoder_result, Ok(Ok(()))) {
        // Only reachable in builds that unwind (tests): release builds abort on panic.
        return Err(RunError::EncoderPanicked);
    }
    // The sink has stopped: the forwarder spools what it did not deliver.
    let lost = tokio::task::spawn_blocking(move || forwarder_thread.join())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(RunError::ForwarderPanicked)?;
    report.undelivered = lost;
    control_stop.cancel();
    if let Some(t) = control_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    // The source thread may be blocked in a read (a silent pipe); it ends at its next frame
    // and holds nothing that needs flushing, so it is not waited for.
    drop(source_thread);
    if let Some(h) = http {
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), h).await;
    }
    Ok(RunReport {
        sink: report,
        elapsed: started.elapsed(),
    })
}
