//! `PUT /cancel?task_id=ID`: cancel a pending or running task.

use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn cancel(request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, ApiError> {
    Ok(spin::api()?.cancel::<TaskResponse>(&request))
}
