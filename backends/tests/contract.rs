//! Every contract case of `kurir_backends::contract`, stamped for the in-memory
//! implementations and for the real services: `memory_presence::add_then_lookup`,
//! `redis_presence::add_then_lookup`, `nats_bus::…`, and so on. Each case runs in its own
//! namespace and deletes its Redis keys afterwards, whether it passed or not.

#[macro_use]
mod support;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use kurir_backends::contract;

/// One module of tests, one per case, each with a fresh `$factory`.
macro_rules! stamp {
    ($module:ident, $suite:ident, $factory:ty, [$($case:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let factory = <$factory>::new().await;
                    let outcome =
                        AssertUnwindSafe(contract::$suite::$case(&factory)).catch_unwind().await;
                    factory.cleanup().await;
                    if let Err(panic) = outcome {
                        std::panic::resume_unwind(panic);
                    }
                }
            )*
        }
    };
}

/// Stamp a suite for memory and for its real service.
macro_rules! suite {
    ($suite:ident: $memory:ident, $real:ident, [$($case:ident),* $(,)?]) => {
        stamp!($memory, $suite, support::MemoryFactory, [$($case),*]);
        stamp!($real, $suite, support::ServicesFactory, [$($case),*]);
    };
}

bus_cases!(suite!(bus: memory_bus, nats_bus,));
presence_cases!(suite!(presence: memory_presence, redis_presence,));
inbox_cases!(suite!(inbox: memory_inbox, redis_inbox,));
devices_cases!(suite!(devices: memory_devices, redis_devices,));
due_cases!(suite!(due: memory_due, redis_due,));
