//! `[bridge.http]`: frames uploaded over HTTP, `POST /v1/frames/{device}`.
//!
//! What an ESP32-CAM sketch (or `curl`) sends: the body is a bare JPEG or PNG
//! (`Content-Type` `image/jpeg`, `image/png` or `application/octet-stream`; the type is
//! sniffed from the bytes, never taken from the header), or `multipart/form-data` with one
//! field named `file`.
//!
//! # Steps, and the answer to each failure
//!
//! 1. `Authorization: Bearer <bridge.http.token>` when a token is set, else `401`.
//! 2. `Content-Length` over `bridge.http.max_body_bytes`: `413` before the body is read.
//! 3. More than `bridge.http.per_device_per_sec` uploads of the device in the current
//!    one-second window: `429` with `Retry-After: 1`.
//! 4. A turn among `bridge.http.max_concurrent` uploads, waited for within
//!    `bridge.http.timeout_ms`, else `503` with `Retry-After`.
//! 5. The body, read up to `max_body_bytes` (a chunked body over it: `413`).
//! 6. The image checked as the bridge checks a `raw` MQTT payload ([`crate::inspect`]:
//!    markers, SOF/IHDR dimensions within `[limits]`, EOI/IEND, CRCs) and the device id:
//!    a `4xx` with `{"error": "<what is wrong>", "reason": "<RejectReason>"}`, and the
//!    upload dead-lettered (`edgecam.reason`, `edgecam.http_path`, …) when
//!    `bridge.dead_letter_topic` is set.
//! 7. An image whose record would exceed `bridge.max_message_bytes` is decoded and fitted
//!    under the budget by the agent's [`Encoder`] (JPEG quality ladder, then downscaling),
//!    on a blocking thread. The headers describe the fitted image.
//! 8. The record goes to the bridge's Kafka sink (the same producer as MQTT input) with the
//!    headers of MQTT raw input: `edgecam.device`, `edgecam.seq` (per device, shared with
//!    MQTT raw input), `edgecam.frame_id` (UUIDv5 of device and the uploaded image, so an
//!    upload sent again gets the same id), `edgecam.captured_at` (receive time),
//!    `content-type`, `edgecam.width`/`height`/`codec`/`quality`.
//! 9. The answer waits for Kafka's delivery report: `201` with
//!    `{"frame_id", "topic", "partition", "offset", "seq", "bytes", "fitted", "quality"}`,
//!    or `503` with `Retry-After` when no report came within `timeout_ms` (the record may
//!    still be delivered later; the client sends it again and the duplicate carries the
//!    same `frame_id`). A `201` is therefore never sent for a record Kafka has not stored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::input::{self, Rejection, Sniffed};
use super::metrics::{BridgeMetrics, RejectReason, UploadOutcome};
use crate::config::UploadConfig;
use crate::encode::{EncodeError, Encoder};
use crate::limits::Limits;
use crate::sink::Position;

/// Dead-letter header of a rejected upload: the request path, e.g. `/v1/frames/esp-1`.
pub const HTTP_PATH_HEADER: &str = "edgecam.http_path";

/// Devices the rate limiter remembers before it forgets those idle for a second.
const RATE_TABLE_MAX: usize = 10_000;

/// An upload checked (and fitted) on the HTTP side, ready to become a record: the forwarder
/// gives it its sequence number.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Valid device id, the record key.
    pub device: String,
    /// The record value: the uploaded image without bytes after its EOI/IEND, or the fitted
    /// JPEG.
    pub image: Bytes,
    /// Header values of `image`.
    pub sniffed: Sniffed,
    /// `edgecam.frame_id`, from the image as uploaded.
    pub frame_id: uuid::Uuid,
    /// When the body had been read (`edgecam.captured_at`).
    pub received_at: SystemTime,
    /// `true` when `image` was re-encoded to fit the budget.
    pub fitted: bool,
}

/// What the endpoint hands the forwarder.
#[derive(Debug)]
pub(crate) enum UploadKind {
    /// A frame to store in `kafka.topic`.
    Frame(Prepared),
    /// Bad input to count and dead-letter.
    Rejected {
        rejection: Rejection,
        /// The request path, for the dead letter.
        path: String,
        /// The body (or the multipart `file` field) as received.
        payload: Bytes,
    },
}

/// One upload on its way to the forwarder, with where its answer goes.
#[derive(Debug)]
pub(crate) struct UploadRequest {
    pub kind: UploadKind,
    pub reply: oneshot::Sender<UploadResult>,
}

