//! Fuzz targets for every parser a hostile client or API caller can reach, in the order
//! their bytes meet them: [`ws_frame`] (a frame header and its masking), [`ws_read`] (a
//! connection's byte stream into messages), [`http_upgrade`] (the request that opens
//! it), [`jwt`] (the token it carries), [`client_frame`] (the JSON frames that follow),
//! and [`grpc_validate`] (the dispatcher's API requests).
//!
//! Each target is one `run(&[u8])` that must never panic, whatever the bytes, and that
//! asserts what the parser promises (a differential model, an invariant of its output,
//! or the same answer however the input is split). The AFL++ harnesses in `src/bin`
//! (feature `afl`, driven by `scripts/fuzz.sh`) call it under coverage guidance; the
//! property tests in `tests/` call it on generated and corpus inputs in the normal test
//! run. [`under_test`] is the only module that names the project's own paths.
#![forbid(unsafe_code)]

pub mod client_frame;
pub mod grpc_validate;
pub mod http_upgrade;
pub mod jwt;
pub mod under_test;
pub mod ws_frame;
pub mod ws_read;

/// A target: takes any bytes, panics only on a finding.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its harness binary and corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("ws_frame", ws_frame::run),
    ("ws_read", ws_read::run),
    ("http_upgrade", http_upgrade::run),
    ("client_frame", client_frame::run),
    ("jwt", jwt::run),
    ("grpc_validate", grpc_validate::run),
];
