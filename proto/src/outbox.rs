//! The notification outbox: the webhooks and e-mails an execution owes, kept with the execution
//! in the store so that no crash, SIGTERM or notifier restart loses them.
//!
//! The store adds an execution's owed notifications ([`owed`]) in the same write that changes
//! its status (to `running`: the `starts` hooks; to a terminal status: the lists of the outcome),
//! and only then: a later write of the same status (the output added after a stop) adds nothing
//! and never resets a delivery's progress. The notifier claims due deliveries by moving their
//! next attempt time forward with a compare-and-set on the outbox version (so two nodes do not
//! send the same one at the same moment), sends them, and settles each: delivered, abandoned, or
//! due again after the back-off. Settled deliveries stay (so that a replayed write cannot add
//! them again) but leave the due index ([`due_at`]).

use crate::limits::{MAX_RECIPIENTS_PER_LIST, MAX_WEBHOOKS_PER_LIST};
use crate::{Execution, ExecutionStatus, Job, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Attempts of one e-mail (the SMTP server unreachable or refusing).
pub const EMAIL_ATTEMPTS: u32 = 5;
/// Retries a hook may ask for (`retries`); more are cut to this.
pub const MAX_WEBHOOK_RETRIES: u32 = 20;
/// The most deliveries one execution can owe: `starts` hooks, two lists of hooks and two lists
/// of recipients for its outcome.
pub const MAX_OWED: usize = 3 * MAX_WEBHOOKS_PER_LIST + 2 * MAX_RECIPIENTS_PER_LIST;

/// What a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    /// A webhook call; its target is the hook object of the job (`url`, `method`, `headers`,
    /// `retries`).
    Webhook,
    /// An e-mail; its target is the recipient's address.
    Email,
}

/// One webhook call or e-mail an execution owes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwedNotification {
    /// Stable across retries and nodes: derived from the execution id, kind, list and position
    /// (sent as the `Fastlane-Delivery-Id` header, so receivers can drop duplicates).
    pub id: Uuid,
    /// Webhook or e-mail.
    pub kind: NotificationKind,
    /// The list it comes from: `starts`, `succeeds`, `fails` or `finishes`.
    pub list: String,
    /// The hook object, or the recipient's address, as the job had it when the debt was made.
    pub target: Value,
    /// Attempts claimed so far (a claim counts as an attempt, so a sender that crashes every
    /// time still ends the delivery: after `max_attempts` plus a small allowance for claims
    /// never settled, whose calls may not have been made).
    pub attempts: u32,
    /// Attempts allowed: a hook's `retries + 1`, or [`EMAIL_ATTEMPTS`].
    pub max_attempts: u32,
    /// When the next attempt is due; `None` once settled.
    pub next_at: Option<Timestamp>,
    /// How it was settled (`delivered`, or why it was abandoned); `None` while owed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl OwedNotification {
    /// Whether an attempt is due at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.next_at.is_some_and(|next| next <= now)
    }
}

/// An execution's outbox as stored: its deliveries and the version a compare-and-set expects.
#[derive(Clone, Debug, PartialEq)]
pub struct Outbox {
    /// The execution that owes the deliveries.
    pub execution_id: Uuid,
    /// Its task.
    pub task_id: String,
    /// Its job.
    pub job_id: Uuid,
    /// Bumped by every change of the entries; a replace is conditional on it.
    pub version: u64,
    /// Every delivery made owed, settled ones included.
    pub entries: Vec<OwedNotification>,
}

/// The lists (`starts`, `succeeds`, `fails`, `finishes`) that apply to an execution in
/// `status`: `starts` once running; `succeeds` + `finishes` for `done`; `fails` + `finishes`
/// for `failed`, `timedout` and `expired` (also when nothing ever ran); `finishes` for `stopped`.
pub fn lists_for(status: ExecutionStatus) -> &'static [&'static str] {
    match status {
        ExecutionStatus::Running => &["starts"],
        ExecutionStatus::Done => &["succeeds", "finishes"],
        ExecutionStatus::Failed | ExecutionStatus::Timedout | ExecutionStatus::Expired => {
            &["fails", "finishes"]
        }
        ExecutionStatus::Stopped => &["finishes"],
        _ => &[],
    }
}

/// What `execution` in its current status owes under `job`'s notification lists, every entry
/// due at `now`. E-mails are not sent for `starts` (as the original). At most [`MAX_OWED`].
pub fn owed(job: &Job, execution: &Execution, now: Timestamp) -> Vec<OwedNotification> {
    let mut owed = Vec::new();
    for list in lists_for(execution.status) {
        let hooks = job.metadata.webhooks.get(list).and_then(Value::as_array);
        for (index, hook) in hooks.into_iter().flatten().enumerate() {
            if index >= MAX_WEBHOOKS_PER_LIST {
                break;
            }
            let retries = hook
                .get("retries")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(u64::from(MAX_WEBHOOK_RETRIES)) as u32;
            owed.push(entry(
                execution.execution_id,
                NotificationKind::Webhook,
                list,
                index,
                hook.clone(),
                retries + 1,
                now,
            ));
        }
        if *list == "starts" {
            continue;
        }
        let addresses = job.metadata.emails.get(list).and_then(Value::as_array);
        for (index, address) in addresses.into_iter().flatten().enumerate() {
            if index >= MAX_RECIPIENTS_PER_LIST {
                break;
            }
            if address.is_string() {
                owed.push(entry(
                    execution.execution_id,
                    NotificationKind::Email,
                    list,
                    index,
                    address.clone(),
                    EMAIL_ATTEMPTS,
                    now,
                ));
            }
        }
    }
    owed
}

