//! In-process inbox (placeholder until implemented).
use super::*;
pub struct RedisInbox;
impl RedisInbox { pub fn new(_c: fred::prelude::Client, _n: crate::Namespace, _cap: usize) -> Self { Self } }
#[async_trait]
impl Inbox for RedisInbox {
    async fn append(&self, _u: &[UserId], _e: &NewEntry) -> Result<Vec<Cursor>, BackendError> { Ok(vec![]) }
    async fn pending(&self, _u: &UserId, _a: Option<&Cursor>, _l: usize) -> Result<Vec<StoredEntry>, BackendError> { Ok(vec![]) }
    async fn ack(&self, _u: &UserId, _i: NotificationId) -> Result<bool, BackendError> { Ok(false) }
    async fn claim(&self, _k: &str, _i: NotificationId, _t: Duration) -> Result<Claim, BackendError> { Ok(Claim::New) }
    async fn release(&self, _k: &str, _i: NotificationId) -> Result<(), BackendError> { Ok(()) }
}
