//! The client subcommands, for people without `grpcurl`: `send` (Send, Publish or
//! Broadcast), `presence` (GetPresence) and `receipts` (WatchReceipts). Replies go to
//! stdout as JSON lines; errors are returned for `main` to print.

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use kurir_proto::v1::dispatcher_client::DispatcherClient;
use kurir_proto::v1::{
    BroadcastRequest, GetPresenceRequest, Notification, Priority, PublishRequest, Receipt,
    ReceiptStatus, SendRequest, WatchReceiptsRequest,
};
use serde_json::{json, Value};
use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::{ClientArgs, Command, PresenceArgs, PriorityArg, ReceiptsArgs, SendArgs};
use crate::telemetry::code_label;

/// How long the client waits to connect, and for a unary reply.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("the API key must be visible ASCII")]
    ApiKey,
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", status_line(.0))]
    Status(#[from] tonic::Status),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

type Client = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <key>` to every call, when a key is given.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// Run one client command.
///
/// # Errors
/// The endpoint cannot be reached, or the call failed (the gRPC status is kept).
pub async fn run(command: Command) -> Result<(), ClientError> {
    match command {
        Command::Send(args) => send(args).await,
        Command::Presence(args) => presence(args).await,
        Command::Receipts(args) => receipts(args).await,
    }
}

/// TLS for an `https://` endpoint: the CA file's roots (or the system's) and, for mTLS,
/// a client certificate. `None` for `http://`.
fn tls_config(args: &ClientArgs) -> Result<Option<ClientTlsConfig>, ClientError> {
    let https = args.endpoint.starts_with("https://");
    if !https {
        return Ok(None);
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ClientError::File {
            path: path.display().to_string(),
            source,
        })
    };
    let mut tls = match &args.ca_file {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

/// A channel to the dispatcher at `args.endpoint` (`http://` or `https://`).
///
/// # Errors
/// A bad endpoint, an unreadable TLS file, or no connection within the timeout.
pub async fn channel(args: &ClientArgs) -> Result<Channel, ClientError> {
    let bad_endpoint = |e: tonic::transport::Error| ClientError::Endpoint {
        endpoint: args.endpoint.clone(),
        reason: error_chain(&e),
    };
    let mut endpoint = Endpoint::from_shared(args.endpoint.clone())
        .map_err(|e| ClientError::Endpoint {
            endpoint: args.endpoint.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls_config(args)? {
        endpoint = endpoint.tls_config(tls).map_err(bad_endpoint)?;
    }
    endpoint.connect().await.map_err(|e| ClientError::Connect {
        endpoint: args.endpoint.clone(),
        reason: error_chain(&e),
    })
}

async fn connect(args: &ClientArgs) -> Result<Client, ClientError> {
    let channel = channel(args).await?;
    let bearer = match &args.api_key {
        Some(key) => Some(
            format!("Bearer {}", key.expose())
                .parse()
                .map_err(|_| ClientError::ApiKey)?,
        ),
        None => None,
    };
    Ok(DispatcherClient::with_interceptor(channel, Bearer(bearer)))
}

fn unary<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(CALL_TIMEOUT);
    req
}

async fn send(args: SendArgs) -> Result<(), ClientError> {
    let mut client = connect(&args.client).await?;
    let notification = Notification {
        title: args.title,
        body: args.body,
        data: args.data.into_iter().collect(),
        priority: match args.priority {
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::High => Priority::High,
        } as i32,
        collapse_key: args.collapse_key,
    };
    let reply = if let Some(topic) = args.target.topic {
        let r = client
            .publish(unary(PublishRequest {
                topic,
                notification: Some(notification),
            }))
            .await?
            .into_inner();
        json!({ "id": r.id })
    } else if args.target.broadcast {
        let r = client
            .broadcast(unary(BroadcastRequest {
                notification: Some(notification),
            }))
            .await?
            .into_inner();
        json!({ "id": r.id })
    } else {
        let r = client
            .send(unary(SendRequest {
                user_ids: args.target.users,
                notification: Some(notification),
                ttl_seconds: args.ttl,
                idempotency_key: args.idempotency_key.unwrap_or_default(),
            }))
            .await?
            .into_inner();
        json!({ "id": r.id, "online_users": r.online_users, "stored_users": r.stored_users })
    };
    print_line(&reply)
}

async fn presence(args: PresenceArgs) -> Result<(), ClientError> {
    let mut client = connect(&args.client).await?;
    let reply = client
        .get_presence(unary(GetPresenceRequest {
            user_ids: args.users,
        }))
        .await?
        .into_inner();
    let users: Vec<Value> = reply
        .users
        .into_iter()
        .map(|u| {
            json!({
                "user_id": u.user_id,
                "online": u.online,
                "connections": u.connections,
                "nodes": u.nodes,
            })
        })
        .collect();
    print_line(&json!({ "users": users }))
}

async fn receipts(args: ReceiptsArgs) -> Result<(), ClientError> {
    let mut client = connect(&args.client).await?;
    let mut stream = client
        .watch_receipts(WatchReceiptsRequest {
            user_ids: args.users,
            notification_ids: args.ids,
        })
        .await?
        .into_inner();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match next {
            Some(Ok(receipt)) => print_line(&receipt_json(&receipt))?,
            Some(Err(status)) => return Err(status.into()),
            None => return Ok(()),
        }
    }
}

fn receipt_json(r: &Receipt) -> Value {
    let status = match ReceiptStatus::try_from(r.status) {
        Ok(ReceiptStatus::Delivered) => "DELIVERED",
        Ok(ReceiptStatus::Acked) => "ACKED",
        _ => "UNSPECIFIED",
    };
    json!({ "id": r.id, "user_id": r.user_id, "status": status, "node": r.node, "at": r.at })
}

/// One JSON line on stdout, flushed so pipes see it at once.
fn print_line(value: &Value) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

/// `CODE: message`, and the transport's cause when the call failed below gRPC (e.g. the
/// server refused the client certificate).
fn status_line(status: &tonic::Status) -> String {
    let line = format!("{}: {}", code_label(status.code()), status.message());
    match std::error::Error::source(status) {
        Some(cause) => format!("{line}: {}", error_chain(cause)),
        None => line,
    }
}

/// An error and its sources, `a: b: c` (tonic's transport errors say little on their own).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
