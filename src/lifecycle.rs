//! The status rules: which changes a task allows, as pure functions of the task and the time.
//!
//! Each rule returns the task as it should be written next, or says why it refuses; storage
//! applies the result with a compare-and-swap and runs the rule again on a fresher task if
//! another writer got there first.

use std::time::Duration;

use crate::task::{Attempt, AttemptOutcome, Detail, Task, TaskId, TaskStatus, Timestamp};

/// What a restart asks of a task.
#[derive(Debug, PartialEq)]
// Decisions are moved once, straight into storage: boxing the task would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Restart {
    /// The task goes back to `pending` under a new dispatch, which must now be sent.
    Dispatch(Task),
    /// The task's worker is alive (its lease has not run out): it is left as it is.
    StillRunning,
}

/// Restarts a task under the dispatch `broker_id`.
///
/// Any task but one whose worker still holds its lease may be restarted. The attempt of a
/// worker whose lease ran out is recorded as abandoned: if that worker ever reports, its
/// outcome no longer counts.
pub fn restart(task: &Task, now: Timestamp, broker_id: TaskId) -> Restart {
    if task.status == TaskStatus::Processing && lease_is_live(task, now) {
        return Restart::StillRunning;
    }
    let mut next = task.clone();
    end_running_attempt(&mut next, now, AttemptOutcome::Abandoned);
    next.status = TaskStatus::Pending;
    next.detail = None;
    next.broker_id = broker_id;
    next.lease_until = None;
    Restart::Dispatch(touched(next, now))
}

/// Sends a task again under the dispatch `broker_id` if its last dispatch seems lost: it has
/// been `pending` since before `overdue_since`, or it is `processing` under a lease that ran out
/// (its worker died). `None` for any other task.
///
/// The new dispatch voids the old one and moves `updated_at`, so a task is redispatched once per
/// overdue period however many callers race.
pub fn redispatch(
    task: &Task,
    now: Timestamp,
    overdue_since: Timestamp,
    broker_id: TaskId,
) -> Option<Task> {
    match task.status {
        TaskStatus::Pending if task.updated_at <= overdue_since => {
            let mut next = task.clone();
            next.broker_id = broker_id;
            Some(touched(next, now))
        }
        TaskStatus::Processing if !lease_is_live(task, now) => {
            match restart(task, now, broker_id) {
                Restart::Dispatch(next) => Some(next),
                Restart::StillRunning => None,
            }
        }
        _ => None,
    }
}

/// What a cancel asks of a task.
#[derive(Debug, PartialEq)]
// Decisions are moved once, straight into storage: boxing the task would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Cancel {
    /// The task is now `canceled`, and its dispatch void.
    Canceled(Task),
    /// It was canceled before: nothing to write.
    AlreadyCanceled,
}

/// The task's job already reached an outcome; cancel does not rewrite history.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyFinished(pub TaskStatus);

/// Cancels a `pending` or `processing` task.
///
/// A pending task's dispatch is voided by the status alone: workers only claim `pending` tasks.
/// A running job is not interrupted here; its worker sees the cancel at its next lease renewal
/// and its outcome is dropped when it reports.
pub fn cancel(task: &Task, now: Timestamp) -> Result<Cancel, AlreadyFinished> {
    match task.status {
        TaskStatus::Canceled => Ok(Cancel::AlreadyCanceled),
        status if status.is_finished() => Err(AlreadyFinished(status)),
        _ => {
            let mut next = task.clone();
            end_running_attempt(&mut next, now, AttemptOutcome::Canceled);
            next.status = TaskStatus::Canceled;
            next.detail = None;
            next.lease_until = None;
            Ok(Cancel::Canceled(touched(next, now)))
        }
    }
}

/// Why a worker leaves a task alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotForThisWorker {
    /// The message is an old dispatch: the task was restarted since.
    StaleDispatch,
    /// The task is not waiting for a worker: it was claimed by another, canceled or finished.
    NotPending(TaskStatus),
    /// The worker's claim is gone: the task was canceled, or restarted after its lease ran out.
    ClaimLost,
}

