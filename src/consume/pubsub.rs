//! `edgecam consume --pubsub-subscription projects/P/subscriptions/S`: the same files, names
//! and de-duplication as from Kafka, read from a Pub/Sub subscription through its REST API
//! (`pull`, `acknowledge`, `modifyAckDeadline`).
//!
//! At least once, each frame once: a message is acknowledged only after its file and folder
//! are `fsync`ed (or it was skipped on purpose, or its file already existed). A batch whose
//! files take long to write has its ack deadline extended (to 60 s, every 10 s), so Pub/Sub
//! does not redeliver what is being written. A crash before the acknowledgement redelivers;
//! the file is found and counted as a duplicate. With message ordering on the subscription,
//! one device's frames arrive, and are written, in order.
//!
//! Pulls ask for an answer at once (`returnImmediately`) and are repeated, 100 ms after an
//! empty one, growing to 1 s while nothing comes. A held pull (the emulator holds an empty
//! one about 89 s) would have to be abandoned at `--idle-timeout-ms` or SIGTERM, and the
//! emulator hands a message published then to the abandoned pull, where it waits out its
//! ack deadline; Google discourages `returnImmediately` for throughput, which a camera's
//! frame rate does not need.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::Method;
use tokio_util::sync::CancellationToken;

use super::name::RecordMeta;
use super::{ConsumeError, ConsumeOptions, ConsumeReport, Incoming, Writer};
use crate::record::header;
use crate::sink::pubsub::client::{Client, Failure};

/// Wait after the first empty pull; it doubles up to [`EMPTY_WAIT_MAX`].
const EMPTY_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between empty pulls.
const EMPTY_WAIT_MAX: Duration = Duration::from_secs(1);
/// Messages asked for per pull.
const PULL_MAX: usize = 100;
/// A batch older than this has its ack deadline extended before the next file.
const EXTEND_AFTER: Duration = Duration::from_secs(10);
/// The ack deadline set when extending, seconds.
const EXTENDED_DEADLINE_SECS: u32 = 60;
/// Wait between pulls after one failed.
const RETRY: Duration = Duration::from_secs(1);

/// Where to read from.
#[derive(Debug, Clone)]
pub struct PubsubSource {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// The client: the emulator's when `PUBSUB_EMULATOR_HOST` is set, else the endpoint and
    /// credentials of an agent's `[pubsub]` (`--config`), else Pub/Sub with the metadata
    /// server's token.
    pub base_url: String,
    /// A service-account key (from `--config`'s `[pubsub] credentials`).
    pub credentials: Option<crate::config::Secret>,
    /// Talking to the emulator: no token.
    pub emulator: bool,
}

/// Checks `projects/<project>/subscriptions/<id>`.
///
/// Errors: a message saying what the form is.
pub fn check_subscription(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('/').collect();
    let ok = parts.len() == 4
        && parts[0] == "projects"
        && !parts[1].is_empty()
        && parts[2] == "subscriptions"
        && (3..=255).contains(&parts[3].len())
        && parts[3].starts_with(|c: char| c.is_ascii_alphabetic())
        && parts[1..].iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~+%:".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--pubsub-subscription must be projects/<project>/subscriptions/<id>, got {s:?}"
        ))
    }
}

/// One pulled message.
pub(crate) struct Pulled {
    pub(crate) ack_id: String,
    pub(crate) message_id: String,
    pub(crate) data: Vec<u8>,
    pub(crate) attributes: BTreeMap<String, String>,
    pub(crate) ordering_key: String,
    /// `publishTime`, milliseconds since the Unix epoch.
    pub(crate) publish_ms: Option<i64>,
}

