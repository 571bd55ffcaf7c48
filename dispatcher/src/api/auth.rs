//! ① First stop of every `kurir.v1.Dispatcher` call: the API-key check.
//!
//! [`RequireApiKey`] wraps the generated service at the HTTP level, like a tonic
//! interceptor: it runs before the request body is decoded and answers `UNAUTHENTICATED`
//! itself. Unlike `tonic::service::Interceptor` it sees the request path, so refused calls
//! are counted under their method in `kurir_dispatcher_requests_total`. Health and
//! reflection are not wrapped: probes and `grpcurl list` carry no key.
//!
//! With `KURIR_TLS_CLIENT_CA` (mTLS), the TLS layer has already refused every client
//! without a certificate from that CA; a call that arrives with a verified client
//! certificate is accepted on it alone, and its `authorization` metadata is not looked
//! at. Without a client certificate, the API key decides.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{ready, Either, Ready};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tracing::debug;

use crate::api::Method;
use crate::config::Secret;
use crate::error::{AuthFailure, DispatchError};
use crate::telemetry;

/// The keys a caller may present. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    /// `None`: `--insecure-no-auth`, every call is accepted.
    keys: Option<Arc<[Secret]>>,
}

impl ApiKeys {
    pub fn new(keys: &[Secret]) -> Self {
        Self {
            keys: Some(keys.into()),
        }
    }

    /// Accept every call (`--insecure-no-auth`).
    pub fn disabled() -> Self {
        Self { keys: None }
    }

    /// Whether `authorization: Bearer <key>` names a configured key. Every key is
    /// compared, each in constant time, so timing tells nothing about which key or
    /// prefix matched.
    ///
    /// # Errors
    /// [`AuthFailure::Missing`] without a bearer credential, [`AuthFailure::Invalid`]
    /// for a key that is not configured.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), AuthFailure> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        let presented = bearer(headers).ok_or(AuthFailure::Missing)?;
        let matched = keys.iter().fold(subtle::Choice::from(0), |acc, key| {
            acc | key.expose().as_bytes().ct_eq(presented)
        });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }
}

/// The credential of `authorization: Bearer <credential>` (scheme case-insensitive).
fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let credential = value[SCHEME.len()..].trim_ascii();
    (!credential.is_empty()).then_some(credential)
}

/// A service that only lets calls with a configured API key (or, with mTLS, a verified
/// client certificate) through to `S`.
#[derive(Clone)]
pub struct RequireApiKey<S> {
    inner: S,
    keys: ApiKeys,
    client_certs: bool,
}

impl<S> RequireApiKey<S> {
    pub fn new(inner: S, keys: ApiKeys) -> Self {
        Self {
            inner,
            keys,
            client_certs: false,
        }
    }

    /// Accept calls that came with a client certificate without an API key. Only for a
    /// server whose TLS layer verifies client certificates (a client CA is configured).
    pub fn accepting_client_certificates(mut self, accept: bool) -> Self {
        self.client_certs = accept;
        self
    }
}

/// Whether the connection presented a client certificate; the TLS layer has verified it
/// (rustls only exposes peer certificates that passed its verifier).
fn has_client_certificate(extensions: &http::Extensions) -> bool {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .is_some_and(|certs| !certs.is_empty())
}

impl<S: NamedService> NamedService for RequireApiKey<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for RequireApiKey<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Self::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.client_certs && has_client_certificate(req.extensions()) {
            return Either::Left(self.inner.call(req));
        }
        match self.keys.check(req.headers()) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(failure) => {
                telemetry::auth_failure(failure);
                if let Some(method) = Method::from_path(req.uri().path()) {
                    telemetry::request_done(method, Code::Unauthenticated, None);
                }
                debug!(
                    path = req.uri().path(),
                    reason = failure.label(),
                    "call refused"
                );
                let status = Status::from(DispatchError::Unauthenticated(failure));
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    fn keys() -> ApiKeys {
        ApiKeys::new(&[Secret::from("first-key"), Secret::from("second-key")])
    }

    #[test]
    fn any_configured_key_is_accepted() {
        assert_eq!(keys().check(&headers(Some("Bearer first-key"))), Ok(()));
        assert_eq!(keys().check(&headers(Some("Bearer second-key"))), Ok(()));
        assert_eq!(keys().check(&headers(Some("bearer  second-key "))), Ok(()));
    }

    #[test]
    fn missing_credentials() {
        for h in [
            None,
            Some("first-key"),
            Some("Basic Zmlyc3Qta2V5"),
            Some("Bearer"),
            Some("Bearer   "),
        ] {
            assert_eq!(
                keys().check(&headers(h)),
                Err(AuthFailure::Missing),
                "{h:?}"
            );
        }
    }

    #[test]
    fn wrong_keys() {
        for h in [
            "Bearer first-ke",
            "Bearer first-key2",
            "Bearer FIRST-KEY",
            "Bearer x",
        ] {
            assert_eq!(
                keys().check(&headers(Some(h))),
                Err(AuthFailure::Invalid),
                "{h}"
            );
        }
    }

    #[test]
    fn disabled_accepts_anything() {
        assert_eq!(ApiKeys::disabled().check(&headers(None)), Ok(()));
    }
}
