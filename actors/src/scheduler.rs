//! SchedulerActor: owns every future firing (`startAt`, `startIn`, `cron`). Started and
//! restarted by the RootActor, registered under [`SCHEDULER_NAME`].
//!
//! A paused job is not indexed (its [`Job::attention_at`] ignores its firings); a resume
//! indexes it again at its next firing, which has passed if firings fell due meanwhile: the
//! `misfire` policy then decides which of them run, and the others are recorded as skipped.
//!
//! In: `Schedule` / `Unschedule` (ApiActor, after a job's schedule changed in the store), `Tick`
//! and `Sync` (its own timers; `Sync` picks up schedules other nodes wrote), `Next` (status).
//! Out: executions and queue messages for due firings; the job's new schedule in the store;
//! `Stop` to a JobActor for `overlap: replace`.
//!
//! The store is the truth; this actor keeps an index of (next firing, job) in memory, rebuilt
//! from the store when it starts, a page of ids and times at a time (`Store::scheduled_page`). A firing's execution id is derived from (job, scheduled time),
//! so firing a slot twice (two nodes, a repeated step) creates one execution. A firing is
//! decided by a conditional write of the job that moves the schedule on and records the firing
//! as pending (`job_record`); only then is its execution created. A concurrent write of the
//! job (PUT, stop) makes that write fail, so a stop always wins over a firing in progress; a
//! crash after the write leaves the firing pending, and this actor completes it when it next
//! looks at the job (the job is indexed at the pending run's grace).

