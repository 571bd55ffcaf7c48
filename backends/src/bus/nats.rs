//! In-process bus (placeholder until implemented).
use super::*;
pub struct NatsBus;
impl NatsBus { pub async fn connect(_o: &crate::ConnectOptions) -> Result<Self, BackendError> { Ok(Self) } }
#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, _s: String, _p: Bytes) -> Result<(), BackendError> { Err(BackendError::corrupt("memory", "unimplemented")) }
    async fn subscribe(&self, _s: String) -> Result<Subscription, BackendError> { Err(BackendError::corrupt("memory", "unimplemented")) }
    async fn flush(&self) -> Result<(), BackendError> { Ok(()) }
    fn reconnected(&self) -> watch::Receiver<u64> { watch::channel(0).1 }
    fn is_connected(&self) -> bool { true }
}
