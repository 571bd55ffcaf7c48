//! The wall clock, in unix milliseconds: the unit of every timestamp Kurir stores or
//! sends (`expires_at`, `sent_at`, `send_at`, receipts).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch. A clock set before 1970 reads 0; one past the
/// year 292 million reads `i64::MAX`. Neither panics.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_this_code_was_written_and_moves_forward() {
        let a = now_ms();
        assert!(a > 1_790_000_000_000, "{a}");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now_ms() > a);
    }
}
