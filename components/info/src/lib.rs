//! `GET /info?task_id=ID`: one task.

use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn info(request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, ApiError> {
    Ok(spin::api()?.info::<TaskResponse>(&request))
}
