//! `PUT /restart?task_id=ID`: run a task again under a new dispatch.

use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn restart(request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, ApiError> {
    Ok(spin::api()?.restart::<TaskResponse>(&request))
}
