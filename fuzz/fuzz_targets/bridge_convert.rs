//! Fuzzes the bridge's conversion of one MQTT message (topic bytes, MQTT 5 publish
//! properties, payload) into a Kafka record or a dead letter: `bridge::input::convert` and
//! `dead_letter`, reached through [`edgecam::fuzzing::bridge_convert`] (cargo feature
//! `fuzzing`), which decodes the input and asserts the invariants: no record or dead letter
//! over `bridge.max_message_bytes`, record keys are valid device ids, the value is (a prefix
//! of) the payload, conversion is deterministic, raw inputs number their frames 0, 1, ….

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgecam::fuzzing::bridge_convert(data));
