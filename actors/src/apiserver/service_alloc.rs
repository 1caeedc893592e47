//! ClusterIP and NodePort allocation for Services, as Kubernetes' API server does it. Each
//! allocated IP or port is a reservation key in the store, written in the same transaction as
//! the Service (compare: the key is absent), so two Services can never get the same one, even
//! when created at the same time; an update takes the reservations of ports it adds and
//! releases those of ports it drops in its own transaction; deleting the Service deletes its
//! reservations. The choice of a free value and the reservation diff are pure.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use api::v1;
use net::Ipv4Net;

/// Prefix of ClusterIP reservations.
pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
/// Prefix of NodePort reservations.
pub const NODE_PORT_PREFIX: &str = "/registry/ranges/nodeports/";
/// The NodePort range.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
/// The default Service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// The first free address of `cidr` (skipping the first ten, kept for well-known services).
pub fn pick_cluster_ip(cidr: Ipv4Net, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    cidr.hosts().skip(9).find(|ip| !used.contains(ip))
}

/// The first free NodePort.
pub fn pick_node_port(used: &HashSet<u16>) -> Option<u16> {
    NODE_PORTS.into_iter().find(|p| !used.contains(p))
}

/// True when the Service gets a virtual IP (not headless, not ExternalName).
pub fn wants_cluster_ip(spec: &v1::ServiceSpec) -> bool {
    spec.r#type != "ExternalName" && spec.cluster_ip != "None"
}

/// The reservation keys a Service holds.
pub fn reservations(svc: &v1::Service) -> Vec<String> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    if wants_cluster_ip(spec) && !spec.cluster_ip.is_empty() {
        keys.push(format!("{IP_PREFIX}{}", spec.cluster_ip));
    }
    for p in spec.ports.iter().filter(|p| p.node_port != 0) {
        keys.push(format!("{NODE_PORT_PREFIX}{}", p.node_port));
    }
    keys
}

/// Removes what `svc` itself holds from the in-use sets, so an update may keep its values.
pub fn release_own(
    svc: &v1::Service,
    used_ips: &mut HashSet<Ipv4Addr>,
    used_ports: &mut HashSet<u16>,
) {
    let Some(spec) = svc.spec.as_ref() else {
        return;
    };
    if let Ok(ip) = spec.cluster_ip.parse::<Ipv4Addr>() {
        used_ips.remove(&ip);
    }
    for p in &spec.ports {
        if let Ok(port) = u16::try_from(p.node_port) {
            used_ports.remove(&port);
        }
    }
}

/// The reservation keys an update from `current` to `next` must take (absent until now) and
/// release, in that order.
pub fn reservation_changes(
    current: &v1::Service,
    next: &v1::Service,
) -> (Vec<String>, Vec<String>) {
    let (old, new) = (reservations(current), reservations(next));
    let take = new.iter().filter(|k| !old.contains(k)).cloned().collect();
    let release = old.into_iter().filter(|k| !new.contains(k)).collect();
    (take, release)
}

