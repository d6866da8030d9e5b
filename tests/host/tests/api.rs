//! The black-box suite: the whole user story over HTTP, through the real Wasm components.
//!
//! By default each test talks to the app served by the test host (built from `spin.toml`) with
//! a `redis-server` of its own. With `BASE_URL` set, the tests that need no control over the
//! app's processes run against that app instead (for example `spin up`), and the others skip.

mod support;

use std::sync::OnceLock;

use serde_json::{json, Value};
use support::{app, external, id, App, Client, Host, HostOptions};

/// The OpenAPI document's schemas, to check real responses against.
struct OpenApi {
    task: jsonschema::Validator,
    error: jsonschema::Validator,
}

fn openapi() -> &'static OpenApi {
    static OPENAPI: OnceLock<OpenApi> = OnceLock::new();
    OPENAPI.get_or_init(|| {
        let document = std::fs::read(support::workspace().join("openapi.json")).unwrap();
        let document: Value = serde_json::from_slice(&document).unwrap();
        let validator = |name: &str| {
            let schema = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": format!("#/components/schemas/{name}"),
                "components": document["components"],
            });
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap()
        };
        OpenApi {
            task: validator("Task"),
            error: validator("Error"),
        }
    })
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{value} does not match the OpenAPI description: {errors:?}"
    );
}

/// Asserts a task response matches the OpenAPI description, and returns it.
fn task(value: Value) -> Value {
    assert_valid(&openapi().task, &value);
    value
}

#[test]
fn a_created_task_is_listed_and_run_by_the_worker() {
    let app = app();
    let created = task(app.create(json!({"job": "noop", "note": "hello"})));
    assert_eq!(created["status"], "pending");
    assert_eq!(created["note"], "hello");

    let done = task(app.wait_for_status(id(&created), "done"));
    assert_eq!(done["id"], created["id"]);
    assert_eq!(done["broker_id"], created["broker_id"]);
    assert_eq!(done["note"], "hello");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(done["attempts"][0]["outcome"], "done");
    assert!(done.get("lease_until").is_none());

    let listed = app.list("?status=done&limit=1000");
    assert!(listed.iter().any(|t| t["id"] == created["id"]));
    listed.into_iter().for_each(|t| drop(task(t)));
}

#[test]
fn a_task_without_a_job_runs_the_default_job() {
    let app = app();
    let created = app.create(json!({}));
    task(app.wait_for_status(id(&created), "done"));
}

#[test]
fn a_failing_job_ends_failed_with_its_message() {
    let app = app();
    let created = app.create(json!({"job": "fail", "message": "GPU on fire"}));
    let failed = task(app.wait_for_status(id(&created), "failed"));
    assert_eq!(failed["detail"], "GPU on fire");
    assert_eq!(failed["attempts"][0]["outcome"], "failed");
}

#[test]
fn an_unknown_job_is_refused_by_name() {
    let app = app();
    let created = app.create(json!({"job": "teleport"}));
    let refused = task(app.wait_for_status(id(&created), "refused"));
    assert_eq!(refused["detail"], "unknown job `teleport`");
    assert!(refused.get("attempts").is_none());
}

#[test]
fn a_task_canceled_while_pending_is_never_started() {
    let app = app();
    // The worker takes messages one at a time: this keeps it busy while the next one waits.
    let blocker = app.create(json!({"job": "sleep", "ms": 800}));
    let queued = app.create(json!({"job": "noop"}));
    let canceled = app.cancel(id(&queued));
    assert_eq!(canceled.status, 200, "{canceled:?}");
    assert_eq!(task(canceled.body)["status"], "canceled");

    app.wait_for_status(id(&blocker), "done");
    // The queued message reached the worker after the blocker; wait for one more task that
    // was queued behind it to be sure it was handled.
    let after = app.create(json!({"job": "noop"}));
    app.wait_for_status(id(&after), "done");
    let still = task(app.info(id(&queued)));
    assert_eq!(still["status"], "canceled");
    assert!(still.get("attempts").is_none(), "it was started: {still}");
}

#[test]
fn a_task_canceled_while_running_stays_canceled() {
    let app = app();
    let running = app.create(json!({"job": "sleep", "ms": 1500}));
    app.wait_for_status(id(&running), "processing");
    let canceled = app.cancel(id(&running));
    assert_eq!(canceled.status, 200, "{canceled:?}");
    assert_eq!(canceled.body["status"], "canceled");

    // Once the worker moves on, the canceled job has ended without overwriting the cancel.
    let after = app.create(json!({"job": "noop"}));
    app.wait_for_status(id(&after), "done");
    let still = task(app.info(id(&running)));
    assert_eq!(still["status"], "canceled");
    assert_eq!(still["attempts"][0]["outcome"], "canceled");
    assert_eq!(
        app.cancel(id(&running)).status,
        200,
        "cancel again is a no-op"
    );
}

