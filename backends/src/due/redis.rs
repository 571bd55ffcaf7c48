//! The due-queue in Redis, shared by every dispatcher of a namespace.
//!
//! - `kurir:<ns>:due:{due}`: sorted set of item id → unix ms when it is due, or, while
//!   claimed, when its lease ends (so an abandoned item comes due again by itself).
//! - `kurir:<ns>:due-items:{due}`: hash of `p:<id>` → payload, `a:<id>` → number of
//!   claims so far (the fencing token of the current one), `l:<id>` → the current
//!   lease's end.
//!
//! Every operation is one script over both keys (one slot), so a claim is atomic: two
//! dispatchers calling it at once get disjoint items.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::{Client, Value};

use super::{lease_ms, Cancel, Claimed, DueQueue, Lease};
use crate::error::BackendError;
use crate::namespace::Namespace;
use crate::redis_client::{corrupt, failed, ready, Script, ScriptCall};

const OP: &str = "due";

/// KEYS: queue, items. ARGV: id, due (ms), payload.
const SCHEDULE: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], 'p:' .. ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[2], 'a:' .. ARGV[1], 'l:' .. ARGV[1])
return 1
";

/// Lease the earliest due items; replies `[id, attempt, payload, …]`.
///
/// KEYS: queue, items. ARGV: now (ms), lease end (ms), limit.
const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local p = redis.call('HGET', KEYS[2], 'p:' .. id)
  if p then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    local n = redis.call('HINCRBY', KEYS[2], 'a:' .. id, 1)
    redis.call('HSET', KEYS[2], 'l:' .. id, ARGV[2])
    table.insert(out, id)
    table.insert(out, n)
    table.insert(out, p)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
";

/// Remove an item if the caller's lease is its current one; 1 when removed.
///
/// KEYS: queue, items. ARGV: id, attempt, lease end.
const COMPLETE: &str = r"
if redis.call('HGET', KEYS[2], 'a:' .. ARGV[1]) ~= ARGV[2]
  or redis.call('HGET', KEYS[2], 'l:' .. ARGV[1]) ~= ARGV[3] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], 'p:' .. ARGV[1], 'a:' .. ARGV[1], 'l:' .. ARGV[1])
return 1
";

/// Move an item to a new time and payload, unleased, if the caller's lease is its
/// current one; 1 when moved.
///
/// KEYS: queue, items. ARGV: id, attempt, lease end, due (ms), payload.
const RESCHEDULE: &str = r"
if redis.call('HGET', KEYS[2], 'a:' .. ARGV[1]) ~= ARGV[2]
  or redis.call('HGET', KEYS[2], 'l:' .. ARGV[1]) ~= ARGV[3] then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[2], 'p:' .. ARGV[1], ARGV[5])
redis.call('HDEL', KEYS[2], 'l:' .. ARGV[1])
return 1
";

/// Remove a waiting item: 1 removed, 0 not there, 2 leased now.
///
/// KEYS: queue, items. ARGV: id, now (ms).
const CANCEL: &str = r"
if redis.call('HEXISTS', KEYS[2], 'p:' .. ARGV[1]) == 0 then return 0 end
local l = redis.call('HGET', KEYS[2], 'l:' .. ARGV[1])
if l and tonumber(l) > tonumber(ARGV[2]) then return 2 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], 'p:' .. ARGV[1], 'a:' .. ARGV[1], 'l:' .. ARGV[1])
return 1
";

pub struct RedisDueQueue {
    client: Client,
    ns: Namespace,
    schedule: Script,
    claim: Script,
    complete: Script,
    reschedule: Script,
    cancel: Script,
}

impl RedisDueQueue {
    pub fn new(client: Client, namespace: Namespace) -> Self {
        Self {
            client,
            ns: namespace,
            schedule: Script::new(SCHEDULE),
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            reschedule: Script::new(RESCHEDULE),
            cancel: Script::new(CANCEL),
        }
    }

