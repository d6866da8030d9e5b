//! The Redis-triggered worker: runs the job of each dispatched task.
//!
//! To run jobs of your own, register them here with `Jobs::samples().with("name", MyJob)`.

use spin_sdk::redis_component;
use spin_task_helpers::spin;
use spin_task_helpers::worker::Jobs;

#[redis_component]
fn on_message(message: Vec<u8>) -> anyhow::Result<()> {
    spin::worker(Jobs::samples())?.handle(&message)?;
    Ok(())
}
