//! Cluster DNS data for one node: the pure record set built from plain Service data
//! ([`records`]). It owns the mapping from Services and Endpoints to DNS answers; it must not
//! do I/O or know the API types (the agent converts them).

pub mod records;

pub use records::{
    Answer, DnsEndpoint, DnsPort, DnsService, Error, QueryType, RecordSet, Result, SrvRecord,
    DEFAULT_CLUSTER_DOMAIN,
};
