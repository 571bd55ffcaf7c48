//! Why a client command failed: the endpoint, the connection, a local file, or the
//! call itself (its gRPC status kept and printed as `CODE: message`).

use thiserror::Error;

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

/// `CODE: message` (the code's name, `InvalidArgument`, as in the dispatcher's metrics),
/// and the transport's cause when the call failed below gRPC (e.g. the server refused
/// the client certificate).
fn status_line(status: &tonic::Status) -> String {
    let line = format!("{:?}: {}", status.code(), status.message());
    match std::error::Error::source(status) {
        Some(cause) => format!("{line}: {}", error_chain(cause)),
        None => line,
    }
}

/// An error and its sources, `a: b: c` (tonic's transport errors say little on their own).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
