//! The Redis trigger: one pub/sub connection per server, one SUBSCRIBE per channel,
//! `fermyon:spin/inbound-redis.handle-message` in a fresh instance per message.
//!
//! As in Spin: messages from one server are handled one after another (the next waits
//! until every handler for the current one has returned); components sharing a
//! channel run concurrently; a failed handler is logged and the message dropped; a
//! lost connection ends the trigger with an error.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use tokio::task::JoinSet;

use crate::bindings::fermyon::spin::redis_types;
use crate::bindings::SpinComponentPre;
use crate::runtime::{InstanceState, LoadedComponent, Runtime};

/// `fermyon:spin/redis-types` holds only types, but a Redis component imports it.
impl redis_types::Host for InstanceState {}

/// A component that handles Redis messages.
pub struct RedisHandler {
    loaded: LoadedComponent,
    pre: SpinComponentPre<InstanceState>,
}

impl RedisHandler {
    pub fn new(loaded: LoadedComponent) -> Result<Arc<Self>> {
        let pre = SpinComponentPre::new(loaded.pre.clone()).with_context(|| {
            format!(
                "component {:?} does not export fermyon:spin/inbound-redis",
                loaded.config.id
            )
        })?;
        Ok(Arc::new(Self { loaded, pre }))
    }

    pub fn id(&self) -> &str {
        &self.loaded.config.id
    }

    async fn handle(&self, runtime: &Runtime, payload: Vec<u8>) -> Result<()> {
        let mut store = runtime.store(&self.loaded);
        let instance = self.pre.instantiate_async(&mut store).await?;
        instance
            .fermyon_spin_inbound_redis()
            .call_handle_message(&mut store, &payload)
            .await?
            .map_err(|e| anyhow::anyhow!("the handler returned {e}"))
    }
}

/// A subscribed connection to one Redis server.
pub struct RedisServer {
    address: String,
    pubsub: redis::aio::PubSub,
    handlers: HashMap<String, Vec<Arc<RedisHandler>>>,
}

impl RedisServer {
    /// Connects and subscribes to every channel in `subscriptions` (channel, handler).
    pub async fn subscribe(
        address: &str,
        subscriptions: Vec<(String, Arc<RedisHandler>)>,
    ) -> Result<Self> {
        let client = redis::Client::open(address)
            .with_context(|| format!("invalid Redis address {address:?}"))?;
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .with_context(|| format!("failed to connect to Redis at {address}"))?;
        let mut handlers: HashMap<String, Vec<Arc<RedisHandler>>> = HashMap::new();
        for (channel, handler) in subscriptions {
            if !handlers.contains_key(&channel) {
                pubsub
                    .subscribe(&channel)
                    .await
                    .with_context(|| format!("failed to subscribe to {channel:?} at {address}"))?;
            }
            handlers.entry(channel).or_default().push(handler);
        }
        Ok(Self {
            address: address.to_owned(),
            pubsub,
            handlers,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.handlers
            .iter()
            .flat_map(|(channel, hs)| hs.iter().map(move |h| (channel.as_str(), h.id())))
    }

    /// Handles messages until the connection is lost, which is always an error.
    pub async fn run(mut self, runtime: Arc<Runtime>) -> Result<()> {
        let mut messages = self.pubsub.on_message();
        while let Some(message) = messages.next().await {
            let channel = message.get_channel_name().to_owned();
            let Some(handlers) = self.handlers.get(&channel) else {
                continue;
            };
            let payload = message.get_payload_bytes().to_vec();
            let mut running = JoinSet::new();
            for handler in handlers {
                let (handler, runtime, payload) =
                    (handler.clone(), runtime.clone(), payload.clone());
                running.spawn(async move {
                    let result = handler.handle(&runtime, payload).await;
                    (handler, result)
                });
            }
            while let Some(joined) = running.join_next().await {
                match joined {
                    Ok((_, Ok(()))) => {}
                    Ok((handler, Err(e))) => eprintln!(
                        "Error: component {:?} failed to handle a message on channel {channel:?}: {e:#}",
                        handler.id()
                    ),
                    Err(e) => eprintln!("Error: a Redis handler on channel {channel:?} panicked: {e}"),
                }
            }
        }
        bail!(
            "lost the subscription connection to Redis at {}",
            self.address
        )
    }
}
