//! `edgecam demo`: the whole path on real footage with no broker to install.
//!
//! Starts librdkafka's mock cluster in process (real Kafka protocol on loopback), runs the
//! agent on an MJPEG file, consumes the topic back into a folder, and checks that every
//! record came back.

use std::path::PathBuf;
use std::sync::Arc;

use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::config::Codec;
use crate::consume::{consume, ConsumeOptions};
use crate::metrics::Metrics;
use crate::pipeline;

/// Options of `edgecam demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// MJPEG file to publish (looped until `frames` frames).
    pub input: PathBuf,
    /// Frames to publish.
    pub frames: u64,
    /// Source pace, frames per second (0 = as fast as possible). The mock cluster keeps at
    /// most 5 MB per partition, so an unpaced run of large frames can outrun the reader.
    pub fps: f64,
    /// `encode.max_message_bytes`.
    pub max_message_bytes: u32,
    /// `encode.codec`.
    pub codec: Codec,
    /// Where the consumed frames are written.
    pub output_dir: PathBuf,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The mock cluster could not start.
    #[error("mock cluster: {0}")]
    Cluster(#[from] rdkafka::error::KafkaError),
    /// The generated configuration was refused (e.g. a budget below the minimum).
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The agent failed to start.
    #[error(transparent)]
    Run(#[from] pipeline::RunError),
    /// Consuming failed.
    #[error(transparent)]
    Consume(#[from] crate::consume::ConsumeError),
    /// Fewer frames came back than were delivered.
    #[error("published {published} frames but consumed {consumed}")]
    Lost {
        /// Delivered by the agent.
        published: u64,
        /// Read back.
        consumed: u64,
    },
}

/// Runs the demo and returns the text summary it prints.
///
/// Errors: [`DemoError`].
pub async fn demo(opts: &DemoOptions) -> Result<String, DemoError> {
    let cluster = MockCluster::new(3)?;
    let topic = "edgecam.demo";
    cluster.create_topic(topic, 3, 1)?;
    let bootstrap = cluster.bootstrap_servers();
    let toml = format!(
        r#"
[device]
id = "demo-cam"
[source]
kind = "mjpeg"
path = {path}
fps = {fps}
loop = true
max_frames = {frames}
[encode]
codec = "{codec}"
max_message_bytes = {budget}
[pipeline]
overflow = "block"
[spool]
mode = "off"

[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
"#,
        path = toml::Value::String(opts.input.display().to_string()),
        frames = opts.frames,
        fps = opts.fps,
        codec = opts.codec.as_str(),
        budget = opts.max_message_bytes,
    );
    let cfg = crate::config::load_str(&toml, std::iter::empty())?;
    let metrics = Arc::new(Metrics::default());

    // Read back while publishing, as a live viewer would: the mock cluster keeps only 5 MB
    // per partition. Publishing starts once the consumer group has assigned the partitions.
    let (assigned_tx, mut assigned_rx) = tokio::sync::watch::channel(false);
    let consume_opts = ConsumeOptions {
        max_frames: Some(opts.frames),
        idle_timeout: Some(std::time::Duration::from_secs(10)),
        assigned: Some(assigned_tx),
        ..ConsumeOptions::new(bootstrap, topic, "edgecam-demo", opts.output_dir.clone())
    };
    let stop_consumer = CancellationToken::new();
    let consumer = {
        let stop = stop_consumer.clone();
        tokio::spawn(async move { consume(&consume_opts, stop).await })
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        assigned_rx.wait_for(|a| *a),
    )
    .await;

    let report = pipeline::run(cfg, CancellationToken::new(), metrics.clone()).await?;
    let published = metrics.delivered.load(std::sync::atomic::Ordering::Relaxed);
    let consumed = match consumer.await {
        Ok(r) => r?,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    let mut s = format!(
        "edgecam demo: {} → mock Kafka cluster (3 brokers, topic {topic}, 3 partitions), budget {} B, codec {}\n",
        opts.input.display(),
        opts.max_message_bytes,
        opts.codec.as_str()
    );
    s.push_str(&metrics.summary(report.elapsed.as_secs_f64()));
    s.push_str(&format!(
        "\nconsumed: {} frames ({} bytes) into {}\n",
        consumed.frames,
        consumed.bytes,
        opts.output_dir.display()
    ));
    if consumed.frames != published {
        return Err(DemoError::Lost {
            published,
            consumed: consumed.frames,
        });
    }
    Ok(s)
}
