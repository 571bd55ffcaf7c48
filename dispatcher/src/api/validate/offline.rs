//! The checks of offline reach: devices (a Web Push endpoint must be an allowed push
//! service, keys must have their sizes, tokens their shapes), `fallback`, `send_at` and
//! `CancelScheduled`. Like the rest of [`super`], every refusal names its field.

use kurir_backends::devices::DeviceId;
use kurir_backends::{NotificationId, UserId};
use kurir_proto::v1::{
    CancelScheduledRequest, Device, Fallback, ListDevicesRequest, Platform, RegisterDeviceRequest,
    UnregisterDeviceRequest, WebPushSubscription,
};
use kurir_push::ssrf::OriginAllowlist;
use kurir_runtime::now_ms;

use crate::dispatch::FallbackPolicy;
use crate::error::DispatchError;
use crate::limits::{
    MAX_APP_ID_BYTES, MAX_DEVICE_TOKEN_BYTES, MAX_SCHEDULE_AHEAD_MS, MAX_TTL_SECONDS,
};

/// A device to register, its id derived from what it is: registering the same token or
/// endpoint again names the same device.
pub fn register_device(
    req: RegisterDeviceRequest,
    allowlist: &OriginAllowlist,
) -> Result<Device, DispatchError> {
    let user = user_id(&req.user_id)?;
    let platform = Platform::try_from(req.platform)
        .ok()
        .filter(|p| *p != Platform::Unspecified)
        .ok_or_else(|| DispatchError::invalid("platform", "required: WEB_PUSH, FCM or APNS"))?;
    printable("app_id", &req.app_id, MAX_APP_ID_BYTES, false)?;
    let (token, subscription) = match platform {
        Platform::WebPush => {
            if !req.token.is_empty() {
                return Err(DispatchError::invalid(
                    "token",
                    "must be empty for WEB_PUSH (the subscription says where to push)",
                ));
            }
            let sub = req
                .subscription
                .ok_or_else(|| DispatchError::invalid("subscription", "required for WEB_PUSH"))?;
            (String::new(), Some(subscription(sub, allowlist)?))
        }
        Platform::Fcm | Platform::Apns => {
            if req.subscription.is_some() {
                return Err(DispatchError::invalid(
                    "subscription",
                    "only for WEB_PUSH; FCM and APNS take a token",
                ));
            }
            if platform == Platform::Apns {
                apns_token(&req.token)?;
            } else {
                printable("token", &req.token, MAX_DEVICE_TOKEN_BYTES, true)?;
            }
            (req.token, None)
        }
        Platform::Unspecified => unreachable!("refused above"),
    };
    let key = subscription
        .as_ref()
        .map_or(token.as_str(), |s| &s.endpoint);
    Ok(Device {
        id: device_id(platform, key).to_string(),
        user_id: user.as_str().to_owned(),
        platform: platform as i32,
        token,
        subscription,
        app_id: req.app_id,
        registered_at: now_ms(),
    })
}

pub fn unregister_device(
    req: UnregisterDeviceRequest,
) -> Result<(UserId, DeviceId), DispatchError> {
    let user = user_id(&req.user_id)?;
    let id = DeviceId::parse(&req.device_id)
        .map_err(|e| DispatchError::invalid("device_id", e.reason))?;
    Ok((user, id))
}

pub fn list_devices(req: ListDevicesRequest) -> Result<UserId, DispatchError> {
    user_id(&req.user_id)
}

pub fn cancel_scheduled(req: CancelScheduledRequest) -> Result<NotificationId, DispatchError> {
    NotificationId::parse(&req.id).map_err(|e| DispatchError::invalid("id", e.reason))
}

/// `send_at` as given (unix ms; 0 or a time passed = now), refused beyond
/// [`MAX_SCHEDULE_AHEAD_MS`].
pub fn send_at(field: &str, at: i64) -> Result<i64, DispatchError> {
    if at > now_ms().saturating_add(MAX_SCHEDULE_AHEAD_MS) {
        return Err(DispatchError::invalid(
            field,
            "must be at most 30 days ahead (unix milliseconds)",
        ));
    }
    Ok(at)
}

