//! Network links inside the calling thread's network namespace, via rtnetlink: the shared
//! netlink plumbing (one handle per call, link lookup, error mapping) and small link
//! queries. Bridges, veths and routes build on it in their own modules. Each call opens
//! its own netlink socket on a current-thread tokio runtime, so the socket belongs to the
//! namespace of the calling thread. It must not change namespaces itself: enter one with
//! [`crate::run_in_netns`] first.

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkMessage};
use rtnetlink::Handle;

use crate::error::{Error, Result};

/// Brings link `name` up in the calling thread's network namespace.
///
/// Blocks; call it from a plain thread (e.g. inside [`crate::run_in_netns`]), not from async code.
pub fn set_link_up(name: &str) -> Result<()> {
    with_handle(name, |handle| async move {
        let link = get_link(&handle, name).await?;
        handle
            .link()
            .set(link.header.index)
            .up()
            .execute()
            .await
            .map_err(|source| netlink("set up", name, source))
    })
}

/// Reports whether link `name` in the calling thread's network namespace is administratively
/// up (`IFF_UP`).
///
/// Blocks; call it from a plain thread (e.g. inside [`crate::run_in_netns`]), not from async code.
pub fn link_is_up(name: &str) -> Result<bool> {
    with_handle(name, |handle| async move {
        let link = get_link(&handle, name).await?;
        Ok(link.header.flags.contains(&LinkFlag::Up))
    })
}

/// Reports whether a link named `name` exists in the calling thread's network namespace.
///
/// Blocks; call it from a plain thread (e.g. inside [`crate::run_in_netns`]), not from async code.
pub fn link_exists(name: &str) -> Result<bool> {
    with_handle(name, |handle| async move {
        Ok(find_link(&handle, name).await?.is_some())
    })
}

/// The IPv4 addresses (with prefix length) on link `name` in the calling thread's network
/// namespace, sorted.
///
/// Blocks; call it from a plain thread (e.g. inside [`crate::run_in_netns`]), not from async code.
pub fn link_ipv4_addresses(name: &str) -> Result<Vec<Ipv4Net>> {
    with_handle(name, |handle| async move {
        let link = get_link(&handle, name).await?;
        ipv4_addresses(&handle, name, link.header.index).await
    })
}

/// The link's MTU as the kernel reports it.
pub fn link_mtu(name: &str) -> Result<u32> {
    with_handle(name, |handle| async move {
        let link = get_link(&handle, name).await?;
        Ok(mtu_of(&link).unwrap_or_default())
    })
}

/// The MTU attribute of a link message, if present.
pub(crate) fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// The IPv4 addresses on the link with index `index`, sorted.
pub(crate) async fn ipv4_addresses(
    handle: &Handle,
    name: &str,
    index: u32,
) -> Result<Vec<Ipv4Net>> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|source| netlink("list addresses", name, source))?;
    let mut found: Vec<Ipv4Net> = messages
        .iter()
        .filter_map(|message| {
            let ip = message.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })?;
            Ipv4Net::new(ip, message.header.prefix_len).ok()
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Makes `want` the only IPv4 address of link `index`: adds it if missing, removes any other
/// IPv4 address (a stale one from an earlier subnet). Other families are left alone.
pub(crate) async fn set_only_ipv4_address(
    handle: &Handle,
    name: &str,
    index: u32,
    want: Ipv4Net,
) -> Result<()> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|source| netlink("list addresses", name, source))?;
    let mut present = false;
    for message in messages {
        let ip = message.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let Some(ip) = ip else { continue };
        if ip == want.addr() && message.header.prefix_len == want.prefix_len() {
            present = true;
            continue;
        }
        tracing::info!(message = "removing stale address", link = name, address = %ip);
        handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(|source| netlink("delete address", name, source))?;
    }
    if !present {
        handle
            .address()
            .add(index, want.addr().into(), want.prefix_len())
            .execute()
            .await
            .map_err(|source| netlink("add address", name, source))?;
    }
    Ok(())
}

/// Runs `op` with a fresh rtnetlink handle on a current-thread runtime built here.
pub(crate) fn with_handle<T, F, Fut>(link: &str, op: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let setup = |op: &'static str| {
        let link = link.to_owned();
        move |source| Error::NetlinkSetup { op, link, source }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(setup("build runtime"))?;
    runtime.block_on(async {
        let (connection, handle, _messages) =
            rtnetlink::new_connection().map_err(setup("open socket"))?;
        let driver = tokio::spawn(connection);
        let result = op(handle).await;
        driver.abort();
        result
    })
}

/// The link named `name`, or [`Error::LinkNotFound`].
pub(crate) async fn get_link(handle: &Handle, name: &str) -> Result<LinkMessage> {
    find_link(handle, name)
        .await?
        .ok_or_else(|| Error::LinkNotFound {
            link: name.to_owned(),
        })
}

/// The link named `name`, if it exists.
pub(crate) async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let found = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(link) => Ok(link),
        Err(err) if is_errno(&err, nix::libc::ENODEV) => Ok(None),
        Err(source) => Err(netlink("get", name, source)),
    }
}

/// True if `err` is the kernel's answer `errno` to a netlink request.
pub(crate) fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(message) if message.raw_code().abs() == errno)
}

/// Maps a failed netlink request on link `link` to [`Error::Netlink`].
pub(crate) fn netlink(op: &'static str, link: &str, source: rtnetlink::Error) -> Error {
    Error::Netlink {
        op,
        link: link.to_owned(),
        source: Box::new(source),
    }
}
