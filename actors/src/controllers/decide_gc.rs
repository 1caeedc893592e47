//! Garbage-collection decisions, as a pure function of one dependent's ownerReferences and which
//! owners still exist: keep it, delete it (every owner is gone: background cascading deletion),
//! or drop the references to the owners that are gone (others remain).

use api::v1;

/// What the garbage collector does with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// It has no owners, or all of them exist, or it is already being deleted.
    Keep,
    /// Every owner is gone: delete the object.
    Delete,
    /// Some owners are gone: remove the references with these uids.
    DropOwners(Vec<String>),
}

/// Decides for an object with metadata `meta`; `exists(r)` says whether the owner `r` names
/// (by kind, name and uid) still exists.
pub fn gc_action(meta: &v1::ObjectMeta, exists: impl Fn(&v1::OwnerReference) -> bool) -> GcAction {
    if meta.owner_references.is_empty() || !meta.deletion_timestamp.is_empty() {
        return GcAction::Keep;
    }
    let gone: Vec<String> = meta
        .owner_references
        .iter()
        .filter(|r| !exists(r))
        .map(|r| r.uid.clone())
        .collect();
    if gone.is_empty() {
        GcAction::Keep
    } else if gone.len() == meta.owner_references.len() {
        GcAction::Delete
    } else {
        GcAction::DropOwners(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> v1::OwnerReference {
        v1::OwnerReference {
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(uid == "a"),
            ..Default::default()
        }
    }

    #[test]
    fn an_object_is_deleted_only_when_every_owner_is_gone() {
        let mut meta = v1::ObjectMeta {
            owner_references: vec![owner("a"), owner("b")],
            ..Default::default()
        };
        assert_eq!(gc_action(&meta, |_| true), GcAction::Keep);
        assert_eq!(gc_action(&meta, |_| false), GcAction::Delete);
        assert_eq!(
            gc_action(&meta, |r| r.uid == "b"),
            GcAction::DropOwners(vec!["a".into()])
        );
        meta.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        assert_eq!(gc_action(&meta, |_| false), GcAction::Keep, "already going");
        assert_eq!(
            gc_action(&v1::ObjectMeta::default(), |_| false),
            GcAction::Keep
        );
    }
}
