//! The key-value store: Spin's default SQLite store, shared by every component.
//!
//! Same file (`<state-dir>/sqlite_key_value.db`), table and statements as Spin's
//! store, so its quirks carry over: `swap` compares against the bytes `current()`
//! read and writes unconditionally when `current()` was never called or found no
//! key; `increment` keeps 8 little-endian bytes. One connection behind a mutex
//! serialises every operation, which is also what Spin does.

pub mod host;

use std::path::Path;
use std::rc::Rc;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The store's file in the state directory, named as Spin names it.
pub const FILE_NAME: &str = "sqlite_key_value.db";

/// What `swap` reports after a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CasMode {
    /// Spin's SQLite store: success exactly when the row was written.
    Sqlite,
    /// Spin 4.0.2's Redis-backed store: the write happens as usual, but `swap`
    /// always reports `cas-failed` (its trailing `UNWATCH <key>` is rejected).
    RedisQuirk,
}

/// The outcome of [`KeyValueStore::swap`].
#[derive(Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    Swapped,
    CasFailed,
}

/// `increment` found a value that is not an 8-byte counter.
#[derive(Debug)]
pub struct IncrementError {
    key: String,
    len: usize,
}

impl std::fmt::Display for IncrementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "increment: key {:?} holds {} bytes, not an 8-byte little-endian counter",
            self.key, self.len
        )
    }
}

impl std::error::Error for IncrementError {}

/// A compare-and-swap in progress; `current` is what [`KeyValueStore::cas_current`] read.
#[derive(Debug)]
pub struct Cas {
    pub label: String,
    pub key: String,
    current: Option<Vec<u8>>,
}

impl Cas {
    pub fn new(label: &str, key: &str) -> Self {
        Self {
            label: label.to_owned(),
            key: key.to_owned(),
            current: None,
        }
    }
}

pub struct KeyValueStore {
    connection: Mutex<Connection>,
    cas_mode: CasMode,
}

const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                      ON CONFLICT(store, key) DO UPDATE SET value=$3";
const SELECT_VALUE: &str = "SELECT value FROM spin_key_value WHERE store=$1 AND key=$2";

