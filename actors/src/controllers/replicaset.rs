//! The ReplicaSet controller: keeps `spec.replicas` active pods matching each ReplicaSet's
//! selector. It adopts matching orphan pods and releases owned pods that stopped matching
//! (ownerReferences), creates pods from the template (`generateName: <rs>-`, slow-start batches)
//! and deletes surplus pods in Kubernetes' order, then writes the status. Decisions come from
//! [`super::decide_replicas`]; this module only reads the registry and writes the results. It
//! must not touch ReplicaSet specs (the Deployment controller owns those) nor delete orphans
//! of deleted owners (the garbage collector does).

use std::time::Duration;

use api::v1::{self, Object};
use api::{Kind, Selector};
use chrono::{DateTime, Utc};

use super::decide_replicas::{
    claim, controller_owner_ref, is_active, next_availability_check, pods_to_delete, replica_diff,
    replica_set_status, slow_start_batches, Claim, Owner,
};
use super::runner::{sooner, Pass, PassResult};
use crate::apiserver::Registry;
use crate::error::{Error, Result};

/// Registered name of the ReplicaSet controller.
pub const NAME: &str = "replicaset-controller";

/// How soon a pass that lost a write race runs again.
const REQUEUE: Duration = Duration::from_millis(200);

/// The ReplicaSet controller's pass (run by [`super::runner::Controller`]).
#[derive(Debug, Clone)]
pub struct ReplicaSetController {
    /// The API registry.
    pub registry: Registry,
}

impl Pass for ReplicaSetController {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::ReplicaSet, Kind::Pod];
    const RESYNC: Duration = Duration::from_secs(10);

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, now: DateTime<Utc>) -> Result<Option<Duration>> {
        sync_all(&self.registry, now).await
    }
}

/// Reconciles every ReplicaSet once at `now`. Returns when to look again, if sooner than the
/// resync (a pod about to become available, a lost write race). The first error is returned
/// after every ReplicaSet had its turn.
pub async fn sync_all(reg: &Registry, now: DateTime<Utc>) -> Result<Option<Duration>> {
    let (sets, _) = reg.list(Kind::ReplicaSet, "", "").await?;
    let (pods, _) = reg.list(Kind::Pod, "", "").await?;
    let pods: Vec<v1::Pod> = pods.into_iter().filter_map(|o| o.into_typed()).collect();
    let mut pass = PassResult::default();
    for rs in sets
        .into_iter()
        .filter_map(|o| o.into_typed::<v1::ReplicaSet>())
    {
        match sync_replica_set(reg, &rs, &pods, now).await {
            Ok(after) => pass.requeue(after),
            Err(e) => pass.fail("replicaset", rs.metadata.as_ref(), e),
        }
    }
    pass.finish()
}

/// Whether an error only means "someone else wrote first": re-read and retry.
pub(crate) fn is_race(e: &Error) -> bool {
    matches!(e, Error::Conflict { .. } | Error::NotFound { .. })
}

