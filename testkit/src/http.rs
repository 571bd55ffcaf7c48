//! The smallest HTTP GET: enough for `/readyz`, `/healthz` and `/metrics` of a process
//! under test, without an HTTP client dependency.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET that failed before a status line arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {path} on {addr}: {source}")]
    Io {
        addr: SocketAddr,
        path: String,
        source: std::io::Error,
    },
    #[error("GET {path} on {addr}: no answer within {within:?}")]
    Timeout {
        addr: SocketAddr,
        path: String,
        within: Duration,
    },
    #[error("GET {path} on {addr}: not an HTTP reply")]
    Malformed { addr: SocketAddr, path: String },
}

/// A reply: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// `GET path` with `Connection: close`, read to the end within `within`.
pub async fn get(addr: SocketAddr, path: &str, within: Duration) -> Result<Reply, HttpError> {
    let io = |source| HttpError::Io {
        addr,
        path: path.to_owned(),
        source,
    };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(io)?;
        Ok(raw)
    };
    let raw = tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            addr,
            path: path.to_owned(),
            within,
        })??;
    parse(&String::from_utf8_lossy(&raw)).ok_or_else(|| HttpError::Malformed {
        addr,
        path: path.to_owned(),
    })
}

/// `GET path` → its status code (5 s bound).
pub async fn status(addr: SocketAddr, path: &str) -> Result<u16, HttpError> {
    Ok(get(addr, path, Duration::from_secs(5)).await?.status)
}

fn parse(text: &str) -> Option<Reply> {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        assert_eq!(
            parse("HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nnot ready"),
            Some(Reply {
                status: 503,
                body: "not ready".into()
            })
        );
        assert_eq!(parse("garbage"), None);
    }
}
