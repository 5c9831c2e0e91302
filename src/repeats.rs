//! Keeps a failure that repeats from flooding the journal: a broker that refuses the TLS
//! handshake or the password does so on every reconnect, for as long as it takes someone to
//! fix the configuration. The first occurrence of each distinct message is logged in full,
//! identical repeats quietly, with a reminder (and how many were quiet) every `remind`.
//! Used for MQTT connection errors ([`crate::mqtt::ErrorLog`]) and librdkafka's error and log
//! callbacks ([`crate::sink::kafka`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most this many distinct messages are remembered; beyond it, all are forgotten (and
/// the next of each is logged in full again).
const MAX_MESSAGES: usize = 64;

/// Which occurrences of repeating messages to log in full. Pure: the caller passes the time.
#[derive(Debug)]
pub struct Repeats {
    remind: Duration,
    /// message → (when it was last logged in full, quiet repeats since).
    seen: HashMap<String, (Instant, u64)>,
}

impl Repeats {
    /// Logs each distinct message in full at most once per `remind`.
    pub fn new(remind: Duration) -> Repeats {
        Repeats {
            remind,
            seen: HashMap::new(),
        }
    }

    /// `message` happened at `now`. `Some(quiet)` when it is to be logged in full (`quiet`:
    /// repeats not logged in full since the last time), `None` when it is a quiet repeat.
    pub fn note(&mut self, message: &str, now: Instant) -> Option<u64> {
        if let Some((last, quiet)) = self.seen.get_mut(message) {
            if now.duration_since(*last) < self.remind {
                *quiet += 1;
                return None;
            }
            let n = *quiet;
            *last = now;
            *quiet = 0;
            return Some(n);
        }
        if self.seen.len() >= MAX_MESSAGES {
            self.seen.clear();
        }
        self.seen.insert(message.to_string(), (now, 0));
        Some(0)
    }

    /// Forgets everything: the next occurrence of any message is logged in full (after the
    /// connection worked again, say).
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_full_repeats_quiet_then_a_reminder_with_the_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Repeats::new(Duration::from_secs(300));
        assert_eq!(r.note("certificate verify failed", t0), Some(0));
        assert_eq!(r.note("certificate verify failed", t0 + s), None);
        assert_eq!(r.note("certificate verify failed", t0 + 2 * s), None);
        // A different message is its own.
        assert_eq!(r.note("all brokers down", t0 + 2 * s), Some(0));
        assert_eq!(
            r.note("certificate verify failed", t0 + Duration::from_secs(301)),
            Some(2)
        );
        assert_eq!(
            r.note("certificate verify failed", t0 + Duration::from_secs(302)),
            None
        );
        r.clear();
        assert_eq!(
            r.note("certificate verify failed", t0 + Duration::from_secs(303)),
            Some(0)
        );
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut r = Repeats::new(Duration::from_secs(300));
        for i in 0..1_000 {
            assert_eq!(r.note(&format!("error {i}"), t0), Some(0));
            assert!(r.seen.len() <= MAX_MESSAGES);
        }
    }
}
