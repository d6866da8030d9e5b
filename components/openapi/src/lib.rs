//! `GET /openapi.json`: the OpenAPI description of the task API.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_task_helpers::{api, spin};

#[http_component]
fn openapi(request: IncomingRequest, response_out: ResponseOutparam) {
    spin::serve(request, response_out, |request| {
        Ok(api::openapi(
            request,
            include_bytes!("../../../openapi.json"),
        ))
    });
}
