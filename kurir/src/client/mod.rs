//! The client commands, for people without `grpcurl`: `send` (Send, Publish or
//! Broadcast), `presence` (GetPresence), `receipts` (WatchReceipts) and `disconnect`
//! (Disconnect). Replies go to stdout as JSON lines; errors are returned for `main` to
//! print.

pub mod args;
pub mod connect;
pub mod error;
pub mod output;

use std::time::Duration;

use futures::StreamExt;
use kurir_proto::v1::{
    BroadcastRequest, DisconnectRequest, Fallback, GetPresenceRequest, Notification, Priority,
    PublishRequest, SendRequest, WatchReceiptsRequest,
};
use serde_json::{json, Value};

use self::args::{DisconnectArgs, PresenceArgs, PriorityArg, ReceiptsArgs, SendArgs};
use self::connect::connect;
pub use self::error::ClientError;
use self::output::{print_line, receipt_json};

/// How long a unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn unary<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(CALL_TIMEOUT);
    req
}

/// `kurir send`: Send to `--user`s, Publish to a `--topic`, or Broadcast.
///
/// # Errors
/// The dispatcher cannot be reached, or refused the call.
pub async fn send(args: SendArgs) -> Result<(), ClientError> {
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
                send_at: args.send_at.unwrap_or_default(),
            }))
            .await?
            .into_inner();
        json!({ "id": r.id })
    } else if args.target.broadcast {
        let r = client
            .broadcast(unary(BroadcastRequest {
                notification: Some(notification),
                send_at: args.send_at.unwrap_or_default(),
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
                fallback: args.fallback_after_ms.map(|after_ms| Fallback {
                    channels: Vec::new(),
                    after_ms,
                }),
                send_at: args.send_at.unwrap_or_default(),
            }))
            .await?
            .into_inner();
        json!({ "id": r.id, "online_users": r.online_users, "stored_users": r.stored_users })
    };
    Ok(print_line(&reply)?)
}

/// `kurir presence`: the users' presence as one JSON line.
///
/// # Errors
/// The dispatcher cannot be reached, or refused the call.
pub async fn presence(args: PresenceArgs) -> Result<(), ClientError> {
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
    Ok(print_line(&json!({ "users": users }))?)
}

/// `kurir disconnect`: close every connection of a user; prints how many were reached.
///
/// # Errors
/// The dispatcher cannot be reached, or refused the call.
pub async fn disconnect(args: DisconnectArgs) -> Result<(), ClientError> {
    let mut client = connect(&args.client).await?;
    let reply = client
        .disconnect(unary(DisconnectRequest {
            user_id: args.user,
            reason: args.reason,
        }))
        .await?
        .into_inner();
    Ok(print_line(
        &json!({ "connections_closed": reply.connections_closed }),
    )?)
}

/// `kurir receipts`: follow receipts as JSON lines until the stream ends or Ctrl-C.
///
/// # Errors
/// The dispatcher cannot be reached, or ended the stream with an error.
pub async fn receipts(args: ReceiptsArgs) -> Result<(), ClientError> {
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