#[test]
fn finished_tasks_cannot_be_canceled() {
    let app = app();
    for (fields, status) in [
        (json!({"job": "noop"}), "done"),
        (json!({"job": "fail"}), "failed"),
        (json!({"job": "nope"}), "refused"),
    ] {
        let created = app.create(fields);
        let finished = app.wait_for_status(id(&created), status);
        let reply = app.cancel(id(&created));
        assert_eq!(reply.status, 409, "{reply:?}");
        assert_eq!(
            reply.detail(),
            format!(
                "Task with ID `{}` is already {status}; a finished task cannot be canceled",
                id(&created)
            )
        );
        assert_eq!(app.info(id(&created)), finished);
    }
}

#[test]
fn restart_runs_finished_and_canceled_tasks_again_under_a_new_dispatch() {
    let app = app();
    let failed = app.create(json!({"job": "fail", "message": "flaky"}));
    let done = app.create(json!({"job": "noop"}));
    let blocker = app.create(json!({"job": "sleep", "ms": 300}));
    let canceled = app.create(json!({"job": "noop"}));
    assert_eq!(app.cancel(id(&canceled)).status, 200);
    app.wait_for_status(id(&failed), "failed");
    app.wait_for_status(id(&done), "done");
    app.wait_for_status(id(&blocker), "done");

    for (original, ends_as, attempts) in [
        (&failed, "failed", 2),
        (&done, "done", 2),
        (&canceled, "done", 1),
    ] {
        let reply = app.restart(id(original));
        assert_eq!(reply.status, 200, "{reply:?}");
        let restarted = task(reply.body);
        assert_eq!(restarted["status"], "pending");
        assert!(restarted.get("detail").is_none());
        assert_ne!(restarted["broker_id"], original["broker_id"]);

        let ended = app.wait_for(id(original), ends_as, |t| {
            t["status"] == ends_as && t["attempts"].as_array().map_or(0, Vec::len) == attempts
        });
        assert_eq!(ended["broker_id"], restarted["broker_id"]);
        assert_eq!(
            ended["attempts"][attempts - 1]["broker_id"],
            restarted["broker_id"]
        );
    }
}

#[test]
fn restart_of_a_running_task_changes_nothing() {
    let app = app();
    let running = app.create(json!({"job": "sleep", "ms": 1000}));
    let processing = app.wait_for_status(id(&running), "processing");
    let reply = app.restart(id(&running));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, processing);
    assert_eq!(app.info(id(&running)), processing);
    app.wait_for_status(id(&running), "done");
}

#[test]
fn unknown_tasks_are_404_on_every_endpoint() {
    let app = app();
    let unknown = "65a1b2c3d4e5f60718293a4b";
    let expected = format!("Task with ID `{unknown}` not found");
    for (method, path) in [("GET", "/info"), ("PUT", "/cancel"), ("PUT", "/restart")] {
        let reply = app.request(method, &format!("{path}?task_id={unknown}"), None);
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.detail(), expected);
        assert_valid(&openapi().error, &reply.body);
    }
}

#[test]
fn bad_requests_get_their_status_and_detail() {
    let app = app();
    let ids = "`task_id` must be 24 hexadecimal characters";
    let required = "query parameter `task_id` is required";
    let statuses = "`status` must be one of pending, processing, done, canceled, failed, refused";
    // Method, path and query, body, status, the start of the detail.
    type Case<'a> = (&'a str, &'a str, Option<&'a [u8]>, u16, &'a str);
    let cases: &[Case] = &[
        ("GET", "/info", None, 422, required),
        ("PUT", "/cancel", None, 422, required),
        ("PUT", "/restart?id=65a1b2c3d4e5f60718293a4b", None, 422, required),
        ("GET", "/info?task_id=", None, 422, ids),
        ("GET", "/info?task_id=65a1b2c3", None, 422, ids),
        ("GET", "/info?task_id=65a1b2c3d4e5f60718293a4bff", None, 422, ids),
        ("GET", "/info?task_id=zza1b2c3d4e5f60718293a4b", None, 422, ids),
        ("PUT", "/cancel?task_id=..%2F..%2F..%2Fetc%2Fpasswd", None, 422, ids),
        ("PUT", "/restart?task_id=task%3A*", None, 422, ids),
        ("GET", "/info?task_id=%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80", None, 422, ids),
        (
            "GET",
            "/info?task_id=65a1b2c3d4e5f60718293a4b&task_id=65a1b2c3d4e5f60718293a4c",
            None,
            422,
            "query parameter `task_id` is given more than once",
        ),
        ("GET", "/list?offset=-1", None, 422, "`offset` must be a non-negative integer"),
        ("GET", "/list?offset=ten", None, 422, "`offset` must be a non-negative integer"),
        ("GET", "/list?limit=0", None, 422, "`limit` must be an integer from 1 to 1000"),
        ("GET", "/list?limit=1001", None, 422, "`limit` must be an integer from 1 to 1000"),
        ("GET", "/list?status=running", None, 422, statuses),
        ("POST", "/create", Some(b""), 400, "request body is not valid JSON"),
        ("POST", "/create", Some(b"{\"job\": "), 400, "request body is not valid JSON"),
        ("POST", "/create", Some(b"[\"noop\"]"), 422, "request body must be a JSON object"),
        ("POST", "/create", Some(b"null"), 422, "request body must be a JSON object"),
        (
            "POST",
            "/create",
            Some(b"{\"id\": \"65a1b2c3d4e5f60718293a4b\"}"),
            422,
            "field `id` is set by the service and cannot be given",
        ),
        (
            "POST",
            "/create",
            Some(b"{\"parent_id\": \"../x\"}"),
            422,
            "`parent_id` must be 24 hexadecimal characters",
        ),
    ];
    let before = app.list("?limit=1000").len();
    for (method, path, body, status, detail) in cases {
        let reply = app.request(method, path, body.map(<[u8]>::to_vec));
        assert_eq!(reply.status, *status, "{method} {path}: {reply:?}");
        assert!(
            reply.detail().starts_with(detail),
            "{method} {path}: {}",
            reply.detail()
        );
        assert_valid(&openapi().error, &reply.body);
    }
    let oversized = format!("{{\"blob\": \"{}\"}}", "x".repeat(1024 * 1024));
    let reply = app.request("POST", "/create", Some(oversized.into_bytes()));
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.detail(), "request body is larger than 1048576 bytes");
    if !external() {
        assert_eq!(
            app.list("?limit=1000").len(),
            before,
            "a bad request stored a task"
        );
    }
}

