//! The HTTP endpoints, on plain request and response types: parse the request, apply the
//! rules, render JSON.
//!
//! Every endpoint answers an [`ApiResponse`]: expected failures become an [`ApiError`] with one
//! status code and a FastAPI-style `{"detail": "..."}` body, never a panic.

use std::fmt;

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;
use subtle::ConstantTimeEq;

use crate::dispatch::{DispatchError, DispatchMessage, Dispatcher};
use crate::lifecycle::AlreadyFinished;
use crate::response::{convert_to_response, SchemaMismatch};
use crate::store::{KeyValue, ReadError, StoreError, Tasks, UpdateError};
use crate::task::{Task, TaskId, TaskStatus, Timestamp};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The page size of `/list` when none is asked for.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page `/list` serves.
pub const MAX_LIMIT: usize = 1000;

/// An expected failure, and the one response it gets.
#[derive(Debug)]
pub enum ApiError {
    MethodNotAllowed(Method),
    /// A query parameter or body field that is missing or wrong: what is wrong with it.
    Invalid(String),
    /// A body that does not parse as JSON.
    MalformedBody(String),
    /// A body the host could not hand over.
    UnreadableBody,
    BodyTooLarge,
    NotFound(TaskId),
    AlreadyFinished(TaskId, TaskStatus),
    /// Concurrent requests kept changing the task.
    Contended(TaskId),
    /// The task was stored but its dispatch could not be sent.
    NotDispatched {
        id: TaskId,
        created: bool,
        error: DispatchError,
    },
    /// `/redispatch` could not send this task; tasks before it were sent.
    NotRedispatched {
        id: TaskId,
        error: DispatchError,
    },
    /// A token is set and the request does not carry it.
    Unauthorized,
    SchemaMismatch(SchemaMismatch),
    Store(String),
    /// The application's settings are wrong.
    Misconfigured(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedBody(_) | Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::AlreadyFinished(..) | Self::Contended(_) => StatusCode::CONFLICT,
            Self::NotDispatched { .. } | Self::NotRedispatched { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::SchemaMismatch(_) | Self::Store(_) | Self::Misconfigured(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The error as the API answers it.
    pub fn render(self) -> ApiResponse {
        let mut response = json_response(
            self.status(),
            &ErrorBody {
                detail: &self.to_string(),
            },
        );
        match &self {
            Self::MethodNotAllowed(allowed) => {
                response
                    .headers
                    .push(("allow", allowed.as_str().to_owned()));
            }
            Self::Unauthorized => response
                .headers
                .push(("www-authenticate", "Bearer".to_owned())),
            _ => {}
        }
        response
    }
}

/// An error as FastAPI writes it.
#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MethodNotAllowed(_) => f.write_str("Method Not Allowed"),
            Self::Invalid(what) => f.write_str(what),
            Self::MalformedBody(reason) => write!(f, "request body is not valid JSON: {reason}"),
            Self::UnreadableBody => f.write_str("request body could not be read"),
            Self::BodyTooLarge => write!(f, "request body is larger than {MAX_BODY_BYTES} bytes"),
            Self::NotFound(id) => write!(f, "Task with ID `{id}` not found"),
            Self::AlreadyFinished(id, status) => write!(
                f,
                "Task with ID `{id}` is already {status}; a finished task cannot be canceled"
            ),
            Self::Contended(id) => write!(
                f,
                "Task with ID `{id}` is being changed by other requests; try again"
            ),
            Self::NotDispatched { id, created: true, error } => write!(
                f,
                "Task with ID `{id}` was created but could not be dispatched ({error}); restart it to try again"
            ),
            Self::NotDispatched { id, created: false, error } => {
                write!(f, "Failed to restart task with ID `{id}`: {error}")
            }
            Self::NotRedispatched { id, error } => write!(
                f,
                "Failed to redispatch task with ID `{id}`: {error}; call again once it is back"
            ),
            Self::Unauthorized => f.write_str("Not authenticated"),
            Self::SchemaMismatch(mismatch) => mismatch.fmt(f),
            Self::Store(error) => f.write_str(error),
            Self::Misconfigured(problem) => write!(f, "the application is misconfigured: {problem}"),
        }
    }
}

