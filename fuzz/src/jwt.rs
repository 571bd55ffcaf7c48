//! The client token, checked before the upgrade, with an HS256 secret.
//!
//! Input: a byte choosing the mode, then either the token's text as it is (random
//! mode), or choices that build a token the way an issuer would (header, claims, right
//! or wrong key) and then damage it the way an attacker would (structured mode).
//! Whatever the bytes, an accepted token carries a valid HS256 signature by the secret,
//! a `sub` that is the user id returned and an `exp` that has not passed; a well-formed,
//! untouched token with good claims is accepted.

use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Unstructured;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::under_test::{self, Identity, TokenRefusal, TokenVerifier};

/// The secret the verifier under test holds (32 bytes, the least the gateway accepts).
pub const SECRET: &[u8; 32] = b"kurir-fuzz-secret-of-32-bytes!!!";

/// A key that is not it.
const WRONG: &[u8; 32] = b"kurir-fuzz-wrong-key-of-32-bytes";

thread_local! {
    static VERIFIER: TokenVerifier = TokenVerifier::hs256(SECRET);
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(rest);
        let _ = verify_and_check(&token);
    } else {
        // Running out of input builds a shorter token: nothing to skip.
        let _ = structured(&mut Unstructured::new(rest));
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verify `token`; if accepted, check what acceptance promises.
fn verify_and_check(token: &str) -> Result<Identity, TokenRefusal> {
    let verdict = VERIFIER.with(|v| v.verify(token));
    if let Ok(id) = &verdict {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "accepted {token:?}");
        let header = segment_json(parts[0]).expect("an accepted header is base64url JSON");
        assert_eq!(header["alg"], "HS256", "accepted {token:?}");
        let signature = URL_SAFE_NO_PAD
            .decode(parts[2])
            .expect("an accepted signature is base64url");
        assert_eq!(
            signature,
            sign(SECRET, &format!("{}.{}", parts[0], parts[1])),
            "accepted a token not signed with the secret: {token:?}"
        );
        let claims = segment_json(parts[1]).expect("accepted claims are base64url JSON");
        assert_eq!(claims["sub"].as_str(), Some(id.user.as_str()));
        assert!(under_test::is_user_id(&id.user));
        assert_eq!(claims["exp"].as_u64(), Some(id.expires_at));
        // One second of slack: the clock may tick between the verifier's read and ours.
        assert!(
            id.expires_at.saturating_add(1) > now(),
            "accepted an expired token: {token:?}"
        );
    }
    verdict
}

