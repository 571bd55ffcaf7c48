//! Scaffolding shared by Kurir's tests, end-to-end suite and load generator, one
//! version of each piece so the suites agree on how a process is started, how long a
//! condition is waited for and how a client proves who it is.
//!
//! By job: `services` names the shared Redis and NATS; `ports` finds and waits for
//! loopback ports; `binaries` finds (or builds) a workspace binary; `process` spawns one
//! with its environment, keeps its log and stops it by PID; `poll` is `eventually`;
//! `http` is the smallest GET for admin endpoints; `bearer` authenticates gRPC calls;
//! `token` mints client tokens; `faults` stages outages (private NATS and Redis servers,
//! a Redis Cluster, a cuttable proxy, `redis-cli`); `certs` writes a test PKI; `push` is a fake Web Push
//! service and the keys its clients hold.
#![forbid(unsafe_code)]

pub mod bearer;
pub mod binaries;
pub mod certs;
pub mod faults;
pub mod http;
pub mod mobile_push;
pub mod poll;
pub mod ports;
pub mod process;
pub mod push;
pub mod services;
pub mod token;

pub use bearer::Bearer;
pub use binaries::bin;
pub use poll::eventually;
pub use ports::{free_port, wait_port};
pub use process::{Process, ProcessError};
pub use services::{nats_url, random_namespace, redis_url};
pub use token::ClientToken;
