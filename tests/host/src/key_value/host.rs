//! The guest views of the store: `fermyon:spin/key-value@2.0.0` and
//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`. Both address the same data by
//! label, as in Spin.

use anyhow::Result;
use wasmtime::component::Resource;

use super::{Cas, IncrementError, SwapOutcome};
use crate::bindings::fermyon::spin2_0_0::key_value as spin_kv;
use crate::bindings::wasi::keyvalue::{atomics, batch, store as wasi_kv};
use crate::runtime::InstanceState;

/// An open `fermyon:spin/key-value` store.
pub struct SpinStore {
    label: String,
}

/// An open `wasi:keyvalue/store` bucket.
pub struct Bucket {
    label: String,
}

/// SQLite calls block; Spin runs them the same way, on the request's worker thread.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl InstanceState {
    fn may_open(&self, label: &str) -> bool {
        self.component
            .key_value_stores
            .iter()
            .any(|allowed| allowed == label)
    }

    fn spin_label(&self, store: &Resource<SpinStore>) -> Result<String> {
        Ok(self.table.get(store)?.label.clone())
    }

    fn bucket_label(&self, bucket: &Resource<Bucket>) -> Result<String> {
        Ok(self.table.get(bucket)?.label.clone())
    }
}

fn spin_error(e: anyhow::Error) -> spin_kv::Error {
    spin_kv::Error::Other(format!("{e:#}"))
}

fn wasi_error(e: anyhow::Error) -> wasi_kv::Error {
    wasi_kv::Error::Other(format!("{e:#}"))
}

impl spin_kv::Host for InstanceState {}

impl spin_kv::HostStore for InstanceState {
    async fn open(&mut self, label: String) -> Result<Result<Resource<SpinStore>, spin_kv::Error>> {
        if !self.may_open(&label) {
            return Ok(Err(spin_kv::Error::AccessDenied));
        }
        Ok(Ok(self.table.push(SpinStore { label })?))
    }

    async fn get(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let label = self.spin_label(&store)?;
        Ok(blocking(|| self.kv.get(&label, &key)).map_err(spin_error))
    }

    async fn set(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), spin_kv::Error>> {
        let label = self.spin_label(&store)?;
        Ok(blocking(|| self.kv.set(&label, &key, &value)).map_err(spin_error))
    }

    async fn delete(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> Result<Result<(), spin_kv::Error>> {
        let label = self.spin_label(&store)?;
        Ok(blocking(|| self.kv.delete(&label, &key)).map_err(spin_error))
    }

    async fn exists(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> Result<Result<bool, spin_kv::Error>> {
        let label = self.spin_label(&store)?;
        Ok(blocking(|| self.kv.exists(&label, &key)).map_err(spin_error))
    }

    async fn get_keys(
        &mut self,
        store: Resource<SpinStore>,
    ) -> Result<Result<Vec<String>, spin_kv::Error>> {
        let label = self.spin_label(&store)?;
        Ok(blocking(|| self.kv.keys(&label)).map_err(spin_error))
    }

    async fn drop(&mut self, store: Resource<SpinStore>) -> Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl wasi_kv::Host for InstanceState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> Result<Result<Resource<Bucket>, wasi_kv::Error>> {
        if !self.may_open(&identifier) {
            return Ok(Err(wasi_kv::Error::AccessDenied));
        }
        Ok(Ok(self.table.push(Bucket { label: identifier })?))
    }
}

impl wasi_kv::HostBucket for InstanceState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        Ok(blocking(|| self.kv.get(&label, &key)).map_err(wasi_error))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        Ok(blocking(|| self.kv.set(&label, &key, &value)).map_err(wasi_error))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<(), wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        Ok(blocking(|| self.kv.delete(&label, &key)).map_err(wasi_error))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<bool, wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        Ok(blocking(|| self.kv.exists(&label, &key)).map_err(wasi_error))
    }

    /// Spin has no paging: every key comes back at once, and a cursor is an error.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        if cursor.is_some() {
            return Ok(Err(wasi_kv::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        let label = self.bucket_label(&bucket)?;
        Ok(blocking(|| self.kv.keys(&label))
            .map(|keys| wasi_kv::KeyResponse { keys, cursor: None })
            .map_err(wasi_error))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl batch::Host for InstanceState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        if keys.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        Ok(blocking(|| self.kv.get_many(&label, &keys)).map_err(wasi_error))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<Result<(), wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        Ok(blocking(|| self.kv.set_many(&label, &key_values)).map_err(wasi_error))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Result<(), wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        if keys.is_empty() {
            return Ok(Ok(()));
        }
        Ok(blocking(|| self.kv.delete_many(&label, &keys)).map_err(wasi_error))
    }
}

impl atomics::HostCas for InstanceState {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<Resource<Cas>, wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        Ok(Ok(self.table.push(Cas::new(&label, &key))?))
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let kv = self.kv.clone();
        let cas = self.table.get_mut(&cas)?;
        Ok(blocking(|| kv.cas_current(cas)).map_err(wasi_error))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl atomics::Host for InstanceState {
    /// A value that is not an 8-byte counter traps the guest (Spin's host panics).
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<Result<i64, wasi_kv::Error>> {
        let label = self.bucket_label(&bucket)?;
        match blocking(|| self.kv.increment(&label, &key, delta)) {
            Ok(value) => Ok(Ok(value)),
            Err(e) if e.is::<IncrementError>() => Err(e),
            Err(e) => Ok(Err(wasi_error(e))),
        }
    }

    /// On failure the guest gets a fresh handle that has already read the current value.
    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> Result<Result<(), atomics::CasError>> {
        let cas = self.table.delete(cas)?;
        match blocking(|| self.kv.swap(&cas, &value)) {
            Ok(SwapOutcome::Swapped) => Ok(Ok(())),
            Ok(SwapOutcome::CasFailed) => {
                let mut retry = Cas::new(&cas.label, &cas.key);
                if let Err(e) = blocking(|| self.kv.cas_current(&mut retry)) {
                    return Ok(Err(atomics::CasError::StoreError(wasi_error(e))));
                }
                Ok(Err(atomics::CasError::CasFailed(self.table.push(retry)?)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_error(e)))),
        }
    }
}
