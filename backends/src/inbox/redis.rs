//! The inbox in Redis, for a cluster of dispatchers and gateways.
//!
//! - `kurir:<ns>:inbox:{<user>}`: a stream capped at the capacity; each entry has the
//!   fields `id` (notification id), `exp` (unix ms), `p` (payload) and, with a collapse
//!   key, `c`. Its entry ids are the [`Cursor`]s.
//! - `kurir:<ns>:inbox-ids:{<user>}`: hash of notification id → stream entry id, so an
//!   ack finds its entry without scanning, and `c:<collapse key>` → the notification id
//!   that holds the key. Kept at most twice the capacity (entries trimmed from the stream
//!   leave stale fields until the next rebuild).
//! - `kurir:<ns>:idem:<scope>:<key>`: the claim of an idempotency key,
//!   `p:<id>:<fingerprint>` while pending and `<id>:<fingerprint>` once settled (the
//!   fingerprint is 32 hex digits of the request it was claimed for). Each script
//!   touches only this one key, so it runs on any cluster node.
//!
//! Both per-user keys share a hash slot (`{user}`), so the scripts that touch them run
//! on Redis Cluster; a batch of users is one pipeline, which fred routes per slot.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::{Client, StreamsInterface, Value};
use tracing::warn;

use super::{
    now_ms, Appended, Claim, Claimant, Cursor, Fingerprint, IdempotencyKey, Inbox, NewEntry,
    StoredEntry, EXPIRED_GRACE,
};
use crate::error::BackendError;
use crate::ids::{NotificationId, UserId};
use crate::namespace::Namespace;
use crate::redis_client::{corrupt, failed, ready, Script, ScriptCall};

const OP: &str = "inbox";
const OP_IDEM: &str = "idempotency";
/// Entries read per `XRANGE`: at least enough to skip a few expired ones cheaply, at
/// most a bounded reply.
const MIN_SCAN: usize = 100;
const MAX_SCAN: usize = 1000;

/// Store one entry for one user; replies `{cursor, dropped id…}`, the ids of the oldest
/// entries the cap trims to make room. Appending an id the inbox still holds returns its
/// cursor instead of storing it twice (a retried append). With a collapse key, the
/// entry that held the key is removed first.
///
/// KEYS: stream, index. ARGV: id, exp (unix ms), payload, capacity, now (unix ms),
/// collapse key ('' for none), grace (ms).
const APPEND: &str = r"
-- The notification ids of the unexpired entries XADD's MAXLEN is about to trim, after
-- reply's first slot.
local function trimmed(reply)
  local over = redis.call('XLEN', KEYS[1]) + 1 - tonumber(ARGV[4])
  if over > 0 then
    for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)) do
      local fields = entry[2]
      local id, exp
      for i = 1, #fields, 2 do
        if fields[i] == 'id' then id = fields[i + 1] elseif fields[i] == 'exp' then exp = fields[i + 1] end
      end
      if id and exp and tonumber(exp) > tonumber(ARGV[5]) then table.insert(reply, id) end
    end
  end
  return reply
end
local sid = redis.call('HGET', KEYS[2], ARGV[1])
if sid and #redis.call('XRANGE', KEYS[1], sid, sid) > 0 then
  return {sid}
end
local cap = tonumber(ARGV[4])
local ckey = ARGV[6]
local reply = {false}
if ckey ~= '' then
  local older = redis.call('HGET', KEYS[2], 'c:' .. ckey)
  if older then
    local osid = redis.call('HGET', KEYS[2], older)
    if osid then redis.call('XDEL', KEYS[1], osid) end
    redis.call('HDEL', KEYS[2], older)
  end
  reply = trimmed(reply)
  sid = redis.call('XADD', KEYS[1], 'MAXLEN', cap, '*', 'id', ARGV[1], 'exp', ARGV[2], 'p', ARGV[3], 'c', ckey)
  redis.call('HSET', KEYS[2], ARGV[1], sid, 'c:' .. ckey, ARGV[1])
