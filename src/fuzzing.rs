//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, never part of a
//! normal build). Each one decodes fuzzer bytes into the inputs of `pub(crate)` code that a
//! fuzz crate cannot reach, runs it, and asserts the invariants that code promises. Not an
//! API: it exists so that the fuzz targets test the real functions, not copies of them.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

use crate::bridge::input::{convert, dead_letter, Input, RawSeqs};
use crate::config::{valid_device_id, InputFormat, TopicPattern};
use crate::limits::Limits;
use crate::record::header;

/// The bridge the messages go through: one `raw` and one `edgecam` input, the smallest
/// record budget the loader allows and small image limits, so that fuzzed messages of a
/// few KiB reach the over-budget and too-large paths as well as the accepted ones.
const BRIDGE_TOML: &str = r#"
[bridge]
id = "fuzz"
max_message_bytes = 4096

[[bridge.inputs]]
topic = "cams/{device}/jpeg"
format = "raw"

[[bridge.inputs]]
topic = "edgecam/{device}/frames"
format = "edgecam"

[limits]
max_pixels = 65536
max_side_px = 1024
max_frame_bytes = 2048

[mqtt]
host = "localhost"

[kafka]
bootstrap_servers = "localhost:9092"
"#;

/// [`BRIDGE_TOML`] as the bridge builds it at start-up (`bridge::run`).
struct Bridge {
    inputs: Vec<Input>,
    raw: TopicPattern,
    max_bytes: usize,
    limits: Limits,
}

fn bridge() -> &'static Bridge {
    static BRIDGE: OnceLock<Bridge> = OnceLock::new();
    BRIDGE.get_or_init(|| {
        let cfg = crate::config::load_bridge_str(BRIDGE_TOML, std::iter::empty())
            .expect("the fuzz bridge configuration is valid");
        let patterns = cfg.patterns();
        let raw = cfg
            .bridge
            .inputs
            .iter()
            .zip(&patterns)
            .find(|(i, _)| i.format == InputFormat::Raw)
            .map(|(_, p)| p.clone())
            .expect("one raw input");
        Bridge {
            inputs: cfg
                .bridge
                .inputs
                .iter()
                .zip(patterns)
                .map(|(i, p)| Input::new(i, p))
                .collect(),
            raw,
            max_bytes: cfg.bridge.max_message_bytes.get() as usize,
            limits: cfg.limits.limits(),
        }
    })
}

/// Fuzzer bytes read front to back as length-prefixed fields; reads past the end give
/// zeros and empty fields, so every input decodes to some message.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    /// One length byte, then up to that many bytes.
    fn field(&mut self) -> &'a [u8] {
        let n = (self.byte() as usize).min(self.0.len());
        let (f, rest) = self.0.split_at(n);
        self.0 = rest;
        f
    }

    /// A field as text: MQTT 5 strings are UTF-8 (rumqttc refuses others), so lossy
    /// conversion gives exactly the strings a broker can deliver.
    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }
}

/// One MQTT message through the bridge's conversion (`bridge::input::convert`), and on
/// rejection through `dead_letter`, twice in a row with the same per-device sequence state.
///
/// Input layout: a flags byte (bit 0: MQTT 5 properties present, bit 1: with a content
/// type, bits 4–7: the topic field is repeated 1–16 times), the topic as a field (a length
/// byte, then the bytes), then when bit 0 is set the content type as a field (bit 1) and a
/// count byte (mod 16) of user properties, each a name field and a value field; the rest is
/// the payload.
///
/// Panics (the fuzzer's finding) when a record or dead letter is larger than
/// `bridge.max_message_bytes`, a record's key is not a valid device id, its value is not a
/// prefix of the payload, the two conversions disagree, or a raw input's second record does
/// not carry the next `edgecam.seq`.
pub fn bridge_convert(data: &[u8]) {
    let b = bridge();
    let mut f = Fields(data);
    let flags = f.byte();
    // MQTT topics run to 64 KiB; repeating the field reaches the dead letter's 1 KiB cut.
    let topic = f.field().repeat(1 + (flags >> 4) as usize);
    let topic = topic.as_slice();
    let properties = (flags & 1 != 0).then(|| {
        let content_type = (flags & 2 != 0).then(|| f.text());
        let n = f.byte() % 16;
        let user_properties = (0..n).map(|_| (f.text(), f.text())).collect();
        PublishProperties {
            content_type,
            user_properties,
            ..Default::default()
        }
    });
    let payload = Bytes::copy_from_slice(f.0);
    let is_raw = std::str::from_utf8(topic)
        .ok()
        .and_then(|t| b.raw.device_of(t))
        .is_some();

    let mut seqs = RawSeqs::default();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut first = None;
    for round in 0..2u64 {
        let result = convert(
            &b.inputs,
            topic,
            properties.as_ref(),
            &payload,
            b.max_bytes,
            &b.limits,
            &mut seqs,
            now,
        );
        match &result {
            Ok(r) => {
                assert!(
                    r.wire_size() <= b.max_bytes,
                    "record of {} bytes",
                    r.wire_size()
                );
                let key = r.key.as_str();
                assert!(valid_device_id(key), "record key {key:?}");
                assert!(payload.starts_with(&r.value), "value is not the payload");
                if is_raw {
                    assert_eq!(r.header(header::SEQ), Some(round.to_string().as_str()));
                }
            }
            Err(rej) => {
                if let Some(d) = &rej.device {
                    assert!(valid_device_id(d), "rejection device {d:?}");
                }
                let dl = dead_letter(rej, topic, properties.as_ref(), &payload, b.max_bytes);
                assert!(
                    dl.wire_size() <= b.max_bytes,
                    "dead letter of {} bytes",
                    dl.wire_size()
                );
                assert_eq!(dl.kafka_key(), rej.device.as_ref().map(|d| d.as_bytes()));
            }
        }
        let outcome = result.map(|r| r.value).map_err(|r| r.reason);
        match &first {
            None => first = Some(outcome),
            Some(o) => assert_eq!(o, &outcome, "the same message converted differently"),
        }
    }
}
