//! The node's VXLAN device: created with the configured VNI and UDP port, `nolearning`, the
//! node's address as local endpoint on the link that holds it, an MTU 50 bytes below that
//! link's and the MAC and /32 address derived from the node's pod subnet. It owns creating,
//! correcting and deleting that one device; peer entries are [`super::kernel`]'s. Acts on
//! the calling thread's network namespace and blocks.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::Handle;

use super::plan::{vtep_ip, vtep_mac, MacAddr, VxlanPeer};
use super::{sync_peers_in, KernelVxlan, VxlanDiff};
use crate::error::{Error, Result};
use crate::link::{
    find_link, get_link, is_errno, mtu_of, netlink, set_only_ipv4_address, with_handle,
};
use crate::name::validate_ifname;
use crate::subnet::validate_pod_subnet;
use crate::veth::MIN_MTU;

/// Bytes VXLAN over IPv4 adds to each packet: outer IPv4 (20), UDP (8), VXLAN (8) and inner
/// Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;

/// How the node's VXLAN device is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The device name (`capstan.vx` by default).
    pub device: String,
    /// The VXLAN network identifier, the same on every node (1 by default).
    pub vni: u32,
    /// The UDP destination port, the same on every node (4789 by default).
    pub port: u16,
}

impl Default for VxlanConfig {
    fn default() -> Self {
        VxlanConfig {
            device: super::DEFAULT_VXLAN_DEVICE.to_owned(),
            vni: super::DEFAULT_VNI,
            port: super::DEFAULT_VXLAN_PORT,
        }
    }
}

/// Largest VNI: it is a 24-bit field.
const MAX_VNI: u32 = (1 << 24) - 1;

/// The node's VXLAN device, known to exist and be configured after [`VxlanDevice::ensure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    name: String,
    subnet: Ipv4Net,
    local: Ipv4Addr,
    mtu: u32,
}