impl From<SchemaMismatch> for ApiError {
    fn from(mismatch: SchemaMismatch) -> Self {
        Self::SchemaMismatch(mismatch)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        Self::Store(error.to_string())
    }
}

/// How the endpoints behave.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// How long a task may stay `pending` before `/redispatch` sends it again.
    pub redispatch_after: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            api_token: None,
            redispatch_after: Duration::from_secs(60),
        }
    }
}

/// What the endpoints read of an HTTP request.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: Method,
    /// The query string, without the `?`.
    pub query: String,
    /// The `Authorization` header, if given.
    pub authorization: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

impl ApiRequest {
    /// A request to `path_and_query` without headers, as tests and tools make them.
    pub fn new(method: Method, path_and_query: &str, body: impl Into<Vec<u8>>) -> Self {
        let query = path_and_query
            .split_once('?')
            .map_or("", |(_, query)| query);
        Self {
            method,
            query: query.to_owned(),
            authorization: None,
            body: body.into(),
        }
    }
}

/// An endpoint's answer: always a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: StatusCode,
    /// Headers besides `content-type: application/json`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The value of the header `name` (lowercase), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        if name == "content-type" {
            return Some(JSON);
        }
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The content type of every answer.
pub const JSON: &str = "application/json";

/// The task endpoints over one key-value store and one dispatcher.
///
/// `R` in each endpoint is the response schema (see [`convert_to_response`]).
pub struct Api<S, D> {
    tasks: Tasks<S>,
    dispatcher: D,
    settings: ApiSettings,
}

type ApiResult = Result<ApiResponse, ApiError>;

/// What `/redispatch` answers.
#[derive(Debug, Serialize)]
struct Redispatched {
    redispatched: Vec<TaskId>,
}

impl<S: KeyValue, D: Dispatcher> Api<S, D> {
    pub fn new(tasks: Tasks<S>, dispatcher: D, settings: ApiSettings) -> Self {
        Self {
            tasks,
            dispatcher,
            settings,
        }
    }

    /// Checks the caller and the method, then runs the endpoint; renders any error.
    fn serve(
        &self,
        request: &ApiRequest,
        allowed: Method,
        endpoint: impl FnOnce() -> ApiResult,
    ) -> ApiResponse {
        let checked = authorize(request, self.settings.api_token.as_deref())
            .and_then(|()| expect_method(request, allowed))
            .and_then(|()| endpoint());
        checked.unwrap_or_else(ApiError::render)
    }

    /// `GET /info?task_id=ID`: the task.
    pub fn info<R: Serialize + DeserializeOwned>(&self, request: &ApiRequest) -> ApiResponse {
        self.serve(request, Method::GET, || {
            let id = Query::parse(request)?.task_id()?;
            let task = self.tasks.get(&id)?.ok_or(ApiError::NotFound(id))?;
            task_response::<R>(StatusCode::OK, &task)
        })
    }

    /// `GET /list?offset=0&limit=100&status=S`: a page of tasks in creation order.
    pub fn list<R: Serialize + DeserializeOwned>(&self, request: &ApiRequest) -> ApiResponse {
        self.serve(request, Method::GET, || {
            let query = Query::parse(request)?;
            let page = ListPage::from_query(&query)?;
            let tasks = self.tasks.list(page.status, page.offset, page.limit)?;
            let responses = tasks
                .iter()
                .map(convert_to_response::<R>)
                .collect::<Result<Vec<R>, _>>()?;
            Ok(json_response(StatusCode::OK, &responses))
        })
    }

    /// `PUT /restart?task_id=ID`: back to `pending` under a new dispatch, unless its worker is
    /// still alive.
    pub fn restart<R: Serialize + DeserializeOwned>(&self, request: &ApiRequest) -> ApiResponse {
        self.serve(request, Method::PUT, || {
            let id = Query::parse(request)?.task_id()?;
            let now = Timestamp::now();
            let broker_id = TaskId::generate(now);
            let updated = self
                .tasks
                .restart(&id, now, &broker_id)
                .map_err(|error| update_error(&id, error, |never| match never {}))?;
            // The task is stored as pending first: a dispatch that fails leaves it restartable,
            // and a worker that gets the message always finds the dispatch it names.
            if updated.decision {
                self.dispatcher
                    .dispatch(&DispatchMessage::for_task(&updated.task))
                    .map_err(|error| ApiError::NotDispatched {
                        id,
                        created: false,
                        error,
                    })?;
            }
            task_response::<R>(StatusCode::OK, &updated.task)
        })
    }

