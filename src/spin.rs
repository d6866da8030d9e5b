//! The adapters to Spin: its HTTP trigger, key-value store, outbound Redis and application
//! variables.
//!
//! Settings come from component variables, each falling back to the default the bundled
//! `spin.toml` also declares:
//!
//! | variable              | default                  | what it is                                   |
//! |-----------------------|--------------------------|----------------------------------------------|
//! | `store`               | `default`                | the key-value store label holding the tasks  |
//! | `redis_address`       | `redis://127.0.0.1:6379` | the Redis server dispatch goes through       |
//! | `channel`             | `tasks`                  | the Redis channel the worker listens on      |
//! | `default_job`         | `noop`                   | the job of a task that names none            |
//! | `lease_ms`            | `30000`                  | how long a worker's claim holds unrenewed    |
//! | `redispatch_after_ms` | `60000`                  | how long a task stays `pending` before `/redispatch` sends it again |
//! | `api_token`           | empty: no token needed   | the bearer token every request must carry    |

use std::cell::OnceCell;
use std::collections::HashMap;
use std::time::Duration;

use spin_sdk::http::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use spin_sdk::redis::Connection;
use spin_sdk::variables;
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store as kv};
use wasi::io::streams::StreamError;

use crate::api::{Api, ApiError, ApiRequest, ApiResponse, ApiSettings, JSON, MAX_BODY_BYTES};
use crate::dispatch::{DispatchError, DispatchMessage, Dispatcher};
use crate::store::{KeyValue, StoreError, Tasks};
use crate::worker::{Jobs, Worker, WorkerSettings};

/// The task endpoints on this component's store and Redis channel.
pub fn api() -> Result<Api<SpinKeyValue, RedisDispatcher>, ApiError> {
    let build = || -> Result<_, Misconfigured> {
        let token = variable("api_token", "")?;
        let settings = ApiSettings {
            api_token: Some(token).filter(|token| !token.is_empty()),
            redispatch_after: milliseconds("redispatch_after_ms", "60000")?,
        };
        let tasks = Tasks::new(SpinKeyValue::from_variables()?);
        Ok(Api::new(
            tasks,
            RedisDispatcher::from_variables()?,
            settings,
        ))
    };
    build().map_err(|Misconfigured(problem)| ApiError::Misconfigured(problem))
}

/// A worker running `jobs` on this component's store.
pub fn worker(jobs: Jobs) -> Result<Worker<SpinKeyValue>, Misconfigured> {
    let settings = WorkerSettings {
        lease: milliseconds("lease_ms", "30000")?,
        default_job: variable("default_job", "noop")?,
    };
    Ok(Worker::new(
        Tasks::new(SpinKeyValue::from_variables()?),
        jobs,
        settings,
    ))
}

/// A duration variable, in milliseconds.
fn milliseconds(name: &str, default: &str) -> Result<Duration, Misconfigured> {
    let text = variable(name, default)?;
    match text.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(Misconfigured(format!(
            "variable `{name}` must be a positive number of milliseconds, not `{text}`"
        ))),
    }
}

/// A setting the component cannot work with.
#[derive(Debug)]
pub struct Misconfigured(pub String);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the application is misconfigured: {}", self.0)
    }
}

impl std::error::Error for Misconfigured {}

/// Answers one HTTP request: reads it, lets `endpoint` answer, writes the answer.
///
/// Works on the request and response handles themselves rather than spin-sdk's `Request` and
/// `Response`, whose conversions would add about 95 KB to each component (`anyhow` with its
/// backtrace printer, a header map).
pub fn serve(
    request: IncomingRequest,
    response_out: ResponseOutparam,
    endpoint: impl FnOnce(&ApiRequest) -> Result<ApiResponse, ApiError>,
) {
    let response = read_request(request)
        .and_then(|request| endpoint(&request))
        .unwrap_or_else(ApiError::render);
    write_response(response_out, response);
}

fn read_request(request: IncomingRequest) -> Result<ApiRequest, ApiError> {
    let path_and_query = request.path_with_query().unwrap_or_default();
    let authorization = request.headers().get("authorization").into_iter().next();
    let mut api_request = ApiRequest::new(request.method().into(), &path_and_query, Vec::new());
    api_request.authorization = authorization;
    api_request.body = read_body(request)?;
    Ok(api_request)
}

/// The request body, cut off one byte past [`MAX_BODY_BYTES`]: enough for the endpoint to see
/// it is too large without holding all of it.
fn read_body(request: IncomingRequest) -> Result<Vec<u8>, ApiError> {
    let body = request.consume().map_err(|()| ApiError::UnreadableBody)?;
    let stream = body.stream().map_err(|()| ApiError::UnreadableBody)?;
    let mut bytes = Vec::new();
    while bytes.len() <= MAX_BODY_BYTES {
        let wanted = MAX_BODY_BYTES + 1 - bytes.len();
        match stream.blocking_read(wanted as u64) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(ApiError::UnreadableBody),
        }
    }
    Ok(bytes)
}

