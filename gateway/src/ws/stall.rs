//! A socket write that gives up when it stops making progress.
//!
//! Progress is what wakes the write: a socket write waits only while the kernel's send
//! buffer is full, and is woken when it drained (the peer read) or broke. So every wake
//! of the write itself, as opposed to wakes of the task for other reasons, restarts the
//! stall timer: a slow reader that keeps reading is never cut off, a client that stopped
//! reading is, `limit` after the buffers filled up. The common case, a write that
//! completes at once, costs no timer and no allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

/// The write made no progress for the whole limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled;

/// See the module doc. `F` is pinned by the caller (`std::pin::pin!`).
pub struct Stall<F> {
    write: F,
    limit: Duration,
    /// Set up the first time the write waits.
    watch: Option<Box<Watch>>,
}

struct Watch {
    progress: Arc<Progress>,
    waker: Waker,
    timer: Pin<Box<Sleep>>,
}

/// Stands between the write and the task's waker, to tell the write's own wakes apart.
struct Progress {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Progress {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> Stall<F> {
    pub fn new(write: F, limit: Duration) -> Self {
        Self {
            write,
            limit,
            watch: None,
        }
    }
}

impl<F: Future + Unpin> Future for Stall<F> {
    type Output = Result<F::Output, Stalled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(watch) = this.watch.as_mut() else {
            if let Poll::Ready(out) = Pin::new(&mut this.write).poll(cx) {
                return Poll::Ready(Ok(out));
            }
            // It waits: from now on it is polled through `Progress`, so its wakes show.
            let progress = Arc::new(Progress {
                woken: AtomicBool::new(false),
                task: AtomicWaker::new(),
            });
            progress.task.register(cx.waker());
            let waker = Waker::from(progress.clone());
            let timer = Box::pin(tokio::time::sleep(this.limit));
            this.watch = Some(Box::new(Watch {
                progress,
                waker,
                timer,
            }));
            return self.poll(cx);
        };
        watch.progress.task.register(cx.waker());
        if watch.progress.woken.swap(false, Ordering::AcqRel) {
            watch.timer.as_mut().reset(Instant::now() + this.limit);
        }
        if let Poll::Ready(out) =
            Pin::new(&mut this.write).poll(&mut Context::from_waker(&watch.waker))
        {
            return Poll::Ready(Ok(out));
        }
        match watch.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Stalled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_stalls_the_write() {
        let (mut server, _client) = tokio::io::duplex(16);
        let data = vec![0u8; 64];
        let write = std::pin::pin!(server.write_all(&data));
        let started = Instant::now();
        let out = Stall::new(write, Duration::from_secs(2)).await;
        assert_eq!(out.err(), Some(Stalled));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_keeps_it_going() {
        let (mut server, mut client) = tokio::io::duplex(16);
        // Reads 8 bytes a second: each read is progress, well within the limit.
        tokio::spawn(async move {
            let mut buf = [0u8; 8];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        });
        let data = vec![0u8; 256];
        let write = std::pin::pin!(server.write_all(&data));
        let started = Instant::now();
        let out = Stall::new(write, Duration::from_secs(2)).await;
        assert!(matches!(out, Ok(Ok(()))), "{out:?}");
        assert!(started.elapsed() > Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_write_that_completes_at_once_sets_up_nothing() {
        let (mut server, _client) = tokio::io::duplex(64);
        let data = [1u8; 8];
        let write = std::pin::pin!(server.write_all(&data));
        let mut stall = Stall::new(write, Duration::from_secs(1));
        let out = std::future::poll_fn(|cx| Pin::new(&mut stall).poll(cx)).await;
        assert!(matches!(out, Ok(Ok(()))));
        assert!(stall.watch.is_none());
    }
}
