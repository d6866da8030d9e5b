//! `GET /list?offset=0&limit=100&status=S`: a page of tasks in creation order.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn list(request: Request) -> Result<impl IntoResponse, ApiError> {
    Ok(spin::api()?.list::<TaskResponse>(&request.into()))
}
