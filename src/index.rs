//! The listing index: `/list` reads about one page of entries and the tasks it returns, however
//! many tasks are stored.
//!
//! Each new task takes the next slot of an atomic counter. Slots fill pages of [`PAGE_SIZE`]
//! entries, each entry the task's id, status and revision; beside each page a small summary
//! counts its entries by status. A listing reads every summary (one batch of about
//! tasks / [`PAGE_SIZE`] small values), skips the pages before the offset by their counts, and
//! reads the entries and tasks of the page it lands on.
//!
//! The task document is the truth; the index follows it. Entries carry the task's revision and
//! only ever move forward, so late writers cannot set an entry back. A listing checks every task
//! it returns against its entry: one that disagrees (a writer stopped between the task and its
//! entry) is left out and its entry repaired, so the index never shows a task wrongly.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::store::{KeyValue, StoreError};
use crate::task::{Task, TaskId, TaskStatus, Timestamp};

/// Entries per page.
pub const PAGE_SIZE: u64 = 1000;

/// The counter of slots handed out.
const SLOTS: &str = "index:slots";

/// How often an index write is tried again before it is left to a later repair.
const MAX_TRIES: usize = 64;

/// How long an entry may point at no task before a listing drops it: a create writes the entry
/// first and the task right after, so only a create that failed in between leaves one for long.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// One task in a page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Entry(TaskId, TaskStatus, u64);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Page {
    /// Incremented by every write, so summaries can tell which page version they describe.
    version: u64,
    entries: Vec<Entry>,
}

/// How many entries of each status a page holds, as of a page version.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Summary {
    version: u64,
    counts: [u64; 6],
}

impl Summary {
    fn of(page: &Page) -> Self {
        let mut counts = [0; 6];
        for Entry(_, status, _) in &page.entries {
            counts[status_index(*status)] += 1;
        }
        Self {
            version: page.version,
            counts,
        }
    }

    fn count(&self, status: Option<TaskStatus>) -> u64 {
        match status {
            Some(status) => self.counts[status_index(status)],
            None => self.counts.iter().sum(),
        }
    }
}

fn status_index(status: TaskStatus) -> usize {
    TaskStatus::ALL
        .iter()
        .position(|s| *s == status)
        .expect("every status is listed")
}

fn page_key(page: u64) -> String {
    format!("index:page:{page}")
}

fn summary_key(page: u64) -> String {
    format!("index:summary:{page}")
}

/// The index of the tasks in one key-value store.
pub struct Index<'a, S> {
    store: &'a S,
}

