//! Pure rule generation: a [`Plan`] and what the table holds now become one `nft -f` script
//! that the kernel applies as a single transaction. It owns the ruleset's shape (hooks,
//! verdict maps, per-Service and per-endpoint chains, masquerading); it must not run `nft`.
//!
//! Shape of the table (family `ip`):
//! - `nat-prerouting` (pods, outside) and `nat-output` (the node itself) jump to `services`,
//!   which looks up `daddr . l4proto . dport` in the verdict map `service-ips` and, for the
//!   node's addresses, `l4proto . dport` in `service-nodeports`: one hash lookup however
//!   many Services exist.
//! - `svc-*` per Service port: sticky clients first (`ip saddr @aff-*`), then
//!   `numgen random mod N` spreads new connections evenly over the `ep-*` chains, which DNAT.
//! - `ext-*` per NodePort marks the packet for masquerade (so replies come back through this
//!   node) before entering `svc-*`; `ep-*` does the same for hairpin traffic (a pod reaching
//!   itself through its Service).
//! - `nat-postrouting` masquerades marked packets and traffic leaving the pod CIDR.
//! - `filter-{input,forward,output}` reject new connections to Service ports without ready
//!   endpoints (sets `no-endpoint-services`, `no-endpoint-nodeports`).
//!
//! A sync keeps the table and the affinity sets (whose elements are the sticky clients):
//! it flushes every rule and the lookup maps, deletes objects no longer wanted and adds the
//! rest, all in one transaction.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ipnet::Ipv4Net;

use super::plan::{Plan, PlannedPort};
use super::types::ProxyConfig;

/// The mark bit that asks `nat-postrouting` to masquerade a packet (as kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Chains every sync keeps, with their hook declaration (empty for regular chains).
const FIXED_CHAINS: [(&str, &str); 11] = [
    (
        "nat-prerouting",
        "type nat hook prerouting priority -100; policy accept;",
    ),
    (
        "nat-output",
        "type nat hook output priority -100; policy accept;",
    ),
    (
        "nat-postrouting",
        "type nat hook postrouting priority 100; policy accept;",
    ),
    (
        "filter-input",
        "type filter hook input priority -1; policy accept;",
    ),
    (
        "filter-forward",
        "type filter hook forward priority -1; policy accept;",
    ),
    (
        "filter-output",
        "type filter hook output priority -1; policy accept;",
    ),
    ("services", ""),
    ("nodeports", ""),
    ("endpoints-check", ""),
    ("mark-for-masquerade", ""),
    ("masquerading", ""),
];

/// Sets and maps every sync keeps (and flushes), with their declaration.
const FIXED_SETS: [(&str, &str, &str); 5] = [
    (
        "map",
        "service-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "map",
        "service-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    (
        "set",
        "no-endpoint-services",
        "type ipv4_addr . inet_proto . inet_service;",
    ),
    (
        "set",
        "no-endpoint-nodeports",
        "type inet_proto . inet_service;",
    ),
    ("set", "node-ips", "type ipv4_addr;"),
];

/// The names of the chains, sets and maps the table holds now (see
/// [`super::nft::Nft::list_objects`]); empty if the table does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableObjects {
    /// Chain names.
    pub chains: BTreeSet<String>,
    /// Set names (including affinity sets).
    pub sets: BTreeSet<String>,
    /// Map names.
    pub maps: BTreeSet<String>,
}

/// A generated transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The `nft -f` script.
    pub script: String,
    /// How many existing chains, sets and maps it deletes.
    pub deleted_objects: usize,
}

