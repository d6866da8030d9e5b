//! `fermyon:spin/redis@2.0.0`: outbound Redis against the real server the guest names,
//! gated by the component's `allowed_outbound_hosts` like Spin's outbound Redis factor.

use anyhow::Result;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, FromRedisValue, Value};
use wasmtime::component::Resource;

use crate::bindings::fermyon::spin2_0_0::redis as v2;
use crate::runtime::InstanceState;

/// One `connection.open`: its own multiplexed connection, dropped with the resource.
pub struct RedisConnection {
    connection: MultiplexedConnection,
}

fn other(e: redis::RedisError) -> v2::Error {
    v2::Error::Other(e.to_string())
}

impl InstanceState {
    fn redis(&mut self, connection: &Resource<RedisConnection>) -> Result<MultiplexedConnection> {
        // Cloning a multiplexed connection is cheap and shares the socket.
        Ok(self.table.get(connection)?.connection.clone())
    }
}

impl v2::Host for InstanceState {}

impl v2::HostConnection for InstanceState {
    async fn open(
        &mut self,
        address: String,
    ) -> Result<Result<Resource<RedisConnection>, v2::Error>> {
        match self.component.allowed_hosts.allows_url(&address, "redis") {
            Ok(true) => {}
            Ok(false) => {
                eprintln!(
                    "A component tried to make an outbound network connection to disallowed destination '{address}'.\n\
                     To allow this request, add it to 'allowed_outbound_hosts' in component '{}' of the manifest.",
                    self.component.id
                );
                return Ok(Err(v2::Error::InvalidAddress));
            }
            Err(e) => return Ok(Err(v2::Error::Other(format!("{e:#}")))),
        }
        let client = match redis::Client::open(address.as_str()) {
            Ok(client) => client,
            Err(_) => return Ok(Err(v2::Error::InvalidAddress)),
        };
        let connection = match client.get_multiplexed_async_connection().await {
            Ok(connection) => connection,
            Err(e) => return Ok(Err(other(e))),
        };
        Ok(Ok(self.table.push(RedisConnection { connection })?))
    }

    async fn publish(
        &mut self,
        connection: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<Result<(), v2::Error>> {
        let mut c = self.redis(&connection)?;
        Ok(c.publish::<_, _, ()>(&channel, &payload)
            .await
            .map_err(other))
    }

    async fn get(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
    ) -> Result<Result<Option<Vec<u8>>, v2::Error>> {
        let mut c = self.redis(&connection)?;
        Ok(c.get(&key).await.map_err(other))
    }

    async fn set(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), v2::Error>> {
        let mut c = self.redis(&connection)?;
        Ok(c.set::<_, _, ()>(&key, &value).await.map_err(other))
    }

    async fn incr(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
    ) -> Result<Result<i64, v2::Error>> {
        let mut c = self.redis(&connection)?;
        Ok(c.incr(&key, 1).await.map_err(other))
    }

    async fn del(
        &mut self,
        connection: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> Result<Result<u32, v2::Error>> {
        let mut c = self.redis(&connection)?;
        Ok(c.del(&keys).await.map_err(other))
    }

    async fn sadd(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<Result<u32, v2::Error>> {
        let mut c = self.redis(&connection)?;
        // Spin reports a wrong-type key as `type-error` for SADD only.
        Ok(c.sadd(&key, &values).await.map_err(|e| {
            if e.kind() == redis::ErrorKind::TypeError {
                v2::Error::TypeError
            } else {
                other(e)
            }
        }))
    }

    async fn smembers(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
    ) -> Result<Result<Vec<String>, v2::Error>> {
        let mut c = self.redis(&connection)?;
        Ok(c.smembers(&key).await.map_err(other))
    }

    async fn srem(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<Result<u32, v2::Error>> {
        let mut c = self.redis(&connection)?;
        Ok(c.srem(&key, &values).await.map_err(other))
    }

    async fn execute(
        &mut self,
        connection: Resource<RedisConnection>,
        command: String,
        arguments: Vec<v2::RedisParameter>,
    ) -> Result<Result<Vec<v2::RedisResult>, v2::Error>> {
        let mut c = self.redis(&connection)?;
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                v2::RedisParameter::Int64(v) => cmd.arg(v),
                v2::RedisParameter::Binary(v) => cmd.arg(v),
            };
        }
        Ok(cmd
            .query_async::<RedisResults>(&mut c)
            .await
            .map(|r| r.0)
            .map_err(other))
    }

    async fn drop(&mut self, connection: Resource<RedisConnection>) -> Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

/// A reply flattened the way Spin flattens it: arrays and sets are spliced in, and
/// reply types the WIT cannot express are errors.
struct RedisResults(Vec<v2::RedisResult>);

impl FromRedisValue for RedisResults {
    fn from_redis_value(value: &Value) -> redis::RedisResult<Self> {
        fn unsupported(what: &str) -> redis::RedisError {
            (
                redis::ErrorKind::TypeError,
                "Could not convert Redis response",
                what.to_owned(),
            )
                .into()
        }
        fn append(out: &mut Vec<v2::RedisResult>, value: &Value) -> redis::RedisResult<()> {
            match value {
                Value::Nil => out.push(v2::RedisResult::Nil),
                Value::Int(v) => out.push(v2::RedisResult::Int64(*v)),
                Value::BulkString(bytes) => out.push(v2::RedisResult::Binary(bytes.clone())),
                Value::SimpleString(s) => out.push(v2::RedisResult::Status(s.clone())),
                Value::Okay => out.push(v2::RedisResult::Status("OK".into())),
                Value::Double(v) => out.push(v2::RedisResult::Binary(v.to_string().into_bytes())),
                Value::Boolean(v) => out.push(v2::RedisResult::Int64(i64::from(*v))),
                Value::BigNumber(v) => {
                    out.push(v2::RedisResult::Binary(v.to_string().into_bytes()))
                }
                Value::Array(values) | Value::Set(values) => {
                    return values.iter().try_for_each(|v| append(out, v));
                }
                Value::Map(_) => return Err(unsupported("Redis Map type is not supported")),
                Value::Attribute { .. } => {
                    return Err(unsupported("Redis Attribute type is not supported"))
                }
                Value::VerbatimString { .. } => {
                    return Err(unsupported(
                        "Redis string with format attribute is not supported",
                    ))
                }
                Value::Push { .. } => {
                    return Err(unsupported("Redis Pub/Sub types are not supported"))
                }
                Value::ServerError(e) => {
                    return Err((
                        redis::ErrorKind::ResponseError,
                        "Server error",
                        format!("{e:?}"),
                    )
                        .into())
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        append(&mut out, value)?;
        Ok(Self(out))
    }
}
