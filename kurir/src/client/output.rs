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

/// A receipt as printed by `kurir receipts`; `device_id` and `reason` only when set
/// (push receipts).
pub fn receipt_json(r: &Receipt) -> Value {
    let status = match ReceiptStatus::try_from(r.status) {
        Ok(ReceiptStatus::Unspecified) | Err(_) => "UNSPECIFIED",
        Ok(known) => known.as_str_name(),
    };
    let mut v =
        json!({ "id": r.id, "user_id": r.user_id, "status": status, "node": r.node, "at": r.at });
    if !r.device_id.is_empty() {
        v["device_id"] = json!(r.device_id);
    }
    if !r.reason.is_empty() {
        v["reason"] = json!(r.reason);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_receipts_carry_their_device_and_reason() {
        let r = Receipt {
            id: "n".into(),
            user_id: "alice".into(),
            status: ReceiptStatus::PushFailed as i32,
            device_id: "d1".into(),
            reason: "410 Gone".into(),
            ..Default::default()
        };
        let v = receipt_json(&r);
        assert_eq!(v["status"], "PUSH_FAILED");
        assert_eq!(v["device_id"], "d1");
        assert_eq!(v["reason"], "410 Gone");
        let acked = receipt_json(&Receipt {
            status: ReceiptStatus::Acked as i32,
            ..Default::default()
        });
        assert_eq!(acked["status"], "ACKED");
        assert!(acked.get("reason").is_none());
    }
}
