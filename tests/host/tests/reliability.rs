//! Faults injected into the running app: races on one task, several workers on one channel,
//! workers that die or trap mid-job, Redis going away, and the Redis-backed store's
//! compare-and-swap quirk. Each test runs an app of its own.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::{external, id, App, Client, Host, HostOptions, Redis, TempDir, HTTP_COMPONENTS};

/// Starts an API-only host and `workers` worker-only hosts on one store, as in production.
struct Topology {
    redis: Redis,
    state: TempDir,
    api: Host,
    workers: Vec<Host>,
}

impl Topology {
    fn start(workers: usize, variables: &[(&str, &str)]) -> Self {
        let redis = Redis::start();
        let state = TempDir::new();
        let options = HostOptions {
            variables,
            ..HostOptions::new(&redis, &state.0)
        };
        let api = Host::start(&HostOptions {
            components: &HTTP_COMPONENTS,
            ..options
        });
        let workers = (0..workers).map(|_| Host::start_worker(&options)).collect();
        Self {
            redis,
            state,
            api,
            workers,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.api.base_url)
    }

    fn start_worker(&mut self, variables: &[(&str, &str)]) {
        let options = HostOptions {
            variables,
            ..HostOptions::new(&self.redis, &self.state.0)
        };
        self.workers.push(Host::start_worker(&options));
    }
}

fn attempts(task: &Value) -> usize {
    task["attempts"].as_array().map_or(0, Vec::len)
}

#[test]
fn several_worker_replicas_run_every_task_exactly_once() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let app = Topology::start(3, &[]);
    let client = app.client();
    let created: Vec<Value> = (0..200)
        .map(|n| client.create(json!({"job": "noop", "n": n})))
        .collect();
    for task in &created {
        let done = client.wait_for_status(id(task), "done");
        assert_eq!(attempts(&done), 1, "ran more than once: {done}");
    }
    // Every replica received every message; all but one dropped each.
    let listed = client.list("?status=done&limit=1000");
    assert_eq!(listed.len(), created.len());
}

#[test]
fn racing_cancels_restarts_and_workers_never_break_a_200_cancel() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let app = Topology::start(2, &[]);
    let client = app.client();
    let tasks: Vec<String> = (0..24)
        .map(|n| {
            let job = if n % 2 == 0 {
                json!({"job": "noop"})
            } else {
                json!({"job": "sleep", "ms": 40})
            };
            id(&client.create(job)).to_owned()
        })
        .collect();

    // Each task gets a burst of restarts and cancels from several threads at once; the last
    // request on every task is a cancel, made after every other request has answered.
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let client = client.clone();
            let tasks = tasks.clone();
            std::thread::spawn(move || {
                let mut canceled_ok = Vec::new();
                for (n, task) in tasks.iter().enumerate() {
                    let reply = if (n + thread) % 2 == 0 {
                        client.restart(task)
                    } else {
                        client.cancel(task)
                    };
                    assert!(
                        [200, 409].contains(&reply.status),
                        "racing requests answer 200 or 409, not {reply:?}"
                    );
                    if reply.status == 200 && reply.body["status"] == "canceled" {
                        canceled_ok.push(task.clone());
                    }
                }
                canceled_ok
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no request thread panics");
    }
    let mut final_cancels = HashMap::new();
    for task in &tasks {
        let reply = client.cancel(task);
        final_cancels.insert(task.clone(), reply);
    }

    // Let every worker drain the messages the restarts sent.
    let marker = client.create(json!({"job": "sleep", "ms": 200}));
    client.wait_for_status(id(&marker), "done");
    std::thread::sleep(Duration::from_millis(300));

    for (task, reply) in final_cancels {
        let stored = client.info(&task);
        if reply.status == 200 {
            assert_eq!(
                stored["status"], "canceled",
                "a 200 cancel was overwritten: {stored}"
            );
            let running = stored["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|attempt| attempt.get("outcome").is_none())
                .count();
            assert_eq!(
                running, 0,
                "a canceled task still has a running attempt: {stored}"
            );
        } else {
            assert_eq!(reply.status, 409, "{reply:?}");
            assert!(["done", "failed", "refused"].contains(&stored["status"].as_str().unwrap()));
        }
        // No dispatch ran twice: each attempt answers a different dispatch.
        let mut brokers: Vec<&str> = stored["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|attempt| attempt["broker_id"].as_str().unwrap())
            .collect();
        let count = brokers.len();
        brokers.sort_unstable();
        brokers.dedup();
        assert_eq!(brokers.len(), count, "one dispatch ran twice: {stored}");
    }
}

#[test]
fn a_task_whose_worker_died_mid_job_is_restarted_once_its_lease_runs_out() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let lease = [("lease_ms", "1000"), ("redispatch_after_ms", "1")];
    let mut app = Topology::start(1, &lease);
    let client = app.client();
    let task = client.create(json!({"job": "sleep", "ms": 3000}));
    let processing = client.wait_for_status(id(&task), "processing");

    // The worker process dies with the job half done.
    drop(app.workers.pop());
    let early = client.restart(id(&task));
    assert_eq!(early.status, 200);
    assert_eq!(
        early.body, processing,
        "a live lease must keep the task as it is"
    );

    // Once the lease runs out, the same request restarts it.
    client.wait_for(id(&task), "restartable", |_| {
        client.restart(id(&task)).body["status"] == "pending"
    });
    assert_eq!(
        client.info(id(&task))["attempts"][0]["outcome"],
        "abandoned"
    );

    app.start_worker(&lease);
    // The restart's message was published while no worker listened: redispatch recovers it.
    let recovered = client.wait_for(id(&task), "done", |task| {
        if task["status"] == "pending" {
            client.request("POST", "/redispatch", None);
        }
        task["status"] == "done"
    });
    assert_eq!(attempts(&recovered), 2);
    assert_eq!(recovered["id"], task["id"]);
}

#[test]
fn a_job_that_traps_leaves_the_host_serving_and_the_task_recoverable() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let app = App::start_with(&[("lease_ms", "500")]);
    let client = app.client();
    let crashed = client.create(json!({"job": "crash"}));
    let processing = client.wait_for_status(id(&crashed), "processing");
    assert_eq!(attempts(&processing), 1);

    // The trap took down one instance, not the host: the app still answers and runs jobs.
    let next = client.create(json!({"job": "noop"}));
    client.wait_for_status(id(&next), "done");
    let stuck = client.info(id(&crashed));
    assert_eq!(stuck["status"], "processing");

    client.wait_for(id(&crashed), "restartable", |_| {
        client.restart(id(&crashed)).body["status"] == "pending"
    });
    assert_eq!(
        client.info(id(&crashed))["attempts"][0]["outcome"],
        "abandoned"
    );
    // Stop it crashing again.
    assert_eq!(client.cancel(id(&crashed)).status, 200);
}

