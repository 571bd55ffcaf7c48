//! ① The gRPC edge: [`auth`] (API key, before anything is decoded) → [`validate`]
//! (requests into domain values) → [`crate::dispatch`] → [`status`] (errors into
//! `Status`, the only place one is built).
//!
//! The service itself is thin: each RPC runs under a tracing span, takes an in-flight
//! permit (none left → `RESOURCE_EXHAUSTED`, so overload sheds instead of queueing), is
//! bounded by the request timeout, and is counted in `kurir_dispatcher_requests_total`
//! and `kurir_dispatcher_request_duration_seconds`.

pub mod auth;
pub mod status;
mod stream;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use kurir_proto::v1::dispatcher_server::Dispatcher;
use kurir_proto::v1::{
    BroadcastReply, BroadcastRequest, CancelScheduledReply, CancelScheduledRequest,
    DisconnectReply, DisconnectRequest, GetPresenceReply, GetPresenceRequest, ListDevicesReply,
    ListDevicesRequest, PublishReply, PublishRequest, Receipt, RegisterDeviceReply,
    RegisterDeviceRequest, SendReply, SendRequest, SendStreamReply, SendStreamRequest,
    UnregisterDeviceReply, UnregisterDeviceRequest, UserPresence, WatchReceiptsRequest,
};
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info_span, Instrument};

use crate::dispatch::{Dispatch, Scope};
use crate::error::DispatchError;
pub use crate::method::Method;
use crate::telemetry;

