//! Redis client construction (placeholder until implemented).
use crate::{BackendError, ConnectOptions};
pub(crate) async fn connect(_o: &ConnectOptions) -> Result<fred::prelude::Client, BackendError> { Err(BackendError::corrupt("redis", "unimplemented")) }
