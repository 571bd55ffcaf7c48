//! The dispatcher's gRPC API as a caller uses it: a client presenting an API key, and
//! the requests the tests repeat.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use kurir_proto::v1::dispatcher_client::DispatcherClient;
use kurir_proto::v1::{Notification, SendReply, SendRequest};
use kurir_testkit::Bearer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Api = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// A client of the dispatcher at `addr` presenting `key` (none when `None`).
pub async fn api_client(addr: SocketAddr, key: Option<&str>) -> Result<Api> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await?;
    Ok(DispatcherClient::with_interceptor(
        channel,
        Bearer::optional(key)?,
    ))
}

/// A notification request body.
pub fn note(title: &str) -> Notification {
    Notification {
        title: title.into(),
        body: format!("body of {title}"),
        ..Default::default()
    }
}

/// Send to users; returns the reply.
pub async fn send(api: &mut Api, users: &[&str], title: &str, ttl: u32) -> Result<SendReply> {
    let reply = api
        .send(SendRequest {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            notification: Some(note(title)),
            ttl_seconds: ttl,
            idempotency_key: String::new(),
            ..Default::default()
        })
        .await?;
    Ok(reply.into_inner())
}
