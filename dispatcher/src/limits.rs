//! The API's limits: how many ids, how large a notification, how long a TTL or a call.
//! The request checks in [`crate::api::validate`] enforce them; the configuration checks
//! that the gRPC decoding limit leaves room for the largest request they allow, and that
//! the request timeout stays within [`MAX_REQUEST_TIMEOUT`].

use std::time::Duration;

use kurir_backends::ids::MAX_USER_ID_LEN;

/// Longest `KURIR_REQUEST_TIMEOUT_MS` accepted: a keyed `Send` holds its idempotency key
/// pending for a fixed time (30 s, [`PENDING_CLAIM_TTL`](crate::dispatch::PENDING_CLAIM_TTL),
/// which is checked to outlive this by more than a second), and a call that may run
/// longer could outlive its claim and let a retry send twice.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_millis(28_999);

/// Most user ids one call may name.
pub const MAX_USERS: usize = 10_000;
/// Largest notification, prost-encoded.
pub const MAX_NOTIFICATION_BYTES: usize = 4096;
/// Longest a notification may be stored: 30 days.
pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Longest disconnect reason, in bytes (a WebSocket close reason must stay under 123).
pub const MAX_REASON_BYTES: usize = 120;
/// Most notification ids a receipt filter may name.
pub const MAX_NOTIFICATION_IDS: usize = 10_000;
/// Furthest ahead `send_at` may be: 30 days.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 30 * 24 * 3600 * 1000;
/// Largest encoded `Fallback`: the three platforms (packed) and the longest wait.
const MAX_FALLBACK_BYTES: usize = field_len(3) + 1 + varint_len(MAX_TTL_SECONDS as usize * 1000);
/// Largest valid `Send`, protobuf-encoded: 10000 user ids of 128 bytes, a notification
/// of 4096 bytes, the longest TTL and idempotency key, a fallback on every platform and
/// a negative `send_at` (10 bytes) (1,314,259 bytes). The decoding limit
/// (`KURIR_GRPC_MAX_MESSAGE_BYTES`) may not go below it.
pub const MAX_SEND_REQUEST_BYTES: usize = MAX_USERS * field_len(MAX_USER_ID_LEN)
    + field_len(MAX_NOTIFICATION_BYTES)
    + 1
    + varint_len(MAX_TTL_SECONDS as usize)
    + field_len(MAX_IDEMPOTENCY_KEY_BYTES)
    + field_len(MAX_FALLBACK_BYTES)
    + 1
    + 10;
/// Longest device token or app id, in bytes.
pub const MAX_DEVICE_TOKEN_BYTES: usize = 4096;
pub const MAX_APP_ID_BYTES: usize = 256;

/// Bytes of a protobuf varint holding `v`.
const fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a length-delimited field of `len` bytes (tag numbers below 16 take one byte).
const fn field_len(len: usize) -> usize {
    1 + varint_len(len) + len
}
