//! The wasmtime side: one engine and linker, components compiled once into
//! `InstancePre`s, and the per-instance state every host interface works on.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::body::HyperOutgoingBody;
use wasmtime_wasi_http::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::{HttpResult, WasiHttpCtx, WasiHttpView};

use crate::bindings::SpinComponent;
use crate::key_value::KeyValueStore;
use crate::outbound_hosts::AllowedHosts;
use crate::variables::ComponentVariables;

/// What the manifest grants one component, with templates already expanded.
#[derive(Debug)]
pub struct ComponentConfig {
    pub id: String,
    pub key_value_stores: Vec<String>,
    pub allowed_hosts: AllowedHosts,
    pub variables: ComponentVariables,
    pub environment: Vec<(String, String)>,
}

/// The store data of one component instance (one request or one Redis message).
pub struct InstanceState {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) component: Arc<ComponentConfig>,
    pub(crate) kv: Arc<KeyValueStore>,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn ctx(&mut self) -> &mut WasiHttpCtx {
        &mut self.http
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Outbound HTTP obeys `allowed_outbound_hosts`, as in Spin.
    fn send_request(
        &mut self,
        request: hyper::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let url = request.uri().to_string();
        let scheme = if config.use_tls { "https" } else { "http" };
        if !self
            .component
            .allowed_hosts
            .allows_url(&url, scheme)
            .unwrap_or(false)
        {
            eprintln!(
                "A component tried to make an outbound HTTP request to disallowed destination '{url}'.\n\
                 To allow this request, add it to 'allowed_outbound_hosts' in component '{}' of the manifest.",
                self.component.id
            );
            return Err(ErrorCode::HttpRequestDenied.into());
        }
        Ok(wasmtime_wasi_http::types::default_send_request(
            request, config,
        ))
    }
}

/// A compiled component ready to instantiate, with what the manifest grants it.
/// Cloning is cheap: both parts are shared.
#[derive(Clone)]
pub struct LoadedComponent {
    pub config: Arc<ComponentConfig>,
    pub pre: InstancePre<InstanceState>,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    kv: Arc<KeyValueStore>,
}

impl Runtime {
    pub fn new(kv: Arc<KeyValueStore>) -> Result<Self> {
        let mut config = Config::new();
        config.async_support(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::add_only_http_to_linker_async(&mut linker)?;
        SpinComponent::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |state| state)?;
        Ok(Self { engine, linker, kv })
    }

    /// Compiles a component (componentizing a wasip1 core module with the preview1
    /// reactor adapter, as Spin does) and resolves its imports.
    pub fn load(&self, config: ComponentConfig, source: &Path) -> Result<LoadedComponent> {
        let id = config.id.clone();
        let bytes = std::fs::read(source)
            .with_context(|| format!("component {id:?}: failed to read {}", source.display()))?;
        let bytes = if wasmparser::Parser::is_component(&bytes) {
            bytes
        } else {
            componentize(&bytes).with_context(|| {
                format!(
                    "component {id:?}: failed to componentize {}",
                    source.display()
                )
            })?
        };
        let component = Component::new(&self.engine, &bytes)
            .with_context(|| format!("component {id:?}: failed to compile {}", source.display()))?;
        let pre = self.linker.instantiate_pre(&component).with_context(|| {
            format!("component {id:?}: imports something this host does not provide")
        })?;
        Ok(LoadedComponent {
            config: Arc::new(config),
            pre,
        })
    }

    /// A fresh store for one instance of `component`.
    pub fn store(&self, component: &LoadedComponent) -> Store<InstanceState> {
        let config = component.config.clone();
        let wasi = WasiCtxBuilder::new()
            .inherit_stdio()
            .envs(&config.environment)
            .build();
        Store::new(
            &self.engine,
            InstanceState {
                table: ResourceTable::new(),
                wasi,
                http: WasiHttpCtx::new(),
                component: config,
                kv: self.kv.clone(),
            },
        )
    }
}

fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
}
