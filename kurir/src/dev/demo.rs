//! `KURIR_DEMO_INTERVAL`: publish the server time to topic `demo`, like the classic
//! Node `ws` demo that pushes the time every few seconds, so the demo page has
//! something to show without a sender.

use std::time::Duration;

use kurir_backends::Topic;
use kurir_dispatcher::dispatch::Dispatch;
use kurir_proto::v1::Notification;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Publish `Server time: HH:MM:SS UTC` to topic `demo` every `every`, until `stop`.
pub async fn ticker(dispatch: Dispatch, every: Duration, stop: CancellationToken) {
    let Ok(topic) = Topic::parse("demo") else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    info!(every = ?every, "demo ticker publishing to topic demo");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
        let n = Notification {
            title: "New notification!".into(),
            body: format!("Server time: {h:02}:{m:02}:{s:02} UTC"),
            ..Default::default()
        };
        if let Err(e) = dispatch.publish(topic.clone(), n).await {
            warn!(error = %e, "demo publish failed");
        }
    }
}
