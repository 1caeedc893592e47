//! Attaching a pod to the node bridge: a veth pair whose host end joins the bridge and whose
//! peer becomes the pod's `eth0` with its address, MTU and default route. It owns the naming
//! of host ends and the idempotent attach/detach; it must not allocate addresses or create
//! the bridge. The host side acts on the calling thread's network namespace (the node's);
//! the pod side runs inside the pod's namespace via [`run_in_netns`]. Everything blocks.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteScope;
use netlink_packet_route::AddressFamily;
use netlink_packet_utils::nla::{DefaultNla, NLA_F_NESTED};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::link::{find_link, get_link, is_errno, netlink, set_only_ipv4_address, with_handle};
use crate::name::validate_ifname;
use crate::netns::run_in_netns;
use crate::subnet::{check_pod_address, gateway};

/// The interface name of the pod's end inside its namespace.
pub const POD_IFNAME: &str = "eth0";

/// `IFLA_PROTINFO`: a bridge port's settings, nested (linux/if_link.h).
const IFLA_PROTINFO: u16 = 12;
/// `IFLA_BRPORT_MODE`: the bridge port's hairpin mode, one byte (linux/if_link.h).
const IFLA_BRPORT_MODE: u16 = 4;

/// Smallest MTU accepted for IPv4 (RFC 791).
pub const MIN_MTU: u32 = 68;

/// Largest MTU a veth accepts.
pub const MAX_MTU: u32 = 65535;

/// A pod's attachment as configured by [`attach_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// The host end of the veth pair, attached to the bridge.
    pub host_ifname: String,
    /// The pod end's name inside the pod namespace ([`POD_IFNAME`]).
    pub pod_ifname: String,
    /// The pod's address with the subnet's prefix length.
    pub address: Ipv4Net,
    /// The pod's default gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// The MTU of both ends.
    pub mtu: u32,
}

/// The host-side veth name for a pod: `cap` plus 12 hex digits of the uid's SHA-256, which
/// fits the kernel's 15-byte limit and is stable across restarts.
pub fn host_ifname(pod_uid: &str) -> String {
    format!("cap{}", short_hash(pod_uid))
}

/// The pod end's name while it is still in the node namespace (before the move and rename).
fn temp_peer_ifname(pod_uid: &str) -> String {
    format!("cpp{}", short_hash(pod_uid))
}

fn short_hash(pod_uid: &str) -> String {
    let digest = Sha256::digest(pod_uid.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Attaches the pod whose network namespace is the file `netns` to bridge `bridge`: creates
/// the veth pair (host end [`host_ifname`], on the bridge in hairpin mode, up), moves the peer into the pod
/// namespace as `eth0` with `ip`/prefix, MTU `mtu`, up, and a default route via the subnet's
/// gateway. Idempotent, and it repairs a half-done earlier attach.
pub fn attach_pod(
    netns: &Path,
    pod_uid: &str,
    ip: Ipv4Addr,
    subnet: Ipv4Net,
    bridge: &str,
    mtu: u32,
) -> Result<PodInterface> {
    validate_ifname(bridge)?;
    check_pod_address(subnet, ip)?;
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(Error::Invalid {
            what: "mtu",
            value: mtu.to_string(),
            reason: format!("must be within {MIN_MTU}..={MAX_MTU}"),
        });
    }
    let iface = PodInterface {
        host_ifname: host_ifname(pod_uid),
        pod_ifname: POD_IFNAME.to_owned(),
        address: Ipv4Net::new(ip, subnet.prefix_len()).map_err(|err| Error::Invalid {
            what: "pod subnet",
            value: subnet.to_string(),
            reason: err.to_string(),
        })?,
        gateway: gateway(subnet),
        mtu,
    };
    let temp_peer = temp_peer_ifname(pod_uid);
    match attach_once(netns, &iface, &temp_peer, bridge) {
        Err(Error::PodEndMissing { .. }) => {
            // The host end outlived its peer's namespace (the pod's netns was recreated):
            // start over with a fresh pair.
            tracing::warn!(message = "recreating veth whose pod end is gone", pod = pod_uid, link = %iface.host_ifname);
            delete_link(&iface.host_ifname)?;
            attach_once(netns, &iface, &temp_peer, bridge)?;
        }
        other => other?,
    }
    tracing::info!(message = "pod attached", pod = pod_uid, link = %iface.host_ifname, address = %iface.address, bridge);
    Ok(iface)
}

/// Removes the pod's host-side veth, which takes the pod end with it. Idempotent.
pub fn detach_pod(pod_uid: &str) -> Result<()> {
    let host = host_ifname(pod_uid);
    delete_link(&host)?;
    // A crash between creating the pair and moving the peer leaves it here under its
    // temporary name; deleting the host end above already removed it with the pair.
    tracing::info!(message = "pod detached", pod = pod_uid, link = %host);
    Ok(())
}

fn attach_once(netns: &Path, iface: &PodInterface, temp_peer: &str, bridge: &str) -> Result<()> {
    let netns_file = File::open(netns).map_err(|source| Error::Io {
        op: "open netns",
        path: netns.to_path_buf(),
        source,
    })?;
    let netns_fd = netns_file.as_raw_fd();
    let host = iface.host_ifname.as_str();
    let mtu = iface.mtu;
    with_handle(host, |handle| async move {
        let bridge_link = get_link(&handle, bridge).await?;
        if find_link(&handle, host).await?.is_none() {
            match handle
                .link()
                .add()
                .veth(host.to_owned(), temp_peer.to_owned())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(err) if is_errno(&err, nix::libc::EEXIST) => {}
                Err(source) => return Err(netlink("create veth", host, source)),
            }
        }
        let host_link = get_link(&handle, host).await?;
        handle
            .link()
            .set(host_link.header.index)
            .mtu(mtu)
            .controller(bridge_link.header.index)
            .up()
            .execute()
            .await
            .map_err(|source| netlink("attach to bridge", host, source))?;
        // Hairpin: a pod reaching itself through its Service is DNATed back to its own
        // address; the bridge then has to send the frame out of the port it came in on.
        let mut hairpin = handle.link().set(host_link.header.index);
        let message = hairpin.message_mut();
        message.header.interface_family = AddressFamily::Bridge;
        message.attributes.push(hairpin_on());
        hairpin
            .execute()
            .await
            .map_err(|source| netlink("set hairpin mode", host, source))?;
        if let Some(peer) = find_link(&handle, temp_peer).await? {
            handle
                .link()
                .set(peer.header.index)
                .setns_by_fd(netns_fd)
                .execute()
                .await
                .map_err(|source| netlink("move into pod netns", temp_peer, source))?;
        }
        Ok(())
    })?;
    drop(netns_file);
    let inside = iface.clone();
    let temp_peer = temp_peer.to_owned();
    run_in_netns(netns, move || configure_pod_end(&inside, &temp_peer))?
}

