//! The stateful service proxy: it remembers what the last sync programmed (each Service's
//! input and plan, and the configuration) so the next sync re-plans and sends only what
//! changed. It owns deciding between a full
//! and an incremental sync; it must not build nftables syntax itself ([`super::rules`],
//! [`super::diff`]) or run processes other than through [`Nft`].
//!
//! A full sync (re-list the tables, rewrite everything, delete stale objects) happens on the
//! first sync, after any error (the tables' state is then unknown), when the configuration
//! changes, and every [`ServiceProxy::full_resync_period`] to repair edits made behind our
//! back. Sticky clients survive both kinds.

use std::time::{Duration, Instant};

use super::cache::{plan_all, PlanCache};
use super::diff::render_update;
use super::error::Result;
use super::nft::{Nft, NftCommand};
use super::plan::Plan;
use super::rules::render;
use super::types::{Endpoint, ProxyConfig, ServiceSpec, SyncStats};
use super::validate_table;

/// How often a full sync repairs the table by default (as kube-proxy's hourly full sync).
pub const DEFAULT_FULL_RESYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What the tables implement after the last successful sync.
#[derive(Debug, Clone)]
struct Applied {
    cfg: ProxyConfig,
    /// Every Service as planned, with the input it was planned from: a sync re-plans and
    /// diffs only the Services whose input changed.
    cache: PlanCache,
    full_at: Instant,
}

/// The service proxy of one node (one table): owned by the caller across syncs.
#[derive(Debug)]
pub struct ServiceProxy<N = NftCommand> {
    nft: N,
    applied: Option<Applied>,
    full_resync_period: Duration,
}

impl ServiceProxy<NftCommand> {
    /// A proxy that runs `nft` from `PATH`; its first sync is a full one.
    pub fn new() -> Self {
        ServiceProxy::with_nft(NftCommand::default())
    }
}

impl Default for ServiceProxy<NftCommand> {
    fn default() -> Self {
        ServiceProxy::new()
    }
}

impl<N: Nft> ServiceProxy<N> {
    /// A proxy that programs the kernel through `nft`.
    pub fn with_nft(nft: N) -> Self {
        ServiceProxy {
            nft,
            applied: None,
            full_resync_period: DEFAULT_FULL_RESYNC_PERIOD,
        }
    }

    /// Sets how long incremental syncs may follow each other before a full one.
    pub fn full_resync_period(mut self, period: Duration) -> Self {
        self.full_resync_period = period;
        self
    }

    /// Forgets what was programmed: the next sync is a full one.
    pub fn invalidate(&mut self) {
        self.applied = None;
    }

    /// Programs table `cfg.table` so that it implements exactly `services` (unready
    /// endpoints are ignored), in one atomic transaction that touches only what changed
    /// since the last sync, or rewrites the table when a full sync is due or the update is
    /// refused. On error the table is unchanged and the next call does a full sync.
    pub fn sync(
        &mut self,
        cfg: &ProxyConfig,
        services: &[(ServiceSpec, Vec<Endpoint>)],
    ) -> Result<SyncStats> {
        validate_table(&cfg.table)?;
        let now = Instant::now();
        let period = self.full_resync_period;
        let previous = self.applied.take();
        if let Some(mut applied) = previous.filter(|a| !needs_full_sync(a, cfg, now, period)) {
            let update = match applied.cache.delta(services) {
                Some(delta) => {
                    warn_skipped(&delta.new);
                    render_update(&cfg.table, &delta.old, &delta.new)
                }
                None => {
                    // A conflict is involved: plan everything to see who wins.
                    let old = applied.cache.plan();
                    let (wanted, cache) = plan_all(services);
                    warn_skipped(&wanted);
                    applied.cache = cache;
                    render_update(&cfg.table, &old, &wanted)
                }
            };
            let applied_ok = update.script.is_empty() || {
                match self.nft.apply(&update.script) {
                    Ok(()) => true,
                    Err(error) => {
                        // The tables are not what we think (edited behind our back?):
                        // rewrite them now rather than fail until the next sync.
                        tracing::warn!(
                            message = "incremental service sync refused; syncing in full",
                            table = %cfg.table,
                            error = %error
                        );
                        false
                    }
                }
            };
            if applied_ok {
                let stats = SyncStats {
                    full_sync: false,
                    changed_ports: update.changed_ports,
                    deleted_objects: update.deleted_objects,
                    ..applied.cache.stats()
                };
                self.applied = Some(applied);
                log_synced(cfg, &stats);
                return Ok(stats);
            }
        }
        let (wanted, cache) = plan_all(services);
        warn_skipped(&wanted);
        let existing = self.nft.list_owned(&cfg.table)?;
        let ruleset = render(cfg, &wanted, &existing);
        self.nft.apply(&ruleset.script)?;
        let stats = SyncStats {
            full_sync: true,
            changed_ports: wanted.ports.len(),
            deleted_objects: ruleset.deleted_objects,
            ..cache.stats()
        };
        self.applied = Some(Applied {
            cfg: cfg.clone(),
            cache,
            full_at: now,
        });
        log_synced(cfg, &stats);
        Ok(stats)
    }
}