else
  reply = trimmed(reply)
  sid = redis.call('XADD', KEYS[1], 'MAXLEN', cap, '*', 'id', ARGV[1], 'exp', ARGV[2], 'p', ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], sid)
end
if redis.call('HLEN', KEYS[2]) > 2 * cap then
  -- Fields of trimmed entries pile up: rebuild the index from what the stream holds.
  redis.call('DEL', KEYS[2])
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
    local fields = entry[2]
    local id, c
    for i = 1, #fields, 2 do
      if fields[i] == 'id' then id = fields[i + 1] elseif fields[i] == 'c' then c = fields[i + 1] end
    end
    if id then
      redis.call('HSET', KEYS[2], id, entry[1])
      if c then redis.call('HSET', KEYS[2], 'c:' .. c, id) end
    end
  end
end
-- Both keys live at least as long as the longest-lived entry, and the grace.
local ttl = math.floor(tonumber(ARGV[2]) - tonumber(ARGV[5]) + tonumber(ARGV[7]))
if ttl < 1 then ttl = 1 end
local current = redis.call('PTTL', KEYS[1])
if current > ttl then ttl = current end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
reply[1] = sid
return reply
";

/// Remove one entry by notification id, and its collapse key if that still names it;
/// 1 when a stream entry was removed.
///
/// KEYS: stream, index. ARGV: id.
const ACK: &str = r"
local sid = redis.call('HGET', KEYS[2], ARGV[1])
if not sid then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
local entry = redis.call('XRANGE', KEYS[1], sid, sid)[1]
if entry then
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'c' and redis.call('HGET', KEYS[2], 'c:' .. fields[i + 1]) == ARGV[1] then
      redis.call('HDEL', KEYS[2], 'c:' .. fields[i + 1])
    end
  end
end
return redis.call('XDEL', KEYS[1], sid)
";

/// The expiry of an entry the inbox holds, by notification id; nil when it holds none.
///
/// KEYS: stream, index. ARGV: id.
const HOLDS: &str = r"
local sid = redis.call('HGET', KEYS[2], ARGV[1])
if not sid then return false end
local entry = redis.call('XRANGE', KEYS[1], sid, sid)[1]
if not entry then return false end
local fields = entry[2]
for i = 1, #fields, 2 do
  if fields[i] == 'exp' then return fields[i + 1] end
end
return false
";

/// What prefixes a pending claim's id; the Lua below spells it out too.
const PENDING: &str = "p:";

/// Hold a free idempotency key pending for this claimant; otherwise reply with what
/// holds it.
///
/// KEYS: idempotency key. ARGV: `<id>:<fingerprint>`, pending TTL (ms).
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'PX', ARGV[2])
return false
";

/// Make this claimant's claim settled (again) for the TTL; 0 when the key holds no claim
/// of it.
///
/// KEYS: idempotency key. ARGV: `<id>:<fingerprint>`, TTL (ms).
const SETTLE: &str = r"
local held = redis.call('GET', KEYS[1])
if held == 'p:' .. ARGV[1] or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Delete an idempotency key only if it holds a pending claim of this claimant.
///
/// KEYS: idempotency key. ARGV: `<id>:<fingerprint>`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisInbox {
    client: Client,
    ns: Namespace,
    capacity: usize,
    append: Script,
    ack: Script,
    holds: Script,
    claim: Script,
    settle: Script,
    release: Script,
}

impl RedisInbox {
    /// `capacity`: entries kept per user (at least 1).
    pub fn new(client: Client, namespace: Namespace, capacity: usize) -> Self {
        Self {
            client,
            ns: namespace,
            capacity: capacity.max(1),
            append: Script::new(APPEND),
            ack: Script::new(ACK),
            holds: Script::new(HOLDS),
            claim: Script::new(CLAIM),
            settle: Script::new(SETTLE),
            release: Script::new(RELEASE),
        }
    }

