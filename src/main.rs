//! The `edgecam` command: parses arguments, loads config, maps errors to exit codes.
//! Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use edgecam::config::{self, Codec};

/// Exit code for a bad configuration or command line (`EX_USAGE` from sysexits.h).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "edgecam",
    version,
    about = "Camera frames in, budget-fitted frames into Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` (colour only on a terminal) or `json` (one object per line);
    /// overrides `log.format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log level or filter (`warn`, `info,librdkafka=debug`); overrides `log.level` and
    /// `RUST_LOG`.
    #[arg(long, global = true)]
    log_level: Option<String>,
}

/// Where `consume` and `view` read from: a topic on a cluster, given directly or by an
/// agent's or bridge's configuration file.
#[derive(clap::Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…] (default: from --config).
    #[arg(long, required_unless_present = "config")]
    bootstrap_servers: Option<String>,
    /// Topic to read (default: from --config).
    #[arg(long, required_unless_present = "config")]
    topic: Option<String>,
    /// An agent or bridge configuration whose [kafka] table (bootstrap servers, topic,
    /// properties with TLS/SASL and secret references) is used; the file is checked as
    /// check-config does.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A librdkafka consumer property, e.g. -X security.protocol=SASL_SSL (repeatable;
    /// set after --config's properties).
    #[arg(short = 'X', value_name = "NAME=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
}

/// Where `consume` reads from: [`KafkaArgs`], or a Pub/Sub subscription.
#[derive(clap::Args)]
struct ConsumeFrom {
    /// Kafka bootstrap servers, host:port[,host:port…] (default: from --config).
    #[arg(long, required_unless_present_any = ["config", "pubsub_subscription"])]
    bootstrap_servers: Option<String>,
    /// Topic to read (default: from --config).
    #[arg(long, required_unless_present_any = ["config", "pubsub_subscription"])]
    topic: Option<String>,
    /// An agent or bridge configuration whose [kafka] table (bootstrap servers, topic,
    /// properties with TLS/SASL and secret references) is used, or with
    /// --pubsub-subscription its [pubsub] table (endpoint, credentials); the file is checked
    /// as check-config does.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A librdkafka consumer property, e.g. -X security.protocol=SASL_SSL (repeatable;
    /// set after --config's properties).
    #[arg(short = 'X', value_name = "NAME=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
    /// Read a Google Cloud Pub/Sub subscription instead of Kafka:
    /// projects/<project>/subscriptions/<id>. PUBSUB_EMULATOR_HOST=host:port reads from the
    /// emulator; otherwise --config's [pubsub] gives endpoint and credentials (default:
    /// https://pubsub.googleapis.com with the GCE metadata server's token).
    #[arg(long, value_name = "SUBSCRIPTION", conflicts_with_all = ["bootstrap_servers", "topic", "property", "group_id"])]
    pubsub_subscription: Option<String>,
}

impl ConsumeFrom {
    /// Its Kafka arguments, for [`kafka_source`].
    fn kafka(self) -> KafkaArgs {
        KafkaArgs {
            bootstrap_servers: self.bootstrap_servers,
            topic: self.topic,
            config: self.config,
            property: self.property,
        }
    }
}

