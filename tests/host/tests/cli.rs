//! The binary refuses what `spin up` refuses, before loading any component.

use std::path::PathBuf;
use std::process::Command;

fn manifest(name: &str, text: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("spin-test-host-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(manifest: &PathBuf, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_spin-test-host"))
        .arg("--manifest")
        .arg(manifest)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("SPIN_VARIABLE_TOKEN")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "cli-test"
[variables]
token = { required = true }
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "missing.wasm"
"#;

#[test]
fn missing_required_variable_refuses_to_start() {
    let path = manifest("required", APP);
    let (ok, stderr) = run(&path, &[]);
    assert!(!ok);
    assert!(stderr.contains("required variable \"token\""), "{stderr}");
}

#[test]
fn unknown_component_is_rejected() {
    let path = manifest("unknown", APP);
    let (ok, stderr) = run(&path, &["--variable", "token=x", "-c", "nope"]);
    assert!(!ok);
    assert!(stderr.contains("\"nope\" not found"), "{stderr}");
}

#[test]
fn failing_build_command_stops_startup() {
    let text = format!("{APP}[component.web.build]\ncommand = \"exit 3\"\n");
    let path = manifest("build", &text);
    let (ok, stderr) = run(&path, &["--variable", "token=x", "--build"]);
    assert!(!ok);
    assert!(stderr.contains("exit status: 3"), "{stderr}");
}

#[test]
fn missing_source_is_reported_with_the_component() {
    let path = manifest("source", APP);
    let (ok, stderr) = run(&path, &["--variable", "token=x"]);
    assert!(!ok);
    assert!(
        stderr.contains("component \"web\": failed to read"),
        "{stderr}"
    );
}
