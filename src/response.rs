//! Turning a stored task into what the API answers with.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::task::{Attempt, Detail, Task, TaskId, TaskStatus, Timestamp};

/// The response schema the bundled components answer with: every field of the task, its own
/// fields included, with empty optional fields left out.
///
/// An application with tasks of a known shape declares its own response type instead (any
/// `Serialize + DeserializeOwned` type) and builds the endpoints with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResponse {
    pub id: TaskId,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<TaskId>,
    pub broker_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// A stored task that does not fit the response schema.
#[derive(Debug)]
pub struct SchemaMismatch {
    pub id: TaskId,
    pub reason: String,
}

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task `{}` does not fit the response schema: {}",
            self.id, self.reason
        )
    }
}

impl std::error::Error for SchemaMismatch {}

/// Validates a stored task into the response type `R`, as the original router's
/// `convert_to_response` does with pydantic: the task's JSON document, without storage's own
/// bookkeeping (`revision`, `slot`), must deserialize into `R`. A task that does not fit is an
/// error, never a default.
pub fn convert_to_response<R: DeserializeOwned>(task: &Task) -> Result<R, SchemaMismatch> {
    let document = serde_json::to_vec(&PublicTask::from(task)).expect("a task always serializes");
    serde_json::from_slice(&document).map_err(|error| SchemaMismatch {
        id: task.id.clone(),
        reason: error.to_string(),
    })
}

/// A task as a client may see it.
#[derive(Serialize)]
struct PublicTask<'a> {
    id: &'a TaskId,
    status: TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a Detail>,
    created_at: Timestamp,
    updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<&'a TaskId>,
    broker_id: &'a TaskId,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_until: Option<Timestamp>,
    #[serde(skip_serializing_if = "<[Attempt]>::is_empty")]
    attempts: &'a [Attempt],
    #[serde(flatten)]
    fields: &'a Map<String, Value>,
}

impl<'a> From<&'a Task> for PublicTask<'a> {
    fn from(task: &'a Task) -> Self {
        Self {
            id: &task.id,
            status: task.status,
            detail: task.detail.as_ref(),
            created_at: task.created_at,
            updated_at: task.updated_at,
            parent_id: task.parent_id.as_ref(),
            broker_id: &task.broker_id,
            lease_until: task.lease_until,
            attempts: &task.attempts,
            fields: &task.fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with(fields: Value) -> Task {
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        Task::new(Timestamp::now(), None, fields)
    }

    #[test]
    fn the_default_response_keeps_every_field_but_the_revision_and_omits_empty_ones() {
        let task = task_with(serde_json::json!({"job": "noop", "priority": 3}));
        let response: TaskResponse = convert_to_response(&task).unwrap();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["id"], task.id.as_str());
        assert_eq!(json["status"], "pending");
        assert_eq!(json["job"], "noop");
        assert_eq!(json["priority"], 3);
        for absent in [
            "revision",
            "slot",
            "detail",
            "parent_id",
            "lease_until",
            "attempts",
            "_id",
        ] {
            assert!(json.get(absent).is_none(), "{absent} must be left out");
        }
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct FineTuning {
        id: TaskId,
        status: TaskStatus,
        model: String,
        epochs: u32,
    }

    #[test]
    fn a_typed_response_validates_the_task_fields() {
        let task = task_with(serde_json::json!({"model": "bert", "epochs": 3}));
        let response: FineTuning = convert_to_response(&task).unwrap();
        assert_eq!(response.model, "bert");
        assert_eq!(response.epochs, 3);
    }

    #[test]
    fn a_task_that_does_not_fit_the_schema_is_an_error_not_a_default() {
        let missing = task_with(serde_json::json!({"model": "bert"}));
        let error = convert_to_response::<FineTuning>(&missing).unwrap_err();
        assert_eq!(error.id, missing.id);
        assert!(error.reason.contains("epochs"), "{}", error.reason);

        let wrong_type = task_with(serde_json::json!({"model": "bert", "epochs": "three"}));
        assert!(convert_to_response::<FineTuning>(&wrong_type).is_err());
    }
}
