//! Errors of the control plane and node agent, and their one mapping to gRPC statuses.

/// What went wrong in the API server, the scheduler or the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object failed validation; fix the input. Each entry names the field and the reason.
    #[error("{kind} {name:?} is invalid: {details}")]
    Invalid {
        /// Kind of the object.
        kind: String,
        /// Name of the object (may be empty).
        name: String,
        /// `field: reason` entries joined by `; `.
        details: String,
    },
    /// The object does not exist.
    #[error("{kind} {key:?} not found")]
    NotFound {
        /// Kind of the object.
        kind: String,
        /// `namespace/name` or `name`.
        key: String,
    },
    /// The object exists already.
    #[error("{kind} {key:?} already exists")]
    AlreadyExists {
        /// Kind of the object.
        kind: String,
        /// `namespace/name` or `name`.
        key: String,
    },
    /// The object changed since it was read: re-read it and retry.
    #[error("conflict on {key:?}: expected resourceVersion {expected}, found {actual}")]
    Conflict {
        /// Storage key.
        key: String,
        /// resourceVersion the caller sent.
        expected: String,
        /// resourceVersion in the store.
        actual: String,
    },
    /// The request is not allowed in the current state (e.g. a namespace that does not exist).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A watch asked for history that was compacted: list again.
    #[error("resourceVersion {requested} is too old (compacted at {compacted}); list again")]
    Expired {
        /// Requested resourceVersion.
        requested: i64,
        /// The store's compaction point.
        compacted: i64,
    },
    /// The store failed; retry later.
    #[error("store: {0}")]
    Store(#[from] raftstore::Error),
    /// A stored object could not be decoded: the data is damaged or from an incompatible version.
    #[error("corrupt object at {key:?}: {reason}")]
    Corrupt {
        /// Storage key.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// The container runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] runtime::Error),
    /// Building the pod network failed.
    #[error("network: {0}")]
    Net(#[from] net::Error),
    /// The node's cluster DNS server failed (cannot bind, bad upstreams); the agent retries.
    #[error("cluster DNS: {0}")]
    Dns(#[from] net::dns::server::Error),
    /// The cluster DNS records could not be built (an invalid cluster domain): fix the flag.
    #[error("cluster DNS records: {0}")]
    DnsRecords(#[from] net::dns::Error),
    /// A pod's `/etc/hosts`, `/etc/hostname` or `/etc/resolv.conf` could not be written.
    #[error("pod files {path}: {source}")]
    PodFiles {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Calling the API server failed.
    #[error("api client: {0}")]
    Client(String),
    /// An actor could not be reached or did not answer in time.
    #[error("actor {actor}: {reason}")]
    Actor {
        /// Actor name.
        actor: String,
        /// What happened.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task: {0}")]
    Task(String),
    /// A control-plane write was refused because this server no longer holds the leader lease:
    /// another server took it over (the fence key moved). Stop acting; do not retry.
    #[error("not the leader: fence {key:?} moved from revision {fence} to {current}")]
    Fenced {
        /// The fence key.
        key: String,
        /// The revision this server's fencing token holds.
        fence: i64,
        /// The fence key's revision now (0: missing).
        current: i64,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::Conflict { .. } => Code::Aborted,
            Error::Fenced { .. } => Code::FailedPrecondition,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Expired { .. } => Code::OutOfRange,
            Error::Store(raftstore::Error::NotLeader { .. }) => Code::Unavailable,
            Error::Store(_) | Error::Actor { .. } | Error::Client(_) => Code::Unavailable,
            Error::Corrupt { .. } | Error::Task(_) => Code::Internal,
            Error::Runtime(_) | Error::Net(_) => Code::Internal,
            Error::Dns(_) | Error::DnsRecords(_) | Error::PodFiles { .. } => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
