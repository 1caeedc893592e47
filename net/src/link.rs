//! Network links inside the calling thread's network namespace, via rtnetlink. For the
//! walking skeleton that is bringing `lo` up; veths and bridges come later. Each call opens
//! its own netlink socket on a current-thread tokio runtime, so the socket belongs to the
//! namespace of the calling thread. It must not change namespaces itself: enter one with
//! [`crate::run_in_netns`] first.

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkFlag, LinkMessage};
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

/// Runs `op` with a fresh rtnetlink handle on a current-thread runtime built here.
fn with_handle<T, F, Fut>(link: &str, op: F) -> Result<T>
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

async fn get_link(handle: &Handle, name: &str) -> Result<LinkMessage> {
    let found = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(Error::LinkNotFound {
            link: name.to_owned(),
        }),
        Err(rtnetlink::Error::NetlinkError(message))
            if message.raw_code().abs() == nix::libc::ENODEV =>
        {
            Err(Error::LinkNotFound {
                link: name.to_owned(),
            })
        }
        Err(source) => Err(netlink("get", name, source)),
    }
}

fn netlink(op: &'static str, link: &str, source: rtnetlink::Error) -> Error {
    Error::Netlink {
        op,
        link: link.to_owned(),
        source: Box::new(source),
    }
}
