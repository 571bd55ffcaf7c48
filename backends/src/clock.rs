//! The wall clock every stored time is in: inbox expiries, device use, due times. A leaf.

/// Wall-clock unix milliseconds, the clock of [`NewEntry::expires_at`](crate::inbox::NewEntry)
/// and of due-queue times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
