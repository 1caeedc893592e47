//! What the tables implement, Service by Service: the input each Service was planned from,
//! its planned ports, and how many Services claim each frontend and NodePort. It lets a sync
//! re-plan and diff only the Services whose input changed, so the Rust side of a one-Service
//! change costs a comparison per Service rather than planning and diffing them all. It owns
//! deciding when that shortcut gives exactly what [`plan`] would (no conflict is involved);
//! it must not render nftables syntax or touch the kernel.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use super::plan::{plan, plan_with_owners, Plan, PlannedPort};
use super::types::{Endpoint, Protocol, ServiceSpec, SyncStats, NODE_PORT_MAX, NODE_PORT_MIN};

/// One Service as last planned.
#[derive(Debug, Clone)]
struct Entry {
    input: (ServiceSpec, Vec<Endpoint>),
    ports: Vec<PlannedPort>,
    skipped: usize,
}

/// The planned state of every Service, by namespace and name.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanCache {
    /// Namespace, then name (nested so that lookups need no allocation).
    entries: HashMap<String, HashMap<String, Entry>>,
    len: usize,
    /// How many Services ask for each (cluster IP, protocol, port).
    frontends: HashMap<Frontend, u32>,
    /// How many Services ask for each (protocol, NodePort) in range.
    node_ports: HashMap<NodePort, u32>,
    /// Totals over all entries (the per-sync fields stay zero).
    totals: SyncStats,
    /// The input held a Service twice: entries and counts disagree, so never shortcut.
    duplicates: bool,
    /// The Services in the order of the last input: callers pass a stable order, so a walk
    /// along it finds the changes without hashing every Service.
    order: Vec<(String, String)>,
}

/// How long a run of deleted Services the ordered walk skips before it gives up.
const LOOKAHEAD: usize = 16;

/// The Services that changed and the keys of those that went.
type Changes<'a> = (
    Vec<&'a (ServiceSpec, Vec<Endpoint>)>,
    usize,
    Vec<(String, String)>,
);

/// The Services an incremental sync changes: their ports before and after.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// The ports of the changed Services as the tables implement them now.
    pub(crate) old: Plan,
    /// Their ports as wanted next, and what was left out of them.
    pub(crate) new: Plan,
}

/// A cluster IP, protocol and port.
type Frontend = (Ipv4Addr, Protocol, u16);
/// A protocol and NodePort.
type NodePort = (Protocol, u16);

/// What a Service asks for, whether or not the plan grants it: its frontends and NodePorts.
fn claims(spec: &ServiceSpec) -> (Vec<Frontend>, Vec<NodePort>) {
    let Some(ip) = spec.cluster_ip else {
        return (Vec::new(), Vec::new());
    };
    let ports = spec.ports.iter().filter(|p| p.port != 0);
    let frontends = ports.clone().map(|p| (ip, p.protocol, p.port)).collect();
    let node_ports = ports
        .filter_map(|p| {
            let np = p.node_port?;
            (NODE_PORT_MIN..=NODE_PORT_MAX)
                .contains(&np)
                .then_some((p.protocol, np))
        })
        .collect();
    (frontends, node_ports)
}

/// Adds (or with `sign` false removes) one claim on each of `keys`.
fn count<K: std::hash::Hash + Eq + Copy>(map: &mut HashMap<K, u32>, keys: &[K], sign: bool) {
    for k in keys {
        if sign {
            *map.entry(*k).or_default() += 1;
        } else if let Some(n) = map.get_mut(k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(k);
            }
        }
    }
}

/// Whether every one of `keys` is distinct and claimed at most once in `map`.
fn alone<K: std::hash::Hash + Eq + Copy>(map: &HashMap<K, u32>, keys: &[K]) -> bool {
    let mut own = HashSet::with_capacity(keys.len());
    keys.iter()
        .all(|k| own.insert(*k) && map.get(k).copied().unwrap_or(0) <= 1)
}