impl KeyValueStore {
    pub fn open(path: &Path, cas_mode: CasMode) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create state directory {}", dir.display()))?;
        }
        let connection = Connection::open(path)
            .with_context(|| format!("failed to open key-value database {}", path.display()))?;
        Self::with_connection(connection, cas_mode)
    }

    pub fn open_in_memory(cas_mode: CasMode) -> Result<Self> {
        Self::with_connection(Connection::open_in_memory()?, cas_mode)
    }

    fn with_connection(connection: Connection, cas_mode: CasMode) -> Result<Self> {
        // Several host processes may share one file (an API process and worker processes, as
        // the recommended topology runs them): wait for another's write instead of failing.
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        connection
            .execute(
                "CREATE TABLE IF NOT EXISTS spin_key_value (
                    store TEXT NOT NULL,
                    key   TEXT NOT NULL,
                    value BLOB NOT NULL,
                    PRIMARY KEY (store, key)
                )",
                [],
            )
            .context("failed to create the spin_key_value table")?;
        rusqlite::vtab::array::load_module(&connection)?;
        Ok(Self {
            connection: Mutex::new(connection),
            cas_mode,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        // A panic elsewhere while holding the lock cannot leave SQLite inconsistent.
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&mut connection)?)
    }

    pub fn get(&self, label: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            c.prepare_cached(SELECT_VALUE)?
                .query_row(params![label, key], |r| r.get(0))
                .optional()
        })
    }

    pub fn set(&self, label: &str, key: &str, value: &[u8]) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(UPSERT)?
                .execute(params![label, key, value])
                .map(drop)
        })
    }

    pub fn delete(&self, label: &str, key: &str) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key=$2")?
                .execute(params![label, key])
                .map(drop)
        })
    }

    pub fn exists(&self, label: &str, key: &str) -> Result<bool> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM spin_key_value WHERE store=$1 AND key=$2 LIMIT 1")?
                .exists(params![label, key])
        })
    }

    pub fn keys(&self, label: &str) -> Result<Vec<String>> {
        self.with(|c| {
            c.prepare_cached("SELECT key FROM spin_key_value WHERE store=$1")?
                .query_map(params![label], |r| r.get(0))?
                .collect()
        })
    }

    /// Like Spin, only keys that exist appear in the result (each with `Some`).
    pub fn get_many(&self, label: &str, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT key, value FROM spin_key_value WHERE store=$1 AND key IN rarray($2)",
            )?
            .query_map(params![label, key_array(keys)], |r| {
                Ok((r.get(0)?, Some(r.get(1)?)))
            })?
            .collect()
        })
    }

    pub fn set_many(&self, label: &str, entries: &[(String, Vec<u8>)]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (key, value) in entries {
                tx.prepare_cached(UPSERT)?
                    .execute(params![label, key, value])?;
            }
            tx.commit()
        })
    }

    pub fn delete_many(&self, label: &str, keys: &[String]) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key IN rarray($2)")?
                .execute(params![label, key_array(keys)])
                .map(drop)
        })
    }

    /// Adds `delta` to the 8-byte little-endian counter at `key` (0 if absent).
    ///
    /// Spin's host panics on a value of another length; here that is an error the
    /// caller turns into a trap.
    pub fn increment(&self, label: &str, key: &str, delta: i64) -> Result<i64> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        // Immediate: a read that later writes must hold the write lock from the start, or two
        // processes incrementing at once deadlock instead of waiting for each other.
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<Vec<u8>> = tx
            .prepare_cached(SELECT_VALUE)?
            .query_row(params![label, key], |r| r.get(0))
            .optional()?;
        let current = match current {
            None => 0,
            Some(bytes) => {
                i64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| IncrementError {
                    key: key.to_owned(),
                    len: bytes.len(),
                })?)
            }
        };
        let new = current.wrapping_add(delta);
        tx.prepare_cached(UPSERT)?
            .execute(params![label, key, new.to_le_bytes()])?;
        tx.commit()?;
        Ok(new)
    }

    /// Reads the key's value and remembers it as the value `swap` compares against.
    pub fn cas_current(&self, cas: &mut Cas) -> Result<Option<Vec<u8>>> {
        let value = self.get(&cas.label, &cas.key)?;
        cas.current.clone_from(&value);
        Ok(value)
    }

    pub fn swap(&self, cas: &Cas, value: &[u8]) -> Result<SwapOutcome> {
        let rows = self.with(|c| match &cas.current {
            Some(old) => c
                .prepare_cached(
                    "UPDATE spin_key_value SET value=$1 WHERE store=$2 AND key=$3 AND value=$4",
                )?
                .execute(params![value, cas.label, cas.key, old]),
            None => c
                .prepare_cached(UPSERT)?
                .execute(params![cas.label, cas.key, value]),
        })?;
        Ok(match (rows, self.cas_mode) {
            (_, CasMode::RedisQuirk) => SwapOutcome::CasFailed,
            (1, CasMode::Sqlite) => SwapOutcome::Swapped,
            (_, CasMode::Sqlite) => SwapOutcome::CasFailed,
        })
    }
}

