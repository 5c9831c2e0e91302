//! From one MQTT message to one Kafka record, or to the reason it cannot be one.
//!
//! Pure functions: no I/O, so every rule is unit-tested here.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

use super::config::{valid_device_id, InputConfig, InputFormat, TopicPattern};
use super::metrics::RejectReason;
use crate::inspect::{self, Refusal};
use crate::limits::Limits;
use crate::record::{header, FrameRecord, HeaderName, CONTENT_TYPE_RAW_ZSTD};

/// A record ready to produce: the one record type ([`FrameRecord`]); a dead letter whose
/// device is unknown has an empty key (no key in Kafka).
pub(crate) type Record = FrameRecord;

/// Why a message is rejected, with details for the log and the dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub reason: RejectReason,
    /// Human-readable detail.
    pub detail: String,
    /// The device id, when the topic gave a valid one.
    pub device: Option<String>,
}

/// One input with its parsed pattern.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub pattern: TopicPattern,
    pub format: InputFormat,
}

impl Input {
    pub fn new(cfg: &InputConfig, pattern: TopicPattern) -> Self {
        Input {
            pattern,
            format: cfg.format,
        }
    }
}

/// Headers an edgecam-format message must carry (as user properties, the content type as
/// the content-type property).
pub(crate) const REQUIRED: [&str; 5] = [
    header::DEVICE,
    header::SEQ,
    header::FRAME_ID,
    header::CAPTURED_AT,
    header::CONTENT_TYPE,
];

/// Per-bridge state the conversion needs: the next sequence number of each raw device.
#[derive(Debug, Default)]
pub(crate) struct RawSeqs(HashMap<String, u64>);

impl RawSeqs {
    /// The next sequence number of `device` (0 for a device not seen yet).
    pub(super) fn peek(&self, device: &str) -> u64 {
        self.0.get(device).copied().unwrap_or(0)
    }

    /// `seq` was used: the next one is `seq + 1`.
    pub(super) fn commit(&mut self, device: &str, seq: u64) {
        self.0.insert(device.to_string(), seq + 1);
    }
}

/// The reason for an image [`inspect`] refused: over a limit, not an image at all, or a
/// broken one.
pub(super) fn refusal_reason(payload: &[u8], r: &Refusal) -> RejectReason {
    match r {
        Refusal::TooLarge(_) => RejectReason::FrameTooLarge,
        _ if payload.starts_with(&[0xFF, 0xD8]) || payload.starts_with(&inspect::PNG_SIGNATURE) => {
            RejectReason::BadFrame
        }
        _ => RejectReason::NotAnImage,
    }
}

/// The namespace of [`raw_frame_id`]'s name-based UUIDs (a fixed, random UUID).
pub(crate) const RAW_FRAME_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x4f1b_2c3e_9d5a_4e27_8c61_0b7f_3a9e_d214);

/// `edgecam.frame_id` of a raw sensor frame: the UUIDv5 (RFC 9562, name-based, SHA-1) of
/// `device`, a NUL byte and the image bytes, in [`RAW_FRAME_NAMESPACE`]. The broker
/// redelivering a message (after the bridge was killed before its PUBACK) gives the copy the
/// same id, so consumers can drop it; two different frames never share one. A sensor that
/// sends byte-identical images twice gets one id for both, and they are duplicates too.
pub(crate) fn raw_frame_id(device: &str, image: &[u8]) -> uuid::Uuid {
    let mut name = Vec::with_capacity(device.len() + 1 + image.len());
    name.extend_from_slice(device.as_bytes());
    name.push(0);
    name.extend_from_slice(image);
    uuid::Uuid::new_v5(&RAW_FRAME_NAMESPACE, &name)
}

/// What the bridge writes about a raw image it forwards: the `content-type`,
/// `edgecam.width`/`height`, `edgecam.codec` and `edgecam.quality` header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sniffed {
    /// `image/jpeg` or `image/png`.
    pub content_type: &'static str,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// `jpeg` or `png`.
    pub codec: &'static str,
    /// JPEG quality 1–100 (estimated from the DQT, or the one the encoder chose), `unknown`,
    /// or `lossless` for PNG.
    pub quality: String,
}

