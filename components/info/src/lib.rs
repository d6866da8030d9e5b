//! `GET /info?task_id=ID`: one task.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn info(request: Request) -> Result<impl IntoResponse, ApiError> {
    Ok(spin::api()?.info::<TaskResponse>(&request.into()))
}
