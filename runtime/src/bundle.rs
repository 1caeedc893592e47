//! Pure construction of a container's OCI runtime spec (`config.json`) from the agent's
//! [`ContainerSpec`] and the image config: command resolution as in Kubernetes, environment
//! merging, mounts, namespaces, capabilities, the per-container cgroup path and its resource
//! limits (`linux.resources`), user, capabilities and seccomp filter. It does no I/O except
//! reading a `Localhost` seccomp profile and [`write_config`], which saves the result into a
//! bundle directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, Mount, MountBuilder, RootBuilder, Spec,
};

use crate::error::{Error, Result};
use crate::image_store::ImageConfig;
use crate::types::{BindMount, ContainerSpec, Resources};

/// `PATH` used when neither the image nor the spec sets one (libcontainer needs it to find
/// the executable).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities granted to containers: the container-runtime default set Kubernetes uses.
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The process a container runs, resolved from spec and image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<String>,
    /// Environment as `KEY=value`, image entries first, overridden in place by the spec's.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
}

/// Resolves argv, env and cwd like Kubernetes: `command` replaces the image Entrypoint (and
/// drops its Cmd), `args` replaces Cmd; spec env overrides image env by key.
pub fn resolve_process(spec: &ContainerSpec, image: &ImageConfig) -> Result<ProcessPlan> {
    let args: Vec<String> = match (spec.command.is_empty(), spec.args.is_empty()) {
        (false, _) => spec.command.iter().chain(&spec.args).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(&spec.args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if args.is_empty() {
        return Err(Error::InvalidSpec {
            id: spec.id.clone(),
            reason: "no command: neither the spec nor the image sets one".into(),
        });
    }
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or_default().to_owned();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    };
    for e in &image.env {
        set(e.clone());
    }
    for (k, v) in &spec.env {
        set(format!("{k}={v}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let cwd = spec
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".to_owned());
    Ok(ProcessPlan { args, env, cwd })
}

/// The absolute cgroup path of a container: `/capstan/<pod_uid>/<container_id>`.
pub fn cgroups_path(pod_uid: &str, container_id: &str) -> PathBuf {
    PathBuf::from(format!("/capstan/{pod_uid}/{container_id}"))
}

/// CFS period used for CPU limits (the Kubernetes default, 100 ms).
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts (1 ms).
const MIN_CFS_QUOTA_US: u64 = 1_000;
/// cpu.shares bounds (kernel limits).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

/// cpu shares for a CPU request, as Kubernetes computes them (1000m = 1024 shares).
pub fn cpu_shares(request_millis: u64) -> u64 {
    (request_millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota (µs per [`CFS_PERIOD_US`]) for a CPU limit, as Kubernetes computes it.
pub fn cfs_quota(limit_millis: u64) -> u64 {
    (limit_millis.saturating_mul(CFS_PERIOD_US) / 1000).max(MIN_CFS_QUOTA_US)
}

fn to_i64(id: &str, what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidSpec {
        id: id.to_owned(),
        reason: format!("{what} {value} is too large"),
    })
}

/// The OCI `linux.resources` for `resources`; `None` when nothing is limited. Shares come from
/// the request (or the limit when only a limit is set, as Kubernetes defaults the request).
pub fn linux_resources(id: &str, resources: &Resources) -> Result<Option<LinuxResources>> {
    if *resources == Resources::default() {
        return Ok(None);
    }
    let mut b = LinuxResourcesBuilder::default();
    let shares = resources
        .cpu_request_millis
        .or(resources.cpu_limit_millis)
        .map(cpu_shares);
    if shares.is_some() || resources.cpu_limit_millis.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(shares) = shares {
            cpu = cpu.shares(shares);
        }
        if let Some(limit) = resources.cpu_limit_millis {
            cpu = cpu
                .quota(to_i64(id, "cpu quota", cfs_quota(limit))?)
                .period(CFS_PERIOD_US);
        }
        b = b.cpu(cpu.build()?);
    }
    if let Some(bytes) = resources.memory_limit_bytes {
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(to_i64(id, "memory limit", bytes)?)
                .build()?,
        );
    }
    if let Some(pids) = resources.pids_limit {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(to_i64(id, "pids limit", pids)?)
                .build()?,
        );
    }
    Ok(Some(b.build()?))
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(p) => b.path(p).build()?,
        None => b.build()?,
    })
}

