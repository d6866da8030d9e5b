//! `PUT /restart?task_id=ID`: run a task again under a new dispatch.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn restart(request: IncomingRequest, response_out: ResponseOutparam) {
    spin::serve(request, response_out, |request| {
        Ok(spin::api()?.restart::<TaskResponse>(request))
    });
}
