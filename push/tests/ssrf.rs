//! The Web Push endpoint guard.

use std::net::IpAddr;

use kurir_push::ssrf::{is_internal, OriginAllowlist, SsrfError};

#[test]
fn the_default_allowlist_takes_the_browser_push_services() {
    let allow = OriginAllowlist::default();
    for endpoint in [
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://updates.push.services.mozilla.com/wpush/v2/abc",
        "https://wns2-by3p.notify.windows.com/w/?token=abc",
        "https://web.push.apple.com/QGx-abc",
    ] {
        assert!(allow.check(endpoint).is_ok(), "{endpoint}");
    }
}

#[test]
fn anything_else_is_refused() {
    let allow = OriginAllowlist::default();
    let cases = [
        (
            "http://fcm.googleapis.com/fcm/send/abc",
            SsrfError::Scheme("http".into()),
        ),
        (
            "ftp://fcm.googleapis.com/x",
            SsrfError::Scheme("ftp".into()),
        ),
        (
            "https://fcm.googleapis.com.evil.example/x",
            SsrfError::NotAllowed,
        ),
        ("https://notify.windows.com/x", SsrfError::NotAllowed),
        ("https://evilnotify.windows.com/x", SsrfError::NotAllowed),
        ("https://fcm.googleapis.com:8443/x", SsrfError::NotAllowed),
        (
            "https://user:pw@fcm.googleapis.com/x",
            SsrfError::NotAllowed,
        ),
        ("https://127.0.0.1/x", SsrfError::NotAllowed),
        ("https://169.254.169.254/latest", SsrfError::NotAllowed),
        ("https://[::1]/x", SsrfError::NotAllowed),
        ("not a url", SsrfError::NotAUrl),
    ];
    for (endpoint, want) in cases {
        assert_eq!(allow.check(endpoint).err(), Some(want), "{endpoint}");
    }
}

#[test]
fn an_internal_origin_passes_only_when_allowed_exactly() {
    let allow: OriginAllowlist = "http://127.0.0.1:8080,https://*.push.example"
        .parse()
        .unwrap();
    assert!(allow.check("http://127.0.0.1:8080/push/1").is_ok());
    assert_eq!(
        allow.check("http://127.0.0.1:8081/push/1").err(),
        Some(SsrfError::Scheme("http".into()))
    );
    assert_eq!(
        allow.check("https://127.0.0.1:8080/push/1").err(),
        Some(SsrfError::NotAllowed)
    );
    assert!(allow.check("https://eu.push.example/x").is_ok());
    assert_eq!(
        allow.check("https://push.example/x").err(),
        Some(SsrfError::NotAllowed)
    );
}

#[test]
fn malformed_origins_are_setting_errors() {
    for bad in [
        "fcm.googleapis.com",
        "https://fcm.googleapis.com/path",
        "gopher://x",
    ] {
        assert!(
            matches!(
                bad.parse::<OriginAllowlist>(),
                Err(SsrfError::BadPattern(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn internal_addresses() {
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
    ] {
        assert!(is_internal(ip.parse::<IpAddr>().unwrap()), "{ip}");
    }
    for ip in [
        "142.250.74.10",
        "17.188.128.1",
        "2a00:1450:4001:80b::200a",
        "::ffff:8.8.8.8",
    ] {
        assert!(!is_internal(ip.parse::<IpAddr>().unwrap()), "{ip}");
    }
}

#[tokio::test]
async fn a_name_resolving_to_an_internal_address_is_refused() {
    let allow = OriginAllowlist::default();
    assert!(
        matches!(allow.resolve("localhost").await, Err(SsrfError::InternalAddress(ip)) if ip.is_loopback())
    );
    let allow_exactly: OriginAllowlist = "http://localhost:9000".parse().unwrap();
    let addrs = allow_exactly
        .resolve("localhost")
        .await
        .expect("allowed on purpose");
    assert!(addrs.iter().all(|a| a.ip().is_loopback()));
}
