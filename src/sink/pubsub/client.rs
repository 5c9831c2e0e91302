//! Pub/Sub's REST API over hyper (HTTP/1.1; TLS by the system OpenSSL through native-tls),
//! with the access token each request needs and what each failure means.
//!
//! Tokens, by where the configuration points:
//! - the emulator (`PUBSUB_EMULATOR_HOST`): none;
//! - a service-account key: a self-signed JWT used directly as the bearer token, RS256 over
//!   `{"iss","sub": client_email, "aud": "https://pubsub.googleapis.com/", "iat", "exp"}`
//!   with the key id as `kid`, valid one hour and renewed 5 minutes before it ends. No
//!   round trip to Google's token endpoint: Google, "Using OAuth 2.0 for Server to Server
//!   Applications", addendum "Service account authorization without OAuth"
//!   (<https://developers.google.com/identity/protocols/oauth2/service-account#jwt-auth>);
//! - neither: the instance's default service account from the metadata server,
//!   `GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token`
//!   with `Metadata-Flavor: Google` (Google, "Authenticate workloads using service
//!   accounts", <https://cloud.google.com/compute/docs/access/authenticate-workloads>),
//!   kept until a minute before its `expires_in`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;

use crate::config::pubsub::ServiceAccountKey;
use crate::config::PubsubConfig;

/// The JWT audience for Pub/Sub (the service's URL with a trailing `/`).
const AUDIENCE: &str = "https://pubsub.googleapis.com/";
/// How long a self-signed JWT is valid (Google accepts at most one hour).
const JWT_LIFETIME: Duration = Duration::from_secs(3600);
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The metadata server's token URL.
const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// What a failed request means for the records it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request itself is wrong (400, 413 and other 4xx but those below): sending it
    /// again cannot help. The text is Pub/Sub's message.
    Rejected(String),
    /// 401 or 403: credentials or permissions, for the operator to fix; retried every
    /// second meanwhile.
    Auth(String),
    /// 404: the topic does not exist (deleted while running); retried with backoff.
    NotFound(String),
    /// 408, 429, 5xx, a timeout or a connection that failed: retried with backoff.
    Transient(String),
}

impl Failure {
    /// Classifies a response of `status` with Google's error `body`
    /// (`{"error":{"code","message","status"}}`).
    pub fn of(status: StatusCode, body: &[u8]) -> Failure {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        let text = format!("HTTP {}: {message}", status.as_u16());
        match status.as_u16() {
            401 | 403 => Failure::Auth(text),
            404 => Failure::NotFound(text),
            408 | 429 | 500..=599 => Failure::Transient(text),
            _ => Failure::Rejected(text),
        }
    }

    /// The text for logs and `last_error`.
    pub fn text(&self) -> &str {
        match self {
            Failure::Rejected(t)
            | Failure::Auth(t)
            | Failure::NotFound(t)
            | Failure::Transient(t) => t,
        }
    }
}

/// Where tokens come from.
enum Auth {
    /// The emulator: no token.
    None,
    /// A service-account key signs its own JWT.
    Key {
        email: String,
        key_id: Option<String>,
        key: openssl::pkey::PKey<openssl::pkey::Private>,
    },
    /// The GCE metadata server.
    Metadata,
}

/// A token and when to renew it.
#[derive(Clone)]
struct Token {
    bearer: String,
    renew_at: Instant,
}

/// A Pub/Sub REST client for one project's topic.
pub struct Client {
    http: HttpClient<hyper_tls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    auth: Auth,
    token: tokio::sync::Mutex<Option<Token>>,
    timeout: Duration,
}

/// Why the client cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// OpenSSL could not make a TLS context.
    #[error("TLS: {0}")]
    Tls(#[from] native_tls::Error),
    /// The key in `pubsub.credentials` no longer parses (it did at load time).
    #[error("pubsub.credentials: {0}")]
    Key(String),
}

