//! The worker: claims a dispatched task, runs its job, records the outcome.
//!
//! # Plugging in a job
//!
//! A job is anything that implements [`Job`]. Register it under a name and tasks created with
//! `"job": "<name>"` run it:
//!
//! ```
//! use spin_task_helpers::task::Task;
//! use spin_task_helpers::worker::{Job, Jobs, Lease};
//!
//! struct Reindex;
//!
//! impl Job for Reindex {
//!     fn run(&self, task: &Task, lease: &mut dyn Lease) -> anyhow::Result<Option<String>> {
//!         let collection = task.fields.get("collection").and_then(|v| v.as_str());
//!         let collection = collection.ok_or_else(|| anyhow::anyhow!("`collection` is missing"))?;
//!         for _batch in 0..3 {
//!             // ... index one batch of `collection` ...
//!             lease.keep_alive()?; // stops here if the task was canceled
//!         }
//!         Ok(Some(format!("reindexed {collection}")))
//!     }
//! }
//!
//! let jobs = Jobs::samples().with("reindex", Reindex);
//! assert!(jobs.get("reindex").is_some());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::dispatch::DispatchMessage;
use crate::lifecycle::{self, JobOutcome, NotForThisWorker};
use crate::store::{Change, KeyValue, ReadError, Tasks, UpdateError};
use crate::task::{Detail, Task, TaskId, TaskStatus, Timestamp};

/// A kind of work a task can ask for.
pub trait Job {
    /// Runs the job for `task`. `Ok` marks the task `done` (with the detail, if any), `Err`
    /// marks it `failed` with the error's text as its detail.
    ///
    /// A job that runs longer than a fraction of the lease must call [`Lease::keep_alive`]
    /// regularly: it keeps the claim and stops the job once the task is canceled.
    fn run(&self, task: &Task, lease: &mut dyn Lease) -> anyhow::Result<Option<String>>;
}

/// A running job's hold on its task.
pub trait Lease {
    /// Renews the lease when due; fails once the task is no longer this run's to finish
    /// (canceled, or restarted after the lease ran out).
    fn keep_alive(&mut self) -> Result<(), Revoked>;
}

/// The task was taken away from the running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked;

impl fmt::Display for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task was canceled or restarted while its job ran")
    }
}

impl std::error::Error for Revoked {}

/// Jobs by name.
#[derive(Default)]
pub struct Jobs {
    by_name: BTreeMap<String, Box<dyn Job>>,
}

impl Jobs {
    /// The sample jobs: `noop`, `fail`, `sleep` and `crash`.
    pub fn samples() -> Self {
        Self::default()
            .with("noop", Noop)
            .with("fail", Fail)
            .with("sleep", Sleep)
            .with("crash", Crash)
    }

    /// These jobs and `job` under `name`, replacing any job of that name.
    pub fn with(mut self, name: &str, job: impl Job + 'static) -> Self {
        self.by_name.insert(name.to_owned(), Box::new(job));
        self
    }

    pub fn get(&self, name: &str) -> Option<&dyn Job> {
        self.by_name.get(name).map(Box::as_ref)
    }
}

/// Completes at once.
pub struct Noop;

impl Job for Noop {
    fn run(&self, _: &Task, _: &mut dyn Lease) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
}

/// Fails with the task's `message` field as the detail.
pub struct Fail;

impl Job for Fail {
    fn run(&self, task: &Task, _: &mut dyn Lease) -> anyhow::Result<Option<String>> {
        let message = task.fields.get("message").and_then(|m| m.as_str());
        anyhow::bail!("{}", message.unwrap_or("failed as asked"))
    }
}

/// Runs for the task's `ms` milliseconds, stopping early if the task is canceled.
pub struct Sleep;

impl Sleep {
    /// How long it sleeps between checks on its task.
    const TICK: Duration = Duration::from_millis(50);
}

