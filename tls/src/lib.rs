//! TLS at the Kurir edge, shared by the gateway (`wss://`, HTTPS) and the dispatcher
//! (gRPC over TLS, optionally mTLS).
//!
//! The path of a connection, in order: [`pem`] reads the PEM files named by
//! `KURIR_TLS_CERT`, `KURIR_TLS_KEY` (and `KURIR_TLS_CLIENT_CA`) into a rustls
//! `ServerConfig`; [`reload::ServerCerts`] holds the current one and swaps in a new one
//! when the files change or on SIGHUP (a bad new file is logged and the old config kept);
//! each accepted TCP connection takes the config current at that moment and does its
//! handshake in its own task ([`incoming`] for servers that want a stream of finished
//! TLS streams, such as tonic). Open connections keep the config they started with.
//!
//! Crypto is rustls with the `ring` provider, chosen explicitly rather than through a
//! process-wide default, so that another crate enabling a second provider cannot make the
//! choice ambiguous.
#![forbid(unsafe_code)]

pub mod incoming;
pub mod pem;
pub mod reload;
#[cfg(feature = "test-certs")]
pub mod test_certs;

use std::path::PathBuf;

pub use reload::ServerCerts;
pub use rustls;
pub use tokio_rustls;

/// ALPN id of HTTP/1.1, the only protocol the gateway speaks (WebSocket upgrades need it).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN id of HTTP/2, which gRPC requires.
pub const ALPN_H2: &[u8] = b"h2";

/// The PEM files a server's TLS is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be built. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: malformed PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: not a usable CA certificate: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    /// rustls refused the pair, e.g. a key that does not match the certificate.
    #[error("certificate and key: {0}")]
    Config(#[source] rustls::Error),
}
