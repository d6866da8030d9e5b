//! The stored task: its id, status, history of attempts and the fields it was created with.

use std::fmt;
use std::ops::{Add, Sub};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A point in time, in whole milliseconds, written as RFC 3339 in UTC
/// (`2026-12-04T16:00:02.131Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_unix_millis(unix_millis(SystemTime::now()))
    }

    pub fn from_unix_millis(millis: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_millis(millis))
    }

    /// Whole seconds since 1970.
    pub fn unix_seconds(self) -> u64 {
        unix_millis(self.0) / 1000
    }

    /// How long from now until `later`; zero if `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        later.0.duration_since(self.0).unwrap_or_default()
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    since_epoch.as_millis() as u64
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, duration: Duration) -> Timestamp {
        Self(self.0 + duration)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, duration: Duration) -> Timestamp {
        Self(self.0.checked_sub(duration).unwrap_or(UNIX_EPOCH))
    }
}

impl FromStr for Timestamp {
    type Err = humantime::TimestampError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_rfc3339(text).map(|time| Self::from_unix_millis(unix_millis(time)))
    }
}

impl TryFrom<String> for Timestamp {
    type Error = humantime::TimestampError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Timestamp> for String {
    fn from(time: Timestamp) -> Self {
        humantime::format_rfc3339_millis(time.0).to_string()
    }
}

/// A task id: 24 lowercase hex characters, ObjectId-style.
///
/// The first 8 characters are the creation time in seconds (big-endian), the remaining 16 are
/// random, so ids sort by creation time and two tasks created in the same second still differ.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// The number of characters in an id.
    pub const LEN: usize = 24;

    /// A new id for something created at `now`.
    pub fn generate(now: Timestamp) -> Self {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the host provides randomness");
        // Ids carry 32 bits of seconds, like ObjectIds: they wrap in 2106.
        let seconds = now.unix_seconds() as u32;
        Self(format!("{seconds:08x}{:016x}", u64::from_be_bytes(random)))
    }

    /// The creation time the id carries, to the second.
    pub fn created_at(&self) -> Timestamp {
        let seconds =
            u32::from_str_radix(&self.0[..8], 16).expect("an id starts with 8 hex digits");
        Timestamp::from_unix_millis(u64::from(seconds) * 1000)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TaskId {
    type Err = InvalidTaskId;

    /// Accepts 24 hex characters in either case; the id is kept in lowercase.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() == Self::LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(InvalidTaskId)
        }
    }
}

impl TryFrom<String> for TaskId {
    type Error = InvalidTaskId;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> Self {
        id.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that is not a task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTaskId;

impl fmt::Display for InvalidTaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a task id is {} hexadecimal characters", TaskId::LEN)
    }
}

impl std::error::Error for InvalidTaskId {}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for a worker to claim it.
    Pending,
    /// Claimed by a worker whose lease may still be running.
    Processing,
    /// The job completed.
    Done,
    /// Canceled by a user; never started again unless restarted.
    Canceled,
    /// The job reported a failure.
    Failed,
    /// The worker would not run it (for example, it names no known job).
    Refused,
}

impl TaskStatus {
    /// Every status, in the order of a task's life.
    pub const ALL: [TaskStatus; 6] = [
        Self::Pending,
        Self::Processing,
        Self::Done,
        Self::Canceled,
        Self::Failed,
        Self::Refused,
    ];

    /// The status as it is written in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Canceled => "canceled",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }

    /// Whether the task's job has reached an outcome of its own (as opposed to being canceled).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Refused)
    }
}

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or(UnknownStatus)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownStatus;

/// Text about a task's current status, at most [`Detail::MAX_CHARS`] characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Detail(String);

impl Detail {
    /// The longest detail a task keeps.
    pub const MAX_CHARS: usize = 1500;

    /// A detail from any text, shortened to [`Detail::MAX_CHARS`] characters with a trailing `…`
    /// when longer: a job's error message must never make its outcome unrecordable.
    pub fn truncated(text: impl Into<String>) -> Self {
        let mut text = text.into();
        if let Some((cut, _)) = text.char_indices().nth(Self::MAX_CHARS - 1) {
            if text[cut..].chars().nth(1).is_some() {
                text.truncate(cut);
                text.push('…');
            }
        }
        Self(text)
    }

    /// The detail as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Detail {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.chars().count() <= Self::MAX_CHARS {
            Ok(Self(text))
        } else {
            Err(format!(
                "detail is longer than {} characters",
                Self::MAX_CHARS
            ))
        }
    }
}

impl From<Detail> for String {
    fn from(detail: Detail) -> Self {
        detail.0
    }
}

/// How one run of a task's job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    /// The job completed.
    Done,
    /// The job failed.
    Failed,
    /// The task was canceled while the job ran.
    Canceled,
    /// The worker's lease ran out and the task was restarted without it.
    Abandoned,
}

/// One run of a task's job by a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The dispatch this run answered.
    pub broker_id: TaskId,
    /// The worker run that claimed the task; only it may record the outcome.
    pub runner: TaskId,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
}

