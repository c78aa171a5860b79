//! Schedules: `startAt`, `startIn`, `cron` (croner: 5 fields, 6 with seconds, `@daily`-style
//! names; IANA time zones), and what to do with firings missed while the node was down or busy
//! (`misfire`) or while the previous run still runs (`overlap`). Plain values and functions.

use crate::timestamp::Timestamp;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// What to do with firings whose time passed more than [`MISFIRE_GRACE`] ago.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Misfire {
    /// Drop them (recorded as missed).
    Skip,
    /// Run the most recent one, drop the others.
    #[default]
    Latest,
    /// Run every one, up to [`MISFIRE_CAP`].
    All,
}

/// What a cron firing does while the job's previous execution has not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Run the firing beside the previous execution.
    Allow,
    /// Skip the firing (recorded as missed).
    #[default]
    Forbid,
    /// Stop the previous execution, then run.
    Replace,
}

/// A firing later than this is "missed" and handled by the misfire policy.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(15);
/// `misfire: all` runs at most this many missed firings at once.
pub const MISFIRE_CAP: usize = 100;
/// Missed firings kept on a job (the count keeps going).
pub const MISSED_KEPT: usize = 20;
/// Slots [`due_firings`] computes at most from each end of the missed stretch: the oldest
/// (walking forward from the first due) and the newest (walking back from now). Everything a
/// policy runs or a job keeps lies in those, so a stretch of 100 000 missed firings after a long
/// downtime costs what 240 do; the firings between the two ends are only counted, estimated
/// from the spacing of the newest ones.
pub const SLOTS_EXAMINED: usize = MISFIRE_CAP + MISSED_KEPT;

/// A firing that did not run, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedFiring {
    /// The time the firing was due (`scheduledAt` in the API).
    pub scheduled_at: Timestamp,
    /// Why it did not run, as shown to the client.
    pub reason: String,
}

/// A job's schedule, as stored with the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSchedule {
    /// `None` for a one-off (`startAt`/`startIn`).
    pub cron: Option<String>,
    /// The IANA time zone the cron expression is read in; `None` means UTC.
    pub timezone: Option<String>,
    /// When it fires next; `None` once a one-off has fired.
    pub next_fire_at: Option<Timestamp>,
    /// What to do with firings missed while the node was down or busy.
    pub misfire: Misfire,
    /// What a firing does while the previous execution still runs.
    pub overlap: Overlap,
    /// The latest missed firings, oldest first, at most [`MISSED_KEPT`].
    #[serde(default)]
    pub missed: Vec<MissedFiring>,
    /// Every firing missed since the job was created (`missedCount`), beyond those kept.
    #[serde(default)]
    pub missed_count: u64,
    /// Paused (`POST …/pause/`): the schedule is kept but nothing fires until a resume.
    #[serde(default)]
    pub paused: bool,
    /// When the current (or the last) pause began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<Timestamp>,
    /// When the last pause ended (`POST …/resume/`): the firings due between `paused_at` and
    /// then are handled at the resume by the `misfire` policy; those it drops are recorded as
    /// skipped because of the pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<Timestamp>,
}

/// Why a firing due while its job was paused did not run.
pub const SKIPPED_PAUSED: &str = "skipped: the job was paused";

impl JobSchedule {
    /// When the scheduler must fire it next: `next_fire_at`, unless paused.
    pub fn due_at(&self) -> Option<Timestamp> {
        self.next_fire_at.filter(|_| !self.paused)
    }

    /// Whether `slot` fell due while the job was paused (during the current pause, or the last
    /// one, ended by a resume).
    pub fn paused_over(&self, slot: Timestamp) -> bool {
        match (self.paused_at, self.paused, self.resumed_at) {
            (Some(from), true, _) => slot >= from,
            (Some(from), false, Some(to)) => slot >= from && slot <= to,
            _ => false,
        }
    }

    /// While paused: how many firings fell due since the pause (a bound estimate past
    /// [`SLOTS_EXAMINED`], as [`due_firings`] counts), and the newest [`MISSED_KEPT`] of them.
    /// The `misfire` policy decides at the resume which of them run.
    pub fn skipped_while_paused(
        &self,
        cron: Option<&CronSchedule>,
        now: Timestamp,
    ) -> (u64, Vec<Timestamp>) {
        if !self.paused {
            return (0, Vec::new());
        }
        let every = JobSchedule {
            misfire: Misfire::Skip,
            ..self.clone()
        };
        let due = due_firings(&every, cron, now);
        let mut slots = due.missed;
        slots.extend(due.fire);
        let count = slots.len() as u64 + due.missed_between;
        if slots.len() > MISSED_KEPT {
            slots.drain(..slots.len() - MISSED_KEPT);
        }
        (count, slots)
    }

