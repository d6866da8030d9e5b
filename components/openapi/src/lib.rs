//! `GET /openapi.json`: the OpenAPI description of the task API.

use spin_sdk::http_component;
use spin_task_helpers::api;

#[http_component]
fn openapi(request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    api::openapi(&request, include_bytes!("../../../openapi.json"))
}
