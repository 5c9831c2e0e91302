//! The progress line of `edgecam consume` (pure, so it is tested without a terminal).

use std::time::Duration;

/// What the progress line shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Files written.
    pub frames: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Records whose file already existed (not written again).
    pub duplicates: u64,
    /// Records skipped (not an image, broken, over the limits).
    pub skipped: u64,
}

/// One line, e.g. `1234 frames, 12.3 MB, 29.8 frames/s` followed by `, 2 duplicates` and
/// `, 1 skipped` when those are not zero. `elapsed` is the time since the first partition
/// assignment (the group join is not part of the rate); zero gives `0.0 frames/s`.
pub fn line(p: &Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        p.frames as f64 / secs
    } else {
        0.0
    };
    let mut s = format!(
        "{} frame{}, {}, {rate:.1} frames/s",
        p.frames,
        if p.frames == 1 { "" } else { "s" },
        human_bytes(p.bytes)
    );
    if p.duplicates > 0 {
        s.push_str(&format!(", {} duplicates", p.duplicates));
    }
    if p.skipped > 0 {
        s.push_str(&format!(", {} skipped", p.skipped));
    }
    s
}

/// Bytes with decimal (SI) units and one decimal: `999 B`, `1.0 kB`, `12.3 MB`, `4.6 GB`,
/// `1.2 TB`.
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    for unit in ["kB", "MB", "GB", "TB", "PB"] {
        v /= 1000.0;
        // Below 999.95 it prints as at most 999.9; otherwise the next unit.
        if v < 999.95 {
            return format!("{v:.1} {unit}");
        }
    }
    format!("{:.1} EB", v / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_bytes_with_si_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(12_345_678), "12.3 MB");
        // Rounds up into the next unit instead of printing "1000.0 kB".
        assert_eq!(human_bytes(999_960), "1.0 MB");
        assert_eq!(human_bytes(4_600_000_000), "4.6 GB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }

    #[test]
    fn line_shows_frames_bytes_and_rate() {
        let p = Progress {
            frames: 300,
            bytes: 12_345_678,
            ..Default::default()
        };
        assert_eq!(
            line(&p, Duration::from_secs(10)),
            "300 frames, 12.3 MB, 30.0 frames/s"
        );
        // Not the frame count shown as bytes, not the bytes as a rate.
        let p = Progress {
            frames: 1,
            bytes: 45_000,
            duplicates: 2,
            skipped: 3,
        };
        assert_eq!(
            line(&p, Duration::from_millis(500)),
            "1 frame, 45.0 kB, 2.0 frames/s, 2 duplicates, 3 skipped"
        );
        assert_eq!(
            line(&Progress::default(), Duration::ZERO),
            "0 frames, 0 B, 0.0 frames/s"
        );
    }
}