    /// Counts a firing that did not run and keeps it, dropping the oldest past [`MISSED_KEPT`].
    pub fn record_missed(&mut self, scheduled_at: Timestamp, reason: &str) {
        self.missed_count += 1;
        self.missed.push(MissedFiring {
            scheduled_at,
            reason: reason.to_string(),
        });
        if self.missed.len() > MISSED_KEPT {
            let excess = self.missed.len() - MISSED_KEPT;
            self.missed.drain(..excess);
        }
    }
}

/// A parsed cron expression with its time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: Cron,
    timezone: Tz,
}

impl CronSchedule {
    /// Parses `expression` (5 or 6 fields, or `@hourly`-style) in `timezone` (IANA; UTC if
    /// `None`).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<CronSchedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression.trim())
            .map_err(|error| {
                format!("'cron' ({expression:?}) is not a valid cron expression: {error}")
            })?;
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| format!("'timezone' ({name:?}) is not an IANA time zone name."))?,
        };
        let schedule = CronSchedule { cron, timezone };
        if schedule.next_after(Timestamp::now()).is_none() {
            return Err(format!("'cron' ({expression:?}) never fires."));
        }
        Ok(schedule)
    }

    /// The last firing strictly before `before`.
    pub fn previous_before(&self, before: Timestamp) -> Option<Timestamp> {
        let start: DateTime<Tz> = self
            .timezone
            .from_utc_datetime(&DateTime::<Utc>::from_timestamp_micros(before.0)?.naive_utc());
        let previous = self.cron.find_previous_occurrence(&start, false).ok()?;
        Some(Timestamp(previous.with_timezone(&Utc).timestamp_micros()))
    }

    /// The first firing strictly after `after`. A wall-clock time skipped by a DST change fires
    /// once at the end of the gap; a repeated one fires once, at its first occurrence.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start: DateTime<Tz> = self
            .timezone
            .from_utc_datetime(&DateTime::<Utc>::from_timestamp_micros(after.0)?.naive_utc());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(Timestamp(next.with_timezone(&Utc).timestamp_micros()))
    }
}

/// Parses `startIn`: one or more `<digits><unit>` with units d, h, m, s in that order
/// (`2h30m50s`, `90s`, `1d`), case-insensitive. Anything else is an error (the original read
/// garbage as "now").
pub fn parse_start_in(text: &str) -> Result<Duration, String> {
    let invalid = || format!("'startIn' ({text:?}) must look like 2h30m50s (units d, h, m, s).");
    let lower = text.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_unit = 0;
    for c in lower.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (rank, seconds) = match c {
            'd' => (1, 86_400),
            'h' => (2, 3_600),
            'm' => (3, 60),
            's' => (4, 1),
            _ => return Err(invalid()),
        };
        if number.is_empty() || rank <= last_unit {
            return Err(invalid());
        }
        let value: u64 = number.parse().map_err(|_| invalid())?;
        total = value
            .checked_mul(seconds)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(invalid)?;
        number.clear();
        last_unit = rank;
    }
    if !number.is_empty() || total > 10 * 365 * 86_400 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// What a due schedule does now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueFirings {
    /// Firings to run now, oldest first.
    pub fire: Vec<Timestamp>,
    /// Firings dropped by the misfire policy.
    pub missed: Vec<Timestamp>,
    /// The next firing after these.
    pub next: Option<Timestamp>,
    /// Missed firings between the oldest and the newest examined ones, counted but not listed
    /// (an estimate; 0 unless more than twice [`SLOTS_EXAMINED`] were due).
    pub missed_between: u64,
}

/// Applies the misfire policy to a schedule whose `next_fire_at` is at or before `now`.
pub fn due_firings(
    schedule: &JobSchedule,
    cron: Option<&CronSchedule>,
    now: Timestamp,
) -> DueFirings {
    due_firings_late_until(schedule, cron, now, None)
}

