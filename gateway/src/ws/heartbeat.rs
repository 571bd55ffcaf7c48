//! Keepalive for every connection from one task. The hub's user shards are walked one
//! after another across `KURIR_HEARTBEAT_MS`, and each connection of a shard is told its
//! heartbeat is due: its session then pings the client, and closes the connection when
//! the client has been silent past the idle timeout. One timer for the node instead of
//! one per connection: an idle connection carries none, and pings are spread evenly
//! over the interval rather than bunched by connect time.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Walk the shards, one per `every / shards`, until `stop`.
pub async fn run(hub: Hub, every: Duration, stop: CancellationToken) {
    let shards = hub.shards();
    let step = (every / shards as u32).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for shard in (0..shards).cycle() {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        hub.heartbeat_shard(shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ConnHandle;
    use kurir_backends::{ConnId, UserId};

    #[tokio::test(start_paused = true)]
    async fn every_connection_is_due_once_per_interval() {
        let hub = Hub::new();
        let conns: Vec<_> = (0..200)
            .map(|i| {
                let c = ConnHandle::new(ConnId(i), UserId::parse(&format!("u{i}")).unwrap(), 4);
                hub.register(c.clone());
                c
            })
            .collect();
        let stop = CancellationToken::new();
        let every = Duration::from_secs(64);
        tokio::spawn(run(hub.clone(), every, stop.clone()));
        // Half an interval: about half the connections are due, none twice.
        tokio::time::sleep(every / 2 + Duration::from_millis(500)).await;
        let due = conns.iter().filter(|c| c.mailbox.take_heartbeat()).count();
        assert!(
            (40..=160).contains(&due),
            "{due} of 200 due after half an interval"
        );
        // The rest of the interval: every connection has been due.
        tokio::time::sleep(every / 2).await;
        let rest = conns.iter().filter(|c| c.mailbox.take_heartbeat()).count();
        assert_eq!(due + rest, 200);
        stop.cancel();
    }
}