impl VxlanDevice {
    /// Creates the device if missing (or recreates it when its VNI, port, local address or
    /// underlying link changed), sets its MAC, MTU and only IPv4 address and brings it up.
    /// `local` is this node's address; the link holding it carries the encapsulated traffic.
    /// Idempotent; a link of that name that is not VXLAN is an [`Error::NotAVxlan`].
    pub fn ensure(config: &VxlanConfig, local: Ipv4Addr, subnet: Ipv4Net) -> Result<VxlanDevice> {
        validate_ifname(&config.device)?;
        validate_pod_subnet(subnet)?;
        if config.vni == 0 || config.vni > MAX_VNI {
            return Err(Error::Invalid {
                what: "vxlan vni",
                value: config.vni.to_string(),
                reason: format!("must be within 1..={MAX_VNI}"),
            });
        }
        if config.port == 0 {
            return Err(Error::Invalid {
                what: "vxlan port",
                value: "0".to_owned(),
                reason: "must be a UDP port number above 0".to_owned(),
            });
        }
        if local.is_unspecified() || local.is_loopback() || local.is_multicast() {
            return Err(Error::Invalid {
                what: "node address",
                value: local.to_string(),
                reason: "vxlan needs a unicast address other nodes can reach".to_owned(),
            });
        }
        let name = config.device.as_str();
        let mac = vtep_mac(subnet);
        let address = Ipv4Net::new(vtep_ip(subnet), 32).map_err(|err| Error::Invalid {
            what: "pod subnet",
            value: subnet.to_string(),
            reason: err.to_string(),
        })?;
        let mtu = with_handle(name, |handle| async move {
            let (uplink, uplink_mtu) = uplink_of(&handle, local).await?;
            let mtu = uplink_mtu.saturating_sub(VXLAN_OVERHEAD);
            if mtu < MIN_MTU {
                return Err(Error::Invalid {
                    what: "uplink mtu",
                    value: uplink_mtu.to_string(),
                    reason: format!("leaves less than {MIN_MTU} bytes after vxlan overhead"),
                });
            }
            let want = Params {
                vni: config.vni,
                port: config.port,
                local,
                uplink,
            };
            let existing = match find_link(&handle, name).await? {
                Some(link) if !is_vxlan(&link) => {
                    return Err(Error::NotAVxlan {
                        link: name.to_owned(),
                    })
                }
                Some(link) if params_of(&link) != Some(want) => {
                    tracing::info!(message = "recreating vxlan device with new parameters", link = name, local = %local, vni = config.vni);
                    delete_link(&handle, &link, name).await?;
                    None
                }
                other => other,
            };
            let link = match existing {
                Some(link) => link,
                None => {
                    create(&handle, name, &want, mac, mtu).await?;
                    tracing::info!(message = "vxlan device created", link = name, local = %local, vni = config.vni, port = config.port, subnet = %subnet);
                    get_link(&handle, name).await?
                }
            };
            let index = link.header.index;
            if mac_of(&link) != Some(mac) || mtu_of(&link) != Some(mtu) {
                handle
                    .link()
                    .set(index)
                    .address(mac.0.to_vec())
                    .mtu(mtu)
                    .execute()
                    .await
                    .map_err(|source| netlink("set mac and mtu", name, source))?;
            }
            set_only_ipv4_address(&handle, name, index, address).await?;
            handle
                .link()
                .set(index)
                .up()
                .execute()
                .await
                .map_err(|source| netlink("set up", name, source))?;
            Ok(mtu)
        })?;
        Ok(VxlanDevice {
            name: name.to_owned(),
            subnet,
            local,
            mtu,
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This node's pod subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The node address encapsulated packets leave from.
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    /// The device's MTU (the uplink's minus [`VXLAN_OVERHEAD`]); pod interfaces must not
    /// exceed it.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// This node's VTEP MAC, the one peers program for it.
    pub fn mac(&self) -> MacAddr {
        vtep_mac(self.subnet)
    }

    /// Makes the device's neighbour and FDB entries and routes match `peers` exactly (see
    /// [`super::plan`]). Blocks.
    pub fn sync(&self, peers: &[VxlanPeer]) -> Result<VxlanDiff> {
        sync_peers_in(&KernelVxlan::new(&self.name), self.subnet, peers)
    }

    /// Deletes the device, and with it its address, neighbour and FDB entries and routes.
    /// Idempotent.
    pub fn teardown(&self) -> Result<()> {
        delete_vxlan(&self.name)
    }
}

/// Deletes VXLAN device `name` if it exists, which removes every entry and route on it.
/// A link of that name that is not VXLAN is refused with [`Error::NotAVxlan`].
pub fn delete_vxlan(name: &str) -> Result<()> {
    validate_ifname(name)?;
    with_handle(name, |handle| async move {
        let Some(link) = find_link(&handle, name).await? else {
            return Ok(());
        };
        if !is_vxlan(&link) {
            return Err(Error::NotAVxlan {
                link: name.to_owned(),
            });
        }
        delete_link(&handle, &link, name).await?;
        tracing::info!(message = "vxlan device deleted", link = name);
        Ok(())
    })
}

/// Packet counters of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// The packet counters of link `name` in the calling thread's network namespace.
pub fn link_stats(name: &str) -> Result<LinkStats> {
    with_handle(name, |handle| async move {
        let link = get_link(&handle, name).await?;
        Ok(link
            .attributes
            .iter()
            .find_map(|attr| match attr {
                LinkAttribute::Stats64(s) => Some(LinkStats {
                    rx_packets: s.rx_packets,
                    tx_packets: s.tx_packets,
                }),
                _ => None,
            })
            .unwrap_or_default())
    })
}

/// The parameters that cannot be changed on a live VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    vni: u32,
    port: u16,
    local: Ipv4Addr,
    uplink: u32,
}

async fn create(handle: &Handle, name: &str, p: &Params, mac: MacAddr, mtu: u32) -> Result<()> {
    let mut request = handle
        .link()
        .add()
        .name(name.to_owned())
        .address(mac.0.to_vec());
    let message = request.message_mut();
    message.attributes.push(LinkAttribute::Mtu(mtu));
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(vec![
            InfoVxlan::Id(p.vni),
            InfoVxlan::Local(p.local.octets().to_vec()),
            InfoVxlan::Link(p.uplink),
            InfoVxlan::Port(p.port),
            // Peers are programmed from the node list; nothing is learned from traffic.
            InfoVxlan::Learning(false),
        ])),
    ]));
    match request.execute().await {
        Ok(()) => Ok(()),
        // Lost a race with a concurrent ensure: the caller re-reads and checks it.
        Err(err) if is_errno(&err, nix::libc::EEXIST) => Ok(()),
        Err(source) => Err(netlink("create vxlan", name, source)),
    }
}

async fn delete_link(handle: &Handle, link: &LinkMessage, name: &str) -> Result<()> {
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(err) if is_errno(&err, nix::libc::ENODEV) => Ok(()),
        Err(source) => Err(netlink("delete vxlan", name, source)),
    }
}

