//! How large a numeric option may be: beyond it, start-up stops with an error naming the option,
//! rather than a panic when the value is used or a silent truncation.

use super::{ConfigError, Kind, OptionSpec};
use serde_json::Value;

/// The largest value a numeric option may take: ports fit in 16 bits, durations stay within a
/// year so that adding them to a clock cannot overflow, counts within 32 bits.
pub(super) fn upper_bound(name: &str) -> f64 {
    const YEAR_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
    if name.ends_with("_PORT") {
        f64::from(u16::MAX)
    } else if name.ends_with("_SECONDS") {
        YEAR_SECONDS
    } else if name.ends_with("_MS") {
        YEAR_SECONDS * 1000.0
    } else if name.ends_with("_FACTOR") {
        1000.0
    } else if name.ends_with("_BYTES") {
        // A byte budget is held in memory (per stream, per collected container): 1 GiB.
        f64::from(1u32 << 30)
    } else {
        f64::from(u32::MAX)
    }
}

/// A numeric option above its [`upper_bound`] is an error naming it, never a panic later nor a
/// silent truncation.
pub(super) fn check_bound(option: &OptionSpec, value: &Value) -> Result<(), ConfigError> {
    if !matches!(option.kind, Kind::UInt | Kind::Float) {
        return Ok(());
    }
    let bound = upper_bound(option.name);
    match value.as_f64() {
        Some(number) if number <= bound => Ok(()),
        _ => Err(ConfigError(format!(
            "invalid value for {}: at most {bound} allowed",
            option.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_env as load;

    /// Numbers beyond what an option can hold are errors naming it.
    #[test]
    fn oversized_numbers_are_errors() {
        for (name, value) in [
            ("SMTP_PORT", "99999999999999999999"),
            ("SMTP_PORT", "65536"),
            ("HARD_EXECUTION_TIMEOUT_SECONDS", "1e30"),
            ("HARD_EXECUTION_TIMEOUT_SECONDS", "18446744073709551615"),
            ("EXPONENTIAL_BACKOFF_FACTOR", "1e30"),
            ("EXECUTION_OUTPUT_MAX_BYTES", "1073741825"),
            (
                "WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS",
                "18446744073709551615",
            ),
        ] {
            let error = load(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
        assert_eq!(
            load(&[("SMTP_PORT", "65535")]).unwrap().uint("SMTP_PORT"),
            65535
        );
    }
}
