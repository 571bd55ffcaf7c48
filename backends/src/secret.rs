//! Values that must never reach a log: secrets, and server URLs that may carry
//! credentials. Both binaries' configurations use them, so `?config` is safe to log.

/// A secret string: `Debug` prints `***`, so `?config` is safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A server URL (or comma-separated URLs) that may carry credentials
/// (`redis://:password@host`, `nats://token@host`): `Debug` masks them.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl(String);

impl ServerUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ServerUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ServerUrl {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked: Vec<String> = self.0.split(',').map(mask_credentials).collect();
        std::fmt::Debug::fmt(&masked.join(","), f)
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; a bare token becomes `***`.
fn mask_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{userinfo}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_do_not_leak_through_debug() {
        let cases = [
            ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
            (
                "rediss://app:hunter2@redis:6380",
                "rediss://app:***@redis:6380",
            ),
            ("nats://hunter2@nats:4222", "nats://***@nats:4222"),
            (
                "nats://a:hunter2@n1:4222,nats://a:hunter2@n2:4222",
                "nats://a:***@n1:4222,nats://a:***@n2:4222",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://host/path@x", "redis://host/path@x"),
        ];
        for (url, shown) in cases {
            assert_eq!(format!("{:?}", ServerUrl::from(url)), format!("{shown:?}"));
        }
        assert_eq!(format!("{:?}", Secret::from("hunter2")), "***");
    }
}