/// Claims a task for the worker run `runner`, which answers dispatch `broker_id`.
///
/// Only a `pending` task whose current dispatch is `broker_id` can be claimed: this is what makes
/// a canceled or restarted dispatch void, and what lets only one of several workers that received
/// the same message run it.
pub fn claim(
    task: &Task,
    broker_id: &TaskId,
    runner: TaskId,
    now: Timestamp,
    lease: Duration,
) -> Result<Task, NotForThisWorker> {
    ensure_claimable(task, broker_id)?;
    let mut next = task.clone();
    next.status = TaskStatus::Processing;
    next.detail = None;
    next.lease_until = Some(now + lease);
    next.attempts.push(Attempt {
        broker_id: broker_id.clone(),
        runner,
        started_at: now,
        ended_at: None,
        outcome: None,
    });
    Ok(touched(next, now))
}

/// Refuses a task the worker cannot run (for example, one naming an unknown job).
pub fn refuse(
    task: &Task,
    broker_id: &TaskId,
    now: Timestamp,
    detail: Detail,
) -> Result<Task, NotForThisWorker> {
    ensure_claimable(task, broker_id)?;
    let mut next = task.clone();
    next.status = TaskStatus::Refused;
    next.detail = Some(detail);
    Ok(touched(next, now))
}

/// Extends the lease of the worker run `runner` to `lease` from now.
pub fn renew(
    task: &Task,
    runner: &TaskId,
    now: Timestamp,
    lease: Duration,
) -> Result<Task, NotForThisWorker> {
    ensure_held_by(task, runner)?;
    let mut next = task.clone();
    next.lease_until = Some(now + lease);
    Ok(touched(next, now))
}

/// What a job reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Done(Option<Detail>),
    Failed(Detail),
}

/// Records the outcome of the job run `runner`, if the task is still that run's to finish.
///
/// A task canceled or restarted while its job ran keeps the state it was given then.
pub fn finish(
    task: &Task,
    runner: &TaskId,
    now: Timestamp,
    outcome: JobOutcome,
) -> Result<Task, NotForThisWorker> {
    ensure_held_by(task, runner)?;
    let mut next = task.clone();
    let (status, detail, attempt_outcome) = match outcome {
        JobOutcome::Done(detail) => (TaskStatus::Done, detail, AttemptOutcome::Done),
        JobOutcome::Failed(detail) => (TaskStatus::Failed, Some(detail), AttemptOutcome::Failed),
    };
    end_running_attempt(&mut next, now, attempt_outcome);
    next.status = status;
    next.detail = detail;
    next.lease_until = None;
    Ok(touched(next, now))
}

/// Whether a `processing` task's worker may still be alive.
pub fn lease_is_live(task: &Task, now: Timestamp) -> bool {
    task.lease_until.is_some_and(|until| until > now)
}

fn ensure_claimable(task: &Task, broker_id: &TaskId) -> Result<(), NotForThisWorker> {
    if &task.broker_id != broker_id {
        Err(NotForThisWorker::StaleDispatch)
    } else if task.status != TaskStatus::Pending {
        Err(NotForThisWorker::NotPending(task.status))
    } else {
        Ok(())
    }
}

fn ensure_held_by(task: &Task, runner: &TaskId) -> Result<(), NotForThisWorker> {
    let held = task.status == TaskStatus::Processing
        && task
            .running_attempt()
            .is_some_and(|attempt| &attempt.runner == runner);
    if held {
        Ok(())
    } else {
        Err(NotForThisWorker::ClaimLost)
    }
}

fn end_running_attempt(task: &mut Task, now: Timestamp, outcome: AttemptOutcome) {
    if let Some(attempt) = task.attempts.last_mut().filter(|a| a.outcome.is_none()) {
        attempt.ended_at = Some(now);
        attempt.outcome = Some(outcome);
    }
}