#[test]
fn a_redis_outage_keeps_reads_up_loses_no_task_and_redispatch_recovers() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let variables = [("redispatch_after_ms", "1")];
    let mut app = Topology::start(1, &variables);
    let client = app.client();
    let before = client.create(json!({"job": "noop"}));
    client.wait_for_status(id(&before), "done");

    app.redis.stop();
    // Like `spin up`, the worker process ends when its Redis trigger loses the connection.
    app.workers[0].wait_for_exit();
    assert!(
        !app.api.has_exited(),
        "the API process must not go down with Redis"
    );

    assert_eq!(client.info(id(&before))["status"], "done");
    assert_eq!(client.list("").len(), 1);
    let mut refused = Vec::new();
    for n in 0..3 {
        let reply = client.request(
            "POST",
            "/create",
            Some(format!("{{\"n\": {n}}}").into_bytes()),
        );
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(
            reply
                .detail()
                .contains("was created but could not be dispatched"),
            "{}",
            reply.detail()
        );
        refused.push(reply);
    }
    let restart = client.restart(id(&before));
    assert_eq!(restart.status, 503);
    assert!(
        restart
            .detail()
            .starts_with("Failed to restart task with ID"),
        "{}",
        restart.detail()
    );
    assert_eq!(client.request("POST", "/redispatch", None).status, 503);

    // Every create that answered 503 left its task, pending, for redispatch to send.
    let pending = client.list("?status=pending");
    assert_eq!(pending.len(), 4, "{pending:?}");

    app.redis.resume();
    app.workers.clear();
    app.start_worker(&variables);
    let redispatched = client.request("POST", "/redispatch", None);
    assert_eq!(redispatched.status, 200, "{redispatched:?}");
    assert_eq!(
        redispatched.body["redispatched"].as_array().unwrap().len(),
        4
    );
    for task in pending {
        client.wait_for_status(id(&task), "done");
    }
    assert_eq!(client.list("?status=done").len(), 4);
}