/// [`due_firings`], counting every firing at or before `late_until` as late, however recent:
/// the firings that fell due while the job was paused are all the policy's to decide.
pub fn due_firings_late_until(
    schedule: &JobSchedule,
    cron: Option<&CronSchedule>,
    now: Timestamp,
    late_until: Option<Timestamp>,
) -> DueFirings {
    let Some(first) = schedule.next_fire_at.filter(|first| *first <= now) else {
        return DueFirings {
            next: schedule.next_fire_at,
            ..Default::default()
        };
    };
    let grace = MISFIRE_GRACE.as_micros() as i64;
    let mut slots = vec![first];
    let mut next = None;
    let mut missed_between = 0;
    if let Some(cron) = cron {
        let mut cursor = first;
        loop {
            match cron.next_after(cursor) {
                Some(slot) if slot <= now && slots.len() < SLOTS_EXAMINED => {
                    slots.push(slot);
                    cursor = slot;
                }
                Some(slot) if slot <= now => {
                    // More are due than a policy needs: take the newest from now backwards,
                    // count the stretch between, and go on from the present.
                    let (newest, between) = newest_due(cron, cursor, now);
                    missed_between = between;
                    slots.extend(newest);
                    next = cron.next_after(now);
                    break;
                }
                other => {
                    next = other;
                    break;
                }
            }
        }
    }
    let (late, on_time): (Vec<Timestamp>, Vec<Timestamp>) = slots
        .into_iter()
        .partition(|slot| now.0 - slot.0 > grace || late_until.is_some_and(|until| *slot <= until));
    let mut due = DueFirings {
        next,
        missed_between,
        ..Default::default()
    };
    match schedule.misfire {
        Misfire::Skip => {
            due.missed = late;
            due.fire = on_time;
        }
        Misfire::Latest => {
            let mut late = late;
            if on_time.is_empty() {
                due.fire.extend(late.pop());
            }
            due.missed = late;
            due.fire.extend(on_time);
        }
        Misfire::All => {
            let mut all = late;
            all.extend(on_time);
            if all.len() > MISFIRE_CAP {
                due.missed = all.drain(..all.len() - MISFIRE_CAP).collect();
            }
            due.fire = all;
        }
    }
    due
}

/// Up to [`SLOTS_EXAMINED`] firings at or before `now` and after `after`, oldest first, walking
/// back from `now`; and an estimate of how many lie between `after` and the oldest of them
/// (the stretch not walked), from their mean spacing.
fn newest_due(cron: &CronSchedule, after: Timestamp, now: Timestamp) -> (Vec<Timestamp>, u64) {
    let mut newest = Vec::with_capacity(SLOTS_EXAMINED);
    let mut cursor = Timestamp(now.0.saturating_add(1));
    while newest.len() < SLOTS_EXAMINED {
        match cron.previous_before(cursor) {
            Some(slot) if slot > after => {
                newest.push(slot);
                cursor = slot;
            }
            _ => break,
        }
    }
    newest.reverse();
    let between = match (newest.first(), newest.last()) {
        (Some(oldest), Some(latest)) if newest.len() == SLOTS_EXAMINED => {
            let spacing = ((latest.0 - oldest.0) / (newest.len() as i64 - 1)).max(1);
            // The stretch (after, oldest) holds about its length over the spacing, less one.
            u64::try_from((oldest.0 - after.0) / spacing - 1).unwrap_or(0)
        }
        _ => 0,
    };
    (newest, between)
}

/// The execution id of the firing of `job_id` scheduled at `at`: the same on every node, so a
/// slot can be fired only once.
pub fn firing_execution_id(job_id: Uuid, at: Timestamp) -> Uuid {
    Uuid::new_v5(&job_id, format!("fire:{}", at.0).as_bytes())
}

