//! `EDGECAM_…` environment overrides.
//!
//! `EDGECAM_<TABLE>__<KEY>=value` overrides `<table>.<key>`: one `_` after the prefix, `__`
//! between levels, names case-insensitive, e.g. `EDGECAM_KAFKA__BOOTSTRAP_SERVERS=b:9092`,
//! `EDGECAM_ENCODE__MAX_MESSAGE_BYTES=500000`, `EDGECAM_MQTT__PASSWORD__FILE=/etc/edgecam/p`
//! (a secret reference). Values are text and are converted strictly to the key's type: `5`
//! for an integer, `true`/`false` for a boolean, `["a", "b"]` (TOML) for a list; a string
//! key keeps its text as is (`EDGECAM_DEVICE__ID=0042` stays `"0042"`).
//!
//! `EDGECAM_KAFKA__PROPERTIES__<NAME>=value` sets one librdkafka property; underscores in
//! `<NAME>` become dots (librdkafka names have none): `EDGECAM_KAFKA__PROPERTIES__LINGER_MS=5`
//! sets `"linger.ms" = "5"`.
//!
//! Other `EDGECAM_…` variables without `__` (e.g. `EDGECAM_LOG`) are not overrides and are
//! ignored, except `EDGECAM_<TABLE>_<KEY>` with a single `_`, which is reported as a typo.

use std::collections::HashMap;

use super::error::ConfigError;

pub(crate) use super::naming::var_name;
pub use super::naming::ENV_PREFIX;

/// The `EDGECAM_…` variables that are overrides.
#[derive(Debug, Default)]
pub(crate) struct EnvOverrides {
    /// Variable name → value, for the `config` crate's `Environment` source (every override
    /// but librdkafka properties, whose dotted names it would split into tables).
    pub layered: HashMap<String, String>,
    /// Dotted key (lower case, as the `config` crate makes it) → the variable that set it.
    pub by_key: HashMap<String, String>,
    /// `kafka.properties` entries: (librdkafka name, value, variable).
    pub properties: Vec<(String, String, String)>,
    /// `CREDENTIALS_DIRECTORY`, where systemd's `LoadCredential=` puts credentials.
    pub credentials_directory: Option<String>,
    /// `PATH`, to find `source.command`'s program.
    pub path: Option<String>,
    /// `PUBSUB_EMULATOR_HOST`: Pub/Sub requests go to the emulator at this `host:port`.
    pub pubsub_emulator_host: Option<String>,
    /// `STATE_DIRECTORY`, `XDG_STATE_HOME`, `HOME`: where the spool goes by default.
    pub state_dirs: super::spool::StateDirs,
}

impl EnvOverrides {
    /// Sorts the overrides out of `env`. `top_level` are the known table names, to tell a
    /// typo (`EDGECAM_KAFKA_TOPIC`) from an unrelated variable (`EDGECAM_LOG`).
    pub fn collect(
        env: impl IntoIterator<Item = (String, String)>,
        top_level: &[&str],
    ) -> Result<Self, ConfigError> {
        let prefix = format!("{ENV_PREFIX}_");
        let mut out = EnvOverrides::default();
        let mut vars: Vec<(String, String)> = env.into_iter().collect();
        vars.sort();
        for (name, value) in vars {
            match name.as_str() {
                "CREDENTIALS_DIRECTORY" => out.credentials_directory = Some(value.clone()),
                "PATH" => out.path = Some(value.clone()),
                "PUBSUB_EMULATOR_HOST" => out.pubsub_emulator_host = Some(value.clone()),
                "STATE_DIRECTORY" => out.state_dirs.state_directory = Some(value.clone()),
                "XDG_STATE_HOME" => out.state_dirs.xdg_state_home = Some(value.clone()),
                "HOME" => out.state_dirs.home = Some(value.clone()),
                _ => {}
            }
            let Some(rest) = name
                .get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(&prefix))
                .map(|_| name[prefix.len()..].to_lowercase())
            else {
                continue;
            };
            if !rest.contains("__") {
                if let Some(table) = top_level
                    .iter()
                    .find(|t| rest.starts_with(&format!("{t}_")))
                {
                    let field = &rest[table.len() + 1..];
                    return Err(ConfigError::Env {
                        message: format!(
                            "levels are separated by `__`: did you mean {}?",
                            var_name(&format!("{table}.{field}"))
                        ),
                        name,
                    });
                }
                continue;
            }
            let parts: Vec<&str> = rest.split("__").collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(ConfigError::Env {
                    name,
                    message: "has an empty level (`___` or a trailing `__`)".into(),
                });
            }
            if parts.len() >= 2 && parts[0] == "kafka" && parts[1] == "properties" {
                let names = &parts[2..];
                if names.is_empty() {
                    return Err(ConfigError::Env {
                        name,
                        message: "kafka.properties is a table: set one property per variable, \
                                  e.g. EDGECAM_KAFKA__PROPERTIES__LINGER_MS=5 for \"linger.ms\""
                            .into(),
                    });
                }
                let property = names.join(".").replace('_', ".");
                out.properties.push((property, value, name));
                continue;
            }
            out.by_key.insert(parts.join("."), name.clone());
            out.layered.insert(name, value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sorts_overrides() {
        let e = EnvOverrides::collect(
            vars(&[
                ("EDGECAM_ENCODE__QUALITY_MAX", "50"),
                ("EDGECAM_KAFKA__PROPERTIES__LINGER_MS", "5"),
                ("EDGECAM_LOG", "debug"),
                ("CREDENTIALS_DIRECTORY", "/run/credentials/x"),
                ("HOME", "/root"),
            ]),
            &["encode", "kafka"],
        )
        .unwrap();
        assert_eq!(
            e.by_key["encode.quality_max"],
            "EDGECAM_ENCODE__QUALITY_MAX"
        );
        assert_eq!(e.layered.len(), 1);
        assert_eq!(e.properties[0].0, "linger.ms");
        assert_eq!(
            e.credentials_directory.as_deref(),
            Some("/run/credentials/x")
        );
    }

    #[test]
    fn single_underscore_is_a_typo() {
        let e = EnvOverrides::collect(vars(&[("EDGECAM_KAFKA_TOPIC", "x")]), &["kafka"]);
        assert!(
            matches!(e, Err(ConfigError::Env { ref message, .. }) if message.contains("EDGECAM_KAFKA__TOPIC"))
        );
    }
}