/// Reconciles one ReplicaSet against `pods` (every pod, as listed at the start of the pass).
pub async fn sync_replica_set(
    reg: &Registry,
    rs: &v1::ReplicaSet,
    pods: &[v1::Pod],
    now: DateTime<Utc>,
) -> Result<Option<Duration>> {
    let meta = rs.metadata.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = match spec.selector.as_ref().map(Selector::from_label_selector) {
        Some(Ok(s)) if !s.is_empty() => s,
        _ => {
            tracing::warn!(namespace = %meta.namespace, replicaset = %meta.name, "replicaset has no usable selector; skipped");
            return Ok(None);
        }
    };
    let owner = Owner {
        uid: &meta.uid,
        selector: &selector,
        deleting: !meta.deletion_timestamp.is_empty(),
    };
    let mut again = None;
    let mut owned = Vec::new();
    for pod in pods {
        let Some(pm) = pod
            .metadata
            .as_ref()
            .filter(|m| m.namespace == meta.namespace)
        else {
            continue;
        };
        let mut changed = pod.clone();
        let cm = changed.metadata.get_or_insert_with(Default::default);
        match claim(owner, pm) {
            Claim::Owned => {
                if is_active(pod) {
                    owned.push(pod.clone());
                }
                continue;
            }
            Claim::Ignore => continue,
            Claim::Adopt => cm.owner_references.push(controller_owner_ref(
                Kind::ReplicaSet,
                &meta.name,
                &meta.uid,
            )),
            Claim::Release => cm.owner_references.retain(|r| r.uid != meta.uid),
        }
        match reg.update(Object::from(changed)).await {
            Ok(obj) => {
                let Some(p) = obj.into_typed::<v1::Pod>() else {
                    continue;
                };
                let adopted =
                    super::decide_replicas::controller_ref(p.metadata.as_ref().unwrap_or(pm))
                        .is_some_and(|r| r.uid == meta.uid);
                tracing::info!(namespace = %meta.namespace, replicaset = %meta.name, pod = %pm.name, adopted, "pod ownership changed");
                if adopted && is_active(&p) {
                    owned.push(p);
                }
            }
            Err(e) if is_race(&e) => again = Some(REQUEUE),
            Err(e) => return Err(e),
        }
    }
    let mut create_error = None;
    if !owner.deleting {
        let diff = replica_diff(spec.replicas.unwrap_or(1), owned.len());
        if diff > 0 {
            let want = usize::try_from(diff).unwrap_or(0);
            if let Err(e) = create_pods(reg, rs, want, &mut owned).await {
                tracing::warn!(namespace = %meta.namespace, replicaset = %meta.name, error = %e, "cannot create pods");
                create_error = Some(e);
            }
        } else if diff < 0 {
            let surplus = usize::try_from(-diff).unwrap_or(0);
            let mut doomed = pods_to_delete(&owned, surplus);
            doomed.sort_unstable_by(|a, b| b.cmp(a));
            for i in doomed {
                let pod = owned.remove(i);
                let name = pod.metadata.map(|m| m.name).unwrap_or_default();
                match reg.delete(Kind::Pod, &meta.namespace, &name).await {
                    Ok(_) => {
                        tracing::info!(namespace = %meta.namespace, replicaset = %meta.name, pod = %name, "surplus pod deleted")
                    }
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    write_status(reg, rs, &owned, create_error.as_ref(), now).await?;
    if let Some(e) = create_error {
        return Err(e);
    }
    let available_soon =
        next_availability_check(&owned, spec.min_ready_seconds, now).and_then(|d| d.to_std().ok());
    Ok(sooner(again, available_soon))
}

/// Creates `count` pods from the template in slow-start batches, adding them to `owned`; stops
/// at the first batch with a failure (as Kubernetes does, so a broken template does not flood
/// the API with doomed creates).
async fn create_pods(
    reg: &Registry,
    rs: &v1::ReplicaSet,
    count: usize,
    owned: &mut Vec<v1::Pod>,
) -> Result<()> {
    let meta = rs.metadata.clone().unwrap_or_default();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    for batch in slow_start_batches(count) {
        let creates = (0..batch).map(|_| {
            let pod = v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    generate_name: format!("{}-", meta.name),
                    namespace: meta.namespace.clone(),
                    labels: tmeta.labels.clone(),
                    annotations: tmeta.annotations.clone(),
                    owner_references: vec![controller_owner_ref(
                        Kind::ReplicaSet,
                        &meta.name,
                        &meta.uid,
                    )],
                    ..Default::default()
                }),
                spec: template.spec.clone(),
                status: None,
            };
            reg.create(Object::from(pod))
        });
        let mut first_error = None;
        for res in futures::future::join_all(creates).await {
            match res {
                Ok(obj) => {
                    if let Some(p) = obj.into_typed::<v1::Pod>() {
                        let name = p.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
                        tracing::info!(namespace = %meta.namespace, replicaset = %meta.name, pod = %name, "pod created");
                        owned.push(p);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(())
}

async fn write_status(
    reg: &Registry,
    rs: &v1::ReplicaSet,
    owned: &[v1::Pod],
    create_error: Option<&Error>,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut status = replica_set_status(rs, owned, now);
    let since = status
        .conditions
        .iter()
        .find(|c| c.r#type == "ReplicaFailure")
        .map(|c| c.last_transition_time.clone());
    status.conditions.retain(|c| c.r#type != "ReplicaFailure");
    if let Some(e) = create_error {
        status.conditions.push(v1::WorkloadCondition {
            r#type: "ReplicaFailure".into(),
            status: "True".into(),
            last_transition_time: since
                .unwrap_or_else(|| now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            reason: "FailedCreate".into(),
            message: e.to_string(),
        });
    }
    if rs.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut next = rs.clone();
    next.status = Some(status);
    // This controller is the only writer of ReplicaSet status and runs one pass at a time, so
    // the status goes in even if the spec moved on since the list (its observedGeneration says
    // which spec it reflects).
    if let Some(m) = next.metadata.as_mut() {
        m.resource_version.clear();
    }
    match reg.update_status(Object::from(next)).await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
