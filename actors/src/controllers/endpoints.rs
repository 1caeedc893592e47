//! The Endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name listing the pods that match, ready ones under `addresses` and the others under
//! `notReadyAddresses`, with the Service's target ports resolved (numbers, or named container
//! ports). Deciding the subsets is pure; the pass reads Services and pods and writes only what
//! changed.

use std::time::Duration;

use api::v1::{self, Object};
use api::Kind;
use chrono::{DateTime, Utc};

use super::runner::Pass;
use crate::apiserver::Registry;
use crate::error::{Error, Result};

/// Registered name of the Endpoints controller.
pub const NAME: &str = "endpoints";

/// The Endpoints controller; its [`Pass`].
#[derive(Debug, Clone)]
pub struct EndpointsController {
    /// The API registry.
    pub registry: Registry,
}

impl Pass for EndpointsController {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::Service, Kind::Pod];
    const RESYNC: Duration = Duration::from_secs(10);

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, _now: DateTime<Utc>) -> Result<Option<Duration>> {
        sync_all(&self.registry).await.map(|()| None)
    }
}

fn pod_ready(p: &v1::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The target port of `port` on pod `p`: the number, or the container port with that name.
fn target_port(port: &v1::ServicePort, p: &v1::Pod) -> Option<i32> {
    let target = port.target_port.as_ref();
    if let Some(n) = target.and_then(|t| t.as_int()) {
        return Some(n);
    }
    match target.and_then(|t| t.as_str()).filter(|s| !s.is_empty()) {
        None => Some(port.port),
        Some(name) => p
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|cp| cp.name == name)
            .map(|cp| cp.container_port),
    }
}

/// The hostname an address of `svc` carries (for `<hostname>.<svc>.<ns>.svc` DNS records): the
/// pod's `spec.hostname` when its `spec.subdomain` names this Service, as in Kubernetes.
fn endpoint_hostname(svc: &v1::Service, p: &v1::Pod) -> String {
    let name = svc.metadata.as_ref().map_or("", |m| m.name.as_str());
    match p.spec.as_ref() {
        Some(s) if !s.hostname.is_empty() && s.subdomain == name => s.hostname.clone(),
        _ => String::new(),
    }
}

