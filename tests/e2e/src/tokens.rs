//! Who a test's clients are: user ids unique to the run and the tokens the gateways
//! under test accept.

use kurir_testkit::ClientToken;

use crate::JWT_SECRET;

/// A client token for `user` signed with [`JWT_SECRET`], `topics` as its claim.
pub fn token(user: &str, topics: &[&str], ttl_secs: i64) -> String {
    token_with_secret(user, topics, ttl_secs, JWT_SECRET)
}

/// Like [`token`], signed with `secret`.
pub fn token_with_secret(user: &str, topics: &[&str], ttl_secs: i64, secret: &str) -> String {
    ClientToken::new(user)
        .expires_in(ttl_secs)
        .topics(topics)
        .sign(secret)
}

/// A user id unique to this test run.
pub fn user(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}
