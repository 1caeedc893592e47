//! The crate's error type: what went wrong with an object, a manifest or a selector,
//! carrying the field paths the user must fix. It does not cover transport failures;
//! those belong to the client SDK's `ClientError`.

use std::fmt;

/// Result of fallible operations in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
    /// Why the value is not acceptable.
    pub reason: String,
}

impl FieldError {
    /// Builds a field error from a path and a reason.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Everything this crate can reject. Every variant is a "fix the input" error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object failed validation; all problems are listed.
    #[error("invalid object: {}", join(errors))]
    Invalid {
        /// Every field that is wrong.
        errors: Vec<FieldError>,
    },
    /// The kind name is not one Capstan serves.
    #[error("kind: unknown kind {kind:?}")]
    UnknownKind {
        /// The kind as given.
        kind: String,
    },
    /// The apiVersion does not serve the kind.
    #[error("apiVersion: {kind} is served as {expected:?}, not {found:?}")]
    ApiVersion {
        /// The kind of the object.
        kind: String,
        /// The apiVersion Capstan serves the kind under.
        expected: String,
        /// The apiVersion found in the manifest.
        found: String,
    },
    /// A manifest document has a field of the wrong name or type.
    #[error("document {document}: {path}: {reason}")]
    Decode {
        /// Zero-based index of the document in a multi-document manifest.
        document: usize,
        /// Path of the offending field, e.g. `spec.containers[0].imagee`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A manifest is not well-formed YAML or JSON.
    #[error("manifest syntax: {reason}")]
    Syntax {
        /// The parser's message, with its location.
        reason: String,
    },
    /// An object could not be written as YAML or JSON.
    #[error("encoding manifest: {reason}")]
    Encode {
        /// The serializer's message.
        reason: String,
    },
    /// A label selector string could not be parsed.
    #[error("label selector: {part:?}: {reason}")]
    Selector {
        /// The offending requirement or token.
        part: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Stored protobuf bytes could not be decoded: the store is corrupt or from a
    /// newer, incompatible version.
    #[error("decoding stored object: {0}")]
    Proto(#[from] prost::DecodeError),
    /// The object envelope carries no object.
    #[error("object: no kind set")]
    EmptyObject,
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<Error> for tonic::Status {
    /// Input errors become `InvalidArgument` whose message keeps the field paths; a
    /// corrupt stored object is `Internal`.
    fn from(err: Error) -> Self {
        match err {
            Error::Proto(_) => tonic::Status::internal(err.to_string()),
            _ => tonic::Status::invalid_argument(err.to_string()),
        }
    }
}
