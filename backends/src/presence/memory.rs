//! In-process presence (placeholder until implemented).
use super::*;
pub struct MemoryPresence;
impl MemoryPresence { pub fn new(_ttl: Duration) -> Self { Self } }
#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(&self, _n: &NodeId, _u: &UserId, _c: ConnId) -> Result<(), BackendError> { Ok(()) }
    async fn remove(&self, _u: &UserId, _c: ConnId) -> Result<(), BackendError> { Ok(()) }
    async fn beat(&self, _n: &NodeId, _t: Duration) -> Result<(), BackendError> { Ok(()) }
    async fn refresh(&self, _u: &[UserId]) -> Result<(), BackendError> { Ok(()) }
    async fn remove_node(&self, _n: &NodeId, _e: &[(UserId, ConnId)]) -> Result<(), BackendError> { Ok(()) }
    async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError> { Ok(users.iter().map(|u| UserPresence { user: u.clone(), connections: vec![] }).collect()) }
}
