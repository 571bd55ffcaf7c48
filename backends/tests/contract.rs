//! Every contract case of `kurir_backends::contract`, stamped for the in-memory
//! implementations and for the real services: `memory_presence::add_then_lookup`,
//! `redis_presence::add_then_lookup`, `nats_bus::…`, and so on. Each case runs in its own
//! namespace and deletes its Redis keys afterwards, whether it passed or not.

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

suite!(bus: memory_bus, nats_bus, [
    publish_then_subscribe_delivers,
    delivers_across_clients,
    order_is_kept_per_publisher,
    nothing_is_kept_without_subscribers,
    every_subscription_receives,
    subjects_are_isolated,
    dropping_a_subscription_unsubscribes_only_it,
    flush_and_connected_on_a_healthy_bus,
]);

suite!(presence: memory_presence, redis_presence, [
    add_then_lookup,
    add_is_idempotent,
    remove_forgets_one_connection,
    connections_on_several_nodes,
    entries_of_a_node_without_liveness_do_not_count,
    dead_node_stops_counting_after_its_ttl,
    beating_keeps_a_node_alive,
    remove_node_drops_its_entries_and_liveness,
    entries_expire_without_refresh,
    refresh_extends_entries,
    lookup_of_unknown_users,
    lookup_keeps_the_order_asked,
    lookup_of_many_users,
]);

suite!(inbox: memory_inbox, redis_inbox, [
    append_returns_increasing_cursors,
    pending_returns_entries_oldest_first,
    payloads_are_binary_safe,
    pending_after_a_cursor_is_exclusive,
    pending_respects_the_limit,
    users_have_separate_inboxes,
    ack_removes_the_entry,
    ack_is_idempotent,
    expired_entries_are_never_returned,
    entries_appended_expired_are_never_returned,
    capacity_trims_the_oldest,
    append_is_idempotent_per_notification,
    append_to_many_users,
    claim_first_wins,
    release_frees_only_the_holders_key,
    claims_expire_after_their_ttl,
    concurrent_claims_have_one_winner,
]);
