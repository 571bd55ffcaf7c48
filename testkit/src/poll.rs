//! Waiting for a condition that becomes true on its own time (a process ready, a
//! metric moved, a message arrived): poll every 50 ms, give up after a bound.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked.
const EVERY: Duration = Duration::from_millis(50);

/// A condition that did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {within:?} waiting for {what}")]
pub struct TimedOut {
    pub what: String,
    pub within: Duration,
}

/// Poll `check` until it returns `Some`; panics (failing the test) with `what` when
/// `within` passes first.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll(within, what, check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`eventually`], as an error: for fixtures that report a readiness failure with
/// more context (the log of the process that never came up).
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                within,
            });
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "the third try", || {
            n += 1;
            let v = (n == 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_naming_what() {
        let e = poll(Duration::from_millis(120), "never", || async { None::<()> })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "timed out after 120ms waiting for never");
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never")]
    async fn eventually_panics_on_timeout() {
        eventually(Duration::from_millis(60), "never", || async { None::<()> }).await;
    }
}
