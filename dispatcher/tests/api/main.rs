//! The dispatcher's gRPC API end to end, in process: a `Dispatcher` on `127.0.0.1:0` and
//! tonic clients, one module per topic. Every case runs twice, over the in-memory seams
//! (`memory::…`) and over real NATS and Redis in a random namespace (`real::…`).

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod access;
mod command;
mod failures;
mod idempotency;
mod live;
mod offline;
mod receipts;
mod send;

use kurir_proto::v1::SendRequest;
use support::note;

fn send_req(users: &[&str], ttl_seconds: u32) -> SendRequest {
    SendRequest {
        user_ids: users.iter().map(|u| u.to_string()).collect(),
        notification: note("hello"),
        ttl_seconds,
        idempotency_key: String::new(),
        ..Default::default()
    }
}