/// Adds (or subtracts) an entry's share of the totals.
fn tally(totals: &mut SyncStats, entry: &Entry, sign: bool) {
    let ports = &entry.ports;
    let share = [
        ports.len(),
        ports.iter().filter(|p| p.endpoints.is_empty()).count(),
        ports.iter().map(|p| p.endpoints.len()).sum(),
        ports.iter().filter(|p| p.node_port.is_some()).count(),
        entry.skipped,
    ];
    let fields = [
        &mut totals.service_ports,
        &mut totals.without_endpoints,
        &mut totals.endpoints,
        &mut totals.node_ports,
        &mut totals.skipped,
    ];
    for (field, n) in fields.into_iter().zip(share) {
        *field = if sign {
            *field + n
        } else {
            field.saturating_sub(n)
        };
    }
}

impl PlanCache {
    /// The cache for `services`, planned in full as `plan` (from [`plan_with_owners`]).
    fn from_plan(
        services: &[(ServiceSpec, Vec<Endpoint>)],
        plan: &Plan,
        port_owners: &[usize],
        skipped_owners: &[usize],
    ) -> PlanCache {
        let mut cache = PlanCache::default();
        let mut ports: Vec<Vec<PlannedPort>> = vec![Vec::new(); services.len()];
        for (port, owner) in plan.ports.iter().zip(port_owners) {
            ports[*owner].push(port.clone());
        }
        let mut skipped = vec![0; services.len()];
        for owner in skipped_owners {
            skipped[*owner] += 1;
        }
        for ((input, ports), skipped) in services.iter().zip(ports).zip(skipped) {
            let (f, np) = claims(&input.0);
            count(&mut cache.frontends, &f, true);
            count(&mut cache.node_ports, &np, true);
            let entry = Entry {
                input: input.clone(),
                ports,
                skipped,
            };
            tally(&mut cache.totals, &entry, true);
            // A duplicate key keeps the first; [`PlanCache::delta`] refuses such input.
            let names = cache.entries.entry(input.0.namespace.clone()).or_default();
            if names.contains_key(&input.0.name) {
                cache.duplicates = true;
            } else {
                names.insert(input.0.name.clone(), entry);
                cache.len += 1;
                cache
                    .order
                    .push((input.0.namespace.clone(), input.0.name.clone()));
            }
        }
        cache
    }

    fn get(&self, spec: &ServiceSpec) -> Option<&Entry> {
        self.entries.get(&spec.namespace)?.get(&spec.name)
    }

    /// Updates the cache to `services` and returns the changed Services' ports before and
    /// after, or `None` (leaving the cache as it was) when a changed Service shares a
    /// frontend or NodePort with another Service, before or after, or a Service appears
    /// twice: then only a plan of everything decides who wins, and the caller plans in full.
    pub(crate) fn delta(&mut self, services: &[(ServiceSpec, Vec<Endpoint>)]) -> Option<Delta> {
        if self.duplicates {
            return None;
        }
        let (changed, added, mut olds) = self.walk(services).or_else(|| self.hashed(services))?;
        let reordered = added > 0 || !olds.is_empty();
        if changed.is_empty() && olds.is_empty() {
            return Some(Delta::default());
        }
        olds.extend(
            changed
                .iter()
                .filter(|(s, _)| self.get(s).is_some())
                .map(|(s, _)| (s.namespace.clone(), s.name.clone())),
        );
        let old_claims: Vec<_> = olds
            .iter()
            .filter_map(|(ns, name)| self.entries.get(ns)?.get(name))
            .map(|e| claims(&e.input.0))
            .collect();
        let new_claims: Vec<_> = changed.iter().map(|(s, _)| claims(s)).collect();

        // Every claim a changed Service made or makes must be its own alone.
        if !old_claims
            .iter()
            .all(|(f, np)| alone(&self.frontends, f) && alone(&self.node_ports, np))
        {
            return None;
        }
        for (f, np) in &old_claims {
            count(&mut self.frontends, f, false);
            count(&mut self.node_ports, np, false);
        }
        for (f, np) in &new_claims {
            count(&mut self.frontends, f, true);
            count(&mut self.node_ports, np, true);
        }
        if !new_claims
            .iter()
            .all(|(f, np)| alone(&self.frontends, f) && alone(&self.node_ports, np))
        {
            for (f, np) in &new_claims {
                count(&mut self.frontends, f, false);
                count(&mut self.node_ports, np, false);
            }
            for (f, np) in &old_claims {
                count(&mut self.frontends, f, true);
                count(&mut self.node_ports, np, true);
            }
            return None;
        }

        let mut delta = Delta::default();
        for (ns, name) in &olds {
            let Some(names) = self.entries.get_mut(ns) else {
                continue;
            };
            if let Some(e) = names.remove(name) {
                tally(&mut self.totals, &e, false);
                self.len -= 1;
                delta.old.ports.extend(e.ports);
            }
            if names.is_empty() {
                self.entries.remove(ns);
            }
        }
        for input in changed {
            // Alone, it plans as it would among all: nothing it asks for is contested.
            let planned = plan(std::slice::from_ref(input));
            let skipped = planned.skipped.len();
            delta.new.ports.extend(planned.ports.iter().cloned());
            delta.new.skipped.extend(planned.skipped);
            let entry = Entry {
                input: input.clone(),
                ports: planned.ports,
                skipped,
            };
            tally(&mut self.totals, &entry, true);
            self.entries
                .entry(input.0.namespace.clone())
                .or_default()
                .insert(input.0.name.clone(), entry);
            self.len += 1;
        }
        if reordered {
            self.order = services
                .iter()
                .map(|(s, _)| (s.namespace.clone(), s.name.clone()))
                .collect();
        }
        Some(delta)
    }

