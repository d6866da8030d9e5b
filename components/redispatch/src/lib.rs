//! `POST /redispatch`: send again every task whose dispatch seems lost. Meant for a scheduler.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_task_helpers::spin;

#[http_component]
fn redispatch(request: IncomingRequest, response_out: ResponseOutparam) {
    spin::serve(request, response_out, |request| {
        Ok(spin::api()?.redispatch(request))
    });
}
