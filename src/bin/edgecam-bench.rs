//! `edgecam-bench`: the benchmarks, a program of their own so that the `edgecam` binary
//! that ships to the Pi carries neither them nor what they need (the in-process mock Kafka
//! cluster's client side, the in-memory spool storage).
//!
//! ```text
//! edgecam-bench [--data-dir DIR] [--iterations N] [--no-kafka]   encoders, budget fitting,
//!                                                                passthrough, end to end
//! edgecam-bench spool [--dir DIR]                                the spool on this disk
//! ```
//!
//! Build and run: `cargo build --release --bin edgecam-bench && RUST_LOG=warn
//! target/release/edgecam-bench`. Logs go to stderr (`RUST_LOG`, default `warn`), the table
//! to stdout. Exit 0, or 1 with the error on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Measure edgecam on this machine: encoders, budget fitting, passthrough and end-to-end
/// throughput on real footage, or the spool on this machine's disk; prints a table.
#[derive(Parser)]
#[command(
    name = "edgecam-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Folder with the real footage (vtest MJPEG and photographs) that scripts/testdata
    /// makes [default: $EDGECAM_TESTDATA, else target/testdata]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Timed repetitions per row; the table shows the median.
    #[arg(long, default_value_t = 5)]
    iterations: u32,
    /// Skip the rows that publish into the in-process mock Kafka cluster.
    #[arg(long)]
    no_kafka: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the spool on this machine's disk: append rate (64 KB, 400 KB records), 1 GB
    /// recovery, bytes written per healthy hour, backlog drain rate. Needs about 1.5 GB free.
    Spool {
        /// Directory to measure in (a scratch folder is made and removed inside it).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let table = match cli.command {
        Some(Command::Spool { dir }) => edgecam::bench::spool::run(&dir).map_err(|e| e.to_string()),
        None => {
            let opts = edgecam::bench::BenchOptions {
                data_dir: cli.data_dir.unwrap_or_else(edgecam::testdata::dir),
                iterations: cli.iterations,
                end_to_end: !cli.no_kafka,
                ..Default::default()
            };
            edgecam::bench::run(&opts).map_err(|e| e.to_string())
        }
    };
    match table {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgecam-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
