//! The name-resolution files of one pod, rendered as kubelet writes them: `resolv.conf`
//! (cluster nameserver and search list, or the node's own file, merged with the pod's
//! `dnsConfig`), `hosts` (localhost lines, the pod's own address and names, `hostAliases`) and
//! `hostname`. Pure text in, text out; it must not read or write files or decide a pod's DNS
//! policy (the agent does, from the PodSpec).

use std::net::IpAddr;

/// Kubernetes' limits: resolvers ignore nameservers past the third, and glibc before 2.26
/// truncated longer search lists.
pub const MAX_NAMESERVERS: usize = 3;
/// The most search domains written (kubelet's `MaxDNSSearchPaths`).
pub const MAX_SEARCHES: usize = 32;
/// `ndots` of cluster pods: names with fewer dots go through the search list first.
pub const CLUSTER_NDOTS: u32 = 5;

/// The contents of a `resolv.conf`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<IpAddr>,
    /// The `search` list, in order.
    pub searches: Vec<String>,
    /// `options`, each `name` or `name:value`, in order.
    pub options: Vec<DnsOption>,
}

/// One resolver option (`ndots:5`, `edns0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsOption {
    /// Option name.
    pub name: String,
    /// Option value, if it takes one.
    pub value: Option<String>,
}

impl ResolvConf {
    /// A cluster pod's file: the node's DNS server, then `<ns>.svc.<domain> svc.<domain>
    /// <domain>` followed by the node's own search domains (as kubelet appends them), and
    /// `ndots:5`.
    pub fn cluster(nameserver: IpAddr, namespace: &str, domain: &str, host: &ResolvConf) -> Self {
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        searches.extend(host.searches.iter().cloned());
        ResolvConf {
            nameservers: vec![nameserver],
            searches,
            options: vec![DnsOption {
                name: "ndots".into(),
                value: Some(CLUSTER_NDOTS.to_string()),
            }],
        }
    }

    /// Parses a `resolv.conf` leniently, as resolvers do: unknown lines and unparsable
    /// nameservers are skipped; the last `search` (or `domain`) line wins.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search" | "domain") => {
                    conf.searches = words.map(str::to_string).collect();
                }
                Some("options") => {
                    for w in words {
                        conf.options.push(DnsOption::parse(w));
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// Applies a pod's `dnsConfig`: nameservers and searches are appended without
    /// duplicates, an option replaces one of the same name (kubelet's merge).
    pub fn merge(mut self, extra: &ResolvConf) -> ResolvConf {
        for ns in &extra.nameservers {
            if !self.nameservers.contains(ns) {
                self.nameservers.push(*ns);
            }
        }
        for s in &extra.searches {
            if !self.searches.contains(s) {
                self.searches.push(s.clone());
            }
        }
        for o in &extra.options {
            match self.options.iter_mut().find(|x| x.name == o.name) {
                Some(x) => x.value = o.value.clone(),
                None => self.options.push(o.clone()),
            }
        }
        self
    }

    /// The file text, within Kubernetes' limits (first 3 nameservers, first 32 searches).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ns in self.nameservers.iter().take(MAX_NAMESERVERS) {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            let list: Vec<&str> = self
                .searches
                .iter()
                .take(MAX_SEARCHES)
                .map(String::as_str)
                .collect();
            out.push_str(&format!("search {}\n", list.join(" ")));
        }
        if !self.options.is_empty() {
            let list: Vec<String> = self.options.iter().map(DnsOption::render).collect();
            out.push_str(&format!("options {}\n", list.join(" ")));
        }
        out
    }
}

impl DnsOption {
    /// `name` or `name:value`.
    pub fn parse(word: &str) -> DnsOption {
        match word.split_once(':') {
            Some((n, v)) => DnsOption {
                name: n.to_string(),
                value: Some(v.to_string()),
            },
            None => DnsOption {
                name: word.to_string(),
                value: None,
            },
        }
    }