impl<'a, S: KeyValue> Index<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Self { store }
    }

    /// Takes a slot for a new task and enters it; done before the task is stored, so a stored
    /// task always has its entry.
    pub fn enter(&self, task: &Task) -> Result<u64, StoreError> {
        let slot = self.store.increment(SLOTS, 1)? as u64 - 1;
        self.record(slot / PAGE_SIZE, |entries| {
            entries.push(Entry(task.id.clone(), task.status, task.revision));
            true
        })?;
        Ok(slot)
    }

    /// Brings the task's entry up to date with the task.
    pub fn update(&self, task: &Task) -> Result<(), StoreError> {
        self.record(task.slot / PAGE_SIZE, |entries| {
            match entries.iter_mut().find(|entry| entry.0 == task.id) {
                Some(entry) if entry.2 < task.revision => {
                    *entry = Entry(task.id.clone(), task.status, task.revision);
                    true
                }
                _ => false,
            }
        })
    }

    /// Applies `edit` to a page's entries (unless it returns `false`: nothing to change), then
    /// refreshes the page's summary.
    fn record(
        &self,
        page_number: u64,
        mut edit: impl FnMut(&mut Vec<Entry>) -> bool,
    ) -> Result<(), StoreError> {
        let key = page_key(page_number);
        for _ in 0..MAX_TRIES {
            let (cas, current) = self.store.watch(&key)?;
            let mut page: Page = decode(current)?;
            if !edit(&mut page.entries) {
                return Ok(());
            }
            page.version += 1;
            if self.store.swap(cas, &encode(&page))? {
                return self.summarize(page_number, Summary::of(&page));
            }
        }
        Err(StoreError(format!(
            "page {page_number} of the index kept changing"
        )))
    }

    /// Stores `summary` unless the stored one describes a later page version.
    fn summarize(&self, page: u64, summary: Summary) -> Result<(), StoreError> {
        let key = summary_key(page);
        for _ in 0..MAX_TRIES {
            let (cas, current) = self.store.watch(&key)?;
            let stored: Summary = decode(current)?;
            if stored.version >= summary.version {
                return Ok(());
            }
            if self.store.swap(cas, &encode(&summary))? {
                return Ok(());
            }
        }
        Err(StoreError(format!(
            "the summary of index page {page} kept changing"
        )))
    }

    /// One page of tasks in id order (creation order), optionally of one status only.
    ///
    /// `load` reads tasks by id. Summaries count entries, not checked tasks, so an entry left
    /// stale by an interrupted writer can shift the offset by one until it is repaired.
    pub fn list<E: From<StoreError>>(
        &self,
        status: Option<TaskStatus>,
        offset: usize,
        limit: usize,
        load: impl Fn(&[TaskId]) -> Result<Vec<Option<Task>>, E>,
    ) -> Result<Vec<Task>, E> {
        let slots = self.store.increment(SLOTS, 0)? as u64;
        let pages = slots.div_ceil(PAGE_SIZE);
        let summaries = self.summaries(pages)?;
        let mut to_skip = offset as u64;
        let mut listed = Vec::new();
        for (page_number, summary) in summaries.iter().enumerate() {
            let page_number = page_number as u64;
            if listed.len() >= limit {
                break;
            }
            // A page without a summary (its writer stopped early) is read to find out.
            if let Some(summary) = summary {
                let count = summary.count(status);
                if to_skip >= count {
                    to_skip -= count;
                    continue;
                }
            }
            let page: Page = decode(self.store.get(&page_key(page_number))?)?;
            let mut entries: Vec<&Entry> = page
                .entries
                .iter()
                .filter(|entry| status.is_none_or(|status| entry.1 == status))
                .collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let skipped = entries.len().min(to_skip as usize);
            to_skip -= skipped as u64;
            let wanted: Vec<&Entry> = entries
                .into_iter()
                .skip(skipped)
                .take(limit - listed.len())
                .collect();
            let ids: Vec<TaskId> = wanted.iter().map(|entry| entry.0.clone()).collect();
            for (entry, task) in wanted.into_iter().zip(load(&ids)?) {
                match task {
                    Some(task) if status.is_none_or(|status| task.status == status) => {
                        if task.revision != entry.2 {
                            self.repair(&task);
                        }
                        listed.push(task);
                    }
                    Some(task) => self.repair(&task),
                    None => self.drop_orphan(page_number, &entry.0, Timestamp::now()),
                }
            }
        }
        Ok(listed)
    }

    fn summaries(&self, pages: u64) -> Result<Vec<Option<Summary>>, StoreError> {
        let keys: Vec<String> = (0..pages).map(summary_key).collect();
        self.store
            .get_many(&keys)?
            .into_iter()
            .map(|value| value.map(|bytes| decode(Some(bytes))).transpose())
            .collect()
    }

    /// Entries are only a guide: a failed repair is left for the next listing to try again.
    fn repair(&self, task: &Task) {
        let _ = self.update(task);
    }

    fn drop_orphan(&self, page_number: u64, id: &TaskId, now: Timestamp) {
        if id.created_at().until(now) > ORPHAN_AGE {
            let _ = self.record(page_number, |entries| {
                let before = entries.len();
                entries.retain(|entry| &entry.0 != id);
                entries.len() != before
            });
        }
    }
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("index documents always serialize")
}