fn entry(
    execution_id: Uuid,
    kind: NotificationKind,
    list: &str,
    index: usize,
    target: Value,
    max_attempts: u32,
    now: Timestamp,
) -> OwedNotification {
    let kind_name = match kind {
        NotificationKind::Webhook => "webhook",
        NotificationKind::Email => "email",
    };
    OwedNotification {
        id: delivery_id(execution_id, &format!("{kind_name}:{list}:{index}")),
        kind,
        list: list.to_string(),
        target,
        attempts: 0,
        max_attempts,
        next_at: Some(now),
        outcome: None,
    }
}

/// The delivery id of `name` (`kind:list:index`) of `execution_id`: the same on every node.
pub fn delivery_id(execution_id: Uuid, name: &str) -> Uuid {
    Uuid::new_v5(&execution_id, name.as_bytes())
}

/// The soonest due time of the unsettled entries: the execution's place in the due index
/// (`None`: it owes nothing and leaves the index).
pub fn due_at(entries: &[OwedNotification]) -> Option<Timestamp> {
    entries.iter().filter_map(|entry| entry.next_at).min()
}

/// Adds the entries of `new` whose ids `stored` does not hold; `true` when any was added.
/// Stored entries are kept as they are: their progress belongs to the notifier.
pub fn merge(stored: &mut Vec<OwedNotification>, new: &[OwedNotification]) -> bool {
    let mut added = false;
    for entry in new {
        if stored.len() >= MAX_OWED {
            break;
        }
        if !stored.iter().any(|kept| kept.id == entry.id) {
            stored.push(entry.clone());
            added = true;
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_with_lists(hooks: &[Value], addresses: &[Value]) -> (Job, Execution) {
        let lists = |items: &[Value]| serde_json::json!({"starts": items, "succeeds": items, "fails": items, "finishes": items});
        let origin = crate::build::Origin {
            task_id: "task".into(),
            job_id: Uuid::new_v4(),
            request_ip: None,
            created_at: Timestamp(1),
            now: Timestamp(1),
        };
        let request = crate::payload::parse_enqueue(br#"{"image": "busybox", "command": "true"}"#)
            .expect("valid request");
        let built = crate::build::new_job(origin, request, 60);
        let mut job = built.job;
        // Set after parsing: the lists may be longer than a request may send, to check the cap.
        job.metadata.webhooks = lists(hooks);
        job.metadata.emails = lists(addresses);
        let execution = built.execution.expect("runs now");
        (job, execution)
    }

    #[test]
    fn owed_follows_the_outcome_and_is_bounded() {
        let hooks: Vec<Value> = (0..30)
            .map(|i| serde_json::json!({"url": format!("http://h/{i}"), "retries": 99}))
            .collect();
        let addresses: Vec<Value> = (0..80)
            .map(|i| Value::String(format!("u{i}@example.com")))
            .collect();
        let (job, mut execution) = job_with_lists(&hooks, &addresses);
        execution.status = ExecutionStatus::Running;
        let starts = owed(&job, &execution, Timestamp(1));
        assert_eq!(starts.len(), MAX_WEBHOOKS_PER_LIST);
        assert!(starts
            .iter()
            .all(|entry| entry.kind == NotificationKind::Webhook));
        assert_eq!(starts[0].max_attempts, MAX_WEBHOOK_RETRIES + 1);
        execution.status = ExecutionStatus::Failed;
        let failed = owed(&job, &execution, Timestamp(1));
        assert_eq!(failed.len(), MAX_OWED - MAX_WEBHOOKS_PER_LIST);
        execution.status = ExecutionStatus::Pulling;
        assert!(owed(&job, &execution, Timestamp(1)).is_empty());
    }

    #[test]
    fn ids_are_stable_and_merge_keeps_progress() {
        let hooks = vec![serde_json::json!({"url": "http://h/"})];
        let (job, mut execution) = job_with_lists(&hooks, &[]);
        execution.status = ExecutionStatus::Done;
        let first = owed(&job, &execution, Timestamp(1));
        let again = owed(&job, &execution, Timestamp(2));
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].id, again[0].id);
        assert_ne!(first[0].id, first[1].id);
        let mut stored = first.clone();
        stored[0].next_at = None;
        stored[0].outcome = Some("delivered".into());
        assert!(!merge(&mut stored, &again));
        assert_eq!(stored[0].outcome.as_deref(), Some("delivered"));
        assert_eq!(due_at(&stored), Some(Timestamp(1)));
        stored[1].next_at = None;
        assert_eq!(due_at(&stored), None);
    }
}