impl Incoming for Pulled {
    fn value(&self) -> Option<&[u8]> {
        Some(&self.data)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    fn meta(&self) -> RecordMeta {
        let text = |name| self.attributes.get(name).cloned();
        RecordMeta {
            device: text(header::DEVICE),
            key: (!self.ordering_key.is_empty()).then(|| self.ordering_key.as_bytes().to_vec()),
            captured_at: text(header::CAPTURED_AT),
            timestamp_ms: self.publish_ms,
            seq: text(header::SEQ),
            frame_id: text(header::FRAME_ID),
            // Pub/Sub has no partitions; its message id (decimal) stands for the offset.
            partition: 0,
            offset: self.message_id.parse().unwrap_or(0),
        }
    }
}

/// The messages of a pull answer (`{"receivedMessages":[…]}`, or `{}` when none).
pub(crate) fn parse_pull(body: &[u8]) -> Result<Vec<Pulled>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("pull answer is not JSON: {e}"))?;
    let Some(list) = v.get("receivedMessages").and_then(|l| l.as_array()) else {
        return Ok(Vec::new());
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    list.iter()
        .map(|r| {
            let m = &r["message"];
            let ack_id = r["ackId"].as_str().ok_or("a message without ackId")?;
            Ok(Pulled {
                ack_id: ack_id.to_string(),
                message_id: m["messageId"].as_str().unwrap_or_default().to_string(),
                data: match m["data"].as_str() {
                    Some(d) => b64
                        .decode(d)
                        .map_err(|_| format!("message {ack_id}: data is not base64"))?,
                    None => Vec::new(),
                },
                attributes: m["attributes"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                            .collect()
                    })
                    .unwrap_or_default(),
                ordering_key: m["orderingKey"].as_str().unwrap_or_default().to_string(),
                publish_ms: m["publishTime"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64),
            })
        })
        .collect()
}

/// Why a subscription call failed for good.
fn fatal(f: &Failure, subscription: &str) -> Option<ConsumeError> {
    match f {
        Failure::NotFound(t) => Some(ConsumeError::Pubsub(format!(
            "subscription {subscription} does not exist ({t})"
        ))),
        Failure::Rejected(t) => Some(ConsumeError::Pubsub(format!("{subscription}: {t}"))),
        Failure::Auth(_) | Failure::Transient(_) => None,
    }
}

/// Acknowledges `ids` (their files are durable); a failure only means Pub/Sub delivers
/// them again, to find their files.
pub(crate) async fn ack(client: &Client, sub: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let body = serde_json::json!({ "ackIds": ids }).to_string();
    if let Err(f) = client
        .call(Method::POST, &format!("{sub}:acknowledge"), Some(body))
        .await
    {
        tracing::warn!(
            error = f.text(),
            messages = ids.len(),
            "acknowledge failed; Pub/Sub will deliver them again (their files exist)"
        );
    }
}

