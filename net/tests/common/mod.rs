//! Helpers shared by the pod-network tests, as root: a [`Lab`] of network namespaces this
//! test process creates under a random `/run` directory (removed with everything in them on
//! drop, also on failure), netlink access inside them, and pod attach and TCP exchange.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use net::{attach_pod, run_in_netns, Ipv4Net, NetnsManager, NodeNetwork, PodIpam};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use nix::mount::{umount2, MntFlags};
use rtnetlink::{Handle, IpVersion};

pub const MTU: u32 = 1400;

/// The test's namespaces and state files; on drop, every netns file is unmounted (which
/// destroys the namespace with its links, addresses and routes) and the directory removed.
pub struct Lab {
    /// The test's private directory.
    pub base: PathBuf,
    /// The netns files, one per node or pod namespace.
    pub netns: NetnsManager,
}

impl Lab {
    pub fn new() -> Lab {
        let base = PathBuf::from(format!(
            "/run/capstan-nettest-{:016x}",
            rand::random::<u64>()
        ));
        let netns = NetnsManager::new(base.join("netns")).expect("netns root");
        Lab { base, netns }
    }

    pub fn ns(&self, name: &str) -> PathBuf {
        self.netns.create(name).expect("create netns")
    }

    pub fn ipam(&self, node: &str, subnet: Ipv4Net) -> PodIpam {
        PodIpam::open(self.base.join("ipam").join(node), subnet).expect("open ipam")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let root = self.netns.root().to_path_buf();
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.flatten() {
                while umount2(&entry.path(), MntFlags::MNT_DETACH).is_ok() {}
            }
        }
        while umount2(&root, MntFlags::MNT_DETACH).is_ok() {}
        let _ = fs::remove_dir_all(&self.base);
    }
}

pub fn unique_bridge() -> String {
    format!("cbr{:08x}", rand::random::<u32>())
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// Runs `f` with a netlink handle in the calling thread's namespace.
pub fn netlink<T, Fut>(f: impl FnOnce(Handle) -> Fut) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        let driver = tokio::spawn(connection);
        let out = f(handle).await;
        driver.abort();
        out
    })
}

pub async fn index(handle: &Handle, name: &str) -> u32 {
    handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .unwrap()
        .unwrap()
        .header
        .index
}

pub async fn addr_up(handle: &Handle, name: &str, address: &str) {
    let address = net(address);
    let i = index(handle, name).await;
    handle
        .address()
        .add(i, address.addr().into(), address.prefix_len())
        .execute()
        .await
        .unwrap();
    handle.link().set(i).up().execute().await.unwrap();
}

/// Every IPv4 route of the main table in `node`: (destination, protocol, gateway).
pub fn routes_in(node: &Path) -> Vec<(Ipv4Net, RouteProtocol, Option<Ipv4Addr>)> {
    run_in_netns(node, || {
        netlink(|h| async move {
            let all: Vec<_> = h
                .route()
                .get(IpVersion::V4)
                .execute()
                .try_collect()
                .await
                .unwrap();
            all.into_iter()
                .filter(|m| m.header.table == 254)
                .map(|m| {
                    let mut dst = Ipv4Addr::UNSPECIFIED;
                    let mut gw = None;
                    for a in &m.attributes {
                        match a {
                            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                            _ => {}
                        }
                    }
                    let dst = Ipv4Net::new(dst, m.header.destination_prefix_length).unwrap();
                    (dst, m.header.protocol, gw)
                })
                .collect()
        })
    })
    .unwrap()
}

/// Every IPv4 address on any link in `node`.
pub fn addresses_in(node: &Path) -> Vec<Ipv4Addr> {
    run_in_netns(node, || {
        netlink(|h| async move {
            let all: Vec<_> = h.address().get().execute().try_collect().await.unwrap();
            all.iter()
                .flat_map(|m| m.attributes.iter())
                .filter_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
                .collect()
        })
    })
    .unwrap()
}

pub fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    run_in_netns(ns, f).expect("enter netns")
}

pub fn ensure(node: &Path, bridge: &str, subnet: Ipv4Net) -> NodeNetwork {
    let bridge = bridge.to_owned();
    in_ns(node, move || NodeNetwork::ensure(&bridge, subnet)).expect("ensure bridge")
}

/// Allocates an address for `uid` and attaches pod namespace `pod` in `node`.
pub fn attach(
    node: &Path,
    pod: &Path,
    uid: &str,
    ipam: &PodIpam,
    bridge: &str,
) -> net::PodInterface {
    let ip = ipam.allocate(uid).expect("allocate");
    let (pod, uid, bridge, subnet) = (
        pod.to_path_buf(),
        uid.to_owned(),
        bridge.to_owned(),
        ipam.subnet(),
    );
    in_ns(node, move || {
        attach_pod(&pod, &uid, ip, subnet, &bridge, MTU)
    })
    .expect("attach pod")
}

pub fn listen(pod: &Path, ip: Ipv4Addr) -> TcpListener {
    in_ns(pod, move || TcpListener::bind((ip, 0))).expect("bind in pod")
}

/// Connects from pod namespace `from` to `listener`, sends a byte each way and returns the
/// client address the listener saw.
pub fn exchange(from: &Path, listener: &TcpListener) -> std::io::Result<SocketAddr> {
    let target = listener.local_addr()?;
    let mut client = in_ns(from, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(3))
    })?;
    let (mut server, seen) = listener.accept()?;
    client.write_all(b"p")?;
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte)?;
    server.write_all(b"q")?;
    client.read_exact(&mut byte)?;
    assert_eq!(&byte, b"q");
    Ok(seen)
}
