//! A test host for this application's Spin components. **Not a Spin runtime.**
//!
//! `spin up` cannot run where the tests run, so this crate loads the real `.wasm`
//! components on wasmtime and behaves like `spin up` for the parts of Spin the
//! application uses: the manifest (v2) with variables and templates, the HTTP trigger
//! (routes, `spin-*` headers, a fresh instance per request), the Redis trigger,
//! the default SQLite key-value store in both its `fermyon:spin` and `wasi:keyvalue`
//! forms, outbound Redis gated by `allowed_outbound_hosts`, and `spin up`'s
//! `--component`, `--build` and `--variable` options. A difference from Spin in
//! those areas is a bug.
//!
//! What it does not do: runtime-config files (other key-value backends, Vault and
//! other variable providers), `files` mounts, component dependencies, remote
//! sources, SQLite/Postgres/MySQL/MQTT/LLM interfaces, WAGI, TLS, HTTP/2,
//! `.spin/logs`, OpenTelemetry, resource limits. A component importing an
//! interface it lacks fails to load with the interface named.
//!
//! `--kv-cas redis-quirk` deliberately reproduces Spin 4.0.2's Redis-backed store,
//! whose `swap` writes and then reports `cas-failed`, so code can be tested against it.

pub mod app;
pub mod build_step;
pub mod http_trigger;
pub mod key_value;
pub mod manifest;
pub mod outbound_hosts;
pub mod outbound_redis;
pub mod redis_trigger;
pub mod routes;
pub mod runtime;
pub mod variables;

/// Host bindings for the Spin interfaces, generated from the WIT vendored in `wit/`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "spin-test-host:host/spin-component",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "fermyon:spin/key-value@2.0.0.store": crate::key_value::host::SpinStore,
            "fermyon:spin/redis@2.0.0.connection": crate::outbound_redis::RedisConnection,
            "wasi:keyvalue/store.bucket": crate::key_value::host::Bucket,
            "wasi:keyvalue/atomics.cas": crate::key_value::Cas,
        },
    });
}
