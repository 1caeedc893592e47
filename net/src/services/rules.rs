//! Pure rule generation for a full sync: a [`Plan`] and what the tables hold now become one
//! `nft -f` script that the kernel applies as a single transaction. It owns the ruleset's
//! shape (tables, hooks, verdict maps, per-Service chains, masquerading) and the pieces
//! [`super::diff`] reuses for incremental updates; it must not run `nft`.
//!
//! Shape (family `ip`): a main table `<table>` and [`SHARDS`] shard tables `<table>-s<k>`.
//! Each Service lives in one shard, by a stable hash of its namespace and name, because the
//! kernel revalidates every chain of each table a transaction touches (through the verdict
//! maps): a change to one Service then costs a shard's share, not all Services'. A verdict
//! map cannot jump into another table, so every shard hooks in by itself:
//! - `nat-prerouting` (pods, outside) and `nat-output` (the node itself) of each shard jump
//!   to its `services`, which looks up `daddr . l4proto . dport` in the shard's verdict map
//!   `service-ips` and, for the node's addresses, `l4proto . dport` in `service-nodeports`:
//!   one hash lookup per shard for the first packet of a connection (the kernel runs no
//!   further NAT chain of a hook once one has set up the connection's NAT, and none for
//!   later packets).
//! - `svc-*` per Service port: sticky clients first (`ip saddr @aff-*`), then a cascade of
//!   `numgen random mod k 0` rules (k = N, N-1, ..., 2, then unconditional) spreads new
//!   connections evenly; each rule DNATs itself. There are no per-endpoint chains and no
//!   anonymous sets: the kernel binds every anonymous set by walking the whole transaction,
//!   which made a 10,000-Service sync quadratic, and every chain makes `nft`'s per-command
//!   chain cache and the kernel's table validation slower.
//! - `ext-*` per NodePort marks the packet for masquerade (so replies come back through this
//!   node, through the shard's `mark-for-masquerade`) before entering `svc-*`.
//! - In the main table, `nat-postrouting` masquerades marked packets, hairpin traffic (a pod reaching itself
//!   through its Service: after DNAT its source is its destination, set `hairpin`) and
//!   traffic leaving the pod CIDR.
//! - `filter-{input,forward,output}` reject new connections to Service ports without ready
//!   endpoints (sets `no-endpoint-services`, `no-endpoint-nodeports`).
//!
//! A full sync keeps the tables and the affinity sets (whose elements are the sticky
//! clients): it flushes every rule and the lookup maps, deletes objects no longer wanted and
//! adds the rest, all in one transaction. Chains are written as `add chain X { rules }`,
//! elements as one `add element` per map: both parse and commit in linear time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::plan::{Plan, PlannedPort, SHARDS};
use super::types::ProxyConfig;

/// The mark bit that asks `nat-postrouting` to masquerade a packet (as kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Chains of the main table, with their hook declaration (empty for regular chains).
const MAIN_CHAINS: [(&str, &str); 6] = [
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
    ("endpoints-check", ""),
    ("masquerading", ""),
];

/// Chains every shard table keeps. All shards hook in at the same priority; the kernel
/// stops running NAT chains of a hook once one of them has set up the connection's NAT.
const SHARD_CHAINS: [(&str, &str); 5] = [
    (
        "nat-prerouting",
        "type nat hook prerouting priority -100; policy accept;",
    ),
    (
        "nat-output",
        "type nat hook output priority -100; policy accept;",
    ),
    ("services", ""),
    ("nodeports", ""),
    ("mark-for-masquerade", ""),
];

/// The verdict map from cluster IP, protocol and port to a `svc-*` chain.
pub const SERVICE_IPS: &str = "service-ips";
/// The verdict map from protocol and NodePort to an `ext-*` chain.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Cluster IP, protocol and port of Service ports without ready endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Protocol and NodePort of Service ports without ready endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// `ip . ip` for every endpoint address: a DNATed packet whose source is its destination.
pub const HAIRPIN: &str = "hairpin";
/// The node addresses NodePorts answer on (when configured).
pub const NODE_IPS: &str = "node-ips";

/// Sets of the main table (which a full sync flushes), with their declaration.
const MAIN_SETS: [(&str, &str, &str); 4] = [
    (
        "set",
        NO_ENDPOINT_SERVICES,
        "type ipv4_addr . inet_proto . inet_service;",
    ),
    (
        "set",
        NO_ENDPOINT_NODEPORTS,
        "type inet_proto . inet_service;",
    ),
    ("set", HAIRPIN, "type ipv4_addr . ipv4_addr;"),
    ("set", NODE_IPS, "type ipv4_addr;"),
];