/// The forwarder's answer, once Kafka's delivery report is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadResult {
    /// In `kafka.topic` at `position`, with sequence number `seq`.
    Stored {
        position: Option<Position>,
        seq: u64,
    },
    /// Not stored (dead-lettered when a dead-letter topic is set).
    Refused {
        reason: RejectReason,
        detail: String,
    },
}

/// At most `per_sec` uploads per device in each one-second window (a window starts at the
/// first upload after the previous one ended). Pure: the caller passes `now`.
#[derive(Debug)]
pub(crate) struct RateLimit {
    per_sec: u32,
    windows: HashMap<String, (std::time::Instant, u32)>,
}

impl RateLimit {
    pub(crate) fn new(per_sec: u32) -> Self {
        RateLimit {
            per_sec,
            windows: HashMap::new(),
        }
    }

    /// `true` (and counted) when `device` may upload at `now`.
    pub(crate) fn allow(&mut self, device: &str, now: std::time::Instant) -> bool {
        let second = Duration::from_secs(1);
        if self.windows.len() >= RATE_TABLE_MAX {
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < second);
        }
        let w = self.windows.entry(device.to_string()).or_insert((now, 0));
        if now.saturating_duration_since(w.0) >= second {
            *w = (now, 0);
        }
        if w.1 >= self.per_sec {
            return false;
        }
        w.1 += 1;
        true
    }
}

/// The endpoint's shared state.
struct Uploads {
    tx: mpsc::Sender<UploadRequest>,
    token: Option<String>,
    max_body: usize,
    timeout: Duration,
    permits: Arc<Semaphore>,
    rate: Option<Mutex<RateLimit>>,
    topic: String,
    max_bytes: usize,
    limits: Limits,
    metrics: Arc<BridgeMetrics>,
}

/// Binds `cfg.listen` and serves `POST /v1/frames/{device}` until `shutdown` is cancelled,
/// handing uploads to the forwarder through `tx`. `topic` is `kafka.topic` (for the
/// response), `max_bytes` the record budget, `limits` `[limits]`. Returns once the socket is
/// bound; the server runs in its own task.
///
/// Errors: [`crate::http::HttpError`] when the address cannot be bound.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    addr: SocketAddr,
    cfg: &UploadConfig,
    tx: mpsc::Sender<UploadRequest>,
    topic: &str,
    max_bytes: usize,
    limits: Limits,
    metrics: Arc<BridgeMetrics>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, crate::http::HttpError> {
    let state = Arc::new(Uploads {
        tx,
        token: cfg.token.as_ref().map(|t| t.expose().to_string()),
        max_body: cfg.max_body_bytes.get(),
        timeout: Duration::from_millis(cfg.timeout_ms.get()),
        permits: Arc::new(Semaphore::new(cfg.max_concurrent.get())),
        rate: cfg
            .per_device_per_sec
            .map(|r| Mutex::new(RateLimit::new(r.get()))),
        topic: topic.to_string(),
        max_bytes,
        limits,
        metrics,
    });
    let app = Router::new()
        .route("/v1/frames/{device}", post(upload))
        // The multipart extractor reads the body again from memory: let it take all of it.
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes.get()))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::http::HttpError { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, auth = cfg.token.is_some(), "accepting uploads on POST /v1/frames/{{device}}");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "upload server failed");
        }
    }))
}