/// The fallback of a `Send`: it needs a stored notification, and a wait within its TTL.
pub fn fallback(
    fallback: Option<Fallback>,
    ttl_seconds: u32,
) -> Result<Option<FallbackPolicy>, DispatchError> {
    let Some(fallback) = fallback else {
        return Ok(None);
    };
    if ttl_seconds == 0 {
        return Err(DispatchError::invalid(
            "fallback",
            "needs ttl_seconds > 0: only a stored notification can wait for an ack",
        ));
    }
    debug_assert!(ttl_seconds <= MAX_TTL_SECONDS);
    if u64::from(fallback.after_ms) >= u64::from(ttl_seconds) * 1000 {
        return Err(DispatchError::invalid(
            "fallback.after_ms",
            "must be less than ttl_seconds (the notification would expire first)",
        ));
    }
    let mut channels = Vec::with_capacity(fallback.channels.len());
    for (i, raw) in fallback.channels.iter().enumerate() {
        let platform = Platform::try_from(*raw)
            .ok()
            .filter(|p| *p != Platform::Unspecified)
            .ok_or_else(|| {
                DispatchError::invalid(
                    format!("fallback.channels[{i}]"),
                    "must be WEB_PUSH, FCM or APNS",
                )
            })?;
        if channels.contains(&platform) {
            return Err(DispatchError::invalid(
                format!("fallback.channels[{i}]"),
                "listed twice",
            ));
        }
        channels.push(platform);
    }
    Ok(Some(FallbackPolicy {
        channels,
        after_ms: fallback.after_ms,
    }))
}

/// The id of a device: 32 hex digits of SHA-256 over its platform and token or endpoint.
pub fn device_id(platform: Platform, token_or_endpoint: &str) -> DeviceId {
    let key = kurir_push::device::device_key(platform.as_str_name(), token_or_endpoint);
    DeviceId::parse(&key).expect("32 hex digits are a device id")
}

fn user_id(raw: &str) -> Result<UserId, DispatchError> {
    UserId::parse(raw).map_err(|e| DispatchError::invalid("user_id", e.reason))
}

fn subscription(
    sub: WebPushSubscription,
    allowlist: &OriginAllowlist,
) -> Result<WebPushSubscription, DispatchError> {
    let checked = kurir_push::WebPushSubscription {
        endpoint: sub.endpoint,
        p256dh: sub.p256dh,
        auth: sub.auth,
    };
    kurir_push::device::check_subscription(&checked, allowlist)
        .map_err(|e| DispatchError::invalid(format!("subscription.{}", e.field), e.reason))?;
    Ok(WebPushSubscription {
        endpoint: checked.endpoint,
        p256dh: checked.p256dh,
        auth: checked.auth,
    })
}

/// APNs device tokens are hex (32 bytes today; up to 100 allowed).
fn apns_token(token: &str) -> Result<(), DispatchError> {
    let ok = (16..=200).contains(&token.len())
        && token.len().is_multiple_of(2)
        && token.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(DispatchError::invalid(
            "token",
            "must be an APNs device token: 16 to 200 hex digits",
        ))
    }
}

