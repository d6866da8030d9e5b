//! `PUT /cancel?task_id=ID`: cancel a pending or running task.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn cancel(request: Request) -> Result<impl IntoResponse, ApiError> {
    Ok(spin::api()?.cancel::<TaskResponse>(&request.into()))
}