/// The `kurir.v1.Dispatcher` service. Cheap to clone (a `SendStream` holds a clone).
#[derive(Clone)]
pub struct DispatcherApi {
    dispatch: Dispatch,
    /// `KURIR_MAX_IN_FLIGHT` permits; a call that finds none is shed.
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl DispatcherApi {
    pub fn new(dispatch: Dispatch, max_in_flight: usize, timeout: Duration) -> Self {
        Self {
            dispatch,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
        }
    }

    /// Run one call: span, load shedding, timeout, metrics, error mapping.
    async fn call<T>(
        &self,
        method: Method,
        work: impl Future<Output = Result<T, DispatchError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        // `id` is filled in by the flow once a notification id exists.
        let span = info_span!("rpc", method = method.as_str(), id = tracing::field::Empty);
        let result = async {
            let result = match self.in_flight.try_acquire() {
                Ok(_permit) => tokio::time::timeout(self.timeout, work)
                    .await
                    .unwrap_or(Err(DispatchError::Timeout)),
                Err(_) => Err(DispatchError::Overloaded),
            };
            result.map_err(|e| {
                debug!(error = %e, "call failed");
                Status::from(e)
            })
        }
        .instrument(span)
        .await;
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        telemetry::request_done(method, code, Some(started.elapsed().as_secs_f64()));
        result.map(Response::new)
    }

    /// One `Send`, alone or in a `SendStream`; `scope` is the caller's (its API key).
    async fn send_one(
        &self,
        request: SendRequest,
        scope: Option<Scope>,
    ) -> Result<Response<SendReply>, Status> {
        self.call(Method::Send, async {
            let scope = scope.ok_or(DispatchError::Unscoped)?;
            let cmd = validate::send(request)?;
            let out = self.dispatch.send(cmd, &scope).await?;
            Ok(SendReply {
                id: out.id.to_string(),
                online_users: out.online_users,
                stored_users: out.stored_users,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl Dispatcher for DispatcherApi {
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendReply>, Status> {
        // Put there by `auth::RequireApiKey` for every call it lets through.
        let scope = request.extensions().get::<Scope>().cloned();
        self.send_one(request.into_inner(), scope).await
    }

    type SendStreamStream = BoxStream<'static, Result<SendStreamReply, Status>>;

    /// The stream is counted once as `SendStream` when it opens; each Send in it like a
    /// unary `Send`.
    async fn send_stream(
        &self,
        request: Request<Streaming<SendStreamRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let scope = request.extensions().get::<Scope>().cloned();
        let api = self.clone();
        self.call(Method::SendStream, async move {
            let scope = scope.ok_or(DispatchError::Unscoped)?;
            Ok(stream::replies(api, scope, request.into_inner()))
        })
        .await
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        self.call(Method::Publish, async {
            let request = request.into_inner();
            let send_at = validate::offline::send_at("send_at", request.send_at)?;
            let (topic, notification) = validate::publish(request)?;
            let id = self
                .dispatch
                .publish_at(topic, notification, send_at)
                .await?;
            Ok(PublishReply { id: id.to_string() })
        })
        .await
    }

    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastReply>, Status> {
        self.call(Method::Broadcast, async {
            let request = request.into_inner();
            let send_at = validate::offline::send_at("send_at", request.send_at)?;
            let notification = validate::broadcast(request)?;
            let id = self.dispatch.broadcast_at(notification, send_at).await?;
            Ok(BroadcastReply { id: id.to_string() })
        })
        .await
    }

    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceReply>, Status> {
        self.call(Method::GetPresence, async {
            let users = validate::get_presence(request.into_inner())?;
            let presence = self.dispatch.presence(&users).await?;
            Ok(GetPresenceReply {
                users: presence
                    .into_iter()
                    .map(|p| UserPresence {
                        online: p.online(),
                        connections: p.connections.len() as u32,
                        nodes: p.nodes().iter().map(|n| n.as_str().to_owned()).collect(),
                        user_id: p.user.as_str().to_owned(),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn disconnect(
        &self,
        request: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectReply>, Status> {
        self.call(Method::Disconnect, async {
            let cmd = validate::disconnect(request.into_inner())?;
            let connections_closed = self.dispatch.disconnect(cmd).await?;
            Ok(DisconnectReply { connections_closed })
        })
        .await
    }

    async fn register_device(
        &self,
        request: Request<RegisterDeviceRequest>,
    ) -> Result<Response<RegisterDeviceReply>, Status> {
        self.call(Method::RegisterDevice, async {
            let device = validate::offline::register_device(
                request.into_inner(),
                self.dispatch.allowlist(),
            )?;
            let id = self.dispatch.register_device(device).await?;
            Ok(RegisterDeviceReply {
                device_id: id.to_string(),
            })
        })
        .await
    }

    async fn unregister_device(
        &self,
        request: Request<UnregisterDeviceRequest>,
    ) -> Result<Response<UnregisterDeviceReply>, Status> {
        self.call(Method::UnregisterDevice, async {
            let (user, id) = validate::offline::unregister_device(request.into_inner())?;
            let removed = self.dispatch.unregister_device(&user, &id).await?;
            Ok(UnregisterDeviceReply { removed })
        })
        .await
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesReply>, Status> {
        self.call(Method::ListDevices, async {
            let user = validate::offline::list_devices(request.into_inner())?;
            let devices = self.dispatch.list_devices(&user).await?;
            Ok(ListDevicesReply { devices })
        })
        .await
    }

    async fn cancel_scheduled(
        &self,
        request: Request<CancelScheduledRequest>,
    ) -> Result<Response<CancelScheduledReply>, Status> {
        self.call(Method::CancelScheduled, async {
            let id = validate::offline::cancel_scheduled(request.into_inner())?;
            self.dispatch.cancel_scheduled(id).await?;
            Ok(CancelScheduledReply {})
        })
        .await
    }

    type WatchReceiptsStream = BoxStream<'static, Result<Receipt, Status>>;

    /// Set-up is counted like a unary call; the stream then runs until the caller goes
    /// away, falls behind (`RESOURCE_EXHAUSTED`) or the server drains (`UNAVAILABLE`).
    async fn watch_receipts(
        &self,
        request: Request<WatchReceiptsRequest>,
    ) -> Result<Response<Self::WatchReceiptsStream>, Status> {
        self.call(Method::WatchReceipts, async {
            let filter = validate::watch_receipts(request.into_inner())?;
            let receipts = self.dispatch.watch_receipts(filter).await?;
            Ok(receipts.map(|r| r.map_err(Status::from)).boxed())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use kurir_backends::{Backends, Namespace};

    use super::*;

    fn api(max_in_flight: usize, timeout: Duration) -> DispatcherApi {
        let backends = Backends::memory(Namespace::random_for_test());
        DispatcherApi::new(Dispatch::new(backends, 1, 1), max_in_flight, timeout)
    }

    #[tokio::test]
    async fn calls_beyond_the_in_flight_limit_are_shed() {
        let api = api(1, Duration::from_secs(5));
        let held = api.in_flight.try_acquire().expect("one permit");
        let err = api.call(Method::Send, async { Ok(()) }).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        drop(held);
        assert!(api.call(Method::Send, async { Ok(()) }).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_time_out() {
        let api = api(1, Duration::from_millis(100));
        let err = api
            .call(Method::Send, std::future::pending::<Result<(), _>>())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        // The permit came back with the timed-out call.
        assert!(api.in_flight.try_acquire().is_ok());
    }
}
