//! `edgecam-bench spool`: the spool's figures on this machine's disk — append rate at 64 KB
//! and 400 KB records with group commit, recovery time of a 1 GB spool, bytes written per
//! hour at 10 fps while the broker is healthy (`outage` mode), and the backlog drain rate
//! after a 10-minute outage at 10 fps while live frames keep flowing.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::forward::{ForwardOptions, Forwarder};
use crate::metrics::Metrics;
use crate::record::{header, FrameRecord};
use crate::sink::{Ack, Destination, Outgoing};
use crate::spool::{DirStorage, MemStorage, Spool, SpoolOptions};

/// A frame record of `value_len` bytes of incompressible-looking data, numbered `seq`.
fn frame(seq: u64, value_len: usize) -> Outgoing {
    let mut v = vec![0u8; value_len];
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Outgoing {
        destination: Destination::Frames,
        record: FrameRecord {
            key: "bench".into(),
            headers: vec![
                (header::DEVICE.into(), "bench".into()),
                (header::SEQ.into(), seq.to_string()),
                (header::FRAME_ID.into(), uuid::Uuid::now_v7().to_string()),
            ],
            value: Bytes::from(v),
        },
        captured_at: SystemTime::now(),
        ticket: 0,
    }
}

/// Bytes this process has caused to be written to storage so far (`/proc/self/io`).
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Appends `total` bytes of `value_len`-byte records as fast as the disk takes them,
/// committing every 200 ms (as `commit_interval_ms` does); returns a table row.
fn append_row(dir: &Path, value_len: usize, total: u64) -> std::io::Result<String> {
    let sub = dir.join(format!("append-{value_len}"));
    let (mut spool, _) = Spool::open(DirStorage::open(&sub)?, SpoolOptions::new(total * 2, None))?;
    let n = total / value_len as u64;
    let records: Vec<Outgoing> = (0..64).map(|i| frame(i, value_len)).collect();
    let before = write_bytes();
    let started = Instant::now();
    let mut commits = 0u64;
    let mut last = Instant::now();
    for i in 0..n {
        spool
            .append(&records[(i % 64) as usize], false)
            .map_err(std::io::Error::other)?;
        if last.elapsed() >= Duration::from_millis(200) {
            spool.commit().map_err(|(e, _)| e)?;
            commits += 1;
            last = Instant::now();
        }
    }
    spool.commit().map_err(|(e, _)| e)?;
    let secs = started.elapsed().as_secs_f64();
    let written = write_bytes().zip(before).map(|(a, b)| a - b);
    let payload = n * value_len as u64;
    drop(spool);
    std::fs::remove_dir_all(&sub)?;
    Ok(format!(
        "append {:>3} KB records | {:>8.0} frames/s | {:>7.1} MB/s | {} commits | {}",
        value_len / 1000,
        n as f64 / secs,
        payload as f64 / secs / 1e6,
        commits + 1,
        match written {
            Some(w) => format!(
                "{:.3} bytes written per byte spooled",
                w as f64 / payload as f64
            ),
            None => "bytes written: /proc/self/io unavailable".into(),
        }
    ))
}

/// Fills a 1 GB spool with 400 KB records, leaves it as a crash would (no close), and times
/// opening it again. With `drop_caches` (root) the page cache is emptied first.
fn recovery_row(dir: &Path) -> std::io::Result<String> {
    let sub = dir.join("recovery");
    let total = 1u64 << 30;
    {
        let (mut spool, _) = Spool::open(
            DirStorage::open(&sub)?,
            SpoolOptions::new(total + (64 << 20), None),
        )?;
        let records: Vec<Outgoing> = (0..16).map(|i| frame(i, 400_000)).collect();
        for i in 0..total / 400_000 {
            spool
                .append(&records[(i % 16) as usize], false)
                .map_err(std::io::Error::other)?;
        }
        spool.commit().map_err(|(e, _)| e)?;
    }
    let cold = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    let started = Instant::now();
    let (spool, rec) = Spool::open(DirStorage::open(&sub)?, SpoolOptions::new(total * 2, None))?;
    let secs = started.elapsed().as_secs_f64();
    drop(spool);
    std::fs::remove_dir_all(&sub)?;
    Ok(format!(
        "recover {:.2} GB ({} records) after a crash | {:.3} s | page cache {}",
        rec.bytes as f64 / 1e9,
        rec.records,
        secs,
        if cold {
            "dropped first"
        } else {
            "warm (not root)"
        }
    ))
}