use crate::job_record::{complete_pending, try_write};
use crate::lifecycle::stop_execution;
use crate::messages::SchedulerMessage;
use crate::ports::StoreError;
use crate::Services;
use fastlane_proto::schedule::{
    due_firings_late_until, firing_execution_id, CronSchedule, Overlap, SKIPPED_PAUSED,
};
use fastlane_proto::{Job, PendingRun, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

pub struct SchedulerActor;

pub struct SchedulerState {
    services: Services,
    /// (next firing, job id), soonest first.
    queue: BTreeSet<(Timestamp, Uuid)>,
    /// job id → (next firing, task id).
    entries: HashMap<Uuid, (Timestamp, String)>,
    /// The firing time a precise wake-up is already set for.
    armed_for: Option<Timestamp>,
    /// Jobs that could not be fired at their stored next firing because they are gone or their
    /// record cannot be parsed (logged once, by the store): `sync` does not index them again
    /// until that firing changes, so a broken row is not re-read and logged every sync. At
    /// most [`UNFIREABLE_KEPT`].
    unfireable: HashMap<Uuid, Timestamp>,
}

/// Unfireable jobs remembered; beyond it one is forgotten (and logged once more).
const UNFIREABLE_KEPT: usize = 10_000;

/// A safety tick; the actor also wakes exactly when its earliest firing is due.
const TICK: Duration = Duration::from_secs(1);
/// Firings handled per tick, so that the mailbox stays responsive under a burst.
const FIRINGS_PER_TICK: usize = 500;
/// How often the store is asked what is due within [`SYNC_WINDOW`], and how many at most: a
/// node fires (or takes over) schedules that another node created, moved or abandoned. Two
/// nodes firing one slot create one execution (its id is derived from the slot) and one of
/// them moves the schedule on (compare-and-set).
const SYNC_INTERVAL: Duration = Duration::from_secs(2);
const SYNC_WINDOW: Duration = Duration::from_secs(5);
const SYNC_LIMIT: usize = 1_000;
/// Schedules read per page when the index is loaded at start: the ids and times only, a
/// bounded page at a time, however many jobs are scheduled.
const LOAD_PAGE: usize = 1_000;
/// A firing this late (a downtime) has its missed slots worked out on a blocking thread, off
/// the async runtime's workers; an on-time one (a slot or two) inline.
const CATCH_UP_AFTER: Duration = Duration::from_secs(60);

impl Actor for SchedulerActor {
    type Msg = SchedulerMessage;
    type State = SchedulerState;
    type Arguments = Services;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMessage>,
        services: Services,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let mut state = SchedulerState {
            services,
            queue: BTreeSet::new(),
            entries: HashMap::new(),
            armed_for: None,
            unfireable: HashMap::new(),
        };
        state.load().await?;
        tracing::info!(scheduled = state.entries.len(), "scheduler loaded");
        myself.send_interval(TICK, || SchedulerMessage::Tick);
        myself.send_interval(SYNC_INTERVAL, || SchedulerMessage::Sync);
        state.arm(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMessage>,
        message: SchedulerMessage,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let is_tick = matches!(message, SchedulerMessage::Tick);
        match message {
            SchedulerMessage::Schedule {
                job_id,
                task_id,
                next,
            } => {
                state.unfireable.remove(&job_id);
                state.set(job_id, task_id, next)
            }
            SchedulerMessage::Unschedule { job_id } => state.remove(job_id),
            SchedulerMessage::Tick => state.fire_due().await,
            SchedulerMessage::Sync => state.sync().await,
            SchedulerMessage::Next(reply) => {
                let _ = reply.send((
                    state.entries.len(),
                    state.queue.first().map(|(next, _)| *next),
                ));
            }
        }
        if is_tick {
            state.armed_for = None;
        }
        state.arm(&myself);
        Ok(())
    }
}

impl SchedulerState {
    /// Indexes every job with a future firing or a pending run, reading the store's index
    /// page by page (keyset: each page starts after the last entry of the one before).
    async fn load(&mut self) -> Result<(), StoreError> {
        let mut after = None;
        loop {
            let page = self.services.store.scheduled_page(after, LOAD_PAGE).await?;
            let complete = page.len() < LOAD_PAGE;
            for (job_id, task_id, next) in page {
                after = Some((next, job_id));
                self.set(job_id, task_id, next);
            }
            if complete {
                return Ok(());
            }
        }
    }

    /// Sets a wake-up for the earliest firing when it is due within the next tick (later ones
    /// are armed by a later tick), so firings happen at their time, not at a tick's.
    fn arm(&mut self, myself: &ActorRef<SchedulerMessage>) {
        let Some(&(next, _)) = self.queue.first() else {
            return;
        };
        if self.armed_for == Some(next) {
            return;
        }
        let delay = Duration::from_micros((next.0 - Timestamp::now().0).max(0) as u64);
        if delay <= TICK {
            self.armed_for = Some(next);
            myself.send_after(delay, || SchedulerMessage::Tick);
        }
    }

    fn set(&mut self, job_id: Uuid, task_id: String, next: Timestamp) {
        self.remove(job_id);
        self.queue.insert((next, job_id));
        self.entries.insert(job_id, (next, task_id));
    }

    fn remove(&mut self, job_id: Uuid) {
        if let Some((next, _)) = self.entries.remove(&job_id) {
            self.queue.remove(&(next, job_id));
        }
    }

    /// Remembers a job whose record could not be read at its firing `next` (gone, or
    /// unparsable: the store logged it), so that `sync` does not index it again at that time.
    fn mark_unfireable(&mut self, job_id: Uuid, next: Timestamp) {
        if self.unfireable.len() >= UNFIREABLE_KEPT {
            if let Some(evicted) = self.unfireable.keys().next().copied() {
                self.unfireable.remove(&evicted);
            }
        }
        self.unfireable.insert(job_id, next);
    }

    async fn sync(&mut self) {
        let before = Timestamp(Timestamp::now().0 + SYNC_WINDOW.as_micros() as i64);
        match self
            .services
            .store
            .scheduled_before(before, SYNC_LIMIT)
            .await
        {
            Ok(due) => {
                for (job_id, task_id, next) in due {
                    if self.unfireable.get(&job_id) == Some(&next) {
                        continue;
                    }
                    if self.entries.get(&job_id).map(|(at, _)| *at) != Some(next) {
                        self.set(job_id, task_id, next);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not sync schedules from the store"),
        }
    }

    async fn fire_due(&mut self) {
        let now = Timestamp::now();
        for _ in 0..FIRINGS_PER_TICK {
            let Some(&(next, job_id)) = self.queue.first().filter(|(next, _)| *next <= now) else {
                return;
            };
            let (_, task_id) = self.entries.get(&job_id).cloned().expect("indexed");
            self.remove(job_id);
            match self.fire(&task_id, job_id, next, now).await {
                Ok(Some(following)) => self.set(job_id, task_id, following),
                Ok(None) => {}
                Err(error) => {
                    // Keep the entry: try again shortly.
                    tracing::warn!(%job_id, %error, "could not fire scheduled job");
                    self.set(job_id, task_id, Timestamp(now.0 + 1_000_000));
                    return;
                }
            }
        }
    }

    /// Fires what is due of the job's schedule; returns when to look at the job again.
    ///
    /// The firings are decided by one conditional write of the job (its schedule moved on,
    /// the firings recorded as pending runs) and only then created and queued: a stop or a PUT
    /// that wrote the job after it was read makes the write fail, and the job is read again.
    async fn fire(
        &mut self,
        task_id: &str,
        job_id: Uuid,
        expected: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let store = self.services.store.clone();
        let Some(job) = store.get_job(task_id, job_id).await? else {
            self.mark_unfireable(job_id, expected);
            return Ok(None);
        };
        // Runs a writer recorded but did not create (it crashed, or the store failed it) are
        // completed before anything new is decided.
        let Some(job) = complete_pending(&self.services, job).await? else {
            return Ok(None);
        };
        let Some(mut schedule) = job.schedule.clone() else {
            return Ok(None);
        };
        if schedule.paused {
            // Paused since it was indexed: a resume indexes it again.
            return Ok(None);
        }
        if schedule.next_fire_at != Some(expected) {
            // Changed since it was indexed: follow the store.
            return Ok(schedule.next_fire_at);
        }
        let cron = match &schedule.cron {
            Some(expression) => match CronSchedule::parse(expression, schedule.timezone.as_deref())
            {
                Ok(cron) => Some(cron),
                Err(error) => {
                    tracing::error!(%job_id, %error, "stored cron expression is invalid, unscheduling");
                    let unscheduled = Job {
                        schedule: None,
                        scheduled: false,
                        last_modified_at: now,
                        ..job
                    };
                    if !try_write(store.as_ref(), &unscheduled).await? {
                        return Ok(Some(expected));
                    }
                    return Ok(None);
                }
            },
            None => None,
        };
        // What fell due during the last pause is the misfire policy's to decide, however recent.
        let resumed_at = schedule.resumed_at;
        let due = if now.0 - expected.0 > CATCH_UP_AFTER.as_micros() as i64 {
            // Up to SLOTS_EXAMINED slots and a count of the stretch between: bounded, but
            // not for the async runtime's threads.
            let (late, cron) = (schedule.clone(), cron.clone());
            tokio::task::spawn_blocking(move || {
                due_firings_late_until(&late, cron.as_ref(), now, resumed_at)
            })
            .await
            .map_err(|error| StoreError::Internal(format!("missed slots: {error}")))?
        } else {
            due_firings_late_until(&schedule, cron.as_ref(), now, resumed_at)
        };
        let mut num_missed = due.missed.len();
        for slot in &due.missed {
            let reason = if schedule.paused_over(*slot) {
                SKIPPED_PAUSED
            } else {
                "missed: the node was down or busy at that time"
            };
            schedule.record_missed(*slot, reason);
        }
        // Missed firings too many to list (a long downtime): counted only.
        schedule.missed_count = schedule.missed_count.saturating_add(due.missed_between);
        let mut runs = Vec::with_capacity(due.fire.len());
        for slot in &due.fire {
            if cron.is_some() && !self.may_overlap(&job, *slot, schedule.overlap).await? {
                schedule.record_missed(
                    *slot,
                    "skipped: the previous execution was still running (overlap: forbid)",
                );
                num_missed += 1;
                continue;
            }
            runs.push(PendingRun {
                execution_id: firing_execution_id(job_id, *slot),
                due: now,
                scheduled_at: Some(*slot),
                retry_of: None,
                image: job.image.clone(),
                command: job.command.clone(),
                recorded_at: now,
            });
        }
        schedule.next_fire_at = due.next;
        let keep = due.next.is_some().then_some(schedule);
        let fired = Job {
            scheduled: keep
                .as_ref()
                .is_some_and(|schedule| schedule.cron.is_some()),
            schedule: keep,
            pending: runs,
            last_modified_at: now,
            ..job
        };
        if !try_write(store.as_ref(), &fired).await? {
            // Written meanwhile (a stop, a PUT, another node's firing, a retry): read it again
            // and decide again, right away.
            return Ok(Some(expected));
        }
        if num_missed > 0 {
            crate::metrics::schedule_missed(num_missed);
        }
        for run in &fired.pending {
            tracing::info!(%job_id, scheduled_at = ?run.scheduled_at.map(|slot| slot.iso()), lag_ms = (now.0 - run.scheduled_at.unwrap_or(now).0) / 1000, "firing");
        }
        let fired = Job {
            version: fired.version + 1,
            ..fired
        };
        let slots: Vec<Timestamp> = fired
            .pending
            .iter()
            .filter_map(|run| run.scheduled_at)
            .collect();
        complete_pending(&self.services, fired).await?;
        for slot in slots {
            crate::metrics::schedule_fired(slot);
        }
        Ok(due.next)
    }

    /// Whether a new firing may start now, given the job's last execution and the policy;
    /// `replace` stops the running one first.
    async fn may_overlap(
        &self,
        job: &Job,
        slot: Timestamp,
        overlap: Overlap,
    ) -> Result<bool, StoreError> {
        if overlap == Overlap::Allow {
            return Ok(true);
        }
        let last = self.services.store.last_execution(job.job_id).await?;
        // This very firing, created by another node a moment ago, is no overlap.
        let this_firing = firing_execution_id(job.job_id, slot);
        let Some(running) = last.as_ref().filter(|execution| {
            !execution.status.is_terminal() && execution.execution_id != this_firing
        }) else {
            return Ok(true);
        };
        if overlap == Overlap::Forbid {
            return Ok(false);
        }
        stop_execution(
            &self.services,
            running.execution_id,
            "Job execution was replaced by a newer firing (overlap: replace).",
        )
        .await?;
        Ok(true)
    }
}
