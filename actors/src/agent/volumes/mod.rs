//! Pod volumes on the node: emptyDir (disk or memory), hostPath, configMap, secret,
//! downwardAPI, projected and PersistentVolumeClaims bound to hostPath/local volumes, with
//! subPath and readOnly. [`plan`] decides (pure), [`setup`] does the file work (blocking), and
//! this module fetches what the volumes reference from the API.
//!
//! Each pod's volumes live in `<data-dir>/pods/<uid>/volumes/<name>` and are bind-mounted into
//! its containers; they go when the pod is torn down. ConfigMap, Secret and downward API files
//! are refreshed while the pod runs (see [`REFRESH`]), swapped in atomically.

pub mod plan;
pub mod setup;

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::client::ClientError;
use api::v1::{self, object::Kind as ObjKind};
use api::Kind;

use self::plan::{Fetched, PlannedVolume};
use super::context::AgentContext;
use crate::error::{Error, Result};

/// How often a running pod's files volumes are re-read from the API and rewritten if changed.
pub const REFRESH: Duration = Duration::from_secs(10);

/// The directory holding the volumes of pod `uid`.
pub fn pod_volumes_dir(pods_dir: &Path, uid: &str) -> PathBuf {
    pods_dir.join(uid).join("volumes")
}

/// Why a pod's volumes could not be prepared, split by who must act.
#[derive(Debug)]
pub enum PrepareFailure {
    /// The pod's volumes or what they reference are wrong or missing (kubelet's
    /// `CreateContainerConfigError`): the user must fix it; retried on every sync.
    Config(String),
    /// The node failed (I/O, mount, API): retried.
    Node(Error),
}

/// The pod's volumes as planned and set up, and the objects they and the containers'
/// environments reference.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The volumes, for [`plan::container_mounts`].
    pub volumes: Vec<PlannedVolume>,
    /// The ConfigMaps, Secrets and claims referenced, for [`super::env`].
    pub fetched: Fetched,
}

/// Fetches what the pod's volumes and environments reference, plans the volumes, and sets
/// them up under the pod's volume directory.
pub async fn prepare(
    ctx: &AgentContext,
    pod: &v1::Pod,
) -> std::result::Result<Prepared, PrepareFailure> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let fetched = fetch(ctx, &meta.namespace, &plan::references(&spec))
        .await
        .map_err(PrepareFailure::Node)?;
    if spec.volumes.is_empty() {
        return Ok(Prepared {
            volumes: Vec::new(),
            fetched,
        });
    }
    let planned = plan::plan(pod, &fetched).map_err(|e| PrepareFailure::Config(e.to_string()))?;
    let dir = pod_volumes_dir(&ctx.pods_dir, &meta.uid);
    let to_set_up = planned.clone();
    let set_up = super::context::blocking(move || Ok(setup::prepare(&dir, &to_set_up)))
        .await
        .map_err(PrepareFailure::Node)?;
    match set_up {
        Ok(()) => {}
        // A hostPath of the wrong type is the user's to fix, like a missing ConfigMap.
        Err(e @ setup::SetupError::HostPath { .. }) => {
            return Err(PrepareFailure::Config(e.to_string()))
        }
        Err(e) => {
            return Err(PrepareFailure::Node(Error::FailedPrecondition(
                e.to_string(),
            )))
        }
    }
    Ok(Prepared {
        volumes: planned,
        fetched,
    })
}

/// Unmounts and removes pod `uid`'s volumes from the node (blocking); the pod directory
/// itself goes with the pod's other files.
pub fn teardown(pods_dir: &Path, uid: &str) -> Result<()> {
    setup::teardown(&pod_volumes_dir(pods_dir, uid))
        .map_err(|e| Error::FailedPrecondition(e.to_string()))
}

async fn get(ctx: &AgentContext, kind: Kind, ns: &str, name: &str) -> Result<Option<ObjKind>> {
    match ctx.client.get(kind, ns, name).await {
        Ok(o) => Ok(o.kind),
        Err(ClientError::NotFound(_)) => Ok(None),
        Err(e) => Err(Error::Client(e.to_string())),
    }
}

async fn fetch(ctx: &AgentContext, ns: &str, refs: &plan::References) -> Result<Fetched> {
    let mut fetched = Fetched::default();
    for name in &refs.config_maps {
        let cm = match get(ctx, Kind::ConfigMap, ns, name).await? {
            Some(ObjKind::ConfigMap(cm)) => Some(cm),
            _ => None,
        };
        fetched.config_maps.insert(name.clone(), cm);
    }
    for name in &refs.secrets {
        let s = match get(ctx, Kind::Secret, ns, name).await? {
            Some(ObjKind::Secret(s)) => Some(s),
            _ => None,
        };
        fetched.secrets.insert(name.clone(), s);
    }
    for name in &refs.claims {
        if let Some(path) = claim_path(ctx, ns, name).await? {
            fetched.claims.insert(name.clone(), path);
        }
    }
    Ok(fetched)
}

/// The host path of the volume claim `name` is bound to; `None` when the claim does not exist.
async fn claim_path(
    ctx: &AgentContext,
    ns: &str,
    name: &str,
) -> Result<Option<std::result::Result<PathBuf, String>>> {
    let claim = match get(ctx, Kind::PersistentVolumeClaim, ns, name).await? {
        Some(ObjKind::PersistentVolumeClaim(c)) => c,
        _ => return Ok(None),
    };
    let volume = claim.spec.unwrap_or_default().volume_name;
    if volume.is_empty() {
        return Ok(Some(Err(format!(
            "persistentvolumeclaim {name:?} is not bound to a volume (spec.volumeName is empty)"
        ))));
    }
    let pv = match get(ctx, Kind::PersistentVolume, "", &volume).await? {
        Some(ObjKind::PersistentVolume(pv)) => pv,
        _ => {
            return Ok(Some(Err(format!(
                "persistentvolume {volume:?} of claim {name:?} not found"
            ))))
        }
    };
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .filter(|p| !p.is_empty());
    Ok(Some(path.map(PathBuf::from).ok_or_else(|| {
        format!(
            "persistentvolume {volume:?} has no hostPath or local path (only those are supported on this node)"
        )
    })))
}
