//! ② The first step of a keyed `Send`: claiming its idempotency key.
//!
//! # Scope and fingerprint
//! A key belongs to its caller: [`Scope`] is a stable, non-secret name of the API key
//! that authenticated the call (the first 16 hex digits of its SHA-256; the key itself
//! is never stored), or one shared scope under `--insecure-no-auth`. Two callers
//! choosing the same key get two independent claims. Each claim also remembers the
//! [`fingerprint`] of its request (method, recipients, notification, TTL): reusing a key
//! for a *different* request is refused with `FAILED_PRECONDITION`, in either phase,
//! and never answered with the other request's id.
//!
//! # Phases
//! A keyed `Send` claims its key *pending* for [`PENDING_CLAIM_TTL`] and *settles* it for
//! [`IDEMPOTENCY_TTL`] at the point the notification is safe: once appended (stored) or
//! once published (live). Only a settled key answers a retry with the first id, so a
//! caller is never told that a send succeeded before it has. A retry of the same request
//! that finds the key
//! - settled: gets the first id and delivers nothing;
//! - pending (the first call is still running, here or on another dispatcher): waits up
//!   to [`IN_PROGRESS_WAIT`] for it to settle (→ the first id) or give the key up (→ the
//!   retry goes through as a new send); still pending after that, it fails with
//!   `ABORTED`, and the caller retries later.
//!
//! # Failure rules
//! - A send that fails before anything could reach a user gives its pending key up
//!   ([`ClaimGuard::release`]) so a retry can go through. A call cancelled before that
//!   (timeout, client gone) gives it up in the background; a dispatcher that dies leaves
//!   it to expire after [`PENDING_CLAIM_TTL`].
//! - A settle that fails is logged and the call still succeeds (the work is done): the
//!   key then expires after [`PENDING_CLAIM_TTL`], and a retry after that sends again, a
//!   duplicate rather than a loss.

use std::sync::Arc;
use std::time::Duration;

use kurir_backends::inbox::{Claim, Claimant, Fingerprint, IdempotencyKey, Inbox};
use kurir_backends::NotificationId;
use prost::Message;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::SendCommand;
use crate::error::DispatchError;
use crate::limits::MAX_REQUEST_TIMEOUT;

/// How long an idempotency key keeps naming the first notification sent with it.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a claim stays pending if its call neither settles nor gives it up (the
/// dispatcher died mid-call). Longer than a call may run (`KURIR_REQUEST_TIMEOUT_MS`,
/// 10 s by default), so a key is never freed under a call still running; a cancelled
/// call gives its key up at once.
pub const PENDING_CLAIM_TTL: Duration = Duration::from_secs(30);
const _: () = assert!(
    MAX_REQUEST_TIMEOUT.as_millis() + 1000 < PENDING_CLAIM_TTL.as_millis(),
    "a call may not outlive its pending claim"
);

/// How long a `Send` whose key is pending under another call waits for that call to
/// settle or give the key up, before failing with `ABORTED`.
pub const IN_PROGRESS_WAIT: Duration = Duration::from_secs(1);
/// How often it looks meanwhile.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(50);

/// The shared scope of `--insecure-no-auth`: not 16 hex digits, so it never meets an API
/// key's scope.
const UNAUTHENTICATED_SCOPE: &str = "noauth";

/// Whose idempotency keys a call uses: a stable, non-secret name of its credential.
/// The auth layer puts one in every authenticated request's extensions; every way of
/// authenticating must, or keyed `Send`s fail rather than share a scope.
#[derive(Clone, PartialEq, Eq)]
pub struct Scope(Arc<str>);

impl Scope {
    /// The first 16 hex digits (64 bits) of SHA-256(`api_key`): stable across restarts
    /// and replicas, different per key, and useless for recovering a key of 32 bytes or
    /// more.
    pub fn of_api_key(api_key: &[u8]) -> Self {
        let digest = Sha256::digest(api_key);
        Self(Arc::from(hex(&digest[..8])))
    }

    /// `cert-` and the first 16 hex digits of SHA-256 of a client's leaf certificate (DER):
    /// each certificate is its own scope, so a retry after the certificate was renewed is
    /// a new send (a duplicate at worst, never a loss).
    pub fn of_client_certificate(der: &[u8]) -> Self {
        let digest = Sha256::digest(der);
        Self(Arc::from(format!("cert-{}", hex(&digest[..8]))))
    }

