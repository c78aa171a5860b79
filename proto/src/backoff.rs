//! Capped exponential delays: the one function every restart and retry delay comes from.

use std::time::Duration;

/// `min_ms × factor^attempt`, capped at `max_ms`. `attempt` 0 gives `min_ms`.
pub fn capped_exponential(min_ms: u64, factor: f64, attempt: u32, max_ms: u64) -> Duration {
    let factor = if factor.is_finite() && factor >= 1.0 {
        factor
    } else {
        1.0
    };
    let delay = (min_ms as f64) * factor.powi(attempt.min(64) as i32);
    let capped = if delay.is_finite() {
        delay.min(max_ms as f64)
    } else {
        max_ms as f64
    };
    Duration::from_millis(capped.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_values() {
        let delays: Vec<u64> = (0..6)
            .map(|attempt| capped_exponential(100, 2.0, attempt, 2_000).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000]);
        assert_eq!(
            capped_exponential(100, 2.0, 10_000, 5_000),
            Duration::from_millis(5_000)
        );
        assert_eq!(
            capped_exponential(100, f64::NAN, 3, 5_000),
            Duration::from_millis(100)
        );
    }
}
