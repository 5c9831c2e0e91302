//! The bridge's configuration lives with every other table in [`crate::config`]; these are
//! the names the bridge uses.

pub use crate::config::bridge::{
    BridgeConfig, BridgeFile, InputConfig, InputFormat, TopicPattern, DEVICE_PLACEHOLDER,
};
pub use crate::config::valid_device_id;
