//! Fencing of the elected control plane's writes. Taking the leader lease over rewrites a fence
//! key in the same transaction; the revision of that transaction is the new leader's fencing
//! token. Every write of a fenced [`Registry`](super::Registry) carries a compare that the fence
//! key still has that revision, so once another server has taken the lease over, a deposed
//! leader's in-flight or late writes fail instead of landing.
//!
//! Owns the key layout and the compare; it must not decide who leads (that is the elector's).

use raftstore::{Compare, CompareOp, CompareTarget, KeyValue, Txn, TxnOp, TxnOpResult, TxnResult};

use crate::error::{Error, Result};

/// Root of the fence keys (outside `/registry/`: they are not API objects).
pub const FENCE_ROOT: &str = "/capstan/fences/";

/// The fence key that goes with the Lease `namespace/name`.
pub fn fence_key(namespace: &str, name: &str) -> String {
    format!("{FENCE_ROOT}{namespace}/{name}")
}

/// A leader's fencing token: the fence key and the revision at which this leader took the
/// lease over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The fence key.
    pub key: String,
    /// The fence key's mod revision when this leader took over.
    pub revision: i64,
}

impl Fence {
    /// Makes `txn` conditional on this fence, and has its failure branch read the fence key so
    /// a failure can be explained (see [`Fence::check`]).
    pub(crate) fn guard(&self, txn: &mut Txn) {
        txn.compares.push(Compare {
            key: self.key.clone().into_bytes(),
            target: CompareTarget::ModRevision(self.revision),
            op: CompareOp::Equal,
        });
        txn.failure.push(TxnOp::Get {
            key: self.key.clone().into_bytes(),
        });
    }

    /// After a guarded transaction failed: [`Error::Fenced`] if it failed because the fence
    /// moved (another server took the lease over), `Ok` if the fence still holds (so another
    /// compare failed).
    pub(crate) fn check(&self, res: &TxnResult) -> Result<()> {
        let current = res
            .responses
            .iter()
            .rev()
            .find_map(|r| match r {
                TxnOpResult::Get(kv) => {
                    Some(kv.as_ref().map_or(0, |kv: &KeyValue| kv.mod_revision))
                }
                _ => None,
            })
            .unwrap_or(0);
        if current == self.revision {
            return Ok(());
        }
        tracing::warn!(fence = %self.key, fence_revision = self.revision, current_revision = current, "write refused: the lease was taken over by another server");
        Err(Error::Fenced {
            key: self.key.clone(),
            fence: self.revision,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_with_fence_at(rev: Option<i64>) -> TxnResult {
        TxnResult {
            succeeded: false,
            revision: 40,
            responses: vec![TxnOpResult::Get(rev.map(|r| KeyValue {
                key: fence_key("kube-system", "cm").into_bytes(),
                value: b"a".to_vec(),
                create_revision: 3,
                mod_revision: r,
                version: 2,
                lease: 0,
            }))],
        }
    }

    #[test]
    fn a_guarded_txn_compares_the_fence_revision_and_reads_it_on_failure() {
        let fence = Fence {
            key: fence_key("kube-system", "cm"),
            revision: 12,
        };
        let mut txn = Txn::default();
        fence.guard(&mut txn);
        assert_eq!(
            txn.compares,
            vec![Compare {
                key: b"/capstan/fences/kube-system/cm".to_vec(),
                target: CompareTarget::ModRevision(12),
                op: CompareOp::Equal,
            }]
        );
        assert_eq!(txn.failure.len(), 1);
    }

    #[test]
    fn a_moved_or_missing_fence_is_reported_as_fenced_and_an_intact_one_is_not() {
        let fence = Fence {
            key: fence_key("kube-system", "cm"),
            revision: 12,
        };
        assert!(fence.check(&failed_with_fence_at(Some(12))).is_ok());
        assert!(matches!(
            fence.check(&failed_with_fence_at(Some(30))),
            Err(Error::Fenced {
                fence: 12,
                current: 30,
                ..
            })
        ));
        assert!(matches!(
            fence.check(&failed_with_fence_at(None)),
            Err(Error::Fenced { current: 0, .. })
        ));
    }
}