fn segment_json(segment: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn sign(key: &[u8], message: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Build a token from `u`'s choices, damage it (or not), verify it.
fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let (header, header_ok) = header(u)?;
    let (claims, claims_ok) = claims(u)?;
    let right_key = u.ratio(7, 8)?;
    let head = URL_SAFE_NO_PAD.encode(header.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{head}.{body}");
    let signature =
        URL_SAFE_NO_PAD.encode(sign(if right_key { SECRET } else { WRONG }, &signing_input));
    let token = format!("{signing_input}.{signature}");
    let (token, touched) = damage(u, token)?;
    let verdict = verify_and_check(&token);
    if header_ok && claims_ok && right_key && !touched {
        let id = verdict.unwrap_or_else(|e| panic!("refused a good token ({e:?}): {token}"));
        assert_eq!(Some(id.user.as_str()), claims["sub"].as_str());
    }
    Ok(())
}

/// A JOSE header and whether it is one the verifier must accept.
fn header(u: &mut Unstructured<'_>) -> arbitrary::Result<(Value, bool)> {
    let alg = *u.choose(&[
        "HS256", "HS256", "HS256", "none", "None", "HS384", "HS512", "RS256", "ES256", "EdDSA",
        "hs256", "HS256 ", "",
    ])?;
    let mut h = Map::new();
    let ok = alg == "HS256";
    if u.ratio(15, 16)? {
        h.insert("alg".into(), json!(alg));
    }
    if u.arbitrary()? {
        h.insert(
            "typ".into(),
            json!(*u.choose(&["JWT", "jwt", "at+jwt", ""])?),
        );
    }
    let mut ok = ok && h.contains_key("alg");
    if u.ratio(1, 8)? {
        h.insert("kid".into(), json!(u.arbitrary::<String>()?));
    }
    if u.ratio(1, 16)? {
        // `crit` names extensions a verifier must understand: it may refuse the token.
        h.insert("crit".into(), json!(["exp"]));
        ok = false;
    }
    if u.ratio(1, 16)? {
        h.insert(u.arbitrary::<String>()?, arbitrary_json(u, 2)?);
        ok = false;
    }
    Ok((Value::Object(h), ok))
}

/// Claims and whether they are ones the verifier must accept.
fn claims(u: &mut Unstructured<'_>) -> arbitrary::Result<(Value, bool)> {
    let mut c = Map::new();
    let mut ok = true;
    match u.int_in_range(0..=9)? {
        0 => ok = false,
        1 => {
            c.insert("sub".into(), json!(u.arbitrary::<String>()?));
            ok = false;
        }
        2 => {
            c.insert("sub".into(), arbitrary_json(u, 1)?);
            ok = false;
        }
        _ => {
            let sub = *u.choose(&["alice", "bob", "user-42", "a.b_c", "x"])?;
            c.insert("sub".into(), json!(sub));
        }
    }
    if let Some(sub) = c.get("sub").and_then(Value::as_str) {
        ok &= under_test::is_user_id(sub);
    }
    let now = now();
    match u.int_in_range(0..=9)? {
        0 => ok = false,
        1 => {
            c.insert("exp".into(), json!(now.saturating_sub(1)));
            ok = false;
        }
        2 => {
            c.insert("exp".into(), arbitrary_json(u, 1)?);
            ok = false;
        }
        3 => {
            c.insert("exp".into(), json!(u.arbitrary::<u64>()?));
            ok = false;
        }
        4 => {
            c.insert("exp".into(), json!(u64::MAX));
        }
        _ => {
            c.insert("exp".into(), json!(now + 3600));
        }
    }
    match u.int_in_range(0..=5)? {
        0 => {
            c.insert("topics".into(), arbitrary_json(u, 2)?);
            ok = false;
        }
        1 => {
            c.insert("topics".into(), json!(u.arbitrary::<Vec<String>>()?));
        }
        2 => {
            c.insert("topics".into(), json!(["news.*", "orders"]));
        }
        _ => {}
    }
    if u.ratio(1, 8)? {
        // A past `nbf` must not matter; a future one may be refused.
        let nbf = *u.choose(&[0, now.saturating_sub(10), now + 3600])?;
        ok &= nbf <= now;
        c.insert("nbf".into(), json!(nbf));
    }
    if u.ratio(1, 8)? {
        c.insert(u.arbitrary::<String>()?, arbitrary_json(u, 2)?);
        ok = false;
    }
    Ok((Value::Object(c), ok))
}

/// Some JSON value, nested at most `depth` deep.
fn arbitrary_json(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=6)? {
        0 => Value::Null,
        1 => json!(u.arbitrary::<bool>()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<f64>()?),
        4 => json!(u.arbitrary::<String>()?),
        5 if depth > 0 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| arbitrary_json(u, depth - 1))
                .collect::<arbitrary::Result<_>>()?,
        ),
        _ if depth > 0 => {
            let mut m = Map::new();
            for _ in 0..u.int_in_range(0..=3)? {
                m.insert(u.arbitrary()?, arbitrary_json(u, depth - 1)?);
            }
            Value::Object(m)
        }
        _ => Value::Null,
    })
}

/// The token with an attacker's edit, and whether it was edited at all.
fn damage(u: &mut Unstructured<'_>, token: String) -> arbitrary::Result<(String, bool)> {
    let mut bytes = token.into_bytes();
    let touched = match u.int_in_range(0..=11)? {
        0..=3 => false,
        4 => {
            // Flip bits of one byte.
            let i = u.choose_index(bytes.len())?;
            bytes[i] ^= u.int_in_range(1..=255)?;
            true
        }
        5 => {
            let cut = u.choose_index(bytes.len())?;
            bytes.truncate(cut);
            true
        }
        6 => {
            let at = u.choose_index(bytes.len() + 1)?;
            let insert = *u.choose(&[&b"="[..], b"==", b".", b" ", b"\n", b"+", b"/", b"\0"])?;
            bytes.splice(at..at, insert.iter().copied());
            true
        }
        7 => {
            // Strip the signature: `alg: none` style.
            let last = bytes.iter().rposition(|&b| b == b'.').unwrap_or(0);
            bytes.truncate(last + 1);
            true
        }
        8 => {
            // Re-encode a segment in the standard alphabet, with padding.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let parts: Vec<String> = text
                .split('.')
                .map(|p| {
                    URL_SAFE_NO_PAD
                        .decode(p)
                        .map_or_else(|_| p.to_owned(), |raw| STANDARD.encode(raw))
                })
                .collect();
            bytes = parts.join(".").into_bytes();
            true
        }
        9 => {
            // Swap the header and the claims.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut parts: Vec<&str> = text.split('.').collect();
            if parts.len() >= 2 {
                parts.swap(0, 1);
            }
            bytes = parts.join(".").into_bytes();
            true
        }
        10 => {
            bytes.extend_from_slice(b".");
            bytes.extend(u.arbitrary::<Vec<u8>>()?);
            true
        }
        _ => {
            let at = u.choose_index(bytes.len() + 1)?;
            let junk = u.arbitrary::<Vec<u8>>()?;
            bytes.splice(at..at, junk);
            true
        }
    };
    Ok((String::from_utf8_lossy(&bytes).into_owned(), touched))
}
