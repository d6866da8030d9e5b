//! `POST /create` with a JSON object body: a new task, dispatched to the worker.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn create(request: IncomingRequest, response_out: ResponseOutparam) {
    spin::serve(request, response_out, |request| {
        Ok(spin::api()?.create::<TaskResponse>(request))
    });
}
