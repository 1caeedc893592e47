//! Cluster DNS for one node: the pure record set built from plain Service data ([`records`]),
//! the hickory-server that serves it and forwards other names upstream ([`server`]), and the
//! per-pod `resolv.conf` and `hosts` files ([`pod_files`]). It owns the mapping from Services
//! and Endpoints to DNS answers; it must not know the API types (the agent converts them).

pub mod pod_files;
pub mod records;
pub mod server;

pub use records::{
    Answer, DnsEndpoint, DnsPort, DnsService, Error, QueryType, RecordSet, Result, SrvRecord,
    DEFAULT_CLUSTER_DOMAIN,
};
pub use server::{DnsConfig, DnsServer, SharedRecords};
