//! Every path from a fuzz target into the project, and nothing else: when a parser moves
//! (the WebSocket framing into its own crate, say), only the bodies here change. The
//! targets see the project's results through the small local types below, so a renamed
//! error variant or header field is also absorbed here.

use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use kurir_backends::UserId;
use kurir_dispatcher::api::validate;
use kurir_dispatcher::error::DispatchError;
use kurir_gateway::auth;
use kurir_gateway::protocol::frame;
use kurir_gateway::ws::handshake;
use kurir_proto::v1::{
    BroadcastRequest, DisconnectRequest, GetPresenceRequest, Notification, PublishRequest,
    SendRequest, WatchReceiptsRequest,
};
use kurir_wire::{frame as wire, socket};
use tokio::io::{AsyncRead, AsyncWrite};

pub use kurir_dispatcher::api::validate::{
    MAX_IDEMPOTENCY_KEY_BYTES, MAX_NOTIFICATION_BYTES, MAX_NOTIFICATION_IDS, MAX_REASON_BYTES,
    MAX_TTL_SECONDS, MAX_USERS,
};
pub use kurir_wire::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

// ---- WebSocket framing -------------------------------------------------------------

/// A client frame's header, as the parser read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    pub header_len: usize,
    pub payload_len: usize,
}

/// Why the parser refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFault {
    TooLarge,
    Protocol,
}

fn fault(e: wire::WireError) -> FrameFault {
    match e {
        wire::WireError::TooLarge => FrameFault::TooLarge,
        wire::WireError::Protocol(_) => FrameFault::Protocol,
    }
}

/// The header at the start of `buf`: `Ok(None)` while incomplete.
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<FrameHead>, FrameFault> {
    wire::parse_header(buf, max_payload)
        .map(|h| {
            h.map(|h| FrameHead {
                fin: h.fin,
                opcode: h.opcode,
                mask: h.mask,
                header_len: h.header_len,
                payload_len: h.payload_len,
            })
        })
        .map_err(fault)
}

/// Undo a client's masking in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    wire::unmask(payload, mask);
}

// ---- The connection read path --------------------------------------------------------

/// What one read of a connection gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
}

/// How reading a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    Closed,
    TooLarge,
    Protocol,
    InvalidText,
    MessageTooSlow,
    Overloaded,
}

/// The server end of one WebSocket connection over `io`.
pub struct Connection<S>(socket::WsSocket<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// `early`: bytes the HTTP layer read past the upgrade request.
    /// Partial messages get an hour and an unbounded node budget: the fuzz input, not the
    /// clock, decides what is read.
    pub fn new(io: S, early: &[u8], max_message: usize) -> Self {
        let limits = kurir_wire::ReadLimits::new(
            max_message,
            std::time::Duration::from_secs(3600),
            usize::MAX,
        );
        Self(socket::WsSocket::new(
            io,
            early,
            std::sync::Arc::new(limits),
        ))
    }

    /// The next message or control frame.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, ReadEnd>> {
        self.0.poll_read(cx).map(|r| {
            r.map(|m| match m {
                socket::Incoming::Text(t) => Message::Text(t),
                socket::Incoming::Binary(_) => Message::Binary,
                socket::Incoming::Ping(p) => Message::Ping(p.to_vec()),
                socket::Incoming::Pong => Message::Pong,
                socket::Incoming::Close(c) => Message::Close(c),
            })
            .map_err(|e| match e {
                socket::ReadError::Closed => ReadEnd::Closed,
                socket::ReadError::Wire(e) => match fault(e) {
                    FrameFault::TooLarge => ReadEnd::TooLarge,
                    FrameFault::Protocol => ReadEnd::Protocol,
                },
                socket::ReadError::InvalidText => ReadEnd::InvalidText,
                socket::ReadError::MessageTooSlow => ReadEnd::MessageTooSlow,
                socket::ReadError::Overloaded => ReadEnd::Overloaded,
            })
        })
    }
}

// ---- The HTTP upgrade ----------------------------------------------------------------

/// The upgrade check: the `Sec-WebSocket-Accept` value, or the refusal's HTTP answer.
///
/// # Errors
/// The request is not a WebSocket handshake the gateway answers.
pub fn check_upgrade(headers: &HeaderMap) -> Result<String, Box<Response<Body>>> {
    handshake::check(headers).map_err(|r| Box::new(r.into_response()))
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &[u8]) -> String {
    handshake::accept_key(key)
}

/// The `101` answer for an accepted upgrade.
pub fn switching_protocols(accept: &str) -> Response<Body> {
    handshake::switching_protocols(accept)
}

/// The HTTP/1.1 server settings the gateway's listener uses.
pub fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    b
}

// ---- Client JSON frames --------------------------------------------------------------

/// A client frame the gateway accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Ack {
        id: String,
    },
    Subscribe {
        topic: String,
    },
    Unsubscribe {
        topic: String,
    },
    Ping,
    /// A browser's Web Push subscription (its endpoint; the keys are checked later).
    PushSubscribe {
        endpoint: String,
    },
    PushUnsubscribe {
        endpoint: String,
    },
}

