//! `PUT /restart?task_id=ID`: run a task again under a new dispatch.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn restart(request: Request) -> Result<impl IntoResponse, ApiError> {
    Ok(spin::api()?.restart::<TaskResponse>(&request.into()))
}
