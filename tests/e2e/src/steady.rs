//! A steady stream of stored sends while something breaks, and the check afterwards: every
//! send that was answered OK reached its user, every inbox emptied (all acked), and no
//! connection saw an id twice. The chaos tests stage their faults around it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::api::{send, Api};
use crate::fleet::Fleet;
use crate::redis_keys::inbox_entries;
use kurir_testkit::eventually;
use kurir_testkit::poll::poll;

pub const USERS: usize = 100;
pub const SENDS: usize = 2000;
/// One send every 2 ms: 2,000 sends over ~4 s plus gRPC time.
pub const SEND_EVERY: Duration = Duration::from_millis(2);
/// The fault hits once this many sends went out, and is repaired at [`REPAIR_AT`].
pub const FAULT_AT: usize = 700;
pub const REPAIR_AT: usize = 1000;

/// What the send loop saw.
#[derive(Default)]
pub struct Sent {
    /// (user, id) of every send answered OK.
    pub ok: Vec<(String, String)>,
    /// Sends answered UNAVAILABLE (allowed only while Redis is down).
    pub unavailable: usize,
}

/// Stored sends round-robin over `users` at a steady rate, `progress` counting those
/// started. Runs in its own task, so a fault being injected or repaired never holds it up.
pub async fn send_steadily(
    mut api: Api,
    users: Vec<String>,
    progress: Arc<AtomicUsize>,
    may_fail: bool,
) -> Result<Sent> {
    let mut sent = Sent::default();
    let mut tick = tokio::time::interval(SEND_EVERY);
    for i in 0..SENDS {
        tick.tick().await;
        progress.store(i, Ordering::SeqCst);
        let u = &users[i % USERS];
        match send(&mut api, &[u], &format!("c{i}"), 3600).await {
            Ok(r) => sent.ok.push((u.clone(), r.id)),
            Err(e) => {
                let code = e.downcast_ref::<tonic::Status>().map(|s| s.code());
                anyhow::ensure!(code == Some(tonic::Code::Unavailable), "send {i}: {e}");
                anyhow::ensure!(may_fail, "send {i} failed: {e}");
                sent.unavailable += 1;
            }
        }
    }
    progress.store(SENDS, Ordering::SeqCst);
    Ok(sent)
}

/// Wait until the send loop reached send `i` (it never waits for us); its error if it
/// failed before.
pub async fn reached(
    progress: &AtomicUsize,
    i: usize,
    sender: &mut tokio::task::JoinHandle<Result<Sent>>,
) -> Result<()> {
    eventually(Duration::from_secs(60), &format!("send {i}"), || async {
        (progress.load(Ordering::SeqCst) >= i || sender.is_finished()).then_some(())
    })
    .await;
    if progress.load(Ordering::SeqCst) < i {
        sender.await??;
        anyhow::bail!("the send loop ended before send {i}");
    }
    Ok(())
}

/// After the run: every (user, id) in `expected` received (within a minute), every
/// inbox of `namespace` empty (all acked), and no id twice on one connection. `redis`
/// names every server that holds keys (one, or each master of a cluster).
///
/// # Errors
/// Something was lost, left unacked or duplicated.
pub async fn all_received(
    fleet: &Fleet,
    expected: &[(String, String)],
    redis: &[String],
    namespace: &str,
) -> Result<()> {
    poll(
        Duration::from_secs(60),
        "every (user, id) received",
        || async { (fleet.missing(expected) == 0).then_some(()) },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: {} of {} missing",
            fleet.missing(expected),
            expected.len()
        )
    })?;
    eventually(
        Duration::from_secs(30),
        "every inbox empty (all acked)",
        || async {
            let mut left = 0;
            for url in redis {
                left += inbox_entries(url, namespace).ok()?;
            }
            (left == 0).then_some(())
        },
    )
    .await;
    anyhow::ensure!(
        fleet.duplicates.load(Ordering::Relaxed) == 0,
        "an id twice on one connection"
    );
    Ok(())
}