    /// The one scope every caller shares under `--insecure-no-auth`.
    pub fn unauthenticated() -> Self {
        Self(Arc::from(UNAUTHENTICATED_SCOPE))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a `Send` asks for, hashed: method, recipients (as a set: duplicates were already
/// dropped, order does not matter), notification (its `data` map in key order, since
/// protobuf does not fix the order of map entries) and TTL. The idempotency key itself
/// is not part of it. Each part is length-prefixed, so no two requests share an input.
pub fn fingerprint(cmd: &SendCommand) -> Fingerprint {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    part(b"kurir.v1.Dispatcher/Send");
    let mut users: Vec<&str> = cmd.users.iter().map(|u| u.as_str()).collect();
    users.sort_unstable();
    part(&(users.len() as u64).to_be_bytes());
    for user in users {
        part(user.as_bytes());
    }
    let mut notification = cmd.notification.clone();
    let mut data: Vec<(String, String)> =
        std::mem::take(&mut notification.data).into_iter().collect();
    data.sort_unstable();
    part(&notification.encode_to_vec());
    part(&(data.len() as u64).to_be_bytes());
    for (k, v) in &data {
        part(k.as_bytes());
        part(v.as_bytes());
    }
    part(&cmd.ttl_seconds.to_be_bytes());
    // Only when set, so a request without them keeps the fingerprint it always had.
    if let Some(fallback) = &cmd.fallback {
        part(b"fallback");
        let mut channels: Vec<i32> = fallback.channels.iter().map(|p| *p as i32).collect();
        channels.sort_unstable();
        for channel in channels {
            part(&channel.to_be_bytes());
        }
        part(&fallback.after_ms.to_be_bytes());
    }
    if cmd.send_at != 0 {
        part(b"send_at");
        part(&cmd.send_at.to_be_bytes());
    }
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    Fingerprint(out)
}

/// What a `Send` may do after looking at its idempotency key.
pub(super) enum Admission {
    /// Go ahead. With a key, the guard holds it pending until it is settled or given up.
    Send(Option<ClaimGuard>),
    /// This request was sent before under the key: answer with that id, deliver nothing.
    Repeat(NotificationId),
}

/// Claim `cmd`'s key (if any) in `scope` for `id`. While another call of the same
/// request holds it pending, wait for that call to settle it (`Repeat`) or give it up
/// (now ours), for at most [`IN_PROGRESS_WAIT`].
///
/// # Errors
/// `Backend` when a claim fails; `SendInProgress` when the key is still pending;
/// `IdempotencyKeyReused` when the key is held for a different request.
pub(super) async fn admit(
    inbox: &Arc<dyn Inbox>,
    scope: &Scope,
    cmd: &SendCommand,
    id: NotificationId,
) -> Result<Admission, DispatchError> {
    let Some(key) = &cmd.idempotency_key else {
        return Ok(Admission::Send(None));
    };
    // Every `Scope` constructor makes a valid one; a failure here is a bug, not the caller's.
    let key = IdempotencyKey::new(scope.as_str(), key).map_err(|_| DispatchError::Unscoped)?;
    let by = Claimant {
        id,
        fingerprint: fingerprint(cmd),
    };
    let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
    loop {
        match inbox.claim(&key, by, PENDING_CLAIM_TTL).await? {
            Claim::New => {
                return Ok(Admission::Send(Some(ClaimGuard::new(
                    inbox.clone(),
                    key,
                    by,
                ))))
            }
            Claim::Existing(first) => {
                debug!(%first, "idempotency key seen before; nothing delivered");
                return Ok(Admission::Repeat(first));
            }
            Claim::OtherRequest => {
                debug!("idempotency key held for a different request; refused");
                return Err(DispatchError::IdempotencyKeyReused);
            }
            Claim::InProgress(first) => {
                if tokio::time::Instant::now() + IN_PROGRESS_POLL > deadline {
                    debug!(%first, "idempotency key still in progress; giving up");
                    return Err(DispatchError::SendInProgress);
                }
                debug!(%first, "idempotency key in progress; waiting for it");
                tokio::time::sleep(IN_PROGRESS_POLL).await;
            }
        }
    }
}

/// An idempotency key this call claimed, pending. Settled once the notification is
/// safe, given up when the send fails before anything could reach a user. If the call is
/// cancelled before either (client gone, timeout), the key is given up in the
/// background; cancelled while settling, it is settled in the background.
pub(super) struct ClaimGuard {
    inbox: Arc<dyn Inbox>,
    key: IdempotencyKey,
    by: Claimant,
    phase: Phase,
}

/// Where a [`ClaimGuard`] is, for what its `Drop` still owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing reached a user yet: give the key up.
    Pending,
    /// The notification is safe: settle the key.
    Safe,
    /// Settled or given up.
    Done,
}

impl ClaimGuard {
    fn new(inbox: Arc<dyn Inbox>, key: IdempotencyKey, by: Claimant) -> Self {
        Self {
            inbox,
            key,
            by,
            phase: Phase::Pending,
        }
    }

    /// The notification is safe: make the key name it for [`IDEMPOTENCY_TTL`].
    pub(super) async fn settle(mut self) {
        self.phase = Phase::Safe;
        settle(self.inbox.as_ref(), &self.key, self.by).await;
        self.phase = Phase::Done;
    }

    /// The send failed before anything could reach a user: let a retry through.
    pub(super) async fn release(mut self) {
        release(self.inbox.as_ref(), &self.key, self.by).await;
        self.phase = Phase::Done;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let phase = self.phase;
        if phase == Phase::Done {
            return;
        }
        let (inbox, key, by) = (self.inbox.clone(), self.key.clone(), self.by);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Best effort: if this is lost too, the key expires after PENDING_CLAIM_TTL.
            rt.spawn(async move {
                match phase {
                    Phase::Safe => settle(inbox.as_ref(), &key, by).await,
                    _ => release(inbox.as_ref(), &key, by).await,
                }
            });
        }
    }
}

async fn settle(inbox: &dyn Inbox, key: &IdempotencyKey, by: Claimant) {
    let id = by.id;
    match inbox.settle(key, by, IDEMPOTENCY_TTL).await {
        Ok(true) => {}
        Ok(false) => warn!(
            %id,
            "idempotency key no longer held for this send; a retry may send it again"
        ),
        Err(e) => warn!(
            %id,
            error = %e,
            "idempotency key not settled; it expires soon and a retry may send again"
        ),
    }
}

async fn release(inbox: &dyn Inbox, key: &IdempotencyKey, by: Claimant) {
    if let Err(e) = inbox.release(key, by).await {
        let id = by.id;
        warn!(%id, error = %e, "idempotency key not released; it expires on its own");
    }
}

#[cfg(test)]
mod tests {
    use kurir_backends::inbox::MemoryInbox;
    use kurir_backends::UserId;
    use kurir_proto::v1::Notification;