    /// `PUT /cancel?task_id=ID`: a pending or running task becomes `canceled`.
    pub fn cancel<R: Serialize + DeserializeOwned>(&self, request: &ApiRequest) -> ApiResponse {
        self.serve(request, Method::PUT, || {
            let id = Query::parse(request)?.task_id()?;
            let task = self.tasks.cancel(&id, Timestamp::now()).map_err(|error| {
                update_error(&id, error, |AlreadyFinished(status)| {
                    ApiError::AlreadyFinished(id.clone(), status)
                })
            })?;
            task_response::<R>(StatusCode::OK, &task)
        })
    }

    /// `POST /create` with a JSON object body: a new `pending` task, dispatched to the worker.
    pub fn create<R: Serialize + DeserializeOwned>(&self, request: &ApiRequest) -> ApiResponse {
        self.serve(request, Method::POST, || {
            let (parent_id, fields) = parse_new_task(&request.body)?;
            let task = self
                .tasks
                .insert(Task::new(Timestamp::now(), parent_id, fields))?;
            self.dispatcher
                .dispatch(&DispatchMessage::for_task(&task))
                .map_err(|error| ApiError::NotDispatched {
                    id: task.id.clone(),
                    created: true,
                    error,
                })?;
            task_response::<R>(StatusCode::CREATED, &task)
        })
    }

    /// `POST /redispatch`: sends again every task whose dispatch seems lost — `pending` for
    /// longer than [`ApiSettings::redispatch_after`], or `processing` under a lease that ran
    /// out — and answers their ids. Meant for a scheduler to call; concurrent calls send each
    /// task once.
    pub fn redispatch(&self, request: &ApiRequest) -> ApiResponse {
        self.serve(request, Method::POST, || {
            let now = Timestamp::now();
            let overdue_since = now - self.settings.redispatch_after;
            let mut redispatched = Vec::new();
            for status in [TaskStatus::Pending, TaskStatus::Processing] {
                for task in self.tasks.list(Some(status), 0, usize::MAX)? {
                    let broker_id = TaskId::generate(now);
                    let updated = self
                        .tasks
                        .redispatch(&task.id, now, overdue_since, &broker_id);
                    let updated = match updated {
                        Ok(updated) => updated,
                        // Gone, or taken by a concurrent caller: not this call's to send.
                        Err(UpdateError::NotFound | UpdateError::Contended) => continue,
                        Err(error) => {
                            return Err(update_error(&task.id, error, |never| match never {}))
                        }
                    };
                    if updated.decision {
                        self.dispatcher
                            .dispatch(&DispatchMessage::for_task(&updated.task))
                            .map_err(|error| ApiError::NotRedispatched {
                                id: task.id.clone(),
                                error,
                            })?;
                        redispatched.push(task.id);
                    }
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &Redispatched { redispatched },
            ))
        })
    }
}

