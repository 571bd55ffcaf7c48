//! `RegisterDevice`, `UnregisterDevice`, `ListDevices`: the devices a user's
//! notifications are pushed to, kept in the device registry as encoded
//! `kurir.v1.Device`s. A registration holds push credentials (a token, a subscription
//! endpoint): none of it is logged, only device ids.

use bytes::Bytes;
use kurir_backends::devices::{DeviceId, StoredDevice};
use kurir_backends::UserId;
use kurir_proto::v1::{Device, Platform};
use prost::Message;
use tracing::{debug, warn};

use super::Dispatch;
use crate::error::DispatchError;

impl Dispatch {
    /// Store a validated device (its id derived from its token or endpoint); the
    /// registry's cap may drop the user's least recent ones.
    ///
    /// # Errors
    /// `Backend` when the registry fails.
    pub async fn register_device(&self, device: Device) -> Result<DeviceId, DispatchError> {
        let user = UserId::parse(&device.user_id)
            .map_err(|e| DispatchError::invalid("user_id", e.reason))?;
        let id = DeviceId::parse(&device.id)
            .map_err(|e| DispatchError::invalid("device_id", e.reason))?;
        let dropped = self
            .backends
            .devices
            .register(&user, &id, Bytes::from(device.encode_to_vec()))
            .await?;
        debug!(device = %id, dropped = dropped.len(), "device registered");
        Ok(id)
    }

    /// Forget a device; `false` when the user had no device with this id.
    ///
    /// # Errors
    /// `Backend` when the registry fails.
    pub async fn unregister_device(
        &self,
        user: &UserId,
        id: &DeviceId,
    ) -> Result<bool, DispatchError> {
        Ok(self.backends.devices.unregister(user, id).await?)
    }

    /// A user's devices, most recent first (entries that do not decode are skipped).
    ///
    /// # Errors
    /// `Backend` when the registry fails.
    pub async fn list_devices(&self, user: &UserId) -> Result<Vec<Device>, DispatchError> {
        let stored = self.backends.devices.list(user).await?;
        Ok(stored.iter().filter_map(decode).collect())
    }
}

pub(super) fn decode(stored: &StoredDevice) -> Option<Device> {
    match Device::decode(stored.payload.clone()) {
        Ok(device) => Some(device),
        Err(_) => {
            warn!(device = %stored.id, "skipped a device entry that does not decode");
            None
        }
    }
}

/// The push crate's view of a registered device.
pub(super) fn push_target(device: &Device) -> Option<kurir_push::Device> {
    match Platform::try_from(device.platform).ok()? {
        Platform::WebPush => {
            let sub = device.subscription.as_ref()?;
            Some(kurir_push::Device::WebPush(
                kurir_push::WebPushSubscription {
                    endpoint: sub.endpoint.clone(),
                    p256dh: sub.p256dh.clone(),
                    auth: sub.auth.clone(),
                },
            ))
        }
        Platform::Fcm => Some(kurir_push::Device::Fcm {
            token: device.token.clone(),
        }),
        Platform::Apns => Some(kurir_push::Device::Apns {
            token: device.token.clone(),
            topic: Some(device.app_id.clone()).filter(|a| !a.is_empty()),
        }),
        Platform::Unspecified => None,
    }
}
