//! The RPCs of `kurir.v1.Dispatcher`, as the `method` label of the request metrics.
//! Beside the API and telemetry rather than in either, so both can name them.

use kurir_proto::v1::dispatcher_server::SERVICE_NAME;

/// The RPCs, as the `method` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Send,
    SendStream,
    Publish,
    Broadcast,
    GetPresence,
    Disconnect,
    WatchReceipts,
    RegisterDevice,
    UnregisterDevice,
    ListDevices,
    CancelScheduled,
}

impl Method {
    pub const ALL: [Method; 11] = [
        Method::Send,
        Method::SendStream,
        Method::Publish,
        Method::Broadcast,
        Method::GetPresence,
        Method::Disconnect,
        Method::WatchReceipts,
        Method::RegisterDevice,
        Method::UnregisterDevice,
        Method::ListDevices,
        Method::CancelScheduled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Send => "Send",
            Method::SendStream => "SendStream",
            Method::Publish => "Publish",
            Method::Broadcast => "Broadcast",
            Method::GetPresence => "GetPresence",
            Method::Disconnect => "Disconnect",
            Method::WatchReceipts => "WatchReceipts",
            Method::RegisterDevice => "RegisterDevice",
            Method::UnregisterDevice => "UnregisterDevice",
            Method::ListDevices => "ListDevices",
            Method::CancelScheduled => "CancelScheduled",
        }
    }

    /// The method of a request path (`/kurir.v1.Dispatcher/Send`).
    pub fn from_path(path: &str) -> Option<Self> {
        let name = path
            .strip_prefix('/')?
            .strip_prefix(SERVICE_NAME)?
            .strip_prefix('/')?;
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_from_paths() {
        for m in Method::ALL {
            let path = format!("/kurir.v1.Dispatcher/{}", m.as_str());
            assert_eq!(Method::from_path(&path), Some(m));
        }
        assert_eq!(Method::from_path("/kurir.v1.Dispatcher/Nope"), None);
        assert_eq!(Method::from_path("/grpc.health.v1.Health/Check"), None);
    }
}