/// Warns about every port `plan` left out.
fn warn_skipped(plan: &Plan) {
    for skipped in &plan.skipped {
        tracing::warn!(
            message = "service port skipped",
            service = %skipped.label,
            reason = %skipped.reason
        );
    }
}

fn log_synced(cfg: &ProxyConfig, stats: &SyncStats) {
    tracing::debug!(
        message = "services synced",
        table = %cfg.table,
        full_sync = stats.full_sync,
        changed_ports = stats.changed_ports,
        service_ports = stats.service_ports,
        endpoints = stats.endpoints,
        without_endpoints = stats.without_endpoints,
        node_ports = stats.node_ports,
        deleted_objects = stats.deleted_objects
    );
}

/// Whether the next sync must rewrite the table rather than update it: the configuration
/// changed (table, pod CIDR, node addresses) or the last full sync is `period` old.
fn needs_full_sync(applied: &Applied, cfg: &ProxyConfig, now: Instant, period: Duration) -> bool {
    applied.cfg != *cfg || now.saturating_duration_since(applied.full_at) >= period
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::services::error::Error;
    use crate::services::rules::OwnedObjects;
    use crate::services::types::{Protocol, ServicePort};

    /// Records scripts; fails `apply` while `fail` is set, and the next incremental
    /// `apply` when `fail_update` is.
    #[derive(Default)]
    struct Fake {
        scripts: RefCell<Vec<String>>,
        lists: RefCell<usize>,
        fail: RefCell<bool>,
        fail_update: RefCell<bool>,
    }

    impl Nft for Fake {
        fn list_owned(&self, _table: &str) -> Result<OwnedObjects> {
            *self.lists.borrow_mut() += 1;
            Ok(OwnedObjects::default())
        }
        fn apply(&self, script: &str) -> Result<()> {
            let update = !script.contains("flush table");
            if *self.fail.borrow() || (update && self.fail_update.replace(false)) {
                return Err(Error::Nft {
                    op: "apply ruleset",
                    status: "exit status: 1".into(),
                    stderr: "refused".into(),
                });
            }
            self.scripts.borrow_mut().push(script.to_owned());
            Ok(())
        }
    }

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            table: "capstan".into(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            node_ips: vec![],
        }
    }

    fn services(ready: bool) -> Vec<(ServiceSpec, Vec<Endpoint>)> {
        vec![(
            ServiceSpec {
                namespace: "default".into(),
                name: "web".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: None,
                }],
                session_affinity_timeout: None,
            },
            vec![Endpoint {
                ip: Ipv4Addr::new(10, 244, 0, 2),
                port: 8080,
                port_name: "http".into(),
                ready,
            }],
        )]
    }

    #[test]
    fn first_sync_is_full_then_only_changes_are_sent_and_no_change_sends_nothing() {
        let mut proxy = ServiceProxy::with_nft(Fake::default());
        let stats = proxy.sync(&cfg(), &services(true)).unwrap();
        assert!(stats.full_sync);
        assert_eq!(*proxy.nft.lists.borrow(), 1);

        let stats = proxy.sync(&cfg(), &services(false)).unwrap();
        assert!(!stats.full_sync);
        assert_eq!(stats.changed_ports, 1);
        assert_eq!(*proxy.nft.lists.borrow(), 1, "no listing when incremental");
        let last = proxy.nft.scripts.borrow().last().cloned().unwrap();
        assert!(!last.contains("flush table"), "{last}");
        assert!(last.contains("no-endpoint-services"), "{last}");

        let stats = proxy.sync(&cfg(), &services(false)).unwrap();
        assert_eq!(stats.changed_ports, 0);
        assert_eq!(proxy.nft.scripts.borrow().len(), 2, "nothing to apply");
    }

    #[test]
    fn an_error_or_a_new_configuration_or_the_period_forces_a_full_sync() {
        let mut proxy = ServiceProxy::with_nft(Fake::default());
        proxy.sync(&cfg(), &services(true)).unwrap();
        *proxy.nft.fail.borrow_mut() = true;
        assert!(proxy.sync(&cfg(), &services(false)).is_err());
        *proxy.nft.fail.borrow_mut() = false;
        assert!(proxy.sync(&cfg(), &services(false)).unwrap().full_sync);

        // A refused update is retried as a full sync in the same call.
        *proxy.nft.fail_update.borrow_mut() = true;
        let stats = proxy.sync(&cfg(), &services(true)).unwrap();
        assert!(stats.full_sync);
        assert!(
            !*proxy.nft.fail_update.borrow(),
            "the update was tried first"
        );

        let mut other = cfg();
        other.node_ips = vec![Ipv4Addr::new(192, 168, 1, 5)];
        assert!(proxy.sync(&other, &services(false)).unwrap().full_sync);
        assert!(!proxy.sync(&other, &services(true)).unwrap().full_sync);

        let applied = proxy.applied.clone().unwrap();
        let period = Duration::from_secs(60);
        assert!(!needs_full_sync(&applied, &other, applied.full_at, period));
        assert!(needs_full_sync(
            &applied,
            &other,
            applied.full_at + period,
            period
        ));
        let mut proxy = proxy.full_resync_period(Duration::ZERO);
        assert!(proxy.sync(&other, &services(true)).unwrap().full_sync);
        proxy.invalidate();
        assert!(proxy.applied.is_none());
    }
}