/// Fills the Service's empty ClusterIP and NodePorts with free values, given what is in use.
/// Returns a message naming the field when a requested value is unusable.
pub fn assign(
    svc: &mut v1::Service,
    cidr: Ipv4Net,
    used_ips: &HashSet<Ipv4Addr>,
    used_ports: &HashSet<u16>,
) -> Result<(), String> {
    let Some(spec) = svc.spec.as_mut() else {
        return Ok(());
    };
    if wants_cluster_ip(spec) {
        if spec.cluster_ip.is_empty() {
            let ip = pick_cluster_ip(cidr, used_ips)
                .ok_or_else(|| format!("spec.clusterIP: the service CIDR {cidr} is full"))?;
            spec.cluster_ip = ip.to_string();
            spec.cluster_ips = vec![ip.to_string()];
        } else {
            let ip: Ipv4Addr = spec
                .cluster_ip
                .parse()
                .map_err(|_| format!("spec.clusterIP: Invalid value: {:?}", spec.cluster_ip))?;
            if !cidr.contains(&ip) {
                return Err(format!(
                    "spec.clusterIP: Invalid value: {ip}: not in the service CIDR {cidr}"
                ));
            }
            if used_ips.contains(&ip) {
                return Err(format!(
                    "spec.clusterIP: Invalid value: {ip}: provided IP is already allocated"
                ));
            }
        }
    }
    let wants_node_ports = matches!(spec.r#type.as_str(), "NodePort" | "LoadBalancer");
    // Requested ports first, so a free port picked for another entry never takes one of them.
    let mut taken = used_ports.clone();
    for (i, p) in spec
        .ports
        .iter()
        .enumerate()
        .filter(|(_, p)| p.node_port != 0)
    {
        let port = u16::try_from(p.node_port).unwrap_or(0);
        if !taken.insert(port) {
            return Err(format!(
                "spec.ports[{i}].nodePort: Invalid value: {}: provided port is already allocated",
                p.node_port
            ));
        }
    }
    if wants_node_ports {
        for (i, p) in spec
            .ports
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| p.node_port == 0)
        {
            let port = pick_node_port(&taken)
                .ok_or_else(|| format!("spec.ports[{i}].nodePort: no free NodePort"))?;
            p.node_port = i32::from(port);
            taken.insert(port);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(kind: &str, cluster_ip: &str, node_ports: &[i32]) -> v1::Service {
        v1::Service {
            spec: Some(v1::ServiceSpec {
                r#type: kind.into(),
                cluster_ip: cluster_ip.into(),
                ports: node_ports
                    .iter()
                    .map(|n| v1::ServicePort {
                        port: 80,
                        node_port: *n,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn free_values_are_assigned_and_reserved() {
        let cidr: Ipv4Net = "10.96.0.0/12".parse().unwrap();
        let used: HashSet<Ipv4Addr> = ["10.96.0.10".parse().unwrap()].into();
        let mut s = svc("NodePort", "", &[0, 30000]);
        assign(&mut s, cidr, &used, &HashSet::new()).unwrap();
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip, "10.96.0.11");
        assert_eq!(
            spec.ports.iter().map(|p| p.node_port).collect::<Vec<_>>(),
            vec![30001, 30000]
        );
        assert_eq!(
            reservations(&s),
            vec![
                "/registry/ranges/serviceips/10.96.0.11".to_string(),
                "/registry/ranges/nodeports/30001".to_string(),
                "/registry/ranges/nodeports/30000".to_string()
            ]
        );
    }

    #[test]
    fn an_update_keeps_its_own_values_takes_new_ports_and_releases_dropped_ones() {
        let cidr: Ipv4Net = "10.96.0.0/12".parse().unwrap();
        let mut current = svc("NodePort", "10.96.0.11", &[30000, 30001]);
        if let Some(spec) = current.spec.as_mut() {
            spec.ports[1].port = 81;
        }
        let mut used_ips: HashSet<Ipv4Addr> =
            ["10.96.0.11".parse().unwrap(), "10.96.0.12".parse().unwrap()].into();
        let mut used_ports: HashSet<u16> = [30000, 30001, 30002].into();
        release_own(&current, &mut used_ips, &mut used_ports);
        assert_eq!(used_ips, ["10.96.0.12".parse().unwrap()].into());
        assert_eq!(used_ports, [30002].into());
        // Port 81 goes, port 82 comes (to be allocated); port 80 keeps 30000.
        let mut next = svc("NodePort", "10.96.0.11", &[30000, 0]);
        if let Some(spec) = next.spec.as_mut() {
            spec.ports[1].port = 82;
        }
        assign(&mut next, cidr, &used_ips, &used_ports).unwrap();
        let ports: Vec<i32> = next
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .map(|p| p.node_port)
            .collect();
        assert_eq!(
            ports,
            vec![30000, 30001],
            "30001 is free again, 30002 is not"
        );
        let (take, release) = reservation_changes(&current, &next);
        assert!(
            take.is_empty() && release.is_empty(),
            "{take:?} {release:?}"
        );
        // Back to ClusterIP: both NodePorts are released.
        let plain = svc("ClusterIP", "10.96.0.11", &[0]);
        let (take, release) = reservation_changes(&next, &plain);
        assert!(take.is_empty(), "{take:?}");
        assert_eq!(
            release,
            vec![
                "/registry/ranges/nodeports/30000".to_string(),
                "/registry/ranges/nodeports/30001".to_string()
            ]
        );
        // ClusterIP -> NodePort takes a fresh reservation.
        let mut upgraded = svc("NodePort", "10.96.0.11", &[0]);
        assign(&mut upgraded, cidr, &HashSet::new(), &[30000].into()).unwrap();
        let (take, _) = reservation_changes(&plain, &upgraded);
        assert_eq!(take, vec!["/registry/ranges/nodeports/30001".to_string()]);
    }

    #[test]
    fn headless_and_external_name_services_get_no_ip_and_bad_requests_name_the_field() {
        let cidr: Ipv4Net = "10.96.0.0/12".parse().unwrap();
        let mut headless = svc("ClusterIP", "None", &[]);
        assign(&mut headless, cidr, &HashSet::new(), &HashSet::new()).unwrap();
        assert!(reservations(&headless).is_empty());
        let mut outside = svc("ClusterIP", "192.168.1.1", &[]);
        let err = assign(&mut outside, cidr, &HashSet::new(), &HashSet::new()).unwrap_err();
        assert!(err.starts_with("spec.clusterIP"), "{err}");
        let mut taken = svc("NodePort", "", &[30005]);
        let err = assign(&mut taken, cidr, &HashSet::new(), &[30005].into()).unwrap_err();
        assert!(err.starts_with("spec.ports[0].nodePort"), "{err}");
    }
}
