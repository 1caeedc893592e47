//! The Deployment controller: rolls each Deployment's pod template out through ReplicaSets named
//! `<deployment>-<pod-template-hash>`. It adopts and releases ReplicaSets (ownerReferences),
//! creates the ReplicaSet of the current template, scales new and old ReplicaSets one step at a
//! time (RollingUpdate within maxSurge/maxUnavailable, or Recreate), keeps the revision
//! annotations, deletes drained old ReplicaSets beyond `revisionHistoryLimit` and writes the
//! status. A paused Deployment starts no rollout. Decisions come from [`super::decide_rollout`];
//! this module only reads the registry and writes the results. It never touches pods: the
//! ReplicaSet controller creates and deletes them.

use std::time::Duration;

use api::v1::{self, Object};
use api::{Kind, Selector};
use chrono::{DateTime, Utc};

use super::decide_replicas::{claim, controller_owner_ref, controller_ref, Claim, Owner};
use super::decide_rollout::{
    deployment_status, equal_ignoring_hash, fenceposts, history_to_delete, recreate_step, revision,
    rolling_step, template_hash, with_hash, Counts, OldRs, RsSize, StatusInput, DESIRED_REPLICAS,
    MAX_REPLICAS, REVISION,
};
use super::replicaset::is_race;
use super::runner::{Pass, PassResult};
use crate::apiserver::Registry;
use crate::error::{Error, Result};

/// Registered name of the Deployment controller.
pub const NAME: &str = "deployment-controller";

/// How soon a pass that lost a write race, or that moved a rollout, runs again.
const REQUEUE: Duration = Duration::from_millis(200);

/// The Deployment controller's pass (run by [`super::runner::Controller`]).
#[derive(Debug, Clone)]
pub struct DeploymentController {
    /// The API registry.
    pub registry: Registry,
}

impl Pass for DeploymentController {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::Deployment, Kind::ReplicaSet, Kind::Pod];
    const RESYNC: Duration = Duration::from_secs(10);

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, now: DateTime<Utc>) -> Result<Option<Duration>> {
        sync_all(&self.registry, now).await
    }
}

/// Reconciles every Deployment once at `now` (one rollout step each). Returns when to look
/// again if sooner than the resync; the first error after every Deployment had its turn.
pub async fn sync_all(reg: &Registry, now: DateTime<Utc>) -> Result<Option<Duration>> {
    let (deployments, _) = reg.list(Kind::Deployment, "", "").await?;
    let (sets, _) = reg.list(Kind::ReplicaSet, "", "").await?;
    let sets: Vec<v1::ReplicaSet> = sets.into_iter().filter_map(|o| o.into_typed()).collect();
    let (pods, _) = reg.list(Kind::Pod, "", "").await?;
    let pods: Vec<v1::Pod> = pods.into_iter().filter_map(|o| o.into_typed()).collect();
    let mut pass = PassResult::default();
    for d in deployments
        .into_iter()
        .filter_map(|o| o.into_typed::<v1::Deployment>())
    {
        match sync_deployment(reg, &d, &sets, &pods, now).await {
            Ok(after) => pass.requeue(after),
            Err(e) if is_race(&e) => pass.requeue(Some(REQUEUE)),
            Err(e) => pass.fail("deployment", d.metadata.as_ref(), e),
        }
    }
    pass.finish()
}

fn meta_of(rs: &v1::ReplicaSet) -> v1::ObjectMeta {
    rs.metadata.clone().unwrap_or_default()
}

