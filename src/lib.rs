//! The core of spin-task-helpers: a task-management API for Spin applications.
//!
//! Users run background jobs behind HTTP and see, list, restart and cancel them from other
//! services. Each endpoint is its own small Spin component; this crate holds every decision
//! they make, so the components only parse, call and render:
//!
//! - [`task`]: the stored task, its id and status;
//! - [`lifecycle`]: the status rules, as pure functions;
//! - [`store`]: tasks in a key-value store, changed only by compare-and-swap;
//! - [`index`]: the listing index, so `/list` costs one page whatever the number of tasks;
//! - [`dispatch`]: the message that sends a task to the worker;
//! - [`response`]: [`convert_to_response`], from a stored task to a response schema;
//! - [`api`]: the HTTP endpoints on plain request and response types;
//! - [`worker`]: claiming a dispatched task, running its [`Job`](worker::Job), recording the
//!   outcome;
//! - `spin` (feature `spin`): the adapters to Spin's HTTP trigger, key-value store, outbound
//!   Redis and application variables.
//!
//! Everything but `spin` runs natively, which is how it is tested.

pub mod api;
pub mod dispatch;
pub mod index;
pub mod lifecycle;
pub mod response;
#[cfg(feature = "spin")]
pub mod spin;
pub mod store;
pub mod task;
pub mod worker;

pub use response::{convert_to_response, TaskResponse};
