//! The device registry in Redis, for a cluster of dispatchers.
//!
//! - `kurir:<ns>:devices:{<user>}`: hash of device id → encoded device.
//! - `kurir:<ns>:device-order:{<user>}`: sorted set of device id → unix ms of its latest
//!   registration or push (the cap drops the lowest).
//!
//! Both share the user's hash slot and the same TTL, renewed by every registration and
//! push; each operation is one script, so the cap holds under concurrent registrations.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::{Client, Value};

use super::{DeviceId, DeviceStore, StoredDevice};
use crate::clock::now_ms;
use crate::error::BackendError;
use crate::ids::UserId;
use crate::namespace::Namespace;
use crate::redis_client::{corrupt, failed, ready, Script, ScriptCall};

const OP: &str = "devices";

/// Store one device as the most recent and drop the oldest past the cap; replies with
/// the dropped ids.
///
/// KEYS: devices, order. ARGV: id, payload, now (ms), capacity, ttl (ms).
const REGISTER: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local now = tonumber(ARGV[3])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= now then now = tonumber(top[2]) + 1 end
redis.call('ZADD', KEYS[2], now, ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
local dropped = {}
if over > 0 then
  dropped = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  for _, id in ipairs(dropped) do
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[1], id)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return dropped
";

/// Remove one device; 1 when it was there.
///
/// KEYS: devices, order. ARGV: id.
const UNREGISTER: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
";

/// Mark devices as used, in order, and renew the TTL of both keys.
///
/// KEYS: devices, order. ARGV: now (ms), ttl (ms), id…
const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= now then now = tonumber(top[2]) + 1 end
for i = 3, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    now = now + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// The devices, most recent first: the order's ids and the hash's values.
///
/// KEYS: devices, order.
const LIST: &str = r"
local ids = redis.call('ZREVRANGE', KEYS[2], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local p = redis.call('HGET', KEYS[1], id)
  if p then
    table.insert(out, id)
    table.insert(out, p)
  end
end
return out
";

pub struct RedisDevices {
    client: Client,
    ns: Namespace,
    capacity: usize,
    ttl: Duration,
    register: Script,
    unregister: Script,
    touch: Script,
    list: Script,
}

impl RedisDevices {
    /// At most `capacity` devices per user (at least 1), expiring `ttl` after their
    /// user's last registration or push.
    pub fn new(client: Client, namespace: Namespace, capacity: usize, ttl: Duration) -> Self {
        Self {
            client,
            ns: namespace,
            capacity: capacity.max(1),
            ttl,
            register: Script::new(REGISTER),
            unregister: Script::new(UNREGISTER),
            touch: Script::new(TOUCH),
            list: Script::new(LIST),
        }
    }

    fn call(&self, user: &UserId, args: Vec<Value>) -> ScriptCall {
        ScriptCall {
            keys: vec![self.ns.devices_key(user), self.ns.device_order_key(user)],
            args,
        }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

fn device_id(v: &Value) -> Result<DeviceId, BackendError> {
    v.as_str()
        .and_then(|s| DeviceId::parse(&s).ok())
        .ok_or_else(|| corrupt(OP, format!("device id {v:?}")))
}

fn array(reply: Value) -> Result<Vec<Value>, BackendError> {
    match reply {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(corrupt(OP, format!("script replied {other:?}"))),
    }
}

#[async_trait]
impl DeviceStore for RedisDevices {
    async fn register(
        &self,
        user: &UserId,
        id: &DeviceId,
        payload: Bytes,
    ) -> Result<Vec<DeviceId>, BackendError> {
        ready(&self.client, OP)?;
        let call = self.call(
            user,
            vec![
                Value::from(id.as_str()),
                Value::Bytes(payload),
                Value::Integer(now_ms()),
                Value::Integer(i64::try_from(self.capacity).unwrap_or(i64::MAX)),
                Value::Integer(self.ttl_ms()),
            ],
        );
        let reply = self
            .register
            .run(&self.client, call)
            .await
            .map_err(|e| failed(OP, e))?;
        array(reply)?.iter().map(device_id).collect()
    }

    async fn unregister(&self, user: &UserId, id: &DeviceId) -> Result<bool, BackendError> {
        ready(&self.client, OP)?;
        let reply = self
            .unregister
            .run(
                &self.client,
                self.call(user, vec![Value::from(id.as_str())]),
            )
            .await
            .map_err(|e| failed(OP, e))?;
        match reply.as_i64() {
            Some(n) => Ok(n > 0),
            None => Err(corrupt(OP, format!("unregister replied {reply:?}"))),
        }
    }

    async fn list(&self, user: &UserId) -> Result<Vec<StoredDevice>, BackendError> {
        ready(&self.client, OP)?;
        let reply = self
            .list
            .run(&self.client, self.call(user, Vec::new()))
            .await
            .map_err(|e| failed(OP, e))?;
        let flat = array(reply)?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(id), Some(payload)) = (it.next(), it.next()) {
            let payload = payload
                .into_bytes()
                .ok_or_else(|| corrupt(OP, "device payload is not a string"))?;
            out.push(StoredDevice {
                id: device_id(&id)?,
                payload,
            });
        }
        Ok(out)
    }

    async fn touch(&self, user: &UserId, ids: &[DeviceId]) -> Result<(), BackendError> {
        ready(&self.client, OP)?;
        let mut args = vec![Value::Integer(now_ms()), Value::Integer(self.ttl_ms())];
        args.extend(ids.iter().map(|id| Value::from(id.as_str())));
        self.touch
            .run(&self.client, self.call(user, args))
            .await
            .map(drop)
            .map_err(|e| failed(OP, e))
    }
}