    fn keys(&self, user: &UserId) -> Vec<String> {
        vec![self.ns.inbox_key(user), self.ns.inbox_index_key(user)]
    }

    /// One call of an idempotency script on `key`.
    fn idem_call(&self, key: &IdempotencyKey, by: Claimant, ttl: Option<Duration>) -> ScriptCall {
        let mut args = vec![Value::from(holder(by))];
        args.extend(ttl.map(|t| Value::Integer(millis(t))));
        ScriptCall {
            keys: vec![self.ns.idempotency_key(key)],
            args,
        }
    }
}

/// A TTL in whole milliseconds, at least 1 (`PX 0` is an error).
fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// How a claim names its claimant in the key's value (after `p:` while pending).
fn holder(by: Claimant) -> String {
    format!("{}:{}", by.id, by.fingerprint)
}

/// What a claim script's reply says about `by`'s claim.
fn claim_of(by: Claimant, reply: &Value) -> Option<Claim> {
    if matches!(reply, Value::Null) {
        return Some(Claim::New);
    }
    let held = reply.as_str()?;
    let (pending, holder) = match held.strip_prefix(PENDING) {
        Some(rest) => (true, rest),
        None => (false, &*held),
    };
    let (id, fingerprint) = holder.split_once(':')?;
    let id = NotificationId::parse(id).ok()?;
    let fingerprint = Fingerprint::parse(fingerprint)?;
    Some(if id == by.id {
        // Our own earlier claim: a retry, or a script fred re-sent after a lost reply.
        Claim::New
    } else if fingerprint != by.fingerprint {
        Claim::OtherRequest
    } else if pending {
        Claim::InProgress(id)
    } else {
        Claim::Existing(id)
    })
}

/// The first stream id strictly after `cursor` (XRANGE's `(` needs Redis 6.2).
fn after(cursor: &Cursor) -> String {
    match cursor.key() {
        (ms, u64::MAX) => format!("{}-0", ms.saturating_add(1)),
        (ms, seq) => format!("{ms}-{}", seq + 1),
    }
}

/// The append script's reply: `[cursor, dropped id…]`.
fn appended(reply: &Value) -> Option<Appended> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let (first, rest) = parts.split_first()?;
    let cursor = text(first).and_then(|s| Cursor::parse(&s))?;
    let dropped = rest
        .iter()
        .map(|v| text(v).and_then(|s| NotificationId::parse(&s).ok()))
        .collect::<Option<_>>()?;
    Some(Appended { cursor, dropped })
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(|s| s.into_owned())
}

/// One `XRANGE` entry: `[id, [field, value, …]]`. `None` for another shape.
fn parse_entry(entry: Value) -> Option<(String, HashMap<String, Value>)> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let sid = text(&parts[0])?;
    let fields = match fields {
        Value::Array(flat) => {
            let mut map = HashMap::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                map.insert(text(&k)?, v);
            }
            map
        }
        Value::Map(map) => map
            .inner()
            .into_iter()
            .map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    Some((sid, fields))
}

