//! The pace of a live log stream. Reading a container's output as fast as Docker can send it
//! doubles the engine's work for a chatty container (it writes the log, then reads it back for
//! us), and every other container on that host starts slower for it. Nobody reads megabytes a
//! second on a screen, so a live stream is read at most `bytes_per_second`; one that stays
//! behind (the container writes faster than that for [`SKIP_AFTER_WINDOWS`] seconds in a row) is
//! reopened at its last lines, with a marker saying so. The stored output is read apart, whole.

use std::time::Duration;

/// Length of a pacing window.
const WINDOW: Duration = Duration::from_secs(1);
/// Windows in a row spent over budget before the stream skips ahead.
pub(crate) const SKIP_AFTER_WINDOWS: u32 = 5;
/// Lines a stream that skipped ahead starts again with.
pub(crate) const SKIP_TAIL_LINES: u32 = 100;

/// What the reader does after a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read on.
    Go,
    /// The window's budget is spent: wait this long before reading on.
    Wait(Duration),
    /// Behind for too long: reopen the stream at its last lines.
    SkipAhead,
}

/// Bytes read in the current window, and how many windows in a row ran over budget.
#[derive(Debug)]
pub(crate) struct Pace {
    bytes_per_second: u64,
    window_started: tokio::time::Instant,
    window_bytes: u64,
    windows_over: u32,
}

impl Pace {
    /// 0 = unpaced.
    pub(crate) fn new(bytes_per_second: u64, now: tokio::time::Instant) -> Pace {
        Pace {
            bytes_per_second,
            window_started: now,
            window_bytes: 0,
            windows_over: 0,
        }
    }

    /// Counts `bytes` just read at `now`.
    pub(crate) fn after(&mut self, bytes: usize, now: tokio::time::Instant) -> Step {
        if self.bytes_per_second == 0 {
            return Step::Go;
        }
        let elapsed = now.saturating_duration_since(self.window_started);
        if elapsed >= WINDOW {
            // A window that ended under budget breaks the run of late ones.
            if elapsed >= WINDOW * 2 || self.window_bytes < self.bytes_per_second {
                self.windows_over = 0;
            }
            self.window_started = now;
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
        if self.window_bytes < self.bytes_per_second {
            return Step::Go;
        }
        self.windows_over += 1;
        if self.windows_over >= SKIP_AFTER_WINDOWS {
            self.windows_over = 0;
            self.window_bytes = 0;
            self.window_started = now;
            return Step::SkipAhead;
        }
        let rest = WINDOW.saturating_sub(now.saturating_duration_since(self.window_started));
        // The next window starts when this wait ends.
        self.window_started = now + rest;
        self.window_bytes = 0;
        Step::Wait(rest)
    }
}

/// The line a watcher sees where the stream skipped ahead.
pub(crate) fn skip_marker(bytes_per_second: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "\n[fastlane: live output skipped ahead: this container writes more than {bytes_per_second} \
         bytes a second (LIVE_OUTPUT_MAX_BYTES_PER_SECOND); its stored output keeps everything]\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: tokio::time::Instant, millis: u64) -> tokio::time::Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn unpaced_always_goes() {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(0, start);
        for i in 0..100 {
            assert_eq!(pace.after(1 << 20, at(start, i)), Step::Go);
        }
    }

    #[test]
    fn a_spent_budget_waits_for_the_window_to_end() {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(1000, start);
        assert_eq!(pace.after(400, at(start, 100)), Step::Go);
        assert_eq!(pace.after(400, at(start, 200)), Step::Go);
        assert_eq!(
            pace.after(400, at(start, 300)),
            Step::Wait(Duration::from_millis(700))
        );
        // The next window begins after the wait.
        assert_eq!(pace.after(400, at(start, 1000)), Step::Go);
    }

    #[test]
    fn behind_for_several_windows_skips_ahead_then_starts_over() {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(1000, start);
        let mut now = 0;
        for window in 1..SKIP_AFTER_WINDOWS {
            match pace.after(5000, at(start, now)) {
                Step::Wait(wait) => now += wait.as_millis() as u64,
                other => panic!("window {window}: {other:?}"),
            }
        }
        assert_eq!(pace.after(5000, at(start, now)), Step::SkipAhead);
        assert_eq!(pace.after(10, at(start, now + 1)), Step::Go);
    }

    #[test]
    fn a_quiet_window_breaks_the_run_of_late_ones() {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(1000, start);
        let mut now = 0;
        for _ in 0..SKIP_AFTER_WINDOWS * 3 {
            match pace.after(5000, at(start, now)) {
                Step::Wait(wait) => now += wait.as_millis() as u64,
                other => panic!("{other:?}"),
            }
            // Then a window spent mostly idle.
            now += 2500;
            assert_eq!(pace.after(10, at(start, now)), Step::Go);
        }
    }
}
