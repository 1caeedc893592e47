//! Capstan's API: the object model, its protobuf/gRPC definitions, manifest decoding,
//! validation, defaulting, label selectors and (feature `client`) the async client SDK.
//!
//! This crate owns the shapes of objects and the pure rules about them. It must stay
//! light: no storage, consensus, container or actor code lives here, and nothing but the
//! client SDK does I/O.

pub mod v1 {
    //! Generated `capstan.v1` protobuf types and the tonic `Api` service
    //! (`api_server::{Api, ApiServer}`, `api_client::ApiClient`).
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("capstan.v1");
}

#[cfg(feature = "client")]
pub mod client;
pub mod defaults;
mod encoding;
pub mod error;
pub mod kind;
pub mod manifest;
mod names;
mod object;
pub mod quantity;
pub mod selector;
pub mod validation;
pub mod watch;

#[cfg(feature = "client")]
pub use client::{Client, ClientError};
pub use error::{Error, FieldError, Result};
pub use kind::Kind;
pub use object::Resource;
pub use quantity::Quantity;
pub use selector::Selector;
pub use watch::EventType;
