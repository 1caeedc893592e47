//! Pure volume planning: from a pod and the objects its volumes reference (already fetched),
//! what each volume is on this node, which files the agent writes into it, and which bind
//! mounts each container gets. No I/O; [`super::setup`] carries the plan out.
//!
//! Semantics follow the kubelet: configMap, secret, downwardAPI and projected volumes are
//! files the agent writes (always mounted read-only), secrets live in memory only, a missing
//! object fails the pod's start unless the source is `optional`, `items` pick and rename keys,
//! modes default to 0644, `subPath` mounts a path inside the volume.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use api::v1;

/// Errors of planning; each names the volume (and container, for mounts) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A referenced object does not exist and the source is not optional.
    #[error("volume {volume:?}: {kind} {name:?} not found")]
    Missing {
        /// Volume name.
        volume: String,
        /// `configmap`, `secret` or `persistentvolumeclaim`.
        kind: &'static str,
        /// Object name.
        name: String,
    },
    /// The volume's spec or a referenced object cannot be used.
    #[error("volume {volume:?}: {reason}")]
    Invalid {
        /// Volume name.
        volume: String,
        /// Why.
        reason: String,
    },
    /// A container's volume mount cannot be made.
    #[error("container {container:?}: volumeMounts {volume:?}: {reason}")]
    Mount {
        /// Container name.
        container: String,
        /// Volume name.
        volume: String,
        /// Why.
        reason: String,
    },
}

/// How a `hostPath` volume's path is checked (Kubernetes' `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// No check (`""`).
    Unchecked,
    /// Created as a 0755 directory if missing.
    DirectoryOrCreate,
    /// Must be a directory.
    Directory,
    /// Created as an empty 0644 file if missing.
    FileOrCreate,
    /// Must be a file.
    File,
    /// Must be a UNIX socket.
    Socket,
    /// Must be a character device.
    CharDevice,
    /// Must be a block device.
    BlockDevice,
}

impl HostPathType {
    fn parse(s: &str) -> Option<HostPathType> {
        Some(match s {
            "" => HostPathType::Unchecked,
            "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
            "Directory" => HostPathType::Directory,
            "FileOrCreate" => HostPathType::FileOrCreate,
            "File" => HostPathType::File,
            "Socket" => HostPathType::Socket,
            "CharDevice" => HostPathType::CharDevice,
            "BlockDevice" => HostPathType::BlockDevice,
            _ => return None,
        })
    }
}

/// One file of a files volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Relative path inside the volume (checked: no `..`, not absolute).
    pub path: String,
    /// Content.
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// What one volume is on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// An emptyDir on the node's disk: a directory in the pod's volume directory.
    Dir,
    /// An emptyDir with `medium: Memory`: a tmpfs, at most `size_bytes` when set.
    Memory {
        /// The size limit, if any.
        size_bytes: Option<u64>,
    },
    /// A path of the host (hostPath, or the local path of a claim's volume).
    Host {
        /// Absolute host path.
        path: PathBuf,
        /// How it is checked or created.
        check: HostPathType,
    },
    /// Files the agent writes (configMap, secret, downwardAPI, projected).
    Files {
        /// The files, sorted by path.
        files: Vec<VolumeFile>,
        /// Whether they hold secrets (then the volume is a tmpfs, never on disk).
        in_memory: bool,
    },
}

/// One planned volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedVolume {
    /// Volume name.
    pub name: String,
    /// What it is.
    pub kind: VolumeKind,
    /// Every mount of it is read-only (files volumes, read-only claims).
    pub read_only: bool,
}

/// The objects a pod's volumes reference, by name, as fetched from the API (`None`: not found).
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// ConfigMaps.
    pub config_maps: BTreeMap<String, Option<v1::ConfigMap>>,
    /// Secrets.
    pub secrets: BTreeMap<String, Option<v1::Secret>>,
    /// Claims resolved to the host path of their volume, or why they cannot be used.
    pub claims: BTreeMap<String, std::result::Result<PathBuf, String>>,
}

impl Fetched {
    /// The keys of ConfigMap `name` (`data`, then `binaryData`); `None` when it was not found.
    pub fn config_map_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(name).cloned().flatten()?;
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(cm.binary_data);
        Some(data)
    }

    /// The keys of Secret `name` (`data`, then `stringData`); `None` when it was not found.
    pub fn secret_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.get(name).cloned().flatten()?;
        let mut data: BTreeMap<String, Vec<u8>> = s.data.into_iter().collect();
        data.extend(s.string_data.into_iter().map(|(k, v)| (k, v.into_bytes())));
        Some(data)
    }
}

