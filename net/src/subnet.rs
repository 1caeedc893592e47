//! Address arithmetic of a node's pod subnet: which address is the gateway, which addresses
//! pods may use, which subnets are acceptable at all. Pure: it must not touch the kernel.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

/// Longest accepted pod subnet prefix: a /30 still leaves the gateway and one pod.
pub const MAX_POD_SUBNET_PREFIX: u8 = 30;

/// The gateway of a pod subnet: its first host address (`.1` of a /24), held by the bridge.
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    let network = u32::from(subnet.network());
    Ipv4Addr::from(network.saturating_add(1))
}

/// Checks that `subnet` is a usable pod subnet: written as its network address and at most
/// a /30.
pub fn validate_pod_subnet(subnet: Ipv4Net) -> Result<()> {
    let reason = if subnet.prefix_len() > MAX_POD_SUBNET_PREFIX {
        Some(format!("prefix must be at most /{MAX_POD_SUBNET_PREFIX}"))
    } else if subnet.addr() != subnet.network() {
        Some(format!(
            "must be written as its network address {}",
            subnet.trunc()
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::Invalid {
            what: "pod subnet",
            value: subnet.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// True if `ip` may be given to a pod of `subnet`: inside it and neither the network,
/// broadcast nor gateway address.
pub fn is_pod_address(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip)
        && ip != subnet.network()
        && ip != subnet.broadcast()
        && ip != gateway(subnet)
}

/// Checks [`is_pod_address`], as a typed error.
pub fn check_pod_address(subnet: Ipv4Net, ip: Ipv4Addr) -> Result<()> {
    validate_pod_subnet(subnet)?;
    if is_pod_address(subnet, ip) {
        Ok(())
    } else {
        Err(Error::NotAPodAddress { ip, subnet })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_is_the_first_host() {
        assert_eq!(gateway(net("10.244.3.0/24")), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(gateway(net("10.0.0.0/30")), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn pod_addresses_exclude_network_broadcast_and_gateway() {
        let s = net("10.244.3.0/24");
        assert!(is_pod_address(s, Ipv4Addr::new(10, 244, 3, 2)));
        assert!(is_pod_address(s, Ipv4Addr::new(10, 244, 3, 254)));
        for bad in [
            [10, 244, 3, 0],
            [10, 244, 3, 1],
            [10, 244, 3, 255],
            [10, 244, 4, 2],
        ] {
            assert!(!is_pod_address(s, Ipv4Addr::from(bad)), "{bad:?}");
        }
        assert!(matches!(
            check_pod_address(s, Ipv4Addr::new(10, 244, 3, 1)),
            Err(Error::NotAPodAddress { .. })
        ));
    }

    #[test]
    fn subnets_must_be_aligned_and_not_too_small() {
        assert!(validate_pod_subnet(net("10.244.3.0/24")).is_ok());
        assert!(validate_pod_subnet(net("10.244.3.0/30")).is_ok());
        assert!(validate_pod_subnet(net("10.244.3.0/31")).is_err());
        assert!(validate_pod_subnet(net("10.244.3.7/24")).is_err());
    }
}
