//! Assembling and running an application the way `spin up` does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::http_trigger::HttpTrigger;
use crate::key_value::{self, CasMode, KeyValueStore};
use crate::manifest::{HttpRoute, Manifest};
use crate::outbound_hosts::AllowedHosts;
use crate::redis_trigger::{RedisHandler, RedisServer};
use crate::routes::Router;
use crate::runtime::{ComponentConfig, LoadedComponent, Runtime};
use crate::variables::{AppVariables, ComponentVariables};

/// How to run the application; mirrors the command line.
#[derive(Debug)]
pub struct Options {
    pub manifest: PathBuf,
    pub listen: SocketAddr,
    /// Defaults to `.spin` next to the manifest.
    pub state_dir: Option<PathBuf>,
    /// Empty means every component.
    pub components: Vec<String>,
    pub build: bool,
    pub variables: Vec<(String, String)>,
    pub kv_cas: CasMode,
}

/// Runs until SIGINT/SIGTERM (`Ok`) or until a trigger stops (`Err`).
pub async fn run(options: Options) -> Result<()> {
    let manifest = Manifest::load(&options.manifest)?;
    if options.build {
        crate::build_step::run_build_commands(&manifest)?;
    }
    let variables = AppVariables::resolve(&manifest.variables, &options.variables, |name| {
        std::env::var(name).ok()
    })?;

    for id in &options.components {
        if !manifest.components.contains_key(id) {
            bail!("Specified component {id:?} not found in application");
        }
    }
    let selected =
        |id: &str| options.components.is_empty() || options.components.iter().any(|c| c == id);
    let http_routes: Vec<(&str, &str)> = manifest
        .http_triggers
        .iter()
        .filter(|t| selected(&t.component))
        .filter_map(|t| match &t.route {
            HttpRoute::Path(route) => Some((t.component.as_str(), route.as_str())),
            HttpRoute::Private { .. } => None,
        })
        .collect();
    let mut redis_subscriptions: BTreeMap<String, Vec<(String, &str)>> = BTreeMap::new();
    for trigger in manifest
        .redis_triggers
        .iter()
        .filter(|t| selected(&t.component))
    {
        let address = variables.expand(manifest.redis_address_template(trigger))?;
        let channel = variables.expand(&trigger.channel)?;
        redis_subscriptions
            .entry(address)
            .or_default()
            .push((channel, trigger.component.as_str()));
    }
    if http_routes.is_empty() && redis_subscriptions.is_empty() {
        bail!("the selected components have no triggers to run");
    }

    let used: BTreeSet<&str> = http_routes
        .iter()
        .map(|(id, _)| *id)
        .chain(redis_subscriptions.values().flatten().map(|(_, id)| *id))
        .collect();
    let state_dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| manifest.dir.join(".spin"));
    let kv_path = state_dir.join(key_value::FILE_NAME);
    let kv = Arc::new(KeyValueStore::open(&kv_path, options.kv_cas)?);
    if used
        .iter()
        .any(|id| !manifest.components[*id].key_value_stores.is_empty())
    {
        println!(
            "Storing default key-value data to {:?}.",
            kv_path.display().to_string()
        );
    }
    let runtime = Arc::new(Runtime::new(kv)?);
    let loaded = load_components(&runtime, &manifest, &variables, &used)?;

    let mut triggers: JoinSet<Result<()>> = JoinSet::new();

    // Subscribe before announcing the HTTP address, so a test that waits for
    // "Serving" can publish right away.
    for (address, subscriptions) in redis_subscriptions {
        let mut handlers: BTreeMap<&str, Arc<RedisHandler>> = BTreeMap::new();
        let mut channels = Vec::new();
        for (channel, id) in subscriptions {
            let handler = match handlers.get(id) {
                Some(handler) => handler.clone(),
                None => {
                    let handler = RedisHandler::new(loaded[id].clone())?;
                    handlers.insert(id, handler.clone());
                    handler
                }
            };
            channels.push((channel, handler));
        }
        let server = RedisServer::subscribe(&address, channels)
            .await
            .context("A trigger exited unexpectedly")?;
        for (channel, id) in server.subscriptions() {
            println!(
                "Subscribed component {id} to Redis channel {channel:?} at {}",
                server.address()
            );
        }
        triggers.spawn(server.run(runtime.clone()));
    }

    if !http_routes.is_empty() {
        let router = Router::build(manifest.http_base(), http_routes.iter().copied())?;
        let http_components = http_routes
            .iter()
            .map(|(id, _)| *id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|id| loaded[id].clone())
            .collect();
        let trigger = Arc::new(HttpTrigger::new(runtime.clone(), router, http_components)?);
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("failed to listen on {}", options.listen))?;
        let addr = listener.local_addr()?;
        print_routes(addr, &trigger, &manifest)?;
        triggers.spawn(trigger.serve(listener));
    }

    tokio::select! {
        signal = shutdown_signal() => signal,
        Some(stopped) = triggers.join_next() => {
            let error = match stopped {
                Ok(Ok(())) => anyhow::anyhow!("the trigger stopped"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::Error::new(e),
            };
            Err(error.context("A trigger exited unexpectedly"))
        }
    }
}

fn component_config(
    manifest: &Manifest,
    variables: &AppVariables,
    id: &str,
) -> Result<ComponentConfig> {
    let component = &manifest.components[id];
    let allowed = component
        .allowed_outbound_hosts
        .iter()
        .map(|entry| variables.expand(entry))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
    Ok(ComponentConfig {
        id: id.to_owned(),
        key_value_stores: component.key_value_stores.clone(),
        allowed_hosts: AllowedHosts::parse(&allowed)
            .with_context(|| format!("component {id:?}"))?,
        variables: ComponentVariables::resolve(&component.variables, variables)
            .with_context(|| format!("component {id:?}: variables"))?,
        environment: component
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Compiles the components in parallel: compilation dominates startup.
fn load_components(
    runtime: &Runtime,
    manifest: &Manifest,
    variables: &AppVariables,
    ids: &BTreeSet<&str>,
) -> Result<BTreeMap<String, LoadedComponent>> {
    let configs = ids
        .iter()
        .map(|id| {
            let source = manifest
                .source_path(&manifest.components[*id])
                .with_context(|| format!("component {id:?} has no local source"))?;
            Ok((component_config(manifest, variables, id)?, source))
        })
        .collect::<Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        let jobs: Vec<_> = configs
            .into_iter()
            .map(|(config, source)| scope.spawn(move || runtime.load(config, &source)))
            .collect();
        jobs.into_iter()
            .map(|job| {
                let loaded = job
                    .join()
                    .map_err(|_| anyhow::anyhow!("component compilation panicked"))??;
                Ok((loaded.config.id.clone(), loaded))
            })
            .collect()
    })
}

fn print_routes(addr: SocketAddr, trigger: &HttpTrigger, manifest: &Manifest) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Serving http://{addr}")?;
    writeln!(out, "Available Routes:")?;
    for (id, route) in trigger.router().routes() {
        writeln!(out, "  {id}: http://{addr}{route}")?;
        if let Some(description) = &manifest.components[id].description {
            writeln!(out, "    {description}")?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn shutdown_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
