//! systemd integration (`Type=notify`): `READY=1` once the source and the sink are up,
//! `WATCHDOG=1` only while frames are actually captured, `STATUS=` with the frame rate and
//! the last error, `STOPPING=1` on shutdown.
//!
//! Frames *captured* (not delivered) drive the watchdog: a stalled camera or a wedged runtime
//! stops it and systemd restarts the service, while a Kafka outage does not — restarting then
//! would only throw away the records librdkafka is holding for when the broker is back.
//! Outside systemd (`NOTIFY_SOCKET` unset) nothing is sent.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often `STATUS=` is refreshed when there is no watchdog.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `true` when started by systemd with a notification socket.
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// The watchdog period systemd asked for, if any: `WATCHDOG_USEC`, when `WATCHDOG_PID` is
/// unset or names this process (the rule of `sd_watchdog_enabled(3)`; the `sd-notify` crate
/// also requires `WATCHDOG_PID` to be set, which systemd does not promise).
pub fn watchdog_period() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => Some(Duration::from_micros(usec)),
        Some(Ok(p)) if p == me => Some(Duration::from_micros(usec)),
        Some(_) => None,
    }
}

/// One `STATUS=` (or progress) line: capture rate over the last interval, totals, records
/// in flight, the spool's backlog when there is one, last error.
pub fn status_line(metrics: &Metrics, fps: f64) -> String {
    let mut s = format!(
        "{fps:.1} frames/s, {} delivered, {} dropped, {} in flight",
        metrics.delivered.load(Relaxed),
        metrics.dropped_total(),
        metrics.unacked.load(Relaxed)
    );
    let spooled = metrics.spool_records.load(Relaxed);
    if spooled > 0 {
        s.push_str(&format!(", {spooled} spooled"));
    }
    if let Some(e) = metrics.last_error() {
        s.push_str(", last error: ");
        s.push_str(&e);
    }
    s
}

/// Records delivered or written to the spool so far.
fn moved(metrics: &Metrics) -> u64 {
    metrics.delivered.load(Relaxed) + metrics.spooled.load(Relaxed)
}

/// Outside systemd: logs a progress line ([`status_line`]) every `progress` until
/// `shutdown` is cancelled (nothing when `progress` is `None`).
async fn progress_lines(
    metrics: Arc<Metrics>,
    progress: Option<Duration>,
    shutdown: CancellationToken,
) {
    let Some(every) = progress else {
        return;
    };
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    let mut last_captured = metrics.captured.load(Relaxed);
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let captured = metrics.captured.load(Relaxed);
        let fps = (captured - last_captured) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
        tracing::info!("{}", status_line(&metrics, fps));
        last_captured = captured;
        last_at = Instant::now();
    }
}

/// Talks to systemd until `shutdown` is cancelled, then sends `STOPPING=1`. Outside systemd
/// it logs a progress line every `progress` instead (`log.progress_interval_secs`; `None`:
/// nothing). Run it as its own task beside the pipeline.
pub async fn supervise(
    metrics: Arc<Metrics>,
    progress: Option<Duration>,
    shutdown: CancellationToken,
) {
    if !under_systemd() {
        return progress_lines(metrics, progress, shutdown).await;
    }
    let watchdog = watchdog_period();
    // Ping at half the period, as sd_watchdog_enabled(3) advises.
    let tick = watchdog.map_or(STATUS_INTERVAL, |p| (p / 2).max(Duration::from_millis(10)));
    let mut ready_sent = false;
    let mut last_captured = metrics.captured.load(Relaxed);
    let mut last_moved = moved(&metrics);
    let mut last_at = Instant::now();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        if !ready_sent {
            if !metrics.ready.load(Relaxed) {
                continue;
            }
            send(&[NotifyState::Ready, NotifyState::Status("running")]);
            ready_sent = true;
            last_captured = metrics.captured.load(Relaxed);
            last_at = Instant::now();
            continue;
        }
        let captured = metrics.captured.load(Relaxed);
        let fps = (captured - last_captured) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
        let status = status_line(&metrics, fps);
        // End-to-end progress: frames are captured, and they are delivered or safely
        // spooled (or nothing waits: paused, or all delivered). A wedged sink without a
        // spool to take its frames stops the pings, and systemd restarts the service.
        let now_moved = moved(&metrics);
        let flowing = now_moved > last_moved || metrics.unacked.load(Relaxed) == 0;
        last_moved = now_moved;
        if watchdog.is_some() && captured > last_captured && flowing {
            send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            send(&[NotifyState::Status(&status)]);
        }
        last_captured = captured;
        last_at = Instant::now();
    }
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: delivering accepted frames"),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        assert_eq!(
            watchdog_from(Some("400000"), None, 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            watchdog_from(Some("400000"), Some("7"), 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(watchdog_from(Some("400000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn status_shows_rate_totals_and_last_error() {
        let m = Metrics::default();
        m.delivered(1000, 5);
        assert_eq!(
            status_line(&m, 9.96),
            "10.0 frames/s, 1 delivered, 0 dropped, 0 in flight"
        );
        m.unacked.store(3, Relaxed);
        m.spool_records.store(120, Relaxed);
        assert_eq!(
            status_line(&m, 2.0),
            "2.0 frames/s, 1 delivered, 0 dropped, 3 in flight, 120 spooled"
        );
        m.set_last_error("delivery failed: broker down");
        assert!(status_line(&m, 0.0).ends_with("last error: delivery failed: broker down"));
    }
}
