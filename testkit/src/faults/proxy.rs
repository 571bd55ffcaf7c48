//! A TCP proxy in front of a shared server, to stage its outage without touching it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Listens on `127.0.0.1:0` and forwards to `upstream` until cut: then it closes every
/// connection and refuses new ones, until restored.
pub struct Proxy {
    pub port: u16,
    up: Arc<watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(watch::Sender::new(true));
        let state = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self { port, up })
    }

    /// Close every proxied connection and refuse new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}
