//! The public listener: accepts TCP connections, bounds their handshakes, optionally
//! speaks TLS, and serves them HTTP/1.1 with hyper (upgrades allowed), routing requests
//! through the axum [`Router`]. Serving hyper directly, rather than through
//! `axum::serve`, is what lets an upgraded `/ws` connection take its stream back (see
//! `handshake::take_stream`).
//!
//! A connection's handshake is its TLS handshake (when TLS is on) plus the arrival of its
//! first request head. At most `max_pending` connections are in it at once: the accept
//! loop only accepts and takes a permit, and everything that waits on the client runs in
//! the connection's own task, under one deadline. Beyond the limit a new connection is
//! closed at once rather than queued: a flood of silent connections then costs one accept
//! and one close each, and well-behaved clients get a fast failure to retry on (through
//! the load balancer, perhaps elsewhere) instead of a slot behind attackers.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use kurir_tls::tokio_rustls::server::TlsStream;
use kurir_tls::ServerCerts;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::admission;
use crate::telemetry;

/// How the listener treats new connections.
#[derive(Debug, Clone)]
pub struct Edge {
    /// `None`: plaintext (`ws://`, HTTP).
    pub tls: Option<Arc<ServerCerts>>,
    /// Connections in their handshake at once (`KURIR_MAX_PENDING_HANDSHAKES`).
    pub max_pending: usize,
    /// Deadline of a connection's handshake (`KURIR_HANDSHAKE_TIMEOUT_MS`); also hyper's
    /// limit on reading any later request head.
    pub handshake_timeout: Duration,
}

