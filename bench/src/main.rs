//! The benchmark: drives the app through the release test host over loopback and prints a
//! table of `/list` latency as tasks accumulate, `/info` latency and throughput, end-to-end
//! dispatch, and the size of every component.
//!
//! `cargo benchmark` (an alias of `cargo run -p bench --profile bench-host`). Figures are for
//! the wasmtime test host on this machine: compare them with each other (the ratios), not with
//! Spin's.

#[path = "../../tests/host/tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Map};
use spin_task_helpers::store::{MemoryKeyValue, Tasks};
use spin_task_helpers::task::{Task, Timestamp};
use spin_test_host::key_value::{self, CasMode, KeyValueStore};
use support::{id, workspace, Client, Host, HostOptions, Redis, TempDir, HTTP_COMPONENTS};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const LIST_SAMPLES: usize = 200;
const INFO_REQUESTS: usize = 4_000;
const INFO_CONCURRENCY: usize = 8;
const CREATORS: usize = 4;

fn main() {
    build_release_host();
    println!("## Component sizes\n\n| component | bytes | KiB |\n|---|---:|---:|");
    for (name, bytes) in component_sizes() {
        println!("| {name} | {bytes} | {:.1} |", bytes as f64 / 1024.0);
    }

    let redis = Redis::start();
    let state = TempDir::new();
    // No worker: the tasks stay where the benchmark puts them.
    let options = HostOptions {
        components: &HTTP_COMPONENTS,
        ..HostOptions::new(&redis, &state.0)
    };
    let api = Host::start(&options);
    let client = Client::new(&api.base_url);
    let store_file = KeyValueStore::open(&state.0.join(key_value::FILE_NAME), CasMode::Sqlite)
        .expect("the host's key-value file opens");
    let seed = Tasks::new(MemoryKeyValue::default());

    println!("\n## `/list?limit=100` as tasks accumulate (every 10th task canceled)\n");
    println!("| tasks | p50 ms | p99 ms | `status=canceled` p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|");
    let mut ids: Vec<String> = Vec::new();
    let mut p50s = Vec::new();
    for size in SIZES {
        populate(&seed, &store_file, &mut ids, size);
        // Untimed: the first requests after a write pay for cold caches.
        latencies(LIST_SAMPLES / 10, || drop(client.list("?limit=100")));
        let all = latencies(LIST_SAMPLES, || drop(client.list("?limit=100")));
        let canceled = latencies(LIST_SAMPLES, || {
            drop(client.list("?status=canceled&limit=100"))
        });
        println!(
            "| {size} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(percentile(&all, 50)),
            ms(percentile(&all, 99)),
            ms(percentile(&canceled, 50)),
            ms(percentile(&canceled, 99))
        );
        p50s.push((percentile(&all, 50), percentile(&canceled, 50)));
    }
    let (first, last) = (p50s[0], p50s[p50s.len() - 1]);
    println!(
        "\np50 ratio {}k/{}k tasks: {:.2} without a filter, {:.2} with `status=canceled`",
        SIZES[2] / 1000,
        SIZES[0] / 1000,
        last.0.as_secs_f64() / first.0.as_secs_f64(),
        last.1.as_secs_f64() / first.1.as_secs_f64()
    );

    let (info, elapsed) = concurrently(INFO_REQUESTS, INFO_CONCURRENCY, |n| {
        drop(client.info(&ids[n * 7919 % ids.len()]));
    });
    println!("\n## `/info` at concurrency {INFO_CONCURRENCY}, {INFO_REQUESTS} requests, {} tasks stored\n", ids.len());
    println!(
        "| p50 ms | p99 ms | requests/s |\n|---:|---:|---:|\n| {:.2} | {:.2} | {:.0} |",
        ms(percentile(&info, 50)),
        ms(percentile(&info, 99)),
        INFO_REQUESTS as f64 / elapsed.as_secs_f64()
    );
    drop(api);

    // Dispatch needs the worker: a fresh app with every component.
    let state = TempDir::new();
    let app = Host::start(&HostOptions::new(&redis, &state.0));
    let client = Client::new(&app.base_url);
    let round_trips = latencies(100, || {
        let task = client.create(json!({"job": "noop"}));
        // Polled every millisecond: the tests' 25 ms poll would be most of the figure.
        while client.info(id(&task))["status"] != "done" {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let batch = 1_000;
    let started = Instant::now();
    let (_, _) = concurrently(batch, CREATORS, |n| {
        drop(client.create(json!({"job": "noop", "n": n})))
    });
    // The worker takes messages in order; the batch is done when all of it is.
    let last_done = format!("?status=done&offset={}&limit=1", 100 + batch - 1);
    while client.list(&last_done).is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let throughput = batch as f64 / started.elapsed().as_secs_f64();
    println!("\n## End to end: `POST /create` of a `noop` task until it is `done`\n");
    println!(
        "| create → done p50 ms | p99 ms | tasks/s ({batch} created by {CREATORS} clients) |\n|---:|---:|---:|\n| {:.2} | {:.2} | {:.0} |",
        ms(percentile(&round_trips, 50)),
        ms(percentile(&round_trips, 99)),
        throughput
    );
}

fn build_release_host() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--profile", "bench-host", "-p", "spin-test-host"])
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the test host failed");
    // The harness starts the host named here.
    std::env::set_var(
        "SPIN_TEST_HOST",
        workspace().join("target/bench-host/spin-test-host"),
    );
}

fn component_sizes() -> Vec<(String, u64)> {
    let dir = workspace().join("target/wasm32-wasip1/release");
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("the components are built")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let name = name.strip_suffix(".wasm")?.to_owned();
            Some((name, entry.metadata().ok()?.len()))
        })
        .collect();
    sizes.sort();
    sizes
}

/// Stores tasks until `ids` holds `size`, canceling every 10th, and copies them into the
/// host's key-value file.
///
/// The tasks are stored natively, by the core code `/create` and `/cancel` run, rather than
/// through HTTP: creating 100k tasks through the test host takes about ten minutes, and what
/// is measured here is reading them.
fn populate(
    seed: &Tasks<MemoryKeyValue>,
    file: &KeyValueStore,
    ids: &mut Vec<String>,
    size: usize,
) {
    for n in ids.len()..size {
        let mut fields = Map::new();
        fields.insert("job".into(), "noop".into());
        fields.insert("n".into(), n.into());
        let task = seed
            .insert(Task::new(Timestamp::now(), None, fields))
            .expect("the in-memory store takes every task");
        if n.is_multiple_of(10) {
            seed.cancel(&task.id, Timestamp::now())
                .expect("a pending task can be canceled");
        }
        ids.push(task.id.to_string());
    }
    file.set_many("default", &seed.store().to_entries())
        .expect("the host's key-value file takes the tasks");
}

/// Runs `request` `count` times from `threads` threads; answers each run's duration and the
/// whole run's.
fn concurrently(
    count: usize,
    threads: usize,
    request: impl Fn(usize) + Sync,
) -> (Vec<Duration>, Duration) {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let durations = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut durations = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= count {
                            return durations;
                        }
                        let start = Instant::now();
                        request(n);
                        durations.push(start.elapsed());
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    (durations, started.elapsed())
}

fn latencies(samples: usize, mut request: impl FnMut()) -> Vec<Duration> {
    (0..samples)
        .map(|_| {
            let start = Instant::now();
            request();
            start.elapsed()
        })
        .collect()
}

fn percentile(durations: &[Duration], percent: usize) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() - 1) * percent / 100]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
