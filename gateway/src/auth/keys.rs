//! Verification keys: what a key is (algorithm, optional `kid`, key material) and the
//! static ones read at start from `KURIR_JWT_SECRET` (comma-separated HS256 secrets) and
//! `KURIR_JWT_PUBLIC_KEY_FILE` (a PEM bundle of public keys).
//!
//! Each key is bound to exactly one algorithm, decided by its kind: a secret is HS256,
//! an RSA key RS256, a P-256 key ES256, an Ed25519 key EdDSA. A token is tried only
//! against keys of its header's `alg`, so an RSA public key can never be used as an
//! HMAC secret (the RS/HS confusion).

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey};

/// HS256 secrets shorter than this are refused: a short secret can be brute-forced
/// offline from any one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The algorithms Kurir verifies; every other `alg` (and `none`) is refused.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// Key id (`kid`), when the key came with one (JWKS).
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Why the configured keys cannot be used. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    ShortSecret { index: usize, len: usize },
    NoSecret,
    PublicKeyFile { path: PathBuf, reason: String },
    JwksUrl(String),
    HttpClient(String),
}

impl KeyError {
    /// The setting at fault.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::ShortSecret { .. } | Self::NoSecret => "KURIR_JWT_SECRET",
            Self::PublicKeyFile { .. } => "KURIR_JWT_PUBLIC_KEY_FILE",
            Self::JwksUrl(_) | Self::HttpClient(_) => "KURIR_JWT_JWKS_URL",
        }
    }

    /// What is wrong with it.
    pub fn reason(&self) -> String {
        match self {
            Self::ShortSecret { index, len } => format!(
                "secret #{index} is {len} bytes; HS256 secrets must be at least {MIN_SECRET_BYTES} bytes"
            ),
            Self::NoSecret => "empty (give one or more comma-separated secrets)".to_owned(),
            Self::PublicKeyFile { path, reason } => format!("{}: {reason}", path.display()),
            Self::JwksUrl(reason) => reason.clone(),
            Self::HttpClient(reason) => format!("cannot build the HTTP client: {reason}"),
        }
    }
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting(), self.reason())
    }
}

impl std::error::Error for KeyError {}

/// The secrets of `KURIR_JWT_SECRET`, split on commas, each checked for length.
///
/// # Errors
/// No secret, or one shorter than [`MIN_SECRET_BYTES`].
pub fn secrets(value: &str) -> Result<Vec<&str>, KeyError> {
    let secrets: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        return Err(KeyError::NoSecret);
    }
    for (i, s) in secrets.iter().enumerate() {
        if s.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret {
                index: i + 1,
                len: s.len(),
            });
        }
    }
    Ok(secrets)
}

/// HS256 keys from `KURIR_JWT_SECRET`.
///
/// # Errors
/// As [`secrets`].
pub fn hs256_keys(value: &str) -> Result<Vec<VerifyKey>, KeyError> {
    Ok(secrets(value)?
        .into_iter()
        .map(|s| VerifyKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(s.as_bytes()),
        })
        .collect())
}

/// Every public key of a PEM file (one or more `PUBLIC KEY` / `RSA PUBLIC KEY` blocks).
///
/// # Errors
/// The file cannot be read, holds no PEM block, or a block that is not an RSA, P-256 or
/// Ed25519 public key.
pub fn public_key_file(path: &Path) -> Result<Vec<VerifyKey>, KeyError> {
    let fail = |reason: String| KeyError::PublicKeyFile {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let blocks = pem::parse_many(&bytes).map_err(|e| fail(format!("not PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(fail("no PEM block".into()));
    }
    blocks
        .iter()
        .enumerate()
        .map(|(i, block)| {
            let key = match block.tag() {
                "PUBLIC KEY" | "RSA PUBLIC KEY" => public_key_pem(&pem::encode(block)),
                // A private key has no business on a gateway.
                tag => Err(format!("a {tag} block; give public keys only")),
            };
            key.map_err(|reason| fail(format!("key #{}: {reason}", i + 1)))
        })
        .collect()
}

/// One PEM public key and the algorithm its kind implies.
fn public_key_pem(pem: &str) -> Result<VerifyKey, String> {
    let pem = pem.as_bytes();
    let (key, alg) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (k, Algorithm::RS256)
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        // An uncompressed P-256 point is 65 bytes; P-384 and others are not ES256.
        let p256 = k
            .try_get_as_bytes()
            .is_ok_and(|b| b.len() == 65 && b[0] == 4);
        if !p256 {
            return Err("EC key on a curve other than P-256 (only ES256 is supported)".into());
        }
        (k, Algorithm::ES256)
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, Algorithm::EdDSA)
    } else {
        return Err("not an RSA, P-256 or Ed25519 public key".into());
    };
    Ok(VerifyKey {
        kid: None,
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_without_showing_them() {
        let err = secrets("0123456789abcdef0123456789abcdef,tooshort").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("KURIR_JWT_SECRET") && msg.contains("#2"),
            "{msg}"
        );
        assert!(msg.contains("8 bytes"), "{msg}");
        assert!(!msg.contains("tooshort"), "the secret leaked: {msg}");
        assert!(matches!(
            secrets("x"),
            Err(KeyError::ShortSecret { len: 1, .. })
        ));
        assert!(matches!(secrets(" , "), Err(KeyError::NoSecret)));
        assert_eq!(
            secrets("0123456789abcdef0123456789abcdef, fedcba9876543210fedcba9876543210 ")
                .unwrap()
                .len(),
            2
        );
    }
}