impl Client {
    /// A client for `cfg`: its base URL (the emulator when `PUBSUB_EMULATOR_HOST` was set),
    /// its credentials, `request_timeout_ms` per request.
    ///
    /// Errors: [`ClientError`].
    pub fn new(cfg: &PubsubConfig) -> Result<Client, ClientError> {
        Client::with(
            cfg.base_url(),
            cfg.credentials
                .as_ref()
                .filter(|_| cfg.emulator_host.is_none()),
            cfg.emulator_host.is_some(),
            Duration::from_millis(cfg.request_timeout_ms.get() as u64),
        )
    }

    /// A client for `base` (e.g. `https://pubsub.googleapis.com`, no trailing `/`): no
    /// token when `emulator`, else one signed with the service-account key in `credentials`,
    /// else the metadata server's. Each request may take `timeout`.
    ///
    /// Errors: [`ClientError`].
    pub fn with(
        base: String,
        credentials: Option<&crate::config::Secret>,
        emulator: bool,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let tls = native_tls::TlsConnector::new()?;
        let https = hyper_tls::HttpsConnector::from((http, tls.into()));
        let http = HttpClient::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        let auth = match (emulator, credentials) {
            (true, _) => Auth::None,
            (false, Some(secret)) => {
                let sa = ServiceAccountKey::parse(secret.expose(), "pubsub.credentials")
                    .map_err(|e| ClientError::Key(e.to_string()))?;
                let key = openssl::pkey::PKey::private_key_from_pem(sa.private_key.as_bytes())
                    .map_err(|_| ClientError::Key("private_key is not a PEM private key".into()))?;
                Auth::Key {
                    email: sa.client_email,
                    key_id: sa.private_key_id,
                    key,
                }
            }
            (false, None) => Auth::Metadata,
        };
        Ok(Client {
            http,
            base,
            auth,
            token: tokio::sync::Mutex::new(None),
            timeout,
        })
    }

