//! Offline reach across processes: dispatchers configured to push to a fake Web Push
//! service on loopback, sharing one namespace (so one due-queue), a gateway, and the
//! calls the tests repeat.

use anyhow::Result;
use kurir_proto::v1::{
    Fallback, Platform, RegisterDeviceRequest, SendRequest, WebPushSubscription,
};
use kurir_testkit::push::{browser_keys, vapid_private_key, FakePushService};
use kurir_testkit::{nats_url, random_namespace, redis_url};

use crate::api::{note, Api};
use crate::dispatcher::DispatcherProc;
use crate::gateway::{GatewayOpts, GatewayProc};

/// Leases short enough that a killed dispatcher's items move on within the test.
pub const DUE_LEASE_MS: u64 = 1_500;

/// Dispatchers and a gateway in one fresh namespace, pushing to `push`.
pub struct OfflineCluster {
    pub namespace: String,
    pub push: FakePushService,
    pub dispatchers: Vec<DispatcherProc>,
    pub gateway: GatewayProc,
    vapid: String,
}

impl OfflineCluster {
    pub async fn start(dispatchers: usize) -> Result<Self> {
        let namespace = random_namespace();
        let push = FakePushService::start().await;
        let vapid = vapid_private_key();
        // The gateway takes browsers' subscriptions (to the fake only) and serves the
        // VAPID public key derived from the dispatchers' private one.
        let gateway = GatewayProc::start(
            &format!("gw-{}", &namespace[5..13]),
            &GatewayOpts {
                namespace: namespace.clone(),
                nats_url: nats_url(),
                redis_url: redis_url(),
                extra: vec![
                    ("KURIR_WEBPUSH_ALLOWED_ORIGINS", push.origin()),
                    ("KURIR_VAPID_PRIVATE_KEY", vapid.clone()),
                ],
            },
        )
        .await?;
        let mut cluster = Self {
            namespace,
            push,
            dispatchers: Vec::new(),
            gateway,
            vapid,
        };
        for _ in 0..dispatchers {
            let d = cluster.start_dispatcher().await?;
            cluster.dispatchers.push(d);
        }
        Ok(cluster)
    }

    /// One more dispatcher of this namespace (also: a restart).
    pub async fn start_dispatcher(&self) -> Result<DispatcherProc> {
        self.start_dispatcher_with(Vec::new()).await
    }

    /// One more dispatcher, with more settings (other push providers).
    pub async fn start_dispatcher_with(
        &self,
        extra: Vec<(&'static str, String)>,
    ) -> Result<DispatcherProc> {
        let mut env = vec![
            ("KURIR_VAPID_PRIVATE_KEY", self.vapid.clone()),
            ("KURIR_VAPID_SUBJECT", "mailto:ops@kurir.test".to_owned()),
            ("KURIR_WEBPUSH_ALLOWED_ORIGINS", self.push.origin()),
            ("KURIR_DUE_POLL_MS", "50".to_owned()),
            ("KURIR_DUE_LEASE_MS", DUE_LEASE_MS.to_string()),
        ];
        env.extend(extra);
        DispatcherProc::start_with(&self.namespace, &nats_url(), &redis_url(), &env).await
    }

    /// Register a browser of `user` whose pushes arrive at the fake's endpoint `name`;
    /// returns its device id.
    pub async fn browser(&self, api: &mut Api, user: &str, name: &str) -> Result<String> {
        register_browser(api, &self.push, user, name).await
    }
}

/// Register a browser of `user` whose pushes arrive at `push`'s endpoint `name`;
/// returns its device id.
pub async fn register_browser(
    api: &mut Api,
    push: &FakePushService,
    user: &str,
    name: &str,
) -> Result<String> {
    let (p256dh, auth) = browser_keys();
    let reply = api
        .register_device(RegisterDeviceRequest {
            user_id: user.into(),
            platform: Platform::WebPush as i32,
            subscription: Some(WebPushSubscription {
                endpoint: push.endpoint(name),
                p256dh,
                auth,
            }),
            ..Default::default()
        })
        .await?;
    Ok(reply.into_inner().device_id)
}

/// A stored `Send` to `users` with a fallback after `after_ms`; returns its id.
pub async fn send_with_fallback(
    api: &mut Api,
    users: &[&str],
    title: &str,
    after_ms: u32,
) -> Result<String> {
    let reply = api
        .send(SendRequest {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            notification: Some(note(title)),
            ttl_seconds: 600,
            fallback: Some(Fallback {
                channels: vec![],
                after_ms,
            }),
            ..Default::default()
        })
        .await?;
    Ok(reply.into_inner().id)
}