/// Builds the runtime spec for `spec` running `image` on the root filesystem at `rootfs`,
/// limited by `resources`.
pub fn build_spec(
    spec: &ContainerSpec,
    resources: &Resources,
    image: &ImageConfig,
    rootfs: &Path,
) -> Result<Spec> {
    let plan = resolve_process(spec, image)?;
    let mut oci = Spec::default();

    let caps = capabilities(&spec.id, &spec.security)?;
    let cap_names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let mut process = oci.process().clone().unwrap_or_default();
    process.set_args(Some(plan.args));
    process.set_env(Some(plan.env));
    process.set_cwd(PathBuf::from(plan.cwd));
    process.set_terminal(Some(false));
    process.set_capabilities(Some(caps));
    let sec = &spec.security;
    process.set_no_new_privileges(Some(sec.no_new_privileges && !sec.privileged));
    if sec.user.is_some() || sec.group.is_some() || !sec.supplemental_groups.is_empty() {
        let mut user = process.user().clone();
        user.set_uid(sec.user.unwrap_or(0));
        user.set_gid(sec.group.unwrap_or(0));
        user.set_additional_gids(Some(sec.supplemental_groups.clone()).filter(|g| !g.is_empty()));
        process.set_user(user);
    }
    oci.set_process(Some(process));

    oci.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(spec.security.read_only_rootfs)
            .build()?,
    ));
    let hostname = if spec.hostname.is_empty() {
        spec.container_name.clone()
    } else {
        spec.hostname.clone()
    };
    oci.set_hostname(Some(hostname));

    // The defaults minus the cgroupfs mount: the skeleton does not expose cgroups inside.
    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    for bind in &spec.mounts {
        mounts.push(bind_mount(&spec.id, bind)?);
    }
    oci.set_mounts(Some(mounts));

    let mut linux = oci.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(vec![
        namespace(LinuxNamespaceType::Pid, None)?,
        namespace(LinuxNamespaceType::Ipc, None)?,
        namespace(LinuxNamespaceType::Uts, None)?,
        namespace(LinuxNamespaceType::Mount, None)?,
        namespace(LinuxNamespaceType::Network, spec.netns_path.as_deref())?,
    ]));
    linux.set_cgroups_path(Some(cgroups_path(&spec.pod_uid, &spec.id)));
    linux.set_resources(linux_resources(&spec.id, resources)?);
    linux.set_seccomp(seccomp_filter(spec, &cap_names)?);
    oci.set_linux(Some(linux));

    let mut annotations = std::collections::HashMap::new();
    annotations.insert(
        "io.kubernetes.pod.namespace".to_owned(),
        spec.pod_namespace.clone(),
    );
    annotations.insert("io.kubernetes.pod.name".to_owned(), spec.pod_name.clone());
    annotations.insert("io.kubernetes.pod.uid".to_owned(), spec.pod_uid.clone());
    annotations.insert(
        "io.kubernetes.container.name".to_owned(),
        spec.container_name.clone(),
    );
    oci.set_annotations(Some(annotations));
    Ok(oci)
}

