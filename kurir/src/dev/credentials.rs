//! Development credentials: generated only where nothing is configured, so a node
//! started with real keys never mints or prints anything.

use std::net::{Ipv4Addr, SocketAddr};

/// Random bytes in a generated secret or API key (hex-encoded: twice as many characters,
/// well over the 32-byte minimum both checks ask for).
pub const GENERATED_SECRET_BYTES: usize = 32;

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A fresh development API key.
pub fn generated_api_key() -> String {
    format!("kurir-dev-{}", random_hex(GENERATED_SECRET_BYTES))
}

/// Where client tokens' keys come from, as the banner tells it.
pub enum JwtKeys {
    /// Generated at start: printed, with a sample token and `GET /dev/token`.
    Generated(String),
    /// Configured by the operator: used, never printed, nothing minted.
    Configured,
}

/// `addr`, or the same port on 127.0.0.1 when `addr` is the any-address and `var` is
/// not set: a development node is reachable from this machine only, unless asked.
pub fn loopback_unless_set(addr: SocketAddr, var: &str) -> SocketAddr {
    if addr.ip().is_unspecified() && std::env::var_os(var).is_none() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_any_address_narrows_to_loopback_unless_its_variable_is_set() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let unset = "KURIR_TEST_VARIABLE_NOBODY_SETS";
        assert_eq!(
            loopback_unless_set(any, unset),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        // An address the operator chose stays as it is.
        let chosen: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        assert_eq!(loopback_unless_set(chosen, unset), chosen);
        // A variable that is set (PATH always is) keeps the any-address.
        assert_eq!(loopback_unless_set(any, "PATH"), any);
    }

    #[test]
    fn generated_credentials_are_long_enough() {
        assert!(random_hex(GENERATED_SECRET_BYTES).len() >= 32);
        assert!(generated_api_key().len() >= 32);
    }
}