    /// The bearer token for the next request (`None` for the emulator), from the cache when
    /// it is not due for renewal.
    async fn bearer(&self) -> Result<Option<String>, Failure> {
        if matches!(self.auth, Auth::None) {
            return Ok(None);
        }
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(Some(t.bearer.clone()));
        }
        let fresh = match &self.auth {
            Auth::None => return Ok(None),
            Auth::Key { email, key_id, key } => Token {
                bearer: sign_jwt(email, key_id.as_deref(), key, SystemTime::now())
                    .map_err(|e| Failure::Auth(format!("signing the JWT: {e}")))?,
                renew_at: Instant::now() + JWT_LIFETIME - RENEW_BEFORE,
            },
            Auth::Metadata => self.metadata_token().await?,
        };
        *cached = Some(fresh.clone());
        Ok(Some(fresh.bearer))
    }

    /// A token from the GCE metadata server.
    async fn metadata_token(&self) -> Result<Token, Failure> {
        let req = Request::get(METADATA_TOKEN_URL)
            .header("Metadata-Flavor", "Google")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let (status, body) = self.send(req).await.map_err(|f| {
            Failure::Auth(format!(
                "no pubsub.credentials and the GCE metadata server cannot be reached ({}); set \
                 pubsub.credentials to a service-account key outside Google Cloud",
                f.text()
            ))
        })?;
        if !status.is_success() {
            return Err(Failure::Auth(format!(
                "the metadata server refused a token: {}",
                Failure::of(status, &body).text()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| Failure::Auth("the metadata server's token is not JSON".into()))?;
        let (Some(token), Some(secs)) = (v["access_token"].as_str(), v["expires_in"].as_u64())
        else {
            return Err(Failure::Auth(
                "the metadata server's answer has no access_token/expires_in".into(),
            ));
        };
        Ok(Token {
            bearer: token.to_string(),
            renew_at: Instant::now() + Duration::from_secs(secs.saturating_sub(60)),
        })
    }

    /// Sends `req` within the timeout; the status and the whole body.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Failure> {
        self.send_within(req, self.timeout).await
    }

    /// Sends `req` within `timeout`; the status and the whole body.
    async fn send_within(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| Failure::Transient(format!("connection: {}", error_chain(&e))))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::Transient(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transient(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// `method` on `{base}/v1/{path}` with a JSON `body`, authenticated, within the
    /// client's timeout.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        self.call_within(method, path, body, self.timeout).await
    }

    /// [`Client::call`] within `timeout`.
    async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}/v1/{path}", self.base))
            .header("content-type", "application/json");
        if let Some(token) = self.bearer().await? {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Failure::Rejected(format!("request: {e}")))?;
        self.send_within(req, timeout).await
    }

    /// Publishes a request `body` (`{"messages":[…]}`) to `topic` (`projects/P/topics/T`);
    /// the message ids Pub/Sub gave, one per message, in order.
    ///
    /// Errors: the [`Failure`] class of the answer; an answer without as many ids as
    /// `messages` is [`Failure::Transient`] (nothing is known to be stored, so all is sent
    /// again; a duplicate keeps its `edgecam.frame_id`).
    pub async fn publish(
        &self,
        topic: &str,
        body: String,
        messages: usize,
    ) -> Result<Vec<String>, Failure> {
        let (status, answer) = self
            .call(Method::POST, &format!("{topic}:publish"), Some(body))
            .await?;
        if !status.is_success() {
            return Err(Failure::of(status, &answer));
        }
        let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| {
                v["messageIds"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        if ids.len() != messages {
            return Err(Failure::Transient(format!(
                "the publish answer names {} message ids for {messages} messages",
                ids.len()
            )));
        }
        Ok(ids)
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A self-signed JWT for Pub/Sub, issued at `now` (see the module docs).
///
/// Errors: OpenSSL could not sign.
pub fn sign_jwt(
    email: &str,
    key_id: Option<&str>,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    now: SystemTime,
) -> Result<String, openssl::error::ErrorStack> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = serde_json::Value::String(kid.to_string());
    }
    let claims = serde_json::json!({
        "iss": email,
        "sub": email,
        "aud": AUDIENCE,
        "iat": iat,
        "exp": iat + JWT_LIFETIME.as_secs(),
    });
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)?;
    signer.update(signing_input.as_bytes())?;
    let signature = signer.sign_to_vec()?;
    Ok(format!("{signing_input}.{}", b64.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_falls_in_its_class() {
        let body = br#"{"error":{"code":400,"message":"Invalid resource name","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(
            Failure::of(StatusCode::BAD_REQUEST, body),
            Failure::Rejected("HTTP 400: Invalid resource name".into())
        );
        for (code, class) in [
            (401, "auth"),
            (403, "auth"),
            (404, "not found"),
            (408, "transient"),
            (413, "rejected"),
            (429, "transient"),
            (500, "transient"),
            (503, "transient"),
            (409, "rejected"),
        ] {
            let f = Failure::of(StatusCode::from_u16(code).unwrap(), b"plain text");
            let got = match f {
                Failure::Rejected(_) => "rejected",
                Failure::Auth(_) => "auth",
                Failure::NotFound(_) => "not found",
                Failure::Transient(_) => "transient",
            };
            assert_eq!(got, class, "{code}");
            assert!(f.text().contains("plain text"));
        }
    }

    #[test]
    fn the_jwt_is_rs256_over_googles_claims_and_verifies_with_the_public_key() {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let key = openssl::pkey::PKey::from_rsa(rsa).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let jwt = sign_jwt("cam@p.iam.gserviceaccount.com", Some("k1"), &key, now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "k1");
        let claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "cam@p.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], claims["iss"]);
        assert_eq!(claims["aud"], "https://pubsub.googleapis.com/");
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_003_600u64);
        let mut verifier =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        verifier
            .update(format!("{}.{}", parts[0], parts[1]).as_bytes())
            .unwrap();
        assert!(verifier.verify(&b64.decode(parts[2]).unwrap()).unwrap());
    }
}
