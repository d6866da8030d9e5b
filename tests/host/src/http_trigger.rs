//! The HTTP trigger: route each request to its component and run it in a fresh
//! instance through `wasi:http/incoming-handler`, adding Spin's `spin-*` headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wasmtime_wasi_http::bindings::http::types::Scheme;
use wasmtime_wasi_http::bindings::ProxyPre;
use wasmtime_wasi_http::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::routes::{RouteMatch, Router};
use crate::runtime::{InstanceState, LoadedComponent, Runtime};

struct HttpComponent {
    loaded: LoadedComponent,
    proxy: ProxyPre<InstanceState>,
}

pub struct HttpTrigger {
    runtime: Arc<Runtime>,
    router: Router,
    components: HashMap<String, HttpComponent>,
}

fn empty_response(status: StatusCode) -> Response<HyperOutgoingBody> {
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

impl HttpTrigger {
    /// `components` must hold every component the router names.
    pub fn new(
        runtime: Arc<Runtime>,
        router: Router,
        components: Vec<LoadedComponent>,
    ) -> Result<Self> {
        let components = components
            .into_iter()
            .map(|loaded| {
                let id = loaded.config.id.clone();
                let proxy = ProxyPre::new(loaded.pre.clone()).with_context(|| {
                    format!("component {id:?} does not export wasi:http/incoming-handler")
                })?;
                Ok((id, HttpComponent { loaded, proxy }))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            runtime,
            router,
            components,
        })
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> Result<()> {
        let local_addr = listener.local_addr()?;
        loop {
            let (stream, client_addr) = listener.accept().await.context("HTTP listener failed")?;
            // Without it, delayed ACKs hold small responses back ~40 ms, which would swamp the
            // request times the benchmark measures.
            let _ = stream.set_nodelay(true);
            let trigger = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let trigger = trigger.clone();
                    async move {
                        Ok::<_, Infallible>(trigger.handle(request, local_addr, client_addr).await)
                    }
                });
                // Connection-level errors (a client hanging up) are not the app's concern.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        local_addr: SocketAddr,
        client_addr: SocketAddr,
    ) -> Response<HyperOutgoingBody> {
        let path = request.uri().path().to_owned();
        let Some(route) = self.router.route(&path) else {
            return empty_response(StatusCode::NOT_FOUND);
        };
        let id = route.component_id().to_owned();
        let method = request.method().clone();
        match self.execute(request, &route, local_addr, client_addr).await {
            Ok(response) => response,
            Err(e) => {
                eprintln!("Error: component {id:?} failed to handle {method} {path}: {e:#}");
                empty_response(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    async fn execute(
        &self,
        mut request: Request<Incoming>,
        route: &RouteMatch<'_>,
        local_addr: SocketAddr,
        client_addr: SocketAddr,
    ) -> Result<Response<HyperOutgoingBody>> {
        let component = self
            .components
            .get(route.component_id())
            .context("routed to a component that was not loaded")?;

        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| local_addr.to_string());
        let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let full_url = format!("http://{host}{path_and_query}");
        *request.uri_mut() = full_url.parse().context("invalid request URL")?;
        add_spin_headers(request.headers_mut(), &full_url, route, client_addr)?;

        let mut store = self.runtime.store(&component.loaded);
        let incoming = store
            .data_mut()
            .new_incoming_request(Scheme::Http, request)?;
        let (response_tx, response_rx) = oneshot::channel();
        let outparam = store.data_mut().new_response_outparam(response_tx)?;

        let proxy = component.proxy.clone();
        let id = component.loaded.config.id.clone();
        let guest = tokio::spawn(async move {
            let instance = proxy.instantiate_async(&mut store).await?;
            instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        });

        match response_rx.await {
            Ok(Ok(response)) => {
                // The guest may still be streaming the body; report a late failure.
                tokio::spawn(async move {
                    match guest.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            eprintln!("Error: component {id:?} failed after responding: {e:#}")
                        }
                        Err(e) => {
                            eprintln!("Error: component {id:?} panicked after responding: {e}")
                        }
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => anyhow::bail!("the guest set an error response: {code:?}"),
            Err(_) => {
                guest.await.context("guest task panicked")??;
                anyhow::bail!("the guest returned without setting a response")
            }
        }
    }
}

/// The headers Spin adds to every request it hands to a component.
fn add_spin_headers(
    headers: &mut hyper::HeaderMap,
    full_url: &str,
    route: &RouteMatch<'_>,
    client_addr: SocketAddr,
) -> Result<()> {
    let mut set = |name: &str, value: &str| -> Result<()> {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)
                .with_context(|| format!("invalid value for header {name}"))?,
        );
        Ok(())
    };
    set("spin-path-info", route.path_info())?;
    set("spin-full-url", full_url)?;
    set("spin-matched-route", route.based_route())?;
    // Spin always reports "/" here, whatever the application base.
    set("spin-base-path", "/")?;
    set("spin-raw-component-route", route.raw_route())?;
    set("spin-component-route", route.component_route())?;
    set("spin-client-addr", &client_addr.to_string())?;
    for (name, value) in route.named_wildcards() {
        set(
            &format!("spin-path-match-{}", name.to_ascii_lowercase()),
            value,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_headers_describe_the_match() {
        let router = Router::build("/", [("tasks", "/tasks/:id/...")]).unwrap();
        let route = router.route("/tasks/7/restart").unwrap();
        let mut headers = hyper::HeaderMap::new();
        headers.insert("spin-path-info", HeaderValue::from_static("spoofed"));
        let client: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        add_spin_headers(
            &mut headers,
            "http://127.0.0.1:3000/tasks/7/restart?x=1",
            &route,
            client,
        )
        .unwrap();
        let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            get("spin-full-url"),
            "http://127.0.0.1:3000/tasks/7/restart?x=1"
        );
        assert_eq!(get("spin-path-info"), "/restart");
        assert_eq!(get("spin-matched-route"), "/tasks/:id/...");
        assert_eq!(get("spin-raw-component-route"), "/tasks/:id/...");
        assert_eq!(get("spin-component-route"), "/tasks/:id");
        assert_eq!(get("spin-base-path"), "/");
        assert_eq!(get("spin-client-addr"), "127.0.0.1:5555");
        assert_eq!(get("spin-path-match-id"), "7");
        assert_eq!(headers.get_all("spin-path-info").iter().count(), 1);
    }
}
