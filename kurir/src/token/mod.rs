//! `kurir token`: a client JWT, printed alone on one line so that scripts can take it
//! as is (`TOKEN=$(kurir token --user alice)`). It is signed with the keys the gateway
//! verifies with (`KURIR_JWT_SECRET`, or the private half of `KURIR_JWT_PUBLIC_KEY_FILE`)
//! and carries what the gateway requires: `sub`, `exp`, and `iss` / `aud` when the
//! gateway is configured to check them.

pub mod signer;

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use jsonwebtoken::{encode, Algorithm, Header};
use kurir_backends::{Secret, Topic, UserId};
use serde::Serialize;

use self::signer::Signer;

/// Default lifetime of a token: one hour.
pub const DEFAULT_TTL_SECONDS: u64 = 3600;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id the token is for (its `sub`).
    #[arg(long = "user", value_name = "USER_ID")]
    pub user: String,

    /// Topics the user may subscribe to, comma-separated: names, `prefix.*` patterns or
    /// `*` (all). None = no topic subscriptions.
    #[arg(long, value_name = "TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,

    /// Seconds until the token expires.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TTL_SECONDS)]
    pub ttl: u64,

    /// HS256 secret(s), comma-separated as for the gateway; the first signs.
    #[arg(long, env = "KURIR_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM private key to sign with instead of a secret: RSA (RS256), P-256 (ES256) or
    /// Ed25519 (EdDSA), PKCS#8 or PKCS#1.
    #[arg(long, value_name = "PEM")]
    pub private_key_file: Option<PathBuf>,

    /// Key id put in the header (`kid`), for gateways that find keys in a JWKS.
    #[arg(long, requires = "private_key_file")]
    pub kid: Option<String>,

    /// `iss` claim; the gateway requires it when it has `KURIR_JWT_ISSUER`.
    #[arg(long, env = "KURIR_JWT_ISSUER")]
    pub issuer: Option<String>,

    /// `aud` claim; the gateway requires it when it has `KURIR_JWT_AUDIENCE`.
    #[arg(long, env = "KURIR_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// Why no token was made. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--user: {0}")]
    User(kurir_backends::InvalidId),
    #[error("--topics: `{topic}`: {reason}")]
    Topic {
        topic: String,
        reason: kurir_backends::InvalidId,
    },
    #[error("--ttl: must be at least 1 second")]
    Ttl,
    #[error("no signing key: set KURIR_JWT_SECRET or pass --private-key-file")]
    NoKey,
    #[error(transparent)]
    Secret(#[from] kurir_gateway::auth::keys::KeyError),
    #[error("--private-key-file: {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("cannot sign with this key: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("writing the token: {0}")]
    Output(#[from] std::io::Error),
}

impl TokenError {
    /// Whether the command line or the configuration is at fault (`EX_USAGE`), not the
    /// machine.
    pub fn is_usage(&self) -> bool {
        !matches!(self, Self::Output(_))
    }
}

#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    topics: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// A topic pattern as the gateway matches it against a subscription: `*`, `prefix.*`
/// with a valid topic as prefix, or a valid topic name.
fn check_topic(pattern: &str) -> Result<(), TokenError> {
    if pattern == "*" {
        return Ok(());
    }
    let name = pattern.strip_suffix(".*").unwrap_or(pattern);
    Topic::parse(name)
        .map(drop)
        .map_err(|reason| TokenError::Topic {
            topic: pattern.to_owned(),
            reason,
        })
}

/// The signed token for `args`, issued at `now` (Unix seconds).
///
/// # Errors
/// A bad user id, topic or TTL, no usable key, or a key that cannot sign.
pub fn mint(args: &TokenArgs, now: u64) -> Result<String, TokenError> {
    let user = UserId::parse(&args.user).map_err(TokenError::User)?;
    for topic in &args.topics {
        check_topic(topic)?;
    }
    if args.ttl == 0 {
        return Err(TokenError::Ttl);
    }
    // A key file named on the command line wins over a secret in the environment.
    let Signer { alg, key } = match (&args.private_key_file, &args.jwt_secret) {
        (Some(path), _) => signer::from_pem_file(path)?,
        (None, Some(secret)) => signer::from_secrets(secret.expose())?,
        (None, None) => return Err(TokenError::NoKey),
    };
    let mut header = Header::new(alg);
    header.kid = args.kid.clone().filter(|_| alg != Algorithm::HS256);
    let claims = Claims {
        sub: user.as_str(),
        iat: now,
        exp: now.saturating_add(args.ttl),
        topics: &args.topics,
        iss: args.issuer.as_deref().filter(|s| !s.is_empty()),
        aud: args.audience.as_deref().filter(|s| !s.is_empty()),
    };
    encode(&header, &claims, &key).map_err(TokenError::Sign)
}

/// `kurir token`: print the token alone on one line.
///
/// # Errors
/// As [`mint`].
pub fn run(args: &TokenArgs) -> Result<(), TokenError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = mint(args, now)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}")?;
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests;
