//! `SendStream`: many `Send`s over one call. Each request runs as a unary `Send` would
//! ([`DispatcherApi::send_one`]: validation, the in-flight limit, the timeout, metrics),
//! at most [`WINDOW`] at once; replies go out in request order, each with the Send's
//! reply or its error. A request the stream cannot decode ends the stream with that
//! error, after the replies of the requests before it.

use futures::stream::BoxStream;
use futures::StreamExt;
use kurir_proto::v1::send_stream_reply::Result as Outcome;
use kurir_proto::v1::{SendError, SendStreamReply, SendStreamRequest};
use tonic::{Status, Streaming};

use super::DispatcherApi;
use crate::dispatch::Scope;
use crate::error::DispatchError;

/// Sends of one stream that run at once; the stream reads no further until the oldest
/// is answered and its reply taken.
pub const WINDOW: usize = 128;

pub(super) fn replies(
    api: DispatcherApi,
    scope: Scope,
    requests: Streaming<SendStreamRequest>,
) -> BoxStream<'static, Result<SendStreamReply, Status>> {
    requests
        .map(move |request| {
            let (api, scope) = (api.clone(), scope.clone());
            async move {
                let request = request?;
                let result = match request.send {
                    Some(send) => api.send_one(send, Some(scope)).await,
                    None => Err(Status::from(DispatchError::invalid("send", "required"))),
                };
                Ok(SendStreamReply {
                    r#ref: request.r#ref,
                    result: Some(match result {
                        Ok(reply) => Outcome::Reply(reply.into_inner()),
                        Err(status) => Outcome::Error(SendError {
                            code: status.code() as i32,
                            message: status.message().to_owned(),
                        }),
                    }),
                })
            }
        })
        .buffered(WINDOW)
        // The first broken request is the last reply.
        .scan(false, |ended, reply: Result<SendStreamReply, Status>| {
            let out = (!*ended).then(|| {
                *ended = reply.is_err();
                reply
            });
            std::future::ready(out)
        })
        .boxed()
}
