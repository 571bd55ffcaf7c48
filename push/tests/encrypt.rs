//! RFC 8291 payload encryption against the RFC's own example (Appendix A).

mod common;

use common::unb64;
use kurir_push::webpush::encrypt::{encrypt_with, EncryptError, ReceiverKeys, MAX_PLAINTEXT};
use p256::SecretKey;

const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
const UA_PUBLIC: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH_SECRET: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
const MESSAGE: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

fn receiver() -> ReceiverKeys {
    ReceiverKeys::new(&unb64(UA_PUBLIC), &unb64(AUTH_SECRET)).expect("RFC keys")
}

#[test]
fn the_rfc_8291_example_encrypts_to_its_exact_bytes() {
    let sender = SecretKey::from_slice(&unb64(AS_PRIVATE)).expect("RFC sender key");
    let salt: [u8; 16] = unb64(SALT).try_into().expect("16-byte salt");
    let body = encrypt_with(PLAINTEXT, &receiver(), &sender, salt).expect("encrypts");
    assert_eq!(body, unb64(MESSAGE));
}

#[test]
fn fresh_keys_and_salt_make_every_body_different() {
    let a = kurir_push::webpush::encrypt::encrypt(PLAINTEXT, &receiver()).expect("encrypts");
    let b = kurir_push::webpush::encrypt::encrypt(PLAINTEXT, &receiver()).expect("encrypts");
    assert_eq!(a.len(), b.len());
    assert_ne!(a[..16], b[..16], "salt reused");
    assert_ne!(a[21..86], b[21..86], "ephemeral key reused");
}

#[test]
fn a_payload_must_fit_one_record() {
    let max = vec![b'x'; MAX_PLAINTEXT];
    let body =
        kurir_push::webpush::encrypt::encrypt(&max, &receiver()).expect("the largest payload fits");
    assert_eq!(body.len(), 86 + 4096);
    let over = vec![b'x'; MAX_PLAINTEXT + 1];
    assert_eq!(
        kurir_push::webpush::encrypt::encrypt(&over, &receiver()),
        Err(EncryptError::TooLarge(MAX_PLAINTEXT + 1))
    );
}

#[test]
fn malformed_subscription_keys_are_refused() {
    let compressed = {
        let mut key = unb64(UA_PUBLIC);
        key.truncate(33);
        key[0] = 0x02;
        key
    };
    assert_eq!(
        ReceiverKeys::new(&compressed, &unb64(AUTH_SECRET)).err(),
        Some(EncryptError::BadPublicKey)
    );
    assert_eq!(
        ReceiverKeys::new(&unb64(UA_PUBLIC), &[0; 8]).err(),
        Some(EncryptError::BadAuthSecret)
    );
}