/// Reads `source` into files as [`super::consume`] does from Kafka, with `opts`' output
/// folder, limits, conversion, frame limit, idle timeout and progress line (its Kafka
/// fields are not used). Ends at `max_frames`, the idle timeout (counted from the start,
/// then from the last message), or `shutdown`.
///
/// Errors: [`ConsumeError::Pubsub`] for a subscription that does not exist or a request
/// Pub/Sub refuses; [`ConsumeError::Write`] for the file system. Credentials or network
/// failures are retried every second, with a warning.
pub async fn consume(
    opts: &ConsumeOptions,
    source: &PubsubSource,
    shutdown: CancellationToken,
) -> Result<ConsumeReport, ConsumeError> {
    let client = Client::with(
        source.base_url.clone(),
        source.credentials.as_ref(),
        source.emulator,
        Duration::from_secs(30),
    )
    .map_err(|e| ConsumeError::Pubsub(e.to_string()))?;
    let sub = source.subscription.as_str();
    let mut writer = Some(Writer::new(opts)?);
    let bar = super::progress_bar(opts.progress, "waiting for messages");
    let mut report = ConsumeReport::default();
    let mut warnings = crate::throttle::Throttle::frames();
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last_activity = started;
    let mut last_failure_log: Option<Instant> = None;
    let mut empty_wait = EMPTY_WAIT;
    loop {
        let left = opts.max_frames.map(|m| m.saturating_sub(report.frames));
        if left == Some(0) {
            break;
        }
        if opts
            .idle_timeout
            .is_some_and(|t| last_activity.elapsed() >= t)
        {
            break;
        }
        let max = left.map_or(PULL_MAX, |l| (l as usize).clamp(1, PULL_MAX));
        let body = serde_json::json!({ "maxMessages": max, "returnImmediately": true }).to_string();
        let pull = format!("{sub}:pull");
        let answer = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = client.call(Method::POST, &pull, Some(body)) => r,
        };
        let result = match answer {
            Ok((status, body)) if status.is_success() => {
                Ok(parse_pull(&body).map_err(ConsumeError::Pubsub)?)
            }
            Ok((status, body)) => Err(Failure::of(status, &body)),
            Err(f) => Err(f),
        };
        let batch = match result {
            Ok(batch) => batch,
            Err(f) => {
                if let Some(e) = fatal(&f, sub) {
                    return Err(e);
                }
                let now = Instant::now();
                if last_failure_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(30))
                {
                    last_failure_log = Some(now);
                    tracing::warn!(
                        error = f.text(),
                        subscription = sub,
                        "pull failed; retrying"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RETRY) => {}
                }
                continue;
            }
        };
        if batch.is_empty() {
            let mut until = Instant::now() + empty_wait;
            if let Some(t) = opts.idle_timeout {
                until = until.min(last_activity + t);
            }
            empty_wait = (empty_wait * 2).min(EMPTY_WAIT_MAX);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(until.into()) => {}
            }
            continue;
        }
        empty_wait = EMPTY_WAIT;
        first.get_or_insert_with(Instant::now);
        let pulled_at = Instant::now();
        let mut extended_at = pulled_at;
        let ids: Vec<String> = batch.iter().map(|m| m.ack_id.clone()).collect();
        for (i, msg) in batch.into_iter().enumerate() {
            if extended_at.elapsed() >= EXTEND_AFTER {
                // Slow writes: keep the rest of the batch ours.
                let body = serde_json::json!({
                    "ackIds": ids[i..],
                    "ackDeadlineSeconds": EXTENDED_DEADLINE_SECS,
                });
                if let Err(f) = client
                    .call(
                        Method::POST,
                        &format!("{sub}:modifyAckDeadline"),
                        Some(body.to_string()),
                    )
                    .await
                {
                    tracing::warn!(error = f.text(), "could not extend the ack deadline");
                }
                extended_at = Instant::now();
            }
            report.bytes += msg.data.len() as u64;
            let message_id = msg.message_id.clone();
            let outcome = match Writer::write_off_runtime(&mut writer, msg).await {
                Ok(o) => o,
                Err(e) => {
                    // Not written: what is done is acknowledged, the rest handed back
                    // (ack deadline 0) for the next run, not held until its deadline.
                    ack(&client, sub, &ids[..i]).await;
                    let body = serde_json::json!({ "ackIds": ids[i..], "ackDeadlineSeconds": 0 });
                    let _ = client
                        .call(
                            Method::POST,
                            &format!("{sub}:modifyAckDeadline"),
                            Some(body.to_string()),
                        )
                        .await;
                    return Err(e);
                }
            };
            report.tally(outcome, opts.list_files, &mut warnings, || {
                format!("message {message_id}")
            });
        }
        // Only now, with every file of the batch durable (or skipped on purpose).
        ack(&client, sub, &ids).await;
        last_activity = Instant::now();
        if let Some(t) = first {
            bar.set_message(super::progress::line(&report.progress(), t.elapsed()));
        }
    }
    report.elapsed = first.map(|t| last_activity.saturating_duration_since(t));
    bar.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_is_named_in_full() {
        assert!(check_subscription("projects/my-project/subscriptions/frames-all").is_ok());
        for bad in [
            "frames-all",
            "projects/p/topics/t",
            "projects//subscriptions/abc",
            "projects/p/subscriptions/ab",
            "projects/p/subscriptions/a/b",
        ] {
            assert!(check_subscription(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pull_answer_gives_data_attributes_and_the_name_parts() {
        let body = br#"{"receivedMessages":[{"ackId":"a1","message":{"data":"/9j/2Q==",
            "attributes":{"edgecam.device":"porch","edgecam.seq":"42",
            "edgecam.frame_id":"0190a0b0-0000-7000-8000-0123456789ab",
            "edgecam.captured_at":"2026-12-03T06:15:02.123456Z"},
            "messageId":"17","publishTime":"2026-12-03T06:15:03.000Z","orderingKey":"porch"}}]}"#;
        let m = parse_pull(body).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].data, vec![0xFF, 0xD8, 0xFF, 0xD9]);
        let rel = super::super::name::relative_path(&m[0].meta(), "jpg");
        assert_eq!(
            rel,
            std::path::Path::new(
                "porch/20261203/20261203T061502.123456Z-00000000000000000042-0123456789ab.jpg"
            )
        );
        assert!(parse_pull(b"{}").unwrap().is_empty());
        assert!(parse_pull(br#"{"receivedMessages":[{"message":{}}]}"#).is_err());
    }
}