impl Job for Sleep {
    fn run(&self, task: &Task, lease: &mut dyn Lease) -> anyhow::Result<Option<String>> {
        let ms = task.fields.get("ms").and_then(|ms| ms.as_u64());
        let ms = ms.ok_or_else(|| anyhow::anyhow!("`ms` must be a non-negative integer"))?;
        let mut left = Duration::from_millis(ms);
        while !left.is_zero() {
            let nap = left.min(Self::TICK);
            std::thread::sleep(nap);
            left -= nap;
            lease.keep_alive()?;
        }
        Ok(Some(format!("slept {ms} ms")))
    }
}

/// Aborts its worker in the middle of the job, as a bug or running out of memory would: the
/// task stays `processing` until its lease runs out, and then a restart or `/redispatch`
/// recovers it.
pub struct Crash;

impl Job for Crash {
    fn run(&self, _: &Task, _: &mut dyn Lease) -> anyhow::Result<Option<String>> {
        panic!("the `crash` job aborts its worker, as asked")
    }
}

/// How the worker runs jobs.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// How long a claim holds without renewal; a task whose worker is silent for longer may be
    /// restarted.
    pub lease: Duration,
    /// The job of a task that names none.
    pub default_job: String,
}

/// What the worker did with one message.
#[derive(Debug, PartialEq)]
pub enum Handled {
    /// The job ran and its outcome was recorded.
    Finished(TaskStatus),
    /// The task names no known job: it was marked `refused`.
    Refused,
    /// The message was not for this worker to run.
    Dropped(NotForThisWorker),
    /// The job ran, but the task was canceled or restarted meanwhile: its outcome was dropped.
    OutcomeDropped,
    /// The message names a task that does not exist.
    UnknownTask,
}

/// Why a message could not be handled.
#[derive(Debug)]
pub enum WorkerError {
    /// The message is not a dispatch message.
    Malformed(String),
    Read(ReadError),
    /// The task kept changing under the worker.
    Contended(TaskId),
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(reason) => write!(f, "not a dispatch message: {reason}"),
            Self::Read(error) => error.fmt(f),
            Self::Contended(id) => write!(f, "task `{id}` kept changing; gave up"),
        }
    }
}

impl std::error::Error for WorkerError {}

/// Runs the job of each dispatched task.
pub struct Worker<S> {
    tasks: Tasks<S>,
    jobs: Jobs,
    settings: WorkerSettings,
}

impl<S: KeyValue> Worker<S> {
    pub fn new(tasks: Tasks<S>, jobs: Jobs, settings: WorkerSettings) -> Self {
        Self {
            tasks,
            jobs,
            settings,
        }
    }

    /// Handles one dispatch message: claims the task, runs its job, records the outcome.
    pub fn handle(&self, message: &[u8]) -> Result<Handled, WorkerError> {
        let message: DispatchMessage = serde_json::from_slice(message)
            .map_err(|error| WorkerError::Malformed(error.to_string()))?;
        let id = &message.task_id;
        let Some(task) = self.tasks.get(id).map_err(WorkerError::Read)? else {
            return Ok(Handled::UnknownTask);
        };
        let job_name = task.job_name().unwrap_or(&self.settings.default_job);
        let Some(job) = self.jobs.get(job_name) else {
            let detail = Detail::truncated(format!("unknown job `{job_name}`"));
            return self
                .apply(id, |task| {
                    lifecycle::refuse(task, &message.broker_id, Timestamp::now(), detail.clone())
                })
                .map(|applied| applied.map_or_else(Handled::Dropped, |_| Handled::Refused));
        };

        let runner = TaskId::generate(Timestamp::now());
        let lease = self.settings.lease;
        let claimed = self.apply(id, |task| {
            lifecycle::claim(
                task,
                &message.broker_id,
                runner.clone(),
                Timestamp::now(),
                lease,
            )
        })?;
        let task = match claimed {
            Ok(task) => task,
            Err(reason) => return Ok(Handled::Dropped(reason)),
        };

        let mut hold = StoredLease {
            tasks: &self.tasks,
            id,
            runner: &runner,
            lease,
            until: task.lease_until.unwrap_or_else(Timestamp::now),
        };
        let outcome = match job.run(&task, &mut hold) {
            Ok(detail) => JobOutcome::Done(detail.map(Detail::truncated)),
            Err(error) => JobOutcome::Failed(Detail::truncated(format!("{error:#}"))),
        };
        let finished = self.apply(id, |task| {
            lifecycle::finish(task, &runner, Timestamp::now(), outcome.clone())
        })?;
        Ok(finished.map_or(Handled::OutcomeDropped, |task| {
            Handled::Finished(task.status)
        }))
    }