/// Binds a list of keys as one parameter, for `IN rarray(?)`.
fn key_array(keys: &[String]) -> Rc<Vec<Value>> {
    Rc::new(keys.iter().cloned().map(Value::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyValueStore {
        KeyValueStore::open_in_memory(CasMode::Sqlite).unwrap()
    }

    #[test]
    fn basic_operations_and_labels_are_separate() {
        let kv = store();
        assert_eq!(kv.get("default", "k").unwrap(), None);
        kv.set("default", "k", b"v1").unwrap();
        kv.set("other", "k", b"o").unwrap();
        assert_eq!(kv.get("default", "k").unwrap().as_deref(), Some(&b"v1"[..]));
        assert!(kv.exists("default", "k").unwrap());
        assert_eq!(kv.keys("default").unwrap(), ["k"]);
        kv.delete("default", "k").unwrap();
        assert!(!kv.exists("default", "k").unwrap());
        assert_eq!(kv.get("other", "k").unwrap().as_deref(), Some(&b"o"[..]));
    }

    #[test]
    fn batch_get_returns_only_present_keys() {
        let kv = store();
        let weird = "quote\" back\\slash\n".to_owned();
        kv.set_many(
            "default",
            &[("a".into(), b"1".to_vec()), (weird.clone(), b"2".to_vec())],
        )
        .unwrap();
        let mut found = kv
            .get_many("default", &["a".into(), "missing".into(), weird.clone()])
            .unwrap();
        found.sort();
        assert_eq!(
            found,
            [
                ("a".into(), Some(b"1".to_vec())),
                (weird.clone(), Some(b"2".to_vec()))
            ]
        );
        kv.delete_many("default", &["a".into(), weird]).unwrap();
        assert!(kv.keys("default").unwrap().is_empty());
    }

    #[test]
    fn cas_succeeds_when_unchanged() {
        let kv = store();
        kv.set("default", "k", b"v1").unwrap();
        let mut cas = Cas::new("default", "k");
        assert_eq!(
            kv.cas_current(&mut cas).unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(kv.swap(&cas, b"v2").unwrap(), SwapOutcome::Swapped);
        assert_eq!(kv.get("default", "k").unwrap().as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn cas_fails_on_conflict_and_does_not_write() {
        let kv = store();
        kv.set("default", "k", b"v1").unwrap();
        let mut mine = Cas::new("default", "k");
        let mut theirs = Cas::new("default", "k");
        kv.cas_current(&mut mine).unwrap();
        kv.cas_current(&mut theirs).unwrap();
        assert_eq!(kv.swap(&theirs, b"theirs").unwrap(), SwapOutcome::Swapped);
        assert_eq!(kv.swap(&mine, b"mine").unwrap(), SwapOutcome::CasFailed);
        assert_eq!(
            kv.get("default", "k").unwrap().as_deref(),
            Some(&b"theirs"[..])
        );
    }

    #[test]
    fn cas_compares_bytes_so_an_equal_rewrite_is_not_a_conflict() {
        let kv = store();
        kv.set("default", "k", b"same").unwrap();
        let mut cas = Cas::new("default", "k");
        kv.cas_current(&mut cas).unwrap();
        kv.set("default", "k", b"same").unwrap();
        assert_eq!(kv.swap(&cas, b"new").unwrap(), SwapOutcome::Swapped);
    }

    #[test]
    fn swap_without_current_or_on_absent_key_writes_unconditionally() {
        let kv = store();
        kv.set("default", "k", b"v1").unwrap();
        // current() never called: an upsert, whatever the stored value.
        assert_eq!(
            kv.swap(&Cas::new("default", "k"), b"blind").unwrap(),
            SwapOutcome::Swapped
        );
        assert_eq!(
            kv.get("default", "k").unwrap().as_deref(),
            Some(&b"blind"[..])
        );

        // current() found no key: also an upsert, even if someone created it meanwhile.
        let mut cas = Cas::new("default", "new");
        assert_eq!(kv.cas_current(&mut cas).unwrap(), None);
        kv.set("default", "new", b"racer").unwrap();
        assert_eq!(kv.swap(&cas, b"mine").unwrap(), SwapOutcome::Swapped);
        assert_eq!(
            kv.get("default", "new").unwrap().as_deref(),
            Some(&b"mine"[..])
        );
    }

    #[test]
    fn swap_after_delete_fails() {
        let kv = store();
        kv.set("default", "k", b"v1").unwrap();
        let mut cas = Cas::new("default", "k");
        kv.cas_current(&mut cas).unwrap();
        kv.delete("default", "k").unwrap();
        assert_eq!(kv.swap(&cas, b"v2").unwrap(), SwapOutcome::CasFailed);
        assert_eq!(kv.get("default", "k").unwrap(), None);
    }

    #[test]
    fn increment_keeps_little_endian_i64() {
        let kv = store();
        assert_eq!(kv.increment("default", "n", 1).unwrap(), 1);
        assert_eq!(kv.increment("default", "n", 2).unwrap(), 3);
        assert_eq!(kv.increment("default", "n", -10).unwrap(), -7);
        assert_eq!(
            kv.get("default", "n").unwrap(),
            Some((-7i64).to_le_bytes().to_vec())
        );
        kv.set("default", "text", b"12").unwrap();
        let err = kv.increment("default", "text", 1).unwrap_err();
        assert!(err.is::<IncrementError>(), "{err}");
    }

    #[test]
    fn redis_quirk_writes_but_reports_failure() {
        let kv = KeyValueStore::open_in_memory(CasMode::RedisQuirk).unwrap();
        kv.set("default", "k", b"v1").unwrap();
        let mut cas = Cas::new("default", "k");
        kv.cas_current(&mut cas).unwrap();
        assert_eq!(kv.swap(&cas, b"v2").unwrap(), SwapOutcome::CasFailed);
        assert_eq!(kv.get("default", "k").unwrap().as_deref(), Some(&b"v2"[..]));

        // A real conflict: still reported as a failure, and nothing is written.
        let mut stale = Cas::new("default", "k");
        kv.cas_current(&mut stale).unwrap();
        kv.set("default", "k", b"v3").unwrap();
        assert_eq!(kv.swap(&stale, b"lost").unwrap(), SwapOutcome::CasFailed);
        assert_eq!(kv.get("default", "k").unwrap().as_deref(), Some(&b"v3"[..]));
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("spin-test-host-kv-{}", std::process::id()));
        let path = dir.join(FILE_NAME);
        KeyValueStore::open(&path, CasMode::Sqlite)
            .unwrap()
            .set("default", "k", b"kept")
            .unwrap();
        let reopened = KeyValueStore::open(&path, CasMode::Sqlite).unwrap();
        assert_eq!(
            reopened.get("default", "k").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