/// Every capability the kernel knows (granted to privileged containers).
const ALL_CAPS: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// The container's capability set: the default set (every one when privileged), with
/// `capabilities_drop` removed (`ALL`: all of them) and then `capabilities_add` added.
fn capabilities(id: &str, sec: &crate::types::Security) -> Result<HashSet<Capability>> {
    let parse = |name: &str| {
        let bare = name.trim_start_matches("CAP_").to_ascii_uppercase();
        bare.parse::<Capability>().map_err(|_| Error::InvalidSpec {
            id: id.to_owned(),
            reason: format!("unknown capability {name:?}"),
        })
    };
    let mut caps: HashSet<Capability> = if sec.privileged {
        ALL_CAPS.iter().map(|c| parse(c)).collect::<Result<_>>()?
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    for name in &sec.capabilities_drop {
        if name.eq_ignore_ascii_case("ALL") {
            caps.clear();
        } else {
            caps.remove(&parse(name)?);
        }
    }
    // libcontainer 0.7 fails every start whose capability sets lack CAP_KILL or
    // CAP_AUDIT_WRITE ("failed syscall" while dropping privileges); refuse such a drop
    // plainly rather than fail obscurely or keep capabilities the user dropped.
    for cap in [Capability::Kill, Capability::AuditWrite] {
        if !sec.privileged && DEFAULT_CAPS.contains(&cap) && !caps.contains(&cap) {
            let kept = sec
                .capabilities_add
                .iter()
                .any(|a| a.eq_ignore_ascii_case("ALL") || parse(a).is_ok_and(|c| c == cap));
            if !kept {
                return Err(Error::InvalidSpec {
                    id: id.to_owned(),
                    reason: format!(
                        "dropping CAP_{cap} is not supported yet (the container runtime cannot start a container without it); keep it, e.g. drop [ALL] and add [KILL, AUDIT_WRITE, ...]"
                    ),
                });
            }
        }
    }
    for name in &sec.capabilities_add {
        if name.eq_ignore_ascii_case("ALL") {
            caps.extend(
                ALL_CAPS
                    .iter()
                    .map(|c| parse(c))
                    .collect::<Result<Vec<_>>>()?,
            );
        } else {
            caps.insert(parse(name)?);
        }
    }
    Ok(caps)
}

/// The container's seccomp filter (none when privileged or unconfined).
fn seccomp_filter(
    spec: &ContainerSpec,
    caps: &[String],
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>> {
    if spec.security.privileged {
        return Ok(None);
    }
    match &spec.security.seccomp {
        crate::types::Seccomp::Unconfined => Ok(None),
        crate::types::Seccomp::RuntimeDefault => crate::seccomp::runtime_default(caps).map(Some),
        crate::types::Seccomp::Profile(path) => {
            let invalid = |reason: String| Error::InvalidSpec {
                id: spec.id.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("seccomp profile {}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| invalid(format!("seccomp profile {}: {e}", path.display())))
        }
    }
}

/// The OCI mount of one volume: a recursive, private bind, read-only on request.
fn bind_mount(id: &str, bind: &BindMount) -> Result<Mount> {
    let invalid = |reason: String| Error::InvalidSpec {
        id: id.to_owned(),
        reason,
    };
    let plain = |p: &Path| {
        p.is_absolute()
            && p.components()
                .skip(1)
                .all(|c| matches!(c, std::path::Component::Normal(_)))
    };
    if !plain(&bind.destination) || bind.destination == Path::new("/") {
        return Err(invalid(format!(
            "mount destination {:?} must be an absolute path below / without '..'",
            bind.destination
        )));
    }
    if !bind.source.is_absolute() {
        return Err(invalid(format!(
            "mount source {:?} must be an absolute path",
            bind.source
        )));
    }
    let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
    if bind.read_only {
        options.push("ro".to_owned());
    }
    Ok(MountBuilder::default()
        .destination(&bind.destination)
        .source(&bind.source)
        .typ("bind")
        .options(options)
        .build()?)
}

/// Saves `spec` as `<bundle>/config.json`.
pub fn write_config(spec: &Spec, bundle: &Path) -> Result<()> {
    Ok(spec.save(bundle.join("config.json"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=1".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: Some("/srv".into()),
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "c1".into(),
            pod_uid: "uid1".into(),
            container_name: "main".into(),
            ..Default::default()
        }
    }

    #[test]
    fn image_entrypoint_and_cmd_when_spec_sets_neither() -> anyhow::Result<()> {
        let p = resolve_process(&spec(), &image())?;
        assert_eq!(p.args, ["/entry", "serve", "--port=1"]);
        assert_eq!(p.cwd, "/srv");
        Ok(())
    }

    #[test]
    fn command_replaces_entrypoint_and_drops_cmd() -> anyhow::Result<()> {
        let s = ContainerSpec {
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            ..spec()
        };
        assert_eq!(resolve_process(&s, &image())?.args, ["sh", "-c", "echo hi"]);
        let s = ContainerSpec {
            command: vec!["sh".into()],
            ..spec()
        };
        assert_eq!(resolve_process(&s, &image())?.args, ["sh"]);
        Ok(())
    }

    #[test]
    fn args_replace_cmd_but_keep_entrypoint() -> anyhow::Result<()> {
        let s = ContainerSpec {
            args: vec!["other".into()],
            ..spec()
        };
        assert_eq!(resolve_process(&s, &image())?.args, ["/entry", "other"]);
        Ok(())
    }

    #[test]
    fn spec_env_overrides_image_env_in_place_and_path_defaults() -> anyhow::Result<()> {
        let s = ContainerSpec {
            env: vec![("A".into(), "spec".into()), ("B".into(), "x=y".into())],
            ..spec()
        };
        assert_eq!(
            resolve_process(&s, &image())?.env,
            ["PATH=/bin", "A=spec", "B=x=y"]
        );
        let bare = ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        };
        let p = resolve_process(&spec(), &bare)?;
        assert_eq!(p.env, [format!("PATH={DEFAULT_PATH}")]);
        assert_eq!(p.cwd, "/");
        Ok(())
    }

    #[test]
    fn no_command_anywhere_is_an_invalid_spec() {
        let err = resolve_process(&spec(), &ImageConfig::default());
        assert!(matches!(err, Err(Error::InvalidSpec { id, .. }) if id == "c1"));
    }

    #[test]
    fn volumes_become_private_binds_and_bad_destinations_are_refused() -> anyhow::Result<()> {
        let bind = |destination: &str, read_only| BindMount {
            source: "/var/lib/capstan/pods/uid1/volumes/data".into(),
            destination: destination.into(),
            read_only,
        };
        let s = ContainerSpec {
            mounts: vec![bind("/data", false), bind("/etc/config", true)],
            ..spec()
        };
        let oci = build_spec(&s, &Resources::default(), &image(), Path::new("/r/rootfs"))?;
        let mounts = oci.mounts().clone().unwrap_or_default();
        let ours: Vec<_> = mounts
            .iter()
            .filter(|m| m.typ().as_deref() == Some("bind"))
            .collect();
        assert_eq!(ours.len(), 2);
        assert_eq!(ours[0].destination(), Path::new("/data"));
        assert_eq!(
            ours[1].options().clone().unwrap_or_default(),
            ["rbind", "rprivate", "ro"]
        );
        for bad in ["relative", "/", "/a/../etc"] {
            let s = ContainerSpec {
                mounts: vec![bind(bad, false)],
                ..spec()
            };
            let err = build_spec(&s, &Resources::default(), &image(), Path::new("/r"));
            assert!(matches!(err, Err(Error::InvalidSpec { .. })), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn spec_has_namespaces_mounts_cgroup_and_netns() -> anyhow::Result<()> {
        let s = ContainerSpec {
            hostname: "web-0".into(),
            netns_path: Some("/run/netns/p1".into()),
            ..spec()
        };
        let oci = build_spec(&s, &Resources::default(), &image(), Path::new("/r/rootfs"))?;
        assert_eq!(oci.hostname().as_deref(), Some("web-0"));
        assert_eq!(
            oci.root().as_ref().map(|r| r.path().clone()),
            Some(PathBuf::from("/r/rootfs"))
        );
        let linux = oci.linux().clone().unwrap_or_default();
        assert_eq!(
            linux.cgroups_path().clone(),
            Some(PathBuf::from("/capstan/uid1/c1"))
        );
        let ns = linux.namespaces().clone().unwrap_or_default();
        let types: Vec<_> = ns.iter().map(|n| n.typ()).collect();
        assert_eq!(
            types,
            [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Network
            ]
        );
        assert!(!types.contains(&LinuxNamespaceType::User));
        assert_eq!(ns[4].path().clone(), Some(PathBuf::from("/run/netns/p1")));
        let dests: Vec<_> = oci
            .mounts()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(dests.contains(&PathBuf::from(d)), "missing mount {d}");
        }
        assert!(!dests.contains(&PathBuf::from("/sys/fs/cgroup")));
        let process = oci.process().clone().unwrap_or_default();
        assert_eq!(
            process.args().clone().unwrap_or_default(),
            ["/entry", "serve", "--port=1"]
        );
        Ok(())
    }

    #[test]
    fn no_resources_leave_linux_resources_unset() -> anyhow::Result<()> {
        let oci = build_spec(&spec(), &Resources::default(), &image(), Path::new("/r"))?;
        assert!(oci
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .is_none());
        Ok(())
    }

    #[test]
    fn resources_become_shares_quota_memory_and_pids() -> anyhow::Result<()> {
        let r = Resources {
            cpu_request_millis: Some(250),
            cpu_limit_millis: Some(500),
            memory_limit_bytes: Some(16 << 20),
            pids_limit: Some(32),
        };
        let oci = build_spec(&spec(), &r, &image(), Path::new("/r"))?;
        let res = oci
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .ok_or_else(|| anyhow::anyhow!("no resources"))?;
        let cpu = res.cpu().clone().unwrap_or_default();
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(16 << 20)
        );
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(32));
        Ok(())
    }

    #[test]
    fn cpu_conversions_match_kubernetes_and_stay_in_kernel_bounds() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(u64::MAX), 262_144);
        assert_eq!(cfs_quota(1500), 150_000);
        assert_eq!(cfs_quota(1), 1_000);
    }

    #[test]
    fn a_limit_alone_also_sets_shares_like_a_defaulted_request() -> anyhow::Result<()> {
        let r = Resources {
            cpu_limit_millis: Some(2000),
            ..Default::default()
        };
        let res = linux_resources("c1", &r)?.ok_or_else(|| anyhow::anyhow!("none"))?;
        let cpu = res.cpu().clone().unwrap_or_default();
        assert_eq!(cpu.shares(), Some(2048));
        assert_eq!(cpu.quota(), Some(200_000));
        assert!(res.memory().is_none() && res.pids().is_none());
        Ok(())
    }
}
