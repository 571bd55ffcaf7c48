//! Loopback ports: a free one for a process to listen on (also "a port nothing listens
//! on"), and waiting until something does.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::poll::{poll, TimedOut};

/// A free loopback port: bound, then released. Another process could take it in
/// between; on a test machine that is rare enough.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Wait until a TCP connect to `addr` succeeds.
pub async fn wait_port(addr: SocketAddr, within: Duration) -> Result<(), TimedOut> {
    poll(within, &format!("a listener on {addr}"), || async move {
        tokio::net::TcpStream::connect(addr).await.ok().map(drop)
    })
    .await
}