/// The logging flags, taken out of [`Cli`] before its command is consumed.
struct LogArgs {
    format: Option<LogFormatArg>,
    level: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum OffsetReset {
    Earliest,
    Latest,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    Jpeg,
    Png,
    Zstd,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent with a config file until the source ends or SIGINT/SIGTERM.
    Run {
        /// One TOML file per device, e.g. /etc/edgecam/front-door.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Drain MQTT topics into Kafka (at least once) until SIGINT/SIGTERM; exit 64 on a bad
    /// configuration.
    Bridge {
        /// The bridge's TOML file ([bridge], [mqtt], [kafka]), e.g. /etc/edgecam/bridge.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check an agent or bridge configuration (or a file with both) as `run`/`bridge` would
    /// at start-up; print it resolved, secrets redacted, or exit 64 naming the bad key.
    CheckConfig {
        /// The TOML file to check.
        #[arg(long)]
        config: PathBuf,
    },
    /// Write frames from a Kafka topic (or a Pub/Sub subscription) to files (at least once,
    /// each frame once): <output-dir>/<device>/<YYYYMMDD>/<captured_at>-<seq>-<id>.<ext>, in
    /// capture order.
    Consume {
        #[command(flatten)]
        from: ConsumeFrom,
        /// Consumer group; offsets are committed after each file is on disk (Kafka).
        #[arg(long, required_unless_present = "pubsub_subscription")]
        group_id: Option<String>,
        /// Folder for the frames.
        #[arg(long)]
        output_dir: PathBuf,
        /// Where a new consumer group starts.
        #[arg(long, value_enum, default_value = "earliest")]
        auto_offset_reset: OffsetReset,
        /// Stop after this many frames written.
        #[arg(long)]
        max_frames: Option<u64>,
        /// Stop after this many milliseconds without a record, counted from the first
        /// partition assignment.
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
        /// Write frames as one-channel (luma) images: JPEG re-encoded at quality 90, lossless
        /// frames as PNG.
        #[arg(long)]
        grayscale: bool,
        /// Scale wider frames down to this many pixels wide (aspect kept; re-encoded as for
        /// --grayscale).
        #[arg(long, value_name = "PX")]
        max_width: Option<std::num::NonZeroU32>,
        /// Skip records whose image declares more pixels than this (as `limits.max_pixels`).
        #[arg(long, default_value_t = edgecam::limits::DEFAULT_MAX_PIXELS)]
        max_pixels: u64,
        /// Skip records whose image has a longer side, pixels (as `limits.max_side_px`).
        #[arg(long, default_value_t = edgecam::limits::DEFAULT_MAX_SIDE_PX)]
        max_side_px: u32,
        /// Skip records whose value is larger, bytes (as `limits.max_frame_bytes`).
        #[arg(long, default_value_t = edgecam::limits::DEFAULT_MAX_FRAME_BYTES)]
        max_frame_bytes: usize,
    },
    /// Run a program on every frame of a topic and publish its answers: N long-lived workers
    /// speak a line protocol on stdin/stdout (see examples/people.py); at least once, offsets
    /// committed in order after each result's delivery report.
    Process {
        #[command(flatten)]
        from: ConsumeFrom,
        /// Consumer group; offsets are committed once each frame's result is delivered
        /// (Kafka).
        #[arg(long, required_unless_present = "pubsub_subscription")]
        group_id: Option<String>,
        /// Topic for the workers' answers (keyed by device, with the frame's headers); with
        /// --pubsub-subscription a Pub/Sub topic, projects/P/topics/T or T in the
        /// subscription's project.
        #[arg(long)]
        results_topic: String,
        /// Topic for frames a worker failed on twice (timeout, crash, bad answer); a Pub/Sub
        /// topic as --results-topic with --pubsub-subscription.
        #[arg(long)]
        dead_letter_topic: Option<String>,
        /// Worker processes.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// How long a worker may take for one frame, milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Stop after this many frames.
        #[arg(long)]
        max_frames: Option<u64>,
        /// Stop after this many milliseconds without a frame.
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
        /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9101).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The worker command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Serve a web page that plays the frames of a Kafka topic: devices with thumbnails, a
    /// live or resumed player per device, a time scrubber, frame stepping, downloads.
    View {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Address to serve the page on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A topic of `edgecam process` results: each frame's boxes and label are drawn
        /// over it (matched by edgecam.frame_id).
        #[arg(long, value_name = "TOPIC", value_parser = topic_name)]
        results_topic: Option<String>,
    },
    /// Publish real footage through an in-process mock Kafka cluster and read it back.
    Demo {
        /// Folder for the consumed frames.
        #[arg(long, default_value = "demo-out")]
        output_dir: PathBuf,
        /// MJPEG file to publish (looped).
        #[arg(long, default_value = "tests/fixtures/vtest-10.mjpeg")]
        input: PathBuf,
        /// Frames to publish.
        #[arg(long, default_value_t = 100)]
        frames: u64,
        /// Source pace in frames per second, like a camera (0 = as fast as possible).
        #[arg(long, default_value_t = 30.0)]
        fps: f64,
        /// Byte budget per Kafka record.
        #[arg(long, default_value_t = config::DEFAULT_MAX_MESSAGE_BYTES)]
        max_message_bytes: u32,
        /// Output codec.
        #[arg(long, value_enum, default_value = "jpeg")]
        codec: CodecArg,
    },
}

/// Packaging helpers (scripts/build-deb), kept out of [`Cli`] so that they are in neither
/// `--help` nor the completions and man pages they write: `edgecam completions SHELL`,
/// `edgecam man --out-dir DIR`.
#[derive(Parser)]
#[command(name = "edgecam", version, disable_help_subcommand = true)]
enum Packaging {
    /// Print the shell completion script for SHELL to stdout.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages, edgecam.1 and edgecam-<command>.1, into a folder.
    Man {
        /// Folder for the pages; created if missing.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

/// Starts logging to stderr. The filter is `--log-level`, else `log.level`, else
/// `RUST_LOG`, else `info`; the format `--log-format`, else `log.format`. Text lines have
/// colour only when stderr is a terminal, and no timestamp under journald (which stamps
/// every line itself).
///
/// Errors: a `--log-level` that is not a filter, as text for the caller to print (exit 64).
fn init_logging(cli: &LogArgs, cfg: Option<&config::LogConfig>) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match (&cli.level, cfg.and_then(|c| c.level.as_ref())) {
        (Some(l), _) => EnvFilter::try_new(l)
            .map_err(|e| format!("--log-level {l:?} is not a level or filter: {e}"))?,
        // Checked by the loader.
        (None, Some(l)) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        (None, None) => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
        }
    };
    let format = match (cli.format, cfg.map(|c| c.format)) {
        (Some(LogFormatArg::Json), _) | (None, Some(config::LogFormat::Json)) => {
            config::LogFormat::Json
        }
        _ => config::LogFormat::Text,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text if journald => builder.without_time().with_ansi(false).try_init(),
        config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| format!("cannot start logging: {e}"))?;
    JSON_LOGS.store(
        format == config::LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    Ok(())
}

/// Set when logs are JSON, so the exit summary is one JSON line too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints the exit summary to stderr: as it is, or as one JSON log event (`summary` field)
/// when logs are JSON, so every stderr line stays one JSON object.
fn print_summary(summary: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(summary, "stopped");
    } else {
        eprintln!("{summary}");
    }
}

/// [`init_logging`], printing its error; `Err` carries the exit code.
fn start_logging(cli: &LogArgs, cfg: Option<&config::LogConfig>) -> Result<(), ExitCode> {
    init_logging(cli, cfg).map_err(|e| {
        eprintln!("edgecam: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Cancels `token` on the first SIGINT or SIGTERM.
fn cancel_on_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        token.cancel();
    });
    Ok(())
}

/// On SIGHUP: re-reads `path` and hands live changes to the pipeline; reports what needs a
/// restart; keeps the running settings when the new file is invalid.
fn reload_on_sighup(
    path: PathBuf,
    live: Arc<edgecam::pipeline::Live>,
    metrics: Arc<edgecam::metrics::Metrics>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let started = live.config.borrow().clone();
    // The largest record the sink was set up for: librdkafka's message.max.bytes, or the
    // MQTT client's packet limit (sized from the budget at start).
    let sink_max =
        edgecam::sink::max_record_bytes(&started.sink, started.encode.max_message_bytes.get());
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let new = match config::load(&path, std::env::vars()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: new configuration rejected; keeping the running one");
                    metrics.set_last_error(format!("reload rejected: {e}"));
                    continue;
                }
            };
            let running = live.config.borrow().clone();
            let plan = edgecam::reload::plan(&running, &new, sink_max);
            if !plan.needs_restart.is_empty() {
                tracing::warn!(keys = ?plan.needs_restart, "SIGHUP: these changes need a restart");
            }
            if plan.live.is_empty() {
                tracing::info!("SIGHUP: no live change");
                continue;
            }
            tracing::info!(keys = ?plan.live, "SIGHUP: applying live");
            live.config.send_replace(plan.apply);
        }
    });
    Ok(())
}

