//! How a dotted key is named as an environment override, shared by the loader ([`super::env`],
//! [`super::de`]) and its error messages ([`super::error`]).

/// Environment variables with this prefix override file keys; `__` separates levels.
pub const ENV_PREFIX: &str = "EDGECAM";

/// The override variable for a dotted key: `encode.quality_max` → `EDGECAM_ENCODE__QUALITY_MAX`.
pub(crate) fn var_name(key: &str) -> String {
    format!("{ENV_PREFIX}_{}", key.replace('.', "__").to_uppercase())
}