/// A stored entry from its fields; `None` when one is missing or malformed.
fn stored(sid: &str, mut fields: HashMap<String, Value>) -> Option<StoredEntry> {
    let cursor = Cursor::parse(sid)?;
    let id = NotificationId::parse(&text(fields.get("id")?)?).ok()?;
    let expires_at = text(fields.get("exp")?)?.parse().ok()?;
    let payload: Bytes = fields.remove("p")?.into_bytes()?;
    Some(StoredEntry {
        cursor,
        id,
        expires_at,
        payload,
    })
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn append(
        &self,
        users: &[UserId],
        entry: &NewEntry,
    ) -> Result<Vec<Appended>, BackendError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        ready(&self.client, OP)?;
        let args = vec![
            Value::from(entry.id.to_string()),
            Value::Integer(entry.expires_at),
            Value::Bytes(entry.payload.clone()),
            Value::Integer(i64::try_from(self.capacity).unwrap_or(i64::MAX)),
            Value::Integer(now_ms()),
            Value::from(entry.collapse_key().unwrap_or_default()),
            Value::Integer(i64::try_from(EXPIRED_GRACE.as_millis()).unwrap_or(i64::MAX)),
        ];
        let calls: Vec<ScriptCall> = users
            .iter()
            .map(|user| ScriptCall {
                keys: self.keys(user),
                args: args.clone(),
            })
            .collect();
        self.append
            .run_many(&self.client, &calls)
            .await
            .into_iter()
            .map(|reply| {
                let reply = reply.map_err(|e| failed(OP, e))?;
                appended(&reply).ok_or_else(|| corrupt(OP, format!("append replied {reply:?}")))
            })
            .collect()
    }

    async fn pending(
        &self,
        user: &UserId,
        after_cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        ready(&self.client, OP)?;
        let key = self.ns.inbox_key(user);
        let now = now_ms();
        let mut start = after_cursor.map_or_else(|| "-".to_owned(), after);
        let mut out = Vec::new();
        let mut malformed = 0usize;
        // Bounded by the capacity: every round moves `start` past what it read.
        loop {
            let count = (limit - out.len()).clamp(MIN_SCAN, MAX_SCAN);
            let batch: Value = self
                .client
                .xrange(&key, start.as_str(), "+", Some(count as u64))
                .await
                .map_err(|e| failed(OP, e))?;
            let entries = match batch {
                Value::Array(entries) => entries,
                Value::Null => Vec::new(),
                other => return Err(corrupt(OP, format!("XRANGE replied {other:?}"))),
            };
            let n = entries.len();
            for entry in entries {
                let Some((sid, fields)) = parse_entry(entry) else {
                    return Err(corrupt(OP, "XRANGE entry of unexpected shape"));
                };
                match Cursor::parse(&sid) {
                    Some(c) => start = after(&c),
                    None => return Err(corrupt(OP, format!("stream id {sid:?}"))),
                }
                match stored(&sid, fields) {
                    Some(e) if e.expires_at > now => {
                        out.push(e);
                        if out.len() == limit {
                            return Ok(out);
                        }
                    }
                    Some(_) => {}
                    None => malformed += 1,
                }
            }
            if n < count {
                break;
            }
        }
        if malformed > 0 {
            warn!(malformed, "skipped malformed inbox entries");
        }
        Ok(out)
    }

    async fn holds(
        &self,
        users: &[UserId],
        id: NotificationId,
    ) -> Result<Vec<Option<i64>>, BackendError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        ready(&self.client, OP)?;
        let calls: Vec<ScriptCall> = users
            .iter()
            .map(|user| ScriptCall {
                keys: self.keys(user),
                args: vec![Value::from(id.to_string())],
            })
            .collect();
        self.holds
            .run_many(&self.client, &calls)
            .await
            .into_iter()
            .map(|reply| match reply.map_err(|e| failed(OP, e))? {
                Value::Null => Ok(None),
                other => text(&other)
                    .and_then(|s| s.parse().ok())
                    .map(Some)
                    .ok_or_else(|| corrupt(OP, format!("holds replied {other:?}"))),
            })
            .collect()
    }

    async fn ack(&self, user: &UserId, id: NotificationId) -> Result<bool, BackendError> {
        ready(&self.client, OP)?;
        let call = ScriptCall {
            keys: self.keys(user),
            args: vec![Value::from(id.to_string())],
        };
        let reply = self
            .ack
            .run(&self.client, call)
            .await
            .map_err(|e| failed(OP, e))?;
        match reply.as_i64() {
            Some(n) => Ok(n > 0),
            None => Err(corrupt(OP, format!("ack replied {reply:?}"))),
        }
    }

    async fn claim(
        &self,
        key: &IdempotencyKey,
        by: Claimant,
        pending_ttl: Duration,
    ) -> Result<Claim, BackendError> {
        ready(&self.client, OP_IDEM)?;
        let reply = self
            .claim
            .run(&self.client, self.idem_call(key, by, Some(pending_ttl)))
            .await
            .map_err(|e| failed(OP_IDEM, e))?;
        claim_of(by, &reply)
            .ok_or_else(|| corrupt(OP_IDEM, format!("idempotency key holds {reply:?}")))
    }

    async fn settle(
        &self,
        key: &IdempotencyKey,
        by: Claimant,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        ready(&self.client, OP_IDEM)?;
        let reply = self
            .settle
            .run(&self.client, self.idem_call(key, by, Some(ttl)))
            .await
            .map_err(|e| failed(OP_IDEM, e))?;
        match reply.as_i64() {
            Some(n) => Ok(n > 0),
            None => Err(corrupt(OP_IDEM, format!("settle replied {reply:?}"))),
        }
    }

    async fn release(&self, key: &IdempotencyKey, by: Claimant) -> Result<(), BackendError> {
        ready(&self.client, OP_IDEM)?;
        self.release
            .run(&self.client, self.idem_call(key, by, None))
            .await
            .map(drop)
            .map_err(|e| failed(OP_IDEM, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_is_the_next_stream_id() {
        assert_eq!(after(&Cursor::parse("5-0").unwrap()), "5-1");
        assert_eq!(
            after(&Cursor::parse(&format!("5-{}", u64::MAX)).unwrap()),
            "6-0"
        );
    }

    #[test]
    fn entries_parse_from_resp2_arrays() {
        let id = NotificationId::generate();
        let entry = Value::Array(vec![
            Value::from("1-2"),
            Value::Array(vec![
                Value::from("id"),
                Value::from(id.to_string()),
                Value::from("exp"),
                Value::from("99"),
                Value::from("p"),
                Value::Bytes(Bytes::from_static(b"\x00\xff")),
            ]),
        ]);
        let (sid, fields) = parse_entry(entry).unwrap();
        let e = stored(&sid, fields).unwrap();
        assert_eq!(e.cursor.as_str(), "1-2");
        assert_eq!(e.id, id);
        assert_eq!(e.expires_at, 99);
        assert_eq!(&e.payload[..], b"\x00\xff");
    }

    #[test]
    fn claim_replies_name_the_phase_of_the_holder() {
        let fingerprint = Fingerprint([0xab; 16]);
        let me = Claimant {
            id: NotificationId::generate(),
            fingerprint,
        };
        let other = Claimant {
            id: NotificationId::generate(),
            fingerprint,
        };
        assert_eq!(claim_of(me, &Value::Null), Some(Claim::New));
        let pending = Value::from(format!("{PENDING}{}", holder(other)));
        assert_eq!(claim_of(me, &pending), Some(Claim::InProgress(other.id)));
        let settled = Value::from(holder(other));
        assert_eq!(claim_of(me, &settled), Some(Claim::Existing(other.id)));
        for mine in [format!("{PENDING}{}", holder(me)), holder(me)] {
            assert_eq!(claim_of(me, &Value::from(mine)), Some(Claim::New));
        }
        let stranger = Claimant {
            id: other.id,
            fingerprint: Fingerprint([0xcd; 16]),
        };
        for held in [format!("{PENDING}{}", holder(stranger)), holder(stranger)] {
            assert_eq!(claim_of(me, &Value::from(held)), Some(Claim::OtherRequest));
        }
        assert_eq!(claim_of(me, &Value::from("p:not-an-id")), None);
        // A value without a fingerprint is not a claim this version wrote.
        assert_eq!(claim_of(me, &Value::from(other.id.to_string())), None);
        assert_eq!(claim_of(me, &Value::Integer(1)), None);
    }

    #[test]
    fn entries_missing_a_field_are_refused() {
        let entry = Value::Array(vec![
            Value::from("1-2"),
            Value::Array(vec![Value::from("exp"), Value::from("99")]),
        ]);
        let (sid, fields) = parse_entry(entry).unwrap();
        assert!(stored(&sid, fields).is_none());
    }
}
