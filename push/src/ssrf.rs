//! The guard on Web Push endpoints. A subscription's endpoint comes from a browser, so
//! anyone can register any URL; Kurir only connects to known push services over HTTPS,
//! and never to an internal address unless that exact origin was allowed on purpose.
//! Names are resolved once by [`GuardedResolver`], which refuses internal addresses, and
//! the connection goes to exactly the addresses it checked (no DNS-rebinding window).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use thiserror::Error;

/// The browsers' push services (Chrome and Edge through FCM, Firefox, Windows, Safari).
pub const DEFAULT_ALLOWED_ORIGINS: &str = "https://fcm.googleapis.com,https://android.googleapis.com,https://updates.push.services.mozilla.com,https://*.push.services.mozilla.com,https://*.notify.windows.com,https://web.push.apple.com";

/// Why an endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SsrfError {
    #[error("endpoint is not a URL")]
    NotAUrl,
    #[error("endpoint scheme {0} is not https")]
    Scheme(String),
    #[error("endpoint origin is not allowed")]
    NotAllowed,
    #[error("endpoint address {0} is internal")]
    InternalAddress(IpAddr),
    #[error("endpoint host does not resolve")]
    Unresolved,
    #[error("allowed origin {0:?} is not scheme://host[:port]")]
    BadPattern(String),
}

/// One allowed origin; the host may start with `*.` to allow every subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    host: HostPattern,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: a subdomain of `example.com`, not `example.com` itself.
    Suffix(String),
}

impl FromStr for OriginPattern {
    type Err = SsrfError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SsrfError::BadPattern(text.to_owned());
        let (scheme, rest) = text.trim().split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(bad());
        }
        let rest = rest.trim_end_matches('/');
        if let Some(suffix) = rest.strip_prefix("*.") {
            let url = Url::parse(&format!("{scheme}://{suffix}")).map_err(|_| bad())?;
            let host = url.host_str().ok_or_else(bad)?.to_owned();
            let port = url.port_or_known_default().ok_or_else(bad)?;
            return Ok(Self {
                scheme,
                host: HostPattern::Suffix(host),
                port,
            });
        }
        let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|_| bad())?;
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            return Err(bad());
        }
        let host = url.host_str().ok_or_else(bad)?.to_owned();
        let port = url.port_or_known_default().ok_or_else(bad)?;
        Ok(Self {
            scheme,
            host: HostPattern::Exact(host),
            port,
        })
    }
}

impl OriginPattern {
    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme == scheme
            && self.port == port
            && match &self.host {
                HostPattern::Exact(exact) => exact == host,
                HostPattern::Suffix(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            }
    }
}

/// The origins Web Push endpoints may point at (`KURIR_WEBPUSH_ALLOWED_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginAllowlist {
    patterns: Vec<OriginPattern>,
}

impl FromStr for OriginAllowlist {
    type Err = SsrfError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let patterns = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(OriginPattern::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }
}

impl Default for OriginAllowlist {
    fn default() -> Self {
        DEFAULT_ALLOWED_ORIGINS
            .parse()
            .expect("the default origins parse")
    }
}

impl OriginAllowlist {
    /// Checks a subscription endpoint: a URL whose origin is allowed, over https unless
    /// an `http://` origin is allowed exactly, and not an internal IP literal unless its
    /// exact origin is allowed. Names are checked again when resolved.
    ///
    /// # Errors
    /// The reason the endpoint is refused.
    pub fn check(&self, endpoint: &str) -> Result<Url, SsrfError> {
        let url = Url::parse(endpoint).map_err(|_| SsrfError::NotAUrl)?;
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(SsrfError::Scheme(scheme.to_owned()));
        }
        let host = url.host_str().ok_or(SsrfError::NotAUrl)?;
        let port = url.port_or_known_default().ok_or(SsrfError::NotAUrl)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SsrfError::NotAllowed);
        }
        let exact = self.exact_origin(scheme, host, port);
        if scheme == "http" && !exact {
            return Err(SsrfError::Scheme(scheme.to_owned()));
        }
        if !exact && !self.patterns.iter().any(|p| p.matches(scheme, host, port)) {
            return Err(SsrfError::NotAllowed);
        }
        if let Some(ip) = literal_ip(&url) {
            if is_internal(ip) && !exact {
                return Err(SsrfError::InternalAddress(ip));
            }
        }
        Ok(url)
    }

    fn exact_origin(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.patterns.iter().any(|p| {
            matches!(&p.host, HostPattern::Exact(exact) if exact == host)
                && p.scheme == scheme
                && p.port == port
        })
    }

    /// Whether a name was allowed exactly (so it may resolve to an internal address).
    fn allows_internal(&self, host: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| matches!(&p.host, HostPattern::Exact(exact) if exact == host))
    }

    /// Resolves `host` and refuses it if any of its addresses is internal (unless the
    /// host was allowed exactly). Port 0: the connector sets the URL's port.
    ///
    /// # Errors
    /// [`SsrfError::InternalAddress`] or [`SsrfError::Unresolved`].
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, SsrfError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|_| SsrfError::Unresolved)?
            .collect();
        if addrs.is_empty() {
            return Err(SsrfError::Unresolved);
        }
        if !self.allows_internal(host) {
            if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
                return Err(SsrfError::InternalAddress(bad.ip()));
            }
        }
        Ok(addrs)
    }
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// The reqwest resolver of the Web Push client: every name goes through
/// [`OriginAllowlist::resolve`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allowlist: Arc<OriginAllowlist>,
}

impl GuardedResolver {
    #[must_use]
    pub fn new(allowlist: Arc<OriginAllowlist>) -> Self {
        Self { allowlist }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowlist = Arc::clone(&self.allowlist);
        Box::pin(async move {
            let addrs = allowlist.resolve(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Addresses a push endpoint must not reach: loopback, private, link-local (the cloud
/// metadata service among them), unique-local, unspecified, shared, multicast, reserved.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let first = ip.segments()[0];
    let nat64 = ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || (first & 0xffc0) == 0xfec0 // site local (deprecated)
        || (nat64 && {
            let [.., a, b, c, d] = ip.octets();
            internal_v4(Ipv4Addr::new(a, b, c, d))
        })
}
