//! `--build`: run each component's `[component.X.build] command`, like `spin up --build`.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::manifest::Manifest;

/// Runs every component's build commands through `sh -c`, in its `workdir` (relative
/// to the manifest) or the manifest's directory; the first failure stops the build.
pub fn run_build_commands(manifest: &Manifest) -> Result<()> {
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else {
            println!("No build command for component {id}");
            continue;
        };
        let workdir = match &build.workdir {
            Some(dir) => manifest.dir.join(dir),
            None => manifest.dir.clone(),
        };
        for command in build.command.as_slice() {
            println!("Building component {id} with `{command}`");
            if build.workdir.is_some() {
                println!("Working directory: {:?}", workdir.display().to_string());
            }
            let status = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&workdir)
                .status()
                .with_context(|| {
                    format!("failed to run build command for component {id:?}: `{command}`")
                })?;
            ensure!(
                status.success(),
                "build command for component {id:?} failed: `{command}` exited with {status}"
            );
        }
    }
    println!("Finished building all Spin components");
    Ok(())
}
