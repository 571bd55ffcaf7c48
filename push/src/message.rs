//! What is pushed: the user-visible part of a stored notification, independent of the
//! provider that carries it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// How urgently the platform should deliver; maps to Web Push `Urgency`, FCM's Android
/// priority and `apns-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Wake the device now (`high`, FCM `HIGH`, APNs 10).
    High,
    /// Deliver when convenient for the battery (`normal`, FCM `NORMAL`, APNs 5).
    #[default]
    Normal,
}

/// One notification to push to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushMessage {
    /// The notification's id in Kurir (lets the app ack it when opened).
    pub id: String,
    pub title: String,
    pub body: String,
    /// Extra key/values the app receives with the notification.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// A newer push with the same key replaces an undelivered older one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(skip)]
    pub priority: Priority,
    /// How long the provider should keep trying to deliver; zero means now or never.
    #[serde(skip)]
    pub ttl: Duration,
}

impl PushMessage {
    /// A normal-priority message kept for a day, without data or collapse key.
    #[must_use]
    pub fn new(id: impl Into<String>, title: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            body: body.into(),
            data: BTreeMap::new(),
            collapse_key: None,
            priority: Priority::Normal,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}