/// Renders the transaction that makes table `cfg.table` implement `plan`, given what the
/// table holds now. Pure. The table name must already be validated.
pub fn render(cfg: &ProxyConfig, plan: &Plan, existing: &TableObjects) -> Ruleset {
    let t = format!("ip {}", cfg.table);
    let mut s = String::new();
    let mut line = |text: std::fmt::Arguments<'_>| {
        // Writing to a String cannot fail.
        let _ = s.write_fmt(text);
        s.push('\n');
    };

    // 1. Declare the fixed objects (idempotent), then empty them of rules and elements.
    //    Affinity sets keep their elements: those are the clients' stickiness.
    line(format_args!("add table {t}"));
    for (chain, hook) in FIXED_CHAINS {
        if hook.is_empty() {
            line(format_args!("add chain {t} {chain}"));
        } else {
            line(format_args!("add chain {t} {chain} {{ {hook} }}"));
        }
    }
    for (kind, name, decl) in FIXED_SETS {
        line(format_args!("add {kind} {t} {name} {{ {decl} }}"));
    }
    line(format_args!("flush table {t}"));
    for (kind, name, _) in FIXED_SETS {
        line(format_args!("flush {kind} {t} {name}"));
    }

    // 2. Delete what earlier syncs made and this one does not want. Rules and map elements
    //    that referenced them are gone already (same transaction).
    let mut wanted_chains: BTreeSet<&str> = FIXED_CHAINS.iter().map(|(c, _)| *c).collect();
    let mut wanted_sets: BTreeSet<&str> = FIXED_SETS
        .iter()
        .filter(|(kind, _, _)| *kind == "set")
        .map(|(_, n, _)| *n)
        .collect();
    let wanted_maps: BTreeSet<&str> = FIXED_SETS
        .iter()
        .filter(|(kind, _, _)| *kind == "map")
        .map(|(_, n, _)| *n)
        .collect();
    for port in &plan.ports {
        if !port.endpoints.is_empty() {
            wanted_chains.insert(&port.chain);
            if port.node_port.is_some() {
                wanted_chains.insert(&port.external_chain);
            }
        }
        for ep in &port.endpoints {
            wanted_chains.insert(&ep.chain);
            if let Some(set) = &ep.affinity_set {
                wanted_sets.insert(set);
            }
        }
    }
    let mut deleted_objects = 0;
    for map in existing
        .maps
        .iter()
        .filter(|m| !wanted_maps.contains(m.as_str()))
    {
        line(format_args!("delete map {t} {map}"));
        deleted_objects += 1;
    }
    for set in existing
        .sets
        .iter()
        .filter(|m| !wanted_sets.contains(m.as_str()))
    {
        line(format_args!("delete set {t} {set}"));
        deleted_objects += 1;
    }
    for chain in existing
        .chains
        .iter()
        .filter(|c| !wanted_chains.contains(c.as_str()))
    {
        line(format_args!("delete chain {t} {chain}"));
        deleted_objects += 1;
    }

    // 3. The fixed rules.
    let node_addr = if cfg.node_ips.is_empty() {
        "fib daddr type local ip daddr != 127.0.0.0/8".to_owned()
    } else {
        "ip daddr @node-ips".to_owned()
    };
    let cidr: Ipv4Net = cfg.pod_cidr.trunc();
    line(format_args!("add rule {t} nat-prerouting jump services"));
    line(format_args!("add rule {t} nat-output jump services"));
    line(format_args!(
        "add rule {t} nat-postrouting jump masquerading"
    ));
    for hook in ["filter-input", "filter-forward", "filter-output"] {
        line(format_args!(
            "add rule {t} {hook} ct state new jump endpoints-check"
        ));
    }
    line(format_args!(
        "add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips"
    ));
    line(format_args!(
        "add rule {t} services {node_addr} jump nodeports"
    ));
    line(format_args!(
        "add rule {t} nodeports meta l4proto . th dport vmap @service-nodeports"
    ));
    line(format_args!(
        "add rule {t} endpoints-check ip daddr . meta l4proto . th dport @no-endpoint-services reject"
    ));
    line(format_args!(
        "add rule {t} endpoints-check {node_addr} meta l4proto . th dport @no-endpoint-nodeports reject"
    ));
    line(format_args!(
        "add rule {t} mark-for-masquerade meta mark set meta mark | {MASQUERADE_MARK:#x}"
    ));
    line(format_args!(
        "add rule {t} masquerading meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} meta mark set meta mark ^ {MASQUERADE_MARK:#x} masquerade"
    ));
    line(format_args!(
        "add rule {t} masquerading ip saddr {cidr} ip daddr != {cidr} masquerade"
    ));

    // 4. Per Service port: chains, affinity sets, rules.
    for port in plan.ports.iter().filter(|p| !p.endpoints.is_empty()) {
        render_port(&mut line, &t, port);
    }

    // 5. Elements of the lookup maps and sets.
    let mut service_ips = Vec::new();
    let mut service_nodeports = Vec::new();
    let mut no_endpoint_services = Vec::new();
    let mut no_endpoint_nodeports = Vec::new();
    for port in &plan.ports {
        let frontend = format!("{} . {} . {}", port.cluster_ip, port.protocol, port.port);
        let node_frontend = port.node_port.map(|np| format!("{} . {np}", port.protocol));
        if port.endpoints.is_empty() {
            no_endpoint_services.push(frontend);
            no_endpoint_nodeports.extend(node_frontend);
        } else {
            service_ips.push(format!("{frontend} : goto {}", port.chain));
            if let Some(node_frontend) = node_frontend {
                service_nodeports.push(format!("{node_frontend} : goto {}", port.external_chain));
            }
        }
    }
    let node_ips: Vec<String> = cfg
        .node_ips
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|ip| ip.to_string())
        .collect();
    for (name, elements) in [
        ("service-ips", service_ips),
        ("service-nodeports", service_nodeports),
        ("no-endpoint-services", no_endpoint_services),
        ("no-endpoint-nodeports", no_endpoint_nodeports),
        ("node-ips", node_ips),
    ] {
        if !elements.is_empty() {
            line(format_args!(
                "add element {t} {name} {{ {} }}",
                elements.join(", ")
            ));
        }
    }

    Ruleset {
        script: s,
        deleted_objects,
    }
}

