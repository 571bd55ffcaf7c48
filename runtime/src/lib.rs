//! The plumbing every Kurir server process needs and that has nothing to do with
//! notifications: the wall clock, structured logs, the Prometheus recorder and process
//! metrics, the admin endpoints (`/metrics`, `/healthz`, `/readyz`) and the shutdown
//! signal. The gateway, the dispatcher and the `kurir` command share it, so each of these
//! exists once.

pub mod admin;
#[cfg(feature = "clap")]
pub mod cli;
pub mod clock;
pub mod logging;
pub mod metrics;
pub mod shutdown;

pub use clock::now_ms;
pub use logging::LogFormat;