fn decode<T: Default + for<'de> Deserialize<'de>>(bytes: Option<Vec<u8>>) -> Result<T, StoreError> {
    match bytes {
        None => Ok(T::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|error| StoreError(format!("an index document is corrupt: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{self, Cancel};
    use crate::store::{MemoryKeyValue, Tasks};
    use serde_json::Map;
    use std::cell::RefCell;

    /// A store that records the keys it is asked to read.
    #[derive(Default)]
    struct Counting {
        inner: MemoryKeyValue,
        reads: RefCell<Vec<String>>,
    }

    impl KeyValue for Counting {
        type Cas = <MemoryKeyValue as KeyValue>::Cas;
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.reads.borrow_mut().push(key.to_owned());
            self.inner.get(key)
        }
        fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
            self.reads.borrow_mut().extend(keys.iter().cloned());
            self.inner.get_many(keys)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.inner.set(key, value)
        }
        fn watch(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
            self.inner.watch(key)
        }
        fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, StoreError> {
            self.inner.swap(cas, value)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            self.inner.increment(key, delta)
        }
    }

    /// `count` tasks, every third canceled; answers their ids in order.
    fn fill(tasks: &Tasks<impl KeyValue>, count: usize) -> (Vec<TaskId>, Vec<TaskId>) {
        let mut all = Vec::new();
        let mut canceled = Vec::new();
        for n in 0..count {
            let task = tasks
                .insert(Task::new(Timestamp::now(), None, Map::new()))
                .unwrap();
            if n % 3 == 0 {
                tasks.cancel(&task.id, Timestamp::now()).unwrap();
                canceled.push(task.id.clone());
            }
            all.push(task.id);
        }
        (all, canceled)
    }

    fn ids(tasks: Vec<Task>) -> Vec<TaskId> {
        tasks.into_iter().map(|task| task.id).collect()
    }

    /// Ids in the order the index lists them: by page, and by id within a page.
    fn index_order(ids: &[TaskId]) -> Vec<TaskId> {
        ids.chunks(PAGE_SIZE as usize)
            .flat_map(|page| {
                let mut page = page.to_vec();
                page.sort();
                page
            })
            .collect()
    }

    #[test]
    fn pages_of_any_offset_match_a_full_scan() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let (all, canceled) = fill(&tasks, 2 * PAGE_SIZE as usize + 300);
        let all = index_order(&all);
        let canceled: Vec<TaskId> = all
            .iter()
            .filter(|id| canceled.contains(id))
            .cloned()
            .collect();
        let pending: Vec<TaskId> = all
            .iter()
            .filter(|id| !canceled.contains(id))
            .cloned()
            .collect();
        for (offset, limit) in [
            (0, 100),
            (950, 100),
            (999, 2),
            (1000, 1000),
            (2250, 100),
            (2300, 5),
            (5000, 10),
        ] {
            let expect = |ids: &[TaskId]| {
                ids.iter()
                    .skip(offset)
                    .take(limit)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                ids(tasks.list(None, offset, limit).unwrap()),
                expect(&all),
                "{offset} {limit}"
            );
            assert_eq!(
                ids(tasks
                    .list(Some(TaskStatus::Canceled), offset, limit)
                    .unwrap()),
                expect(&canceled),
                "canceled {offset} {limit}"
            );
            assert_eq!(
                ids(tasks
                    .list(Some(TaskStatus::Pending), offset, limit)
                    .unwrap()),
                expect(&pending),
                "pending {offset} {limit}"
            );
        }
    }

    #[test]
    fn a_listing_reads_one_page_and_the_tasks_it_returns_whatever_the_total() {
        for (count, pages) in [(1_000, 1), (4_000, 4)] {
            let tasks = Tasks::new(Counting::default());
            fill(&tasks, count);
            for status in [None, Some(TaskStatus::Canceled)] {
                tasks.store().reads.borrow_mut().clear();
                assert_eq!(tasks.list(status, 0, 100).unwrap().len(), 100);
                let reads = tasks.store().reads.borrow();
                let reads_of =
                    |prefix: &str| reads.iter().filter(|key| key.starts_with(prefix)).count();
                assert_eq!(reads_of("task:"), 100, "{count} {status:?}");
                assert_eq!(reads_of("index:page:"), 1, "{count} {status:?}");
                assert_eq!(reads_of("index:summary:"), pages, "{count} {status:?}");
            }
        }
    }

    #[test]
    fn an_entry_left_behind_by_an_interrupted_writer_is_never_shown_and_gets_repaired() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let task = tasks
            .insert(Task::new(Timestamp::now(), None, Map::new()))
            .unwrap();
        // The task is canceled, but its writer stopped before the index heard of it.
        let Ok(Cancel::Canceled(canceled)) = lifecycle::cancel(&task, Timestamp::now()) else {
            unreachable!()
        };
        tasks
            .store()
            .set(&Task::key(&task.id), &encode(&canceled))
            .unwrap();

        assert!(tasks
            .list(Some(TaskStatus::Pending), 0, 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            ids(tasks.list(Some(TaskStatus::Canceled), 0, 10).unwrap()),
            std::slice::from_ref(&task.id)
        );
        assert_eq!(tasks.list(None, 0, 10).unwrap(), [canceled]);
    }

    #[test]
    fn a_late_index_write_cannot_set_an_entry_back() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let task = tasks
            .insert(Task::new(Timestamp::now(), None, Map::new()))
            .unwrap();
        tasks.cancel(&task.id, Timestamp::now()).unwrap();
        // The writer of revision 0 reports last.
        Index::new(tasks.store()).update(&task).unwrap();
        assert_eq!(
            ids(tasks.list(Some(TaskStatus::Canceled), 0, 10).unwrap()),
            [task.id]
        );
    }

    #[test]
    fn an_entry_without_a_task_is_skipped_and_dropped_once_old() {
        let tasks = Tasks::new(MemoryKeyValue::default());
        let index = Index::new(tasks.store());
        let old = Task::new(Timestamp::now() - ORPHAN_AGE * 2, None, Map::new());
        let young = Task::new(Timestamp::now(), None, Map::new());
        index.enter(&old).unwrap();
        index.enter(&young).unwrap();
        let kept = tasks
            .insert(Task::new(Timestamp::now(), None, Map::new()))
            .unwrap();

        assert_eq!(
            ids(tasks.list(None, 0, 10).unwrap()),
            std::slice::from_ref(&kept.id)
        );
        let page: Page = decode(tasks.store().get(&page_key(0)).unwrap()).unwrap();
        let entered: Vec<&TaskId> = page.entries.iter().map(|entry| &entry.0).collect();
        assert_eq!(
            entered,
            [&young.id, &kept.id],
            "only the old orphan is dropped"
        );
    }
}
