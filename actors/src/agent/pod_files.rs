//! A pod's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`: which content the PodSpec
//! asks for (pure, [`pod_files`]: `dnsPolicy`, `dnsConfig`, `hostNetwork`, `hostname`,
//! `subdomain`, `hostAliases`), and writing them into the pod's directory on the node, from
//! where the runtime bind-mounts them into every container ([`write`]). Rendering is
//! `net::dns::pod_files`; this module must not know how containers are built.
//!
//! Note: the agent does not run host-network pods on the node's network yet (every pod gets
//! its own namespace); their files already follow Kubernetes (the node's `resolv.conf` under
//! `ClusterFirst`, the node's hosts file plus aliases).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use api::v1;
use net::dns::pod_files::{
    host_network_hosts_file, hostname_file, hosts_file, DnsOption, HostAlias, PodHost, ResolvConf,
};

use crate::error::{Error, Result};

/// Kubernetes' hostname limit (a DNS label); longer pod names are cut.
const HOSTNAME_MAX: usize = 63;

/// What the node contributes to its pods' files.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The node's DNS server (the bridge gateway), `None` when the node serves no cluster DNS.
    pub cluster_dns: Option<IpAddr>,
    /// The cluster domain.
    pub cluster_domain: String,
    /// Text of the node's `resolv.conf`.
    pub host_resolv_conf: String,
    /// Text of the node's hosts file.
    pub host_hosts: String,
}

/// The three files of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    /// `/etc/resolv.conf`.
    pub resolv_conf: String,
    /// `/etc/hosts`.
    pub hosts: String,
    /// `/etc/hostname`.
    pub hostname: String,
}

