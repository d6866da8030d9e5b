//! Property tests: the status rules under any interleaving of requests and workers, and the
//! endpoints under any query string or body.

use http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::Map;
use spin_task_helpers::api::{Api, ApiRequest, ApiSettings};
use spin_task_helpers::dispatch::{DispatchError, DispatchMessage, Dispatcher};
use spin_task_helpers::lifecycle::{self, Cancel, JobOutcome, Restart};
use spin_task_helpers::store::{MemoryKeyValue, Tasks};
use spin_task_helpers::task::{Detail, Task, TaskId, TaskStatus, Timestamp};
use spin_task_helpers::TaskResponse;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);
const WORKERS: usize = 3;

/// One thing that can happen to a task.
#[derive(Clone, Debug)]
enum Event {
    Cancel,
    Restart,
    Redispatch,
    /// Worker `n` claims the task with the dispatch it received (current or an old one).
    Claim {
        worker: usize,
        stale: bool,
    },
    Renew {
        worker: usize,
    },
    Finish {
        worker: usize,
        failed: bool,
    },
    /// Time passes, in seconds.
    Wait(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Cancel),
        Just(Event::Restart),
        Just(Event::Redispatch),
        (0..WORKERS, any::<bool>()).prop_map(|(worker, stale)| Event::Claim { worker, stale }),
        (0..WORKERS).prop_map(|worker| Event::Renew { worker }),
        (0..WORKERS, any::<bool>()).prop_map(|(worker, failed)| Event::Finish { worker, failed }),
        (1..45u64).prop_map(Event::Wait),
    ]
}

/// The task and what each worker holds, as the events play out.
struct World {
    task: Task,
    now: Timestamp,
    /// The runner id each worker claimed with, if it did.
    runners: [Option<TaskId>; WORKERS],
    /// The dispatch each worker received last.
    old_broker: TaskId,
    /// Set by a cancel that answered 200; cleared by a restart or redispatch.
    canceled_by_user: bool,
    claims_per_dispatch: std::collections::HashMap<TaskId, usize>,
}

impl World {
    fn new() -> Self {
        let now: Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let task = Task::new(now, None, Map::new());
        Self {
            old_broker: task.broker_id.clone(),
            task,
            now,
            runners: Default::default(),
            canceled_by_user: false,
            claims_per_dispatch: Default::default(),
        }
    }

    fn apply(&mut self, event: &Event) {
        let before = self.task.clone();
        let next = match event {
            Event::Cancel => match lifecycle::cancel(&self.task, self.now) {
                Ok(Cancel::Canceled(next)) => {
                    self.canceled_by_user = true;
                    Some(next)
                }
                Ok(Cancel::AlreadyCanceled) => {
                    self.canceled_by_user = true;
                    None
                }
                Err(_) => {
                    assert!(self.task.status.is_finished());
                    None
                }
            },
            Event::Restart => {
                let broker = TaskId::generate(self.now);
                match lifecycle::restart(&self.task, self.now, broker) {
                    Restart::Dispatch(next) => {
                        self.canceled_by_user = false;
                        self.old_broker = before.broker_id.clone();
                        Some(next)
                    }
                    Restart::StillRunning => {
                        assert_eq!(self.task.status, TaskStatus::Processing);
                        None
                    }
                }
            }
            Event::Redispatch => {
                let broker = TaskId::generate(self.now);
                let overdue_since = self.now - Duration::from_secs(60);
                let next = lifecycle::redispatch(&self.task, self.now, overdue_since, broker);
                if next.is_some() {
                    assert!(matches!(
                        before.status,
                        TaskStatus::Pending | TaskStatus::Processing
                    ));
                    self.old_broker = before.broker_id.clone();
                }
                next
            }
            Event::Claim { worker, stale } => {
                let broker = if *stale {
                    self.old_broker.clone()
                } else {
                    self.task.broker_id.clone()
                };
                let runner = TaskId::generate(self.now);
                let next =
                    lifecycle::claim(&self.task, &broker, runner.clone(), self.now, LEASE).ok();
                if next.is_some() {
                    self.runners[*worker] = Some(runner);
                    *self.claims_per_dispatch.entry(broker).or_default() += 1;
                }
                next
            }
            Event::Renew { worker } => self.runners[*worker]
                .as_ref()
                .and_then(|runner| lifecycle::renew(&self.task, runner, self.now, LEASE).ok()),
            Event::Finish { worker, failed } => {
                let outcome = if *failed {
                    JobOutcome::Failed(Detail::truncated("failed"))
                } else {
                    JobOutcome::Done(None)
                };
                self.runners[*worker].as_ref().and_then(|runner| {
                    lifecycle::finish(&self.task, runner, self.now, outcome).ok()
                })
            }
            Event::Wait(seconds) => {
                self.now = self.now + Duration::from_secs(*seconds);
                None
            }
        };
        if let Some(next) = next {
            assert_eq!(
                next.revision,
                before.revision + 1,
                "every write is a new revision"
            );
            assert_eq!(next.id, before.id);
            assert_eq!(next.created_at, before.created_at);
            if before.status.is_finished() {
                assert!(
                    matches!(event, Event::Restart),
                    "only a restart changes a finished task: {event:?} changed {:?}",
                    before.status
                );
            }
            self.task = next;
        }
        self.check();
    }

