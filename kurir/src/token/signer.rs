//! The key a token is signed with, and its algorithm: the first secret of
//! `KURIR_JWT_SECRET` (HS256; the others are older secrets still accepted while a
//! rotation completes), or a PEM private key whose kind decides the algorithm, as the
//! gateway decides it for the matching public key: RSA → RS256, P-256 → ES256,
//! Ed25519 → EdDSA.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey};
use kurir_gateway::auth::keys::{self, KeyError};

use super::TokenError;

/// A key ready to sign, with the algorithm the gateway expects of it.
pub struct Signer {
    pub alg: Algorithm,
    pub key: EncodingKey,
}

/// The first (current) secret of a `KURIR_JWT_SECRET` value, checked as the gateway
/// checks the whole list.
///
/// # Errors
/// No secret, or one shorter than the gateway accepts.
pub fn from_secrets(value: &str) -> Result<Signer, KeyError> {
    let secrets = keys::secrets(value)?;
    let current = secrets.first().ok_or(KeyError::NoSecret)?;
    Ok(Signer {
        alg: Algorithm::HS256,
        key: EncodingKey::from_secret(current.as_bytes()),
    })
}

/// A PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM private key.
///
/// # Errors
/// The file cannot be read, or holds no RSA, EC or Ed25519 private key. (An EC key on
/// another curve than P-256 is found out when signing.)
pub fn from_pem_file(path: &Path) -> Result<Signer, TokenError> {
    let fail = |reason: String| TokenError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return Err(fail(
            "a SEC1 EC key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`".into(),
        ));
    }
    // The PEM parser takes public keys too; signing needs the private half.
    if !text.contains("-----BEGIN PRIVATE KEY-----")
        && !text.contains("-----BEGIN RSA PRIVATE KEY-----")
    {
        return Err(fail(
            "no PRIVATE KEY block (a public key cannot sign)".into(),
        ));
    }
    let (alg, key) = if let Ok(k) = EncodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, k)
    } else if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, k)
    } else if let Ok(k) = EncodingKey::from_ed_pem(&pem) {
        (Algorithm::EdDSA, k)
    } else {
        return Err(fail(
            "not an RSA, P-256 or Ed25519 private key in PEM (PKCS#8 or PKCS#1)".into(),
        ));
    };
    Ok(Signer { alg, key })
}