/// The pod's hostname: `spec.hostname`, else its name cut to 63 characters (without a
/// trailing `-` or `.`), as kubelet does.
pub fn pod_hostname(pod: &v1::Pod) -> String {
    let spec = pod.spec.as_ref();
    if let Some(h) = spec.map(|s| s.hostname.as_str()).filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    let name = pod.metadata.as_ref().map_or("", |m| m.name.as_str());
    let cut: String = name.chars().take(HOSTNAME_MAX).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// The pod's files, as kubelet writes them. `ClusterFirst` (the default) points at the node's
/// DNS with the cluster search list, unless the pod is on the host network (then, as
/// `Default`, the node's own file); `ClusterFirstWithHostNet` always uses cluster DNS; `None`
/// starts empty. Without cluster DNS on the node the cluster policies fall back to the node's
/// file. `dnsConfig` is merged in last.
pub fn pod_files(pod: &v1::Pod, pod_ip: Option<IpAddr>, node: &NodeFacts) -> PodFiles {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.as_ref().map_or("", |m| m.namespace.as_str());
    let host = ResolvConf::parse(&node.host_resolv_conf);
    let cluster = |ns: IpAddr| ResolvConf::cluster(ns, namespace, &node.cluster_domain, &host);
    let base = match (spec.dns_policy.as_str(), node.cluster_dns) {
        ("None", _) => ResolvConf::default(),
        ("Default", _) | (_, None) => host.clone(),
        ("ClusterFirstWithHostNet", Some(ns)) => cluster(ns),
        (_, Some(_)) if spec.host_network => host.clone(),
        (_, Some(ns)) => cluster(ns),
    };
    let extra = spec
        .dns_config
        .as_ref()
        .map(|c| ResolvConf {
            // Validation rejects bad addresses; anything else is skipped, not fatal.
            nameservers: c
                .nameservers
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            searches: c
                .searches
                .iter()
                .map(|s| s.trim_end_matches('.').to_string())
                .collect(),
            options: c
                .options
                .iter()
                .map(|o| DnsOption {
                    name: o.name.clone(),
                    value: o.value.clone(),
                })
                .collect(),
        })
        .unwrap_or_default();
    let resolv_conf = base.merge(&extra).render();

    let aliases: Vec<HostAlias> = spec
        .host_aliases
        .iter()
        .filter_map(|a| {
            Some(HostAlias {
                ip: a.ip.parse().ok()?,
                hostnames: a.hostnames.clone(),
            })
        })
        .collect();
    let hostname = pod_hostname(pod);
    let hosts = if spec.host_network {
        host_network_hosts_file(&node.host_hosts, &aliases)
    } else {
        let fqdn = (!spec.subdomain.is_empty()).then(|| {
            format!(
                "{hostname}.{}.{namespace}.svc.{}",
                spec.subdomain, node.cluster_domain
            )
        });
        hosts_file(
            &PodHost {
                ip: pod_ip,
                hostname: hostname.clone(),
                fqdn,
            },
            &aliases,
        )
    };
    PodFiles {
        resolv_conf,
        hosts,
        hostname: hostname_file(&hostname),
    }
}

/// Writes the files into `dir` (created if missing; a file is only rewritten when its content
/// changed, in place, so running containers see the change) and returns their bind mounts.
/// Blocking.
pub fn write(dir: &Path, files: &PodFiles) -> Result<Vec<runtime::BindMount>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::PodFiles {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut mounts = Vec::new();
    for (name, target, content) in [
        ("hosts", "/etc/hosts", &files.hosts),
        ("hostname", "/etc/hostname", &files.hostname),
        ("resolv.conf", "/etc/resolv.conf", &files.resolv_conf),
    ] {
        let path = dir.join(name);
        let same = std::fs::read(&path).is_ok_and(|old| old == content.as_bytes());
        if !same {
            std::fs::write(&path, content).map_err(|source| Error::PodFiles {
                path: path.clone(),
                source,
            })?;
        }
        mounts.push(runtime::BindMount {
            source: path,
            destination: PathBuf::from(target),
            read_only: false,
        });
    }
    Ok(mounts)
}

/// Removes a pod's directory (idempotent). Blocking.
pub fn remove(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::PodFiles {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cluster_dns: Option<&str>) -> NodeFacts {
        NodeFacts {
            cluster_dns: cluster_dns.map(|s| s.parse().unwrap()),
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "nameserver 192.0.2.53\nsearch corp.example\n".into(),
            host_hosts: "127.0.0.1 localhost node-1\n".into(),
        }
    }

    fn pod(f: impl FnOnce(&mut v1::PodSpec)) -> v1::Pod {
        let mut spec = v1::PodSpec {
            dns_policy: "ClusterFirst".into(),
            ..Default::default()
        };
        f(&mut spec);
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web-0".into(),
                namespace: "prod".into(),
                ..Default::default()
            }),
            spec: Some(spec),
            status: None,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn cluster_first_points_at_the_node_dns_with_the_namespace_search_list() {
        let f = pod_files(&pod(|_| {}), ip("10.244.0.7"), &node(Some("10.244.0.1")));
        assert_eq!(
            f.resolv_conf,
            "nameserver 10.244.0.1\n\
             search prod.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             options ndots:5\n"
        );
        assert!(f.hosts.contains("\n10.244.0.7\tweb-0\n"), "{}", f.hosts);
        assert_eq!(f.hostname, "web-0\n");
    }

    #[test]
    fn host_network_and_default_policies_get_the_node_file() {
        let node = node(Some("10.244.0.1"));
        let host = "nameserver 192.0.2.53\nsearch corp.example\n";
        let hostnet = pod_files(&pod(|s| s.host_network = true), None, &node);
        assert_eq!(hostnet.resolv_conf, host);
        assert!(hostnet.hosts.starts_with("127.0.0.1 localhost node-1\n"));
        let default = pod_files(&pod(|s| s.dns_policy = "Default".into()), None, &node);
        assert_eq!(default.resolv_conf, host);
        let with_host_net = pod_files(
            &pod(|s| {
                s.host_network = true;
                s.dns_policy = "ClusterFirstWithHostNet".into();
            }),
            None,
            &node,
        );
        assert!(with_host_net
            .resolv_conf
            .starts_with("nameserver 10.244.0.1\n"));
    }

    #[test]
    fn without_cluster_dns_cluster_first_falls_back_to_the_node_file() {
        let f = pod_files(&pod(|_| {}), None, &node(None));
        assert_eq!(
            f.resolv_conf,
            "nameserver 192.0.2.53\nsearch corp.example\n"
        );
    }

    #[test]
    fn policy_none_is_only_the_dns_config() {
        let f = pod_files(
            &pod(|s| {
                s.dns_policy = "None".into();
                s.dns_config = Some(v1::PodDnsConfig {
                    nameservers: vec!["192.0.2.1".into()],
                    searches: vec!["ns1.svc.cluster-domain.example.".into()],
                    options: vec![v1::PodDnsConfigOption {
                        name: "ndots".into(),
                        value: Some("2".into()),
                    }],
                });
            }),
            None,
            &node(Some("10.244.0.1")),
        );
        assert_eq!(
            f.resolv_conf,
            "nameserver 192.0.2.1\nsearch ns1.svc.cluster-domain.example\noptions ndots:2\n"
        );
    }

    #[test]
    fn hostname_subdomain_and_aliases_reach_the_hosts_file() {
        let f = pod_files(
            &pod(|s| {
                s.hostname = "db-0".into();
                s.subdomain = "db".into();
                s.host_aliases = vec![v1::HostAlias {
                    ip: "192.0.2.10".into(),
                    hostnames: vec!["foo.local".into(), "bar.local".into()],
                }];
            }),
            ip("10.244.0.7"),
            &node(Some("10.244.0.1")),
        );
        assert!(
            f.hosts
                .contains("\n10.244.0.7\tdb-0.db.prod.svc.cluster.local\tdb-0\n"),
            "{}",
            f.hosts
        );
        assert!(f.hosts.ends_with("192.0.2.10\tfoo.local\tbar.local\n"));
        assert_eq!(f.hostname, "db-0\n");
    }

    #[test]
    fn long_pod_names_are_cut_to_a_dns_label() {
        let mut p = pod(|_| {});
        p.metadata.as_mut().unwrap().name = format!("{}-x", "a".repeat(62));
        assert_eq!(
            pod_hostname(&p),
            "a".repeat(62),
            "cut at 63, trailing '-' dropped"
        );
    }

    #[test]
    fn files_are_written_once_and_mounted_over_etc() {
        let dir = tempfile::tempdir().unwrap();
        let f = pod_files(&pod(|_| {}), ip("10.244.0.7"), &node(Some("10.244.0.1")));
        let mounts = write(&dir.path().join("uid"), &f).unwrap();
        let targets: Vec<_> = mounts.iter().map(|m| m.destination.clone()).collect();
        assert_eq!(
            targets,
            [
                PathBuf::from("/etc/hosts"),
                PathBuf::from("/etc/hostname"),
                PathBuf::from("/etc/resolv.conf")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&mounts[2].source).unwrap(),
            f.resolv_conf
        );
        remove(&dir.path().join("uid")).unwrap();
        remove(&dir.path().join("uid")).unwrap();
        assert!(!dir.path().join("uid").exists());
    }
}
