//! `PUT /cancel?task_id=ID`: cancel a pending or running task.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn cancel(request: IncomingRequest, response_out: ResponseOutparam) {
    spin::serve(request, response_out, |request| {
        Ok(spin::api()?.cancel::<TaskResponse>(request))
    });
}
