//! ① First stop of every `kurir.v1.Dispatcher` call: the API-key check.
//!
//! [`RequireApiKey`] wraps the generated service at the HTTP level, like a tonic
//! interceptor: it runs before the request body is decoded and answers `UNAUTHENTICATED`
//! itself. Unlike `tonic::service::Interceptor` it sees the request path, so refused calls
//! are counted under their method in `kurir_dispatcher_requests_total`. Health and
//! reflection are not wrapped: probes and `grpcurl list` carry no key.
//!
//! A call it lets through carries its caller's [`Scope`] in the request extensions (the
//! scope of the key it presented, or the shared one under `--insecure-no-auth`):
//! idempotency keys are per scope.
//!
//! With `KURIR_TLS_CLIENT_CA` (mTLS), the TLS layer has already refused every client
//! without a certificate from that CA; a call that arrives with a verified client
//! certificate is accepted on it alone, and its `authorization` metadata is not looked
//! at; its scope is named after the certificate. Without a client certificate, the API
//! key decides.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{ready, Either, Ready};
use kurir_backends::Secret;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tracing::debug;

use crate::api::Method;
use crate::dispatch::Scope;
use crate::error::{AuthFailure, DispatchError};
use crate::telemetry;

/// The keys a caller may present. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    /// `None`: `--insecure-no-auth`, every call is accepted.
    keys: Option<Arc<[(Secret, Scope)]>>,
}

impl ApiKeys {
    pub fn new(keys: &[Secret]) -> Self {
        let keys = keys
            .iter()
            .map(|k| (k.clone(), Scope::of_api_key(k.expose().as_bytes())))
            .collect();
        Self { keys: Some(keys) }
    }

    /// Accept every call (`--insecure-no-auth`).
    pub fn disabled() -> Self {
        Self { keys: None }
    }

    /// The scope of the configured key `authorization: Bearer <key>` names. Every key
    /// is compared, each in constant time, and the match is picked without a branch, so
    /// timing tells nothing about which key or prefix matched.
    ///
    /// # Errors
    /// [`AuthFailure::Missing`] without a bearer credential, [`AuthFailure::Invalid`]
    /// for a key that is not configured.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<Scope, AuthFailure> {
        let Some(keys) = &self.keys else {
            return Ok(Scope::unauthenticated());
        };
        let presented = bearer(headers).ok_or(AuthFailure::Missing)?;
        let mut matched = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (key, _)) in keys.iter().enumerate() {
            let hit = key.expose().as_bytes().ct_eq(presented);
            index.conditional_assign(&(i as u32), hit);
            matched |= hit;
        }
        if bool::from(matched) {
            Ok(keys[index as usize].1.clone())
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
/// The scope of a call that came with a verified client certificate: named after its
/// leaf certificate. `None` without one.
fn client_certificate_scope(extensions: &http::Extensions) -> Option<Scope> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)?;
    certs.first().map(|leaf| Scope::of_client_certificate(leaf))
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if self.client_certs {
            if let Some(scope) = client_certificate_scope(req.extensions()) {
                req.extensions_mut().insert(scope);
                return Either::Left(self.inner.call(req));
            }
        }
        match self.keys.check(req.headers()) {
            Ok(scope) => {
                req.extensions_mut().insert(scope);
                Either::Left(self.inner.call(req))
            }
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

    const FIRST: &str = "test-api-key-first-0123456789abcdef0";
    const SECOND: &str = "test-api-key-second-0123456789abcdef";

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    fn keys() -> ApiKeys {
        ApiKeys::new(&[Secret::from(FIRST), Secret::from(SECOND)])
    }

    #[test]
    fn any_configured_key_is_accepted_in_its_own_scope() {
        let first = Scope::of_api_key(FIRST.as_bytes());
        let second = Scope::of_api_key(SECOND.as_bytes());
        assert_ne!(first, second);
        let check = |h: &str| keys().check(&headers(Some(h)));
        assert_eq!(check(&format!("Bearer {FIRST}")), Ok(first));
        assert_eq!(check(&format!("Bearer {SECOND}")), Ok(second.clone()));
        assert_eq!(check(&format!("bearer  {SECOND} ")), Ok(second));
    }

    #[test]
    fn missing_credentials() {
        for h in [
            None,
            Some(FIRST),
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
        let upper = FIRST.to_uppercase();
        for key in [&FIRST[..FIRST.len() - 1], &format!("{FIRST}2"), &upper, "x"] {
            assert_eq!(
                keys().check(&headers(Some(&format!("Bearer {key}")))),
                Err(AuthFailure::Invalid),
                "{key}"
            );
        }
    }

    #[test]
    fn disabled_accepts_anything_in_the_shared_scope() {
        assert_eq!(
            ApiKeys::disabled().check(&headers(None)),
            Ok(Scope::unauthenticated())
        );
    }
}
