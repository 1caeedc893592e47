//! The crate's error type. It owns the mapping from OS, netlink and input failures to typed
//! variants that carry the path, link or name involved; it must not log or retry.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

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

    /// An input value (subnet, address, MTU, ...) is unusable; fix the input, retrying will
    /// not help.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was rejected (e.g. `pod address`).
        what: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A netlink request about a route failed; re-read the routing table and retry.
    #[error("netlink {op} on route {route}: {source}")]
    NetlinkRoute {
        /// The request that failed (e.g. `add`).
        op: &'static str,
        /// The route it addressed, formatted as `<subnet> via <gateway>`.
        route: String,
        /// The underlying netlink error (boxed: it is large and this path is cold).
        #[source]
        source: Box<rtnetlink::Error>,
    },

    /// The link exists but is not a bridge (someone else owns that name); pick another
    /// bridge name or remove the link.
    #[error("link {link:?} exists but is not a bridge")]
    NotABridge {
        /// The link name.
        link: String,
    },

    /// The link exists but is not a VXLAN device (someone else owns that name); pick another
    /// VXLAN device name or remove the link.
    #[error("link {link:?} exists but is not a vxlan device")]
    NotAVxlan {
        /// The link name.
        link: String,
    },

    /// A netlink request about a VXLAN peer entry (neighbour, FDB entry or route) failed;
    /// re-read the entries and retry.
    #[error("netlink {op} on vxlan entry {entry}: {source}")]
    NetlinkVxlan {
        /// The request that failed (e.g. `add`).
        op: &'static str,
        /// The entry it addressed, formatted (e.g. `fdb 0a:58:0a:f4:01:00 dst 192.168.0.2`).
        entry: String,
        /// The underlying netlink error (boxed: it is large and this path is cold).
        #[source]
        source: Box<rtnetlink::Error>,
    },

    /// Every node subnet of the cluster CIDR is claimed; enlarge the cluster CIDR or free
    /// the subnets of deleted nodes.
    #[error("no free /{node_prefix} node subnet left in cluster CIDR {cidr}")]
    NodeSubnetsExhausted {
        /// The cluster CIDR.
        cidr: Ipv4Net,
        /// The prefix length of node subnets.
        node_prefix: u8,
    },

    /// Claims for a node subnet kept losing the compare-and-swap to other nodes; retry later.
    #[error("node {node:?} lost the subnet claim {attempts} times in a row")]
    SubnetClaimContended {
        /// The node that tried to claim.
        node: String,
        /// How many claims it lost.
        attempts: u32,
    },

    /// The subnet registry already records a subnet for the node that lies outside the
    /// cluster CIDR (the CIDR was changed); release the node's subnet or restore the CIDR.
    #[error("node {node:?} holds subnet {subnet} outside cluster CIDR {cidr}")]
    SubnetOutsideCidr {
        /// The node.
        node: String,
        /// The subnet it holds.
        subnet: Ipv4Net,
        /// The configured cluster CIDR.
        cidr: Ipv4Net,
    },

    /// The subnet registry (the cluster store, behind [`crate::ipam::SubnetRegistry`])
    /// failed; its error says whether to retry.
    #[error("subnet registry {op}: {source}")]
    Registry {
        /// The registry call that failed (`get`, `claim`, `list`).
        op: &'static str,
        /// The implementation's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Every pod address of the node subnet is in use; release addresses (reconcile) first.
    #[error("no free pod address left in {subnet}")]
    PodAddressesExhausted {
        /// The node's pod subnet.
        subnet: Ipv4Net,
    },

    /// The pod address state file holds allocations from another subnet than the node has
    /// now; the node's subnet changed under running pods, so give up and drain the node.
    #[error(
        "pod address state {path} is for subnet {stored} with live allocations, not {requested}"
    )]
    IpamSubnetMismatch {
        /// The state file.
        path: PathBuf,
        /// The subnet recorded in the file.
        stored: Ipv4Net,
        /// The subnet the caller asked for.
        requested: Ipv4Net,
    },

    /// The pod address state file cannot be parsed; it was not written by this crate (writes
    /// are atomic), so inspect it by hand.
    #[error("corrupt pod address state {path}: {source}")]
    IpamCorrupt {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// The pod's end of a veth pair vanished while the host end exists (the pod namespace
    /// was replaced); [`crate::attach_pod`] recovers from this itself once.
    #[error("pod end of veth {host_ifname:?} is missing from the pod namespace")]
    PodEndMissing {
        /// The host end of the pair.
        host_ifname: String,
    },

    /// The address is not usable for a pod of this subnet (network, broadcast, gateway or
    /// outside); fix the input.
    #[error("address {ip} is not a pod address of {subnet}")]
    NotAPodAddress {
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
}

impl Error {
    /// Wraps an error of a [`crate::ipam::SubnetRegistry`] implementation.
    pub fn registry(
        op: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Registry {
            op,
            source: source.into(),
        }
    }
}
