//! The service proxy's error type. It owns the mapping from `nft` failures and bad
//! configuration to typed variants; it must not log or retry.

use std::path::PathBuf;

/// Result alias for the service proxy.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while programming Service rules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured table name is not usable; fix the configuration.
    #[error("invalid nftables table name {table:?}: {reason}")]
    InvalidTable {
        /// The rejected name.
        table: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The `nft` binary could not be started; install the `nftables` package.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program that was run.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// `nft` refused a command. A refused ruleset is one transaction, so the table is left as
    /// it was; the next sync re-reads the table and retries (a concurrent edit by someone
    /// else heals that way), a persistent failure is a bug in the generated rules.
    #[error("nft {op} failed ({status}): {stderr}")]
    Nft {
        /// What was asked of `nft` (e.g. `apply ruleset`, `list chains`).
        op: &'static str,
        /// The exit status, formatted.
        status: String,
        /// What `nft` printed on stderr (truncated).
        stderr: String,
    },

    /// `nft -j` printed something that is not the JSON we expect; an `nft` version problem,
    /// retrying will not help.
    #[error("unexpected output of nft {op}: {source}")]
    Parse {
        /// The listing that was parsed (e.g. `list chains`).
        op: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}