impl Sniffed {
    /// The header values of an image as [`inspect`] found it.
    pub(crate) fn of(s: &inspect::Inspected) -> Sniffed {
        let (content_type, codec, quality) = match (s.format, s.quality) {
            (inspect::Format::Png, _) => ("image/png", "png", "lossless".to_string()),
            (inspect::Format::Jpeg, Some(q)) => ("image/jpeg", "jpeg", q.to_string()),
            (inspect::Format::Jpeg, None) => ("image/jpeg", "jpeg", "unknown".to_string()),
        };
        Sniffed {
            content_type,
            width: s.width,
            height: s.height,
            codec,
            quality,
        }
    }
}

/// The headers of a raw frame the bridge forwards (MQTT `raw` input or an HTTP upload), in
/// edgecam's order: device, `seq`, `frame_id`, `captured_at` (`now`, RFC 3339 µs), then
/// what [`Sniffed`] says.
pub(crate) fn raw_headers(
    device: &str,
    seq: u64,
    frame_id: uuid::Uuid,
    now: SystemTime,
    s: &Sniffed,
) -> Vec<(HeaderName, String)> {
    vec![
        (header::DEVICE.into(), device.to_string()),
        (header::SEQ.into(), seq.to_string()),
        (header::FRAME_ID.into(), frame_id.to_string()),
        (
            header::CAPTURED_AT.into(),
            humantime::format_rfc3339_micros(now).to_string(),
        ),
        (header::CONTENT_TYPE.into(), s.content_type.to_string()),
        (header::WIDTH.into(), s.width.to_string()),
        (header::HEIGHT.into(), s.height.to_string()),
        (header::CODEC.into(), s.codec.to_string()),
        (header::QUALITY.into(), s.quality.clone()),
    ]
}

/// Converts one message. `topic` is the raw topic bytes (rumqttc does not check UTF-8 of
/// topics), `max_bytes` the whole-record budget, `limits` the bounds on the image inside,
/// `now` the receive time.
///
/// The image is checked by [`inspect`] without decoding: a JPEG's markers, SOF dimensions
/// and EOI, a PNG's chunks and CRCs; for `zstd` frames, the stated dimensions and the
/// decompressed size the zstd frame header declares. A JPEG or PNG is forwarded without
/// any bytes after its EOI or IEND.
#[allow(clippy::too_many_arguments)]
pub(crate) fn convert(
    inputs: &[Input],
    topic: &[u8],
    properties: Option<&PublishProperties>,
    payload: &Bytes,
    max_bytes: usize,
    limits: &Limits,
    seqs: &mut RawSeqs,
    now: SystemTime,
) -> Result<Record, Rejection> {
    let reject = |reason, detail: String, device: Option<&str>| Rejection {
        reason,
        detail,
        device: device.map(str::to_string),
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return Err(reject(
            RejectReason::InvalidUtf8,
            "topic is not UTF-8".into(),
            None,
        ));
    };
    let Some((input, device)) = inputs
        .iter()
        .find_map(|i| i.pattern.device_of(topic).map(|d| (i, d)))
    else {
        return Err(reject(
            RejectReason::TopicMismatch,
            format!("topic {topic:?} matches no bridge.inputs pattern"),
            None,
        ));
    };
    if !valid_device_id(device) {
        return Err(reject(
            RejectReason::TopicMismatch,
            format!(
                "device level {device:?} of topic {topic:?} is not a device id (1-128 of \
                 A-Z a-z 0-9 . _ -)"
            ),
            None,
        ));
    }
    if payload.is_empty() {
        return Err(reject(
            RejectReason::EmptyPayload,
            "empty payload".into(),
            Some(device),
        ));
    }
    let record = match input.format {
        InputFormat::Edgecam => edgecam_record(device, properties, payload, limits)
            .map_err(|(reason, detail)| reject(reason, detail, Some(device)))?,
        InputFormat::Raw => {
            let s = inspect::image(payload, limits)
                .map_err(|r| reject(refusal_reason(payload, &r), r.to_string(), Some(device)))?;
            let seq = seqs.peek(device);
            let headers = raw_headers(
                device,
                seq,
                raw_frame_id(device, &payload[..s.len]),
                now,
                &Sniffed::of(&s),
            );
            let r = Record {
                key: device.to_string(),
                headers,
                value: payload.slice(..s.len),
            };
            if r.wire_size() <= max_bytes {
                seqs.commit(device, seq);
            }
            r
        }
    };
    let size = record.wire_size();
    if size > max_bytes {
        return Err(reject(
            RejectReason::OverBudget,
            format!("record of {size} bytes exceeds bridge.max_message_bytes ({max_bytes})"),
            Some(device),
        ));
    }
    Ok(record)
}