/// The names of the ConfigMaps, Secrets and claims the pod's volumes reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// ConfigMap names.
    pub config_maps: Vec<String>,
    /// Secret names.
    pub secrets: Vec<String>,
    /// PersistentVolumeClaim names.
    pub claims: Vec<String>,
}

/// What the pod's volumes and its containers' environments reference (deduplicated,
/// sorted).
pub fn references(spec: &v1::PodSpec) -> References {
    let mut refs = References::default();
    for v in &spec.volumes {
        if let Some(cm) = &v.config_map {
            refs.config_maps.push(cm.name.clone());
        }
        if let Some(s) = &v.secret {
            refs.secrets.push(s.secret_name.clone());
        }
        if let Some(c) = &v.persistent_volume_claim {
            refs.claims.push(c.claim_name.clone());
        }
        for p in v.projected.iter().flat_map(|p| &p.sources) {
            if let Some(cm) = &p.config_map {
                refs.config_maps.push(cm.name.clone());
            }
            if let Some(s) = &p.secret {
                refs.secrets.push(s.name.clone());
            }
        }
    }
    // Image pull secrets and environment sources too, so one fetch serves volumes, pulls and
    // `env`/`envFrom`.
    refs.secrets
        .extend(spec.image_pull_secrets.iter().map(|r| r.name.clone()));
    for c in spec.init_containers.iter().chain(&spec.containers) {
        for from in &c.env_from {
            if let Some(cm) = &from.config_map_ref {
                refs.config_maps.push(cm.name.clone());
            }
            if let Some(s) = &from.secret_ref {
                refs.secrets.push(s.name.clone());
            }
        }
        for from in c.env.iter().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &from.config_map_key_ref {
                refs.config_maps.push(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                refs.secrets.push(r.name.clone());
            }
        }
    }
    for list in [&mut refs.config_maps, &mut refs.secrets, &mut refs.claims] {
        list.sort();
        list.dedup();
    }
    refs
}

const DEFAULT_MODE: u32 = 0o644;

/// Plans every volume of `pod`.
pub fn plan(pod: &v1::Pod, fetched: &Fetched) -> Result<Vec<PlannedVolume>, PlanError> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.volumes
        .iter()
        .map(|v| plan_volume(pod, &spec, v, fetched))
        .collect()
}

