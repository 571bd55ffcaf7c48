//! A dispatcher served in this process on `127.0.0.1:0`, and the `kurir` binary run
//! against it.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::SocketAddr;
use std::process::Output;

use kurir_backends::{Backends, ConnectOptions, Namespace};
use kurir_dispatcher::config::TEST_API_KEY;
use kurir_dispatcher::{Config, Dispatcher};
use tokio::sync::oneshot;

pub const KEY: &str = TEST_API_KEY;

pub fn memory() -> Backends {
    Backends::memory(Namespace::random_for_test())
}

/// Real NATS and Redis (`KURIR_NATS_URL`, `KURIR_REDIS_URL`) in a fresh namespace.
pub async fn real() -> Backends {
    let env = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let (nats, redis) = (
        env("KURIR_NATS_URL", "nats://127.0.0.1:4222"),
        env("KURIR_REDIS_URL", "redis://127.0.0.1:6379"),
    );
    let opts = ConnectOptions::new(Namespace::random_for_test(), &nats, &redis);
    Backends::connect(&opts)
        .await
        .unwrap_or_else(|e| panic!("NATS {nats} / Redis {redis}: {e}"))
}

/// A dispatcher serving until dropped.
pub struct Served {
    pub grpc: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Served {
    pub async fn start(backends: Backends, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_test(backends.namespace.clone());
        tweak(&mut config);
        let metrics = kurir_runtime::metrics::install(&[]).expect("metrics recorder");
        let dispatcher = Dispatcher::bind(config, backends, metrics)
            .await
            .expect("bind");
        let grpc = dispatcher.grpc_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(dispatcher.serve(async {
            let _ = stopped.await;
        }));
        Self { grpc, _stop: stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

/// Run `kurir` with `args`, without the client variables of the environment that runs
/// the tests.
pub async fn kurir<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kurir"))
        .args(args)
        .env_remove("KURIR_API_KEY")
        .env_remove("KURIR_ENDPOINT")
        .env_remove("KURIR_JWT_SECRET")
        .env_remove("KURIR_JWT_ISSUER")
        .env_remove("KURIR_JWT_AUDIENCE")
        .output()
        .await
        .expect("run kurir")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