/// `{"error": <what>, "reason": <name>}` with `status`.
fn error(status: StatusCode, reason: &str, what: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": what.into(), "reason": reason });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// The status of an upload refused for `reason`.
fn status_of(reason: RejectReason) -> StatusCode {
    match reason {
        RejectReason::NotAnImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        RejectReason::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RejectReason::BadFrame | RejectReason::OverBudget | RejectReason::DeliveryRejected => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guessed
/// token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(token: &str, headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let v = v.as_bytes();
    let scheme = b"bearer ";
    v.len() > scheme.len()
        && v[..scheme.len()].eq_ignore_ascii_case(scheme)
        && same_secret(&v[scheme.len()..], token.as_bytes())
}

async fn upload(
    State(s): State<Arc<Uploads>>,
    device: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    // A segment that does not percent-decode to UTF-8 is no device id either: keep it as
    // sent, so the check below refuses it with the same JSON answer and dead letter.
    let device = match device {
        Ok(Path(d)) => d,
        Err(_) => req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    let (outcome, response) = handle(&s, device, req).await;
    s.metrics.count_upload(outcome);
    response
}

async fn handle(s: &Uploads, device: String, req: Request) -> (UploadOutcome, Response) {
    let timeout_secs = s.timeout.as_millis().div_ceil(1000) as u64;
    let unavailable = |what: &str| {
        (
            UploadOutcome::Unavailable,
            with_retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", what),
                timeout_secs,
            ),
        )
    };
    if let Some(token) = &s.token {
        if !authorized(token, req.headers()) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (send Authorization: Bearer <bridge.http.token>)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return (UploadOutcome::Unauthorized, r);
        }
    }
    let too_large = |n: String| {
        (
            UploadOutcome::BodyTooLarge,
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "body of {n} bytes is over bridge.http.max_body_bytes ({})",
                    s.max_body
                ),
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > s.max_body as u64) {
        return too_large(n.to_string());
    }
    if let Some(rate) = &s.rate {
        let allowed = rate
            .lock()
            .map(|mut r| r.allow(&device, std::time::Instant::now()))
            .unwrap_or(true);
        if !allowed {
            return (
                UploadOutcome::RateLimited,
                with_retry_after(
                    error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "device {device:?} is over bridge.http.per_device_per_sec ({})",
                            rate.lock().map(|r| r.per_sec).unwrap_or_default()
                        ),
                    ),
                    1,
                ),
            );
        }
    }
    let deadline = Instant::now() + s.timeout;
    let Ok(Ok(_permit)) =
        tokio::time::timeout_at(deadline, s.permits.clone().acquire_owned()).await
    else {
        return unavailable(&format!(
            "all bridge.http.max_concurrent upload slots stayed busy for bridge.http.timeout_ms \
             ({} ms); try again",
            s.timeout.as_millis()
        ));
    };
    let (parts, body) = req.into_parts();
    let mut body_bytes = BytesMut::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return (
                UploadOutcome::Rejected,
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request body could not be read",
                ),
            );
        };
        if body_bytes.len() + chunk.len() > s.max_body {
            return too_large(format!("more than {}", s.max_body));
        }
        body_bytes.extend_from_slice(&chunk);
    }
    let body = body_bytes.freeze();
    let received_at = SystemTime::now();
    let path = parts.uri.path().to_string();
    let multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let payload = if multipart {
        match file_field(Request::from_parts(parts, Body::from(body.clone()))).await {
            Ok(p) => p,
            Err(detail) => {
                let rejection = Rejection {
                    reason: RejectReason::InvalidMultipart,
                    detail,
                    device: crate::config::valid_device_id(&device).then(|| device.clone()),
                };
                return rejected(s, rejection, path, body, deadline).await;
            }
        }
    } else {
        body
    };
    let (max_bytes, limits) = (s.max_bytes, s.limits);
    let checked = {
        let (device, payload) = (device.clone(), payload.clone());
        tokio::task::spawn_blocking(move || {
            prepare(&device, payload, max_bytes, &limits, received_at)
        })
        .await
    };
    let prepared = match checked {
        Ok(Ok(p)) => p,
        Ok(Err(rejection)) => return rejected(s, rejection, path, payload, deadline).await,
        Err(e) => {
            tracing::error!(error = %e, "upload check panicked");
            return unavailable("internal error while checking the image");
        }
    };
    let frame_id = prepared.frame_id;
    let (bytes, fitted, quality) = (
        prepared.image.len(),
        prepared.fitted,
        prepared.sniffed.quality.clone(),
    );
    let (reply, answer) = oneshot::channel();
    let request = UploadRequest {
        kind: UploadKind::Frame(prepared),
        reply,
    };
    if tokio::time::timeout_at(deadline, s.tx.send(request))
        .await
        .map_or(true, |r| r.is_err())
    {
        return unavailable("the bridge is busy or stopping; try again");
    }
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(UploadResult::Stored { position, seq })) => {
            let body = serde_json::json!({
                "frame_id": frame_id.to_string(),
                "topic": s.topic,
                "partition": position.map(|p| p.partition),
                "offset": position.map(|p| p.offset),
                "seq": seq,
                "bytes": bytes,
                "fitted": fitted,
                "quality": quality,
            });
            (
                UploadOutcome::Stored,
                (
                    StatusCode::CREATED,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response(),
            )
        }
        Ok(Ok(UploadResult::Refused { reason, detail })) => (
            UploadOutcome::Rejected,
            error(status_of(reason), reason.as_str(), detail),
        ),
        Ok(Err(_)) => unavailable("the bridge stopped before Kafka confirmed the frame; try again"),
        Err(_) => unavailable(&format!(
            "Kafka did not confirm the frame within bridge.http.timeout_ms ({} ms); it may \
             still be stored: send it again (the copy has the same frame_id {frame_id})",
            s.timeout.as_millis()
        )),
    }
}

