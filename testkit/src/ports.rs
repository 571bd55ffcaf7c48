//! Loopback ports: a free one for a process to listen on (also "a port nothing listens
//! on"), never the same twice in a row within a process, and waiting until something
//! does.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::Duration;

use crate::poll::{poll, TimedOut};

/// Ports this process handed out lately: the kernel may give a just-released port to
/// the next bind, and a server started with it would then find its port taken by
/// another of the same test (seen: a NATS cluster node's route port equal to another
/// node's client port).
static HANDED_OUT: Mutex<VecDeque<u16>> = Mutex::new(VecDeque::new());
/// How many recent ports are remembered.
const REMEMBERED: usize = 4096;

/// A free loopback port: bound, then released, and never one this process handed out
/// among its last [`REMEMBERED`]. Another process could take it in between; on a test
/// machine that is rare enough.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind a loopback port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.contains(&port) {
            continue;
        }
        if handed_out.len() == REMEMBERED {
            handed_out.pop_front();
        }
        handed_out.push_back(port);
        return port;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_never_handed_the_same_port_twice_in_a_row() {
        let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
    }
}