/// The index and MTU of the link holding address `local`.
async fn uplink_of(handle: &Handle, local: Ipv4Addr) -> Result<(u32, u32)> {
    let addresses: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| netlink("list addresses", "*", source))?;
    let index = addresses
        .iter()
        .find(|m| {
            m.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Address(std::net::IpAddr::V4(ip)) if *ip == local)
            })
        })
        .map(|m| m.header.index)
        .ok_or_else(|| Error::Invalid {
            what: "node address",
            value: local.to_string(),
            reason: "no link in this network namespace holds it".to_owned(),
        })?;
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|source| netlink("get", &format!("#{index}"), source))?
        .ok_or_else(|| Error::LinkNotFound {
            link: format!("#{index}"),
        })?;
    Ok((index, mtu_of(&link).unwrap_or_default()))
}

fn vxlan_data(link: &LinkMessage) -> Option<&[InfoVxlan]> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.as_slice()),
            _ => None,
        }),
        _ => None,
    })
}

fn is_vxlan(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Vxlan))),
        _ => false,
    })
}

/// The fixed parameters of an existing VXLAN device, if it has all of them and does not
/// learn.
fn params_of(link: &LinkMessage) -> Option<Params> {
    let data = vxlan_data(link)?;
    let (mut vni, mut port, mut local, mut uplink, mut learning) = (None, None, None, None, true);
    for info in data {
        match info {
            InfoVxlan::Id(v) => vni = Some(*v),
            InfoVxlan::Port(p) => port = Some(*p),
            InfoVxlan::Local(bytes) => {
                local = <[u8; 4]>::try_from(bytes.as_slice())
                    .ok()
                    .map(Ipv4Addr::from)
            }
            InfoVxlan::Link(i) => uplink = Some(*i),
            InfoVxlan::Learning(l) => learning = *l,
            _ => {}
        }
    }
    if learning {
        return None;
    }
    Some(Params {
        vni: vni?,
        port: port?,
        local: local?,
        uplink: uplink?,
    })
}

fn mac_of(link: &LinkMessage) -> Option<MacAddr> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(bytes) => MacAddr::from_slice(bytes),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn subnet() -> Ipv4Net {
        "10.244.1.0/24".parse().unwrap()
    }

    #[test]
    fn ensure_refuses_bad_input_before_touching_the_kernel() {
        let ip = Ipv4Addr::new(192, 168, 0, 2);
        let bad_vni = VxlanConfig {
            vni: 1 << 24,
            ..VxlanConfig::default()
        };
        let err = VxlanDevice::ensure(&bad_vni, ip, subnet()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    what: "vxlan vni",
                    ..
                }
            ),
            "{err}"
        );
        let bad_port = VxlanConfig {
            port: 0,
            ..VxlanConfig::default()
        };
        assert!(matches!(
            VxlanDevice::ensure(&bad_port, ip, subnet()),
            Err(Error::Invalid {
                what: "vxlan port",
                ..
            })
        ));
        let bad_name = VxlanConfig {
            device: "much-too-long-a-name".into(),
            ..VxlanConfig::default()
        };
        assert!(matches!(
            VxlanDevice::ensure(&bad_name, ip, subnet()),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            VxlanDevice::ensure(&VxlanConfig::default(), Ipv4Addr::LOCALHOST, subnet()),
            Err(Error::Invalid {
                what: "node address",
                ..
            })
        ));
    }

    #[test]
    fn a_learning_device_or_one_missing_parameters_needs_recreating() {
        let mut link = LinkMessage::default();
        let data = vec![
            InfoVxlan::Id(1),
            InfoVxlan::Port(4789),
            InfoVxlan::Local(vec![192, 168, 0, 2]),
            InfoVxlan::Link(3),
            InfoVxlan::Learning(false),
        ];
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data.clone())),
        ]));
        assert!(is_vxlan(&link));
        assert_eq!(
            params_of(&link),
            Some(Params {
                vni: 1,
                port: 4789,
                local: Ipv4Addr::new(192, 168, 0, 2),
                uplink: 3
            })
        );
        let mut learning = data.clone();
        learning[4] = InfoVxlan::Learning(true);
        link.attributes[0] = LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(learning)),
        ]);
        assert_eq!(params_of(&link), None);
        assert!(!is_vxlan(&LinkMessage::default()));
    }
}
