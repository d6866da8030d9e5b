//! `POST /redispatch`: send again every task whose dispatch seems lost. Meant for a scheduler.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_task_helpers::api::ApiError;
use spin_task_helpers::spin;

#[http_component]
fn redispatch(request: Request) -> Result<impl IntoResponse, ApiError> {
    Ok(spin::api()?.redispatch(&request.into()))
}
