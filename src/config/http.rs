//! `[http]`: the agent's and the bridge's HTTP endpoints (see [`crate::http`]).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::types::ReadyMs;

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to serve `/metrics`, `/healthz`, `/readyz` (and, on the agent,
    /// `/snapshot.jpg` and `/stream.mjpeg`) on, e.g. `"127.0.0.1:9187"`. Unset (the
    /// default): no HTTP server. There is no default port because several `edgecam@`
    /// instances share one Pi: give each its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `/readyz` says ready while the last captured frame is at most this old and the sink
    /// delivered within this long (or has nothing waiting), milliseconds, 100–3,600,000.
    /// Default 5,000.
    #[serde(default = "default_ready_within_ms")]
    pub ready_within_ms: ReadyMs,
}

fn default_ready_within_ms() -> ReadyMs {
    ReadyMs::new(5_000).expect("in range")
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            ready_within_ms: default_ready_within_ms(),
        }
    }
}
