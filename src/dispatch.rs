//! Sending tasks to the worker.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::task::{Task, TaskId};

/// The message that asks a worker to run a task: the task and the dispatch it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchMessage {
    pub task_id: TaskId,
    pub broker_id: TaskId,
}

impl DispatchMessage {
    /// The message for a task's current dispatch.
    pub fn for_task(task: &Task) -> Self {
        Self {
            task_id: task.id.clone(),
            broker_id: task.broker_id.clone(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dispatch message always serializes")
    }
}

/// A message that could not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchError(pub String);

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DispatchError {}

/// Where dispatch messages go: a Redis channel in the Spin app, a list in tests.
pub trait Dispatcher {
    fn dispatch(&self, message: &DispatchMessage) -> Result<(), DispatchError>;
}
