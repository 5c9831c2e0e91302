//! # edgecam
//!
//! An edge agent for cameras: capture frames (V4L2, MJPEG streams, image directories, a test
//! pattern), fit every frame under a byte budget at the best quality that fits, and publish
//! it to Kafka with delivery guarantees.
//!
//! The data path, one module each:
//! [`source`] → [`pipeline`] (bounded queue, overflow policy) → [`encode`] (transforms,
//! budget controller, codecs) → [`forward`] (per-record acks, live first, the on-disk
//! [`spool`]) → [`sink`] (Kafka producer or MQTT client, delivery reports).
//! [`config`] resolves and validates one TOML file per device before anything opens.

pub mod bench;
pub mod bridge;
pub mod config;
pub mod consume;
pub mod control;
pub mod demo;
pub mod encode;
pub mod forward;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod http;
pub mod inspect;
pub mod jpeg;
pub mod limits;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod process;
pub mod queue;
pub mod record;
pub mod reload;
pub mod repeats;
pub mod service;
pub mod sink;
pub mod source;
pub mod spool;
pub mod testdata;
pub mod throttle;
pub mod view;