/// The Endpoints subsets of `svc` given the pods of its namespace: one subset per distinct
/// set of resolved ports, addresses sorted by IP. `None` for Services without a selector.
pub fn subsets(svc: &v1::Service, pods: &[v1::Pod]) -> Option<Vec<v1::EndpointSubset>> {
    let spec = svc.spec.as_ref()?;
    if spec.selector.is_empty() {
        return None;
    }
    let mut groups: Vec<v1::EndpointSubset> = Vec::new();
    for p in pods {
        let Some(meta) = p.metadata.as_ref() else {
            continue;
        };
        let ip = p
            .status
            .as_ref()
            .map(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let matches = spec
            .selector
            .iter()
            .all(|(k, v)| meta.labels.get(k) == Some(v));
        if !matches || ip.is_empty() || !meta.deletion_timestamp.is_empty() {
            continue;
        }
        let ports: Option<Vec<v1::EndpointPort>> = spec
            .ports
            .iter()
            .map(|sp| {
                Some(v1::EndpointPort {
                    name: sp.name.clone(),
                    port: target_port(sp, p)?,
                    protocol: if sp.protocol.is_empty() {
                        "TCP".into()
                    } else {
                        sp.protocol.clone()
                    },
                    app_protocol: None,
                })
            })
            .collect();
        let Some(ports) = ports else { continue };
        let address = v1::EndpointAddress {
            ip,
            target_ref: Some(v1::ObjectReference {
                kind: "Pod".into(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                ..Default::default()
            }),
            hostname: endpoint_hostname(svc, p),
            node_name: p
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
        };
        let i = match groups.iter().position(|g| g.ports == ports) {
            Some(i) => i,
            None => {
                groups.push(v1::EndpointSubset {
                    ports,
                    ..Default::default()
                });
                groups.len() - 1
            }
        };
        if pod_ready(p) || spec.publish_not_ready_addresses {
            groups[i].addresses.push(address);
        } else {
            groups[i].not_ready_addresses.push(address);
        }
    }
    for g in &mut groups {
        g.addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
        g.not_ready_addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
    }
    groups.sort_by(|a, b| {
        a.ports
            .iter()
            .map(|p| p.port)
            .cmp(b.ports.iter().map(|p| p.port))
    });
    Some(groups)
}

/// Writes the Endpoints of every Service with a selector, where they changed.
pub async fn sync_all(reg: &Registry) -> Result<()> {
    let (services, _) = reg.list(Kind::Service, "", "").await?;
    let (pods, _) = reg.list(Kind::Pod, "", "").await?;
    let pods: Vec<v1::Pod> = pods.into_iter().filter_map(|o| o.into_typed()).collect();
    for svc in services
        .into_iter()
        .filter_map(|o| o.into_typed::<v1::Service>())
    {
        let meta = svc.metadata.clone().unwrap_or_default();
        let in_ns: Vec<v1::Pod> = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .as_ref()
                    .is_some_and(|m| m.namespace == meta.namespace)
            })
            .cloned()
            .collect();
        let Some(subsets) = subsets(&svc, &in_ns) else {
            continue;
        };
        let wanted = v1::Endpoints {
            metadata: Some(v1::ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                labels: meta.labels.clone(),
                ..Default::default()
            }),
            subsets,
        };
        match reg.get(Kind::Endpoints, &meta.namespace, &meta.name).await {
            Ok(o) => {
                let Some(mut current) = o.into_typed::<v1::Endpoints>() else {
                    continue;
                };
                if current.subsets == wanted.subsets {
                    continue;
                }
                current.subsets = wanted.subsets;
                match reg.update(Object::from(current)).await {
                    Ok(_) | Err(Error::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(Error::NotFound { .. }) => match reg.create(Object::from(wanted)).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
        tracing::debug!(namespace = %meta.namespace, service = %meta.name, "endpoints updated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, app: &str) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container {
                    name: "c".into(),
                    ports: vec![v1::ContainerPort {
                        name: "http".into(),
                        container_port: 8080,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                pod_ip: ip.into(),
                conditions: vec![v1::PodCondition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn ready_and_not_ready_pods_are_split_and_named_ports_resolved() {
        let svc = v1::Service {
            spec: Some(v1::ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports: vec![v1::ServicePort {
                    port: 80,
                    target_port: Some(v1::IntOrString::string("http")),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = vec![
            pod("b", "10.244.0.3", true, "web"),
            pod("a", "10.244.0.2", true, "web"),
            pod("c", "10.244.0.4", false, "web"),
            pod("d", "10.244.0.5", true, "db"),
            pod("e", "", true, "web"),
        ];
        let s = subsets(&svc, &pods).unwrap();
        assert_eq!(s.len(), 1);
        let ips: Vec<_> = s[0].addresses.iter().map(|a| a.ip.as_str()).collect();
        assert_eq!(ips, vec!["10.244.0.2", "10.244.0.3"]);
        assert_eq!(s[0].not_ready_addresses[0].ip, "10.244.0.4");
        assert_eq!(s[0].ports[0].port, 8080);
        let no_selector = v1::Service {
            spec: Some(v1::ServiceSpec::default()),
            ..Default::default()
        };
        assert!(subsets(&no_selector, &pods).is_none());
    }

    #[test]
    fn a_pod_whose_subdomain_names_the_service_lists_its_hostname() {
        let svc = v1::Service {
            metadata: Some(v1::ObjectMeta {
                name: "db".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::ServiceSpec {
                selector: [("app".to_string(), "db".to_string())].into(),
                cluster_ip: "None".into(),
                ports: vec![v1::ServicePort {
                    port: 5432,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut member = pod("db-0", "10.244.0.2", true, "db");
        let spec = member.spec.as_mut().unwrap();
        spec.hostname = "db-0".into();
        spec.subdomain = "db".into();
        let mut elsewhere = pod("x", "10.244.0.3", true, "db");
        let spec = elsewhere.spec.as_mut().unwrap();
        spec.hostname = "x".into();
        spec.subdomain = "other".into();
        let s = subsets(&svc, &[member, elsewhere]).unwrap();
        let names: Vec<_> = s[0].addresses.iter().map(|a| a.hostname.as_str()).collect();
        assert_eq!(names, ["db-0", ""], "only a pod in this subdomain is named");
    }
}
