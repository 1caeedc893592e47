//! The benchmark's one error type. Every failure names what was being done, so a run that
//! stops half-way says which system and which step broke.

/// Why a benchmark run (or a member process) stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line argument is missing or malformed.
    #[error("{arg}: {reason}")]
    Usage {
        /// The argument.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file, directory, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A gRPC call failed.
    #[error("{what}: {status}")]
    Rpc {
        /// The call.
        what: &'static str,
        /// The status it ended with.
        status: Box<tonic::Status>,
    },
    /// A connection to a client URL could not be made.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The client URL.
        url: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The store itself failed (member mode).
    #[error(transparent)]
    Store(#[from] raftstore::Error),
    /// Something did not happen in time (a cluster never elected a leader, a watch never saw
    /// its event).
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A process or server answered something the benchmark cannot use.
    #[error("{0}")]
    Unexpected(String),
    /// Ctrl-C or SIGTERM: everything started was stopped and removed.
    #[error("interrupted")]
    Interrupted,
}

/// Result of benchmark steps.
pub type Result<T> = std::result::Result<T, BenchError>;

impl BenchError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }

    /// A failed gRPC call `what`.
    pub fn rpc(what: &'static str) -> impl FnOnce(tonic::Status) -> BenchError {
        move |status| BenchError::Rpc {
            what,
            status: Box::new(status),
        }
    }
}