fn edgecam_record(
    device: &str,
    properties: Option<&PublishProperties>,
    payload: &Bytes,
    limits: &Limits,
) -> Result<Record, (RejectReason, String)> {
    let headers = properties
        .map(crate::mqtt::properties_to_headers)
        .unwrap_or_default();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|n| get(n).is_none())
        .collect();
    if !missing.is_empty() {
        return Err((
            RejectReason::MissingProperties,
            format!("missing MQTT 5 properties: {}", missing.join(", ")),
        ));
    }
    let d = get(header::DEVICE).unwrap_or_default();
    if d != device {
        return Err((
            RejectReason::InvalidProperties,
            format!("{} is {d:?} but the topic says {device:?}", header::DEVICE),
        ));
    }
    let seq = get(header::SEQ).unwrap_or_default();
    if seq.parse::<u64>().is_err() {
        return Err((
            RejectReason::InvalidProperties,
            format!("{} is {seq:?}, not an unsigned integer", header::SEQ),
        ));
    }
    let id = get(header::FRAME_ID).unwrap_or_default();
    if uuid::Uuid::parse_str(id).is_err() {
        return Err((
            RejectReason::InvalidProperties,
            format!("{} is {id:?}, not a UUID", header::FRAME_ID),
        ));
    }
    if let Some((k, _)) = headers.iter().find(|(k, _)| k.is_empty()) {
        return Err((
            RejectReason::InvalidProperties,
            format!("empty user property name {k:?}"),
        ));
    }
    let value = edgecam_value(&get, payload, limits)?;
    Ok(Record {
        key: device.to_string(),
        headers,
        value,
    })
}

/// Checks the image of an `edgecam`-format message against its content type and the
/// dimensions its properties state, and returns the bytes to forward.
fn edgecam_value<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    payload: &Bytes,
    limits: &Limits,
) -> Result<Bytes, (RejectReason, String)> {
    let invalid = |m: String| (RejectReason::InvalidProperties, m);
    let dimension = |name: &str| -> Result<Option<u32>, (RejectReason, String)> {
        get(name)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| invalid(format!("{name} is {v:?}, not a pixel count")))
            })
            .transpose()
    };
    let (width, height) = (dimension(header::WIDTH)?, dimension(header::HEIGHT)?);
    let content_type = get(header::CONTENT_TYPE).unwrap_or_default();
    let refused = |r: Refusal| (refusal_reason(payload, &r), r.to_string());
    let checked = match content_type {
        "image/jpeg" => inspect::jpeg(payload, limits).map_err(refused)?,
        "image/png" => inspect::png(payload, limits).map_err(refused)?,
        ct if ct == CONTENT_TYPE_RAW_ZSTD => {
            check_zstd(get, payload, width, height, limits)?;
            return Ok(payload.clone());
        }
        other => {
            return Err(invalid(format!(
                "content type {other:?} is not one edgecam publishes (image/jpeg, image/png, \
                 {CONTENT_TYPE_RAW_ZSTD})"
            )))
        }
    };
    for (name, stated, actual) in [
        (header::WIDTH, width, checked.width),
        (header::HEIGHT, height, checked.height),
    ] {
        if stated.is_some_and(|v| v != actual) {
            return Err(invalid(format!(
                "{name} is {} but the image is {}x{}",
                stated.unwrap_or_default(),
                checked.width,
                checked.height
            )));
        }
    }
    Ok(payload.slice(..checked.len))
}

/// A `zstd` frame: width, height and pixel format stated and within `limits`, and the zstd
/// frame header declaring exactly `width * height * channels` bytes, so a consumer's
/// decompression allocates what the limits allow and no more.
fn check_zstd<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    payload: &[u8],
    width: Option<u32>,
    height: Option<u32>,
    limits: &Limits,
) -> Result<(), (RejectReason, String)> {
    let invalid = |m: String| (RejectReason::InvalidProperties, m);
    let (Some(w), Some(h)) = (width, height) else {
        return Err(invalid(format!(
            "a zstd frame needs {} and {}",
            header::WIDTH,
            header::HEIGHT
        )));
    };
    let format = get(header::PIXEL_FORMAT)
        .and_then(crate::frame::PixelFormat::parse)
        .ok_or_else(|| invalid(format!("{} must be rgb8 or gray8", header::PIXEL_FORMAT)))?;
    limits
        .check_dimensions(w, h)
        .map_err(|e| (RejectReason::FrameTooLarge, e.to_string()))?;
    let expected = w as u64 * h as u64 * format.channels() as u64;
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n == expected => Ok(()),
        Ok(Some(n)) => Err((
            RejectReason::BadFrame,
            format!("zstd frame declares {n} bytes, {w}x{h} {format:?} needs {expected}"),
        )),
        _ => Err((
            RejectReason::BadFrame,
            "not a zstd frame with its content size".into(),
        )),
    }
}

