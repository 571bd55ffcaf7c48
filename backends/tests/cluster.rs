//! The Redis presence and inbox contracts on a private three-node Redis Cluster: every
//! command must stay within one hash slot and every batch must be routable per slot.
//! One test runs all cases on one cluster, each case in its own namespace.

#[macro_use]
mod support;

use kurir_backends::contract;
use support::{RedisCluster, ServicesFactory};

macro_rules! on_cluster {
    ($url:ident, $suite:ident, [$($case:ident),* $(,)?]) => {
        $(
            let f = ServicesFactory::with_redis(&$url).await;
            contract::$suite::$case(&f).await;
            f.cleanup().await;
        )*
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_redis_contracts() {
    let cluster = RedisCluster::start()
        .await
        .expect("a private Redis Cluster (redis-server and redis-cli on PATH)");
    let url = cluster.url();
    presence_cases!(on_cluster!(url, presence,));
    inbox_cases!(on_cluster!(url, inbox,));
    devices_cases!(on_cluster!(url, devices,));
    due_cases!(on_cluster!(url, due,));
}
