//! Fuzzes the strict configuration loader: the input, as (lossy) UTF-8 TOML text, goes to
//! [`edgecam::config::load_str`] and [`edgecam::config::load_bridge_str`] with no
//! environment overrides. Hostile text must only ever give a [`ConfigError`], never a panic,
//! and the error must print (its `Display` quotes the line and column of the bad key).
//!
//! The loader also checks files and `$PATH` for what the text names; that is part of what is
//! fuzzed.
//!
//! [`ConfigError`]: edgecam::config::ConfigError

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match edgecam::config::load_str(&text, std::iter::empty()) {
        Ok(cfg) => drop(format!("{cfg:?}")),
        Err(e) => drop(e.to_string()),
    }
    match edgecam::config::load_bridge_str(&text, std::iter::empty()) {
        Ok(cfg) => drop(format!("{cfg:?}")),
        Err(e) => drop(e.to_string()),
    }
});
