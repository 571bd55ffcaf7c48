//! What a development node prints once every listener is bound: where to point a
//! browser, a WebSocket client and a sender, with credentials that work as printed.

use std::net::SocketAddr;

use kurir_backends::UserId;
use kurir_gateway::auth::Verifier;

use super::credentials::JwtKeys;

/// Lifetime of the sample token printed at start.
const SAMPLE_TOKEN_SECONDS: u64 = 24 * 3600;

/// The node's addresses, as the banner shows them.
pub struct Addresses {
    pub ws: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

/// `alice`'s token for every topic, signed with a generated secret.
fn sample_token(secret: &str) -> String {
    UserId::parse("alice")
        .ok()
        .and_then(|alice| {
            Verifier::hs256(secret.as_bytes()).mint(&alice, &["*".to_owned()], SAMPLE_TOKEN_SECONDS)
        })
        .map_or_else(String::new, |(t, _)| t)
}

/// The banner: addresses, the API key (or where it is configured), the JWT secret and a
/// sample token when they were generated, and a `kurir send` to try.
pub fn render(at: &Addresses, key: &str, jwt: &JwtKeys) -> String {
    let host = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            format!("localhost:{}", a.port())
        } else {
            a.to_string()
        }
    };
    let (secret, token) = match jwt {
        JwtKeys::Generated(secret) => (
            secret.as_str(),
            format!(
                "{}\n\x20             (user alice, all topics, 24 h)",
                sample_token(secret)
            ),
        ),
        JwtKeys::Configured => (
            "(configured key in use: KURIR_JWT_SECRET, KURIR_JWT_PUBLIC_KEY_FILE or KURIR_JWT_JWKS_URL)",
            "(sign tokens with the configured key, e.g. `kurir token --user alice`; no /dev/token)".to_owned(),
        ),
    };
    // A placeholder where the key is not shown (configured) or not needed.
    let try_key = if key.starts_with('(') { "<key>" } else { key };
    format!(
        "\n  Kurir standalone (in-memory, development only)\n\n\
         \x20 demo page   http://{ws}/\n\
         \x20 WebSocket   ws://{ws}/ws?token=<JWT>\n\
         \x20 gRPC        {grpc}\n\
         \x20 metrics     http://{metrics}/metrics\n\n\
         \x20 API key     {key}\n\
         \x20 JWT secret  {secret}\n\
         \x20 token       {token}\n\n\
         \x20 try:  kurir send --endpoint http://{grpc} --api-key {try_key} \\\n\
         \x20         --user alice --title \"Registration approved\" --body \"Welcome aboard\" --ttl 3600\n",
        ws = host(at.ws),
        grpc = host(at.grpc),
        metrics = host(at.metrics),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Addresses {
        Addresses {
            ws: "127.0.0.1:8080".parse().unwrap(),
            grpc: "0.0.0.0:50051".parse().unwrap(),
            metrics: "127.0.0.1:9101".parse().unwrap(),
        }
    }

    #[test]
    fn a_generated_secret_is_printed_with_a_token_that_it_verifies() {
        let secret = "generated-secret-0123456789abcdef0123";
        let text = render(&at(), "kurir-dev-key", &JwtKeys::Generated(secret.into()));
        assert!(text.contains(secret), "{text}");
        assert!(
            text.contains("kurir send --endpoint http://localhost:50051 --api-key kurir-dev-key"),
            "{text}"
        );
        assert!(!text.contains("kurir-dispatcher"), "{text}");
        let token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token"))
            .map(str::trim)
            .unwrap();
        let id = Verifier::hs256(secret.as_bytes()).verify(token).unwrap();
        assert_eq!(id.user.as_str(), "alice");
    }

    #[test]
    fn configured_keys_are_not_shown() {
        let text = render(
            &at(),
            "(configured in KURIR_API_KEYS)",
            &JwtKeys::Configured,
        );
        assert!(text.contains("configured key in use"), "{text}");
        assert!(text.contains("--api-key <key>"), "{text}");
        assert!(text.contains("kurir token"), "{text}");
    }
}
