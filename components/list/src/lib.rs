//! `GET /list?offset=0&limit=100&status=S`: a page of tasks in creation order.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_task_helpers::{spin, TaskResponse};

#[http_component]
fn list(request: IncomingRequest, response_out: ResponseOutparam) {
    spin::serve(request, response_out, |request| {
        Ok(spin::api()?.list::<TaskResponse>(request))
    });
}