#[test]
fn a_body_of_exactly_the_limit_is_read_whole() {
    let app = app();
    let wrapper = r#"{"blob": ""}"#.len();
    let blob = "x".repeat(1024 * 1024 - wrapper);
    let body = format!(r#"{{"blob": "{blob}"}}"#);
    assert_eq!(body.len(), 1024 * 1024);
    let reply = app.request("POST", "/create", Some(body.into_bytes()));
    assert_eq!(reply.status, 201);
    let task = app.info(id(&reply.body));
    assert_eq!(task["blob"].as_str().map(str::len), Some(blob.len()));
}

#[test]
fn wrong_methods_get_405_with_allow() {
    let app = app();
    let cases = [
        ("POST", "/info", "GET"),
        ("DELETE", "/list", "GET"),
        ("GET", "/restart", "PUT"),
        ("POST", "/cancel", "PUT"),
        ("GET", "/create", "POST"),
        ("PUT", "/openapi.json", "GET"),
    ];
    for (method, path, allow) in cases {
        let reply = app.request(
            method,
            &format!("{path}?task_id=65a1b2c3d4e5f60718293a4b"),
            None,
        );
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.headers["allow"], allow, "{method} {path}");
        assert_eq!(reply.detail(), "Method Not Allowed");
    }
}

#[test]
fn list_filters_by_status_then_pages_in_creation_order() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let app = App::start();
    let client = app.client();
    let mut created: Vec<Value> = Vec::new();
    for n in 0..6 {
        let job = if n % 3 == 0 { "fail" } else { "noop" };
        created.push(client.create(json!({"job": job, "n": n})));
    }
    for task in &created {
        client.wait_for(id(task), "finished", |t| {
            t["status"] == "done" || t["status"] == "failed"
        });
    }
    let mut ids: Vec<&str> = created.iter().map(id).collect();
    ids.sort_unstable();
    let listed_ids = |query: &str| -> Vec<String> {
        client
            .list(query)
            .into_iter()
            .map(|t| id(&task(t)).to_owned())
            .collect()
    };
    assert_eq!(listed_ids(""), ids);
    assert_eq!(listed_ids("?offset=2&limit=3"), ids[2..5]);
    assert_eq!(listed_ids("?offset=6"), Vec::<String>::new());
    let failed: Vec<&str> = created
        .iter()
        .filter(|t| t["job"] == "fail")
        .map(id)
        .collect();
    let mut failed = failed;
    failed.sort_unstable();
    assert_eq!(listed_ids("?status=failed"), failed);
    assert_eq!(listed_ids("?status=failed&offset=1&limit=1"), failed[1..2]);
    assert_eq!(listed_ids("?status=done").len(), 4);
    for status in ["pending", "processing", "canceled", "refused"] {
        assert!(
            listed_ids(&format!("?status={status}")).is_empty(),
            "{status}"
        );
    }
}

#[test]
fn tasks_survive_a_restart_of_the_host() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let mut app = App::start();
    let client = app.client();
    let created = client.create(json!({"job": "noop", "keep": "me"}));
    let done = client.wait_for_status(id(&created), "done");
    drop(app.host.take());

    let host = Host::start(&HostOptions::new(&app.redis, &app.state.0));
    let client = Client::new(&host.base_url);
    assert_eq!(client.info(id(&created)), done);
    assert_eq!(client.list("").len(), 1);
    app.host = Some(host);
}

#[test]
fn the_openapi_description_is_served() {
    let app = app();
    let reply = app.request("GET", "/openapi.json", None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["openapi"], "3.1.0");
    for path in ["/info", "/list", "/create", "/restart", "/cancel"] {
        assert!(
            reply.body["paths"].get(path).is_some(),
            "{path} is not described"
        );
    }
}