/// Answers bad input: hands it to the forwarder to count and dead-letter, waits for that
/// (within the deadline), then says what was wrong.
async fn rejected(
    s: &Uploads,
    rejection: Rejection,
    path: String,
    payload: Bytes,
    deadline: Instant,
) -> (UploadOutcome, Response) {
    let response = error(
        status_of(rejection.reason),
        rejection.reason.as_str(),
        rejection.detail.clone(),
    );
    let (reply, answer) = oneshot::channel();
    let request = UploadRequest {
        kind: UploadKind::Rejected {
            rejection,
            path,
            payload,
        },
        reply,
    };
    if let Ok(Ok(())) = tokio::time::timeout_at(deadline, s.tx.send(request)).await {
        let _ = tokio::time::timeout_at(deadline, answer).await;
    }
    (UploadOutcome::Rejected, response)
}

/// The one `file` field of a multipart/form-data request. Other fields are ignored.
///
/// Errors: the text for the client: not multipart, malformed, no `file` field, two of them.
async fn file_field(req: Request) -> Result<Bytes, String> {
    let mut m = Multipart::from_request(req, &())
        .await
        .map_err(|e| format!("not a multipart/form-data body: {}", e.body_text()))?;
    let mut file = None;
    loop {
        let field = m
            .next_field()
            .await
            .map_err(|e| format!("malformed multipart body: {}", e.body_text()))?;
        let Some(field) = field else { break };
        if field.name() != Some("file") {
            continue;
        }
        if file.is_some() {
            return Err("more than one `file` field; send one image per upload".into());
        }
        file = Some(
            field
                .bytes()
                .await
                .map_err(|e| format!("malformed multipart body: {}", e.body_text()))?,
        );
    }
    file.ok_or_else(|| {
        "multipart body has no field named `file` (curl -F file=@photo.jpg)".to_string()
    })
}

