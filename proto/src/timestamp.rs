//! Naive-UTC timestamps with microsecond precision, rendered like Python's `isoformat()`.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_micros() as i64)
    }

    /// From whole seconds since the epoch.
    pub fn from_unix_seconds(seconds: i64) -> Self {
        Timestamp(seconds.saturating_mul(1_000_000))
    }

    /// From milliseconds since the epoch.
    pub fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis.saturating_mul(1_000))
    }

    /// Whole seconds since the epoch, floored.
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Milliseconds since the epoch, floored.
    pub fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]`: the fraction is omitted when it is zero, no zone suffix,
    /// exactly as the original's `datetime.isoformat()` of naive UTC values.
    pub fn iso(self) -> String {
        let seconds = self.unix_seconds();
        let micros = self.0.rem_euclid(1_000_000);
        let datetime = time::OffsetDateTime::from_unix_timestamp(seconds)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let base = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            datetime.year(),
            u8::from(datetime.month()),
            datetime.day(),
            datetime.hour(),
            datetime.minute(),
            datetime.second()
        );
        if micros == 0 {
            base
        } else {
            format!("{base}.{micros:06}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_omits_zero_fraction_like_python() {
        assert_eq!(Timestamp::from_unix_seconds(0).iso(), "1970-01-01T00:00:00");
        assert_eq!(
            Timestamp(1_645_113_692_000_123).iso(),
            "2022-02-17T16:01:32.000123"
        );
    }

    #[test]
    fn unix_seconds_floors() {
        assert_eq!(Timestamp(1_999_999).unix_seconds(), 1);
        assert_eq!(Timestamp(-1).unix_seconds(), -1);
    }
}
