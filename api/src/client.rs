//! The async client SDK: a typed wrapper over the generated tonic `ApiClient`, with
//! `tonic::Status` mapped once into [`ClientError`] so callers can decide to retry,
//! re-read, fix their input or give up. Behind the default-on `client` feature.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::kind::Kind;
use crate::v1::{self, api_client::ApiClient};

/// Result of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A stream of watch events; ends when the server closes the watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent>> + Send>>;

/// Why a call failed, grouped by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The object does not exist: create it or stop looking.
    #[error("not found: {0}")]
    NotFound(String),
    /// An object with this name exists already: get or update it instead.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The resource_version did not match or a precondition failed: re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request was rejected as invalid: fix the input. The message keeps the
    /// field paths, e.g. `spec.containers[0].image: required`.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The server is unreachable or has no leader right now: retry with back-off.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The endpoint could not be parsed or connected to.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// Any other status: give up and report.
    #[error("{code:?}: {message}")]
    Other {
        /// The gRPC status code.
        code: Code,
        /// Server message.
        message: String,
    },
}

impl ClientError {
    /// Whether retrying the same call later may succeed (server or connection down).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable(_) | ClientError::Connect { .. }
        )
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::NotFound => ClientError::NotFound(message),
            Code::AlreadyExists => ClientError::AlreadyExists(message),
            Code::Aborted | Code::FailedPrecondition => ClientError::Conflict(message),
            Code::InvalidArgument | Code::OutOfRange => ClientError::Invalid(message),
            Code::Unavailable => ClientError::Unavailable(message),
            code => ClientError::Other { code, message },
        }
    }
}

/// A connection to a Capstan API server. Cheap to clone; clones share the channel.
#[derive(Debug, Clone)]
pub struct Client {
    inner: ApiClient<Channel>,
}

impl Client {
    /// Connects to `endpoint`, e.g. `"http://127.0.0.1:6443"`.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client> {
        let endpoint = endpoint.into();
        let connect_err = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(connect_err)?
            .connect()
            .await
            .map_err(connect_err)?;
        Ok(Client::from_channel(channel))
    }

    /// Builds a client that connects on first use and reconnects as needed; fails only
    /// if the endpoint cannot be parsed. Use when the server may not be up yet.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Client> {
        let endpoint = endpoint.into();
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|source| ClientError::Connect { endpoint, source })?
            .connect_lazy();
        Ok(Client::from_channel(channel))
    }

    /// Wraps an existing channel (e.g. one built with custom timeouts).
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            inner: ApiClient::new(channel),
        }
    }

    /// Creates an object and returns it as stored.
    pub async fn create(&self, object: v1::Object) -> Result<v1::Object> {
        let req = v1::CreateRequest {
            object: Some(object),
        };
        Ok(self.inner.clone().create(req).await?.into_inner())
    }

    /// Reads one object; `namespace` is empty for cluster-scoped kinds.
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<v1::Object> {
        let req = v1::GetRequest {
            kind: kind.as_str().into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        Ok(self.inner.clone().get(req).await?.into_inner())
    }

    /// Lists objects of a kind matching a label selector (empty matches all); an empty
    /// namespace lists all namespaces.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<v1::Object>> {
        Ok(self
            .list_with_version(kind, namespace, label_selector)
            .await?
            .items)
    }

    /// Like [`list`](Self::list), also returning the revision the list was read at, to
    /// start a watch from without missing changes.
    pub async fn list_with_version(
        &self,
        kind: Kind,
        namespace: &str,
        label_selector: &str,
    ) -> Result<v1::ListResponse> {
        let req = v1::ListRequest {
            kind: kind.as_str().into(),
            namespace: namespace.into(),
            label_selector: label_selector.into(),
        };
        Ok(self.inner.clone().list(req).await?.into_inner())
    }

    /// Watches changes after `resource_version` (empty: from now).
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: &str,
        label_selector: &str,
        resource_version: &str,
    ) -> Result<WatchStream> {
        let req = v1::WatchRequest {
            kind: kind.as_str().into(),
            namespace: namespace.into(),
            label_selector: label_selector.into(),
            resource_version: resource_version.into(),
        };
        let stream = self.inner.clone().watch(req).await?.into_inner();
        Ok(Box::pin(stream.map(|item| item.map_err(ClientError::from))))
    }

    /// Replaces metadata and spec; fails with `Conflict` if the resource_version is stale.
    pub async fn update(&self, object: v1::Object) -> Result<v1::Object> {
        let req = v1::UpdateRequest {
            object: Some(object),
        };
        Ok(self.inner.clone().update(req).await?.into_inner())
    }

    /// Replaces the status subresource.
    pub async fn update_status(&self, object: v1::Object) -> Result<v1::Object> {
        let req = v1::UpdateStatusRequest {
            object: Some(object),
        };
        Ok(self.inner.clone().update_status(req).await?.into_inner())
    }

    /// Binds a pending pod to a node.
    pub async fn bind(&self, namespace: &str, name: &str, node_name: &str) -> Result<v1::Object> {
        let req = v1::BindRequest {
            namespace: namespace.into(),
            name: name.into(),
            node_name: node_name.into(),
        };
        Ok(self.inner.clone().bind(req).await?.into_inner())
    }

    /// Deletes an object and returns its last state (or the object marked for deletion).
    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<v1::Object> {
        let req = v1::DeleteRequest {
            kind: kind.as_str().into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        Ok(self.inner.clone().delete(req).await?.into_inner())
    }
}