fn spec_replicas(rs: &v1::ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn size(rs: &v1::ReplicaSet) -> RsSize {
    RsSize {
        replicas: spec_replicas(rs),
        available: rs
            .status
            .as_ref()
            .map(|s| s.available_replicas)
            .unwrap_or(0),
    }
}

fn template_of(rs: &v1::ReplicaSet) -> v1::PodTemplateSpec {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

/// Reconciles one Deployment against `sets` and `pods` (as listed at the start of the pass).
pub async fn sync_deployment(
    reg: &Registry,
    d: &v1::Deployment,
    sets: &[v1::ReplicaSet],
    pods: &[v1::Pod],
    now: DateTime<Utc>,
) -> Result<Option<Duration>> {
    let meta = d.metadata.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let selector = match spec.selector.as_ref().map(Selector::from_label_selector) {
        Some(Ok(s)) if !s.is_empty() => s,
        _ => {
            tracing::warn!(namespace = %meta.namespace, deployment = %meta.name, "deployment has no usable selector; skipped");
            return Ok(None);
        }
    };
    let owner = Owner {
        uid: &meta.uid,
        selector: &selector,
        deleting: !meta.deletion_timestamp.is_empty(),
    };
    let mut owned = claim_sets(reg, &meta, owner, sets).await?;
    let template = spec.template.clone().unwrap_or_default();
    owned.sort_by(|a, b| {
        let (ma, mb) = (meta_of(a), meta_of(b));
        (ma.creation_timestamp, ma.name).cmp(&(mb.creation_timestamp, mb.name))
    });
    let new_idx = owned
        .iter()
        .position(|rs| equal_ignoring_hash(&template_of(rs), &template));
    let mut new_rs = new_idx.map(|i| owned.remove(i));
    let old = owned;
    if owner.deleting {
        write_status(reg, d, new_rs.as_ref(), &old, now).await?;
        return Ok(None);
    }
    let desired = spec.replicas.unwrap_or(1);
    let f = fenceposts(&spec);
    let mut moved = false;
    if spec.paused {
        // No rollout: only a plain scale of a Deployment that is not mid-rollout.
        if let Some(rs) = new_rs.as_ref() {
            if old.iter().all(|o| spec_replicas(o) == 0) && spec_replicas(rs) != desired {
                scale(reg, rs, desired, desired, desired + f.max_surge).await?;
                moved = true;
            }
        }
    } else {
        let max_old_revision = old.iter().map(|o| revision(o.metadata.as_ref())).max();
        let next_revision = max_old_revision.unwrap_or(0) + 1;
        let rs = match new_rs.take() {
            Some(rs) => rs,
            None => match create_new_set(reg, d, &template, next_revision).await? {
                Some(rs) => rs,
                None => return Ok(Some(REQUEUE)),
            },
        };
        let rs = set_revision(reg, rs, next_revision).await?;
        let rev = revision(rs.metadata.as_ref());
        if revision(Some(&meta)) != rev {
            let mut next = d.clone();
            if let Some(m) = next.metadata.as_mut() {
                m.annotations.insert(REVISION.into(), rev.to_string());
            }
            reg.update(Object::from(next)).await?;
        }
        let old_sizes: Vec<RsSize> = old.iter().map(size).collect();
        let step = if spec
            .strategy
            .as_ref()
            .is_some_and(|s| s.r#type == "Recreate")
        {
            let old_uids: Vec<String> = old.iter().map(|o| meta_of(o).uid).collect();
            let left = pods
                .iter()
                .filter(|p| {
                    let phase = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
                    phase != "Succeeded"
                        && phase != "Failed"
                        && p.metadata
                            .as_ref()
                            .and_then(controller_ref)
                            .is_some_and(|r| old_uids.contains(&r.uid))
                })
                .count();
            recreate_step(desired, size(&rs), &old_sizes, left)
        } else {
            rolling_step(desired, f, size(&rs), &old_sizes)
        };
        let max = desired + f.max_surge;
        if step.new != spec_replicas(&rs) {
            scale(reg, &rs, step.new, desired, max).await?;
            moved = true;
        }
        for (o, target) in old.iter().zip(&step.old) {
            if *target != spec_replicas(o) {
                scale(reg, o, *target, desired, max).await?;
                moved = true;
            }
        }
        new_rs = Some(rs);
    }
    cleanup_history(reg, &meta, &old, spec.revision_history_limit.unwrap_or(10)).await?;
    write_status(reg, d, new_rs.as_ref(), &old, now).await?;
    Ok(moved.then_some(REQUEUE))
}

/// Adopts matching orphan ReplicaSets, releases owned ones that stopped matching, and returns
/// the ReplicaSets this Deployment controls.
async fn claim_sets(
    reg: &Registry,
    meta: &v1::ObjectMeta,
    owner: Owner<'_>,
    sets: &[v1::ReplicaSet],
) -> Result<Vec<v1::ReplicaSet>> {
    let mut owned = Vec::new();
    for rs in sets {
        let rm = meta_of(rs);
        if rm.namespace != meta.namespace {
            continue;
        }
        let mut changed = rs.clone();
        let cm = changed.metadata.get_or_insert_with(Default::default);
        match claim(owner, &rm) {
            Claim::Owned => {
                owned.push(rs.clone());
                continue;
            }
            Claim::Ignore => continue,
            Claim::Adopt => cm.owner_references.push(controller_owner_ref(
                Kind::Deployment,
                &meta.name,
                &meta.uid,
            )),
            Claim::Release => cm.owner_references.retain(|r| r.uid != meta.uid),
        }
        let updated = reg.update(Object::from(changed)).await?;
        let adopted = controller_ref(updated.metadata()).is_some_and(|r| r.uid == meta.uid);
        tracing::info!(namespace = %meta.namespace, deployment = %meta.name, replicaset = %rm.name, adopted, "replicaset ownership changed");
        if let Some(rs) = updated.into_typed::<v1::ReplicaSet>().filter(|_| adopted) {
            owned.push(rs);
        }
    }
    Ok(owned)
}

/// Creates the ReplicaSet of the Deployment's current template at size 0. `None` when the name
/// is taken by a ReplicaSet that is not this template's: the collision count was bumped, so the
/// next pass hashes to a new name.
async fn create_new_set(
    reg: &Registry,
    d: &v1::Deployment,
    template: &v1::PodTemplateSpec,
    rev: i64,
) -> Result<Option<v1::ReplicaSet>> {
    let meta = d.metadata.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(template, collisions);
    let name = format!("{}-{}", meta.name, hash);
    let labels = with_hash(
        &template
            .metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default(),
        &hash,
    );
    let mut pod_template = template.clone();
    pod_template
        .metadata
        .get_or_insert_with(Default::default)
        .labels = labels.clone();
    let mut selector = spec.selector.clone().unwrap_or_default();
    selector.match_labels = with_hash(&selector.match_labels, &hash);
    let f = fenceposts(&spec);
    let desired = spec.replicas.unwrap_or(1);
    let rs = v1::ReplicaSet {
        metadata: Some(v1::ObjectMeta {
            name: name.clone(),
            namespace: meta.namespace.clone(),
            labels,
            annotations: [
                (REVISION.to_string(), rev.to_string()),
                (DESIRED_REPLICAS.to_string(), desired.to_string()),
                (
                    MAX_REPLICAS.to_string(),
                    (desired + f.max_surge).to_string(),
                ),
            ]
            .into(),
            owner_references: vec![controller_owner_ref(
                Kind::Deployment,
                &meta.name,
                &meta.uid,
            )],
            ..Default::default()
        }),
        spec: Some(v1::ReplicaSetSpec {
            replicas: Some(0),
            selector: Some(selector),
            template: Some(pod_template),
            min_ready_seconds: spec.min_ready_seconds,
        }),
        status: None,
    };
    match reg.create(Object::from(rs)).await {
        Ok(obj) => {
            tracing::info!(namespace = %meta.namespace, deployment = %meta.name, replicaset = %name, revision = rev, "new replicaset created");
            Ok(obj.into_typed())
        }
        Err(Error::AlreadyExists { .. }) => {
            let existing = reg
                .get(Kind::ReplicaSet, &meta.namespace, &name)
                .await?
                .into_typed::<v1::ReplicaSet>();
            let ours = existing.as_ref().is_some_and(|rs| {
                controller_ref(&meta_of(rs)).is_some_and(|r| r.uid == meta.uid)
                    && equal_ignoring_hash(&template_of(rs), template)
            });
            if ours {
                return Ok(existing);
            }
            let mut next = d.clone();
            let status = next.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collisions.unwrap_or(0) + 1);
            tracing::warn!(namespace = %meta.namespace, deployment = %meta.name, replicaset = %name, "replicaset name collision; bumping collisionCount");
            if let Some(m) = next.metadata.as_mut() {
                m.resource_version.clear();
            }
            reg.update_status(Object::from(next)).await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Gives the new ReplicaSet the next revision when an old one has caught up with it (a rollback
/// to an earlier template brings that ReplicaSet back with a new revision).
async fn set_revision(reg: &Registry, rs: v1::ReplicaSet, next: i64) -> Result<v1::ReplicaSet> {
    if revision(rs.metadata.as_ref()) >= next {
        return Ok(rs);
    }
    let mut changed = rs;
    changed
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .insert(REVISION.into(), next.to_string());
    reg.update(Object::from(changed))
        .await?
        .into_typed()
        .ok_or_else(|| Error::Task("replicaset update returned another kind".into()))
}

/// Sets a ReplicaSet's `spec.replicas`, recording the Deployment's size and `max` (replicas +
/// maxSurge) as Kubernetes does.
async fn scale(
    reg: &Registry,
    rs: &v1::ReplicaSet,
    replicas: i32,
    desired: i32,
    max: i32,
) -> Result<()> {
    let mut next = rs.clone();
    let m = next.metadata.get_or_insert_with(Default::default);
    m.annotations
        .insert(DESIRED_REPLICAS.into(), desired.to_string());
    m.annotations.insert(MAX_REPLICAS.into(), max.to_string());
    let (ns, name) = (m.namespace.clone(), m.name.clone());
    next.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
    reg.update(Object::from(next)).await?;
    tracing::info!(namespace = %ns, replicaset = %name, from = spec_replicas(rs), to = replicas, "replicaset scaled");
    Ok(())
}

async fn cleanup_history(
    reg: &Registry,
    meta: &v1::ObjectMeta,
    old: &[v1::ReplicaSet],
    limit: i32,
) -> Result<()> {
    let view: Vec<OldRs> = old
        .iter()
        .map(|rs| {
            let m = meta_of(rs);
            let st = rs.status.clone().unwrap_or_default();
            OldRs {
                revision: revision(Some(&m)),
                drained: spec_replicas(rs) == 0
                    && st.replicas == 0
                    && st.observed_generation >= m.generation
                    && m.deletion_timestamp.is_empty(),
            }
        })
        .collect();
    for i in history_to_delete(&view, limit) {
        let m = meta_of(&old[i]);
        match reg.delete(Kind::ReplicaSet, &m.namespace, &m.name).await {
            Ok(_) => {
                tracing::info!(namespace = %meta.namespace, deployment = %meta.name, replicaset = %m.name, "old replicaset removed (revision history limit)")
            }
            Err(e) if is_race(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_status(
    reg: &Registry,
    d: &v1::Deployment,
    new_rs: Option<&v1::ReplicaSet>,
    old: &[v1::ReplicaSet],
    now: DateTime<Utc>,
) -> Result<()> {
    let st = |rs: &v1::ReplicaSet| rs.status.clone().unwrap_or_default();
    let all = new_rs.into_iter().chain(old);
    let mut counts = Counts::default();
    for rs in all {
        let s = st(rs);
        counts.replicas += s.replicas;
        counts.ready += s.ready_replicas;
        counts.available += s.available_replicas;
    }
    counts.updated = new_rs.map(|rs| st(rs).replicas).unwrap_or(0);
    let name = new_rs.map(meta_of).map(|m| m.name);
    let status = deployment_status(&StatusInput {
        deployment: d,
        new_rs: name.as_deref(),
        counts,
        now,
    });
    if d.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut next = d.clone();
    next.status = Some(status);
    // Only this controller writes Deployment status, one pass at a time: the status goes in even
    // if metadata or spec moved on (observedGeneration says which spec it reflects).
    if let Some(m) = next.metadata.as_mut() {
        m.resource_version.clear();
    }
    match reg.update_status(Object::from(next)).await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