    fn render(&self) -> String {
        match &self.value {
            Some(v) => format!("{}:{v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One `hostAliases` entry: extra names for an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAlias {
    /// The address.
    pub ip: IpAddr,
    /// Its names.
    pub hostnames: Vec<String>,
}

/// What a pod's `/etc/hosts` says about the pod itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodHost {
    /// The pod's address (none without a pod network).
    pub ip: Option<IpAddr>,
    /// The pod's hostname.
    pub hostname: String,
    /// `<hostname>.<subdomain>.<ns>.svc.<domain>` when the pod has a subdomain.
    pub fqdn: Option<String>,
}

/// The managed hosts file of a pod with its own network namespace, as kubelet writes it.
pub fn hosts_file(pod: &PodHost, aliases: &[HostAlias]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod.ip {
        match &pod.fqdn {
            Some(fqdn) => out.push_str(&format!("{ip}\t{fqdn}\t{}\n", pod.hostname)),
            None => out.push_str(&format!("{ip}\t{}\n", pod.hostname)),
        }
    }
    out.push_str(&aliases_section(aliases));
    out
}

/// The hosts file of a pod on the node's network: the node's own file plus `hostAliases`.
pub fn host_network_hosts_file(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = node_hosts.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&aliases_section(aliases));
    out
}

fn aliases_section(aliases: &[HostAlias]) -> String {
    let lines: Vec<String> = aliases
        .iter()
        .filter(|a| !a.hostnames.is_empty())
        .map(|a| format!("{}\t{}\n", a.ip, a.hostnames.join("\t")))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("\n# Entries added by HostAliases.\n{}", lines.concat())
}

/// The `/etc/hostname` of a pod.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_cluster_pod_searches_its_namespace_then_the_cluster_then_the_node() {
        let host = ResolvConf::parse("nameserver 192.0.2.1\nsearch corp.example\n");
        let conf = ResolvConf::cluster(ip("10.244.0.1"), "prod", "cluster.local", &host);
        assert_eq!(
            conf.render(),
            "nameserver 10.244.0.1\n\
             search prod.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn dns_config_appends_servers_and_searches_and_overrides_options() {
        let host = ResolvConf::default();
        let conf = ResolvConf::cluster(ip("10.244.0.1"), "default", "cluster.local", &host);
        let extra = ResolvConf {
            nameservers: vec![ip("10.244.0.1"), ip("192.0.2.9")],
            searches: vec!["svc.cluster.local".into(), "my.dns.search.suffix".into()],
            options: vec![DnsOption::parse("ndots:2"), DnsOption::parse("edns0")],
        };
        assert_eq!(
            conf.merge(&extra).render(),
            "nameserver 10.244.0.1\nnameserver 192.0.2.9\n\
             search default.svc.cluster.local svc.cluster.local cluster.local my.dns.search.suffix\n\
             options ndots:2 edns0\n"
        );
    }

    #[test]
    fn parsing_skips_comments_and_junk_and_keeps_the_last_search_line() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 192.0.2.1 ; primary\nnameserver not-an-ip\n\
             domain old.example\nsearch a.example b.example\nsortlist 10.0.0.0\noptions rotate timeout:1\n",
        );
        assert_eq!(conf.nameservers, vec![ip("192.0.2.1")]);
        assert_eq!(conf.searches, ["a.example", "b.example"]);
        assert_eq!(
            conf.render().lines().last(),
            Some("options rotate timeout:1")
        );
    }

    #[test]
    fn at_most_three_nameservers_are_written() {
        let conf = ResolvConf {
            nameservers: (1..=5).map(|i| ip(&format!("192.0.2.{i}"))).collect(),
            ..Default::default()
        };
        assert_eq!(conf.render().lines().count(), 3);
    }

    #[test]
    fn the_hosts_file_names_the_pod_and_its_aliases() {
        let pod = PodHost {
            ip: Some(ip("10.244.0.7")),
            hostname: "web-0".into(),
            fqdn: Some("web-0.web.default.svc.cluster.local".into()),
        };
        let aliases = [
            HostAlias {
                ip: ip("192.0.2.10"),
                hostnames: vec!["foo.local".into(), "bar.local".into()],
            },
            HostAlias {
                ip: ip("192.0.2.11"),
                hostnames: vec![],
            },
        ];
        let text = hosts_file(&pod, &aliases);
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.contains("\n10.244.0.7\tweb-0.web.default.svc.cluster.local\tweb-0\n"));
        assert!(
            text.ends_with("\n# Entries added by HostAliases.\n192.0.2.10\tfoo.local\tbar.local\n")
        );
        let bare = PodHost {
            ip: None,
            hostname: "x".into(),
            fqdn: None,
        };
        assert!(
            !hosts_file(&bare, &[]).contains("\tx\n"),
            "no address, no line"
        );
    }

    #[test]
    fn a_host_network_pod_keeps_the_node_hosts_file() {
        let text = host_network_hosts_file(
            "127.0.0.1 localhost",
            &[HostAlias {
                ip: ip("192.0.2.10"),
                hostnames: vec!["foo".into()],
            }],
        );
        assert_eq!(
            text,
            "127.0.0.1 localhost\n\n# Entries added by HostAliases.\n192.0.2.10\tfoo\n"
        );
        assert_eq!(hostname_file("web-0"), "web-0\n");
    }
}
