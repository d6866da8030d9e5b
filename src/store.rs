//! Task storage on a key-value store with compare-and-swap.
//!
//! [`KeyValue`] is the seam: the Spin adapter implements it on Spin's key-value store, and
//! [`MemoryKeyValue`] implements it in memory for tests. [`Tasks`] holds every storage decision:
//! key layout, serialization, and the compare-and-swap loop that applies the status rules.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::Mutex;

use crate::index::Index;
use crate::lifecycle::{self, AlreadyFinished, Cancel, Restart};
use crate::task::{Task, TaskId, TaskStatus, Timestamp};

/// A failure of the key-value store itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-value store error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// The operations task storage needs from a key-value store.
pub trait KeyValue {
    /// A read made for a later [`KeyValue::swap`].
    type Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads many keys at once; the answer has one entry per key, in order.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Reads `key` to change it with [`KeyValue::swap`].
    fn watch(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError>;

    /// Writes `value` if the key still holds what [`KeyValue::watch`] read: `Ok(true)` if written,
    /// `Ok(false)` if another writer changed it first.
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, StoreError>;

    /// Atomically adds `delta` to the counter at `key` (0 if absent) and answers the sum. A
    /// counter key is only ever read through this.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
}

/// Why stored tasks could not be read.
#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// A stored document is not a task.
    Corrupt(TaskId, String),
    Store(StoreError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(id, reason) => write!(f, "stored task `{id}` is not a task: {reason}"),
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<StoreError> for ReadError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// Why a task could not be changed.
#[derive(Debug, PartialEq)]
pub enum UpdateError<E> {
    NotFound,
    /// The status rules refused the change.
    Refused(E),
    /// Other writers kept changing the task; nothing was written.
    Contended,
    Read(ReadError),
}

impl<E> From<ReadError> for UpdateError<E> {
    fn from(error: ReadError) -> Self {
        Self::Read(error)
    }
}

impl<E> From<StoreError> for UpdateError<E> {
    fn from(error: StoreError) -> Self {
        Self::Read(ReadError::Store(error))
    }
}

/// What a change did.
#[derive(Debug, PartialEq)]
pub struct Updated<T> {
    /// The task as stored after the change.
    pub task: Task,
    /// What the rule decided, besides the task.
    pub decision: T,
}

/// What a status rule asks storage to do.
// Decisions are moved once, straight into storage: boxing the task would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Change<T> {
    /// Write this task.
    Write(Task, T),
    /// Leave the stored task as it is.
    Keep(T),
}

/// Tasks kept in a key-value store, one JSON document each under `task:<id>`, with the
/// [listing index](crate::index) beside them.
pub struct Tasks<S> {
    store: S,
}

/// How often a change is tried again on a fresher task before it gives up as contended.
const MAX_UPDATE_TRIES: usize = 16;

impl<S: KeyValue> Tasks<S> {
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The key-value store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn get(&self, id: &TaskId) -> Result<Option<Task>, ReadError> {
        match self.store.get(&Task::key(id))? {
            Some(bytes) => decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn index(&self) -> Index<'_, S> {
        Index::new(&self.store)
    }

    /// Stores a new task and answers it as stored. Ids carry 64 random bits, so a new id names
    /// no stored task.
    pub fn insert(&self, mut task: Task) -> Result<Task, StoreError> {
        task.slot = self.index().enter(&task)?;
        self.store.set(&Task::key(&task.id), &encode(&task))?;
        Ok(task)
    }

    /// Applies `rule` to the stored task with compare-and-swap, running it again on the fresh
    /// task whenever another writer changed the task in between: no update is lost, and no
    /// decision is made on a stale task.
    pub fn update<T, E>(
        &self,
        id: &TaskId,
        mut rule: impl FnMut(&Task) -> Result<Change<T>, E>,
    ) -> Result<Updated<T>, UpdateError<E>> {
        let key = Task::key(id);
        for _ in 0..MAX_UPDATE_TRIES {
            let (cas, current) = self.store.watch(&key)?;
            let current = current.ok_or(UpdateError::NotFound)?;
            let task = decode(id, &current)?;
            match rule(&task).map_err(UpdateError::Refused)? {
                Change::Keep(decision) => return Ok(Updated { task, decision }),
                Change::Write(next, decision) => {
                    if self.store.swap(cas, &encode(&next))? {
                        // The task is written; an index entry left behind is repaired by the
                        // next listing that meets it.
                        let _ = self.index().update(&next);
                        return Ok(Updated {
                            task: next,
                            decision,
                        });
                    }
                }
            }
        }
        Err(UpdateError::Contended)
    }

    /// Cancels a task (see [`lifecycle::cancel`]) and answers it as stored.
    pub fn cancel(
        &self,
        id: &TaskId,
        now: Timestamp,
    ) -> Result<Task, UpdateError<AlreadyFinished>> {
        let updated = self.update(id, |task| {
            Ok(match lifecycle::cancel(task, now)? {
                Cancel::Canceled(next) => Change::Write(next, ()),
                Cancel::AlreadyCanceled => Change::Keep(()),
            })
        })?;
        Ok(updated.task)
    }

    /// Restarts a task under the dispatch `broker_id` (see [`lifecycle::restart`]); the
    /// decision says whether it must now be dispatched.
    pub fn restart(
        &self,
        id: &TaskId,
        now: Timestamp,
        broker_id: &TaskId,
    ) -> Result<Updated<bool>, UpdateError<Infallible>> {
        self.update(id, |task| {
            Ok(match lifecycle::restart(task, now, broker_id.clone()) {
                Restart::Dispatch(next) => Change::Write(next, true),
                Restart::StillRunning => Change::Keep(false),
            })
        })
    }

    /// Sends a task again under the dispatch `broker_id` if its last one seems lost (see
    /// [`lifecycle::redispatch`]); the decision says whether it must now be dispatched.
    pub fn redispatch(
        &self,
        id: &TaskId,
        now: Timestamp,
        overdue_since: Timestamp,
        broker_id: &TaskId,
    ) -> Result<Updated<bool>, UpdateError<Infallible>> {
        self.update(id, |task| {
            Ok(
                match lifecycle::redispatch(task, now, overdue_since, broker_id.clone()) {
                    Some(next) => Change::Write(next, true),
                    None => Change::Keep(false),
                },
            )
        })
    }

    /// One page of tasks in id order (creation order), optionally of one status only.
    pub fn list(
        &self,
        status: Option<TaskStatus>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Task>, ReadError> {
        self.index()
            .list(status, offset, limit, |ids| self.get_many(ids))
    }

    /// The tasks with these ids, in the same order; `None` where there is none.
    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Option<Task>>, ReadError> {
        let keys: Vec<String> = ids.iter().map(Task::key).collect();
        let values = self.store.get_many(&keys)?;
        ids.iter()
            .zip(values)
            .map(|(id, value)| value.map(|bytes| decode(id, &bytes)).transpose())
            .collect()
    }
}

fn encode(task: &Task) -> Vec<u8> {
    serde_json::to_vec(task).expect("a task always serializes")
}

fn decode(id: &TaskId, bytes: &[u8]) -> Result<Task, ReadError> {
    serde_json::from_slice(bytes).map_err(|error| ReadError::Corrupt(id.clone(), error.to_string()))
}

/// A key-value store in memory, with the compare-and-swap semantics of Spin's.
#[derive(Default)]
pub struct MemoryKeyValue {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

/// A [`MemoryKeyValue`] read for a swap: the key and the value it held.
pub struct MemoryCas {
    key: String,
    seen: Option<Vec<u8>>,
}

impl MemoryKeyValue {
    /// Every key and its value, in key order: to copy the store into another.
    pub fn to_entries(&self) -> Vec<(String, Vec<u8>)> {
        self.entries().clone().into_iter().collect()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl KeyValue for MemoryKeyValue {
    type Cas = MemoryCas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries().get(key).cloned())
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let entries = self.entries();
        Ok(keys.iter().map(|key| entries.get(key).cloned()).collect())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.entries().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn watch(&self, key: &str) -> Result<(MemoryCas, Option<Vec<u8>>), StoreError> {
        let seen = self.get(key)?;
        Ok((
            MemoryCas {
                key: key.to_owned(),
                seen: seen.clone(),
            },
            seen,
        ))
    }

    fn swap(&self, cas: MemoryCas, value: &[u8]) -> Result<bool, StoreError> {
        let mut entries = self.entries();
        if entries.get(&cas.key) != cas.seen.as_ref() {
            return Ok(false);
        }
        entries.insert(cas.key, value.to_vec());
        Ok(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut entries = self.entries();
        let counter = entries
            .entry(key.to_owned())
            .or_insert_with(|| 0i64.to_le_bytes().to_vec());
        let bytes: [u8; 8] = counter
            .as_slice()
            .try_into()
            .map_err(|_| StoreError(format!("`{key}` is not a counter")))?;
        let sum = i64::from_le_bytes(bytes) + delta;
        *counter = sum.to_le_bytes().to_vec();
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use std::cell::Cell;

    fn stored(tasks: &Tasks<MemoryKeyValue>) -> Task {
        tasks
            .insert(Task::new(Timestamp::now(), None, Map::new()))
            .unwrap()
    }

    /// A store where another writer changes the task between a read and its swap, `races` times.
    struct Racing {
        inner: MemoryKeyValue,
        races: Cell<usize>,
    }

    impl KeyValue for Racing {
        type Cas = MemoryCas;
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
            self.inner.get_many(keys)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.inner.set(key, value)
        }
        fn watch(&self, key: &str) -> Result<(MemoryCas, Option<Vec<u8>>), StoreError> {
            let read = self.inner.watch(key)?;
            if self.races.get() > 0 && key.starts_with("task:") {
                self.races.set(self.races.get() - 1);
                let mut task: Task = serde_json::from_slice(read.1.as_ref().unwrap()).unwrap();
                task.revision += 1;
                task.fields
                    .insert("touched_by_other_writer".into(), task.revision.into());
                self.inner.set(key, &encode(&task))?;
            }
            Ok(read)
        }
        fn swap(&self, cas: MemoryCas, value: &[u8]) -> Result<bool, StoreError> {
            self.inner.swap(cas, value)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            self.inner.increment(key, delta)
        }
    }

    #[test]
    fn an_update_that_loses_a_race_is_reapplied_to_the_fresh_task() {
        let tasks = Tasks::new(Racing {
            inner: MemoryKeyValue::default(),
            races: Cell::new(3),
        });
        let task = tasks
            .insert(Task::new(Timestamp::now(), None, Map::new()))
            .unwrap();
        let canceled = tasks.cancel(&task.id, Timestamp::now()).unwrap();
        assert_eq!(canceled.status, TaskStatus::Canceled);
        // The other writer's change survived: it was not overwritten by a stale copy.
        let stored = tasks.get(&task.id).unwrap().unwrap();
        assert_eq!(stored, canceled);
        assert_eq!(stored.fields["touched_by_other_writer"], 3);
    }

    #[test]
    fn an_update_that_always_loses_gives_up_without_writing() {
        let tasks = Tasks::new(Racing {
            inner: MemoryKeyValue::default(),
            races: Cell::new(usize::MAX),
        });
        let task = tasks
            .insert(Task::new(Timestamp::now(), None, Map::new()))
            .unwrap();
        assert_eq!(
            tasks.cancel(&task.id, Timestamp::now()),
            Err(UpdateError::Contended)
        );
        let stored = tasks.get(&task.id).unwrap().unwrap();
        assert_eq!(stored.status, TaskStatus::Pending);
    }

    #[test]
    fn a_refused_change_writes_nothing() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let task = stored(&tasks);
        let refused = tasks.update(&task.id, |_| Err::<Change<()>, _>("no"));
        assert_eq!(refused, Err(UpdateError::Refused("no")));
        assert_eq!(tasks.get(&task.id).unwrap().unwrap(), task);
    }

    #[test]
    fn updating_an_unknown_task_is_not_found() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let id = TaskId::generate(Timestamp::now());
        assert_eq!(
            tasks.cancel(&id, Timestamp::now()),
            Err(UpdateError::NotFound)
        );
    }

    #[test]
    fn a_document_that_is_not_a_task_is_reported_corrupt() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let id = TaskId::generate(Timestamp::now());
        tasks.store().set(&Task::key(&id), b"{\"id\": 1}").unwrap();
        assert!(matches!(tasks.get(&id), Err(ReadError::Corrupt(bad, _)) if bad == id));
    }

    #[test]
    fn lists_in_id_order_with_the_status_filter_applied_before_the_page() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let mut all: Vec<Task> = (0..10).map(|_| stored(&tasks)).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        for task in all.iter().step_by(2) {
            tasks.cancel(&task.id, Timestamp::now()).unwrap();
        }
        tasks.store().set("unrelated", b"not a task").unwrap();

        let ids = |page: Vec<Task>| page.into_iter().map(|t| t.id).collect::<Vec<_>>();
        let expected: Vec<TaskId> = all.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids(tasks.list(None, 0, 100).unwrap()), expected);
        assert_eq!(ids(tasks.list(None, 3, 4).unwrap()), expected[3..7]);

        let canceled: Vec<TaskId> = expected.iter().step_by(2).cloned().collect();
        let pending: Vec<TaskId> = expected.iter().skip(1).step_by(2).cloned().collect();
        assert_eq!(
            ids(tasks.list(Some(TaskStatus::Canceled), 0, 100).unwrap()),
            canceled
        );
        assert_eq!(
            ids(tasks.list(Some(TaskStatus::Pending), 1, 2).unwrap()),
            pending[1..3]
        );
        assert!(tasks
            .list(Some(TaskStatus::Done), 0, 100)
            .unwrap()
            .is_empty());
        assert!(tasks.list(None, 10, 100).unwrap().is_empty());
    }
}
