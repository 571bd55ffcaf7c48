//! The Redis client behind [`RedisPresence`](crate::presence::RedisPresence) and
//! [`RedisInbox`](crate::inbox::RedisInbox), and the one mapping of its errors onto
//! [`BackendError`].
//!
//! One fred [`Client`] per process, not a pool: fred pipelines every concurrent command
//! onto one connection per server, so throughput is bounded by Redis, not by the socket,
//! and a pool would multiply connections by replicas (and by cluster nodes) for nothing.
//!
//! Availability rules, which the gateway's readiness and the dispatcher's `UNAVAILABLE`
//! rely on:
//! - the process starts whether or not Redis is up: the connection task is spawned and
//!   reconnects forever with exponential backoff;
//! - while the client is not connected, calls fail at once with `Unavailable` instead of
//!   queueing behind the reconnect loop; a call in flight when the connection drops fails
//!   after the command timeout at the latest.

use std::time::Duration;

use fred::interfaces::EventInterface;
use fred::prelude::{
    Builder, Client, ClientLike, Config, Error as FredError, ErrorKind, HashesInterface,
    LuaInterface, ReconnectPolicy, TcpConfig, Value,
};
use fred::types::config::{TlsConnector, UnresponsiveConfig};
use fred::types::{ClusterHash, CustomCommand};
use tracing::{info, warn};

use crate::error::BackendError;
use crate::options::ConnectOptions;
use crate::secret::split_credentials;
use crate::telemetry;

pub(crate) const BACKEND: &str = "redis";

/// Budget of one TCP (and TLS) connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff: 100 ms doubling up to 5 s (plus fred's jitter), forever.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 5_000;
/// A connection with a reply overdue by this much is closed and re-established (a
/// half-open TCP connection otherwise looks healthy until the kernel gives up).
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(10);

/// Build the client from `opts.redis_url` and start connecting in the background.
///
/// Waits at most `opts.command_timeout` for the first connection, so that the first
/// commands of a healthy process do not race the handshake; Redis being down is not an
/// error here.
///
/// # Errors
/// `Invalid` for a malformed URL or option, or TLS files that cannot be used.
pub(crate) async fn connect(opts: &ConnectOptions) -> Result<Client, BackendError> {
    let mut config = config(opts)?;
    // Retry the first connection like any later one instead of failing `connect`.
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|perf| {
            perf.default_command_timeout = opts.command_timeout;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = CONNECT_TIMEOUT;
            conn.internal_command_timeout = opts.command_timeout.max(Duration::from_secs(1));
            conn.unresponsive = UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE_AFTER.max(opts.command_timeout * 2)),
                interval: Duration::from_secs(1),
            };
            conn.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0, // attempts: unlimited
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ));
    let client = builder
        .build()
        .map_err(|e| BackendError::invalid(BACKEND, e.details().to_owned()))?;
    // Failed connection attempts are logged as they happen (at most one per backoff
    // step), reconnects once.
    let mut errors = client.error_rx();
    let id = client.id().to_owned();
    client.on_error(move |(error, server)| {
        // fred's errors name the cause (WRONGPASS, a TLS error) and never the password.
        LAST_FAILURE.lock().insert(id.clone(), error.to_string());
        async move {
            warn!(%error, server = ?server.map(|s| s.to_string()), "redis connection failed");
            Ok(())
        }
    });
    client.on_reconnect(|server| async move {
        info!(%server, "redis connected");
        Ok(())
    });
    // The connection task runs for the life of the process; it is never awaited.
    let _connection = client.connect();
    let first = async {
        tokio::select! {
            connected = client.wait_for_connect() => connected.is_ok(),
            _ = errors.recv() => false,
        }
    };
    if !tokio::time::timeout(opts.command_timeout, first)
        .await
        .unwrap_or(false)
    {
        warn!("redis not reachable yet; reconnecting in the background");
    }
    Ok(client)
}