    use super::*;

    fn cmd(users: &[&str], title: &str, ttl_seconds: u32) -> SendCommand {
        SendCommand {
            users: users.iter().map(|u| UserId::parse(u).unwrap()).collect(),
            notification: Notification {
                title: title.into(),
                ..Default::default()
            },
            ttl_seconds,
            idempotency_key: Some("k".into()),
            fallback: None,
            send_at: 0,
        }
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::new("scope", "k").unwrap()
    }

    fn claimant() -> Claimant {
        Claimant {
            id: NotificationId::generate(),
            fingerprint: Fingerprint([3; 16]),
        }
    }

    #[test]
    fn pending_claims_outlive_the_default_request_timeout() {
        let timeout = Duration::from_millis(crate::config::DEFAULT_REQUEST_TIMEOUT_MS);
        assert!(PENDING_CLAIM_TTL > timeout + IN_PROGRESS_WAIT);
        assert!(IN_PROGRESS_WAIT < timeout);
    }

    #[test]
    fn scopes_name_keys_without_revealing_them() {
        let key = "test-api-key-0123456789abcdef0123456789";
        let scope = Scope::of_api_key(key.as_bytes());
        assert_eq!(scope.as_str().len(), 16);
        assert!(scope.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!key.contains(scope.as_str()));
        // Stable, and different per key.
        assert_eq!(scope, Scope::of_api_key(key.as_bytes()));
        assert_ne!(
            scope,
            Scope::of_api_key(b"test-api-key-other-0123456789abcdef0")
        );
        assert_ne!(scope, Scope::unauthenticated());
        // SHA-256("abc") starts ba7816bf8f01cfea.
        assert_eq!(Scope::of_api_key(b"abc").as_str(), "ba7816bf8f01cfea");
        // Every scope makes a valid stored key.
        assert!(IdempotencyKey::new(scope.as_str(), "k").is_ok());
        assert!(IdempotencyKey::new(Scope::unauthenticated().as_str(), "k").is_ok());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let base = fingerprint(&cmd(&["alice", "bob"], "t", 60));
        // The same request, recipients in another order, another key: the same.
        assert_eq!(base, fingerprint(&cmd(&["bob", "alice"], "t", 60)));
        let mut other_key = cmd(&["alice", "bob"], "t", 60);
        other_key.idempotency_key = Some("other".into());
        assert_eq!(base, fingerprint(&other_key));
        // A fallback or a schedule changes what happens: different.
        let mut with_fallback = cmd(&["alice", "bob"], "t", 60);
        with_fallback.fallback = Some(crate::dispatch::FallbackPolicy {
            channels: vec![],
            after_ms: 0,
        });
        assert_ne!(base, fingerprint(&with_fallback));
        let mut scheduled = cmd(&["alice", "bob"], "t", 60);
        scheduled.send_at = 1;
        assert_ne!(base, fingerprint(&scheduled));
        // Anything else that changes what is sent: different.
        assert_ne!(base, fingerprint(&cmd(&["alice"], "t", 60)));
        assert_ne!(base, fingerprint(&cmd(&["alice", "carol"], "t", 60)));
        assert_ne!(base, fingerprint(&cmd(&["alice", "bob"], "u", 60)));
        assert_ne!(base, fingerprint(&cmd(&["alice", "bob"], "t", 0)));
        // Recipient lists do not run into each other.
        assert_ne!(
            fingerprint(&cmd(&["ab", "c"], "t", 60)),
            fingerprint(&cmd(&["a", "bc"], "t", 60))
        );
    }