/// Sets and maps of every shard table (which a full sync flushes), with their declaration.
const SHARD_SETS: [(&str, &str, &str); 3] = [
    (
        "map",
        SERVICE_IPS,
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "map",
        SERVICE_NODEPORTS,
        "type inet_proto . inet_service : verdict;",
    ),
    ("set", NODE_IPS, "type ipv4_addr;"),
];

/// The nftables table of shard `shard` of the proxy whose main table is `table`.
pub fn shard_table(table: &str, shard: usize) -> String {
    format!("{table}-s{shard}")
}

/// The `ip <table>` an object lives in: the main table or shard `shard` of it.
pub(crate) fn family_table(table: &str, shard: Option<usize>) -> String {
    match shard {
        Some(k) => format!("ip {}", shard_table(table, k)),
        None => format!("ip {table}"),
    }
}

/// What each table the proxy owns holds now, by table name (absent tables are missing).
pub type OwnedObjects = BTreeMap<String, TableObjects>;

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

/// An `nft -f` script being written, one command a line.
#[derive(Debug, Default)]
pub(crate) struct Script(pub(crate) String);

impl Script {
    /// Appends one line.
    pub(crate) fn line(&mut self, text: std::fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        let _ = self.0.write_fmt(text);
        self.0.push('\n');
    }

    /// `<verb> element <t> <set> { a, b, c }` in one statement, nothing if `elements` is
    /// empty: one statement per set keeps parsing and the kernel's element batch linear.
    /// Adding to one of the fixed sets is written as its (idempotent) declaration with
    /// `elements = { ... }` instead: nft 1.0.6 lists every chain of every table before an
    /// `add element`, which costs more than the rest of a one-Service change at 10,000
    /// Services, but not before an `add set`/`add map`.
    pub(crate) fn elements<'a>(
        &mut self,
        verb: &str,
        t: &str,
        set: &str,
        elements: impl IntoIterator<Item = &'a str>,
    ) {
        let mut elements = elements.into_iter().peekable();
        if elements.peek().is_none() {
            return;
        }
        let fixed = MAIN_SETS
            .iter()
            .chain(SHARD_SETS.iter())
            .find(|(_, name, _)| *name == set);
        match fixed {
            Some((kind, _, decl)) if verb == "add" => {
                let _ = write!(self.0, "add {kind} {t} {set} {{ {decl} elements = {{ ");
            }
            _ => {
                let _ = write!(self.0, "{verb} element {t} {set} {{ ");
            }
        }
        for (i, e) in elements.enumerate() {
            if i > 0 {
                self.0.push_str(", ");
            }
            self.0.push_str(e);
        }
        if fixed.is_some() && verb == "add" {
            self.0.push_str(" } }\n");
        } else {
            self.0.push_str(" }\n");
        }
    }
}

/// One element of a lookup set or map: the key, and the verdict for maps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Element {
    /// The shard table it lives in; `None` for the main table.
    pub(crate) shard: Option<usize>,
    /// The set or map it belongs to.
    pub(crate) set: &'static str,
    /// The key in nft syntax (`10.96.0.1 . tcp . 80`).
    pub(crate) key: String,
    /// ` : goto <chain>` for verdict maps, empty for sets.
    pub(crate) data: String,
}

impl Element {
    /// The element as written in `add element`.
    pub(crate) fn full(&self) -> String {
        format!("{}{}", self.key, self.data)
    }
}

/// The lookup elements `port` needs: its frontends in the verdict maps when it has
/// endpoints, in the reject sets otherwise.
pub(crate) fn port_elements(port: &PlannedPort) -> Vec<Element> {
    let frontend = format!("{} . {} . {}", port.cluster_ip, port.protocol, port.port);
    let node_frontend = port.node_port.map(|np| format!("{} . {np}", port.protocol));
    let mut out = Vec::with_capacity(2);
    if port.endpoints.is_empty() {
        out.push(Element {
            shard: None,
            set: NO_ENDPOINT_SERVICES,
            key: frontend,
            data: String::new(),
        });
        if let Some(key) = node_frontend {
            out.push(Element {
                shard: None,
                set: NO_ENDPOINT_NODEPORTS,
                key,
                data: String::new(),
            });
        }
    } else {
        out.push(Element {
            shard: Some(port.shard),
            set: SERVICE_IPS,
            key: frontend,
            data: format!(" : goto {}", port.chain),
        });
        if let Some(key) = node_frontend {
            out.push(Element {
                shard: Some(port.shard),
                set: SERVICE_NODEPORTS,
                key,
                data: format!(" : goto {}", port.external_chain),
            });
        }
    }
    out
}