/// The fred config of `opts.redis_url` and `opts.security`.
///
/// The credentials are taken out of the URL before fred parses it (up to the last `@`,
/// percent-decoded), so a password holding a raw `/`, `@` or `:` still works and a
/// parse error cannot quote it. TLS files need a `rediss` URL: a CA set on a plain
/// `redis://` URL would otherwise be ignored and the connection go out in clear.
fn config(opts: &ConnectOptions) -> Result<Config, BackendError> {
    let url = &opts.redis_url;
    let (clean, credentials) = split_credentials(url.as_str());
    let mut config = Config::from_url(&clean).map_err(|e| {
        BackendError::invalid(BACKEND, url.redact(&format!("redis url: {}", e.details())))
    })?;
    if let Some(c) = credentials {
        config.username = Some(c.user).filter(|u| !u.is_empty());
        config.password = c
            .password
            .map(|p| p.expose().to_owned())
            .filter(|p| !p.is_empty());
    }
    let tls = opts
        .security
        .redis_tls()
        .map_err(|e| BackendError::invalid(BACKEND, e.to_string()))?;
    match (tls, config.tls.is_some()) {
        (Some(tls), true) => config.tls = Some(TlsConnector::from(tls).into()),
        (Some(_), false) => {
            return Err(BackendError::invalid(
                BACKEND,
                "KURIR_REDIS_CA and KURIR_REDIS_CLIENT_CERT need a rediss:// or rediss-cluster:// redis url",
            ))
        }
        (None, _) => {}
    }
    Ok(config)
}

/// The latest connection failure of each client (by fred client id), so that
/// `Unavailable` errors say why (a wrong password, a TLS error) instead of only "not
/// connected". One entry per client a process builds: one, outside tests.
static LAST_FAILURE: std::sync::LazyLock<
    parking_lot::Mutex<std::collections::HashMap<String, String>>,
> = std::sync::LazyLock::new(Default::default);

/// Fail at once while the client is not connected, rather than queue behind the
/// reconnect loop until the command timeout.
pub(crate) fn ready(client: &Client, op: &'static str) -> Result<(), BackendError> {
    if client.is_connected() {
        Ok(())
    } else {
        telemetry::backend_error(BACKEND, op);
        let reason = match LAST_FAILURE.lock().get(client.id()) {
            Some(failure) => format!("not connected (last attempt: {failure})"),
            None => "not connected".to_owned(),
        };
        Err(BackendError::unavailable(BACKEND, reason))
    }
}

/// Map a fred error, counting it under `op`.
pub(crate) fn failed(op: &'static str, e: FredError) -> BackendError {
    telemetry::backend_error(BACKEND, op);
    match e.kind() {
        // A reply that does not have the shape we asked for.
        ErrorKind::Parse | ErrorKind::Protocol | ErrorKind::NotFound => {
            BackendError::corrupt(BACKEND, e.to_string())
        }
        // WRONGTYPE and friends: someone else's data under our key, or our bug.
        ErrorKind::InvalidArgument | ErrorKind::InvalidCommand => {
            BackendError::corrupt(BACKEND, e.to_string())
        }
        // IO, timeouts, cancellations, cluster moves, LOADING/BUSY/OOM/READONLY…
        _ => BackendError::unavailable(BACKEND, e),
    }
}

/// Store `value` under `field` of the hash `key` unless a value is there already, and
/// return the value that is there now (ours, or the one stored first).
pub(crate) async fn agree(
    client: &Client,
    key: &str,
    field: &str,
    value: &str,
) -> Result<String, BackendError> {
    const OP: &str = "settings";
    ready(client, OP)?;
    let _: Value = client
        .hsetnx(key, field, value)
        .await
        .map_err(|e| failed(OP, e))?;
    let stored: Option<String> = client.hget(key, field).await.map_err(|e| failed(OP, e))?;
    stored.ok_or_else(|| corrupt(OP, format!("{key} has no {field} right after HSETNX")))
}

/// A reply of the wrong shape, counted under `op`.
pub(crate) fn corrupt(op: &'static str, what: impl Into<String>) -> BackendError {
    telemetry::backend_error(BACKEND, op);
    BackendError::corrupt(BACKEND, what)
}

/// The replies of a pipeline, or its first error.
pub(crate) fn all_ok(
    op: &'static str,
    replies: Vec<Result<Value, FredError>>,
) -> Result<Vec<Value>, BackendError> {
    replies
        .into_iter()
        .map(|r| r.map_err(|e| failed(op, e)))
        .collect()
}

