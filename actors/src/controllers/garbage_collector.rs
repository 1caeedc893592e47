//! The garbage collector: deletes objects whose owners (ownerReferences, matched by uid) no
//! longer exist — background cascading deletion, so deleting a Deployment removes its
//! ReplicaSets and then their pods — and drops dangling references when other owners remain.
//! Decisions come from [`super::decide_gc`]. An owner missing from the pass's listing is
//! confirmed with a fresh read before anything is deleted, so an owner created during the pass
//! never loses its dependents. It must not delete objects that have no ownerReferences.

use std::collections::HashMap;
use std::time::Duration;

use api::v1::{self, Object};
use api::Kind;
use chrono::{DateTime, Utc};

use super::decide_gc::{gc_action, GcAction};
use super::replicaset::is_race;
use super::runner::Pass;
use crate::apiserver::Registry;
use crate::error::{Error, Result};

/// Registered name of the garbage collector.
pub const NAME: &str = "garbage-collector";

/// How soon the next level of a cascade (e.g. the pods of a just-deleted ReplicaSet) is collected.
const CASCADE: Duration = Duration::from_millis(200);

/// The garbage collector's pass (run by [`super::runner::Controller`]).
#[derive(Debug, Clone)]
pub struct GarbageCollector {
    /// The API registry.
    pub registry: Registry,
}

impl Pass for GarbageCollector {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
    ];
    const RESYNC: Duration = Duration::from_secs(15);

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, _now: DateTime<Utc>) -> Result<Option<Duration>> {
        collect(&self.registry).await
    }
}

type Index = HashMap<(Kind, String, String), String>;

fn owner_key(dependent: &v1::ObjectMeta, r: &v1::OwnerReference) -> Option<(Kind, String, String)> {
    let kind = Kind::parse(&r.kind)?;
    let ns = if kind.namespaced() {
        dependent.namespace.clone()
    } else {
        String::new()
    };
    Some((kind, ns, r.name.clone()))
}

/// Whether the owner exists now, by a fresh read (uid must match: a re-created namesake is not
/// the owner). Owners of unknown kinds count as existing: nothing is deleted on a guess.
async fn owner_exists_now(
    reg: &Registry,
    dependent: &v1::ObjectMeta,
    r: &v1::OwnerReference,
) -> Result<bool> {
    let Some((kind, ns, name)) = owner_key(dependent, r) else {
        return Ok(true);
    };
    match reg.get(kind, &ns, &name).await {
        Ok(o) => Ok(o.metadata().uid == r.uid),
        Err(Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One collection pass over every kind. Returns a short requeue when it deleted something (the
/// next level of the cascade is collected right after).
pub async fn collect(reg: &Registry) -> Result<Option<Duration>> {
    let mut objects = Vec::new();
    let mut index = Index::new();
    for kind in Kind::ALL {
        let (objs, _) = reg.list(kind, "", "").await?;
        for o in objs {
            let m = o.metadata();
            index.insert((kind, m.namespace.clone(), m.name.clone()), m.uid.clone());
            objects.push((kind, o));
        }
    }
    let mut again = None;
    for (kind, obj) in objects {
        let meta = obj.metadata().clone();
        let listed = |r: &v1::OwnerReference| match owner_key(&meta, r) {
            Some(k) => index.get(&k).is_some_and(|uid| *uid == r.uid),
            None => true,
        };
        if gc_action(&meta, listed) == GcAction::Keep {
            continue;
        }
        // Confirm with fresh reads before acting.
        let mut fresh = HashMap::new();
        for r in &meta.owner_references {
            fresh.insert(r.uid.clone(), owner_exists_now(reg, &meta, r).await?);
        }
        let exists = |r: &v1::OwnerReference| fresh.get(&r.uid).copied().unwrap_or(true);
        let result = match gc_action(&meta, exists) {
            GcAction::Keep => continue,
            GcAction::Delete => reg.delete(kind, &meta.namespace, &meta.name).await.map(|_| {
                tracing::info!(kind = kind.as_str(), namespace = %meta.namespace, name = %meta.name, "object deleted: its owners are gone");
            }),
            GcAction::DropOwners(gone) => {
                let mut next = obj.clone();
                next.metadata_mut()
                    .owner_references
                    .retain(|r| !gone.contains(&r.uid));
                reg.update(next).await.map(|_: Object| {
                    tracing::info!(kind = kind.as_str(), namespace = %meta.namespace, name = %meta.name, "dangling owner references removed");
                })
            }
        };
        match result {
            Ok(()) => again = Some(CASCADE),
            Err(e) if is_race(&e) => again = Some(CASCADE),
            Err(e) => return Err(e),
        }
    }
    Ok(again)
}