    /// Writes what `rule` makes of the task; `Ok(Err(_))` when the rule leaves it alone.
    fn apply(
        &self,
        id: &TaskId,
        mut rule: impl FnMut(&Task) -> Result<Task, NotForThisWorker>,
    ) -> Result<Result<Task, NotForThisWorker>, WorkerError> {
        match self
            .tasks
            .update(id, |task| rule(task).map(|next| Change::Write(next, ())))
        {
            Ok(updated) => Ok(Ok(updated.task)),
            Err(UpdateError::Refused(reason)) => Ok(Err(reason)),
            Err(UpdateError::NotFound) => Ok(Err(NotForThisWorker::ClaimLost)),
            Err(UpdateError::Contended) => Err(WorkerError::Contended(id.clone())),
            Err(UpdateError::Read(error)) => Err(WorkerError::Read(error)),
        }
    }
}

/// A lease kept in the stored task.
struct StoredLease<'a, S> {
    tasks: &'a Tasks<S>,
    id: &'a TaskId,
    runner: &'a TaskId,
    lease: Duration,
    until: Timestamp,
}

impl<S: KeyValue> Lease for StoredLease<'_, S> {
    fn keep_alive(&mut self) -> Result<(), Revoked> {
        let now = Timestamp::now();
        // Renewing costs a write, so it waits until half the lease is gone; the check that the
        // task is still ours is a read, made every time.
        if now.until(self.until) > self.lease / 2 {
            return match self.tasks.get(self.id) {
                Ok(Some(task)) if lifecycle::renew(&task, self.runner, now, self.lease).is_ok() => {
                    Ok(())
                }
                Ok(_) => Err(Revoked),
                // A store that cannot be read says nothing about the task: keep going.
                Err(_) => Ok(()),
            };
        }
        let renewed = self.tasks.update(self.id, |task| {
            lifecycle::renew(task, self.runner, now, self.lease).map(|next| Change::Write(next, ()))
        });
        match renewed {
            Ok(updated) => {
                self.until = updated.task.lease_until.unwrap_or(now);
                Ok(())
            }
            Err(UpdateError::Refused(_) | UpdateError::NotFound) => Err(Revoked),
            Err(UpdateError::Contended | UpdateError::Read(_)) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryKeyValue;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn settings() -> WorkerSettings {
        WorkerSettings {
            lease: Duration::from_secs(30),
            default_job: "noop".into(),
        }
    }

    fn worker() -> Worker<MemoryKeyValue> {
        Worker::new(
            Tasks::new(MemoryKeyValue::default()),
            Jobs::samples(),
            settings(),
        )
    }

    fn create(worker: &Worker<impl KeyValue>, fields: Value) -> Task {
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        worker
            .tasks
            .insert(Task::new(Timestamp::now(), None, fields))
            .unwrap()
    }

    fn message(task: &Task) -> Vec<u8> {
        DispatchMessage::for_task(task).to_bytes()
    }

    fn stored(worker: &Worker<impl KeyValue>, task: &Task) -> Task {
        worker.tasks.get(&task.id).unwrap().unwrap()
    }

    #[test]
    fn a_noop_task_is_done_after_one_attempt() {
        let worker = worker();
        let task = create(&worker, json!({"job": "noop"}));
        assert_eq!(
            worker.handle(&message(&task)).unwrap(),
            Handled::Finished(TaskStatus::Done)
        );
        let done = stored(&worker, &task);
        assert_eq!(done.status, TaskStatus::Done);
        assert_eq!(done.attempts.len(), 1);
        assert_eq!(done.lease_until, None);
    }

    #[test]
    fn a_task_without_a_job_runs_the_default_job() {
        let worker = Worker::new(
            Tasks::new(MemoryKeyValue::default()),
            Jobs::samples(),
            WorkerSettings {
                default_job: "fail".into(),
                ..settings()
            },
        );
        let task = create(&worker, json!({"message": "by default"}));
        assert_eq!(
            worker.handle(&message(&task)).unwrap(),
            Handled::Finished(TaskStatus::Failed)
        );
        assert_eq!(
            stored(&worker, &task).detail.unwrap().as_str(),
            "by default"
        );
    }

    #[test]
    fn a_failing_job_records_its_message() {
        let worker = worker();
        let task = create(&worker, json!({"job": "fail", "message": "out of memory"}));
        worker.handle(&message(&task)).unwrap();
        let failed = stored(&worker, &task);
        assert_eq!(failed.status, TaskStatus::Failed);
        assert_eq!(failed.detail.unwrap().as_str(), "out of memory");
    }

    #[test]
    fn an_unknown_job_is_refused_with_its_name() {
        let worker = worker();
        let task = create(&worker, json!({"job": "mine-bitcoin"}));
        assert_eq!(worker.handle(&message(&task)).unwrap(), Handled::Refused);
        let refused = stored(&worker, &task);
        assert_eq!(refused.status, TaskStatus::Refused);
        assert_eq!(
            refused.detail.unwrap().as_str(),
            "unknown job `mine-bitcoin`"
        );
        assert!(refused.attempts.is_empty());
    }

    #[test]
    fn a_sleep_task_needs_a_duration() {
        let worker = worker();
        let task = create(&worker, json!({"job": "sleep", "ms": "soon"}));
        worker.handle(&message(&task)).unwrap();
        assert_eq!(stored(&worker, &task).status, TaskStatus::Failed);
    }

    #[test]
    fn a_second_delivery_of_the_same_dispatch_runs_nothing() {
        let worker = worker();
        let task = create(&worker, json!({"job": "noop"}));
        worker.handle(&message(&task)).unwrap();
        assert_eq!(
            worker.handle(&message(&task)).unwrap(),
            Handled::Dropped(NotForThisWorker::NotPending(TaskStatus::Done))
        );
        assert_eq!(stored(&worker, &task).attempts.len(), 1);
    }

    #[test]
    fn a_canceled_pending_task_is_never_started() {
        let worker = worker();
        let task = create(&worker, json!({"job": "noop"}));
        worker.tasks.cancel(&task.id, Timestamp::now()).unwrap();
        assert_eq!(
            worker.handle(&message(&task)).unwrap(),
            Handled::Dropped(NotForThisWorker::NotPending(TaskStatus::Canceled))
        );
        let canceled = stored(&worker, &task);
        assert_eq!(canceled.status, TaskStatus::Canceled);
        assert!(canceled.attempts.is_empty());
    }

    #[test]
    fn a_stale_dispatch_is_dropped() {
        let worker = worker();
        let task = create(&worker, json!({"job": "noop"}));
        let mut old = task.clone();
        old.broker_id = TaskId::generate(Timestamp::now());
        assert_eq!(
            worker.handle(&message(&old)).unwrap(),
            Handled::Dropped(NotForThisWorker::StaleDispatch)
        );
        assert_eq!(stored(&worker, &task).status, TaskStatus::Pending);
    }

    #[test]
    fn malformed_messages_and_unknown_tasks_change_nothing() {
        let worker = worker();
        assert!(matches!(
            worker.handle(b"not json"),
            Err(WorkerError::Malformed(_))
        ));
        assert!(matches!(
            worker.handle(br#"{"task_id": "x"}"#),
            Err(WorkerError::Malformed(_))
        ));
        let ghost = Task::new(Timestamp::now(), None, Default::default());
        assert_eq!(
            worker.handle(&message(&ghost)).unwrap(),
            Handled::UnknownTask
        );
    }

    /// A job that cancels its own task halfway, as a user would from another request.
    struct CanceledMidway(Arc<Tasks<Arc<MemoryKeyValue>>>);

    impl Job for CanceledMidway {
        fn run(&self, task: &Task, lease: &mut dyn Lease) -> anyhow::Result<Option<String>> {
            lease.keep_alive()?;
            self.0.cancel(&task.id, Timestamp::now()).unwrap();
            Ok(Some("finished anyway".into()))
        }
    }

    impl<T: KeyValue> KeyValue for Arc<T> {
        type Cas = T::Cas;
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
            (**self).get(key)
        }
        fn get_many(
            &self,
            keys: &[String],
        ) -> Result<Vec<Option<Vec<u8>>>, crate::store::StoreError> {
            (**self).get_many(keys)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), crate::store::StoreError> {
            (**self).set(key, value)
        }
        fn watch(&self, key: &str) -> Result<(T::Cas, Option<Vec<u8>>), crate::store::StoreError> {
            (**self).watch(key)
        }
        fn swap(&self, cas: T::Cas, value: &[u8]) -> Result<bool, crate::store::StoreError> {
            (**self).swap(cas, value)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, crate::store::StoreError> {
            (**self).increment(key, delta)
        }
    }

    #[test]
    fn a_job_that_finishes_after_its_task_was_canceled_leaves_it_canceled() {
        let store = Arc::new(MemoryKeyValue::default());
        let other_request = Arc::new(Tasks::new(store.clone()));
        let worker = Worker::new(
            Tasks::new(store),
            Jobs::default().with("midway", CanceledMidway(other_request)),
            settings(),
        );
        let task = create(&worker, json!({"job": "midway"}));
        assert_eq!(
            worker.handle(&message(&task)).unwrap(),
            Handled::OutcomeDropped
        );
        let canceled = stored(&worker, &task);
        assert_eq!(canceled.status, TaskStatus::Canceled);
        assert_eq!(
            canceled.attempts[0].outcome,
            Some(crate::task::AttemptOutcome::Canceled)
        );
    }

    #[test]
    fn a_sleeping_job_stops_at_its_next_check_once_canceled() {
        let store = Arc::new(MemoryKeyValue::default());
        let worker = Worker::new(Tasks::new(store.clone()), Jobs::samples(), settings());
        let task = create(&worker, json!({"job": "sleep", "ms": 60_000}));
        let canceller = {
            let tasks = Tasks::new(store);
            let id = task.id.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(120));
                tasks.cancel(&id, Timestamp::now()).unwrap();
            })
        };
        // Returns long before the 60 s the job asked for.
        assert_eq!(
            worker.handle(&message(&task)).unwrap(),
            Handled::OutcomeDropped
        );
        canceller.join().unwrap();
        assert_eq!(stored(&worker, &task).status, TaskStatus::Canceled);
    }

    #[test]
    fn a_long_job_renews_its_lease() {
        let worker = Worker::new(
            Tasks::new(MemoryKeyValue::default()),
            Jobs::samples(),
            WorkerSettings {
                lease: Duration::from_millis(100),
                ..settings()
            },
        );
        let task = create(&worker, json!({"job": "sleep", "ms": 400}));
        assert_eq!(
            worker.handle(&message(&task)).unwrap(),
            Handled::Finished(TaskStatus::Done)
        );
        // Insert, claim and finish make revision 2; each renewal of the 100 ms lease adds one.
        assert!(stored(&worker, &task).revision > 3);
    }
}
