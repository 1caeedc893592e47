//! Service proxying with nftables (the kube-proxy of Capstan): ClusterIPs and NodePorts are
//! DNATed to ready endpoints, spread evenly at random, with optional client-IP affinity,
//! hairpin and pod-CIDR masquerading, in a main table and its shard tables that Capstan owns
//! (see [`rules`] for the shape). It owns turning plain Service data into those tables; it
//! must not read the API (the node agent passes plain data) or touch any other table.
//! Planning ([`plan`]), rule generation ([`rules`]), the incremental diff ([`diff`]) and the
//! per-Service plan cache are pure; [`proxy`] keeps what was applied between syncs and only
//! [`nft`] runs a process. Everything acts on the calling thread's network namespace
//! and blocks.
//!
//! The node must pass bridged traffic through netfilter (`br_netfilter` loaded,
//! `net.bridge.bridge-nf-call-iptables=1` in the node's namespace), as Kubernetes requires:
//! otherwise a pod's reply to a client pod on the same bridge skips the node's conntrack and
//! is not un-DNATed. With it, hairpin traffic (a pod reaching itself through its Service) is
//! bridged back out of its ingress port, so pod ports need bridge hairpin mode as well (which
//! [`crate::attach_pod`] turns on).

mod cache;
pub mod diff;
pub mod error;
pub mod nft;
pub mod plan;
pub mod proxy;
pub mod rules;
pub mod types;

pub use error::{Error, Result};
pub use nft::{Nft, NftCommand};
pub use proxy::{ServiceProxy, DEFAULT_FULL_RESYNC_PERIOD};
pub use types::{
    Endpoint, Protocol, ProxyConfig, ServicePort, ServiceSpec, SyncStats, NODE_PORT_MAX,
    NODE_PORT_MIN,
};

/// The main table name Capstan uses in production (its shards are `capstan-s<k>`).
pub const DEFAULT_TABLE: &str = "capstan";

/// Programs table `cfg.table` and its shard tables so that they implement exactly `services` (each with all its
/// endpoints; unready ones are ignored), replacing what earlier syncs programmed in one
/// atomic transaction while keeping clients' session affinity (a full sync). Idempotent; on
/// error the table is unchanged and the call can be retried.
pub fn sync_services(
    cfg: &ProxyConfig,
    services: &[(ServiceSpec, Vec<Endpoint>)],
) -> Result<SyncStats> {
    sync_services_with(&NftCommand::default(), cfg, services)
}

/// [`sync_services`] through the given [`Nft`]: always a full sync. Callers that sync
/// repeatedly keep a [`ServiceProxy`] instead, which sends only what changed.
pub fn sync_services_with(
    nft: &impl Nft,
    cfg: &ProxyConfig,
    services: &[(ServiceSpec, Vec<Endpoint>)],
) -> Result<SyncStats> {
    ServiceProxy::with_nft(nft).sync(cfg, services)
}

/// Deletes table `cfg.table` and its shard tables with all their rules and affinity state,
/// and no other table. Idempotent.
pub fn teardown(cfg: &ProxyConfig) -> Result<()> {
    teardown_with(&NftCommand::default(), cfg)
}

/// [`teardown`] through the given [`Nft`].
pub fn teardown_with(nft: &impl Nft, cfg: &ProxyConfig) -> Result<()> {
    validate_table(&cfg.table)?;
    let mut tables: std::collections::BTreeSet<String> = owned_tables(&cfg.table).collect();
    // Shards of an earlier version with more of them, if any.
    tables.extend(nft.list_owned(&cfg.table)?.into_keys());
    // `add` first makes `delete` succeed when the table is already gone.
    let script: String = tables
        .iter()
        .map(|t| format!("add table ip {t}\ndelete table ip {t}\n"))
        .collect();
    nft.apply(&script)?;
    tracing::info!(message = "service table deleted", table = %cfg.table);
    Ok(())
}

/// The tables the proxy with main table `table` owns: it and its [`plan::SHARDS`] shards.
pub fn owned_tables(table: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(table.to_owned()).chain((0..plan::SHARDS).map(|k| rules::shard_table(table, k)))
}

/// A table name is an nftables identifier: a letter, then up to 31 letters, digits, `_`
/// or `-`.
pub(crate) fn validate_table(table: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTable {
            table: table.to_owned(),
            reason,
        })
    };
    if table.is_empty() || table.len() > 32 {
        return invalid("must be 1 to 32 characters");
    }
    if !table.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return invalid("must start with a letter");
    }
    if !table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return invalid("may hold only letters, digits, '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_must_be_nft_identifiers() {
        assert!(validate_table("capstan").is_ok());
        assert!(validate_table("capstan-test_1").is_ok());
        for bad in ["", "1abc", "a b", "a;flush ruleset", &"a".repeat(33)] {
            assert!(
                matches!(validate_table(bad), Err(Error::InvalidTable { .. })),
                "{bad:?}"
            );
        }
    }
}
