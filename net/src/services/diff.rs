//! Pure incremental updates: from the plan the tables implement now and the plan wanted
//! next to one `nft -f` transaction that touches only the Service ports that changed (their
//! lookup elements, their `svc-*`/`ext-*` chains and affinity sets in their shard table)
//! and new `hairpin` elements. It owns that comparison and the order of the commands; it
//! must not run `nft` or decide when a full sync is needed (that is [`super::proxy`]).
//!
//! Only commands that `nft` 1.0.6 evaluates without listing every chain of every table are
//! used where possible (`add chain X { rules }`, `flush chain`, `add map M { ...; elements =
//! { ... } }`), so a change costs about the same however many Services exist; `delete
//! element` and `delete chain` (a Service or its last endpoint going) make `nft` list all
//! chains once per transaction, which grows with the Service count.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use super::plan::{Plan, PlannedPort};
use super::rules::{
    family_table, hairpin_element, port_chains, port_elements, port_sets, render_port,
    write_elements, Element, Script, HAIRPIN,
};

/// An incremental transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The `nft -f` script; empty when nothing changed.
    pub script: String,
    /// Service ports added, changed or removed.
    pub changed_ports: usize,
    /// Chains and sets it deletes.
    pub deleted_objects: usize,
}

/// Renders the transaction that turns table `table` from implementing `old` into
/// implementing `new`. Pure, and linear in the number of ports with cheap work for unchanged
/// ones. Both plans must come from [`super::plan::plan`] (a port is identified by its chain
/// name), and the table must hold exactly what `old` says.
///
/// The `hairpin` set only grows here: an address that stops being an endpoint stays until
/// the next full sync. That is harmless, as only a packet DNATed to that address can match.
pub fn render_update(table: &str, old: &Plan, new: &Plan) -> Update {
    let t = family_table(table, None);
    let st = |port: &PlannedPort| family_table(table, Some(port.shard));
    let before: HashMap<&str, &PlannedPort> =
        old.ports.iter().map(|p| (p.chain.as_str(), p)).collect();
    let after: HashSet<&str> = new.ports.iter().map(|p| p.chain.as_str()).collect();
    // Ports that go away or change, as they are now, and ports that come or change, as they
    // will be (with what they were, if anything).
    let mut coming: Vec<(&PlannedPort, Option<&PlannedPort>)> = Vec::new();
    let mut gone: Vec<&PlannedPort> = Vec::new();
    for port in &new.ports {
        match before.get(port.chain.as_str()) {
            Some(was) if *was == port => {}
            Some(was) => {
                coming.push((port, Some(was)));
                gone.push(was);
            }
            None => coming.push((port, None)),
        }
    }
    gone.extend(
        old.ports
            .iter()
            .filter(|p| !after.contains(p.chain.as_str())),
    );
    let changed_ports = gone.len() + coming.iter().filter(|(_, was)| was.is_none()).count();

    let old_elements: BTreeSet<Element> = gone.iter().flat_map(|p| port_elements(p)).collect();
    let new_elements: BTreeSet<Element> =
        coming.iter().flat_map(|(p, _)| port_elements(p)).collect();
    // Objects by (shard table, name): a port keeps its shard (it is its Service's).
    let old_chains: BTreeSet<(String, &str)> = gone
        .iter()
        .flat_map(|p| port_chains(p).into_iter().map(|c| (st(p), c)))
        .collect();
    let new_chains: BTreeSet<(String, &str)> = coming
        .iter()
        .flat_map(|(p, _)| port_chains(p).into_iter().map(|c| (st(p), c)))
        .collect();
    let old_sets: BTreeSet<(String, &str)> = gone
        .iter()
        .flat_map(|p| port_sets(p).map(|s| (st(p), s)))
        .collect();
    let new_sets: BTreeSet<(String, &str)> = coming
        .iter()
        .flat_map(|(p, _)| port_sets(p).map(|s| (st(p), s)))
        .collect();
    let hairpin: BTreeSet<Ipv4Addr> = coming
        .iter()
        .flat_map(|(port, was)| {
            port.endpoints
                .iter()
                .map(|ep| ep.ip)
                .filter(move |ip| !was.is_some_and(|w| w.endpoints.iter().any(|e| e.ip == *ip)))
        })
        .collect();

    let mut out = Script::default();
    // 1. Lookup elements that go: the references to chains about to be deleted go with
    //    them, and a key that moves to another port is free for step 6.
    let deletes: Vec<Element> = old_elements.difference(&new_elements).cloned().collect();
    write_elements(&mut out, "delete", table, &deletes);
    // 2. Empty the chains that are rewritten or deleted (all of them first: an `ext-*`
    //    chain refers to its `svc-*` chain), 3. delete the unwanted ones, 4. and the
    //    affinity sets no rule refers to any more.
    for (st, chain) in &old_chains {
        out.line(format_args!("flush chain {st} {chain}"));
    }
    let mut deleted_objects = 0;
    for (st, chain) in old_chains.difference(&new_chains) {
        out.line(format_args!("delete chain {st} {chain}"));
        deleted_objects += 1;
    }
    for (st, set) in old_sets.difference(&new_sets) {
        out.line(format_args!("delete set {st} {set}"));
        deleted_objects += 1;
    }
    // 5. Chains (new or just emptied) with their rules and affinity sets; kept sets keep
    //    their sticky clients.
    for (port, _) in &coming {
        render_port(&mut out, &st(port), port);
    }
    // 6. Lookup elements that come (adding an element that exists is a no-op).
    let adds: Vec<Element> = new_elements.difference(&old_elements).cloned().collect();
    write_elements(&mut out, "add", table, &adds);
    let hairpin: Vec<String> = hairpin.into_iter().map(hairpin_element).collect();
    out.elements("add", &t, HAIRPIN, hairpin.iter().map(String::as_str));
    Update {
        script: out.0,
        changed_ports,
        deleted_objects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::plan::plan;
    use crate::services::rules::tests::svc;

    fn lines(update: &Update) -> Vec<&str> {
        update.script.lines().collect()
    }

    #[test]
    fn nothing_changed_means_an_empty_script() {
        let p = plan(&[svc("web", 10, Some(30), &[2, 3])]);
        let update = render_update("capstan", &p, &p.clone());
        assert_eq!(update.script, "");
        assert_eq!(update.changed_ports, 0);
    }

    #[test]
    fn an_unready_endpoint_rewrites_only_its_service_chain() {
        let services = vec![svc("web", 10, None, &[2, 3]), svc("other", 11, None, &[4])];
        let old = plan(&services);
        let mut changed = services.clone();
        changed[0].1[0].ready = false;
        let new = plan(&changed);
        let update = render_update("capstan", &old, &new);
        let web = new
            .ports
            .iter()
            .find(|p| p.label == "default/web:http")
            .unwrap();
        let (chain, ext) = (&web.chain, &web.external_chain);
        let t = format!("ip capstan-s{}", web.shard);
        assert_eq!(update.changed_ports, 1);
        assert_eq!(update.deleted_objects, 0);
        assert_eq!(
            lines(&update),
            vec![
                format!("flush chain {t} {ext}"),
                format!("flush chain {t} {chain}"),
                format!("add chain {t} {chain} {{ meta l4proto tcp dnat to 10.244.0.3:8080 comment \"default/web:http\"; }}"),
                format!("add chain {t} {ext} {{ jump mark-for-masquerade; goto {chain}; }}"),
            ]
        );
    }

    #[test]
    fn an_added_service_adds_its_chains_sets_and_elements_only() {
        let old = plan(&[svc("web", 10, None, &[2])]);
        let new = plan(&[
            svc("web", 10, None, &[2]),
            svc("sticky", 12, Some(60), &[2, 5]),
        ]);
        let update = render_update("capstan", &old, &new);
        let sticky = new
            .ports
            .iter()
            .find(|p| p.label == "default/sticky:http")
            .unwrap();
        let all = lines(&update);
        let t = format!("ip capstan-s{}", sticky.shard);
        assert_eq!(update.changed_ports, 1);
        assert!(all.iter().all(|l| l.starts_with("add ")), "{all:#?}");
        let aff: Vec<_> = sticky
            .endpoints
            .iter()
            .map(|e| e.affinity_set.clone().unwrap())
            .collect();
        for set in &aff {
            assert!(all.contains(
                &format!(
                    "add set {t} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}"
                )
                .as_str()
            ));
        }
        assert!(all
            .iter()
            .any(|l| l.starts_with(&format!("add chain {t} {} {{", sticky.chain))));
        assert!(all.contains(
            &format!(
                "add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; elements = {{ 10.96.0.12 . tcp . 80 : goto {} }} }}",
                sticky.chain
            )
            .as_str()
        ));
        assert!(all.contains(
            &format!(
                "add map {t} service-nodeports {{ type inet_proto . inet_service : verdict; elements = {{ tcp . 30012 : goto {} }} }}",
                sticky.external_chain
            )
            .as_str()
        ));
        // Adding 10.244.0.2 again (it hairpins for web already) is a no-op in nft.
        assert!(all.contains(
            &"add set ip capstan hairpin { type ipv4_addr . ipv4_addr; elements = { 10.244.0.2 . 10.244.0.2, 10.244.0.5 . 10.244.0.5 } }"
        ));
    }

    #[test]
    fn a_deleted_service_loses_elements_then_chains_then_sets() {
        let old = plan(&[
            svc("web", 10, None, &[2]),
            svc("sticky", 12, Some(60), &[5]),
        ]);
        let new = plan(&[svc("web", 10, None, &[2])]);
        let sticky = old
            .ports
            .iter()
            .find(|p| p.label == "default/sticky:http")
            .unwrap();
        let (chain, ext) = (&sticky.chain, &sticky.external_chain);
        let t = format!("ip capstan-s{}", sticky.shard);
        let aff = sticky.endpoints[0].affinity_set.clone().unwrap();
        let update = render_update("capstan", &old, &new);
        assert_eq!(update.deleted_objects, 3);
        let mut flushes = [
            format!("flush chain {t} {chain}"),
            format!("flush chain {t} {ext}"),
        ];
        flushes.sort();
        let mut deletes = [
            format!("delete chain {t} {chain}"),
            format!("delete chain {t} {ext}"),
        ];
        deletes.sort();
        let mut expected = vec![
            format!("delete element {t} service-ips {{ 10.96.0.12 . tcp . 80 }}"),
            format!("delete element {t} service-nodeports {{ tcp . 30012 }}"),
        ];
        expected.extend(flushes);
        expected.extend(deletes);
        expected.push(format!("delete set {t} {aff}"));
        assert_eq!(lines(&update), expected);
    }

    #[test]
    fn losing_the_last_endpoint_swaps_the_map_entries_for_reject_entries() {
        let old = plan(&[svc("web", 10, None, &[2])]);
        let mut gone = svc("web", 10, None, &[2]);
        gone.1[0].ready = false;
        let new = plan(&[gone]);
        let update = render_update("capstan", &old, &new);
        let all = lines(&update);
        let first_add = all.iter().position(|l| l.starts_with("add")).unwrap();
        let last_delete = all.iter().rposition(|l| l.starts_with("delete")).unwrap();
        assert!(last_delete < first_add, "{all:#?}");
        let t = format!("ip capstan-s{}", old.ports[0].shard);
        assert!(all.contains(
            &format!("delete element {t} service-ips {{ 10.96.0.10 . tcp . 80 }}").as_str()
        ));
        assert!(
            all.contains(&"add set ip capstan no-endpoint-services { type ipv4_addr . inet_proto . inet_service; elements = { 10.96.0.10 . tcp . 80 } }")
        );
        assert!(all.contains(&"add set ip capstan no-endpoint-nodeports { type inet_proto . inet_service; elements = { tcp . 30010 } }"));
        assert_eq!(update.deleted_objects, 2, "svc and ext chains");
    }

    #[test]
    fn a_cluster_ip_taken_over_by_another_service_is_deleted_before_it_is_added() {
        // "b/late" loses the conflict while "a/early" holds the address, then gets it.
        let mut early = svc("early", 10, None, &[2]);
        early.0.namespace = "a".into();
        let mut late = svc("late", 10, None, &[3]);
        late.0.namespace = "b".into();
        let old = plan(&[early, late.clone()]);
        assert_eq!(old.skipped.len(), 1);
        let new = plan(&[late]);
        let update = render_update("capstan", &old, &new);
        let all = lines(&update);
        let (t_early, t_late) = (old.ports[0].shard, new.ports[0].shard);
        let del = all
            .iter()
            .position(|l| {
                l.starts_with(&format!(
                    "delete element ip capstan-s{t_early} service-ips {{ 10.96.0.10 . tcp . 80 }}"
                ))
            })
            .unwrap();
        let add = all
            .iter()
            .position(|l| {
                l.starts_with(&format!(
                    "add map ip capstan-s{t_late} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; elements = {{ 10.96.0.10 . tcp . 80 : goto"
                ))
            })
            .unwrap();
        assert!(del < add, "{all:#?}");
        assert_eq!(update.changed_ports, 2);
    }
}