/// The dead-letter record for a rejected message: key = device when known, headers
/// `edgecam.reason`, `edgecam.mqtt_topic`, `edgecam.detail`, `edgecam.payload_bytes`, then
/// the message's own properties; value = the payload, or empty when the record would not fit
/// `max_bytes` (then the properties are dropped too, and `edgecam.truncated = true`).
pub(crate) fn dead_letter(
    rejection: &Rejection,
    topic: &[u8],
    properties: Option<&PublishProperties>,
    payload: &Bytes,
    max_bytes: usize,
) -> Record {
    dead_letter_from(
        rejection,
        super::MQTT_TOPIC_HEADER,
        topic,
        properties,
        payload,
        max_bytes,
    )
}

/// [`dead_letter`] with the origin in header `origin_header` (`edgecam.mqtt_topic` for an
/// MQTT message, `edgecam.http_path` for an upload) instead of the MQTT topic's.
pub(crate) fn dead_letter_from(
    rejection: &Rejection,
    origin_header: &'static str,
    topic: &[u8],
    properties: Option<&PublishProperties>,
    payload: &Bytes,
    max_bytes: usize,
) -> Record {
    let mut topic_text = String::from_utf8_lossy(topic).into_owned();
    // Keep the header small enough for any budget.
    truncate_chars(&mut topic_text, 1024);
    let mut detail = rejection.detail.clone();
    truncate_chars(&mut detail, 1024);
    let base = vec![
        (
            HeaderName::Borrowed(super::REASON_HEADER),
            rejection.reason.as_str().to_string(),
        ),
        (HeaderName::Borrowed(origin_header), topic_text),
        (HeaderName::Borrowed(super::DETAIL_HEADER), detail),
        (
            HeaderName::Borrowed(super::PAYLOAD_BYTES_HEADER),
            payload.len().to_string(),
        ),
    ];
    let mut full = base.clone();
    if let Some(p) = properties {
        full.extend(crate::mqtt::properties_to_headers(p));
    }
    let r = Record {
        key: rejection.device.clone().unwrap_or_default(),
        headers: full,
        value: payload.clone(),
    };
    if r.wire_size() <= max_bytes {
        return r;
    }
    let mut headers = base;
    headers.push((
        HeaderName::Borrowed(super::TRUNCATED_HEADER),
        "true".to_string(),
    ));
    Record {
        key: rejection.device.clone().unwrap_or_default(),
        headers,
        value: Bytes::new(),
    }
}