#[test]
fn hostile_requests_get_4xx_without_a_trap_and_change_nothing() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let app = App::start();
    let client = app.client();
    let task = client.create(json!({"job": "noop"}));
    let done = client.wait_for_status(id(&task), "done");

    let huge_id = "a".repeat(10_000);
    let hostile: Vec<(&str, String, Option<Vec<u8>>)> = vec![
        ("GET", format!("/info?task_id={huge_id}"), None),
        ("GET", "/info?task_id=%00%00%00".into(), None),
        ("GET", "/info?task_id=%E2%80%AE%E2%80%AE".into(), None),
        ("GET", "/info?task_id=task:*".into(), None),
        ("PUT", "/cancel?task_id=index:page:0".into(), None),
        (
            "PUT",
            "/restart?task_id=..%2F..%2Fsqlite_key_value.db".into(),
            None,
        ),
        (
            "PUT",
            format!("/cancel?task_id={}&task_id={}", id(&task), id(&task)),
            None,
        ),
        ("GET", "/list?limit=99999999999999999999999".into(), None),
        ("GET", "/list?offset=1e3".into(), None),
        ("GET", "/list?status=done%00".into(), None),
        (
            "POST",
            "/create".into(),
            Some(b"{\"job\": \"noop\"".to_vec()),
        ),
        ("POST", "/create".into(), Some(vec![0xff, 0xfe, 0x00])),
        (
            "POST",
            "/create".into(),
            Some(b"{\"broker_id\": \"x\"}".to_vec()),
        ),
        (
            "POST",
            "/create".into(),
            Some(b"{\"revision\": 9}".to_vec()),
        ),
        (
            "POST",
            "/create".into(),
            Some("[".repeat(100_000).into_bytes()),
        ),
        ("POST", "/create".into(), Some(vec![b' '; 2 * 1024 * 1024])),
        ("DELETE", format!("/cancel?task_id={}", id(&task)), None),
        ("PATCH", "/create".into(), Some(b"{}".to_vec())),
    ];
    for (method, path, body) in hostile {
        let reply = client.request(method, &path, body);
        assert!(
            (400..500).contains(&reply.status),
            "{method} {}: {reply:?}",
            &path[..path.len().min(80)]
        );
        assert!(!reply.detail().is_empty());
    }
    assert_eq!(client.info(id(&task)), done);
    assert_eq!(client.list("").len(), 1);
    let host = app.host.as_ref().unwrap();
    let traps: Vec<String> = host
        .stderr()
        .into_iter()
        .filter(|line| line.contains("trap") || line.contains("panicked"))
        .collect();
    assert!(traps.is_empty(), "the components trapped: {traps:?}");
}

#[test]
fn the_task_rules_hold_on_a_store_whose_swaps_report_failure_after_writing() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    // Spin 4.0.2's Redis-backed store writes, then reports `cas-failed`.
    let redis = Redis::start();
    let state = TempDir::new();
    let host = Host::start(&HostOptions {
        args: &["--kv-cas", "redis-quirk"],
        ..HostOptions::new(&redis, &state.0)
    });
    let client = Client::new(&host.base_url);

    let done = client.create(json!({"job": "noop"}));
    let done = client.wait_for_status(id(&done), "done");
    assert_eq!(attempts(&done), 1);

    let blocker = client.create(json!({"job": "sleep", "ms": 500}));
    let queued = client.create(json!({"job": "noop"}));
    let canceled = client.cancel(id(&queued));
    assert_eq!(canceled.status, 200, "{canceled:?}");
    client.wait_for_status(id(&blocker), "done");
    let restarted = client.restart(id(&queued));
    assert_eq!(restarted.status, 200, "{restarted:?}");
    let rerun = client.wait_for_status(id(&queued), "done");
    assert_eq!(attempts(&rerun), 1);
    assert_eq!(client.list("?status=done").len(), 3);
}

#[test]
fn with_a_token_set_every_endpoint_but_the_description_needs_it() {
    if external() {
        return eprintln!("skipped: needs an app of its own");
    }
    let app = App::start_with(&[("api_token", "s3cret")]);
    let anonymous = app.client();
    let wrong = app.client().with_token("s3cre");
    let client = app.client().with_token("s3cret");
    let task = client.create(json!({"job": "noop"}));
    client.wait_for_status(id(&task), "done");

    let requests = [
        ("GET", format!("/info?task_id={}", id(&task))),
        ("GET", "/list".to_owned()),
        ("POST", "/create".to_owned()),
        ("PUT", format!("/restart?task_id={}", id(&task))),
        ("PUT", format!("/cancel?task_id={}", id(&task))),
        ("POST", "/redispatch".to_owned()),
    ];
    for (method, path) in &requests {
        for refused in [&anonymous, &wrong] {
            let reply = refused.request(method, path, Some(b"{}".to_vec()));
            assert_eq!(reply.status, 401, "{method} {path}: {reply:?}");
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
            assert_eq!(reply.detail(), "Not authenticated");
        }
    }
    assert_eq!(
        client.list("").len(),
        1,
        "a refused request changed something"
    );
    assert_eq!(client.info(id(&task))["status"], "done");
    assert_eq!(anonymous.request("GET", "/openapi.json", None).status, 200);
}