/// The execution id of the automatic retry of `execution_id`: the same however often the
/// retry is attempted.
pub fn retry_execution_id(execution_id: Uuid) -> Uuid {
    Uuid::new_v5(&execution_id, b"retry")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_micros(),
        )
    }

    #[test]
    fn start_in_forms() {
        assert_eq!(
            parse_start_in("2h30m50s").unwrap(),
            Duration::from_secs(9050)
        );
        assert_eq!(parse_start_in("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_start_in("1D2H").unwrap(), Duration::from_secs(93_600));
        assert_eq!(
            parse_start_in("240h").unwrap(),
            Duration::from_secs(864_000)
        );
        for garbage in [
            "",
            "90",
            "1m1h",
            "10s5m",
            "5x",
            "h",
            " 5m x",
            "1s1s",
            "99999999999999999999d",
        ] {
            assert!(parse_start_in(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn cron_forms_and_time_zones() {
        let every_minute = CronSchedule::parse("* * * * *", None).unwrap();
        assert_eq!(
            every_minute.next_after(at("2026-01-01T10:00:30Z")),
            Some(at("2026-01-01T10:01:00Z"))
        );
        let seconds = CronSchedule::parse("*/10 * * * * *", None).unwrap();
        assert_eq!(
            seconds.next_after(at("2026-01-01T10:00:31Z")),
            Some(at("2026-01-01T10:00:40Z"))
        );
        let daily = CronSchedule::parse("@daily", Some("America/Sao_Paulo")).unwrap();
        assert_eq!(
            daily.next_after(at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-02T03:00:00Z"))
        );
        assert!(CronSchedule::parse("61 * * * *", None).is_err());
        assert!(CronSchedule::parse("not cron", None).is_err());
        assert!(CronSchedule::parse("* * * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn dst_gap_and_overlap_fire_once() {
        // Europe/Berlin: 2026-03-29 02:00 -> 03:00 (gap); 2026-10-25 03:00 -> 02:00 (overlap).
        let daily = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        // 02:30 does not exist on 03-29: it fires once at the end of the gap (03:00 CEST).
        let in_gap = daily.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(in_gap, at("2026-03-29T01:00:00Z"));
        assert_eq!(daily.next_after(in_gap), Some(at("2026-03-30T00:30:00Z")));
        // 02:30 happens twice on 10-25: it fires once, at the first (CEST) one.
        let repeated = daily.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(repeated, at("2026-10-25T00:30:00Z"));
        assert_eq!(daily.next_after(repeated), Some(at("2026-10-26T01:30:00Z")));
    }

    fn cron_schedule(misfire: Misfire, next: Timestamp) -> JobSchedule {
        JobSchedule {
            cron: Some("* * * * *".into()),
            timezone: None,
            next_fire_at: Some(next),
            misfire,
            overlap: Overlap::Forbid,
            missed: Vec::new(),
            missed_count: 0,
            paused: false,
            paused_at: None,
            resumed_at: None,
        }
    }

    #[test]
    fn misfire_policies() {
        let cron = CronSchedule::parse("* * * * *", None).unwrap();
        let now = at("2026-01-01T10:05:05Z");
        let first = at("2026-01-01T10:01:00Z");
        let latest = due_firings(&cron_schedule(Misfire::Latest, first), Some(&cron), now);
        assert_eq!(latest.fire, vec![at("2026-01-01T10:05:00Z")]);
        assert_eq!(latest.missed.len(), 4);
        assert_eq!(latest.next, Some(at("2026-01-01T10:06:00Z")));
        let skip = due_firings(&cron_schedule(Misfire::Skip, first), Some(&cron), now);
        assert_eq!(skip.fire, vec![at("2026-01-01T10:05:00Z")]);
        let skip_late = due_firings(
            &cron_schedule(Misfire::Skip, first),
            Some(&cron),
            at("2026-01-01T10:05:30Z"),
        );
        assert!(skip_late.fire.is_empty());
        assert_eq!(skip_late.missed.len(), 5);
        let all = due_firings(&cron_schedule(Misfire::All, first), Some(&cron), now);
        assert_eq!(all.fire.len(), 5);
        assert!(all.missed.is_empty());
        let not_due = due_firings(
            &cron_schedule(Misfire::All, at("2026-01-01T10:06:00Z")),
            Some(&cron),
            now,
        );
        assert!(not_due.fire.is_empty());
        assert_eq!(not_due.next, Some(at("2026-01-01T10:06:00Z")));
    }

    /// A pause: its firings are listed as skipped while it lasts, and at the resume they are
    /// all late for the policy (recent ones too), so `latest` runs only the newest of them and
    /// `skip` none.
    #[test]
    fn paused_firings_are_the_policy_s_at_the_resume() {
        let cron = CronSchedule::parse("* * * * *", None).unwrap();
        let paused_at = at("2026-01-01T10:00:30Z");
        let mut schedule = cron_schedule(Misfire::Latest, at("2026-01-01T10:01:00Z"));
        schedule.paused = true;
        schedule.paused_at = Some(paused_at);
        assert_eq!(schedule.due_at(), None);
        let now = at("2026-01-01T10:03:05Z");
        let (count, skipped) = schedule.skipped_while_paused(Some(&cron), now);
        assert_eq!(count, 3);
        assert_eq!(skipped.last(), Some(&at("2026-01-01T10:03:00Z")));
        assert!(schedule.paused_over(at("2026-01-01T10:02:00Z")));
        schedule.paused = false;
        schedule.resumed_at = Some(now);
        assert_eq!(schedule.due_at(), schedule.next_fire_at);
        assert!(schedule.paused_over(at("2026-01-01T10:03:00Z")));
        assert!(!schedule.paused_over(at("2026-01-01T10:04:00Z")));
        assert_eq!(
            schedule.skipped_while_paused(Some(&cron), now),
            (0, Vec::new())
        );
        let latest = due_firings_late_until(&schedule, Some(&cron), now, Some(now));
        assert_eq!(latest.fire, vec![at("2026-01-01T10:03:00Z")]);
        assert_eq!(latest.missed.len(), 2);
        // Without the pause, the firing 5 s ago would be on time beside the newest late one.
        schedule.misfire = Misfire::Skip;
        let skip = due_firings_late_until(&schedule, Some(&cron), now, Some(now));
        assert!(skip.fire.is_empty());
        assert_eq!(skip.missed.len(), 3);
        assert_eq!(due_firings(&schedule, Some(&cron), now).fire.len(), 1);
    }

    /// After a downtime of 100 000 firings (one a minute, about 69 days), each policy gets the
    /// same answer as if every slot were listed, from at most twice [`SLOTS_EXAMINED`] computed
    /// slots: `latest` runs the newest, `all` the newest [`MISFIRE_CAP`], `skip` none; the
    /// rest are missed, counted (listed ends plus the stretch between) to 100 000 within 1 %.
    #[test]
    fn a_long_downtime_is_bounded_and_each_policy_holds() {
        let cron = CronSchedule::parse("* * * * *", None).unwrap();
        let first = at("2026-01-01T00:00:00Z");
        let minute = 60_000_000;
        let newest = Timestamp(first.0 + 99_999 * minute);
        let now = Timestamp(newest.0 + 20_000_000);
        let total = 100_000;
        let counted = |due: &DueFirings| due.missed.len() as u64 + due.missed_between;
        let within = |count: u64, expected: u64| count.abs_diff(expected) <= expected / 100;

        let latest = due_firings(&cron_schedule(Misfire::Latest, first), Some(&cron), now);
        assert_eq!(latest.fire, vec![newest]);
        assert!(latest.missed.len() + latest.fire.len() <= 2 * SLOTS_EXAMINED);
        assert!(within(counted(&latest), total - 1), "{}", counted(&latest));
        assert_eq!(latest.next, Some(Timestamp(newest.0 + minute)));
        assert_eq!(latest.missed[0], first, "the oldest is listed");

        let all = due_firings(&cron_schedule(Misfire::All, first), Some(&cron), now);
        assert_eq!(all.fire.len(), MISFIRE_CAP);
        assert_eq!(all.fire.last(), Some(&newest));
        assert_eq!(
            all.fire[0],
            Timestamp(newest.0 - (MISFIRE_CAP as i64 - 1) * minute)
        );
        assert!(within(counted(&all), total - MISFIRE_CAP as u64));

        let skip = due_firings(&cron_schedule(Misfire::Skip, first), Some(&cron), now);
        assert!(skip.fire.is_empty());
        assert!(within(counted(&skip), total));
        assert!(skip.missed.windows(2).all(|pair| pair[0] < pair[1]));
    }

    /// Just past the examined count, the two ends meet: nothing is estimated.
    #[test]
    fn a_stretch_within_twice_the_examined_is_listed_whole() {
        let cron = CronSchedule::parse("* * * * *", None).unwrap();
        let first = at("2026-01-01T00:00:00Z");
        let count = SLOTS_EXAMINED as i64 + 50;
        let now = Timestamp(first.0 + (count - 1) * 60_000_000 + 20_000_000);
        let skip = due_firings(&cron_schedule(Misfire::Skip, first), Some(&cron), now);
        assert_eq!(skip.missed.len() as i64, count);
        assert_eq!(skip.missed_between, 0);
        let mut sorted = skip.missed.clone();
        sorted.dedup();
        assert_eq!(sorted, skip.missed, "no slot twice");
    }

    #[test]
    fn one_off_fires_once() {
        let mut schedule = cron_schedule(Misfire::Latest, at("2026-01-01T10:00:00Z"));
        schedule.cron = None;
        let due = due_firings(&schedule, None, at("2026-01-01T11:00:00Z"));
        assert_eq!(due.fire, vec![at("2026-01-01T10:00:00Z")]);
        assert_eq!(due.next, None);
    }

    #[test]
    fn ids_are_deterministic() {
        let job = Uuid::new_v4();
        let slot = at("2026-01-01T10:00:00Z");
        assert_eq!(
            firing_execution_id(job, slot),
            firing_execution_id(job, slot)
        );
        assert_ne!(
            firing_execution_id(job, slot),
            firing_execution_id(job, Timestamp(slot.0 + 1))
        );
        assert_eq!(retry_execution_id(job), retry_execution_id(job));
    }
}
