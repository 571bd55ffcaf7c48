//! A namespace's keys in Redis, through `redis-cli`: what is left in the inboxes, and
//! deleting the namespace (never anything else) after a test (testkit's).

use anyhow::{bail, Result};
pub use kurir_testkit::faults::redis_cli::cleanup_namespace;
use kurir_testkit::faults::redis_cli::{redis_cli_batch, redis_quote, scan};

fn namespace_keys(url: &str, pattern: &str) -> Result<Vec<String>> {
    Ok(scan(url, pattern)?)
}

/// Entries left in every inbox of a namespace.
pub fn inbox_entries(url: &str, namespace: &str) -> Result<usize> {
    let keys = namespace_keys(url, &format!("kurir:{namespace}:inbox:*"))?;
    let commands: Vec<String> = keys
        .iter()
        .map(|k| format!("XLEN {}", redis_quote(k)))
        .collect();
    let lens = redis_cli_batch(url, &commands)?;
    if lens.len() != keys.len() {
        bail!("XLEN of {} keys gave {} answers", keys.len(), lens.len());
    }
    Ok(lens.iter().map(|l| l.parse::<usize>().unwrap_or(0)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use kurir_testkit::faults::redis_cli::redis_cli;
    use kurir_testkit::{random_namespace, redis_url};

    #[test]
    fn cleanup_namespace_deletes_odd_keys_and_only_its_own() -> Result<()> {
        let (url, ns, other) = (redis_url(), random_namespace(), random_namespace());
        // Split naively on the space, the first key would name the neighbour.
        let neighbour = format!("kurir:{other}:presence:{{b}}");
        let odd = [
            format!("kurir:{ns}:presence:{{a {neighbour}"),
            format!("kurir:{ns}:inbox:{{q\"uo\\te}}"),
            format!("kurir:{ns}:idem:\u{e9}\tx"),
        ];
        for k in odd.iter().chain([&neighbour]) {
            redis_cli(&url, &["SET", k, "1"]).context("set up keys (is Redis running?)")?;
        }
        cleanup_namespace(&url, &ns);
        for k in &odd {
            assert_eq!(redis_cli(&url, &["EXISTS", k])?, "0", "{k:?} left behind");
        }
        assert_eq!(
            redis_cli(&url, &["EXISTS", &neighbour])?,
            "1",
            "neighbour deleted"
        );
        cleanup_namespace(&url, &other);
        Ok(())
    }
}