fn write_response(response_out: ResponseOutparam, response: ApiResponse) {
    let mut headers = vec![("content-type".to_owned(), JSON.as_bytes().to_vec())];
    headers.extend(
        response
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.into_bytes())),
    );
    let outgoing = OutgoingResponse::new(
        Fields::from_list(&headers).expect("the API only sets valid headers"),
    );
    outgoing
        .set_status_code(response.status.as_u16())
        .expect("the API only answers valid status codes");
    let body = outgoing.body().expect("a new response has a body");
    response_out.set(outgoing);
    // The client may be gone; there is no one left to tell if writing fails.
    if let Ok(stream) = body.write() {
        // `blocking-write-and-flush` takes at most 4096 bytes a call.
        for chunk in response.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
}

/// A component variable, or `default` where the component declares none.
fn variable(name: &str, default: &str) -> Result<String, Misconfigured> {
    match variables::get(name) {
        Ok(value) => Ok(value),
        Err(variables::Error::Undefined(_)) => Ok(default.to_owned()),
        Err(error) => Err(Misconfigured(format!("variable `{name}`: {error}"))),
    }
}

/// A Spin key-value store, through `wasi:keyvalue`, opened on first use.
pub struct SpinKeyValue {
    label: String,
    bucket: OnceCell<Result<kv::Bucket, StoreError>>,
}

/// A read made for a swap, and the key it was made on.
pub struct SpinCas {
    cas: atomics::Cas,
    key: String,
}

impl SpinKeyValue {
    /// The store named by the `store` variable.
    pub fn from_variables() -> Result<Self, Misconfigured> {
        Ok(Self::new(variable("store", "default")?))
    }

    pub fn new(label: String) -> Self {
        Self {
            label,
            bucket: OnceCell::new(),
        }
    }

    fn bucket(&self) -> Result<&kv::Bucket, StoreError> {
        self.bucket
            .get_or_init(|| kv::open(&self.label).map_err(|error| store_error(&self.label, error)))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn error(&self, error: kv::Error) -> StoreError {
        store_error(&self.label, error)
    }
}

fn store_error(label: &str, error: kv::Error) -> StoreError {
    let reason = match error {
        kv::Error::NoSuchStore => "no such store".to_owned(),
        kv::Error::AccessDenied => {
            "access denied (is it in the component's `key_value_stores`?)".to_owned()
        }
        kv::Error::Other(reason) => reason,
    };
    StoreError(format!("store `{label}`: {reason}"))
}

impl KeyValue for SpinKeyValue {
    type Cas = SpinCas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bucket()?.get(key).map_err(|e| self.error(e))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found = batch::get_many(self.bucket()?, keys).map_err(|e| self.error(e))?;
        // Stores answer in their own order, and may leave missing keys out.
        let mut found: HashMap<String, Vec<u8>> = found
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        Ok(keys.iter().map(|key| found.remove(key)).collect())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.bucket()?.set(key, value).map_err(|e| self.error(e))
    }

    fn watch(&self, key: &str) -> Result<(SpinCas, Option<Vec<u8>>), StoreError> {
        let cas = atomics::Cas::new(self.bucket()?, key).map_err(|e| self.error(e))?;
        let current = cas.current().map_err(|e| self.error(e))?;
        Ok((
            SpinCas {
                cas,
                key: key.to_owned(),
            },
            current,
        ))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        atomics::increment(self.bucket()?, key, delta).map_err(|e| self.error(e))
    }

    fn swap(&self, cas: SpinCas, value: &[u8]) -> Result<bool, StoreError> {
        let SpinCas { cas, key } = cas;
        match atomics::swap(cas, value) {
            Ok(()) => Ok(true),
            // Spin's Redis-backed store reports a failed swap even when it wrote the value, so
            // the stored bytes decide. Every version of a task is distinct bytes, so equal
            // bytes mean this write is the one that landed.
            Err(failure) => match self.get(&key)? {
                Some(stored) if stored == value => Ok(true),
                _ => match failure {
                    atomics::CasError::CasFailed(_) => Ok(false),
                    atomics::CasError::StoreError(error) => Err(self.error(error)),
                },
            },
        }
    }
}

/// Sends dispatch messages to the worker over a Redis channel.
pub struct RedisDispatcher {
    address: String,
    channel: String,
}

impl RedisDispatcher {
    /// The channel named by the `redis_address` and `channel` variables.
    pub fn from_variables() -> Result<Self, Misconfigured> {
        Ok(Self {
            address: variable("redis_address", "redis://127.0.0.1:6379")?,
            channel: variable("channel", "tasks")?,
        })
    }
}

impl Dispatcher for RedisDispatcher {
    fn dispatch(&self, message: &DispatchMessage) -> Result<(), DispatchError> {
        let failed = |error: spin_sdk::redis::Error| {
            DispatchError(format!("Redis at {}: {error}", self.address))
        };
        let connection = Connection::open(&self.address).map_err(failed)?;
        connection
            .publish(&self.channel, &message.to_bytes())
            .map_err(failed)
    }
}