/// A task as it is stored: one JSON document per task.
///
/// The task's own fields, given at creation, sit beside the fields below in the same object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<TaskId>,
    /// The id of the last dispatch message; a worker holding another one drops its message.
    pub broker_id: TaskId,
    /// While `processing`: when the worker's claim runs out unless it renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// Incremented by every write, so no two stored versions of a task are the same bytes
    /// (compare-and-swap tells versions apart by their bytes).
    pub revision: u64,
    /// The task's place in the listing index, taken when it is stored.
    #[serde(default)]
    pub slot: u64,
    /// The task's own fields, as given at creation.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Task {
    /// The top-level names the service owns; a task's own fields may not use them.
    pub const RESERVED_FIELDS: [&'static str; 12] = [
        "id",
        "_id",
        "status",
        "detail",
        "created_at",
        "updated_at",
        "broker_id",
        "lease_until",
        "attempts",
        "revision",
        "slot",
        "parent_id",
    ];

    /// A new `pending` task, to be dispatched with `broker_id`.
    pub fn new(now: Timestamp, parent_id: Option<TaskId>, fields: Map<String, Value>) -> Self {
        Self {
            id: TaskId::generate(now),
            status: TaskStatus::Pending,
            detail: None,
            created_at: now,
            updated_at: now,
            parent_id,
            broker_id: TaskId::generate(now),
            lease_until: None,
            attempts: Vec::new(),
            revision: 0,
            slot: 0,
            fields,
        }
    }

    /// The key-value key the task is stored under.
    pub fn key(id: &TaskId) -> String {
        format!("task:{id}")
    }

    /// The attempt that is still running, if any.
    pub fn running_attempt(&self) -> Option<&Attempt> {
        self.attempts
            .last()
            .filter(|attempt| attempt.outcome.is_none())
    }

    /// The job the task asks for, if it names one.
    pub fn job_name(&self) -> Option<&str> {
        self.fields.get("job").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_with_the_creation_second_and_sort_by_it() {
        let earlier: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later = earlier + Duration::from_secs(1);
        let first = TaskId::generate(earlier);
        let second = TaskId::generate(later);
        assert_eq!(
            &first.as_str()[..8],
            format!("{:08x}", earlier.unix_seconds())
        );
        assert!(first < second);
        assert_eq!(first.as_str().len(), TaskId::LEN);
    }

    #[test]
    fn ids_from_one_second_differ() {
        let now = Timestamp::now();
        assert_ne!(TaskId::generate(now), TaskId::generate(now));
    }

    #[test]
    fn ids_parse_only_from_24_hex_characters() {
        assert_eq!(
            "65A1B2C3D4E5F60718293A4B"
                .parse::<TaskId>()
                .unwrap()
                .as_str(),
            "65a1b2c3d4e5f60718293a4b"
        );
        for bad in [
            "",
            "65a1b2c3d4e5f60718293a4",
            "65a1b2c3d4e5f60718293a4b0",
            "65a1b2c3d4e5f60718293a4g",
            "../../etc/passwd/abcdefgh",
            "65a1b2c3d4e5f6071829 a4b",
            "６5a1b2c3d4e5f60718293a4b",
        ] {
            assert_eq!(bad.parse::<TaskId>(), Err(InvalidTaskId), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc_to_the_millisecond() {
        let time = Timestamp::from_unix_millis(1_796_400_002_131);
        let text = serde_json::to_value(time).unwrap();
        assert_eq!(text, "2026-12-04T16:00:02.131Z");
        assert_eq!(serde_json::from_value::<Timestamp>(text).unwrap(), time);
        assert!(serde_json::from_value::<Timestamp>("yesterday".into()).is_err());
        assert_eq!(
            time.until(time + Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        assert_eq!((time + Duration::from_secs(1)).until(time), Duration::ZERO);
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                Value::from(status.as_str())
            );
        }
        assert_eq!("Pending".parse::<TaskStatus>(), Err(UnknownStatus));
    }

    #[test]
    fn long_details_are_cut_to_the_limit() {
        let exact = "é".repeat(Detail::MAX_CHARS);
        assert_eq!(Detail::truncated(exact.clone()).as_str(), exact);
        let cut = Detail::truncated("é".repeat(Detail::MAX_CHARS + 1));
        assert_eq!(cut.as_str().chars().count(), Detail::MAX_CHARS);
        assert!(cut.as_str().ends_with('…'));
    }

    #[test]
    fn stored_details_over_the_limit_are_rejected() {
        let long = Value::from("x".repeat(Detail::MAX_CHARS + 1));
        assert!(serde_json::from_value::<Detail>(long).is_err());
    }

    #[test]
    fn a_task_stores_its_own_fields_beside_the_service_fields() {
        let mut fields = Map::new();
        fields.insert("job".into(), "sleep".into());
        fields.insert("ms".into(), 20.into());
        let task = Task::new(Timestamp::now(), None, fields);
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["job"], "sleep");
        assert_eq!(json["status"], "pending");
        assert!(json.get("detail").is_none());
        assert!(json.get("parent_id").is_none());
        let back: Task = serde_json::from_value(json).unwrap();
        assert_eq!(back, task);
        assert_eq!(back.job_name(), Some("sleep"));
    }
}
