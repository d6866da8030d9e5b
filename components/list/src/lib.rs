//! `GET /list?offset=0&limit=100&status=S`: a page of tasks in creation order.

use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn list(request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, ApiError> {
    Ok(spin::api()?.list::<TaskResponse>(&request))
}