/// The chains `port` owns: `svc-*` when it has endpoints, and `ext-*` as well for a
/// NodePort.
pub(crate) fn port_chains(port: &PlannedPort) -> Vec<&str> {
    let mut out = Vec::with_capacity(2);
    if !port.endpoints.is_empty() {
        out.push(port.chain.as_str());
        if port.node_port.is_some() {
            out.push(port.external_chain.as_str());
        }
    }
    out
}

/// The affinity sets `port` owns (one per endpoint, with affinity only).
pub(crate) fn port_sets(port: &PlannedPort) -> impl Iterator<Item = &str> {
    port.endpoints
        .iter()
        .filter_map(|ep| ep.affinity_set.as_deref())
}

/// The addresses the `hairpin` set holds for `plan`: every endpoint's.
pub(crate) fn hairpin_addresses(plan: &Plan) -> BTreeSet<Ipv4Addr> {
    plan.ports
        .iter()
        .flat_map(|p| p.endpoints.iter().map(|ep| ep.ip))
        .collect()
}

/// A `hairpin` element for `ip`.
pub(crate) fn hairpin_element(ip: Ipv4Addr) -> String {
    format!("{ip} . {ip}")
}

/// Declares `port`'s affinity sets (idempotent: an existing set keeps its sticky clients)
/// and writes its chains with their rules. The chains must be new or flushed already.
/// Declaring the sets also puts them into `nft`'s cache, which rules referring to them need.
pub(crate) fn render_port(out: &mut Script, t: &str, port: &PlannedPort) {
    if port.endpoints.is_empty() {
        return;
    }
    if let Some(timeout) = port.affinity_timeout {
        for set in port_sets(port) {
            out.line(format_args!(
                "add set {t} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            ));
        }
    }
    let proto = port.protocol;
    let mut rules: Vec<String> = Vec::with_capacity(2 * port.endpoints.len());
    for ep in &port.endpoints {
        if let Some(set) = &ep.affinity_set {
            rules.push(format!(
                "ip saddr @{set} update @{set} {{ ip saddr }} meta l4proto {proto} dnat to {}:{}",
                ep.ip, ep.port
            ));
        }
    }
    let n = port.endpoints.len();
    let comment = comment(&port.label);
    for (i, ep) in port.endpoints.iter().enumerate() {
        // Rule i is reached with probability (n-i)/n and takes 1/(n-i) of that: 1/n each.
        let pick = if i + 1 < n {
            format!("numgen random mod {} 0 ", n - i)
        } else {
            String::new()
        };
        let stick = ep
            .affinity_set
            .as_ref()
            .map(|set| format!("update @{set} {{ ip saddr }} "))
            .unwrap_or_default();
        let note = if i + 1 == n {
            format!(" comment \"{comment}\"")
        } else {
            String::new()
        };
        rules.push(format!(
            "{pick}{stick}meta l4proto {proto} dnat to {}:{}{note}",
            ep.ip, ep.port
        ));
    }
    out.line(format_args!(
        "add chain {t} {} {{ {}; }}",
        port.chain,
        rules.join("; ")
    ));
    if port.node_port.is_some() {
        out.line(format_args!(
            "add chain {t} {} {{ jump mark-for-masquerade; goto {}; }}",
            port.external_chain, port.chain
        ));
    }
}

/// Declares the fixed chains and sets of table `t` (idempotent), empties it of rules and
/// the fixed sets of elements (affinity sets keep theirs: those are the clients'
/// stickiness), and deletes what earlier syncs made there and this one does not want.
/// Returns how many objects it deletes.
fn reset_table(
    out: &mut Script,
    t: &str,
    chains: &[(&str, &str)],
    sets: &[(&str, &str, &str)],
    ports: &[&PlannedPort],
    existing: Option<&TableObjects>,
) -> usize {
    out.line(format_args!("add table {t}"));
    for (chain, hook) in chains {
        if hook.is_empty() {
            out.line(format_args!("add chain {t} {chain}"));
        } else {
            out.line(format_args!("add chain {t} {chain} {{ {hook} }}"));
        }
    }
    for (kind, name, decl) in sets {
        out.line(format_args!("add {kind} {t} {name} {{ {decl} }}"));
    }
    out.line(format_args!("flush table {t}"));
    for (kind, name, _) in sets {
        out.line(format_args!("flush {kind} {t} {name}"));
    }
    let Some(existing) = existing else {
        return 0;
    };
    // Rules and map elements that referenced them are gone already (same transaction).
    let mut wanted_chains: BTreeSet<&str> = chains.iter().map(|(c, _)| *c).collect();
    let mut wanted_sets: BTreeSet<&str> = sets
        .iter()
        .filter(|(kind, _, _)| *kind == "set")
        .map(|(_, n, _)| *n)
        .collect();
    let wanted_maps: BTreeSet<&str> = sets
        .iter()
        .filter(|(kind, _, _)| *kind == "map")
        .map(|(_, n, _)| *n)
        .collect();
    for port in ports {
        wanted_chains.extend(port_chains(port));
        wanted_sets.extend(port_sets(port));
    }
    let mut deleted_objects = 0;
    for (kind, existing, wanted) in [
        ("map", &existing.maps, &wanted_maps),
        ("set", &existing.sets, &wanted_sets),
        ("chain", &existing.chains, &wanted_chains),
    ] {
        for name in existing.iter().filter(|n| !wanted.contains(n.as_str())) {
            out.line(format_args!("delete {kind} {t} {name}"));
            deleted_objects += 1;
        }
    }
    deleted_objects
}

/// Renders the transaction that makes the main table `cfg.table` and its [`SHARDS`] shard
/// tables implement `plan`, given what they hold now. Pure. The table name must already be
/// validated.
pub fn render(cfg: &ProxyConfig, plan: &Plan, existing: &OwnedObjects) -> Ruleset {
    let t = family_table(&cfg.table, None);
    let mut out = Script::default();
    let mut by_shard: Vec<Vec<&PlannedPort>> = vec![Vec::new(); SHARDS];
    for port in &plan.ports {
        by_shard[port.shard % SHARDS].push(port);
    }

    // 1. Declare and empty every table, delete what is no longer wanted.
    let mut deleted_objects = reset_table(
        &mut out,
        &t,
        &MAIN_CHAINS,
        &MAIN_SETS,
        &[],
        existing.get(&cfg.table),
    );
    for (k, ports) in by_shard.iter().enumerate() {
        deleted_objects += reset_table(
            &mut out,
            &family_table(&cfg.table, Some(k)),
            &SHARD_CHAINS,
            &SHARD_SETS,
            ports,
            existing.get(&shard_table(&cfg.table, k)),
        );
    }

    // Shard tables of an earlier version with more shards.
    for stale in existing.keys().filter(|name| {
        **name != cfg.table && !(0..SHARDS).any(|k| shard_table(&cfg.table, k) == **name)
    }) {
        out.line(format_args!("delete table ip {stale}"));
        deleted_objects += 1;
    }

    // 2. The fixed rules.
    let node_addr = if cfg.node_ips.is_empty() {
        "fib daddr type local ip daddr != 127.0.0.0/8".to_owned()
    } else {
        format!("ip daddr @{NODE_IPS}")
    };
    let cidr: Ipv4Net = cfg.pod_cidr.trunc();
    let rule = |out: &mut Script, t: &str, chain: &str, text: std::fmt::Arguments<'_>| {
        out.line(format_args!("add rule {t} {chain} {text}"));
    };
    rule(
        &mut out,
        &t,
        "nat-postrouting",
        format_args!("jump masquerading"),
    );
    for hook in ["filter-input", "filter-forward", "filter-output"] {
        rule(
            &mut out,
            &t,
            hook,
            format_args!("ct state new jump endpoints-check"),
        );
    }
    rule(
        &mut out,
        &t,
        "endpoints-check",
        format_args!("ip daddr . meta l4proto . th dport @{NO_ENDPOINT_SERVICES} reject"),
    );
    rule(
        &mut out,
        &t,
        "endpoints-check",
        format_args!("{node_addr} meta l4proto . th dport @{NO_ENDPOINT_NODEPORTS} reject"),
    );
    rule(
        &mut out,
        &t,
        "masquerading",
        format_args!("meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} meta mark set meta mark ^ {MASQUERADE_MARK:#x} masquerade"),
    );
    rule(
        &mut out,
        &t,
        "masquerading",
        format_args!("ct status dnat ip saddr . ip daddr @{HAIRPIN} masquerade"),
    );
    rule(
        &mut out,
        &t,
        "masquerading",
        format_args!("ip saddr {cidr} ip daddr != {cidr} masquerade"),
    );
    for k in 0..SHARDS {
        let st = family_table(&cfg.table, Some(k));
        rule(
            &mut out,
            &st,
            "nat-prerouting",
            format_args!("jump services"),
        );
        rule(&mut out, &st, "nat-output", format_args!("jump services"));
        rule(
            &mut out,
            &st,
            "services",
            format_args!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
        );
        rule(
            &mut out,
            &st,
            "services",
            format_args!("{node_addr} jump nodeports"),
        );
        rule(
            &mut out,
            &st,
            "nodeports",
            format_args!("meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        );
        rule(
            &mut out,
            &st,
            "mark-for-masquerade",
            format_args!("meta mark set meta mark | {MASQUERADE_MARK:#x}"),
        );
    }

    // 3. Per Service port: affinity sets and chains, in its shard.
    for port in &plan.ports {
        render_port(&mut out, &family_table(&cfg.table, Some(port.shard)), port);
    }

    // 4. Elements of the lookup maps and sets, one statement per set.
    let mut elements: Vec<Element> = plan.ports.iter().flat_map(port_elements).collect();
    elements.sort();
    write_elements(&mut out, "add", &cfg.table, &elements);
    let hairpin: Vec<String> = hairpin_addresses(plan)
        .into_iter()
        .map(hairpin_element)
        .collect();
    out.elements("add", &t, HAIRPIN, hairpin.iter().map(String::as_str));
    let node_ips: Vec<String> = cfg
        .node_ips
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|ip| ip.to_string())
        .collect();
    out.elements("add", &t, NODE_IPS, node_ips.iter().map(String::as_str));
    for k in 0..SHARDS {
        let st = family_table(&cfg.table, Some(k));
        out.elements("add", &st, NODE_IPS, node_ips.iter().map(String::as_str));
    }

    Ruleset {
        script: out.0,
        deleted_objects,
    }
}

/// `<verb> element` statements for sorted `elements`, one per (table, set); `add` writes
/// keys with their verdicts, `delete` keys only.
pub(crate) fn write_elements(out: &mut Script, verb: &str, table: &str, elements: &[Element]) {
    for group in elements.chunk_by(|a, b| (a.shard, a.set) == (b.shard, b.set)) {
        let texts: Vec<String> = group
            .iter()
            .map(|e| {
                if verb == "add" {
                    e.full()
                } else {
                    e.key.clone()
                }
            })
            .collect();
        out.elements(
            verb,
            &family_table(table, group[0].shard),
            group[0].set,
            texts.iter().map(String::as_str),
        );
    }
}

/// A rule comment: at most 120 bytes (the kernel allows 128) of the label, without quotes.
fn comment(label: &str) -> String {
    label
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\n' | ';'))
        .scan(0, |len, c| {
            *len += c.len_utf8();
            (*len <= 120).then_some(c)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::services::plan::plan;
    use crate::services::types::{Endpoint, Protocol, ServicePort, ServiceSpec};

    pub(crate) fn cfg(node_ips: Vec<Ipv4Addr>) -> ProxyConfig {
        ProxyConfig {
            table: "capstan".into(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            node_ips,
        }
    }

    /// `default/<name>` on 10.96.0.<ip>:80 with NodePort 30000+<ip>, endpoints 10.244.0.x.
    pub(crate) fn svc(
        name: &str,
        ip: u8,
        affinity: Option<u32>,
        endpoints: &[u8],
    ) -> (ServiceSpec, Vec<Endpoint>) {
        (
            ServiceSpec {
                namespace: "default".into(),
                name: name.into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, ip)),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: Some(30000 + u16::from(ip)),
                }],
                session_affinity_timeout: affinity,
            },
            endpoints
                .iter()
                .map(|last| Endpoint {
                    ip: Ipv4Addr::new(10, 244, 0, *last),
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
            .rposition(|l| l.contains("mark-for-masquerade meta mark set"))
            .unwrap();
        all[start + 1..].to_vec()
    }

    #[test]
    fn a_node_port_service_with_affinity_renders_to_maps_one_chain_and_sets() {
        let plan = plan(&[svc("web", 10, Some(30), &[2, 3])]);
        let (chain, ext) = (&plan.ports[0].chain, &plan.ports[0].external_chain);
        let (aff2, aff3) = (
            plan.ports[0].endpoints[0].affinity_set.as_deref().unwrap(),
            plan.ports[0].endpoints[1].affinity_set.as_deref().unwrap(),
        );
        let ruleset = render(&cfg(vec![]), &plan, &OwnedObjects::default());
        assert_eq!(ruleset.deleted_objects, 0);
        let t = format!("ip capstan-s{}", plan.ports[0].shard);
        let expected = [
            format!("add set {t} {aff2} {{ type ipv4_addr; flags dynamic,timeout; timeout 30s; }}"),
            format!("add set {t} {aff3} {{ type ipv4_addr; flags dynamic,timeout; timeout 30s; }}"),
            format!(
                "add chain {t} {chain} {{ \
                 ip saddr @{aff2} update @{aff2} {{ ip saddr }} meta l4proto tcp dnat to 10.244.0.2:8080; \
                 ip saddr @{aff3} update @{aff3} {{ ip saddr }} meta l4proto tcp dnat to 10.244.0.3:8080; \
                 numgen random mod 2 0 update @{aff2} {{ ip saddr }} meta l4proto tcp dnat to 10.244.0.2:8080; \
                 update @{aff3} {{ ip saddr }} meta l4proto tcp dnat to 10.244.0.3:8080 comment \"default/web:http\"; }}"
            ),
            format!("add chain {t} {ext} {{ jump mark-for-masquerade; goto {chain}; }}"),
            format!("add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; elements = {{ 10.96.0.10 . tcp . 80 : goto {chain} }} }}"),
            format!("add map {t} service-nodeports {{ type inet_proto . inet_service : verdict; elements = {{ tcp . 30010 : goto {ext} }} }}"),
            "add set ip capstan hairpin { type ipv4_addr . ipv4_addr; elements = { 10.244.0.2 . 10.244.0.2, 10.244.0.3 . 10.244.0.3 } }".to_owned(),
        ];
        assert_eq!(service_lines(&ruleset.script), expected);

        let all = lines(&ruleset.script);
        for fixed in [
            "add chain ip capstan-s0 nat-prerouting { type nat hook prerouting priority -100; policy accept; }",
            "add chain ip capstan-s15 nat-output { type nat hook output priority -100; policy accept; }",
            "add chain ip capstan nat-postrouting { type nat hook postrouting priority 100; policy accept; }",
            "flush table ip capstan",
            "flush table ip capstan-s7",
            "flush map ip capstan-s3 service-ips",
            "add rule ip capstan-s5 services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add rule ip capstan-s9 services fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports",
            "add rule ip capstan masquerading ct status dnat ip saddr . ip daddr @hairpin masquerade",
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
        assert!(!all
            .iter()
            .any(|l| l.starts_with("flush set") && l.contains(" aff-")));
        assert!(
            !all.iter().any(|l| l.contains("ip capstan nat-prerouting")),
            "the main table has no DNAT hooks: each shard has its own"
        );
        assert!(
            !ruleset.script.contains("vmap {"),
            "no anonymous sets: they make big transactions quadratic"
        );
    }

    #[test]
    fn endpoints_are_picked_by_a_numgen_cascade_that_is_even() {
        let plan = plan(&[svc("web", 10, None, &[2, 3, 4])]);
        let script = render(&cfg(vec![]), &plan, &OwnedObjects::default()).script;
        let t = format!("ip capstan-s{}", plan.ports[0].shard);
        let chain = lines(&script)
            .into_iter()
            .find(|l| l.starts_with(&format!("add chain {t} {}", plan.ports[0].chain)))
            .unwrap()
            .to_owned();
        assert_eq!(
            chain,
            format!(
                "add chain {t} {} {{ \
                 numgen random mod 3 0 meta l4proto tcp dnat to 10.244.0.2:8080; \
                 numgen random mod 2 0 meta l4proto tcp dnat to 10.244.0.3:8080; \
                 meta l4proto tcp dnat to 10.244.0.4:8080 comment \"default/web:http\"; }}",
                plan.ports[0].chain
            )
        );
        // Rule i takes 1/(n-i) of what reaches it: each endpoint gets exactly 1/n.
        let n = 3.0_f64;
        let mut left = 1.0;
        for i in 0..3 {
            let share = left / (n - f64::from(i));
            assert!((share - 1.0 / n).abs() < 1e-12);
            left -= share;
        }
    }

    #[test]
    fn no_ready_endpoints_means_reject_entries_and_no_chains() {
        let (mut spec, mut eps) = svc("web", 11, None, &[2]);
        eps[0].ready = false;
        spec.ports[0].node_port = Some(30080);
        let plan = plan(&[(spec, eps)]);
        let ruleset = render(
            &cfg(vec![Ipv4Addr::new(192, 168, 1, 5)]),
            &plan,
            &OwnedObjects::default(),
        );
        let mut expected = vec![
            "add set ip capstan no-endpoint-nodeports { type inet_proto . inet_service; elements = { tcp . 30080 } }".to_owned(),
            "add set ip capstan no-endpoint-services { type ipv4_addr . inet_proto . inet_service; elements = { 10.96.0.11 . tcp . 80 } }".to_owned(),
            "add set ip capstan node-ips { type ipv4_addr; elements = { 192.168.1.5 } }".to_owned(),
        ];
        expected.extend(
            (0..SHARDS).map(|k| format!("add set ip capstan-s{k} node-ips {{ type ipv4_addr; elements = {{ 192.168.1.5 }} }}")),
        );
        assert_eq!(service_lines(&ruleset.script), expected);
        assert!(lines(&ruleset.script).contains(
            &"add rule ip capstan endpoints-check ip daddr @node-ips meta l4proto . th dport @no-endpoint-nodeports reject"
        ));
    }

    #[test]
    fn stale_objects_and_tables_are_deleted_and_kept_affinity_sets_are_not_flushed() {
        let plan = plan(&[svc("web", 10, Some(30), &[2])]);
        let kept_set = plan.ports[0].endpoints[0].affinity_set.clone().unwrap();
        let kept_chain = plan.ports[0].chain.clone();
        let shard = shard_table("capstan", plan.ports[0].shard);
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let existing = OwnedObjects::from([
            // The main table as an unsharded version left it.
            (
                "capstan".to_owned(),
                TableObjects {
                    chains: names(&["nat-prerouting", "services", "masquerading", "svc-x"]),
                    sets: names(&["hairpin", "aff-x"]),
                    maps: names(&["service-ips"]),
                },
            ),
            (
                shard.clone(),
                TableObjects {
                    chains: names(&["services", "svc-old", "ep-old", kept_chain.as_str()]),
                    sets: names(&["node-ips", "aff-old", kept_set.as_str()]),
                    maps: names(&["service-ips", "legacy-map"]),
                },
            ),
            ("capstan-s99".to_owned(), TableObjects::default()),
        ]);
        let ruleset = render(&cfg(vec![]), &plan, &existing);
        assert_eq!(ruleset.deleted_objects, 5 + 4 + 1);
        let all = lines(&ruleset.script);
        let deletes: Vec<String> = all
            .iter()
            .filter(|l| l.starts_with("delete"))
            .map(|l| l.to_string())
            .collect();
        assert_eq!(
            deletes,
            vec![
                "delete map ip capstan service-ips".to_owned(),
                "delete set ip capstan aff-x".to_owned(),
                "delete chain ip capstan nat-prerouting".to_owned(),
                "delete chain ip capstan services".to_owned(),
                "delete chain ip capstan svc-x".to_owned(),
                format!("delete map ip {shard} legacy-map"),
                format!("delete set ip {shard} aff-old"),
                format!("delete chain ip {shard} ep-old"),
                format!("delete chain ip {shard} svc-old"),
                "delete table ip capstan-s99".to_owned(),
            ]
        );
        for (i, line) in all
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("delete"))
        {
            let t = line.split(' ').nth(3).unwrap();
            let flush = all
                .iter()
                .position(|l| *l == format!("flush table ip {t}"))
                .unwrap_or(0);
            assert!(flush < i, "references are flushed before deletes: {line}");
        }
        assert!(!all
            .iter()
            .any(|l| l.starts_with("flush set") && l.contains(&kept_set)));
    }

    #[test]
    fn comments_drop_quotes_and_separators_and_stay_short() {
        assert_eq!(comment("a\"b;c\\d"), "abcd");
        assert_eq!(comment(&"x".repeat(300)).len(), 120);
    }
}
