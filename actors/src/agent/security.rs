//! A container's confinement from its and its pod's `securityContext` (pure): user and
//! groups, `runAsNonRoot`, read-only root filesystem, capabilities, privileged mode,
//! `allowPrivilegeEscalation` and the seccomp profile. Capstan hardens by default: without
//! `allowPrivilegeEscalation: true` a container runs with `no_new_privs`, and without a
//! profile it gets the runtime's default seccomp filter (`RuntimeDefault`), as kubelet's
//! `--seccomp-default` does.

use std::path::Path;

use api::v1;

/// The runtime confinement of container `c` of a pod with spec `pod`; `seccomp_dir` holds
/// `Localhost` profiles. `Err` explains why the container must not start.
pub fn security(
    pod: &v1::PodSpec,
    c: &v1::Container,
    seccomp_dir: &Path,
) -> Result<runtime::Security, String> {
    let psc = pod.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let id = |v: Option<i64>, field: &str| {
        v.map(|v| {
            u32::try_from(v).map_err(|_| format!("securityContext.{field}: {v} is not a valid id"))
        })
        .transpose()
    };
    let user = id(csc.run_as_user.or(psc.run_as_user), "runAsUser")?;
    let group = id(csc.run_as_group.or(psc.run_as_group), "runAsGroup")?;
    let mut supplemental_groups = psc
        .supplemental_groups
        .iter()
        .map(|g| id(Some(*g), "supplementalGroups").map(|g| g.unwrap_or(0)))
        .collect::<Result<Vec<u32>, String>>()?;
    if let Some(fs_group) = id(psc.fs_group, "fsGroup")? {
        if !supplemental_groups.contains(&fs_group) {
            supplemental_groups.push(fs_group);
        }
    }
    if csc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && user.unwrap_or(0) == 0 {
        // The image's user is not read yet, so an unset runAsUser means root.
        return Err(format!(
            "container {:?} has runAsNonRoot and would run as root (set runAsUser to a non-zero UID)",
            c.name
        ));
    }
    let privileged = csc.privileged == Some(true);
    let caps = csc.capabilities.unwrap_or_default();
    let profile = csc.seccomp_profile.or(psc.seccomp_profile);
    let seccomp = match profile.as_ref().map(|p| p.r#type.as_str()) {
        None | Some("RuntimeDefault") => runtime::Seccomp::RuntimeDefault,
        Some("Unconfined") => runtime::Seccomp::Unconfined,
        Some("Localhost") => {
            let local = profile
                .as_ref()
                .and_then(|p| p.localhost_profile.clone())
                .unwrap_or_default();
            runtime::Seccomp::Profile(seccomp_dir.join(local))
        }
        Some(other) => return Err(format!("seccompProfile.type {other:?} is not supported")),
    };
    Ok(runtime::Security {
        user,
        group,
        supplemental_groups,
        read_only_rootfs: csc.read_only_root_filesystem == Some(true),
        capabilities_add: caps.add,
        capabilities_drop: caps.drop,
        privileged,
        no_new_privileges: !privileged && csc.allow_privilege_escalation != Some(true),
        seccomp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(sc: Option<v1::SecurityContext>) -> v1::Container {
        v1::Container {
            name: "app".into(),
            security_context: sc,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_hardened_and_the_container_overrides_the_pod() {
        let dir = Path::new("/var/lib/capstan/seccomp");
        let s = security(&v1::PodSpec::default(), &container(None), dir).unwrap();
        assert_eq!(s, runtime::Security::default());
        assert!(s.no_new_privileges);

        let pod = v1::PodSpec {
            security_context: Some(v1::PodSecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                fs_group: Some(2000),
                supplemental_groups: vec![3000],
                seccomp_profile: Some(v1::SeccompProfile {
                    r#type: "Localhost".into(),
                    localhost_profile: Some("profiles/strict.json".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = container(Some(v1::SecurityContext {
            run_as_user: Some(1001),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(true),
            ..Default::default()
        }));
        let s = security(&pod, &c, dir).unwrap();
        assert_eq!((s.user, s.group), (Some(1001), Some(1000)));
        assert_eq!(s.supplemental_groups, [3000, 2000]);
        assert!(s.read_only_rootfs && !s.no_new_privileges);
        assert_eq!(
            s.seccomp,
            runtime::Seccomp::Profile(dir.join("profiles/strict.json"))
        );
    }

    #[test]
    fn run_as_non_root_refuses_root_and_privileged_drops_the_hardening() {
        let dir = Path::new("/s");
        let non_root = container(Some(v1::SecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        }));
        let err = security(&v1::PodSpec::default(), &non_root, dir).unwrap_err();
        assert!(err.contains("runAsNonRoot"), "{err}");
        let privileged = container(Some(v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }));
        let s = security(&v1::PodSpec::default(), &privileged, dir).unwrap();
        assert!(s.privileged && !s.no_new_privileges);
    }
}