/// The bridge port attribute that turns hairpin mode on, as `bridge link set hairpin on` sends
/// it: `IFLA_PROTINFO` flagged nested (without the flag the kernel reads it as an old-style
/// port state) holding `IFLA_BRPORT_MODE = 1`. netlink-packet-route 0.19 emits its own
/// bridge protinfo without that flag, hence the raw attribute.
fn hairpin_on() -> LinkAttribute {
    // One attribute: length 5 (4-byte header + 1 byte), type, value, padding to 4 bytes.
    let mode = [5, 0, IFLA_BRPORT_MODE as u8, 0, 1, 0, 0, 0];
    LinkAttribute::ProtoInfoUnknown(DefaultNla::new(IFLA_PROTINFO | NLA_F_NESTED, mode.to_vec()))
}

/// Inside the pod namespace: rename the peer to `eth0` if needed, then MTU, address, up and
/// the default route.
fn configure_pod_end(iface: &PodInterface, temp_peer: &str) -> Result<()> {
    let name = iface.pod_ifname.as_str();
    with_handle(name, |handle| async move {
        let link = match find_link(&handle, name).await? {
            Some(link) => link,
            None => {
                let Some(peer) = find_link(&handle, temp_peer).await? else {
                    return Err(Error::PodEndMissing {
                        host_ifname: iface.host_ifname.clone(),
                    });
                };
                handle
                    .link()
                    .set(peer.header.index)
                    .name(name.to_owned())
                    .execute()
                    .await
                    .map_err(|source| netlink("rename", temp_peer, source))?;
                get_link(&handle, name).await?
            }
        };
        let index = link.header.index;
        handle
            .link()
            .set(index)
            .mtu(iface.mtu)
            .execute()
            .await
            .map_err(|source| netlink("set mtu", name, source))?;
        set_only_ipv4_address(&handle, name, index, iface.address).await?;
        handle
            .link()
            .set(index)
            .up()
            .execute()
            .await
            .map_err(|source| netlink("set up", name, source))?;
        // `replace` makes the default route idempotent and corrects a stale gateway.
        handle
            .route()
            .add()
            .v4()
            .replace()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(iface.gateway)
            .output_interface(index)
            .scope(RouteScope::Universe)
            .execute()
            .await
            .map_err(|source| netlink("add default route", name, source))
    })
}

fn delete_link(name: &str) -> Result<()> {
    with_handle(name, |handle| async move {
        let Some(link) = find_link(&handle, name).await? else {
            return Ok(());
        };
        match handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(()),
            Err(err) if is_errno(&err, nix::libc::ENODEV) => Ok(()),
            Err(source) => Err(netlink("delete", name, source)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_distinct_and_fit_ifnamsiz() {
        let a = host_ifname("3f1c2a9e-0000-4000-8000-000000000001");
        assert_eq!(a, host_ifname("3f1c2a9e-0000-4000-8000-000000000001"));
        assert_ne!(a, host_ifname("3f1c2a9e-0000-4000-8000-000000000002"));
        assert_eq!(a.len(), 15);
        assert!(validate_ifname(&a).is_ok());
        assert!(a.starts_with("cap"));
        let temp = temp_peer_ifname("3f1c2a9e-0000-4000-8000-000000000001");
        assert_eq!(temp.len(), 15);
        assert_ne!(temp, a);
    }

    #[test]
    fn attach_refuses_bad_input_before_touching_the_kernel() {
        let subnet: Ipv4Net = "10.244.0.0/24".parse().unwrap_or_default();
        let netns = Path::new("/nonexistent");
        let gw = Ipv4Addr::new(10, 244, 0, 1);
        assert!(matches!(
            attach_pod(netns, "u", gw, subnet, "cbr0", 1500),
            Err(Error::NotAPodAddress { .. })
        ));
        assert!(matches!(
            attach_pod(netns, "u", Ipv4Addr::new(10, 244, 0, 2), subnet, "cbr0", 10),
            Err(Error::Invalid { what: "mtu", .. })
        ));
        assert!(matches!(
            attach_pod(
                netns,
                "u",
                Ipv4Addr::new(10, 244, 0, 2),
                subnet,
                "bad/name",
                1500
            ),
            Err(Error::InvalidName { .. })
        ));
    }
}