    fn check(&self) {
        let task = &self.task;
        if self.canceled_by_user {
            assert_eq!(
                task.status,
                TaskStatus::Canceled,
                "a 200 cancel was overwritten"
            );
        }
        let running = task.attempts.iter().filter(|a| a.outcome.is_none()).count();
        assert!(running <= 1, "two attempts run at once");
        let processing = task.status == TaskStatus::Processing;
        assert_eq!(processing, task.running_attempt().is_some());
        assert_eq!(processing, task.lease_until.is_some());
        assert!(
            self.claims_per_dispatch.values().all(|claims| *claims == 1),
            "a dispatch was claimed twice"
        );
    }
}

proptest! {
    #[test]
    fn the_status_rules_hold_under_any_interleaving(events in prop::collection::vec(event(), 1..60)) {
        let mut world = World::new();
        for event in &events {
            world.apply(event);
        }
    }
}

struct Sink;

impl Dispatcher for Sink {
    fn dispatch(&self, _: &DispatchMessage) -> Result<(), DispatchError> {
        Ok(())
    }
}

fn api() -> Api<MemoryKeyValue, Sink> {
    Api::new(
        Tasks::new(MemoryKeyValue::default()),
        Sink,
        ApiSettings::default(),
    )
}

proptest! {
    #[test]
    fn any_query_string_gets_an_answer_never_a_panic(query in ".{0,200}", raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let api = api();
        let raw: String = raw.iter().map(|b| format!("%{b:02X}")).collect();
        for query in [query, format!("task_id={raw}"), format!("status={raw}&offset={raw}")] {
            let request = ApiRequest::new(Method::GET, &format!("/list?{query}"), Vec::new());
            for response in [api.list::<TaskResponse>(&request), api.info::<TaskResponse>(&request)] {
                let status = response.status;
                prop_assert!(status == StatusCode::OK || status.is_client_error(), "{status} for {query:?}");
                let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
                prop_assert!(status == StatusCode::OK || body["detail"].is_string());
            }
        }
    }

    #[test]
    fn any_body_gets_an_answer_and_only_objects_make_tasks(body in prop::collection::vec(any::<u8>(), 0..256), json in any_json()) {
        let api = api();
        for body in [body, json.to_string().into_bytes()] {
            let request = ApiRequest::new(Method::POST, "/create", body.clone());
            let response = api.create::<TaskResponse>(&request);
            let is_object = serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_object());
            if response.status == StatusCode::CREATED {
                prop_assert!(is_object);
            } else {
                prop_assert!(response.status.is_client_error(), "{}", response.status);
            }
        }
    }
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("parent_id".to_owned()),
                    Just("job".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..4
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}