/// Lets the request through if no token is set, or if it carries the token.
fn authorize(request: &ApiRequest, token: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = request
        .authorization
        .as_deref()
        .and_then(|value| value.strip_prefix(b"Bearer "));
    // Constant time, so the comparison does not tell how much of a guess was right.
    match given {
        Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// `GET /openapi.json`: the API's OpenAPI `document`. It holds no data, so it needs no token.
pub fn openapi(request: &ApiRequest, document: &[u8]) -> ApiResponse {
    let served = expect_method(request, Method::GET).map(|()| ApiResponse {
        status: StatusCode::OK,
        headers: Vec::new(),
        body: document.to_vec(),
    });
    served.unwrap_or_else(ApiError::render)
}

fn expect_method(request: &ApiRequest, allowed: Method) -> Result<(), ApiError> {
    if request.method == allowed {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(allowed))
    }
}

fn update_error<E>(
    id: &TaskId,
    error: UpdateError<E>,
    refused: impl FnOnce(E) -> ApiError,
) -> ApiError {
    match error {
        UpdateError::NotFound => ApiError::NotFound(id.clone()),
        UpdateError::Refused(reason) => refused(reason),
        UpdateError::Contended => ApiError::Contended(id.clone()),
        UpdateError::Read(error) => error.into(),
    }
}

fn task_response<R: Serialize + DeserializeOwned>(status: StatusCode, task: &Task) -> ApiResult {
    Ok(json_response(status, &convert_to_response::<R>(task)?))
}

fn json_response(status: StatusCode, body: &impl Serialize) -> ApiResponse {
    let body = serde_json::to_vec(body).expect("responses always serialize");
    ApiResponse {
        status,
        headers: Vec::new(),
        body,
    }
}

/// The query string's parameters, each given at most once.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(request: &ApiRequest) -> Result<Self, ApiError> {
        let mut parameters: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(request.query.as_bytes()) {
            if parameters.iter().any(|(seen, _)| *seen == name) {
                return Err(ApiError::Invalid(format!(
                    "query parameter `{name}` is given more than once"
                )));
            }
            parameters.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(parameters))
    }

    fn get(&self, name: &str) -> Option<&str> {
        let (_, value) = self.0.iter().find(|(given, _)| given == name)?;
        Some(value)
    }

    fn task_id(&self) -> Result<TaskId, ApiError> {
        let id = self
            .get("task_id")
            .ok_or_else(|| ApiError::Invalid("query parameter `task_id` is required".into()))?;
        parse_id("task_id", id)
    }
}

fn parse_id(name: &str, text: &str) -> Result<TaskId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::Invalid(format!(
            "`{name}` must be {} hexadecimal characters",
            TaskId::LEN
        ))
    })
}

/// The page `/list` asks for.
#[derive(Debug, PartialEq)]
struct ListPage {
    status: Option<TaskStatus>,
    offset: usize,
    limit: usize,
}

impl ListPage {
    fn from_query(query: &Query) -> Result<Self, ApiError> {
        let offset = match query.get("offset") {
            None => 0,
            Some(text) => text
                .parse()
                .map_err(|_| ApiError::Invalid("`offset` must be a non-negative integer".into()))?,
        };
        let limit = match query.get("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::Invalid(format!("`limit` must be an integer from 1 to {MAX_LIMIT}"))
                })?,
        };
        let status = match query.get("status") {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                let names: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::Invalid(format!("`status` must be one of {}", names.join(", ")))
            })?),
        };
        Ok(Self {
            status,
            offset,
            limit,
        })
    }
}

