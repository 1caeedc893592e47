//! The API server: the only component that writes objects to the store. It validates, stores
//! and notifies; it never acts on objects.

pub mod fence;
pub mod grpc;
pub mod keys;
pub mod registry;
pub mod service_alloc;

pub use fence::Fence;
pub use grpc::ApiService;
pub use registry::{EventType, ObjectEvent, Registry};
