//! `[http]`: the agent's and the bridge's HTTP endpoints, served by axum on the process's
//! tokio runtime.
//!
//! | path | what |
//! | --- | --- |
//! | `GET /metrics` | Prometheus counters, gauges and histograms ([`prom`]), OpenMetrics text |
//! | `GET /healthz` | `200 {"status":"ok"}` while the process and its runtime answer |
//! | `GET /readyz` | `200` when frames flow end to end, else `503`; the JSON body says why |
//! | `GET /snapshot.jpg` | the agent's latest published frame (JPEG or PNG), as published |
//! | `GET /stream.mjpeg` | the agent's frames as they are published, `multipart/x-mixed-replace` |
//!
//! The live view costs nothing while nobody watches beyond keeping the latest record (a
//! reference-counted buffer): every viewer waits on a [`tokio::sync::watch`] channel that
//! holds only the newest frame, so a slow viewer skips frames and never makes a queue grow
//! or the pipeline wait.

pub mod prom;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{unix_ms_now, Metrics};

/// The multipart boundary of `/stream.mjpeg`.
pub(crate) const BOUNDARY: &str = "edgecamframe";

/// The latest frame handed to the sink, for `/snapshot.jpg` and `/stream.mjpeg`.
#[derive(Debug, Clone)]
pub struct Preview {
    /// `edgecam.seq`.
    pub seq: u64,
    /// `image/jpeg`, `image/png` or the raw zstd type (not viewable).
    pub content_type: String,
    /// The record's value: the image exactly as published.
    pub image: Bytes,
}

/// Where the encoder puts each published frame; `None` until the first.
pub type PreviewTx = watch::Sender<Option<Arc<Preview>>>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("http.listen {addr}: {source}")]
pub struct HttpError {
    /// The address from `http.listen`.
    pub addr: SocketAddr,
    /// The OS error (address in use, permission denied for a port below 1024, …).
    #[source]
    pub source: std::io::Error,
}

/// What `/readyz` looks at, besides the metrics.
#[derive(Clone)]
enum Readiness {
    /// An agent: frames captured recently, and the sink delivering (or nothing waiting).
    Agent(Arc<Metrics>),
    /// Another service (the bridge), which says itself why it is not ready.
    Service(NotReady),
}

/// Why a service is not ready, given `http.ready_within_ms` and the time now (ms since the
/// Unix epoch): empty when it is.
pub type NotReady = Arc<dyn Fn(Duration, u64) -> Vec<String> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    registry: Arc<prometheus_client::registry::Registry>,
    readiness: Readiness,
    ready_within: Duration,
    preview: Option<watch::Receiver<Option<Arc<Preview>>>>,
}

/// Binds `addr` and serves the agent's endpoints until `shutdown` is cancelled. Returns once
/// the socket is bound; the server runs in its own task. `sink` (`kafka`, `mqtt`) labels
/// `frames_delivered_total`.
///
/// Errors: [`HttpError`] when the address cannot be bound.
pub async fn serve_agent(
    addr: SocketAddr,
    device: &str,
    sink: &'static str,
    ready_within: Duration,
    metrics: Arc<Metrics>,
    preview: watch::Receiver<Option<Arc<Preview>>>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HttpError> {
    let registry = prom::agent_registry(device, sink, metrics.clone());
    let state = AppState {
        registry: Arc::new(registry),
        readiness: Readiness::Agent(metrics),
        ready_within,
        preview: Some(preview),
    };
    let app = Router::new()
        .route("/snapshot.jpg", get(snapshot))
        .route("/stream.mjpeg", get(stream));
    serve(addr, app, state, shutdown).await
}

/// Binds `addr` and serves a service's `/metrics` (from `registry`), `/healthz` and
/// `/readyz` (from `not_ready`) until `shutdown` is cancelled: what the bridge serves. The
/// server knows nothing of the service; the service brings its collector and readiness.
///
/// Errors: [`HttpError`] when the address cannot be bound.
pub async fn serve_service(
    addr: SocketAddr,
    registry: prometheus_client::registry::Registry,
    not_ready: NotReady,
    ready_within: Duration,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HttpError> {
    let state = AppState {
        registry: Arc::new(registry),
        readiness: Readiness::Service(not_ready),
        ready_within,
        preview: None,
    };
    serve(addr, Router::new(), state, shutdown).await
}

async fn serve(
    addr: SocketAddr,
    app: Router<AppState>,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let app = app
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e.to_string() }),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(s): State<AppState>) -> Response {
    let reasons = match &s.readiness {
        Readiness::Agent(m) => agent_not_ready(m, s.ready_within, unix_ms_now()),
        Readiness::Service(f) => f(s.ready_within, unix_ms_now()),
    };
    if reasons.is_empty() {
        json(StatusCode::OK, serde_json::json!({ "ready": true }))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "ready": false, "reasons": reasons }),
        )
    }
}

