//! The server's [`Config`]: flags and `KURIR_*` environment variables. [`server`]
//! declares them and [`check`] refuses what the dispatcher cannot start with, before any
//! port is bound.

mod check;
mod server;

pub use check::ConfigError;
pub use kurir_backends::{Secret, ServerUrl};
pub use kurir_runtime::cli::one_line;
pub use server::*;
