//! Environment discovery, as kubelet does it: every container gets `{SVC}_SERVICE_HOST`,
//! `{SVC}_SERVICE_PORT` (and `{SVC}_SERVICE_PORT_{NAME}` per named port) plus the Docker-link
//! style `{SVC}_PORT`, `{SVC}_PORT_{port}_{PROTO}[_PROTO|_PORT|_ADDR]` variables for each
//! Service of its pod's namespace that has a ClusterIP when the container starts. Headless and
//! ExternalName Services get none. The container's own `env` wins over these.
//!
//! The variables are computed by pure functions here; the pod worker lists the Services.

use api::v1;

/// Whether `spec` asks for Service variables (`enableServiceLinks`, true when unset).
pub fn wanted(spec: &v1::PodSpec) -> bool {
    spec.enable_service_links.unwrap_or(true)
}

/// The variables for `services` (any order; the result is sorted by Service name).
pub fn variables(services: &[v1::Service]) -> Vec<(String, String)> {
    let mut services: Vec<(&str, &v1::ServiceSpec)> = services
        .iter()
        .filter_map(|s| {
            let name = s.metadata.as_ref().map(|m| m.name.as_str())?;
            Some((name, s.spec.as_ref()?))
        })
        .filter(|(_, spec)| has_cluster_ip(spec) && !spec.ports.is_empty())
        .collect();
    services.sort_by_key(|(name, _)| *name);
    let mut vars = Vec::new();
    for (name, spec) in services {
        let prefix = env_name(name);
        let ip = spec.cluster_ip.as_str();
        vars.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        vars.push((
            format!("{prefix}_SERVICE_PORT"),
            spec.ports[0].port.to_string(),
        ));
        for port in spec.ports.iter().filter(|p| !p.name.is_empty()) {
            vars.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(&port.name)),
                port.port.to_string(),
            ));
        }
        for (i, port) in spec.ports.iter().enumerate() {
            let protocol = if port.protocol.is_empty() {
                "TCP"
            } else {
                port.protocol.as_str()
            };
            let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
            let url = format!("{lower}://{ip}:{}", port.port);
            if i == 0 {
                // Docker gives the first port the short name as well.
                vars.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{upper}", port.port);
            vars.push((format!("{port_prefix}_PROTO"), lower));
            vars.push((format!("{port_prefix}_PORT"), port.port.to_string()));
            vars.push((format!("{port_prefix}_ADDR"), ip.to_owned()));
            vars.push((port_prefix, url));
        }
    }
    vars
}

/// Kubernetes' variable name for a Service or port name: upper case, `-` as `_`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Whether the Service has a virtual IP (not headless, not ExternalName).
fn has_cluster_ip(spec: &v1::ServiceSpec) -> bool {
    !spec.cluster_ip.is_empty() && spec.cluster_ip != "None" && spec.r#type != "ExternalName"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str, ports: &[(&str, &str, i32)]) -> v1::Service {
        v1::Service {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(v1::ServiceSpec {
                cluster_ip: ip.into(),
                ports: ports
                    .iter()
                    .map(|(name, protocol, port)| v1::ServicePort {
                        name: (*name).into(),
                        protocol: (*protocol).into(),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_service_gives_kubelets_host_port_and_docker_link_variables() {
        let vars = variables(&[service(
            "redis-primary",
            "10.96.0.11",
            &[("", "", 6379), ("metrics", "UDP", 9121)],
        )]);
        let expected = [
            ("REDIS_PRIMARY_SERVICE_HOST", "10.96.0.11"),
            ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
            ("REDIS_PRIMARY_SERVICE_PORT_METRICS", "9121"),
            ("REDIS_PRIMARY_PORT", "tcp://10.96.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP", "tcp://10.96.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PROTO", "tcp"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PORT", "6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_ADDR", "10.96.0.11"),
            ("REDIS_PRIMARY_PORT_9121_UDP", "udp://10.96.0.11:9121"),
            ("REDIS_PRIMARY_PORT_9121_UDP_PROTO", "udp"),
            ("REDIS_PRIMARY_PORT_9121_UDP_PORT", "9121"),
            ("REDIS_PRIMARY_PORT_9121_UDP_ADDR", "10.96.0.11"),
        ];
        for (name, value) in expected {
            assert_eq!(get(&vars, name), Some(value), "{name} in {vars:?}");
        }
        assert_eq!(vars.len(), expected.len(), "{vars:?}");
    }

    #[test]
    fn headless_external_name_and_portless_services_give_nothing() {
        let mut external = service("ext", "", &[("", "", 80)]);
        if let Some(spec) = external.spec.as_mut() {
            spec.r#type = "ExternalName".into();
        }
        let vars = variables(&[
            service("headless", "None", &[("", "", 80)]),
            service("pending", "", &[("", "", 80)]),
            service("noports", "10.96.0.12", &[]),
            external,
        ]);
        assert!(vars.is_empty(), "{vars:?}");
    }

    #[test]
    fn service_links_default_on() {
        assert!(wanted(&v1::PodSpec::default()));
        assert!(!wanted(&v1::PodSpec {
            enable_service_links: Some(false),
            ..Default::default()
        }));
    }
}
