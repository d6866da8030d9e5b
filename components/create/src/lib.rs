//! `POST /create` with a JSON object body: a new task, dispatched to the worker.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn create(request: Request) -> Result<impl IntoResponse, ApiError> {
    Ok(spin::api()?.create::<TaskResponse>(&request.into()))
}
