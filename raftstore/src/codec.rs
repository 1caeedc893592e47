//! On-disk encodings: bincode 2 (standard config, via serde) for records and big-endian integers
//! for keys, so that sled's byte order is numeric order.
//!
//! Must not change without a migration: everything persisted goes through here.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;

/// Encodes a record with bincode.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(bincode::serde::encode_to_vec(
        value,
        bincode::config::standard(),
    )?)
}

/// Decodes a record written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, _read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
    Ok(value)
}

/// Key for a Raft log index.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Key for an MVCC revision in the event history. Revisions are never negative.
pub(crate) fn revision_key(revision: i64) -> [u8; 8] {
    revision.max(0).to_be_bytes()
}

/// Key for a lease id in the lease table. Lease ids are positive, so byte order is id order.
pub(crate) fn lease_key(id: i64) -> [u8; 8] {
    id.max(0).to_be_bytes()
}

/// Key for "`key` is attached to lease `id`" in the lease index: the lease key, then the key, so
/// a lease's keys are one prefix scan.
pub(crate) fn lease_link_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut link = Vec::with_capacity(8 + key.len());
    link.extend_from_slice(&lease_key(id));
    link.extend_from_slice(key);
    link
}
