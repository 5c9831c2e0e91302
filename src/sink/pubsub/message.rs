//! A record as a Pub/Sub message, Pub/Sub's limits checked by edgecam itself, and publish
//! request bodies. Pure: no I/O.
//!
//! The mapping: the message's `data` is the record's value (the image), its `attributes` are
//! the record's headers (`edgecam.device`, `edgecam.seq`, …, the same names and values as
//! Kafka headers), its `orderingKey` is the record's key (the device id), so one device's
//! frames arrive in order on a subscription with message ordering on.
//!
//! The limits are Pub/Sub's production ones ("Quotas and limits", resource limits,
//! <https://cloud.google.com/pubsub/quotas#resource_limits>); the emulator enforces none of
//! them, so edgecam checks each before it publishes, and a message over one is refused
//! (counted, never sent) instead of failing a whole request in production.

use base64::Engine;

use crate::record::FrameRecord;

/// Attributes per message, at most.
pub const MAX_ATTRIBUTES: usize = 100;
/// Bytes of one attribute key, at most.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
/// Bytes of one attribute value, at most.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
/// Bytes of an ordering key, at most (1 KB).
pub const MAX_ORDERING_KEY_BYTES: usize = 1024;
/// Bytes of a message's data, at most (10 MB).
pub const MAX_DATA_BYTES: usize = 10_000_000;
/// Bytes of one publish request, at most (10 MB, the JSON body as sent).
pub const MAX_REQUEST_BYTES: usize = 10_000_000;
/// Messages in one publish request, at most.
pub const MAX_REQUEST_MESSAGES: usize = 1000;

/// Why a record cannot be a Pub/Sub message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// More than [`MAX_ATTRIBUTES`] headers.
    #[error("{0} attributes, Pub/Sub allows at most {MAX_ATTRIBUTES}")]
    TooManyAttributes(usize),
    /// An attribute key over [`MAX_ATTRIBUTE_KEY_BYTES`], or empty, or starting with `goog`
    /// (reserved by Google).
    #[error("attribute key {0:?} is empty, longer than {MAX_ATTRIBUTE_KEY_BYTES} bytes or starts with \"goog\"")]
    AttributeKey(String),
    /// An attribute value over [`MAX_ATTRIBUTE_VALUE_BYTES`].
    #[error("attribute {key:?} has a {bytes}-byte value, Pub/Sub allows at most {MAX_ATTRIBUTE_VALUE_BYTES}")]
    AttributeValue {
        /// The attribute.
        key: String,
        /// Its value's length.
        bytes: usize,
    },
    /// An ordering key over [`MAX_ORDERING_KEY_BYTES`].
    #[error("a {0}-byte ordering key, Pub/Sub allows at most {MAX_ORDERING_KEY_BYTES}")]
    OrderingKey(usize),
    /// Data over [`MAX_DATA_BYTES`], or a message whose JSON alone would not fit one request.
    #[error("{0} bytes of data do not fit one publish request (10 MB, base64 in JSON)")]
    TooLarge(usize),
    /// Neither data nor attributes: Pub/Sub refuses an empty message.
    #[error("an empty message (no data, no attributes)")]
    Empty,
}

/// A record made into one publish request entry: its JSON (`{"data":…,"attributes":…,
/// "orderingKey":…}`), ready to be joined into a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The entry's JSON text.
    pub json: String,
    /// The ordering key (the record's key).
    pub ordering_key: String,
}

/// The message's size as Pub/Sub counts it (and bills it): data, attribute keys and values,
/// and the ordering key, in bytes. At most the record's Kafka wire size (which adds framing
/// to the same bytes), so a record fitted under the budget fits as a message too.
pub fn pubsub_size(record: &FrameRecord) -> usize {
    record.value.len()
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + record.key.len()
}

/// Checks `record` against Pub/Sub's limits and makes its request entry.
///
/// Errors: the first limit it breaks ([`LimitError`]).
pub fn to_message(record: &FrameRecord) -> Result<Message, LimitError> {
    if record.headers.len() > MAX_ATTRIBUTES {
        return Err(LimitError::TooManyAttributes(record.headers.len()));
    }
    for (k, v) in &record.headers {
        if k.is_empty()
            || k.len() > MAX_ATTRIBUTE_KEY_BYTES
            || k.to_ascii_lowercase().starts_with("goog")
        {
            return Err(LimitError::AttributeKey(k.to_string()));
        }
        if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(LimitError::AttributeValue {
                key: k.to_string(),
                bytes: v.len(),
            });
        }
    }
    if record.key.len() > MAX_ORDERING_KEY_BYTES {
        return Err(LimitError::OrderingKey(record.key.len()));
    }
    if record.value.len() > MAX_DATA_BYTES {
        return Err(LimitError::TooLarge(record.value.len()));
    }
    if record.value.is_empty() && record.headers.is_empty() {
        return Err(LimitError::Empty);
    }
    let attributes: serde_json::Map<String, serde_json::Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    let mut entry = serde_json::json!({
        "data": base64::engine::general_purpose::STANDARD.encode(&record.value),
        "attributes": attributes,
    });
    if !record.key.is_empty() {
        entry["orderingKey"] = serde_json::Value::String(record.key.clone());
    }
    let json = entry.to_string();
    if json.len() + REQUEST_FRAME_BYTES > MAX_REQUEST_BYTES {
        return Err(LimitError::TooLarge(record.value.len()));
    }
    Ok(Message {
        json,
        ordering_key: record.key.clone(),
    })
}