/// Checks one upload of `device` and fits it under `max_bytes` (the whole-record budget)
/// when needed. Pure but for the CPU it takes: call it on a blocking thread.
///
/// Errors: the [`Rejection`] to answer and dead-letter: [`RejectReason::InvalidDeviceId`],
/// [`RejectReason::EmptyPayload`], [`RejectReason::NotAnImage`], [`RejectReason::BadFrame`]
/// (broken structure, or a decode failure while fitting), [`RejectReason::FrameTooLarge`]
/// (over `[limits]`), [`RejectReason::OverBudget`] (even the encoder's smallest rung is over
/// the budget).
pub(crate) fn prepare(
    device: &str,
    body: Bytes,
    max_bytes: usize,
    limits: &Limits,
    now: SystemTime,
) -> Result<Prepared, Rejection> {
    if !crate::config::valid_device_id(device) {
        return Err(Rejection {
            reason: RejectReason::InvalidDeviceId,
            detail: format!(
                "{device:?} is not a device id (1-128 of A-Z a-z 0-9 . _ -) in \
                 /v1/frames/{{device}}"
            ),
            device: None,
        });
    }
    let reject = |reason, detail: String| Rejection {
        reason,
        detail,
        device: Some(device.to_string()),
    };
    if body.is_empty() {
        return Err(reject(RejectReason::EmptyPayload, "empty body".into()));
    }
    let s = crate::inspect::image(&body, limits)
        .map_err(|r| reject(input::refusal_reason(&body, &r), r.to_string()))?;
    let image = body.slice(..s.len);
    let frame_id = input::raw_frame_id(device, &image);
    if image.len() + crate::record::max_overhead(device) <= max_bytes {
        return Ok(Prepared {
            device: device.to_string(),
            image,
            sniffed: Sniffed::of(&s),
            frame_id,
            received_at: now,
            fitted: false,
        });
    }
    let picture = match s.format {
        crate::inspect::Format::Jpeg => crate::frame::Image::Jpeg(crate::frame::JpegImage {
            width: s.width,
            height: s.height,
            data: image,
        }),
        crate::inspect::Format::Png => crate::frame::Image::Raw(
            crate::encode::codec::decode_png(&image, limits)
                .map_err(|e| reject(RejectReason::BadFrame, e.to_string()))?,
        ),
    };
    let budget = crate::config::types::Budget::new(max_bytes.min(u32::MAX as usize) as u32)
        .ok_or_else(|| {
            reject(
                RejectReason::OverBudget,
                format!("bridge.max_message_bytes ({max_bytes}) is no budget the encoder takes"),
            )
        })?;
    let encode = crate::config::EncodeConfig {
        codec: crate::config::Codec::Jpeg,
        max_message_bytes: budget,
        ..Default::default()
    };
    let mut encoder = Encoder::with_limits(device, encode, Default::default(), *limits)
        .map_err(|e| reject(RejectReason::BadFrame, e.to_string()))?;
    let e = encoder.encode(&picture).map_err(|e| {
        let reason = match &e {
            EncodeError::BudgetUnreachable { .. } => RejectReason::OverBudget,
            EncodeError::TooLarge(_) => RejectReason::FrameTooLarge,
            _ => RejectReason::BadFrame,
        };
        reject(
            reason,
            format!("cannot fit the image under the budget: {e}"),
        )
    })?;
    Ok(Prepared {
        device: device.to_string(),
        sniffed: Sniffed {
            content_type: e.content_type(),
            width: e.width,
            height: e.height,
            codec: e.codec.as_str(),
            quality: e.quality.to_string(),
        },
        image: e.payload,
        frame_id,
        received_at: now,
        fitted: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, q: u8) -> Bytes {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let px: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
            .encode(&px, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out.into()
    }

    #[test]
    fn rate_limit_counts_per_device_per_second() {
        let mut r = RateLimit::new(2);
        let t = std::time::Instant::now();
        assert!(r.allow("a", t));
        assert!(r.allow("a", t + Duration::from_millis(10)));
        assert!(!r.allow("a", t + Duration::from_millis(20)));
        assert!(
            r.allow("b", t + Duration::from_millis(20)),
            "another device"
        );
        assert!(
            r.allow("a", t + Duration::from_millis(1000)),
            "a new window"
        );
        assert!(r.allow("a", t + Duration::from_millis(1001)));
        assert!(!r.allow("a", t + Duration::from_millis(1002)));
    }

    #[test]
    fn the_rate_table_stays_bounded() {
        let mut r = RateLimit::new(1);
        let t = std::time::Instant::now();
        for i in 0..RATE_TABLE_MAX {
            assert!(r.allow(&format!("d{i}"), t));
        }
        assert!(r.allow("late", t + Duration::from_secs(2)));
        assert_eq!(r.windows.len(), 1, "idle devices forgotten");
    }

    #[test]
    fn bearer_tokens_compare_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized("s3cret", &h));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized("s3cret", &h));
        h.insert(header::AUTHORIZATION, "bearer s3cret".parse().unwrap());
        assert!(authorized("s3cret", &h));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret ",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            h.insert(header::AUTHORIZATION, wrong.parse().unwrap());
            assert!(!authorized("s3cret", &h), "{wrong:?}");
        }
    }

    #[test]
    fn a_small_upload_passes_untouched_and_a_large_one_is_fitted() {
        let limits = Limits::default();
        let now = SystemTime::now();
        let small = jpeg(64, 48, 80);
        let p = prepare("esp-1", small.clone(), 100_000, &limits, now).unwrap();
        assert!(!p.fitted);
        assert_eq!(p.image, small);
        assert_eq!(p.frame_id, input::raw_frame_id("esp-1", &small));
        let big = jpeg(640, 480, 95);
        assert!(big.len() > 100_000, "{}", big.len());
        let f = prepare("esp-1", big.clone(), 100_000, &limits, now).unwrap();
        assert!(f.fitted);
        assert!(f.image.len() + crate::record::max_overhead("esp-1") <= 100_000);
        assert_eq!(f.frame_id, input::raw_frame_id("esp-1", &big));
        let decoded = image::load_from_memory(&f.image).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (f.sniffed.width, f.sniffed.height)
        );
        assert_eq!(f.sniffed.codec, "jpeg");
        f.sniffed.quality.parse::<u8>().unwrap();
    }

    #[test]
    fn bad_uploads_are_refused_by_reason() {
        let limits = Limits::default();
        let now = SystemTime::now();
        let img = jpeg(32, 32, 80);
        let reason = |device: &str, body: Bytes| {
            prepare(device, body, 100_000, &limits, now)
                .unwrap_err()
                .reason
        };
        assert_eq!(reason("esp 1", img.clone()), RejectReason::InvalidDeviceId);
        assert_eq!(reason("", img.clone()), RejectReason::InvalidDeviceId);
        assert_eq!(reason("esp-1", Bytes::new()), RejectReason::EmptyPayload);
        assert_eq!(
            reason("esp-1", Bytes::from_static(b"hello")),
            RejectReason::NotAnImage
        );
        assert_eq!(
            reason("esp-1", img.slice(..img.len() / 2)),
            RejectReason::BadFrame
        );
        assert_eq!(
            status_of(RejectReason::NotAnImage),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status_of(RejectReason::BadFrame),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