fn render_port(line: &mut impl FnMut(std::fmt::Arguments<'_>), t: &str, port: &PlannedPort) {
    let svc = &port.chain;
    let comment = comment(&port.label);
    line(format_args!("add chain {t} {svc}"));
    for ep in &port.endpoints {
        line(format_args!("add chain {t} {}", ep.chain));
        if let (Some(set), Some(timeout)) = (&ep.affinity_set, port.affinity_timeout) {
            line(format_args!(
                "add set {t} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            ));
            line(format_args!(
                "add rule {t} {svc} ip saddr @{set} goto {}",
                ep.chain
            ));
        }
    }
    if let [only] = port.endpoints.as_slice() {
        line(format_args!(
            "add rule {t} {svc} goto {} comment \"{comment}\"",
            only.chain
        ));
    } else {
        let targets: Vec<String> = port
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{i} : goto {}", ep.chain))
            .collect();
        line(format_args!(
            "add rule {t} {svc} numgen random mod {} vmap {{ {} }} comment \"{comment}\"",
            port.endpoints.len(),
            targets.join(", ")
        ));
    }
    if port.node_port.is_some() {
        let ext = &port.external_chain;
        line(format_args!("add chain {t} {ext}"));
        line(format_args!("add rule {t} {ext} jump mark-for-masquerade"));
        line(format_args!("add rule {t} {ext} goto {svc}"));
    }
    for ep in &port.endpoints {
        let chain = &ep.chain;
        line(format_args!(
            "add rule {t} {chain} ip saddr {} jump mark-for-masquerade",
            ep.ip
        ));
        if let Some(set) = &ep.affinity_set {
            line(format_args!(
                "add rule {t} {chain} update @{set} {{ ip saddr }}"
            ));
        }
        line(format_args!(
            "add rule {t} {chain} meta l4proto {} dnat to {}:{}",
            port.protocol, ep.ip, ep.port
        ));
    }
}

/// A rule comment: at most 128 bytes (the kernel's limit) of the label, without quotes.
fn comment(label: &str) -> String {
    label
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\n'))
        .scan(0, |len, c| {
            *len += c.len_utf8();
            (*len <= 120).then_some(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::services::plan::plan;
    use crate::services::types::{Endpoint, Protocol, ServicePort, ServiceSpec};

    fn cfg(node_ips: Vec<Ipv4Addr>) -> ProxyConfig {
        ProxyConfig {
            table: "capstan".into(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            node_ips,
        }
    }

    fn web(affinity: Option<u32>, endpoints: &[[u8; 4]]) -> (ServiceSpec, Vec<Endpoint>) {
        (
            ServiceSpec {
                namespace: "default".into(),
                name: "web".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: Some(30080),
                }],
                session_affinity_timeout: affinity,
            },
            endpoints
                .iter()
                .map(|ip| Endpoint {
                    ip: Ipv4Addr::from(*ip),
                    port: 8080,
                    port_name: "http".into(),
                    ready: true,
                })
                .collect(),
        )
    }

    fn lines(script: &str) -> Vec<&str> {
        script.lines().collect()
    }

    /// The lines after the fixed part of the table (everything a Service adds).
    fn service_lines(script: &str) -> Vec<&str> {
        let all = lines(script);
        let start = all
            .iter()
            .position(|l| l.contains("masquerading ip saddr"))
            .unwrap();
        all[start + 1..].to_vec()
    }

    #[test]
    fn a_node_port_service_with_affinity_renders_to_maps_chains_and_sets() {
        let plan = plan(&[web(Some(30), &[[10, 244, 0, 2], [10, 244, 0, 3]])]);
        let (svc, ext) = (&plan.ports[0].chain, &plan.ports[0].external_chain);
        let (ep2, ep3) = (&plan.ports[0].endpoints[0], &plan.ports[0].endpoints[1]);
        let (aff2, aff3) = (
            ep2.affinity_set.as_deref().unwrap(),
            ep3.affinity_set.as_deref().unwrap(),
        );
        let (ep2, ep3) = (&ep2.chain, &ep3.chain);
        let ruleset = render(&cfg(vec![]), &plan, &TableObjects::default());
        assert_eq!(ruleset.deleted_objects, 0);
        let t = "ip capstan";
        let expected = [
            format!("add chain {t} {svc}"),
            format!("add chain {t} {ep2}"),
            format!("add set {t} {aff2} {{ type ipv4_addr; flags dynamic,timeout; timeout 30s; }}"),
            format!("add rule {t} {svc} ip saddr @{aff2} goto {ep2}"),
            format!("add chain {t} {ep3}"),
            format!("add set {t} {aff3} {{ type ipv4_addr; flags dynamic,timeout; timeout 30s; }}"),
            format!("add rule {t} {svc} ip saddr @{aff3} goto {ep3}"),
            format!("add rule {t} {svc} numgen random mod 2 vmap {{ 0 : goto {ep2}, 1 : goto {ep3} }} comment \"default/web:http\""),
            format!("add chain {t} {ext}"),
            format!("add rule {t} {ext} jump mark-for-masquerade"),
            format!("add rule {t} {ext} goto {svc}"),
            format!("add rule {t} {ep2} ip saddr 10.244.0.2 jump mark-for-masquerade"),
            format!("add rule {t} {ep2} update @{aff2} {{ ip saddr }}"),
            format!("add rule {t} {ep2} meta l4proto tcp dnat to 10.244.0.2:8080"),
            format!("add rule {t} {ep3} ip saddr 10.244.0.3 jump mark-for-masquerade"),
            format!("add rule {t} {ep3} update @{aff3} {{ ip saddr }}"),
            format!("add rule {t} {ep3} meta l4proto tcp dnat to 10.244.0.3:8080"),
            format!("add element {t} service-ips {{ 10.96.0.10 . tcp . 80 : goto {svc} }}"),
            format!("add element {t} service-nodeports {{ tcp . 30080 : goto {ext} }}"),
        ];
        assert_eq!(service_lines(&ruleset.script), expected);

        let all = lines(&ruleset.script);
        for fixed in [
            "add chain ip capstan nat-prerouting { type nat hook prerouting priority -100; policy accept; }",
            "add chain ip capstan nat-output { type nat hook output priority -100; policy accept; }",
            "flush table ip capstan",
            "flush map ip capstan service-ips",
            "add rule ip capstan services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add rule ip capstan services fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports",
            "add rule ip capstan masquerading ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade",
        ] {
            assert!(all.contains(&fixed), "missing {fixed:?}");
        }
        let flush = all
            .iter()
            .position(|l| l.starts_with("flush table"))
            .unwrap();
        let first_rule = all.iter().position(|l| l.starts_with("add rule")).unwrap();
        assert!(flush < first_rule, "rules are added after the flush");
        assert!(!all.iter().any(|l| l.contains("flush set ip capstan aff-")));
    }

    #[test]
    fn no_ready_endpoints_means_reject_entries_and_no_chains() {
        let (mut spec, mut eps) = web(None, &[[10, 244, 0, 2]]);
        eps[0].ready = false;
        spec.cluster_ip = Some(Ipv4Addr::new(10, 96, 0, 11));
        let plan = plan(&[(spec, eps)]);
        let ruleset = render(
            &cfg(vec![Ipv4Addr::new(192, 168, 1, 5)]),
            &plan,
            &TableObjects::default(),
        );
        assert_eq!(
            service_lines(&ruleset.script),
            vec![
                "add element ip capstan no-endpoint-services { 10.96.0.11 . tcp . 80 }",
                "add element ip capstan no-endpoint-nodeports { tcp . 30080 }",
                "add element ip capstan node-ips { 192.168.1.5 }",
            ]
        );
        assert!(lines(&ruleset.script).contains(
            &"add rule ip capstan endpoints-check ip daddr @node-ips meta l4proto . th dport @no-endpoint-nodeports reject"
        ));
    }

    #[test]
    fn one_endpoint_is_a_plain_goto_without_numgen() {
        let plan = plan(&[web(None, &[[10, 244, 0, 2]])]);
        let port = &plan.ports[0];
        let script = render(&cfg(vec![]), &plan, &TableObjects::default()).script;
        let goto = format!(
            "add rule ip capstan {} goto {} comment \"default/web:http\"",
            port.chain, port.endpoints[0].chain
        );
        assert!(lines(&script).contains(&goto.as_str()), "{script}");
        assert!(!script.contains("numgen"));
        assert!(!script.contains("aff-"));
    }

    #[test]
    fn stale_objects_are_deleted_and_kept_affinity_sets_are_not_flushed() {
        let plan = plan(&[web(Some(30), &[[10, 244, 0, 2]])]);
        let kept_set = plan.ports[0].endpoints[0].affinity_set.clone().unwrap();
        let kept_chain = plan.ports[0].chain.clone();
        let existing = TableObjects {
            chains: ["services", "svc-old", "ep-old", kept_chain.as_str()]
                .map(String::from)
                .into(),
            sets: ["node-ips", "aff-old", kept_set.as_str()]
                .map(String::from)
                .into(),
            maps: ["service-ips", "legacy-map"].map(String::from).into(),
        };
        let ruleset = render(&cfg(vec![]), &plan, &existing);
        assert_eq!(ruleset.deleted_objects, 4);
        let all = lines(&ruleset.script);
        let deletes: Vec<_> = all.iter().filter(|l| l.starts_with("delete")).collect();
        assert_eq!(
            deletes,
            vec![
                &"delete map ip capstan legacy-map",
                &"delete set ip capstan aff-old",
                &"delete chain ip capstan ep-old",
                &"delete chain ip capstan svc-old",
            ]
        );
        let flush = all
            .iter()
            .position(|l| l.starts_with("flush table"))
            .unwrap();
        let first_delete = all.iter().position(|l| l.starts_with("delete")).unwrap();
        assert!(
            flush < first_delete,
            "references are flushed before deletes"
        );
        assert!(!all
            .iter()
            .any(|l| l.starts_with("flush set") && l.contains(&kept_set)));
    }
}