    /// The changes found by walking `services` along the last input's order: Services in
    /// the same place are compared, new ones looked up, short runs of deleted ones skipped.
    /// `None` when the order changed (or a new Service appears twice).
    fn walk<'a>(&self, services: &'a [(ServiceSpec, Vec<Endpoint>)]) -> Option<Changes<'a>> {
        let same = |k: &(String, String), s: &ServiceSpec| k.0 == s.namespace && k.1 == s.name;
        let (mut changed, mut added, mut removed) = (Vec::new(), 0, Vec::new());
        let mut new_keys: HashSet<(&str, &str)> = HashSet::new();
        let mut j = 0;
        for input in services {
            let spec = &input.0;
            if let Some(entry) = self.get(spec) {
                let skip = self.order[j..]
                    .iter()
                    .take(LOOKAHEAD + 1)
                    .position(|k| same(k, spec))?;
                removed.extend(self.order[j..j + skip].iter().cloned());
                j += skip + 1;
                if entry.input != *input {
                    changed.push(input);
                }
            } else {
                if !new_keys.insert((spec.namespace.as_str(), spec.name.as_str())) {
                    return None;
                }
                added += 1;
                changed.push(input);
            }
        }
        removed.extend(self.order[j..].iter().cloned());
        Some((changed, added, removed))
    }

    /// The changes found by hashing every Service; `None` if one appears twice.
    fn hashed<'a>(&self, services: &'a [(ServiceSpec, Vec<Endpoint>)]) -> Option<Changes<'a>> {
        let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(services.len());
        let mut changed: Vec<&(ServiceSpec, Vec<Endpoint>)> = Vec::new();
        let mut added = 0;
        for input in services {
            if !seen.insert((input.0.namespace.as_str(), input.0.name.as_str())) {
                return None;
            }
            match self.get(&input.0) {
                Some(e) if e.input == *input => {}
                Some(_) => changed.push(input),
                None => {
                    added += 1;
                    changed.push(input);
                }
            }
        }
        let mut removed = Vec::new();
        if seen.len() - added != self.len {
            for (ns, names) in &self.entries {
                for name in names.keys() {
                    if !seen.contains(&(ns.as_str(), name.as_str())) {
                        removed.push((ns.clone(), name.clone()));
                    }
                }
            }
        }
        Some((changed, added, removed))
    }

    /// Everything as one plan, in the order [`plan`] produces (skipped entries omitted).
    pub(crate) fn plan(&self) -> Plan {
        let mut entries: Vec<(&String, &String, &Entry)> = self
            .entries
            .iter()
            .flat_map(|(ns, names)| names.iter().map(move |(n, e)| (ns, n, e)))
            .collect();
        entries.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Plan {
            ports: entries
                .iter()
                .flat_map(|(_, _, e)| e.ports.iter().cloned())
                .collect(),
            skipped: Vec::new(),
        }
    }

    /// Totals of what the cache holds (the per-sync fields are zero).
    pub(crate) fn stats(&self) -> SyncStats {
        self.totals.clone()
    }
}