/// Bytes of `{"messages":[` and `]}` around the entries.
const REQUEST_FRAME_BYTES: usize = r#"{"messages":[]}"#.len();

/// How many of `messages` (from the front) go into the next request: as many as fit
/// [`MAX_REQUEST_MESSAGES`], [`MAX_REQUEST_BYTES`] and `max`, all with the first one's
/// ordering key (Pub/Sub requires one key per request). At least 1 when `messages` is not
/// empty (each entry alone fits: [`to_message`] checked).
pub fn batch_len<'a>(messages: impl IntoIterator<Item = &'a Message>, max: usize) -> usize {
    let mut n = 0;
    let mut bytes = REQUEST_FRAME_BYTES;
    let mut key: Option<&str> = None;
    for m in messages {
        let add = m.json.len() + usize::from(n > 0);
        if n == max.clamp(1, MAX_REQUEST_MESSAGES)
            || (n > 0 && bytes + add > MAX_REQUEST_BYTES)
            || key.is_some_and(|k| k != m.ordering_key)
        {
            break;
        }
        key.get_or_insert(&m.ordering_key);
        bytes += add;
        n += 1;
    }
    n
}

/// The publish request body for `messages`: `{"messages":[…]}`.
pub fn request_body<'a>(messages: impl IntoIterator<Item = &'a Message>) -> String {
    let mut body = String::from(r#"{"messages":["#);
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&m.json);
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, headers: Vec<(String, String)>, value: Vec<u8>) -> FrameRecord {
        FrameRecord {
            key: key.to_string(),
            headers: headers.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            value: value.into(),
        }
    }

    fn fine() -> FrameRecord {
        record(
            "porch",
            vec![
                ("edgecam.seq".into(), "7".into()),
                ("edgecam.device".into(), "porch".into()),
            ],
            vec![0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9],
        )
    }

    #[test]
    fn a_record_becomes_data_attributes_and_ordering_key() {
        let m = to_message(&fine()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&m.json).unwrap();
        assert_eq!(v["orderingKey"], "porch");
        assert_eq!(v["attributes"]["edgecam.seq"], "7");
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, vec![0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9]);
        let body: serde_json::Value = serde_json::from_str(&request_body([&m, &m])).unwrap();
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn every_limit_refuses_exactly_past_its_bound() {
        let attrs = |n: usize| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
        };
        assert!(to_message(&record("d", attrs(100), vec![1])).is_ok());
        assert_eq!(
            to_message(&record("d", attrs(101), vec![1])),
            Err(LimitError::TooManyAttributes(101))
        );
        let key256 = "k".repeat(256);
        let key257 = "k".repeat(257);
        assert!(to_message(&record("d", vec![(key256, "v".into())], vec![1])).is_ok());
        assert!(matches!(
            to_message(&record("d", vec![(key257, "v".into())], vec![1])),
            Err(LimitError::AttributeKey(_))
        ));
        assert!(matches!(
            to_message(&record("d", vec![("googfoo".into(), "v".into())], vec![1])),
            Err(LimitError::AttributeKey(_))
        ));
        assert!(to_message(&record("d", vec![("a".into(), "v".repeat(1024))], vec![1])).is_ok());
        assert_eq!(
            to_message(&record("d", vec![("a".into(), "v".repeat(1025))], vec![1])),
            Err(LimitError::AttributeValue {
                key: "a".into(),
                bytes: 1025
            })
        );
        assert!(to_message(&record(&"o".repeat(1024), vec![], vec![1])).is_ok());
        assert_eq!(
            to_message(&record(&"o".repeat(1025), vec![], vec![1])),
            Err(LimitError::OrderingKey(1025))
        );
        assert_eq!(
            to_message(&record("d", vec![], vec![])),
            Err(LimitError::Empty)
        );
        // 7.4 MB of data fits one request as base64; 7.6 MB does not.
        assert!(to_message(&record("d", vec![], vec![7; 7_400_000])).is_ok());
        assert_eq!(
            to_message(&record("d", vec![], vec![7; 7_600_000])),
            Err(LimitError::TooLarge(7_600_000))
        );
        assert_eq!(
            to_message(&record("d", vec![], vec![7; 10_000_001])),
            Err(LimitError::TooLarge(10_000_001))
        );
    }

    #[test]
    fn a_batch_keeps_one_ordering_key_and_the_request_limits() {
        let m = |key: &str, len: usize| to_message(&record(key, vec![], vec![1; len])).unwrap();
        let same: Vec<Message> = (0..1500).map(|_| m("a", 10)).collect();
        assert_eq!(batch_len(&same, usize::MAX), MAX_REQUEST_MESSAGES);
        assert_eq!(batch_len(&same, 32), 32);
        assert_eq!(batch_len(&same, 0), 1);
        let mixed = [m("a", 10), m("a", 10), m("b", 10), m("a", 10)];
        assert_eq!(batch_len(&mixed, 100), 2);
        // Three 3 MB images (4 MB as base64) never share a request of 10 MB.
        let big: Vec<Message> = (0..3).map(|_| m("a", 3_000_000)).collect();
        assert_eq!(batch_len(&big, 100), 2);
        assert!(request_body(&big[..2]).len() <= MAX_REQUEST_BYTES);
        assert_eq!(batch_len(&big[2..], 100), 1);
        assert_eq!(batch_len(std::iter::empty(), 100), 0);
    }
}