/// One simulated hour at 10 fps of 64 KB frames through the forwarder in `outage` mode with
/// a sink that acknowledges each frame 50 ms after it gets it: bytes the spool writes.
fn healthy_hour_row() -> String {
    let mem = MemStorage::new();
    let (spool, _) = Spool::open(mem.clone(), SpoolOptions::new(1 << 30, None)).expect("memory");
    let cfg = crate::config::SpoolConfig::default();
    let opts = ForwardOptions::new(&cfg, 32, false);
    let mut fwd = Forwarder::new(opts, Some(spool), Arc::new(Metrics::default()));
    let t0 = Instant::now();
    let mut pending: Vec<(Instant, u64)> = Vec::new();
    let frames = 36_000u64;
    let rec = frame(0, 64_000);
    for i in 0..frames {
        let now = t0 + Duration::from_millis(100 * i);
        pending.retain(|(at, ticket)| {
            let due = *at <= now;
            if due {
                fwd.on_ack(Ack::Delivered(*ticket, None));
            }
            !due
        });
        fwd.accept(rec.clone(), now);
        while let Some(o) = fwd.next_send(now, SystemTime::now(), false) {
            pending.push((now + Duration::from_millis(50), o.ticket));
        }
        fwd.tick(now, SystemTime::now());
    }
    format!(
        "healthy broker, outage mode, 10 fps x 1 h of 64 KB frames | {} bytes written to the spool",
        mem.written()
    )
}

/// A 10-minute outage at 10 fps (6,000 frames of 20 KB spooled to disk), then a sink that
/// acknowledges at once while live frames keep coming at 10 fps: how fast the backlog
/// drains (the forwarder and spool reads; a real broker adds its own limits).
fn drain_row(dir: &Path) -> std::io::Result<String> {
    let sub = dir.join("drain");
    let (spool, _) = Spool::open(DirStorage::open(&sub)?, SpoolOptions::new(1 << 30, None))?;
    let cfg = crate::config::SpoolConfig::default();
    let mut fwd = Forwarder::new(
        ForwardOptions::new(&cfg, 32, false),
        Some(spool),
        Arc::new(Metrics::default()),
    );
    let start = Instant::now();
    // The outage: the sink takes its window, then nothing is acknowledged.
    let mut held = Vec::new();
    for i in 0..6_000u64 {
        let now = start + Duration::from_millis(100 * i);
        fwd.accept(frame(i, 20_000), now);
        while let Some(o) = fwd.next_send(now, SystemTime::now(), false) {
            held.push(o.ticket);
        }
        fwd.tick(now, SystemTime::now());
    }
    let outage_end = start + Duration::from_secs(600) + Duration::from_secs(1);
    fwd.tick(outage_end, SystemTime::now());
    for t in held.drain(..) {
        fwd.on_ack(Ack::Delivered(t, None));
    }
    // The broker is back. Simulated time goes on from the outage's end at the wall clock's
    // pace.
    let wall = Instant::now();
    let mut replayed = 0u64;
    let mut live = 0u64;
    let mut next_live = outage_end;
    loop {
        let now = outage_end + wall.elapsed();
        if now >= next_live {
            fwd.accept(frame(10_000 + live, 20_000), now);
            live += 1;
            next_live += Duration::from_millis(100);
        }
        let mut sent = 0;
        while let Some(o) = fwd.next_send(now, SystemTime::now(), false) {
            if o.record.header(header::REPLAYED).is_some() {
                replayed += 1;
            }
            fwd.on_ack(Ack::Delivered(o.ticket, None));
            sent += 1;
        }
        fwd.tick(now, SystemTime::now());
        if sent == 0 && !fwd.pending() {
            break;
        }
        if wall.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    let secs = wall.elapsed().as_secs_f64();
    fwd.finish();
    std::fs::remove_dir_all(&sub)?;
    Ok(format!(
        "drain after a 10 min outage at 10 fps (20 KB frames) | {replayed} replayed in {secs:.2} s = {:.0} frames/s | {live} live frames sent meanwhile",
        replayed as f64 / secs
    ))
}

/// Runs every row in a scratch directory under `dir` (removed afterwards) and returns the
/// table as text.
///
/// Errors: the directory cannot be created or written.
pub fn run(dir: &Path) -> std::io::Result<String> {
    let scratch = dir.join(format!("edgecam-spool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut out = String::new();
    let _ = writeln!(out, "spool benchmark in {}", scratch.display());
    let _ = writeln!(out, "{}", append_row(&scratch, 64_000, 512 << 20)?);
    let _ = writeln!(out, "{}", append_row(&scratch, 400_000, 1 << 30)?);
    let _ = writeln!(out, "{}", recovery_row(&scratch)?);
    let _ = writeln!(out, "{}", healthy_hour_row());
    let _ = writeln!(out, "{}", drain_row(&scratch)?);
    std::fs::remove_dir_all(&scratch)?;
    Ok(out)
}
