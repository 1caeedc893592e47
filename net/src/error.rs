//! The crate's error type. It owns the mapping from OS, netlink and input failures to typed
//! variants that carry the path, link or name involved; it must not log or retry.

use std::path::PathBuf;

/// Result alias for every fallible operation in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while building or inspecting pod networks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller passed an unusable name; fix the input, retrying will not help.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidName {
        /// Which input field was rejected (e.g. `netns name`).
        field: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A filesystem operation failed; usually permissions or a missing parent, so give up
    /// unless the cause is known to be transient.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed (e.g. `create netns file`).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A system call (mount, unshare, setns, ...) failed; typically missing privileges
    /// (`EPERM`) or a path that is not what it should be (`EINVAL`).
    #[error("{op} {path}: {source}")]
    Sys {
        /// The system call or step that failed (e.g. `bind-mount netns`).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The errno returned by the kernel.
        #[source]
        source: nix::errno::Errno,
    },

    /// A netlink request failed; the link may be in an unexpected state, retry after
    /// re-reading it.
    #[error("netlink {op} on link {link:?}: {source}")]
    Netlink {
        /// The request that failed (e.g. `set up`).
        op: &'static str,
        /// The link it addressed.
        link: String,
        /// The underlying netlink error (boxed: it is large and this path is cold).
        #[source]
        source: Box<rtnetlink::Error>,
    },

    /// A netlink socket or the runtime driving it could not be set up; usually resource
    /// exhaustion (file descriptors), so retry later.
    #[error("netlink {op} for link {link:?}: {source}")]
    NetlinkSetup {
        /// The setup step that failed (e.g. `open socket`).
        op: &'static str,
        /// The link the request was for.
        link: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The named link does not exist in the namespace that was searched.
    #[error("link {link:?} not found")]
    LinkNotFound {
        /// The link name that was looked up.
        link: String,
    },

    /// The worker thread that enters a namespace could not be started or panicked; the
    /// namespace state is unknown, so re-check it before retrying.
    #[error("netns worker thread {what}")]
    Thread {
        /// What happened to the thread (`failed to spawn: ...` or `panicked`).
        what: String,
    },
}
