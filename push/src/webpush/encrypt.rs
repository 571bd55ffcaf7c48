//! RFC 8291 message encryption for Web Push, in the `aes128gcm` content coding of
//! RFC 8188: an ephemeral ECDH agreement with the browser's key, mixed with its auth
//! secret, keys one AES-128-GCM record. The primitives come from well-kept crates; only
//! the composition the RFC defines is written here.
//!
//! Sends use ring's P-256 (an ephemeral key and one agreement per push; ring's
//! assembly is several times faster than the portable arithmetic, and the agreement
//! was most of a push's CPU). The RFC's test vector needs a given sender key, which
//! ring does not import, so [`encrypt_with`] does the agreement with RustCrypto's
//! `p256`; both feed the same [`seal`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes128Gcm;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::rand::SystemRandom;
use sha2::Sha256;
use thiserror::Error;

/// Record size of the single record Kurir sends (RFC 8291 §4 caps payloads at 4096).
pub const RECORD_SIZE: u32 = 4096;
/// Salt (16) + record size (4) + key id length (1) + uncompressed P-256 point (65).
const HEADER_LEN: usize = 86;
const TAG_LEN: usize = 16;
/// The largest plaintext that fits one 4096-byte record with its delimiter and tag.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - TAG_LEN - 1;

/// Why a payload could not be encrypted for a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncryptError {
    #[error("p256dh is not an uncompressed P-256 point")]
    BadPublicKey,
    #[error("auth secret is not 16 bytes")]
    BadAuthSecret,
    #[error("payload of {0} bytes does not fit one record")]
    TooLarge(usize),
    #[error("no randomness for an ephemeral key")]
    NoRandomness,
}

/// The browser's keys from its subscription.
#[derive(Debug, Clone)]
pub struct ReceiverKeys {
    public: PublicKey,
    /// The same point, uncompressed (what the key derivation mixes in).
    raw: [u8; 65],
    auth: [u8; 16],
}

impl ReceiverKeys {
    /// From the raw `p256dh` (65-byte uncompressed point) and `auth` (16 bytes).
    ///
    /// # Errors
    /// A key of the wrong shape.
    pub fn new(p256dh: &[u8], auth: &[u8]) -> Result<Self, EncryptError> {
        if p256dh.len() != 65 || p256dh[0] != 0x04 {
            return Err(EncryptError::BadPublicKey);
        }
        let public = PublicKey::from_sec1_bytes(p256dh).map_err(|_| EncryptError::BadPublicKey)?;
        let raw = p256dh.try_into().map_err(|_| EncryptError::BadPublicKey)?;
        let auth = auth.try_into().map_err(|_| EncryptError::BadAuthSecret)?;
        Ok(Self { public, raw, auth })
    }
}

/// Encrypts `plaintext` with a fresh ephemeral key and salt.
///
/// # Errors
/// A payload larger than [`MAX_PLAINTEXT`].
pub fn encrypt(plaintext: &[u8], receiver: &ReceiverKeys) -> Result<Vec<u8>, EncryptError> {
    check_size(plaintext)?;
    let rng = SystemRandom::new();
    let sender =
        EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EncryptError::NoRandomness)?;
    let sender_public = sender
        .compute_public_key()
        .map_err(|_| EncryptError::NoRandomness)?;
    let salt: [u8; 16] = rand::random();
    agree_ephemeral(
        sender,
        &UnparsedPublicKey::new(&ECDH_P256, &receiver.raw),
        |shared| seal(plaintext, receiver, sender_public.as_ref(), shared, salt),
    )
    .map_err(|_| EncryptError::BadPublicKey)
}

fn check_size(plaintext: &[u8]) -> Result<(), EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    Ok(())
}

/// Encrypts with a given sender key and salt: deterministic, for the RFC's test vector.
/// Production sends must use [`encrypt`], which never reuses either.
///
/// # Errors
/// A payload larger than [`MAX_PLAINTEXT`].
pub fn encrypt_with(
    plaintext: &[u8],
    receiver: &ReceiverKeys,
    sender: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    check_size(plaintext)?;
    let sender_public = sender.public_key().to_encoded_point(false);
    let shared =
        p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), receiver.public.as_affine());
    Ok(seal(
        plaintext,
        receiver,
        sender_public.as_bytes(),
        &shared.raw_secret_bytes()[..],
        salt,
    ))
}

/// The record of `plaintext` under the keys derived from the ECDH `shared` secret of
/// `sender_public` (uncompressed) and the receiver, and `salt`; at most
/// [`MAX_PLAINTEXT`] bytes (checked by the callers).
fn seal(
    plaintext: &[u8],
    receiver: &ReceiverKeys,
    sender_public: &[u8],
    shared: &[u8],
    salt: [u8; 16],
) -> Vec<u8> {
    // RFC 8291 §3.3: IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0 || ua || as, 32).
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(&receiver.raw);
    key_info.extend_from_slice(sender_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&receiver.auth), shared)
        .expand(&key_info, &mut ikm)
        .expect("32 bytes is a valid HKDF-SHA256 length");

    // RFC 8188 §2.2 and §2.3: CEK and nonce from the salt.
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .expect("valid length");
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("valid length");

    // One record, the last: the plaintext followed by the 0x02 delimiter, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    let cipher = Aes128Gcm::new(&cek.into());
    let sealed = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: &record,
                aad: b"",
            },
        )
        .expect("AES-GCM encryption of a bounded record cannot fail");

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(sender_public);
    body.extend_from_slice(&sealed);
    body
}