/// Loads `path` for a command: prints the one error (never a secret) and returns exit code 64
/// on any problem; prints warnings.
fn load_config(path: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    match config::load_file(path, std::env::vars()) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("edgecam: warning: {w}");
            }
            Ok(loaded)
        }
        Err(e) => {
            eprintln!("edgecam: invalid configuration {}: {e}", path.display());
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// The agent part of `loaded`, or exit 64 saying the file is a bridge configuration.
fn agent_part(loaded: config::Loaded, path: &std::path::Path) -> Result<config::Config, ExitCode> {
    loaded.agent.ok_or_else(|| {
        eprintln!(
            "edgecam: {} is a bridge configuration (no [device]/[source]): run it with `edgecam \
             bridge --config {}`",
            path.display(),
            path.display()
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `run` and `bridge` start logging once their file is loaded (it may set `[log]`);
    // the other commands at once.
    let log_args = LogArgs {
        format: cli.log_format,
        level: cli.log_level.clone(),
    };
    if !matches!(cli.command, Command::Run { .. } | Command::Bridge { .. }) {
        if let Err(code) = start_logging(&log_args, None) {
            return Ok(code);
        }
    }
    match cli.command {
        Command::CheckConfig { config } => {
            let loaded = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            eprintln!("edgecam: {}: valid {}", config.display(), loaded.describe());
            print!("{}", loaded.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bridge { config } => {
            let cfg = match load_config(&config).map(|l| l.bridge) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    eprintln!(
                        "edgecam: {} has no [bridge] table: it is an agent configuration; run \
                         it with `edgecam run --config {}`",
                        config.display(),
                        config.display()
                    );
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
                Err(code) => return Ok(code),
            };
            if let Err(code) = start_logging(&log_args, Some(&cfg.log)) {
                return Ok(code);
            }
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone())?;
            let metrics = Arc::new(edgecam::bridge::BridgeMetrics::default());
            let report = edgecam::bridge::run(cfg, shutdown, metrics.clone()).await?;
            print_summary(&metrics.summary(report.elapsed.as_secs_f64()));
            // Undelivered messages were not acknowledged: the broker keeps them.
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            // Validate before opening any device or connection.
            let cfg = match load_config(&config).and_then(|l| agent_part(l, &config)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if let Err(code) = start_logging(&log_args, Some(&cfg.log)) {
                return Ok(code);
            }
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone())?;
            let metrics = Arc::new(edgecam::metrics::Metrics::default());
            let live = Arc::new(edgecam::pipeline::Live::new(cfg.clone()));
            reload_on_sighup(config, live.clone(), metrics.clone())?;
            let progress = match cfg.log.progress_interval_secs.get() {
                0 => None,
                s => Some(std::time::Duration::from_secs(s as u64)),
            };
            let supervisor = tokio::spawn(edgecam::service::supervise(
                metrics.clone(),
                progress,
                shutdown.clone(),
            ));
            let device = cfg.device.id.clone();
            let result =
                edgecam::pipeline::run_live(cfg, shutdown.clone(), metrics.clone(), live).await;
            // The source may have ended on its own: say STOPPING either way.
            shutdown.cancel();
            let _ = supervisor.await;
            let report = result.with_context(|| format!("device {device}"))?;
            print_summary(&metrics.summary(report.elapsed.as_secs_f64()));
            Ok(if report.sink.undelivered > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Consume {
            mut from,
            group_id,
            output_dir,
            auto_offset_reset,
            max_frames,
            idle_timeout_ms,
            grayscale,
            max_width,
            max_pixels,
            max_side_px,
            max_frame_bytes,
        } => {
            let common =
                |opts: edgecam::consume::ConsumeOptions| edgecam::consume::ConsumeOptions {
                    max_frames,
                    idle_timeout: idle_timeout_ms.map(std::time::Duration::from_millis),
                    progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    limits: edgecam::limits::Limits {
                        max_pixels,
                        max_side_px,
                        max_frame_bytes,
                    },
                    conversion: edgecam::consume::Conversion {
                        grayscale,
                        max_width,
                    },
                    ..opts
                };
            if let Some(subscription) = from.pubsub_subscription.take() {
                let source = match pubsub_source("consume", subscription, from.config.as_deref()) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                let opts = common(edgecam::consume::ConsumeOptions::new(
                    "", "", "", output_dir,
                ));
                let shutdown = CancellationToken::new();
                cancel_on_signals(shutdown.clone())?;
                let r = edgecam::consume::pubsub::consume(&opts, &source, shutdown).await?;
                eprintln!("{} into {}", r.summary(), opts.output_dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            let (bootstrap_servers, topic, properties) = match kafka_source(from.kafka()) {
                Ok(k) => k,
                Err(code) => return Ok(code),
            };
            let group_id =
                group_id.expect("clap requires --group-id without --pubsub-subscription");
            let opts = edgecam::consume::ConsumeOptions {
                auto_offset_reset: match auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                }
                .into(),
                properties,
                ..common(edgecam::consume::ConsumeOptions::new(
                    bootstrap_servers,
                    topic,
                    group_id,
                    output_dir,
                ))
            };
            // Bad properties exit 64 before anything is opened or created.
            if let Err(e) = opts.client_config() {
                eprintln!("edgecam: consume: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone())?;
            let r = edgecam::consume::consume(&opts, shutdown).await?;
            eprintln!("{} into {}", r.summary(), opts.output_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Process {
            mut from,
            group_id,
            results_topic,
            dead_letter_topic,
            workers,
            timeout_ms,
            max_frames,
            idle_timeout_ms,
            listen,
            command,
        } => {
            let pubsub = match from.pubsub_subscription.take() {
                Some(subscription) => {
                    match pubsub_source("process", subscription, from.config.as_deref()) {
                        Ok(s) => Some(s),
                        Err(code) => return Ok(code),
                    }
                }
                None => None,
            };
            let (bootstrap_servers, topic, properties, group_id) = match &pubsub {
                // The metrics' `group` label: the subscription's id.
                Some(p) => {
                    let id = p.subscription.rsplit('/').next().unwrap_or_default();
                    (String::new(), String::new(), Vec::new(), id.to_string())
                }
                None => {
                    let (b, t, p) = match kafka_source(from.kafka()) {
                        Ok(k) => k,
                        Err(code) => return Ok(code),
                    };
                    let g =
                        group_id.expect("clap requires --group-id without --pubsub-subscription");
                    (b, t, p, g)
                }
            };
            let opts = edgecam::process::ProcessOptions {
                bootstrap_servers,
                topic,
                group_id,
                results_topic,
                dead_letter_topic,
                workers: workers.max(1),
                timeout: std::time::Duration::from_millis(timeout_ms),
                command,
                properties,
                max_frames,
                idle_timeout: idle_timeout_ms.map(std::time::Duration::from_millis),
                listen,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                pubsub,
                limits: edgecam::limits::Limits::default(),
            };
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone())?;
            match edgecam::process::run(opts, shutdown).await {
                Ok(r) => {
                    eprintln!("{}", r.summary());
                    Ok(ExitCode::SUCCESS)
                }
                Err(
                    e @ (edgecam::process::ProcessError::Spawn { .. }
                    | edgecam::process::ProcessError::Http(_)
                    | edgecam::process::ProcessError::Pubsub(_)),
                ) => {
                    eprintln!("edgecam: process: {e}");
                    Ok(ExitCode::from(EXIT_CONFIG))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::View {
            kafka,
            listen,
            results_topic,
        } => {
            let (bootstrap_servers, topic, properties) = match kafka_source(kafka) {
                Ok(k) => k,
                Err(code) => return Ok(code),
            };
            let opts = edgecam::view::ViewOptions {
                bootstrap_servers,
                topic,
                listen,
                properties,
                limits: edgecam::limits::Limits::default(),
                results_topic,
            };
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone())?;
            match edgecam::view::serve(opts, shutdown).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(edgecam::view::ViewError::Kafka(e)) => {
                    eprintln!("edgecam: view: kafka: {e}");
                    Ok(ExitCode::from(EXIT_CONFIG))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Demo {
            output_dir,
            input,
            frames,
            fps,
            max_message_bytes,
            codec,
        } => {
            let opts = edgecam::demo::DemoOptions {
                input,
                frames,
                fps,
                max_message_bytes,
                codec: match codec {
                    CodecArg::Jpeg => Codec::Jpeg,
                    CodecArg::Png => Codec::Png,
                    CodecArg::Zstd => Codec::Zstd,
                },
                output_dir,
            };
            let summary = edgecam::demo::demo(&opts).await?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `edgecam completions SHELL`: the completion script for [`Cli`] on stdout.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "edgecam", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `edgecam man --out-dir DIR`: edgecam.1 and one page per command (edgecam-run.1, …).
/// Exit 1 naming the folder when it cannot be written.
fn write_man_pages(out_dir: &std::path::Path) -> ExitCode {
    let written = std::fs::create_dir_all(out_dir).and_then(|()| {
        // Built, so that each command knows its full name ("edgecam run") and the global
        // options; no `help` pseudo-command.
        let mut root = Cli::command().disable_help_subcommand(true);
        root.build();
        let mut pages = vec![("edgecam.1".to_string(), root.clone())];
        for sub in root.get_subcommands() {
            pages.push((format!("edgecam-{}.1", sub.get_name()), sub.clone()));
        }
        for (file, page) in &pages {
            let mut buf = Vec::new();
            clap_mangen::Man::new(page.clone())
                .source(concat!("edgecam ", env!("CARGO_PKG_VERSION")))
                .manual("edgecam manual")
                .render(&mut buf)?;
            std::fs::write(out_dir.join(file), buf)?;
        }
        Ok(pages.len())
    });
    match written {
        Ok(n) => {
            eprintln!("edgecam: {n} man pages in {}", out_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "edgecam: cannot write man pages into {}: {e}",
                out_dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `NAME=VALUE` of `-X`: split at the first `=`; the name must not be empty.
/// `(bootstrap servers, topic, consumer properties)`.
type KafkaSource = (String, String, Vec<(String, String)>);

/// Bootstrap servers, topic and consumer properties for `consume` and `view`: `[kafka]` of
/// `config` (an agent or bridge file, checked as `check-config` does), with the command
/// line on top. `Err` is the exit code, the reason already printed.
fn kafka_source(args: KafkaArgs) -> Result<KafkaSource, ExitCode> {
    let KafkaArgs {
        bootstrap_servers,
        topic,
        config,
        property,
    } = args;
    let kafka = match config.as_deref() {
        Some(path) => {
            let loaded = load_config(path)?;
            let kafka = loaded
                .agent
                .and_then(|a| a.kafka().cloned())
                .or(loaded.bridge.map(|b| b.kafka));
            match kafka {
                Some(k) => Some(k),
                None => {
                    eprintln!(
                        "edgecam: {} has no [kafka] table to read from",
                        path.display()
                    );
                    return Err(ExitCode::from(EXIT_CONFIG));
                }
            }
        }
        None => None,
    };
    let mut properties: Vec<(String, String)> = kafka
        .iter()
        .flat_map(|k| k.properties.iter())
        .map(|(name, value)| (name.clone(), value.config_value()))
        .collect();
    properties.extend(property);
    let (Some(bootstrap_servers), Some(topic)) = (
        bootstrap_servers.or(kafka.as_ref().map(|k| k.bootstrap_servers.clone())),
        topic.or(kafka.as_ref().map(|k| k.topic.as_str().to_string())),
    ) else {
        // clap requires both without --config, and --config's [kafka] has both.
        eprintln!("edgecam: needs --bootstrap-servers and --topic, or --config");
        return Err(ExitCode::from(EXIT_CONFIG));
    };
    Ok((bootstrap_servers, topic, properties))
}

/// The Pub/Sub subscription `consume` or `process` reads: its name checked, the emulator when
/// `PUBSUB_EMULATOR_HOST` is set, else `config`'s `[pubsub]` endpoint and credentials (an
/// agent file whose sink is Pub/Sub), else Pub/Sub's endpoint with the metadata server's
/// token. `Err` is the exit code, the reason already printed.
fn pubsub_source(
    command: &str,
    subscription: String,
    config: Option<&std::path::Path>,
) -> Result<edgecam::consume::pubsub::PubsubSource, ExitCode> {
    if let Err(e) = edgecam::consume::pubsub::check_subscription(&subscription) {
        eprintln!("edgecam: {command}: {e}");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    let table = match config {
        Some(path) => {
            let loaded = load_config(path)?;
            match loaded.agent.as_ref().and_then(|a| a.sink.pubsub()).cloned() {
                Some(p) => Some(p),
                None => {
                    eprintln!(
                        "edgecam: {} has no [pubsub] sink to read the endpoint and credentials from",
                        path.display()
                    );
                    return Err(ExitCode::from(EXIT_CONFIG));
                }
            }
        }
        None => None,
    };
    let emulator = std::env::var(edgecam::config::pubsub::EMULATOR_ENV)
        .ok()
        .filter(|h| !h.trim().is_empty());
    Ok(edgecam::consume::pubsub::PubsubSource {
        subscription,
        base_url: match (&emulator, &table) {
            (Some(h), _) => format!("http://{h}"),
            (None, Some(t)) => t.base_url(),
            (None, None) => edgecam::config::pubsub::DEFAULT_ENDPOINT.to_string(),
        },
        credentials: table.and_then(|t| t.credentials),
        emulator: emulator.is_some(),
    })
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!(
            "expected NAME=VALUE, a librdkafka property such as security.protocol=SASL_SSL \
             (got {s:?})"
        )),
    }
}

fn main() -> ExitCode {
    // Packaging helpers: no runtime, no logging.
    if matches!(
        std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()),
        Some("completions" | "man")
    ) {
        return match Packaging::parse() {
            Packaging::Completions { shell } => print_completions(shell),
            Packaging::Man { out_dir } => write_man_pages(&out_dir),
        };
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgecam: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edgecam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A Kafka topic name as a command-line value: the rules of `kafka.topic`.
fn topic_name(s: &str) -> Result<String, String> {
    edgecam::config::TopicName::new(s).map(|_| s.to_owned())
}
