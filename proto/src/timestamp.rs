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

    /// Parses a time given as unix seconds (`1700000000`), as RFC 3339 text
    /// (`2026-11-30T08:00:00Z`, any offset) or as the API shows times ([`Timestamp::iso`]:
    /// UTC without a zone); `None` for anything else.
    /// Times from 1970 to the end of 9999 only: what [`Timestamp::iso`] shows as given.
    pub fn parse(text: &str) -> Option<Self> {
        const LAST_SECOND: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        let text = text.trim();
        let parsed = if let Ok(seconds) = text.parse::<i64>() {
            Self::from_unix_seconds(seconds.clamp(-1, LAST_SECOND + 1))
        } else if let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(text) {
            Timestamp(parsed.timestamp_micros())
        } else {
            let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
            Timestamp(naive.and_utc().timestamp_micros())
        };
        (0..=LAST_SECOND)
            .contains(&parsed.unix_seconds())
            .then_some(parsed)
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
    fn parse_reads_unix_seconds_rfc3339_and_the_api_s_own_times() {
        let at = Timestamp::from_unix_seconds(1_700_000_000);
        assert_eq!(Timestamp::parse("1700000000"), Some(at));
        assert_eq!(Timestamp::parse("2023-11-14T22:13:20Z"), Some(at));
        assert_eq!(Timestamp::parse("2023-11-14T23:13:20+01:00"), Some(at));
        assert_eq!(Timestamp::parse(&at.iso()), Some(at));
        let fine = Timestamp(at.0 + 123_456);
        assert_eq!(Timestamp::parse(&fine.iso()), Some(fine));
        for bad in [
            "",
            "soon",
            "2023-13-01T00:00:00Z",
            "99999999999999999999",
            "1099511627775",
            "-5",
            "1969-12-31T23:59:59Z",
            "+10000-01-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

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