/// Why an agent is not ready at `now_ms` (Unix ms): empty when it is. Ready means started,
/// a frame captured within `within`, and the sink either delivered within `within` or has
/// nothing waiting.
pub fn agent_not_ready(m: &Metrics, within: Duration, now_ms: u64) -> Vec<String> {
    let within_ms = within.as_millis() as u64;
    let mut reasons = Vec::new();
    if !m.ready.load(Relaxed) {
        reasons.push("starting: the source or the sink is not open yet".to_string());
        return reasons;
    }
    match m.last_capture_unix_ms.load(Relaxed) {
        0 => reasons.push("source: no frame captured yet".to_string()),
        t if now_ms.saturating_sub(t) > within_ms => reasons.push(format!(
            "source: no frame captured for {:.1} s",
            now_ms.saturating_sub(t) as f64 / 1000.0
        )),
        _ => {}
    }
    let waiting = m.unacked.load(Relaxed);
    let last = m.last_delivery_unix_ms.load(Relaxed);
    if waiting > 0 && now_ms.saturating_sub(last) > within_ms {
        reasons.push(if last == 0 {
            format!("sink: {waiting} records waiting, none delivered yet")
        } else {
            format!(
                "sink: {waiting} records waiting, nothing delivered for {:.1} s",
                now_ms.saturating_sub(last) as f64 / 1000.0
            )
        });
    }
    reasons
}

async fn snapshot(State(s): State<AppState>) -> Response {
    let latest = s.preview.as_ref().and_then(|p| p.borrow().clone());
    let Some(p) = latest else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "no frame published yet" }),
        );
    };
    if !viewable(&p.content_type) {
        return json(
            StatusCode::NOT_ACCEPTABLE,
            serde_json::json!({
                "error": format!("the latest frame is {}, which a browser cannot show; \
                                  use encode.codec = \"jpeg\" or \"png\"", p.content_type)
            }),
        );
    }
    let mut r = (
        [
            (header::CONTENT_TYPE, p.content_type.clone()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        p.image.clone(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&p.seq.to_string()) {
        r.headers_mut().insert("x-edgecam-seq", v);
    }
    r
}

fn viewable(content_type: &str) -> bool {
    content_type == "image/jpeg" || content_type == "image/png"
}

/// One part of `/stream.mjpeg`: boundary, headers (with one `Content-Length`), the image.
pub fn stream_part(p: &Preview) -> Bytes {
    multipart_part(
        &[
            ("Content-Type", p.content_type.clone()),
            ("Content-Length", p.image.len().to_string()),
            ("X-Edgecam-Seq", p.seq.to_string()),
        ],
        &p.image,
    )
}

/// One part of a `multipart/x-mixed-replace` stream with boundary [`BOUNDARY`]: the
/// boundary line, `headers` (control characters dropped, so each stays one line), a blank
/// line, `image`, CRLF. Shared by `/stream.mjpeg` and `edgecam view`.
pub(crate) fn multipart_part(headers: &[(&str, String)], image: &[u8]) -> Bytes {
    let mut head = format!("--{BOUNDARY}\r\n");
    for (k, v) in headers {
        let v: String = v.chars().filter(|c| !c.is_control()).collect();
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut part = Vec::with_capacity(head.len() + image.len() + 2);
    part.extend_from_slice(head.as_bytes());
    part.extend_from_slice(image);
    part.extend_from_slice(b"\r\n");
    Bytes::from(part)
}

async fn stream(State(s): State<AppState>) -> Response {
    let Some(mut rx) = s.preview.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The frame shown on arrival, then each newer one; frames published while this viewer
    // was still sending an older one are skipped (the channel holds only the newest).
    rx.mark_changed();
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            let latest = rx.borrow_and_update().clone();
            if let Some(p) = latest.filter(|p| viewable(&p.content_type)) {
                return Some((Ok::<_, std::convert::Infallible>(stream_part(&p)), rx));
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_is_missing() {
        let m = Metrics::default();
        let s = Duration::from_secs(5);
        assert_eq!(agent_not_ready(&m, s, 100_000).len(), 1, "starting");
        m.ready.store(true, Relaxed);
        let r = agent_not_ready(&m, s, 100_000);
        assert_eq!(r, vec!["source: no frame captured yet".to_string()]);
        m.last_capture_unix_ms.store(99_000, Relaxed);
        assert!(agent_not_ready(&m, s, 100_000).is_empty());
        // Records wait and nothing was delivered for 6 s.
        m.unacked.store(12, Relaxed);
        m.last_delivery_unix_ms.store(94_000, Relaxed);
        let r = agent_not_ready(&m, s, 100_000);
        assert_eq!(
            r,
            vec!["sink: 12 records waiting, nothing delivered for 6.0 s".to_string()]
        );
        // Nothing waiting: an idle sink is ready.
        m.unacked.store(0, Relaxed);
        assert!(agent_not_ready(&m, s, 100_000).is_empty());
        // The camera stalled.
        let r = agent_not_ready(&m, s, 110_000);
        assert_eq!(r, vec!["source: no frame captured for 11.0 s".to_string()]);
    }

    #[test]
    fn a_stream_part_has_one_content_length() {
        let p = Preview {
            seq: 7,
            content_type: "image/jpeg".into(),
            image: Bytes::from_static(b"\xff\xd8jpeg\xff\xd9"),
        };
        let part = stream_part(&p);
        let text = String::from_utf8_lossy(&part);
        assert!(text.starts_with("--edgecamframe\r\nContent-Type: image/jpeg\r\n"));
        assert_eq!(text.matches("Content-Length: 8\r\n").count(), 1);
        assert!(part.ends_with(b"\xff\xd8jpeg\xff\xd9\r\n"));
    }
}