/// The body of `POST /create`: a JSON object of the task's own fields and an optional
/// `parent_id`.
fn parse_new_task(body: &[u8]) -> Result<(Option<TaskId>, Map<String, Value>), ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|error| ApiError::MalformedBody(error.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::Invalid(
            "request body must be a JSON object".into(),
        ));
    };
    let parent_id = match fields.remove("parent_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(parse_id("parent_id", &id)?),
        Some(_) => return Err(ApiError::Invalid("`parent_id` must be a string".into())),
    };
    if let Some(reserved) = Task::RESERVED_FIELDS
        .iter()
        .find(|name| fields.contains_key(**name))
    {
        return Err(ApiError::Invalid(format!(
            "field `{reserved}` is set by the service and cannot be given"
        )));
    }
    Ok((parent_id, fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle;
    use crate::response::TaskResponse;
    use crate::store::Change;
    use crate::store::MemoryKeyValue;
    use std::cell::RefCell;

    /// Records what it sends; fails while `down` is set.
    #[derive(Default)]
    struct Outbox {
        sent: RefCell<Vec<DispatchMessage>>,
        down: std::cell::Cell<bool>,
    }

    impl Dispatcher for &Outbox {
        fn dispatch(&self, message: &DispatchMessage) -> Result<(), DispatchError> {
            if self.down.get() {
                return Err(DispatchError("connection refused".into()));
            }
            self.sent.borrow_mut().push(message.clone());
            Ok(())
        }
    }

    fn api(outbox: &Outbox) -> Api<MemoryKeyValue, &Outbox> {
        Api::new(
            Tasks::new(MemoryKeyValue::default()),
            outbox,
            ApiSettings::default(),
        )
    }

    fn request(method: Method, uri: &str, body: &[u8]) -> ApiRequest {
        ApiRequest::new(method, uri, body)
    }

    fn json(response: &ApiResponse) -> Value {
        assert_eq!(response.header("content-type"), Some("application/json"));
        serde_json::from_slice(&response.body).unwrap()
    }

    fn detail(response: &ApiResponse) -> String {
        json(response)["detail"].as_str().unwrap().to_owned()
    }

    type TestApi<'a> = Api<MemoryKeyValue, &'a Outbox>;

    fn create(api: &TestApi, body: &str) -> Value {
        let response =
            api.create::<TaskResponse>(&request(Method::POST, "/create", body.as_bytes()));
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "{:?}",
            json(&response)
        );
        json(&response)
    }

    fn put(api: &TestApi, endpoint: &str, id: &Value) -> ApiResponse {
        let uri = format!("/{endpoint}?task_id={}", id.as_str().unwrap());
        let request = request(Method::PUT, &uri, b"");
        match endpoint {
            "cancel" => api.cancel::<TaskResponse>(&request),
            "restart" => api.restart::<TaskResponse>(&request),
            _ => unreachable!(),
        }
    }

    #[test]
    fn create_stores_a_pending_task_and_dispatches_it() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let task = create(
            &api,
            r#"{"job": "noop", "parent_id": "65a1b2c3d4e5f60718293a4b"}"#,
        );
        assert_eq!(task["status"], "pending");
        assert_eq!(task["job"], "noop");
        assert_eq!(task["parent_id"], "65a1b2c3d4e5f60718293a4b");
        let sent = outbox.sent.borrow();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].task_id.as_str(), task["id"]);
        assert_eq!(sent[0].broker_id.as_str(), task["broker_id"]);

        let info = api.info::<TaskResponse>(&request(
            Method::GET,
            &format!("/info?task_id={}", task["id"].as_str().unwrap()),
            b"",
        ));
        assert_eq!(info.status, StatusCode::OK);
        assert_eq!(json(&info), task);
    }

    #[test]
    fn info_of_an_unknown_task_is_404_with_the_original_wording() {
        let outbox = Outbox::default();
        let response = api(&outbox).info::<TaskResponse>(&request(
            Method::GET,
            "/info?task_id=65a1b2c3d4e5f60718293a4b",
            b"",
        ));
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(
            detail(&response),
            "Task with ID `65a1b2c3d4e5f60718293a4b` not found"
        );
    }

    #[test]
    fn bad_queries_get_422_with_what_is_wrong() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let cases = [
            ("/info", "query parameter `task_id` is required"),
            (
                "/info?task_id=",
                "`task_id` must be 24 hexadecimal characters",
            ),
            (
                "/info?task_id=xyz",
                "`task_id` must be 24 hexadecimal characters",
            ),
            (
                "/info?task_id=..%2F..%2Fetc%2Fpasswd",
                "`task_id` must be 24 hexadecimal characters",
            ),
            (
                "/info?task_id=65a1b2c3d4e5f60718293a4b&task_id=65a1b2c3d4e5f60718293a4c",
                "query parameter `task_id` is given more than once",
            ),
        ];
        for (uri, expected) in cases {
            let response = api.info::<TaskResponse>(&request(Method::GET, uri, b""));
            assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}");
            assert_eq!(detail(&response), expected, "{uri}");
        }
    }

    #[test]
    fn bad_list_parameters_get_422() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let statuses =
            "`status` must be one of pending, processing, done, canceled, failed, refused";
        let cases = [
            ("/list?offset=-1", "`offset` must be a non-negative integer"),
            (
                "/list?offset=abc",
                "`offset` must be a non-negative integer",
            ),
            ("/list?limit=0", "`limit` must be an integer from 1 to 1000"),
            (
                "/list?limit=1001",
                "`limit` must be an integer from 1 to 1000",
            ),
            (
                "/list?limit=1.5",
                "`limit` must be an integer from 1 to 1000",
            ),
            ("/list?status=running", statuses),
            ("/list?status=", statuses),
            (
                "/list?limit=5&limit=6",
                "query parameter `limit` is given more than once",
            ),
        ];
        for (uri, expected) in cases {
            let response = api.list::<TaskResponse>(&request(Method::GET, uri, b""));
            assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}");
            assert_eq!(detail(&response), expected, "{uri}");
        }
    }

    #[test]
    fn list_defaults_and_limits() {
        let query = Query::parse(&request(Method::GET, "/list", b"")).unwrap();
        assert_eq!(
            ListPage::from_query(&query).unwrap(),
            ListPage {
                status: None,
                offset: 0,
                limit: DEFAULT_LIMIT
            }
        );
        let query = Query::parse(&request(
            Method::GET,
            "/list?offset=7&limit=1000&status=done&x=1",
            b"",
        ));
        assert_eq!(
            ListPage::from_query(&query.unwrap()).unwrap(),
            ListPage {
                status: Some(TaskStatus::Done),
                offset: 7,
                limit: MAX_LIMIT
            }
        );
    }

    #[test]
    fn list_pages_through_tasks_in_creation_order() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let mut ids: Vec<String> = (0..5)
            .map(|_| create(&api, "{}")["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        let page = api.list::<TaskResponse>(&request(Method::GET, "/list?offset=1&limit=2", b""));
        let page = json(&page);
        let page_ids: Vec<&str> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(page_ids, ids[1..3]);
    }

    #[test]
    fn wrong_methods_get_405_with_allow() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let id_query = "?task_id=65a1b2c3d4e5f60718293a4b";
        type Endpoint = fn(&TestApi, &ApiRequest) -> ApiResponse;
        let cases: [(&str, Endpoint, Method, &str); 5] = [
            (
                "/info",
                |a, r| a.info::<TaskResponse>(r),
                Method::POST,
                "GET",
            ),
            (
                "/list",
                |a, r| a.list::<TaskResponse>(r),
                Method::DELETE,
                "GET",
            ),
            (
                "/restart",
                |a, r| a.restart::<TaskResponse>(r),
                Method::GET,
                "PUT",
            ),
            (
                "/cancel",
                |a, r| a.cancel::<TaskResponse>(r),
                Method::POST,
                "PUT",
            ),
            (
                "/create",
                |a, r| a.create::<TaskResponse>(r),
                Method::GET,
                "POST",
            ),
        ];
        for (path, endpoint, method, allow) in cases {
            let response = endpoint(&api, &request(method, &format!("{path}{id_query}"), b"{}"));
            assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(response.header("allow"), Some(allow), "{path}");
            assert_eq!(detail(&response), "Method Not Allowed");
        }
        assert!(outbox.sent.borrow().is_empty());
    }

    #[test]
    fn bad_create_bodies_get_4xx_and_store_nothing() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let too_large = format!(r#"{{"blob": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let cases: [(&[u8], StatusCode, &str); 8] = [
            (
                b"",
                StatusCode::BAD_REQUEST,
                "request body is not valid JSON",
            ),
            (
                b"{",
                StatusCode::BAD_REQUEST,
                "request body is not valid JSON",
            ),
            (
                b"[1, 2]",
                StatusCode::UNPROCESSABLE_ENTITY,
                "request body must be a JSON object",
            ),
            (
                b"\"task\"",
                StatusCode::UNPROCESSABLE_ENTITY,
                "request body must be a JSON object",
            ),
            (
                br#"{"status": "done"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "field `status` is set by the service",
            ),
            (
                br#"{"parent_id": "nope"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "`parent_id` must be 24 hexadecimal",
            ),
            (
                br#"{"parent_id": 7}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "`parent_id` must be a string",
            ),
            (
                too_large.as_bytes(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than",
            ),
        ];
        for (body, status, expected) in cases {
            let response = api.create::<TaskResponse>(&request(Method::POST, "/create", body));
            assert_eq!(response.status, status, "{expected}");
            assert!(
                detail(&response).starts_with(expected),
                "{}",
                detail(&response)
            );
        }
        assert!(api.tasks.list(None, 0, 10).unwrap().is_empty());
        assert!(outbox.sent.borrow().is_empty());
    }

    #[test]
    fn cancel_is_idempotent_and_refuses_finished_tasks() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let task = create(&api, "{}");
        let canceled = put(&api, "cancel", &task["id"]);
        assert_eq!(canceled.status, StatusCode::OK);
        assert_eq!(json(&canceled)["status"], "canceled");
        let again = put(&api, "cancel", &task["id"]);
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(json(&again), json(&canceled));

        let done = create(&api, "{}");
        let id: TaskId = done["id"].as_str().unwrap().parse().unwrap();
        let runner = TaskId::generate(Timestamp::now());
        api.tasks
            .update(&id, |task| {
                let claimed = lifecycle::claim(
                    task,
                    &task.broker_id,
                    runner.clone(),
                    Timestamp::now(),
                    Duration::from_secs(30),
                )?;
                lifecycle::finish(
                    &claimed,
                    &runner,
                    Timestamp::now(),
                    lifecycle::JobOutcome::Done(None),
                )
                .map(|next| Change::Write(next, ()))
            })
            .unwrap();
        let refused = put(&api, "cancel", &done["id"]);
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert_eq!(
            detail(&refused),
            format!("Task with ID `{id}` is already done; a finished task cannot be canceled")
        );
        assert_eq!(
            api.tasks.get(&id).unwrap().unwrap().status,
            TaskStatus::Done
        );
    }

    #[test]
    fn restart_redispatches_under_a_new_broker_id() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let task = create(&api, "{}");
        put(&api, "cancel", &task["id"]);
        let restarted = put(&api, "restart", &task["id"]);
        assert_eq!(restarted.status, StatusCode::OK);
        let restarted = json(&restarted);
        assert_eq!(restarted["status"], "pending");
        assert_ne!(restarted["broker_id"], task["broker_id"]);
        let sent = outbox.sent.borrow();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].broker_id.as_str(), restarted["broker_id"]);
    }

    #[test]
    fn restart_of_a_running_task_changes_nothing() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let task = create(&api, "{}");
        let id: TaskId = task["id"].as_str().unwrap().parse().unwrap();
        let running = api
            .tasks
            .update(&id, |task| {
                lifecycle::claim(
                    task,
                    &task.broker_id,
                    id.clone(),
                    Timestamp::now(),
                    Duration::from_secs(30),
                )
                .map(|next| Change::Write(next, ()))
            })
            .unwrap()
            .task;
        let response = put(&api, "restart", &task["id"]);
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(json(&response)["status"], "processing");
        assert_eq!(api.tasks.get(&id).unwrap().unwrap(), running);
        assert_eq!(outbox.sent.borrow().len(), 1);
    }

    #[test]
    fn a_failed_dispatch_is_503_and_a_later_restart_recovers() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        outbox.down.set(true);
        let response = api.create::<TaskResponse>(&request(Method::POST, "/create", b"{}"));
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        let stored = api.tasks.list(None, 0, 10).unwrap();
        assert_eq!(stored.len(), 1);
        let id = Value::from(stored[0].id.as_str());
        assert_eq!(
            detail(&response),
            format!("Task with ID `{}` was created but could not be dispatched (connection refused); restart it to try again", stored[0].id)
        );

        let failed_restart = put(&api, "restart", &id);
        assert_eq!(failed_restart.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            detail(&failed_restart),
            format!(
                "Failed to restart task with ID `{}`: connection refused",
                stored[0].id
            )
        );

        outbox.down.set(false);
        let restarted = put(&api, "restart", &id);
        assert_eq!(restarted.status, StatusCode::OK);
        let sent = outbox.sent.borrow();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].broker_id.as_str(), json(&restarted)["broker_id"]);
    }

    fn api_with(outbox: &Outbox, settings: ApiSettings) -> Api<MemoryKeyValue, &Outbox> {
        Api::new(Tasks::new(MemoryKeyValue::default()), outbox, settings)
    }

    #[test]
    fn redispatch_sends_each_overdue_pending_task_once_per_period() {
        let outbox = Outbox::default();
        let api = api_with(
            &outbox,
            ApiSettings {
                redispatch_after: Duration::from_millis(50),
                ..ApiSettings::default()
            },
        );
        let overdue = create(&api, "{}");
        let canceled = create(&api, "{}");
        put(&api, "cancel", &canceled["id"]);
        std::thread::sleep(std::time::Duration::from_millis(60));
        let fresh = create(&api, "{}");

        let call = || api.redispatch(&request(Method::POST, "/redispatch", b""));
        let first = call();
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(
            json(&first),
            serde_json::json!({"redispatched": [overdue["id"]]})
        );
        let sent = outbox.sent.borrow().last().cloned().unwrap();
        assert_eq!(sent.task_id.as_str(), overdue["id"]);
        assert_ne!(sent.broker_id.as_str(), overdue["broker_id"]);
        let stored = api.tasks.get(&sent.task_id).unwrap().unwrap();
        assert_eq!(stored.broker_id, sent.broker_id);

        // Sent just now: not overdue again until another period has passed.
        assert_eq!(json(&call()), serde_json::json!({"redispatched": []}));
        assert_eq!(outbox.sent.borrow().len(), 4);
        drop(fresh);
    }

    #[test]
    fn redispatch_recovers_a_task_whose_worker_lease_ran_out() {
        let outbox = Outbox::default();
        let api = api(&outbox);
        let task = create(&api, "{}");
        let id: TaskId = task["id"].as_str().unwrap().parse().unwrap();
        api.tasks
            .update(&id, |task| {
                let lease = Duration::from_millis(1);
                lifecycle::claim(task, &task.broker_id, id.clone(), Timestamp::now(), lease)
                    .map(|next| Change::Write(next, ()))
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let response = api.redispatch(&request(Method::POST, "/redispatch", b""));
        assert_eq!(
            json(&response),
            serde_json::json!({"redispatched": [task["id"]]})
        );
        let stored = api.tasks.get(&id).unwrap().unwrap();
        assert_eq!(stored.status, TaskStatus::Pending);
        assert_eq!(
            stored.attempts[0].outcome,
            Some(crate::task::AttemptOutcome::Abandoned)
        );
    }

    #[test]
    fn redispatch_without_redis_is_503() {
        let outbox = Outbox::default();
        let api = api_with(
            &outbox,
            ApiSettings {
                redispatch_after: Duration::ZERO,
                ..ApiSettings::default()
            },
        );
        let task = create(&api, "{}");
        outbox.down.set(true);
        let response = api.redispatch(&request(Method::POST, "/redispatch", b""));
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            detail(&response),
            format!(
                "Failed to redispatch task with ID `{}`: connection refused; call again once it is back",
                task["id"].as_str().unwrap()
            )
        );
    }

    #[test]
    fn with_a_token_set_every_endpoint_needs_it() {
        let outbox = Outbox::default();
        let api = api_with(
            &outbox,
            ApiSettings {
                api_token: Some("s3cret".into()),
                ..ApiSettings::default()
            },
        );
        let with_auth = |value: Option<&str>| {
            let mut request = request(Method::GET, "/list", b"");
            request.authorization = value.map(|value| value.as_bytes().to_vec());
            api.list::<TaskResponse>(&request)
        };
        for refused in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let response = with_auth(refused);
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{refused:?}");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
            assert_eq!(detail(&response), "Not authenticated");
        }
        assert_eq!(with_auth(Some("Bearer s3cret")).status, StatusCode::OK);

        let unauthenticated = api.create::<TaskResponse>(&request(Method::POST, "/create", b"{}"));
        assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
        assert!(outbox.sent.borrow().is_empty());
    }

    #[test]
    fn the_openapi_document_is_served_as_json_to_get_only() {
        let document = br#"{"openapi": "3.1.0"}"#;
        let response = openapi(&request(Method::GET, "/openapi.json", b""), document);
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(json(&response)["openapi"], "3.1.0");
        let response = openapi(&request(Method::POST, "/openapi.json", b""), document);
        assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn a_stored_task_that_does_not_fit_the_response_schema_is_a_500() {
        #[derive(Serialize, serde::Deserialize)]
        struct NeedsModel {
            model: String,
        }
        let outbox = Outbox::default();
        let api = api(&outbox);
        let task = create(&api, "{}");
        let uri = format!("/info?task_id={}", task["id"].as_str().unwrap());
        let response = api.info::<NeedsModel>(&request(Method::GET, &uri, b""));
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(detail(&response).contains("does not fit the response schema"));
    }
}