/// One call of a script: its keys (all in one hash slot) and arguments.
pub(crate) struct ScriptCall {
    pub keys: Vec<String>,
    pub args: Vec<Value>,
}

/// A Lua script, run with `EVALSHA` and re-sent with `EVAL` where a server lacks it
/// (after a restart or a failover, or on a cluster node that has not run it yet).
pub(crate) struct Script {
    lua: String,
    sha: String,
}

impl Script {
    pub(crate) fn new(lua: impl Into<String>) -> Self {
        let lua = lua.into();
        let sha = sha1_smol::Sha1::from(lua.as_bytes()).digest().to_string();
        Self { lua, sha }
    }

    /// Run one call: one round trip, two the first time a server meets the script.
    pub(crate) async fn run(&self, client: &Client, call: ScriptCall) -> Result<Value, FredError> {
        match client
            .evalsha::<Value, _, _, _>(self.sha.as_str(), call.keys.clone(), call.args.clone())
            .await
        {
            Err(e) if is_noscript(&e) => client.eval(self.lua.as_str(), call.keys, call.args).await,
            other => other,
        }
    }

    /// Run every call in one pipelined round trip; the calls that met a server without
    /// the script go again with `EVAL`, in a second one. Replies in the order of `calls`.
    pub(crate) async fn run_many(
        &self,
        client: &Client,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, FredError>> {
        let mut replies = self.pipelined(client, calls, true).await;
        let missing: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter_map(|(i, r)| matches!(r, Err(e) if is_noscript(e)).then_some(i))
            .collect();
        if missing.is_empty() {
            return replies;
        }
        let again: Vec<ScriptCall> = missing
            .iter()
            .map(|&i| ScriptCall {
                keys: calls[i].keys.clone(),
                args: calls[i].args.clone(),
            })
            .collect();
        let retried = self.pipelined(client, &again, false).await;
        for (i, reply) in missing.into_iter().zip(retried) {
            replies[i] = reply;
        }
        replies
    }

    async fn pipelined(
        &self,
        client: &Client,
        calls: &[ScriptCall],
        by_sha: bool,
    ) -> Vec<Result<Value, FredError>> {
        // fred's `LuaInterface` is not available on pipelines: send EVALSHA/EVAL as
        // custom commands, routed by their first key (argument 2).
        let command = CustomCommand::new_static(
            if by_sha { "EVALSHA" } else { "EVAL" },
            ClusterHash::Offset(2),
            false,
        );
        let pipeline = client.pipeline();
        for call in calls {
            let mut args: Vec<Value> = Vec::with_capacity(2 + call.keys.len() + call.args.len());
            args.push(if by_sha {
                self.sha.as_str().into()
            } else {
                self.lua.as_str().into()
            });
            args.push(Value::Integer(call.keys.len() as i64));
            args.extend(call.keys.iter().map(|k| Value::from(k.as_str())));
            args.extend(call.args.iter().cloned());
            // Queueing in a pipeline only fails for malformed arguments.
            if let Err(e) = pipeline.custom::<(), Value>(command.clone(), args).await {
                return vec![Err(e)];
            }
        }
        let replies = pipeline.try_all::<Value>().await;
        spread(replies, calls.len())
    }
}

/// `try_all` answers with one error for the whole pipeline when it could not be sent;
/// give each call its copy so callers can index replies by call.
pub(crate) fn spread(
    replies: Vec<Result<Value, FredError>>,
    expected: usize,
) -> Vec<Result<Value, FredError>> {
    if replies.len() == expected {
        return replies;
    }
    let error = replies
        .into_iter()
        .find_map(Result::err)
        .unwrap_or_else(|| FredError::new(ErrorKind::Protocol, "pipeline reply count mismatch"));
    (0..expected).map(|_| Err(error.clone())).collect()
}

fn is_noscript(e: &FredError) -> bool {
    e.details().starts_with("NOSCRIPT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_sha_is_redis_sha1() {
        // `redis-cli SCRIPT LOAD "return 1"`
        assert_eq!(
            Script::new("return 1").sha,
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }

    #[test]
    fn spread_gives_every_call_the_pipeline_error() {
        let e = FredError::new(ErrorKind::IO, "closed");
        let replies = spread(vec![Err(e)], 3);
        assert_eq!(replies.len(), 3);
        assert!(replies.iter().all(|r| r.is_err()));
    }

    /// Against the test Redis (`KURIR_REDIS_URL`): a script no server has seen yet runs
    /// through the `EVAL` fallback, alone and pipelined, and by SHA afterwards.
    #[tokio::test]
    async fn scripts_fall_back_to_eval_where_unknown() {
        let url =
            std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let ns = crate::Namespace::random_for_test();
        let opts = ConnectOptions::new(ns.clone(), "nats://127.0.0.1:4222", &url);
        let client = connect(&opts).await.unwrap();
        assert!(client.is_connected(), "Redis at {url} is unreachable");
        let call = |arg: &str| ScriptCall {
            keys: vec![format!("kurir:{ns}:script-test")],
            args: vec![Value::from(arg)],
        };
        let fresh = || Script::new(format!("-- {}\nreturn ARGV[1]", uuid::Uuid::new_v4()));

        let alone = fresh();
        let reply = alone.run(&client, call("one")).await.unwrap();
        assert_eq!(reply.as_str().as_deref(), Some("one"));
        let reply = alone.run(&client, call("again")).await.unwrap();
        assert_eq!(reply.as_str().as_deref(), Some("again"));

        let many = fresh();
        let calls = [call("a"), call("b"), call("c")];
        for _ in 0..2 {
            let replies = many.run_many(&client, &calls).await;
            let replies: Vec<String> = replies
                .into_iter()
                .map(|r| r.unwrap().as_string().unwrap())
                .collect();
            assert_eq!(replies, ["a", "b", "c"]);
        }
    }

    fn opts(url: &str) -> ConnectOptions {
        ConnectOptions::new(
            crate::Namespace::random_for_test(),
            "nats://127.0.0.1:4222",
            url,
        )
    }

    #[test]
    fn url_credentials_reach_the_config_decoded() {
        let c = config(&opts("redis://app:p%2Fw@r:6379")).unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("app"), Some("p/w"))
        );
        let c = config(&opts("redis://app:a/b@c:d@r:6379/0")).unwrap();
        assert_eq!(c.password.as_deref(), Some("a/b@c:d"));
        let c = config(&opts("redis://:pw@r:6379")).unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (None, Some("pw"))
        );
        let c = config(&opts("rediss-cluster://app:pw@r1:7000?node=r2:7001")).unwrap();
        assert!(c.server.is_clustered() && c.tls.is_some());
        assert_eq!(c.password.as_deref(), Some("pw"));
    }

    /// A malformed URL's error never carries the password, whatever it holds.
    #[test]
    fn malformed_url_errors_carry_no_credentials() {
        for url in [
            "redis://app:hun/ter2@r:notaport",
            "redis://app:hun@ter2@[::1",
            "rediss-cluster://app:hunter2@r1:7000?node=r2:bad",
            "redis://app:hunter2@:6379",
            "redis://app:hunter2@r:6379/notadb",
        ] {
            let e = config(&opts(url)).unwrap_err().to_string();
            assert!(!e.contains("ter2"), "{url}: {e}");
            assert!(e.contains("redis"), "{url}: {e}");
        }
    }

    #[test]
    fn tls_files_need_a_rediss_url() {
        let mut o = opts("redis://r:6379");
        o.security.redis_client_cert = Some("/x.pem".into());
        o.security.redis_client_key = Some("/x.key".into());
        // The files are read first: a missing one is named.
        let e = config(&o).unwrap_err().to_string();
        assert!(e.contains("KURIR_REDIS_CLIENT_CERT"), "{e}");
    }

    #[test]
    fn errors_map_to_transient_or_corrupt() {
        let io = failed("presence", FredError::new(ErrorKind::IO, "reset"));
        assert!(io.is_transient());
        let timeout = failed("presence", FredError::new(ErrorKind::Timeout, "slow"));
        assert!(timeout.is_transient());
        let parse = failed("presence", FredError::new(ErrorKind::Parse, "not a map"));
        assert!(!parse.is_transient());
    }
}
