//! Service proxying with nftables (the kube-proxy of Capstan): ClusterIPs and NodePorts are
//! DNATed to ready endpoints, spread evenly at random, with optional client-IP affinity,
//! hairpin and pod-CIDR masquerading, all in one table Capstan owns. It owns turning plain
//! Service data into that table; it must not read the API (the node agent passes plain data)
//! or touch any other table. Planning ([`plan`]) and rule generation ([`rules`]) are pure;
//! only [`nft`] runs a process. Everything acts on the calling thread's network namespace
//! and blocks.
//!
//! The node must pass bridged traffic through netfilter (`br_netfilter` loaded,
//! `net.bridge.bridge-nf-call-iptables=1` in the node's namespace), as Kubernetes requires:
//! otherwise a pod's reply to a client pod on the same bridge skips the node's conntrack and
//! is not un-DNATed. With it, hairpin traffic (a pod reaching itself through its Service) is
//! bridged back out of its ingress port, so pod ports need bridge hairpin mode as well (which
//! [`crate::attach_pod`] turns on).

pub mod error;
pub mod nft;
pub mod plan;
pub mod rules;
pub mod types;

pub use error::{Error, Result};
pub use nft::{Nft, NftCommand};
pub use types::{
    Endpoint, Protocol, ProxyConfig, ServicePort, ServiceSpec, SyncStats, NODE_PORT_MAX,
    NODE_PORT_MIN,
};

/// The table name Capstan uses in production.
pub const DEFAULT_TABLE: &str = "capstan";

/// Programs table `cfg.table` so that it implements exactly `services` (each with all its
/// endpoints; unready ones are ignored), replacing what earlier syncs programmed in one
/// atomic transaction while keeping clients' session affinity. Idempotent; on error the
/// table is unchanged and the call can be retried.
pub fn sync_services(
    cfg: &ProxyConfig,
    services: &[(ServiceSpec, Vec<Endpoint>)],
) -> Result<SyncStats> {
    sync_services_with(&NftCommand::default(), cfg, services)
}

/// [`sync_services`] through the given [`Nft`].
pub fn sync_services_with(
    nft: &impl Nft,
    cfg: &ProxyConfig,
    services: &[(ServiceSpec, Vec<Endpoint>)],
) -> Result<SyncStats> {
    validate_table(&cfg.table)?;
    let plan = plan::plan(services);
    for skipped in &plan.skipped {
        tracing::warn!(
            message = "service port skipped",
            service = %skipped.label,
            reason = %skipped.reason
        );
    }
    let existing = nft.list_objects(&cfg.table)?;
    let ruleset = rules::render(cfg, &plan, &existing);
    nft.apply(&ruleset.script)?;
    let stats = SyncStats {
        service_ports: plan.ports.len(),
        without_endpoints: plan.ports.iter().filter(|p| p.endpoints.is_empty()).count(),
        endpoints: plan.ports.iter().map(|p| p.endpoints.len()).sum(),
        node_ports: plan.ports.iter().filter(|p| p.node_port.is_some()).count(),
        skipped: plan.skipped.len(),
        deleted_objects: ruleset.deleted_objects,
    };
    tracing::debug!(
        message = "services synced",
        table = %cfg.table,
        service_ports = stats.service_ports,
        endpoints = stats.endpoints,
        without_endpoints = stats.without_endpoints,
        node_ports = stats.node_ports,
        deleted_objects = stats.deleted_objects
    );
    Ok(stats)
}

/// Deletes table `cfg.table` with all its rules and affinity state. Idempotent.
pub fn teardown(cfg: &ProxyConfig) -> Result<()> {
    teardown_with(&NftCommand::default(), cfg)
}

/// [`teardown`] through the given [`Nft`].
pub fn teardown_with(nft: &impl Nft, cfg: &ProxyConfig) -> Result<()> {
    validate_table(&cfg.table)?;
    // `add` first makes `delete` succeed when the table is already gone.
    nft.apply(&format!(
        "add table ip {0}\ndelete table ip {0}\n",
        cfg.table
    ))?;
    tracing::info!(message = "service table deleted", table = %cfg.table);
    Ok(())
}

/// A table name is an nftables identifier: a letter, then up to 31 letters, digits, `_`
/// or `-`.
fn validate_table(table: &str) -> Result<()> {
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
