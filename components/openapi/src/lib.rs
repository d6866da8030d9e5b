//! `GET /openapi.json`: the OpenAPI description of the task API.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_task_helpers::api;

#[http_component]
fn openapi(request: Request) -> impl IntoResponse {
    api::openapi(&request.into(), include_bytes!("../../../openapi.json"))
}
