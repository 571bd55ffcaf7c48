//! `authorization: Bearer <key>` on every gRPC call, the way the dispatcher's callers
//! present an API key.

use tonic::metadata::{Ascii, MetadataValue};

/// A tonic interceptor adding the key (or nothing, to test a caller without one).
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

/// A key that cannot be an HTTP header value.
#[derive(Debug, thiserror::Error)]
#[error("an API key must be visible ASCII")]
pub struct InvalidKey;

impl Bearer {
    /// Present `key`, parsed once for all calls.
    pub fn new(key: &str) -> Result<Self, InvalidKey> {
        format!("Bearer {key}")
            .parse()
            .map(|v| Self(Some(v)))
            .map_err(|_| InvalidKey)
    }

    /// Present `key` when there is one.
    pub fn optional(key: Option<&str>) -> Result<Self, InvalidKey> {
        key.map_or(Ok(Self(None)), Self::new)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    #[test]
    fn adds_the_header_or_nothing() {
        let req = Bearer::new("k1")
            .unwrap()
            .call(tonic::Request::new(()))
            .unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer k1");
        let req = Bearer::optional(None)
            .unwrap()
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(Bearer::new("bad\nkey").is_err());
    }
}
