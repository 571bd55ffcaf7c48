//! What the client commands print: one JSON object per line on stdout, flushed so that
//! pipes see each line at once.

use std::io::Write;

use kurir_proto::v1::{Receipt, ReceiptStatus};
use serde_json::{json, Value};

/// One JSON line on stdout.
///
/// # Errors
/// Stdout is closed or full.
pub fn print_line(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()
}

/// A receipt as printed by `kurir receipts`.
pub fn receipt_json(r: &Receipt) -> Value {
    let status = match ReceiptStatus::try_from(r.status) {
        Ok(ReceiptStatus::Delivered) => "DELIVERED",
        Ok(ReceiptStatus::Acked) => "ACKED",
        _ => "UNSPECIFIED",
    };
    json!({ "id": r.id, "user_id": r.user_id, "status": status, "node": r.node, "at": r.at })
}