/// Plans `services` in full and builds the cache of the result.
pub(crate) fn plan_all(services: &[(ServiceSpec, Vec<Endpoint>)]) -> (Plan, PlanCache) {
    let (plan, port_owners, skipped_owners) = plan_with_owners(services);
    let cache = PlanCache::from_plan(services, &plan, &port_owners, &skipped_owners);
    (plan, cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::diff::render_update;
    use crate::services::rules::tests::svc;

    fn sorted_lines(script: &str) -> Vec<String> {
        let mut lines: Vec<String> = script.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    /// Steps through `inputs`: each time, the cache's delta (or the fallback) gives the same
    /// plan, statistics and update as planning and diffing everything.
    fn check(inputs: &[Vec<(ServiceSpec, Vec<Endpoint>)>]) -> Vec<bool> {
        let (mut full_old, mut cache) = plan_all(&inputs[0]);
        let mut incremental = Vec::new();
        for services in &inputs[1..] {
            let full_new = plan(services);
            let expected = render_update("capstan", &full_old, &full_new);
            let got = match cache.delta(services) {
                Some(delta) => {
                    incremental.push(true);
                    render_update("capstan", &delta.old, &delta.new)
                }
                None => {
                    incremental.push(false);
                    let old = cache.plan();
                    assert_eq!(old.ports, full_old.ports, "the cache was left as it was");
                    let (wanted, next) = plan_all(services);
                    cache = next;
                    render_update("capstan", &old, &wanted)
                }
            };
            assert_eq!(sorted_lines(&got.script), sorted_lines(&expected.script));
            assert_eq!(got.changed_ports, expected.changed_ports);
            assert_eq!(cache.plan().ports, full_new.ports);
            let stats = cache.stats();
            assert_eq!(stats.service_ports, full_new.ports.len());
            assert_eq!(stats.skipped, full_new.skipped.len());
            assert_eq!(
                stats.endpoints,
                full_new
                    .ports
                    .iter()
                    .map(|p| p.endpoints.len())
                    .sum::<usize>()
            );
            full_old = full_new;
        }
        incremental
    }

    #[test]
    fn changed_services_alone_are_replanned_and_give_what_a_full_plan_gives() {
        let base = vec![
            svc("web", 10, None, &[2, 3]),
            svc("sticky", 11, Some(60), &[4]),
            svc("other", 12, None, &[5]),
        ];
        let mut unready = base.clone();
        unready[0].1[0].ready = false;
        let mut added = unready.clone();
        added.push(svc("new", 13, None, &[6]));
        let mut deleted = added.clone();
        deleted.remove(1);
        let mut renamed_port = deleted.clone();
        renamed_port[0].0.ports[0].port = 8080;
        // The same Services in another order, one of them changed, then one in the middle
        // deleted and one added in its place.
        let mut reordered = renamed_port.clone();
        reordered.reverse();
        reordered[0].1[0].ready = false;
        let mut replaced = reordered.clone();
        replaced[1] = svc("replacement", 14, None, &[7]);
        let all = check(&[
            base.clone(),
            base.clone(),
            unready,
            added,
            deleted,
            renamed_port,
            reordered,
            replaced,
            base,
        ]);
        assert_eq!(all, vec![true; 8]);
    }

    #[test]
    fn a_contested_frontend_or_node_port_or_a_duplicate_falls_back_to_a_full_plan() {
        let base = vec![svc("a", 10, None, &[2]), svc("b", 11, None, &[3])];
        // b takes a's cluster IP (and NodePort): a, sorting first, keeps both.
        let mut clash = base.clone();
        clash[1].0.cluster_ip = clash[0].0.cluster_ip;
        clash[1].0.ports[0].node_port = clash[0].0.ports[0].node_port;
        // Then a goes: b gets them.
        let winner = vec![clash[1].clone()];
        // b changes its endpoints while it clashes with nobody: incremental again.
        let mut quiet = winner.clone();
        quiet[0].1[0].ready = false;
        // The same Service twice.
        let twice = vec![quiet[0].clone(), quiet[0].clone()];
        let all = check(&[
            base,
            clash.clone(),
            clash,
            winner,
            quiet.clone(),
            twice,
            quiet,
        ]);
        assert_eq!(all, vec![false, true, false, true, false, false]);
        let mut cache = plan_all(&[svc("a", 10, None, &[2]), svc("a", 10, None, &[2])]).1;
        assert!(cache.delta(&[svc("a", 10, None, &[2])]).is_none());
    }
}
