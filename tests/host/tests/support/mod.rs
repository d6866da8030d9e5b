//! What the black-box suite runs against: the app under the test host with a real
//! `redis-server`, or, with `BASE_URL` set, an app someone else runs (for example `spin up`).

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything the suite waits for may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The workspace root, where `spin.toml` is.
pub fn workspace() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir
        .ancestors()
        .find(|dir| dir.join("spin.toml").is_file());
    root.expect("the crate is inside the workspace")
        .to_path_buf()
}

/// The test host binary: this crate's own in its tests; the one `SPIN_TEST_HOST` names elsewhere
/// (the benchmark builds a release one).
fn host_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_spin-test-host") {
        Some(path) => path.into(),
        None => std::env::var_os("SPIN_TEST_HOST")
            .expect("SPIN_TEST_HOST names the test host")
            .into(),
    }
}

/// Builds the components once per test binary, as `spin up --build` would.
fn build_components() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .arg("wasm")
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the components failed");
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own on a free loopback port, stopped on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (see .ci/run)");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The components of `spin.toml` that serve HTTP: an API process without the worker.
pub const HTTP_COMPONENTS: [&str; 7] = [
    "info",
    "list",
    "create",
    "restart",
    "cancel",
    "redispatch",
    "openapi",
];

/// One run of the test host serving the project's `spin.toml`, stopped on drop.
pub struct Host {
    /// Where it serves HTTP; empty for a worker-only host.
    pub base_url: String,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// How to start a host.
#[derive(Clone, Copy)]
pub struct HostOptions<'a> {
    pub redis: &'a Redis,
    pub state_dir: &'a Path,
    /// Only these components (like `spin up -c`); all when empty.
    pub components: &'a [&'a str],
    /// Application variables to set, beside the Redis address.
    pub variables: &'a [(&'a str, &'a str)],
    /// More arguments for the host.
    pub args: &'a [&'a str],
}

impl<'a> HostOptions<'a> {
    pub fn new(redis: &'a Redis, state_dir: &'a Path) -> Self {
        Self {
            redis,
            state_dir,
            components: &[],
            variables: &[],
            args: &[],
        }
    }
}

impl Host {
    /// A host serving HTTP (and the worker, unless `components` leaves it out).
    pub fn start(options: &HostOptions) -> Self {
        Self::spawn(options, "Serving ")
    }

    /// A host running only the worker, as its own process: the recommended topology.
    pub fn start_worker(options: &HostOptions) -> Self {
        Self::spawn(
            &HostOptions {
                components: &["worker"],
                ..*options
            },
            "Subscribed ",
        )
    }

    fn spawn(options: &HostOptions, ready: &'static str) -> Self {
        build_components();
        let mut command = Command::new(host_binary());
        command
            .arg("--manifest")
            .arg(workspace().join("spin.toml"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(options.state_dir)
            .arg("--variable")
            .arg(format!("redis_address={}", options.redis.url()))
            .args(options.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in options.variables {
            command.arg("--variable").arg(format!("{name}={value}"));
        }
        for component in options.components {
            command.args(["--component", component]);
        }
        let mut child = command.spawn().expect("the test host starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("host: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let ready_line = wait_for_line(&mut child, ready);
        let base_url = match ready {
            "Serving " => ready_line,
            _ => String::new(),
        };
        Self {
            base_url,
            child,
            stderr,
        }
    }

    /// Whether the host process has exited by itself.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for the process to exit by itself; fails the test after [`PATIENCE`].
    pub fn wait_for_exit(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.has_exited() {
            assert!(Instant::now() < deadline, "the host did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the host has written to its error output so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the host's output up to the first line starting with `prefix`, answers the rest of
/// that line, and keeps echoing the output.
fn wait_for_line(child: &mut Child, prefix: &'static str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (ready, wait) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = ready.send(rest.trim().to_owned());
            }
            println!("host: {line}");
        }
    });
    match wait.recv_timeout(PATIENCE * 3) {
        Ok(rest) => rest,
        Err(_) => {
            let _ = child.kill();
            panic!("the test host never printed `{prefix}…`");
        }
    }
}

/// An app with Redis, its own state, and a host serving it.
pub struct App {
    pub redis: Redis,
    pub state: TempDir,
    pub host: Option<Host>,
}

impl App {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(variables: &[(&str, &str)]) -> Self {
        let redis = Redis::start();
        let state = TempDir::new();
        let host = Host::start(&HostOptions {
            variables,
            ..HostOptions::new(&redis, &state.0)
        });
        Self {
            redis,
            state,
            host: Some(host),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.host.as_ref().expect("the host runs").base_url)
    }
}

/// The app a test talks to: the one at `BASE_URL`, or one started for this test alone (and
/// stopped when the test ends).
pub struct TestApp {
    client: Client,
    _own: Option<App>,
}

impl std::ops::Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

pub fn app() -> TestApp {
    match std::env::var("BASE_URL") {
        Ok(base_url) => TestApp {
            client: Client::new(&base_url),
            _own: None,
        },
        Err(_) => {
            let own = App::start();
            TestApp {
                client: own.client(),
                _own: Some(own),
            }
        }
    }
}

/// Whether the suite runs against an app it does not control; tests that stop or restart
/// parts of the app are skipped then.
pub fn external() -> bool {
    std::env::var_os("BASE_URL").is_some()
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("spin-task-helpers-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP client for the task API.
#[derive(Clone)]
pub struct Client {
    base_url: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
}

/// A response: its status, headers and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn detail(&self) -> &str {
        self.body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail in {self:?}"))
    }
}

impl Client {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::blocking::Client::builder()
            .timeout(PATIENCE)
            .build()
            .unwrap();
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
            token: None,
        }
    }

    /// This client, sending `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn request(&self, method: &str, path_and_query: &str, body: Option<Vec<u8>>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base_url));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().expect("the app answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "status {status}: body is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn create(&self, fields: Value) -> Value {
        let reply = self.request(
            "POST",
            "/create",
            Some(serde_json::to_vec(&fields).unwrap()),
        );
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body
    }

    pub fn info(&self, id: &str) -> Value {
        let reply = self.request("GET", &format!("/info?task_id={id}"), None);
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    pub fn cancel(&self, id: &str) -> Reply {
        self.request("PUT", &format!("/cancel?task_id={id}"), None)
    }

    pub fn restart(&self, id: &str) -> Reply {
        self.request("PUT", &format!("/restart?task_id={id}"), None)
    }

    pub fn list(&self, query: &str) -> Vec<Value> {
        let reply = self.request("GET", &format!("/list{query}"), None);
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body.as_array().unwrap().clone()
    }

    /// Polls the task until `done` says so; fails the test after [`PATIENCE`].
    pub fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let task = self.info(id);
            if done(&task) {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never became {what}: {task}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_for_status(&self, id: &str, status: &str) -> Value {
        self.wait_for(id, status, |task| task["status"] == status)
    }
}

/// The id of a task response.
pub fn id(task: &Value) -> &str {
    task["id"].as_str().expect("a task has an id")
}