fn printable(field: &str, text: &str, max: usize, required: bool) -> Result<(), DispatchError> {
    if required && text.is_empty() {
        return Err(DispatchError::invalid(field, "required"));
    }
    if text.len() > max {
        return Err(DispatchError::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DispatchError::invalid(field, "must be printable ASCII"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn allow() -> OriginAllowlist {
        "https://fcm.googleapis.com,http://127.0.0.1:9"
            .parse()
            .unwrap()
    }

    fn web(endpoint: &str) -> RegisterDeviceRequest {
        RegisterDeviceRequest {
            user_id: "alice".into(),
            platform: Platform::WebPush as i32,
            subscription: Some(WebPushSubscription {
                endpoint: endpoint.into(),
                p256dh: URL_SAFE_NO_PAD.encode([4u8; 65]),
                auth: URL_SAFE_NO_PAD.encode([7u8; 16]),
            }),
            ..Default::default()
        }
    }

    fn refused(r: Result<Device, DispatchError>) -> String {
        match r {
            Err(DispatchError::InvalidArgument { field, reason }) => format!("{field}: {reason}"),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn web_push_endpoints_must_be_allowed_push_services() {
        let ok = register_device(web("https://fcm.googleapis.com/fcm/send/abc"), &allow()).unwrap();
        assert_eq!(ok.id.len(), 32);
        // The same endpoint is the same device.
        let again = register_device(web("https://fcm.googleapis.com/fcm/send/abc"), &allow());
        assert_eq!(again.unwrap().id, ok.id);
        register_device(web("http://127.0.0.1:9/push/1"), &allow()).unwrap();
        for bad in [
            "https://169.254.169.254/latest",
            "http://fcm.googleapis.com/x",
            "https://evil.example/push",
            "not a url",
            "http://127.0.0.1:6379/",
        ] {
            let msg = refused(register_device(web(bad), &allow()));
            assert!(msg.starts_with("subscription.endpoint: "), "{bad}: {msg}");
        }
    }

    #[test]
    fn keys_and_tokens_must_have_their_shapes() {
        let mut r = web("https://fcm.googleapis.com/x");
        r.subscription.as_mut().unwrap().auth = URL_SAFE_NO_PAD.encode([1u8; 15]);
        assert!(refused(register_device(r, &allow())).starts_with("subscription.auth"));
        let mut r = web("https://fcm.googleapis.com/x");
        r.subscription.as_mut().unwrap().p256dh = "!!".into();
        assert!(refused(register_device(r, &allow())).starts_with("subscription.p256dh"));
        let apns = |token: &str| RegisterDeviceRequest {
            user_id: "alice".into(),
            platform: Platform::Apns as i32,
            token: token.into(),
            ..Default::default()
        };
        register_device(apns(&"ab".repeat(32)), &allow()).unwrap();
        assert!(refused(register_device(apns("xyz"), &allow())).starts_with("token"));
        let none = RegisterDeviceRequest {
            user_id: "alice".into(),
            token: "t".into(),
            ..Default::default()
        };
        assert!(refused(register_device(none, &allow())).starts_with("platform"));
        let fcm_without_token = RegisterDeviceRequest {
            user_id: "alice".into(),
            platform: Platform::Fcm as i32,
            ..Default::default()
        };
        assert_eq!(
            refused(register_device(fcm_without_token, &allow())),
            "token: required"
        );
    }

    #[test]
    fn a_fallback_needs_a_stored_notification_and_a_wait_within_its_ttl() {
        let f = |channels: Vec<i32>, after_ms| Some(Fallback { channels, after_ms });
        assert!(fallback(f(vec![], 0), 0).is_err());
        assert!(fallback(f(vec![], 60_000), 60).is_err());
        assert!(fallback(f(vec![1, 1], 0), 60).is_err());
        assert!(fallback(f(vec![0], 0), 60).is_err());
        let ok = fallback(f(vec![3, 1], 5_000), 60).unwrap().unwrap();
        assert_eq!(ok.channels, [Platform::Apns, Platform::WebPush]);
        assert_eq!(fallback(None, 0).unwrap(), None);
    }

    #[test]
    fn send_at_is_at_most_thirty_days_ahead() {
        let now = now_ms();
        assert!(send_at("send_at", now + MAX_SCHEDULE_AHEAD_MS - 1_000).is_ok());
        assert!(send_at("send_at", now + MAX_SCHEDULE_AHEAD_MS + 60_000).is_err());
        assert!(send_at("send_at", 0).is_ok());
        assert!(send_at("send_at", -5).is_ok());
    }
}
