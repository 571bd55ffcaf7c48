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
/// (`redis://user:password@host`, `nats://token@host`): `Debug` and `Display` mask them.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl(String);

impl ServerUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `text` with every credential of this URL replaced by `***`: for messages of
    /// parsers that may quote the URL, or a part of it, back.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for piece in self.0.split("://").skip(1) {
            let Some(at) = piece.rfind('@') else { continue };
            let userinfo = &piece[..at];
            let secret = userinfo.split_once(':').map_or(userinfo, |(_, pass)| pass);
            if secret.is_empty() {
                continue;
            }
            out = out.replace(userinfo, &mask_userinfo(userinfo));
            out = out.replace(secret, "***");
            let decoded = percent_encoding::percent_decode_str(secret).decode_utf8_lossy();
            if !decoded.is_empty() {
                out = out.replace(decoded.as_ref(), "***");
            }
        }
        out
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
        std::fmt::Debug::fmt(&mask_credentials(&self.0), f)
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_credentials(&self.0))
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; a bare token becomes
/// `***`. The credentials of each `scheme://` run up to the LAST `@` before the next
/// `scheme://`, not to the first `/`: a password holding `/`, `?`, `#`, `@`, `:` or `,`
/// (which the URL should have percent-encoded, but often does not) stays hidden. A path
/// or query holding `@` is masked too, which costs nothing on a Redis or NATS URL. Only
/// a password holding `://` itself must be percent-encoded to be masked whole.
pub(crate) fn mask_credentials(urls: &str) -> String {
    let mut pieces = urls.split("://");
    let mut out = String::with_capacity(urls.len());
    out.push_str(pieces.next().unwrap_or_default());
    for piece in pieces {
        out.push_str("://");
        match piece.rfind('@') {
            Some(at) => {
                out.push_str(&mask_userinfo(&piece[..at]));
                out.push_str(&piece[at..]);
            }
            None => out.push_str(piece),
        }
    }
    out
}

/// `user:secret` → `user:***`; `token` → `***`.
fn mask_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    }
}

/// The credentials of one server URL, split off: `scheme://userinfo@rest` →
/// (`scheme://rest`, user, password), user and password percent-decoded. `userinfo` runs
/// to the last `@`, so raw `/`, `@` and `:` in a password are read as the password.
/// Without `:` the userinfo is returned as the user (`nats://token@host` is a token).
pub(crate) fn split_credentials(url: &str) -> (String, Option<UrlCredentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let Some(at) = rest.rfind('@') else {
        return (url.to_owned(), None);
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = match userinfo.split_once(':') {
        Some((user, password)) => UrlCredentials {
            user: decode(user),
            password: Some(Secret::from(decode(password))),
        },
        None => UrlCredentials {
            user: decode(userinfo),
            password: None,
        },
    };
    (format!("{scheme}://{host}"), Some(credentials))
}

/// User and password taken from a server URL; `Debug` hides the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlCredentials {
    pub user: String,
    pub password: Option<Secret>,
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
            ("redis://host/path", "redis://host/path"),
            (
                "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001",
                "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(format!("{:?}", ServerUrl::from(url)), format!("{shown:?}"));
            assert_eq!(ServerUrl::from(url).to_string(), shown);
        }
        assert_eq!(format!("{:?}", Secret::from("hunter2")), "***");
    }

    /// Reserved characters a password should have had percent-encoded, raw: the mask
    /// still covers all of it (it used to stop at the first `/`).
    #[test]
    fn passwords_with_reserved_characters_are_masked_whole() {
        for password in ["hun/ter2", "hun@ter2", "hun:ter2", "a/b@c:d?e#f", "ter2,b"] {
            for url in [
                format!("redis://app:{password}@redis:6379/0"),
                format!("rediss-cluster://app:{password}@r1:7000?node=r2:7001"),
                format!("nats://app:{password}@n1:4222,nats://app:{password}@n2:4222"),
                format!("tls://{password}@n1:4222"),
            ] {
                let url = ServerUrl::from(url);
                for shown in [format!("{url:?}"), url.to_string()] {
                    assert!(!shown.contains("ter2"), "{shown}");
                    assert!(!shown.contains(password), "{shown}");
                    assert!(shown.contains("***"), "{shown}");
                }
            }
        }
    }

    #[test]
    fn redact_removes_raw_and_decoded_passwords_from_messages() {
        let url = ServerUrl::from("redis://app:p%2Fss%40word@redis:6379");
        let msg = "bad node app:p%2Fss%40word@redis, password p/ss@word";
        let shown = url.redact(msg);
        assert!(
            !shown.contains("ss%40word") && !shown.contains("ss@word"),
            "{shown}"
        );
        let token = ServerUrl::from("nats://s3cr3t-token@n1:4222");
        assert_eq!(token.redact("auth s3cr3t-token failed"), "auth *** failed");
    }

    #[test]
    fn split_credentials_reads_to_the_last_at() {
        let (clean, creds) = split_credentials("redis://app:p/a@s:s@h:6379/0");
        assert_eq!(clean, "redis://h:6379/0");
        let creds = creds.unwrap();
        assert_eq!(creds.user, "app");
        assert_eq!(creds.password.unwrap().expose(), "p/a@s:s");
        let (_, creds) = split_credentials("redis://app:p%2Fa%40s%3As@h");
        assert_eq!(creds.unwrap().password.unwrap().expose(), "p/a@s:s");
        let (clean, creds) = split_credentials("nats://tok@h:4222");
        assert_eq!(clean, "nats://h:4222");
        assert_eq!(
            creds.unwrap(),
            UrlCredentials {
                user: "tok".into(),
                password: None
            }
        );
        assert_eq!(
            split_credentials("nats://h:4222"),
            ("nats://h:4222".into(), None)
        );
    }
}