fn plan_volume(
    pod: &v1::Pod,
    spec: &v1::PodSpec,
    v: &v1::Volume,
    fetched: &Fetched,
) -> Result<PlannedVolume, PlanError> {
    let invalid = |reason: String| PlanError::Invalid {
        volume: v.name.clone(),
        reason,
    };
    let planned = |kind, read_only| PlannedVolume {
        name: v.name.clone(),
        kind,
        read_only,
    };
    if let Some(e) = &v.empty_dir {
        return Ok(match e.medium.as_str() {
            "" => planned(VolumeKind::Dir, false),
            "Memory" => {
                let size_bytes = match e.size_limit.as_str() {
                    "" => None,
                    q => Some(
                        api::Quantity::parse(q)
                            .ok()
                            .and_then(|q| u64::try_from(q.as_bytes()).ok())
                            .filter(|b| *b > 0)
                            .ok_or_else(|| {
                                invalid(format!("emptyDir.sizeLimit {q:?} is not a positive size"))
                            })?,
                    ),
                };
                planned(VolumeKind::Memory { size_bytes }, false)
            }
            other => {
                return Err(invalid(format!(
                    "emptyDir.medium {other:?}: must be \"\" or \"Memory\""
                )))
            }
        });
    }
    if let Some(h) = &v.host_path {
        let check = HostPathType::parse(&h.r#type)
            .ok_or_else(|| invalid(format!("hostPath.type {:?} is not a known type", h.r#type)))?;
        let path = PathBuf::from(&h.path);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(invalid(format!(
                "hostPath.path {:?} must be absolute without '..'",
                h.path
            )));
        }
        return Ok(planned(VolumeKind::Host { path, check }, false));
    }
    if let Some(c) = &v.persistent_volume_claim {
        let path = match fetched.claims.get(&c.claim_name) {
            Some(Ok(path)) => path.clone(),
            Some(Err(reason)) => return Err(invalid(reason.clone())),
            None => {
                return Err(PlanError::Missing {
                    volume: v.name.clone(),
                    kind: "persistentvolumeclaim",
                    name: c.claim_name.clone(),
                })
            }
        };
        let check = HostPathType::Directory;
        return Ok(planned(VolumeKind::Host { path, check }, c.read_only));
    }
    let mut files = Files::new(&v.name);
    let in_memory;
    if let Some(cm) = &v.config_map {
        let mode = mode_of(cm.default_mode, &v.name)?;
        if let Some(data) = config_map_data(fetched, &v.name, &cm.name, cm.optional)? {
            files.keys(&data, &cm.items, mode, cm.optional.unwrap_or(false))?;
        }
        in_memory = false;
    } else if let Some(s) = &v.secret {
        let mode = mode_of(s.default_mode, &v.name)?;
        if let Some(data) = secret_data(fetched, &v.name, &s.secret_name, s.optional)? {
            files.keys(&data, &s.items, mode, s.optional.unwrap_or(false))?;
        }
        in_memory = true;
    } else if let Some(d) = &v.downward_api {
        let mode = mode_of(d.default_mode, &v.name)?;
        files.downward(pod, spec, &d.items, mode)?;
        in_memory = false;
    } else if let Some(p) = &v.projected {
        let mode = mode_of(p.default_mode, &v.name)?;
        let mut secret = false;
        for source in &p.sources {
            if let Some(cm) = &source.config_map {
                if let Some(data) = config_map_data(fetched, &v.name, &cm.name, cm.optional)? {
                    files.keys(&data, &cm.items, mode, cm.optional.unwrap_or(false))?;
                }
            } else if let Some(s) = &source.secret {
                secret = true;
                if let Some(data) = secret_data(fetched, &v.name, &s.name, s.optional)? {
                    files.keys(&data, &s.items, mode, s.optional.unwrap_or(false))?;
                }
            } else if let Some(d) = &source.downward_api {
                files.downward(pod, spec, &d.items, mode)?;
            } else if source.service_account_token.is_some() {
                return Err(invalid(
                    "projected.sources.serviceAccountToken is not supported yet (no token issuer)"
                        .into(),
                ));
            }
        }
        in_memory = secret;
    } else {
        return Err(invalid("no volume source is set".into()));
    }
    Ok(planned(
        VolumeKind::Files {
            files: files.finish(),
            in_memory,
        },
        true,
    ))
}

fn mode_of(mode: Option<i32>, volume: &str) -> Result<u32, PlanError> {
    match mode {
        None => Ok(DEFAULT_MODE),
        Some(m) if (0..=0o777).contains(&m) => Ok(m as u32),
        Some(m) => Err(PlanError::Invalid {
            volume: volume.to_owned(),
            reason: format!("mode {m:#o} is outside 0..0777"),
        }),
    }
}

fn config_map_data(
    fetched: &Fetched,
    volume: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, PlanError> {
    match fetched.config_map_data(name) {
        Some(data) => Ok(Some(data)),
        None if optional.unwrap_or(false) => Ok(None),
        None => Err(PlanError::Missing {
            volume: volume.to_owned(),
            kind: "configmap",
            name: name.to_owned(),
        }),
    }
}

fn secret_data(
    fetched: &Fetched,
    volume: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, PlanError> {
    match fetched.secret_data(name) {
        Some(data) => Ok(Some(data)),
        None if optional.unwrap_or(false) => Ok(None),
        None => Err(PlanError::Missing {
            volume: volume.to_owned(),
            kind: "secret",
            name: name.to_owned(),
        }),
    }
}

/// Files of one volume being collected; a path given twice is an error.
struct Files<'a> {
    volume: &'a str,
    files: BTreeMap<String, VolumeFile>,
}

impl<'a> Files<'a> {
    fn new(volume: &'a str) -> Self {
        Files {
            volume,
            files: BTreeMap::new(),
        }
    }

    fn invalid(&self, reason: String) -> PlanError {
        PlanError::Invalid {
            volume: self.volume.to_owned(),
            reason,
        }
    }

    fn add(&mut self, path: &str, content: Vec<u8>, mode: u32) -> Result<(), PlanError> {
        if !relative_path_ok(path) {
            return Err(self.invalid(format!(
                "file path {path:?} must be relative, without '..' and not start with '..'"
            )));
        }
        let file = VolumeFile {
            path: path.to_owned(),
            content,
            mode,
        };
        if self.files.insert(path.to_owned(), file).is_some() {
            return Err(self.invalid(format!("file path {path:?} is given twice")));
        }
        Ok(())
    }

    /// Every key as a file of its name, or only `items`, renamed.
    fn keys(
        &mut self,
        data: &BTreeMap<String, Vec<u8>>,
        items: &[v1::KeyToPath],
        mode: u32,
        optional: bool,
    ) -> Result<(), PlanError> {
        if items.is_empty() {
            for (key, value) in data {
                self.add(key, value.clone(), mode)?;
            }
            return Ok(());
        }
        for item in items {
            let item_mode = match item.mode {
                None => mode,
                m => mode_of(m, self.volume)?,
            };
            match data.get(&item.key) {
                Some(value) => self.add(&item.path, value.clone(), item_mode)?,
                None if optional => {}
                None => {
                    return Err(self.invalid(format!("items: key {:?} does not exist", item.key)))
                }
            }
        }
        Ok(())
    }

    fn downward(
        &mut self,
        pod: &v1::Pod,
        spec: &v1::PodSpec,
        items: &[v1::DownwardApiVolumeFile],
        mode: u32,
    ) -> Result<(), PlanError> {
        for item in items {
            let item_mode = match item.mode {
                None => mode,
                m => mode_of(m, self.volume)?,
            };
            let content = match (&item.field_ref, &item.resource_field_ref) {
                (Some(f), None) => field_value(pod, &f.field_path).ok_or_else(|| {
                    self.invalid(format!(
                        "items[{:?}].fieldRef.fieldPath {:?} is not supported in volumes",
                        item.path, f.field_path
                    ))
                })?,
                (None, Some(r)) => resource_value(spec, r).map_err(|reason| {
                    self.invalid(format!("items[{:?}].resourceFieldRef: {reason}", item.path))
                })?,
                _ => {
                    return Err(self.invalid(format!(
                        "items[{:?}]: exactly one of fieldRef and resourceFieldRef must be set",
                        item.path
                    )))
                }
            };
            self.add(&item.path, content.into_bytes(), item_mode)?;
        }
        Ok(())
    }

    fn finish(self) -> Vec<VolumeFile> {
        self.files.into_values().collect()
    }
}

/// A relative path of normal components, none starting with `..` (the kubelet's rule: `..`
/// prefixes are reserved for its own atomic-update entries).
fn relative_path_ok(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.split('/').any(|part| part.starts_with(".."))
}

/// The downward API fields volumes may use (metadata only, as in Kubernetes).
pub(crate) fn field_value(pod: &v1::Pod, path: &str) -> Option<String> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let map_text = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    let labels: BTreeMap<String, String> = meta.labels.clone().into_iter().collect();
    let annotations: BTreeMap<String, String> = meta.annotations.clone().into_iter().collect();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_owned)
    };
    Some(match path {
        "metadata.name" => meta.name,
        "metadata.namespace" => meta.namespace,
        "metadata.uid" => meta.uid,
        "metadata.labels" => map_text(&labels),
        "metadata.annotations" => map_text(&annotations),
        _ => {
            if let Some(key) = subscript("metadata.labels") {
                labels.get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = subscript("metadata.annotations") {
                annotations.get(&key).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// `limits.cpu`, `requests.memory`, ... of a container, divided by the divisor and rounded up
/// (as the kubelet does); an unset limit reads as 0 here (the kubelet would use the node's
/// allocatable, which this agent does not track yet).
pub(crate) fn resource_value(
    spec: &v1::PodSpec,
    r: &v1::ResourceFieldSelector,
) -> std::result::Result<String, String> {
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == r.container_name)
        .ok_or_else(|| {
            format!(
                "containerName {:?} is not a container of the pod",
                r.container_name
            )
        })?;
    let (which, resource) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("resource {:?} is not e.g. limits.cpu", r.resource))?;
    let res = c.resources.clone().unwrap_or_default();
    let map = match which {
        "limits" => &res.limits,
        "requests" => &res.requests,
        _ => return Err(format!("resource {:?} is not e.g. limits.cpu", r.resource)),
    };
    let value = match map.get(resource) {
        Some(q) => api::Quantity::parse(q).map_err(|e| format!("{resource} {q:?}: {e}"))?,
        None => api::Quantity::from_units(0),
    };
    let divisor = match r.divisor.as_str() {
        "" => api::Quantity::from_units(1),
        d => api::Quantity::parse(d).map_err(|e| format!("divisor {d:?}: {e}"))?,
    };
    if divisor.is_zero() || divisor.is_negative() {
        return Err(format!("divisor {:?} must be positive", r.divisor));
    }
    let (n, d) = (value.as_nanos(), divisor.as_nanos());
    Ok(((n + d - 1) / d).to_string())
}

/// The bind mounts of container `c`: each `volumeMounts` entry at its volume's path (the host
/// path, or `volume_dir(name)` for volumes the agent makes), `subPath` joined on.
pub fn container_mounts(
    c: &v1::Container,
    volumes: &[PlannedVolume],
    volume_dir: impl Fn(&str) -> PathBuf,
) -> Result<Vec<runtime::BindMount>, PlanError> {
    let mut mounts = Vec::new();
    for m in &c.volume_mounts {
        let fail = |reason: String| PlanError::Mount {
            container: c.name.clone(),
            volume: m.name.clone(),
            reason,
        };
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| fail("no volume of this name".into()))?;
        let mut source = match &v.kind {
            VolumeKind::Host { path, .. } => path.clone(),
            _ => volume_dir(&v.name),
        };
        if !m.sub_path.is_empty() {
            if !Path::new(&m.sub_path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(fail(format!(
                    "subPath {:?} must be a relative path without '..'",
                    m.sub_path
                )));
            }
            if matches!(v.kind, VolumeKind::Files { .. }) {
                // Files volumes are updated by swapping a symlink; a subPath would pin one
                // version, so (as in Kubernetes) it never sees updates. Resolve through it.
                source = source.join("..data");
            }
            source = source.join(&m.sub_path);
        }
        let destination = PathBuf::from(&m.mount_path);
        if !destination.is_absolute() {
            return Err(fail(format!(
                "mountPath {:?} must be absolute",
                m.mount_path
            )));
        }
        mounts.push(runtime::BindMount {
            source,
            destination,
            read_only: m.read_only || v.read_only,
        });
    }
    // A mount inside another must come after it.
    mounts.sort_by_key(|m| m.destination.components().count());
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(volumes: Vec<v1::Volume>) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                labels: [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                volumes,
                containers: vec![v1::Container {
                    name: "c".into(),
                    resources: Some(v1::ResourceRequirements {
                        limits: [("memory".to_string(), "64Mi".to_string())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn config_map() -> v1::ConfigMap {
        v1::ConfigMap {
            data: [
                ("app.conf".to_string(), "mode=prod\n".to_string()),
                ("other".to_string(), "x".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn fetched() -> Fetched {
        Fetched {
            config_maps: [("cfg".to_string(), Some(config_map()))].into(),
            secrets: [(
                "creds".to_string(),
                Some(v1::Secret {
                    data: [("password".to_string(), b"hunter2".to_vec())].into(),
                    ..Default::default()
                }),
            )]
            .into(),
            claims: [("data".to_string(), Ok(PathBuf::from("/srv/pv1")))].into(),
        }
    }

    fn cm_volume(items: Vec<v1::KeyToPath>, optional: Option<bool>, name: &str) -> v1::Volume {
        v1::Volume {
            name: "config".into(),
            config_map: Some(v1::ConfigMapVolumeSource {
                name: name.into(),
                items,
                default_mode: None,
                optional,
            }),
            ..Default::default()
        }
    }

    fn files_of(v: &PlannedVolume) -> Vec<(String, String, u32)> {
        match &v.kind {
            VolumeKind::Files { files, .. } => files
                .iter()
                .map(|f| {
                    (
                        f.path.clone(),
                        String::from_utf8_lossy(&f.content).into_owned(),
                        f.mode,
                    )
                })
                .collect(),
            other => panic!("not files: {other:?}"),
        }
    }

    #[test]
    fn config_map_keys_become_read_only_files_and_items_rename_them() {
        let all = plan(&pod(vec![cm_volume(vec![], None, "cfg")]), &fetched()).unwrap();
        assert!(all[0].read_only);
        assert_eq!(
            files_of(&all[0]),
            [
                ("app.conf".into(), "mode=prod\n".into(), 0o644),
                ("other".into(), "x".into(), 0o644)
            ]
        );
        let items = vec![v1::KeyToPath {
            key: "app.conf".into(),
            path: "conf/app.ini".into(),
            mode: Some(0o600),
        }];
        let picked = plan(&pod(vec![cm_volume(items, None, "cfg")]), &fetched()).unwrap();
        assert_eq!(
            files_of(&picked[0]),
            [("conf/app.ini".into(), "mode=prod\n".into(), 0o600)]
        );
    }

    #[test]
    fn missing_objects_fail_unless_optional() {
        let err = plan(&pod(vec![cm_volume(vec![], None, "nope")]), &fetched()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume \"config\": configmap \"nope\" not found"
        );
        let ok = plan(
            &pod(vec![cm_volume(vec![], Some(true), "nope")]),
            &fetched(),
        )
        .unwrap();
        assert!(files_of(&ok[0]).is_empty());
        let bad_key = vec![v1::KeyToPath {
            key: "absent".into(),
            path: "a".into(),
            mode: None,
        }];
        let err = plan(&pod(vec![cm_volume(bad_key, None, "cfg")]), &fetched()).unwrap_err();
        assert!(
            err.to_string().contains("key \"absent\" does not exist"),
            "{err}"
        );
    }

    #[test]
    fn file_paths_may_not_escape_the_volume() {
        for path in ["../etc/passwd", "/abs", "a/../../b", "..data", ""] {
            let items = vec![v1::KeyToPath {
                key: "other".into(),
                path: path.into(),
                mode: None,
            }];
            let err = plan(&pod(vec![cm_volume(items, None, "cfg")]), &fetched());
            assert!(matches!(err, Err(PlanError::Invalid { .. })), "{path:?}");
        }
    }

    #[test]
    fn secrets_live_in_memory_and_projected_volumes_merge_sources() {
        let secret = v1::Volume {
            name: "creds".into(),
            secret: Some(v1::SecretVolumeSource {
                secret_name: "creds".into(),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        };
        let projected = v1::Volume {
            name: "all".into(),
            projected: Some(v1::ProjectedVolumeSource {
                sources: vec![
                    v1::VolumeProjection {
                        config_map: Some(v1::ConfigMapProjection {
                            name: "cfg".into(),
                            items: vec![v1::KeyToPath {
                                key: "other".into(),
                                path: "other".into(),
                                mode: None,
                            }],
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    v1::VolumeProjection {
                        downward_api: Some(v1::DownwardApiProjection {
                            items: vec![v1::DownwardApiVolumeFile {
                                path: "name".into(),
                                field_ref: Some(v1::ObjectFieldSelector {
                                    field_path: "metadata.name".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }],
                        }),
                        ..Default::default()
                    },
                ],
                default_mode: None,
            }),
            ..Default::default()
        };
        let planned = plan(&pod(vec![secret, projected]), &fetched()).unwrap();
        assert!(matches!(
            planned[0].kind,
            VolumeKind::Files {
                in_memory: true,
                ..
            }
        ));
        assert_eq!(
            files_of(&planned[0]),
            [("password".into(), "hunter2".into(), 0o400)]
        );
        assert!(matches!(
            planned[1].kind,
            VolumeKind::Files {
                in_memory: false,
                ..
            }
        ));
        assert_eq!(
            files_of(&planned[1]),
            [
                ("name".into(), "web".into(), 0o644),
                ("other".into(), "x".into(), 0o644)
            ]
        );
    }

    #[test]
    fn downward_api_writes_metadata_and_resources_with_divisors() {
        let item = |path: &str, field: Option<&str>, resource: Option<(&str, &str)>| {
            v1::DownwardApiVolumeFile {
                path: path.into(),
                field_ref: field.map(|f| v1::ObjectFieldSelector {
                    field_path: f.into(),
                    ..Default::default()
                }),
                resource_field_ref: resource.map(|(r, d)| v1::ResourceFieldSelector {
                    container_name: "c".into(),
                    resource: r.into(),
                    divisor: d.into(),
                }),
                mode: None,
            }
        };
        let v = v1::Volume {
            name: "info".into(),
            downward_api: Some(v1::DownwardApiVolumeSource {
                items: vec![
                    item("labels", Some("metadata.labels"), None),
                    item("app", Some("metadata.labels['app']"), None),
                    item("ns", Some("metadata.namespace"), None),
                    item("mem", None, Some(("limits.memory", "1Mi"))),
                    item("cpu", None, Some(("requests.cpu", ""))),
                ],
                default_mode: None,
            }),
            ..Default::default()
        };
        let planned = plan(&pod(vec![v.clone()]), &fetched()).unwrap();
        let files: BTreeMap<_, _> = files_of(&planned[0])
            .into_iter()
            .map(|(p, c, _)| (p, c))
            .collect();
        assert_eq!(files["labels"], "app=\"web\"\n");
        assert_eq!(files["app"], "web");
        assert_eq!(files["ns"], "default");
        assert_eq!(files["mem"], "64");
        assert_eq!(files["cpu"], "0");
        let mut bad = v;
        bad.downward_api.as_mut().unwrap().items = vec![item("ip", Some("status.podIP"), None)];
        let err = plan(&pod(vec![bad]), &fetched()).unwrap_err();
        assert!(err.to_string().contains("status.podIP"), "{err}");
    }

    #[test]
    fn empty_dirs_host_paths_and_claims() {
        let vols = vec![
            v1::Volume {
                name: "scratch".into(),
                empty_dir: Some(v1::EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            v1::Volume {
                name: "shm".into(),
                empty_dir: Some(v1::EmptyDirVolumeSource {
                    medium: "Memory".into(),
                    size_limit: "16Mi".into(),
                }),
                ..Default::default()
            },
            v1::Volume {
                name: "logs".into(),
                host_path: Some(v1::HostPathVolumeSource {
                    path: "/var/log".into(),
                    r#type: "Directory".into(),
                }),
                ..Default::default()
            },
            v1::Volume {
                name: "data".into(),
                persistent_volume_claim: Some(v1::PersistentVolumeClaimVolumeSource {
                    claim_name: "data".into(),
                    read_only: true,
                }),
                ..Default::default()
            },
        ];
        let planned = plan(&pod(vols), &fetched()).unwrap();
        assert_eq!(planned[0].kind, VolumeKind::Dir);
        assert_eq!(
            planned[1].kind,
            VolumeKind::Memory {
                size_bytes: Some(16 << 20)
            }
        );
        assert_eq!(
            planned[2].kind,
            VolumeKind::Host {
                path: "/var/log".into(),
                check: HostPathType::Directory
            }
        );
        assert!(planned[3].read_only);
        let bad = v1::Volume {
            name: "h".into(),
            host_path: Some(v1::HostPathVolumeSource {
                path: "/var/../etc".into(),
                r#type: "".into(),
            }),
            ..Default::default()
        };
        assert!(plan(&pod(vec![bad]), &fetched()).is_err());
    }

    #[test]
    fn container_mounts_join_sub_paths_order_nested_mounts_and_refuse_escapes() {
        let vols = plan(
            &pod(vec![
                cm_volume(vec![], None, "cfg"),
                v1::Volume {
                    name: "scratch".into(),
                    empty_dir: Some(v1::EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
            ]),
            &fetched(),
        )
        .unwrap();
        let mount = |name: &str, path: &str, sub: &str| v1::VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub.into(),
            ..Default::default()
        };
        let c = v1::Container {
            name: "c".into(),
            volume_mounts: vec![
                mount("config", "/work/etc/app.conf", "app.conf"),
                mount("scratch", "/work", ""),
            ],
            ..Default::default()
        };
        let dir = |n: &str| PathBuf::from(format!("/pods/u1/volumes/{n}"));
        let mounts = container_mounts(&c, &vols, dir).unwrap();
        assert_eq!(mounts[0].destination, PathBuf::from("/work"));
        assert!(!mounts[0].read_only);
        assert_eq!(
            mounts[1].source,
            PathBuf::from("/pods/u1/volumes/config/..data/app.conf")
        );
        assert!(mounts[1].read_only, "configMap volumes are read-only");
        let escape = v1::Container {
            name: "c".into(),
            volume_mounts: vec![mount("scratch", "/x", "../../etc")],
            ..Default::default()
        };
        assert!(matches!(
            container_mounts(&escape, &vols, dir),
            Err(PlanError::Mount { .. })
        ));
    }
}