/// A refused client frame: the `error` frame's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRefusal {
    pub code: &'static str,
    pub message: String,
}

/// Parse one text frame.
///
/// # Errors
/// The frame is not one the protocol knows.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameRefusal> {
    frame::parse(text)
        .map(|f| match f {
            frame::ClientFrame::Ack { id } => ClientFrame::Ack { id },
            frame::ClientFrame::Subscribe { topic } => ClientFrame::Subscribe { topic },
            frame::ClientFrame::Unsubscribe { topic } => ClientFrame::Unsubscribe { topic },
            frame::ClientFrame::Ping => ClientFrame::Ping,
            frame::ClientFrame::PushSubscribe { subscription } => ClientFrame::PushSubscribe {
                endpoint: subscription.endpoint,
            },
            frame::ClientFrame::PushUnsubscribe { endpoint } => {
                ClientFrame::PushUnsubscribe { endpoint }
            }
        })
        .map_err(|e| FrameRefusal {
            code: e.code,
            message: e.message,
        })
}

// ---- Client tokens -------------------------------------------------------------------

/// What a token the verifier accepted says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub topics: Vec<String>,
    pub expires_at: u64,
}

/// Why the verifier refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Missing,
    Invalid,
    Expired,
}

/// A verifier of HS256 tokens signed with `secret`.
pub struct TokenVerifier(auth::Verifier);

impl TokenVerifier {
    pub fn hs256(secret: &[u8]) -> Self {
        Self(auth::Verifier::hs256(secret))
    }

    /// # Errors
    /// Why the token is refused.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenRefusal> {
        self.0
            .verify(token)
            .map(|id| Identity {
                user: id.user.as_str().to_owned(),
                topics: id.topics,
                expires_at: id.expires_at,
            })
            .map_err(|e| match e {
                auth::AuthError::Missing => TokenRefusal::Missing,
                auth::AuthError::Invalid => TokenRefusal::Invalid,
                auth::AuthError::Expired => TokenRefusal::Expired,
            })
    }
}

/// Whether `s` is a user id the project accepts.
pub fn is_user_id(s: &str) -> bool {
    UserId::parse(s).is_ok()
}

/// Whether `s` is a topic name the project accepts.
pub fn is_topic(s: &str) -> bool {
    kurir_backends::Topic::parse(s).is_ok()
}

// ---- gRPC request validation ---------------------------------------------------------

/// A refused request: the `Status` the caller gets.
pub type Refused = tonic::Status;

fn refused(e: DispatchError) -> Refused {
    tonic::Status::from(e)
}

/// A `Send` that passed validation.
#[derive(Debug)]
pub struct ValidSend {
    pub users: Vec<String>,
    pub notification: Notification,
    pub ttl_seconds: u32,
    pub idempotency_key: Option<String>,
}

/// # Errors
/// The request breaks a rule of the API.
pub fn validate_send(req: SendRequest) -> Result<ValidSend, Refused> {
    validate::send(req)
        .map(|c| ValidSend {
            users: c.users.iter().map(|u| u.as_str().to_owned()).collect(),
            notification: c.notification,
            ttl_seconds: c.ttl_seconds,
            idempotency_key: c.idempotency_key,
        })
        .map_err(refused)
}

/// # Errors
/// The request breaks a rule of the API.
pub fn validate_publish(req: PublishRequest) -> Result<(String, Notification), Refused> {
    validate::publish(req)
        .map(|(t, n)| (t.as_str().to_owned(), n))
        .map_err(refused)
}

/// # Errors
/// The request breaks a rule of the API.
pub fn validate_broadcast(req: BroadcastRequest) -> Result<Notification, Refused> {
    validate::broadcast(req).map_err(refused)
}

/// # Errors
/// The request breaks a rule of the API.
pub fn validate_get_presence(req: GetPresenceRequest) -> Result<Vec<String>, Refused> {
    validate::get_presence(req)
        .map(|us| us.iter().map(|u| u.as_str().to_owned()).collect())
        .map_err(refused)
}

/// # Errors
/// The request breaks a rule of the API.
pub fn validate_disconnect(req: DisconnectRequest) -> Result<(String, String), Refused> {
    validate::disconnect(req)
        .map(|c| (c.user.as_str().to_owned(), c.reason))
        .map_err(refused)
}

/// A receipt filter that passed validation.
#[derive(Debug)]
pub struct ValidFilter {
    pub users: Vec<String>,
    pub ids: Vec<String>,
}

/// # Errors
/// The request breaks a rule of the API.
pub fn validate_watch_receipts(req: WatchReceiptsRequest) -> Result<ValidFilter, Refused> {
    validate::watch_receipts(req)
        .map(|f| ValidFilter {
            users: f.users.into_iter().collect(),
            ids: f.ids.iter().map(ToString::to_string).collect(),
        })
        .map_err(refused)
}
