//! An in-memory `Store`: jobs and executions in maps behind one mutex.
//!
//! The operations a JobActor uses follow the port's contract as the real stores implement it
//! (see `src/adapters/embedded/store.rs`): a write that would change a terminal status is refused with
//! `Conflict`, output is replaced only when `log` or `error` is set, webhook attempts survive a
//! writer's copy, `create_execution` inserts only when absent. The listing and scheduling
//! queries no JobActor makes answer `Internal`, so a test that starts needing one fails loudly
//! instead of passing on a made-up answer.

use async_trait::async_trait;
use fastlane_actors::ports::{
    ExecutionFilter, ExecutionTail, OutputStream, Page, Paged, Store, StoreCounts, StoreError,
};
use fastlane_proto::outbox::{self, Outbox, OwedNotification};
use fastlane_proto::{Execution, ExecutionStatus, Job, Task, TaskSummary, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// The records, and every status each execution was written with, in order.
#[derive(Default)]
struct Records {
    jobs: HashMap<Uuid, Job>,
    executions: HashMap<Uuid, Execution>,
    status_history: HashMap<Uuid, Vec<ExecutionStatus>>,
    /// Writes refused because they would have changed a terminal status.
    conflicts: u32,
    /// Each execution's fencing counter (`claim_execution`).
    fences: HashMap<Uuid, u64>,
    /// Writes refused because another runner claimed the execution since.
    fenced: u32,
    /// A concurrent writer's change, applied to the stored job (as a write of its own) just
    /// before the next `update_job` is checked: a race made to happen at the worst moment.
    racing_job_write: Option<Box<dyn FnOnce(&mut Job) + Send>>,
    /// Each execution's outbox version (its entries live on the stored execution).
    outbox_versions: HashMap<Uuid, u64>,
}

/// The fake store. Tests read it synchronously (`execution`, `job`, …) while actors use it
/// through the port.
#[derive(Default)]
pub struct FakeStore {
    records: Mutex<Records>,
}

fn not_faked(operation: &str) -> StoreError {
    StoreError::Internal(format!("{operation} is not implemented by the fake store"))
}

impl FakeStore {
    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panicking test must not turn every later read into a second panic.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Seeds a job and its executions, as an enqueue (or an earlier life of the node) left them.
    pub fn seed(&self, job: &Job, executions: &[&Execution]) {
        let mut records = self.records();
        records.jobs.insert(job.job_id, job.clone());
        for execution in executions {
            records
                .executions
                .insert(execution.execution_id, (*execution).clone());
        }
    }

    /// The stored execution, with its output.
    pub fn execution(&self, execution_id: Uuid) -> Option<Execution> {
        self.records().executions.get(&execution_id).cloned()
    }

    pub fn status(&self, execution_id: Uuid) -> Option<ExecutionStatus> {
        self.execution(execution_id)
            .map(|execution| execution.status)
    }

    pub fn job(&self, job_id: Uuid) -> Option<Job> {
        self.records().jobs.get(&job_id).cloned()
    }

    /// The job's executions, oldest first.
    pub fn executions_of(&self, job_id: Uuid) -> Vec<Execution> {
        let mut executions: Vec<Execution> = self
            .records()
            .executions
            .values()
            .filter(|execution| execution.job_id == job_id)
            .cloned()
            .collect();
        executions.sort_by_key(|execution| execution.created_at);
        executions
    }

    /// Every status the execution was written with through `update_execution`, in order.
    pub fn status_history(&self, execution_id: Uuid) -> Vec<ExecutionStatus> {
        self.records()
            .status_history
            .get(&execution_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes another writer change the stored job (and its version) right before the next
    /// `update_job` is checked, i.e. after its writer read the job.
    pub fn before_next_job_write(&self, change: impl FnOnce(&mut Job) + Send + 'static) {
        self.records().racing_job_write = Some(Box::new(change));
    }

    /// How many writes were refused because another runner claimed the execution since.
    pub fn fenced(&self) -> u32 {
        self.records().fenced
    }

    /// Claims the execution as another runner would (the fake of another node's JobActor).
    pub fn claim(&self, execution_id: Uuid) -> u64 {
        let mut records = self.records();
        let fence = records.fences.entry(execution_id).or_default();
        *fence += 1;
        *fence
    }

    /// How many writes were refused because the execution had ended already.
    pub fn conflicts(&self) -> u32 {
        self.records().conflicts
    }
}

#[async_trait]
impl Store for FakeStore {
    async fn create_job(&self, job: &Job, execution: Option<&Execution>) -> Result<(), StoreError> {
        let mut records = self.records();
        if records.jobs.contains_key(&job.job_id) {
            return Err(StoreError::Conflict(format!("job {} exists", job.job_id)));
        }
        records.jobs.insert(job.job_id, job.clone());
        if let Some(execution) = execution {
            records
                .executions
                .insert(execution.execution_id, execution.clone());
        }
        Ok(())
    }

    async fn claim_idempotency_key(
        &self,
        _record: &fastlane_proto::idempotency::IdempotencyRecord,
        _now: Timestamp,
    ) -> Result<Option<fastlane_proto::idempotency::IdempotencyRecord>, StoreError> {
        Err(not_faked("claim_idempotency_key"))
    }

    async fn get_idempotency_key(
        &self,
        _task_id: &str,
        _key: &str,
    ) -> Result<Option<fastlane_proto::idempotency::IdempotencyRecord>, StoreError> {
        Err(not_faked("get_idempotency_key"))
    }

    async fn complete_idempotency_key(
        &self,
        _record: &fastlane_proto::idempotency::IdempotencyRecord,
    ) -> Result<bool, StoreError> {
        Err(not_faked("complete_idempotency_key"))
    }

    async fn release_idempotency_key(
        &self,
        _task_id: &str,
        _key: &str,
        _job_id: Uuid,
    ) -> Result<(), StoreError> {
        Err(not_faked("release_idempotency_key"))
    }

    async fn delete_job(&self, job_id: Uuid) -> Result<(), StoreError> {
        let mut records = self.records();
        records.jobs.remove(&job_id);
        records
            .executions
            .retain(|_, execution| execution.job_id != job_id);
        Ok(())
    }

    async fn list_tasks(&self, _page: Page) -> Result<Paged<TaskSummary>, StoreError> {
        Err(not_faked("list_tasks"))
    }

    async fn search_tasks(
        &self,
        _words: &[String],
        _page: Page,
    ) -> Result<Paged<TaskSummary>, StoreError> {
        Err(not_faked("search_tasks"))
    }

    async fn get_task(&self, _task_id: &str) -> Result<Option<Task>, StoreError> {
        Err(not_faked("get_task"))
    }

    async fn list_jobs(&self, task_id: &str, page: Page) -> Result<Paged<Job>, StoreError> {
        let mut jobs: Vec<Job> = self
            .records()
            .jobs
            .values()
            .filter(|job| job.task_id == task_id)
            .cloned()
            .collect();
        jobs.sort_by_key(|job| std::cmp::Reverse(job.last_modified_at));
        let total = jobs.len() as u64;
        let items = jobs
            .into_iter()
            .skip(page.offset().min(usize::MAX as u64) as usize)
            .take(page.per_page.min(usize::MAX as u64) as usize)
            .collect();
        Ok(Paged { items, total })
    }

    async fn get_job(&self, task_id: &str, job_id: Uuid) -> Result<Option<Job>, StoreError> {
        Ok(self
            .records()
            .jobs
            .get(&job_id)
            .filter(|job| job.task_id == task_id)
            .cloned())
    }

    async fn count_executions(&self, job_id: Uuid) -> Result<u64, StoreError> {
        Ok(self.executions_of(job_id).len() as u64)
    }

    async fn list_executions(
        &self,
        job_id: Uuid,
        limit: u64,
    ) -> Result<Vec<Execution>, StoreError> {
        let mut executions = self.executions_of(job_id);
        executions.reverse();
        executions.truncate(limit as usize);
        Ok(executions)
    }

    async fn list_execution_tails(
        &self,
        job_id: Uuid,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Vec<ExecutionTail>, StoreError> {
        Ok(self
            .list_executions(job_id, limit)
            .await?
            .into_iter()
            .map(|execution| ExecutionTail::of(execution, max_bytes))
            .collect())
    }

    async fn last_execution(&self, job_id: Uuid) -> Result<Option<Execution>, StoreError> {
        Ok(self.executions_of(job_id).pop().map(|mut execution| {
            execution.log = None;
            execution.error = None;
            execution
        }))
    }

    async fn get_execution(&self, execution_id: Uuid) -> Result<Option<Execution>, StoreError> {
        Ok(self.execution(execution_id))
    }

    async fn get_execution_tail(
        &self,
        execution_id: Uuid,
        max_bytes: Option<u64>,
    ) -> Result<Option<ExecutionTail>, StoreError> {
        Ok(self.execution(execution_id).map(|mut execution| {
            if max_bytes.is_none() {
                (execution.log, execution.error) = (None, None);
            }
            ExecutionTail::of(execution, max_bytes.unwrap_or(0))
        }))
    }

    async fn output_len(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
    ) -> Result<Option<u64>, StoreError> {
        let execution = self.execution(execution_id);
        Ok(execution.and_then(|execution| stream.of(&execution).map(|bytes| bytes.len() as u64)))
    }

    async fn read_output(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let execution = self.execution(execution_id);
        let bytes = execution
            .as_ref()
            .and_then(|e| stream.of(e))
            .unwrap_or_default();
        let start = (offset as usize).min(bytes.len());
        let end = (offset.saturating_add(max_len) as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    async fn update_execution(
        &self,
        execution: &Execution,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut records = self.records();
        let id = execution.execution_id;
        let stored_fence = records.fences.get(&id).copied().unwrap_or(0);
        if fence.is_some_and(|fence| fence != stored_fence) {
            records.fenced += 1;
            return Err(StoreError::Fenced(format!(
                "execution {id} was claimed by another runner"
            )));
        }
        let mut written = execution.clone();
        // The outbox gets the written entries only from a write that changes the status.
        let changes_status = records
            .executions
            .get(&id)
            .is_none_or(|stored| stored.status != execution.status);
        written.outbox = records
            .executions
            .get(&id)
            .map(|stored| stored.outbox.clone())
            .unwrap_or_default();
        if let Some(stored) = records.executions.get(&id) {
            if stored.status.is_terminal() && stored.status != execution.status {
                let refusal = format!(
                    "execution {id} is already {}, it cannot become {}",
                    stored.status, execution.status
                );
                records.conflicts += 1;
                return Err(StoreError::Conflict(refusal));
            }
            // Webhook attempts are appended on their own; a writer's copy never replaces them.
            written.metadata.webhook_dispatch = stored.metadata.webhook_dispatch.clone();
            // The output is kept apart from the record: written only when the write carries it.
            if execution.log.is_none() && execution.error.is_none() {
                written.log = stored.log.clone();
                written.error = stored.error.clone();
            }
        }
        if changes_status && outbox::merge(&mut written.outbox, &execution.outbox) {
            *records.outbox_versions.entry(id).or_default() += 1;
        }
        records.executions.insert(id, written);
        records
            .status_history
            .entry(id)
            .or_default()
            .push(execution.status);
        Ok(())
    }

    async fn claim_execution(&self, execution_id: Uuid) -> Result<Option<u64>, StoreError> {
        if !self.records().executions.contains_key(&execution_id) {
            return Ok(None);
        }
        Ok(Some(self.claim(execution_id)))
    }

    async fn create_execution(&self, execution: &Execution) -> Result<bool, StoreError> {
        let mut records = self.records();
        if records.executions.contains_key(&execution.execution_id) {
            return Ok(false);
        }
        records
            .executions
            .insert(execution.execution_id, execution.clone());
        Ok(true)
    }

    async fn update_job(&self, job: &Job) -> Result<(), StoreError> {
        let mut records = self.records();
        if let Some(change) = records.racing_job_write.take() {
            if let Some(stored) = records.jobs.get_mut(&job.job_id) {
                change(stored);
                stored.version += 1;
            }
        }
        if records.jobs.get(&job.job_id).map(|stored| stored.version) != Some(job.version) {
            return Err(StoreError::Conflict(format!(
                "job {} changed since version {}",
                job.job_id, job.version
            )));
        }
        let written = Job {
            version: job.version + 1,
            ..job.clone()
        };
        records.jobs.insert(job.job_id, written);
        Ok(())
    }

    async fn scheduled_page(
        &self,
        _after: Option<(Timestamp, Uuid)>,
        _limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        Err(not_faked("scheduled_page"))
    }

    async fn scheduled_before(
        &self,
        _before: Timestamp,
        _limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError> {
        Err(not_faked("scheduled_before"))
    }

    async fn append_webhook_dispatch(
        &self,
        execution_id: Uuid,
        entry: serde_json::Value,
        keep: usize,
    ) -> Result<(), StoreError> {
        let mut records = self.records();
        let Some(execution) = records.executions.get_mut(&execution_id) else {
            return Ok(());
        };
        let dispatch = &mut execution.metadata.webhook_dispatch;
        dispatch.push(entry);
        let excess = dispatch.len().saturating_sub(keep);
        dispatch.drain(..excess);
        Ok(())
    }

    async fn due_outboxes(&self, now: Timestamp, limit: usize) -> Result<Vec<Outbox>, StoreError> {
        let records = self.records();
        let mut due: Vec<(Timestamp, Outbox)> = records
            .executions
            .keys()
            .filter_map(|id| {
                let outbox = outbox_of(&records, *id)?;
                let at = outbox::due_at(&outbox.entries).filter(|at| *at <= now)?;
                Some((at, outbox))
            })
            .collect();
        due.sort_by_key(|(at, _)| *at);
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(_, outbox)| outbox)
            .collect())
    }

    async fn get_outbox(&self, execution_id: Uuid) -> Result<Option<Outbox>, StoreError> {
        Ok(outbox_of(&self.records(), execution_id))
    }

    async fn replace_outbox(
        &self,
        execution_id: Uuid,
        expected: u64,
        entries: &[OwedNotification],
    ) -> Result<bool, StoreError> {
        let mut records = self.records();
        if records.outbox_versions.get(&execution_id) != Some(&expected) {
            return Ok(false);
        }
        records.outbox_versions.insert(execution_id, expected + 1);
        if let Some(execution) = records.executions.get_mut(&execution_id) {
            execution.outbox = entries.to_vec();
        }
        Ok(true)
    }

    async fn executions_in(
        &self,
        status: ExecutionStatus,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let mut found: Vec<Execution> = self
            .records()
            .executions
            .values()
            .filter(|execution| execution.status == status)
            .filter(|execution| after.is_none_or(|after| execution.execution_id > after))
            .cloned()
            .collect();
        found.sort_by_key(|execution| execution.execution_id);
        found.truncate(limit);
        Ok(found)
    }

    async fn find_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> Result<Paged<Execution>, StoreError> {
        let mut found: Vec<Execution> = self
            .records()
            .executions
            .values()
            .filter(|execution| {
                filter
                    .task_id
                    .as_ref()
                    .is_none_or(|task| &execution.task_id == task)
                    && filter.job_id.is_none_or(|job| execution.job_id == job)
                    && filter
                        .status
                        .is_none_or(|status| execution.status == status)
                    && filter
                        .since
                        .is_none_or(|since| execution.created_at >= since)
                    && filter
                        .until
                        .is_none_or(|until| execution.created_at < until)
            })
            .cloned()
            .collect();
        found.sort_by_key(|execution| std::cmp::Reverse(execution.created_at));
        let total = found.len() as u64;
        let items = found
            .into_iter()
            .skip(page.offset() as usize)
            .take(page.per_page as usize)
            .collect();
        Ok(Paged { items, total })
    }

    async fn finished_before(
        &self,
        _before: Timestamp,
        _limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        Ok(Vec::new())
    }

    async fn finished_beyond(
        &self,
        _job_id: Uuid,
        _keep: u64,
        _settled: Timestamp,
        _limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        Ok(Vec::new())
    }

    async fn job_ids_after(
        &self,
        _after: Option<Uuid>,
        _limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        Ok(Vec::new())
    }

    async fn remove_executions(&self, _ids: &[Uuid]) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let records = self.records();
        let tasks: std::collections::HashSet<&str> = records
            .jobs
            .values()
            .map(|job| job.task_id.as_str())
            .collect();
        Ok(StoreCounts {
            tasks: tasks.len() as u64,
            jobs: records.jobs.len() as u64,
            ..StoreCounts::default()
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The stored outbox of `execution_id`, when it ever owed anything.
fn outbox_of(records: &Records, execution_id: Uuid) -> Option<Outbox> {
    let version = *records.outbox_versions.get(&execution_id)?;
    let execution = records.executions.get(&execution_id)?;
    Some(Outbox {
        execution_id,
        task_id: execution.task_id.clone(),
        job_id: execution.job_id,
        version,
        entries: execution.outbox.clone(),
    })
}
