//! `GET /info?task_id=ID`: one task.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn info(request: IncomingRequest, response_out: ResponseOutparam) {
    spin::serve(request, response_out, |request| {
        Ok(spin::api()?.info::<TaskResponse>(request))
    });
}