fn truncate_chars(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<Input> {
        vec![
            Input {
                pattern: TopicPattern::parse("edgecam/{device}/frame").unwrap(),
                format: InputFormat::Edgecam,
            },
            Input {
                pattern: TopicPattern::parse("cameras/{device}/jpeg").unwrap(),
                format: InputFormat::Raw,
            },
        ]
    }

    fn jpeg(w: u32, h: u32, q: u8) -> Bytes {
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
            .encode(&px, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out.into()
    }

    fn png(w: u32, h: u32) -> Bytes {
        let px: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
        let img = crate::frame::RawImage::new(w, h, crate::frame::PixelFormat::Gray8, px).unwrap();
        crate::encode::codec::encode_png(&img).unwrap().into()
    }

    fn edgecam_props(device: &str, seq: u64) -> PublishProperties {
        let id = uuid::Uuid::now_v7().to_string();
        let seq = seq.to_string();
        crate::mqtt::headers_to_properties(
            [
                (header::DEVICE, device),
                (header::SEQ, seq.as_str()),
                (header::FRAME_ID, id.as_str()),
                (header::CAPTURED_AT, "2024-01-01T00:00:00.000000Z"),
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::WIDTH, "8"),
            ],
            None,
        )
    }

    fn conv(
        topic: &str,
        props: Option<&PublishProperties>,
        payload: &Bytes,
        seqs: &mut RawSeqs,
    ) -> Result<Record, Rejection> {
        convert(
            &inputs(),
            topic.as_bytes(),
            props,
            payload,
            100_000,
            &Limits::default(),
            seqs,
            SystemTime::now(),
        )
    }

    #[test]
    fn edgecam_properties_become_headers_one_to_one() {
        let p = edgecam_props("cam-1", 7);
        let payload = jpeg(8, 8, 80);
        let r = conv(
            "edgecam/cam-1/frame",
            Some(&p),
            &payload,
            &mut RawSeqs::default(),
        )
        .unwrap();
        assert_eq!(r.key, "cam-1");
        assert_eq!(r.value, payload);
        assert_eq!(r.headers, crate::mqtt::properties_to_headers(&p));
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        assert_eq!(r.header("edgecam.seq"), Some("7"));
    }

    #[test]
    fn a_redelivered_raw_frame_keeps_its_frame_id() {
        let img = jpeg(16, 9, 75);
        let first = conv("cameras/esp-1/jpeg", None, &img, &mut RawSeqs::default()).unwrap();
        // A new bridge (fresh sequence numbers) gets the same message from the broker again.
        let again = conv("cameras/esp-1/jpeg", None, &img, &mut RawSeqs::default()).unwrap();
        assert_eq!(
            first.header("edgecam.frame_id"),
            again.header("edgecam.frame_id")
        );
        let id = uuid::Uuid::parse_str(first.header("edgecam.frame_id").unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 5);
        // Another image, or the same image from another device: another id.
        let other = conv(
            "cameras/esp-1/jpeg",
            None,
            &jpeg(16, 9, 70),
            &mut RawSeqs::default(),
        );
        assert_ne!(
            other.unwrap().header("edgecam.frame_id"),
            first.header("edgecam.frame_id")
        );
        let elsewhere = conv("cameras/esp-2/jpeg", None, &img, &mut RawSeqs::default()).unwrap();
        assert_ne!(
            elsewhere.header("edgecam.frame_id"),
            first.header("edgecam.frame_id")
        );
        // Padding after the EOI does not change it.
        let mut padded = img.to_vec();
        padded.extend_from_slice(&[0; 16]);
        let p = conv(
            "cameras/esp-1/jpeg",
            None,
            &padded.into(),
            &mut RawSeqs::default(),
        )
        .unwrap();
        assert_eq!(
            p.header("edgecam.frame_id"),
            first.header("edgecam.frame_id")
        );
    }

    #[test]
    fn raw_payloads_get_sniffed_headers_and_bridge_sequence() {
        let mut seqs = RawSeqs::default();
        for i in 0..3u64 {
            let payload = jpeg(16 + i as u32, 9, 75);
            let r = conv("cameras/esp-1/jpeg", None, &payload, &mut seqs).unwrap();
            assert_eq!(r.header("edgecam.seq"), Some(i.to_string().as_str()));
            assert_eq!(r.header("edgecam.device"), Some("esp-1"));
            assert_eq!(r.header("content-type"), Some("image/jpeg"));
            assert_eq!(r.header("edgecam.codec"), Some("jpeg"));
            assert_eq!(
                r.header("edgecam.width"),
                Some((16 + i).to_string().as_str())
            );
            assert_eq!(r.header("edgecam.height"), Some("9"));
            let q: u8 = r.header("edgecam.quality").unwrap().parse().unwrap();
            assert!(q.abs_diff(75) <= 2, "{q}");
            humantime::parse_rfc3339(r.header("edgecam.captured_at").unwrap()).unwrap();
            uuid::Uuid::parse_str(r.header("edgecam.frame_id").unwrap()).unwrap();
        }
        // Another device counts from 0.
        let r = conv("cameras/esp-2/jpeg", None, &png(5, 4), &mut seqs).unwrap();
        assert_eq!(r.header("edgecam.seq"), Some("0"));
        assert_eq!(r.header("content-type"), Some("image/png"));
        assert_eq!(r.header("edgecam.codec"), Some("png"));
        assert_eq!(r.header("edgecam.quality"), Some("lossless"));
        assert_eq!(
            (r.header("edgecam.width"), r.header("edgecam.height")),
            (Some("5"), Some("4"))
        );
    }

    #[test]
    fn bad_messages_are_rejected_by_reason() {
        let mut seqs = RawSeqs::default();
        let reason = |r: Result<Record, Rejection>| r.unwrap_err().reason;
        let img = jpeg(8, 8, 80);
        assert_eq!(
            reason(conv("cameras/esp-1/jpeg", None, &Bytes::new(), &mut seqs)),
            RejectReason::EmptyPayload
        );
        assert_eq!(
            reason(conv(
                "cameras/esp-1/jpeg",
                None,
                &Bytes::from_static(b"hello"),
                &mut seqs
            )),
            RejectReason::NotAnImage
        );
        assert_eq!(
            reason(conv(
                "cameras/esp-1/jpeg",
                None,
                &img.slice(..20),
                &mut seqs
            )),
            RejectReason::BadFrame
        );
        assert_eq!(
            reason(conv("cameras//jpeg", None, &img, &mut seqs)),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(conv("cameras/bad device/jpeg", None, &img, &mut seqs)),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(conv("old/esp-1/jpeg", None, &img, &mut seqs)),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(conv("edgecam/cam-1/frame", None, &img, &mut seqs)),
            RejectReason::MissingProperties
        );
        let p = edgecam_props("other", 1);
        assert_eq!(
            reason(conv("edgecam/cam-1/frame", Some(&p), &img, &mut seqs)),
            RejectReason::InvalidProperties
        );
        let big_jpeg = noise_jpeg(400, 400);
        let mut p = edgecam_props("cam-1", 1);
        p.user_properties.retain(|(k, _)| k != header::WIDTH);
        assert_eq!(
            reason(conv("edgecam/cam-1/frame", Some(&p), &big_jpeg, &mut seqs)),
            RejectReason::OverBudget
        );
        let not_an_image = Bytes::from(vec![0x11u8; 1000]);
        assert_eq!(
            reason(conv(
                "edgecam/cam-1/frame",
                Some(&p),
                &not_an_image,
                &mut seqs
            )),
            RejectReason::NotAnImage
        );
        assert!(big_jpeg.len() > 100_000);
        assert_eq!(
            reason(conv("cameras/esp-1/jpeg", None, &big_jpeg, &mut seqs)),
            RejectReason::OverBudget
        );
        assert_eq!(
            reason(convert(
                &inputs(),
                b"cameras/\xff/jpeg",
                None,
                &img,
                100_000,
                &Limits::default(),
                &mut seqs,
                SystemTime::now()
            )),
            RejectReason::InvalidUtf8
        );
        // None of the rejected raw frames used up a sequence number.
        let r = conv("cameras/esp-1/jpeg", None, &img, &mut seqs).unwrap();
        assert_eq!(r.header("edgecam.seq"), Some("0"));
    }

    #[test]
    fn dead_letters_carry_the_reason_and_fit_the_budget() {
        let rej = Rejection {
            reason: RejectReason::OverBudget,
            detail: "too big".into(),
            device: Some("cam-1".into()),
        };
        let p = edgecam_props("cam-1", 1);
        let small = Bytes::from_static(b"abc");
        let d = dead_letter(&rej, b"edgecam/cam-1/frame", Some(&p), &small, 10_000);
        assert_eq!(d.header("edgecam.reason"), Some("over_budget"));
        assert_eq!(d.header("edgecam.mqtt_topic"), Some("edgecam/cam-1/frame"));
        assert_eq!(d.header("edgecam.payload_bytes"), Some("3"));
        assert_eq!(d.header("edgecam.seq"), Some("1"));
        assert_eq!(d.value, small);
        let big = Bytes::from(vec![1u8; 20_000]);
        let d = dead_letter(&rej, b"edgecam/cam-1/frame", Some(&p), &big, 10_000);
        assert!(d.value.is_empty());
        assert_eq!(d.header("edgecam.truncated"), Some("true"));
        assert_eq!(d.header("edgecam.payload_bytes"), Some("20000"));
        assert!(d.wire_size() <= 10_000);
    }

    fn noise_jpeg(w: u32, h: u32) -> Bytes {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let px: Vec<u8> = (0..w * h)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 100)
            .encode(&px, w, h, image::ExtendedColorType::L8)
            .unwrap();
        out.into()
    }

    /// Rewrites the SOF dimensions of a baseline JPEG.
    fn patch_sof(jpg: &Bytes, w: u16, h: u16) -> Bytes {
        let mut j = jpg.to_vec();
        let i = (2..j.len() - 1)
            .find(|&i| j[i] == 0xFF && j[i + 1] == 0xC0)
            .unwrap();
        j[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
        j[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
        j.into()
    }

    #[test]
    fn hostile_images_are_refused_by_reason_and_never_forwarded() {
        let mut seqs = RawSeqs::default();
        let reason = |r: Result<Record, Rejection>| r.unwrap_err().reason;
        let img = jpeg(16, 16, 80);
        for (w, h) in [(65_000, 65_000), (65_535, 65_535), (10_000, 10_000)] {
            let forged = patch_sof(&img, w, h);
            assert_eq!(
                reason(conv("cameras/esp-1/jpeg", None, &forged, &mut seqs)),
                RejectReason::FrameTooLarge,
                "{w}x{h}"
            );
        }
        for pct in [10, 50, 90] {
            let cut = img.slice(..img.len() * pct / 100);
            assert_eq!(
                reason(conv("cameras/esp-1/jpeg", None, &cut, &mut seqs)),
                RejectReason::BadFrame,
                "{pct}%"
            );
        }
        // A 74-byte PNG claiming 2^31-1 x 2^31-1, CRC fixed.
        let mut bomb = png(1, 1).to_vec();
        bomb[16..24].copy_from_slice(&[0x7F, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF]);
        let crc = crc32fast::hash(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            reason(conv("cameras/esp-1/jpeg", None, &bomb.into(), &mut seqs)),
            RejectReason::FrameTooLarge
        );
        // The same through the edgecam format, and a zstd frame lying about its size.
        let p = edgecam_props("cam-1", 1);
        assert_eq!(
            reason(conv(
                "edgecam/cam-1/frame",
                Some(&p),
                &patch_sof(&img, 65_000, 65_000),
                &mut seqs
            )),
            RejectReason::FrameTooLarge
        );
        let zstd_props = |w: &str| {
            let id = uuid::Uuid::now_v7().to_string();
            crate::mqtt::headers_to_properties(
                [
                    (header::DEVICE, "cam-1"),
                    (header::SEQ, "2"),
                    (header::FRAME_ID, id.as_str()),
                    (header::CAPTURED_AT, "2024-01-01T00:00:00.000000Z"),
                    (header::CONTENT_TYPE, CONTENT_TYPE_RAW_ZSTD),
                    (header::WIDTH, w),
                    (header::HEIGHT, "4"),
                    (header::PIXEL_FORMAT, "gray8"),
                ],
                None,
            )
        };
        let z: Bytes = zstd::bulk::compress(&[7u8; 32], 3).unwrap().into();
        assert!(conv("edgecam/cam-1/frame", Some(&zstd_props("8")), &z, &mut seqs).is_ok());
        assert_eq!(
            reason(conv(
                "edgecam/cam-1/frame",
                Some(&zstd_props("9")),
                &z,
                &mut seqs
            )),
            RejectReason::BadFrame
        );
        assert_eq!(
            reason(conv(
                "edgecam/cam-1/frame",
                Some(&zstd_props("60000")),
                &z,
                &mut seqs
            )),
            RejectReason::FrameTooLarge
        );
        // Width stated by the sensor must be the image's.
        let mut wrong = edgecam_props("cam-1", 3);
        wrong.user_properties.retain(|(k, _)| k != header::WIDTH);
        wrong
            .user_properties
            .push((header::WIDTH.into(), "9".into()));
        assert_eq!(
            reason(conv(
                "edgecam/cam-1/frame",
                Some(&wrong),
                &jpeg(8, 8, 80),
                &mut seqs
            )),
            RejectReason::InvalidProperties
        );
        // Padding after the EOI is not forwarded.
        let mut padded = img.to_vec();
        padded.extend_from_slice(&[0; 64]);
        let r = conv("cameras/esp-1/jpeg", None, &padded.into(), &mut seqs).unwrap();
        assert_eq!(r.value, img);
        assert_eq!(r.header("edgecam.seq"), Some("0"));
    }

    #[test]
    fn sniff_never_panics_on_prefixes() {
        let j = jpeg(8, 8, 50);
        let p = png(3, 3);
        for n in 0..j.len().min(700) {
            let _ = inspect::image(&j[..n], &Limits::default());
        }
        for n in 0..p.len() {
            let _ = inspect::image(&p[..n], &Limits::default());
        }
    }
}