fn touched(mut task: Task, now: Timestamp) -> Task {
    task.updated_at = now;
    task.revision += 1;
    task
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    const LEASE: Duration = Duration::from_secs(30);

    fn now() -> Timestamp {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    fn pending() -> Task {
        Task::new(now(), None, Map::new())
    }

    fn id() -> TaskId {
        TaskId::generate(now())
    }

    fn processing(runner: &TaskId) -> Task {
        let task = pending();
        claim(&task, &task.broker_id.clone(), runner.clone(), now(), LEASE).unwrap()
    }

    fn with_status(status: TaskStatus) -> Task {
        let runner = id();
        match status {
            TaskStatus::Pending => pending(),
            TaskStatus::Processing => processing(&runner),
            TaskStatus::Done => {
                finish(&processing(&runner), &runner, now(), JobOutcome::Done(None)).unwrap()
            }
            TaskStatus::Failed => {
                let detail = Detail::truncated("boom");
                finish(
                    &processing(&runner),
                    &runner,
                    now(),
                    JobOutcome::Failed(detail),
                )
                .unwrap()
            }
            TaskStatus::Canceled => match cancel(&pending(), now()).unwrap() {
                Cancel::Canceled(task) => task,
                Cancel::AlreadyCanceled => unreachable!(),
            },
            TaskStatus::Refused => {
                let task = pending();
                refuse(
                    &task,
                    &task.broker_id.clone(),
                    now(),
                    Detail::truncated("no"),
                )
                .unwrap()
            }
        }
    }

    #[test]
    fn every_status_but_a_live_processing_one_restarts_to_pending_under_a_new_dispatch() {
        for status in TaskStatus::ALL {
            let task = with_status(status);
            let broker_id = id();
            match restart(&task, now(), broker_id.clone()) {
                Restart::Dispatch(next) => {
                    assert_ne!(status, TaskStatus::Processing);
                    assert_eq!(next.status, TaskStatus::Pending);
                    assert_eq!(next.broker_id, broker_id);
                    assert_eq!(next.detail, None);
                    assert_eq!(next.revision, task.revision + 1);
                    assert_eq!(next.id, task.id);
                }
                Restart::StillRunning => assert_eq!(status, TaskStatus::Processing),
            }
        }
    }

    #[test]
    fn a_processing_task_whose_lease_ran_out_restarts_and_its_attempt_is_abandoned() {
        let runner = id();
        let task = processing(&runner);
        let later = now() + LEASE + Duration::from_secs(1);
        let Restart::Dispatch(next) = restart(&task, later, id()) else {
            panic!("an expired lease must allow a restart");
        };
        assert_eq!(next.status, TaskStatus::Pending);
        assert_eq!(next.lease_until, None);
        assert_eq!(next.attempts[0].outcome, Some(AttemptOutcome::Abandoned));
        assert_eq!(next.attempts[0].ended_at, Some(later));
        // The abandoned worker, should it come back, records nothing.
        assert_eq!(
            finish(&next, &runner, later, JobOutcome::Done(None)),
            Err(NotForThisWorker::ClaimLost)
        );
    }

    #[test]
    fn pending_and_processing_tasks_cancel() {
        for status in [TaskStatus::Pending, TaskStatus::Processing] {
            let Ok(Cancel::Canceled(next)) = cancel(&with_status(status), now()) else {
                panic!("{status} must cancel");
            };
            assert_eq!(next.status, TaskStatus::Canceled);
            assert_eq!(next.lease_until, None);
        }
    }

    #[test]
    fn cancel_of_a_canceled_task_changes_nothing() {
        let task = with_status(TaskStatus::Canceled);
        assert_eq!(cancel(&task, now()), Ok(Cancel::AlreadyCanceled));
    }

    #[test]
    fn finished_tasks_refuse_cancel() {
        for status in [TaskStatus::Done, TaskStatus::Failed, TaskStatus::Refused] {
            assert_eq!(
                cancel(&with_status(status), now()),
                Err(AlreadyFinished(status))
            );
        }
    }

    #[test]
    fn canceling_a_running_task_ends_its_attempt_and_voids_its_outcome() {
        let runner = id();
        let Ok(Cancel::Canceled(canceled)) = cancel(&processing(&runner), now()) else {
            panic!("processing must cancel");
        };
        assert_eq!(canceled.attempts[0].outcome, Some(AttemptOutcome::Canceled));
        for outcome in [
            JobOutcome::Done(None),
            JobOutcome::Failed(Detail::truncated("x")),
        ] {
            assert_eq!(
                finish(&canceled, &runner, now(), outcome),
                Err(NotForThisWorker::ClaimLost)
            );
        }
        assert_eq!(
            renew(&canceled, &runner, now(), LEASE),
            Err(NotForThisWorker::ClaimLost)
        );
    }

    #[test]
    fn only_a_pending_task_under_the_same_dispatch_is_claimed() {
        let task = pending();
        let broker = task.broker_id.clone();
        let claimed = claim(&task, &broker, id(), now(), LEASE).unwrap();
        assert_eq!(claimed.status, TaskStatus::Processing);
        assert_eq!(claimed.lease_until, Some(now() + LEASE));
        assert_eq!(claimed.attempts.len(), 1);

        assert_eq!(
            claim(&task, &id(), id(), now(), LEASE),
            Err(NotForThisWorker::StaleDispatch)
        );
        assert_eq!(
            claim(&claimed, &broker, id(), now(), LEASE),
            Err(NotForThisWorker::NotPending(TaskStatus::Processing))
        );
        for status in [TaskStatus::Canceled, TaskStatus::Done, TaskStatus::Refused] {
            let task = with_status(status);
            let broker = task.broker_id.clone();
            assert_eq!(
                claim(&task, &broker, id(), now(), LEASE),
                Err(NotForThisWorker::NotPending(status))
            );
        }
    }

    #[test]
    fn only_the_claiming_run_renews_and_finishes() {
        let runner = id();
        let task = processing(&runner);
        let later = now() + Duration::from_secs(10);
        assert_eq!(
            renew(&task, &runner, later, LEASE).unwrap().lease_until,
            Some(later + LEASE)
        );
        assert_eq!(
            renew(&task, &id(), later, LEASE),
            Err(NotForThisWorker::ClaimLost)
        );

        let done = finish(&task, &runner, later, JobOutcome::Done(None)).unwrap();
        assert_eq!(done.status, TaskStatus::Done);
        assert_eq!(done.lease_until, None);
        assert_eq!(done.attempts[0].outcome, Some(AttemptOutcome::Done));
        assert_eq!(done.attempts[0].ended_at, Some(later));
        assert_eq!(
            finish(&done, &runner, later, JobOutcome::Done(None)),
            Err(NotForThisWorker::ClaimLost)
        );
    }

    #[test]
    fn a_failure_records_its_detail() {
        let runner = id();
        let detail = Detail::truncated("disk full");
        let failed = finish(
            &processing(&runner),
            &runner,
            now(),
            JobOutcome::Failed(detail.clone()),
        );
        let failed = failed.unwrap();
        assert_eq!(failed.status, TaskStatus::Failed);
        assert_eq!(failed.detail, Some(detail));
        assert_eq!(failed.attempts[0].outcome, Some(AttemptOutcome::Failed));
    }

    #[test]
    fn refusal_needs_the_current_dispatch() {
        let task = pending();
        let refused = refuse(
            &task,
            &task.broker_id.clone(),
            now(),
            Detail::truncated("no"),
        );
        assert_eq!(refused.unwrap().status, TaskStatus::Refused);
        assert_eq!(
            refuse(&task, &id(), now(), Detail::truncated("no")),
            Err(NotForThisWorker::StaleDispatch)
        );
    }

    #[test]
    fn only_overdue_pending_tasks_and_tasks_of_dead_workers_are_redispatched() {
        let overdue_since = now() + Duration::from_secs(60);
        let later = overdue_since + Duration::from_secs(1);
        for status in TaskStatus::ALL {
            let task = with_status(status);
            let broker_id = id();
            let next = redispatch(&task, later, overdue_since, broker_id.clone());
            match status {
                TaskStatus::Pending | TaskStatus::Processing => {
                    let next = next.unwrap_or_else(|| panic!("{status} must be redispatched"));
                    assert_eq!(next.status, TaskStatus::Pending);
                    assert_eq!(next.broker_id, broker_id);
                    assert_eq!(next.updated_at, later);
                }
                _ => assert_eq!(next, None, "{status}"),
            }
        }
    }

    #[test]
    fn a_recently_dispatched_or_live_task_is_not_redispatched() {
        let overdue_since = now() - Duration::from_secs(1);
        assert_eq!(redispatch(&pending(), now(), overdue_since, id()), None);
        let running = processing(&id());
        assert_eq!(
            redispatch(&running, now() + LEASE / 2, now() + LEASE, id()),
            None
        );
    }

    #[test]
    fn every_change_moves_the_revision_and_the_update_time() {
        let task = pending();
        let later = now() + Duration::from_secs(5);
        let Ok(Cancel::Canceled(next)) = cancel(&task, later) else {
            unreachable!()
        };
        assert_eq!(next.revision, 1);
        assert_eq!(next.updated_at, later);
        assert_eq!(next.created_at, task.created_at);
    }
}