/// Serve `app` on `listener` until `stop`; then stop accepting, let plain HTTP
/// requests in flight finish, and return. Upgraded sockets are not waited for: their
/// sessions belong to the node's drain.
pub async fn serve(listener: TcpListener, app: Router, edge: Edge, stop: CancellationToken) {
    let connections = TaskTracker::new();
    let pending = Arc::new(Semaphore::new(edge.max_pending));
    while let Some((stream, permit)) = admission::accept(&listener, &pending, &stop).await {
        let handshake = Handshake::start(permit, edge.handshake_timeout);
        let acceptor = edge.tls.as_ref().map(|certs| certs.acceptor());
        let service = TowerToHyperService::new(app.clone());
        let (stop, header_timeout) = (stop.clone(), edge.handshake_timeout);
        connections.spawn(async move {
            let deadline = handshake.deadline;
            let io = match acceptor {
                None => EdgeStream::Plain(stream),
                Some(acceptor) => {
                    let accepted = tokio::select! {
                        r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => r,
                        () = stop.cancelled() => return,
                    };
                    match accepted {
                        Ok(Ok(tls)) => EdgeStream::Tls(Box::new(TlsConn {
                            stream: tls,
                            unflushed: 0,
                        })),
                        Ok(Err(e)) => {
                            debug!(error = %e, "TLS handshake failed");
                            telemetry::handshake_refused("tls_error");
                            return;
                        }
                        Err(_) => {
                            telemetry::handshake_refused("timeout");
                            return;
                        }
                    }
                }
            };
            let arrived = handshake.arrived.clone();
            let hangup = Hangup::default();
            let service = FirstRequest {
                inner: service,
                handshake: handshake.clone(),
                hangup: hangup.clone(),
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            // The rest of the handshake: the first request head, by the deadline.
            let first = tokio::select! {
                r = conn.as_mut() => Some(r),
                () = arrived.notified() => None,
                () = tokio::time::sleep_until(deadline) => {
                    telemetry::handshake_refused("timeout");
                    return;
                }
                () = stop.cancelled() => return,
            };
            drop(handshake);
            let done = match first {
                Some(r) => r,
                None => tokio::select! {
                    r = conn.as_mut() => r,
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        tokio::select! {
                            r = conn => r,
                            () = hangup.0.cancelled() => return,
                        }
                    }
                    // A response stream gave up on its client (see `Hangup`).
                    () = hangup.0.cancelled() => return,
                },
            };
            if let Err(e) = done {
                debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A place among the pending handshakes, counted in the gauge while held.
struct Pending {
    _permit: OwnedSemaphorePermit,
}

impl Pending {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(telemetry::HANDSHAKES_PENDING).increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::HANDSHAKES_PENDING).decrement(1.0);
    }
}

/// One connection's handshake: its place is given back when the first request head
/// arrives, or when the connection ends, whichever comes first.
#[derive(Clone)]
struct Handshake {
    pending: Arc<Mutex<Option<Pending>>>,
    arrived: Arc<Notify>,
    deadline: Instant,
}

impl Handshake {
    fn start(permit: OwnedSemaphorePermit, timeout: Duration) -> Self {
        Self {
            pending: Arc::new(Mutex::new(Some(Pending::new(permit)))),
            arrived: Arc::new(Notify::new()),
            deadline: Instant::now() + timeout,
        }
    }

    /// The first request head is in: the handshake is over.
    fn finish(&self) {
        if self.pending.lock().take().is_some() {
            self.arrived.notify_one();
        }
    }
}

/// Drops an HTTP connection from outside hyper: a long response (an SSE stream) whose
/// client stopped reading cannot end through its body, which hyper polls only when it
/// can write, so its writer hangs the connection up instead. Every request carries its
/// connection's `Hangup` as an extension.
#[derive(Clone, Default, Debug)]
pub struct Hangup(CancellationToken);

impl Hangup {
    /// Close the connection now, whatever is in flight.
    pub fn now(&self) {
        self.0.cancel();
    }
}

/// The HTTP service, noting the first request's arrival and handing each request its
/// connection's [`Hangup`].
#[derive(Clone)]
struct FirstRequest<S> {
    inner: S,
    handshake: Handshake,
    hangup: Hangup,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for FirstRequest<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        self.handshake.finish();
        req.extensions_mut().insert(self.hangup.clone());
        self.inner.call(req)
    }
}

/// An accepted connection's byte stream: the TCP stream itself, or TLS over it. The
/// TLS state is boxed so a plaintext connection does not carry its size.
#[derive(Debug)]
pub enum EdgeStream {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

/// A TLS connection, written so that a write completes only once its bytes have left
/// for the kernel.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    /// Bytes accepted into the TLS layer whose records are not all written to the socket
    /// yet; reported as written once they are.
    unflushed: usize,
}

impl TlsConn {
    /// tokio-rustls reports a write done once rustls took the bytes, possibly with their
    /// records still buffered; a writer that does not flush (the WebSocket session only
    /// writes) would leave them there until its next write. So the write is reported
    /// only after the flush, and a write that was taken but not flushed is not taken
    /// again when polled anew (callers re-poll with the same bytes, as `AsyncWrite`
    /// asks after `Pending`).
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.unflushed == 0 {
            let n = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            self.unflushed = n;
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut self.unflushed)))
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(&mut t.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(t) => t.poll_write_vectored(cx, &[IoSlice::new(buf)]),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(t) => t.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(t) => Pin::new(&mut t.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            // close_notify, then the TCP half-close.
            Self::Tls(t) => Pin::new(&mut t.stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_connections_do_not_pay_for_tls() {
        // The TLS state is boxed: an idle plaintext socket stays as small as before.
        let plain = std::mem::size_of::<TcpStream>();
        let edge = std::mem::size_of::<EdgeStream>();
        assert!(
            edge <= plain + 8,
            "EdgeStream {edge} bytes, TcpStream {plain}"
        );
        let socket = std::mem::size_of::<kurir_wire::WsSocket<EdgeStream>>();
        assert!(socket <= 96, "socket grew to {socket} bytes");
    }

    /// A write returns only once its TLS records are on their way: the session never
    /// flushes, so records left in rustls' buffer would wait for the next frame.
    #[tokio::test]
    async fn a_finished_tls_write_leaves_nothing_behind() {
        use kurir_tls::test_certs::{tempdir, TestCa};
        use tokio::io::AsyncWriteExt as _;

        let ca = TestCa::new("ca");
        let dir = tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        ca.issue("gw").write(&cert, &key);
        let files = kurir_tls::TlsFiles {
            cert,
            key,
            client_ca: None,
        };
        let certs = ServerCerts::load(files, &[kurir_tls::ALPN_HTTP1], "test").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let (release_tx, release) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let connector = kurir_tls::tokio_rustls::TlsConnector::from(
                ca.client_config(None, &[kurir_tls::ALPN_HTTP1]),
            );
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            // Connected, then reads nothing: the server's writes back up.
            let tls = connector.connect(name, tcp).await.unwrap();
            let _ = connected_tx.send(());
            let _ = release.await;
            drop(tls);
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = certs.acceptor().accept(tcp).await.unwrap();
        connected.await.unwrap();
        let mut io = EdgeStream::Tls(Box::new(TlsConn {
            stream: tls,
            unflushed: 0,
        }));
        let chunk = vec![b'x'; 1024];
        let mut written = 0usize;
        // Until the kernel's buffers are full too (bounded: loopback buffers are a few MB).
        for _ in 0..64 * 1024 {
            match tokio::time::timeout(Duration::from_millis(200), io.write(&chunk)).await {
                Err(_) => break,
                Ok(r) => written += r.unwrap(),
            }
            let EdgeStream::Tls(t) = &io else {
                unreachable!()
            };
            assert!(
                !t.stream.get_ref().1.wants_write(),
                "a write returned with TLS records still buffered after {written} bytes"
            );
        }
        assert!(written > 0);
        let _ = release_tx.send(());
    }
}