    #[test]
    fn fingerprints_ignore_the_order_of_data_entries() {
        let with = |pairs: &[(&str, &str)]| {
            let mut c = cmd(&["alice"], "t", 60);
            for (k, v) in pairs {
                c.notification.data.insert((*k).into(), (*v).into());
            }
            fingerprint(&c)
        };
        let pairs: Vec<(String, String)> = (0..50)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let forward: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let backward: Vec<(&str, &str)> = forward.iter().rev().copied().collect();
        assert_eq!(with(&forward), with(&backward));
        assert_ne!(with(&[("a", "1")]), with(&[("a", "2")]));
        assert_ne!(with(&[("a", "1")]), with(&[]));
    }

    #[tokio::test]
    async fn a_send_cancelled_while_settling_settles_in_the_background() {
        let inbox: Arc<dyn Inbox> = Arc::new(MemoryInbox::new(10));
        let by = claimant();
        inbox.claim(&key(), by, PENDING_CLAIM_TTL).await.unwrap();
        let mut claim = ClaimGuard::new(inbox.clone(), key(), by);
        claim.phase = Phase::Safe;
        drop(claim);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            inbox
                .claim(&key(), claimant(), PENDING_CLAIM_TTL)
                .await
                .unwrap(),
            Claim::Existing(by.id)
        );
    }

    #[tokio::test]
    async fn a_cancelled_send_gives_its_key_up_in_the_background() {
        let inbox: Arc<dyn Inbox> = Arc::new(MemoryInbox::new(10));
        let by = claimant();
        assert_eq!(
            inbox.claim(&key(), by, PENDING_CLAIM_TTL).await.unwrap(),
            Claim::New
        );
        drop(ClaimGuard::new(inbox.clone(), key(), by));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            inbox
                .claim(&key(), claimant(), PENDING_CLAIM_TTL)
                .await
                .unwrap(),
            Claim::New,
            "the key is free again"
        );
    }
}
