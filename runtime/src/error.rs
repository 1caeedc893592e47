//! The runtime crate's error type. Owns the vocabulary of failures callers can act on:
//! a missing image or container (fix the input), a failed start (report it on the pod),
//! or an I/O/OS failure (retry or give up). It must not hide causes behind strings
//! where a typed variant carries the id that matters.

use std::path::PathBuf;

/// Errors returned by every public operation of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference is not in the local store; import or build it first.
    #[error("image {reference:?} not found in the local store")]
    ImageNotFound {
        /// The reference as the caller gave it.
        reference: String,
    },
    /// An image archive or blob is malformed or fails digest verification.
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// Which part was invalid (archive path, blob digest, ...).
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A container id is unknown to this runtime root.
    #[error("container {id:?} not found")]
    ContainerNotFound {
        /// The container id.
        id: String,
    },
    /// A container with this id already exists; remove it first.
    #[error("container {id:?} already exists")]
    ContainerExists {
        /// The container id.
        id: String,
    },
    /// The container spec is unusable (bad id, empty command, ...); fix the input.
    #[error("invalid container spec for {id:?}: {reason}")]
    InvalidSpec {
        /// The container id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The shim did not report a started or failed container in time, or died doing so.
    #[error("shim for container {id:?} failed: {reason}")]
    Shim {
        /// The container id.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// What was attempted.
        op: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// File I/O failed on a path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document (state, image config, manifest) could not be read or written.
    #[error("json {path}: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The OCI runtime spec could not be built or saved.
    #[error("oci spec: {0}")]
    OciSpec(#[from] oci_spec::OciSpecError),
    /// Pulling an image from a registry failed.
    #[error(transparent)]
    Pull(#[from] crate::pull::PullError),
    /// libcontainer failed (only inside the shim).
    #[error("libcontainer: {0}")]
    Container(#[from] libcontainer::error::LibcontainerError),
}

/// Result alias for the runtime crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// Builds an [`Error::Sys`] for `op`.
    pub(crate) fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let op = op.into();
        move |source| Error::Sys { op, source }
    }
}
