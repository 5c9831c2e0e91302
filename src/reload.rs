//! SIGHUP: re-read the config file and apply what can change while running.
//!
//! Live: `source.fps` (sources that pace themselves, and a child process, whose surplus
//! frames the pipeline discards), everything in `[transform]`, and
//! everything in `[encode]` (codec, qualities, ladder shape, and the budget up to the
//! producer's `message.max.bytes`). Anything else (device id, source kind/path, Kafka
//! settings, queues) is reported as needing a restart and left as it is. A new file that does
//! not validate is rejected as a whole; the agent keeps running on the old settings.

use crate::config::Config;

/// What a reload will do.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadPlan {
    /// The running config with the live changes applied (what the pipeline switches to).
    pub apply: Config,
    /// Dotted keys that change live, e.g. `encode.quality_max`.
    pub live: Vec<String>,
    /// Dotted keys that changed in the file but need a restart to take effect.
    pub needs_restart: Vec<String>,
}

/// Dotted keys whose values differ between `a` and `b` (tables are walked; arrays and
/// scalars compared whole).
fn diff(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (ta.get(k), tb.get(k)) {
                    (Some(x), Some(y)) => diff(&key, x, y, out),
                    _ => out.push(key),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// Compares the running config with a freshly loaded one. `producer_max_bytes` is the
/// producer's `message.max.bytes`, fixed when it was created: a larger budget needs a
/// restart.
pub fn plan(running: &Config, new: &Config, producer_max_bytes: u32) -> ReloadPlan {
    let mut changed = Vec::new();
    let (a, b) = (
        toml::Value::try_from(running).expect("config serialises"),
        toml::Value::try_from(new).expect("config serialises"),
    );
    diff("", &a, &b, &mut changed);
    let mut apply = running.clone();
    let mut live = Vec::new();
    let mut needs_restart = Vec::new();
    let budget_ok = new.encode.max_message_bytes.get() <= producer_max_bytes;
    for key in changed {
        let is_live = key == "source.fps"
            || key.starts_with("transform.")
            || (key.starts_with("encode.") && (key != "encode.max_message_bytes" || budget_ok));
        if is_live {
            live.push(key);
        } else {
            needs_restart.push(key);
        }
    }
    if live.iter().any(|k| k == "source.fps") {
        apply.source.fps = new.source.fps;
    }
    if live.iter().any(|k| k.starts_with("transform.")) {
        apply.transform = new.transform.clone();
    }
    if live.iter().any(|k| k.starts_with("encode.")) {
        let budget = apply.encode.max_message_bytes;
        apply.encode = new.encode.clone();
        if !budget_ok {
            apply.encode.max_message_bytes = budget;
        }
    }
    ReloadPlan {
        apply,
        live,
        needs_restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        crate::config::load_str(
            &format!(
                "[device]\nid = \"cam\"\n[source]\nkind = \"synthetic\"\nfps = 5\n[kafka]\nbootstrap_servers = \"h:9092\"\n{extra}"
            ),
            std::iter::empty(),
        )
        .unwrap()
    }

    #[test]
    fn nothing_changed_means_nothing_to_do() {
        let p = plan(&cfg(""), &cfg(""), 1_000_000);
        assert!(p.live.is_empty() && p.needs_restart.is_empty());
        assert_eq!(p.apply, cfg(""));
    }

    #[test]
    fn fps_quality_and_transforms_apply_live() {
        let new = cfg("[encode]\nquality_max = 60\n[transform]\nrotate_degrees = 180\n");
        let mut new = new;
        new.source.fps = 20.0;
        let p = plan(&cfg(""), &new, 1_000_000);
        assert_eq!(
            p.live,
            vec![
                "encode.quality_max",
                "source.fps",
                "transform.rotate_degrees"
            ]
        );
        assert!(p.needs_restart.is_empty());
        assert_eq!(p.apply, new);
    }

    #[test]
    fn other_keys_need_a_restart_and_are_not_applied() {
        let running = cfg("");
        let mut new = cfg("[pipeline]\nqueue_frames = 3\n");
        new.kafka_mut().unwrap().topic = crate::config::TopicName::new("other").unwrap();
        new.encode.quality_min = crate::config::Quality::new(30).unwrap();
        let p = plan(&running, &new, 1_000_000);
        assert_eq!(
            p.needs_restart,
            vec!["kafka.topic", "pipeline.queue_frames"]
        );
        assert_eq!(p.live, vec!["encode.quality_min"]);
        assert_eq!(p.apply.sink, running.sink);
        assert_eq!(p.apply.pipeline, running.pipeline);
        assert_eq!(p.apply.encode.quality_min, 30);
    }

    #[test]
    fn budget_above_the_producer_limit_needs_a_restart() {
        let running = cfg("");
        let new = cfg("[encode]\nmax_message_bytes = 2000000\nquality_max = 70\n");
        let p = plan(&running, &new, 1_000_000);
        assert_eq!(p.needs_restart, vec!["encode.max_message_bytes"]);
        assert_eq!(
            p.apply.encode.max_message_bytes,
            running.encode.max_message_bytes
        );
        assert_eq!(p.apply.encode.quality_max, 70);
        let smaller = cfg("[encode]\nmax_message_bytes = 500000\n");
        let p = plan(&running, &smaller, 1_000_000);
        assert_eq!(p.live, vec!["encode.max_message_bytes"]);
        assert_eq!(p.apply.encode.max_message_bytes.get(), 500_000);
    }
}