    async fn run(&self, script: &Script, args: Vec<Value>) -> Result<Value, BackendError> {
        ready(&self.client, OP)?;
        let call = ScriptCall {
            keys: vec![self.ns.due_queue_key(), self.ns.due_items_key()],
            args,
        };
        script
            .run(&self.client, call)
            .await
            .map_err(|e| failed(OP, e))
    }
}

fn fenced(item: &Claimed) -> Vec<Value> {
    vec![
        Value::from(item.id.as_str()),
        Value::Integer(i64::try_from(item.lease.attempt).unwrap_or(i64::MAX)),
        Value::Integer(item.lease.until),
    ]
}

fn flag(reply: &Value) -> Result<i64, BackendError> {
    reply
        .as_i64()
        .ok_or_else(|| corrupt(OP, format!("script replied {reply:?}")))
}

#[async_trait]
impl DueQueue for RedisDueQueue {
    async fn schedule(&self, id: &str, due_at: i64, payload: Bytes) -> Result<(), BackendError> {
        self.run(
            &self.schedule,
            vec![
                Value::from(id),
                Value::Integer(due_at),
                Value::Bytes(payload),
            ],
        )
        .await
        .map(drop)
    }

    async fn claim(
        &self,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let until = now.saturating_add(lease_ms(lease));
        let reply = self
            .run(
                &self.claim,
                vec![
                    Value::Integer(now),
                    Value::Integer(until),
                    Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
                ],
            )
            .await?;
        let flat = match reply {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => return Err(corrupt(OP, format!("claim replied {other:?}"))),
        };
        let mut out = Vec::with_capacity(flat.len() / 3);
        let mut it = flat.into_iter();
        while let (Some(id), Some(attempt), Some(payload)) = (it.next(), it.next(), it.next()) {
            let id = id
                .as_str()
                .map(|s| s.into_owned())
                .ok_or_else(|| corrupt(OP, "due item id is not a string"))?;
            let attempt = attempt
                .as_u64()
                .ok_or_else(|| corrupt(OP, format!("due item attempt {attempt:?}")))?;
            let payload = payload
                .into_bytes()
                .ok_or_else(|| corrupt(OP, "due item payload is not a string"))?;
            out.push(Claimed {
                id,
                payload,
                lease: Lease { attempt, until },
            });
        }
        Ok(out)
    }

    async fn complete(&self, item: &Claimed) -> Result<bool, BackendError> {
        Ok(flag(&self.run(&self.complete, fenced(item)).await?)? == 1)
    }

    async fn reschedule(
        &self,
        item: &Claimed,
        due_at: i64,
        payload: Bytes,
    ) -> Result<bool, BackendError> {
        let mut args = fenced(item);
        args.push(Value::Integer(due_at));
        args.push(Value::Bytes(payload));
        Ok(flag(&self.run(&self.reschedule, args).await?)? == 1)
    }

    async fn cancel(&self, id: &str, now: i64) -> Result<Cancel, BackendError> {
        let reply = self
            .run(&self.cancel, vec![Value::from(id), Value::Integer(now)])
            .await?;
        match flag(&reply)? {
            0 => Ok(Cancel::NotFound),
            1 => Ok(Cancel::Cancelled),
            2 => Ok(Cancel::Leased),
            n => Err(corrupt(OP, format!("cancel replied {n}"))),
        }
    }

    async fn next_due(&self) -> Result<Option<i64>, BackendError> {
        use fred::prelude::SortedSetsInterface;
        ready(&self.client, OP)?;
        let reply: Value = self
            .client
            .zrange(self.ns.due_queue_key(), 0, 0, None, false, None, true)
            .await
            .map_err(|e| failed(OP, e))?;
        match reply {
            Value::Array(items) if items.len() >= 2 => {
                Ok(items[1].as_f64().map(|score| score as i64))
            }
            Value::Array(_) | Value::Null => Ok(None),
            other => Err(corrupt(OP, format!("ZRANGE replied {other:?}"))),
        }
    }
}
