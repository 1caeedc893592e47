//! Validation of the parts of a pod spec beyond names, images and ports: volumes and
//! their mounts, probes, lifecycle hooks, environment sources, security contexts and
//! resources. Pure; reports through the parent module's `Errors`.

use std::collections::HashSet;

use super::{resources, Errors};
use crate::names;
use crate::v1;

/// Allowed `scheme` values of an HTTP probe.
const SCHEMES: [&str; 2] = ["HTTP", "HTTPS"];
/// Allowed `mountPropagation` values.
const PROPAGATIONS: [&str; 3] = ["None", "HostToContainer", "Bidirectional"];
/// Allowed `hostPath.type` values (empty means no check).
const HOST_PATH_TYPES: [&str; 7] = [
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// Reports `"must set exactly one of ..."` unless exactly one option is set.
pub(super) fn exactly_one(errs: &mut Errors, path: &str, options: &[(&str, bool)]) {
    let set: Vec<&str> = options
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    match set.len() {
        1 => {}
        0 => errs.push(
            path,
            format!("must set exactly one of {}", names.join(", ")),
        ),
        _ => errs.push(
            path,
            format!(
                "may not set more than one of {} (found {})",
                names.join(", "),
                set.join(", ")
            ),
        ),
    }
}

/// Checks the pod's volumes at `{path}.volumes` and returns their names.
pub(super) fn validate_volumes<'a>(
    errs: &mut Errors,
    path: &str,
    volumes: &'a [v1::Volume],
) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vpath = format!("{path}.volumes[{i}]");
        errs.check(format!("{vpath}.name"), names::dns1123_label(&v.name));
        if !v.name.is_empty() && !seen.insert(v.name.as_str()) {
            errs.push(
                format!("{vpath}.name"),
                format!("duplicate volume name {:?}", v.name),
            );
        }
        exactly_one(
            errs,
            &vpath,
            &[
                ("hostPath", v.host_path.is_some()),
                ("emptyDir", v.empty_dir.is_some()),
                ("secret", v.secret.is_some()),
                ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
                ("downwardAPI", v.downward_api.is_some()),
                ("configMap", v.config_map.is_some()),
                ("projected", v.projected.is_some()),
            ],
        );
        if let Some(h) = &v.host_path {
            if !h.path.starts_with('/') {
                errs.push(format!("{vpath}.hostPath.path"), "must be an absolute path");
            }
            errs.one_of(
                format!("{vpath}.hostPath.type"),
                &h.r#type,
                &HOST_PATH_TYPES,
            );
        }
        if let Some(e) = &v.empty_dir {
            errs.one_of(format!("{vpath}.emptyDir.medium"), &e.medium, &["Memory"]);
            if !e.size_limit.is_empty() {
                let limits = [("sizeLimit".to_string(), e.size_limit.clone())].into();
                resources::validate_resource_list(errs, &format!("{vpath}.emptyDir"), &limits);
            }
        }
        if let Some(s) = &v.secret {
            required(errs, &format!("{vpath}.secret.secretName"), &s.secret_name);
            key_paths(errs, &format!("{vpath}.secret.items"), &s.items);
            mode(errs, &format!("{vpath}.secret.defaultMode"), s.default_mode);
        }
        if let Some(c) = &v.config_map {
            required(errs, &format!("{vpath}.configMap.name"), &c.name);
            key_paths(errs, &format!("{vpath}.configMap.items"), &c.items);
            mode(
                errs,
                &format!("{vpath}.configMap.defaultMode"),
                c.default_mode,
            );
        }
        if let Some(c) = &v.persistent_volume_claim {
            required(
                errs,
                &format!("{vpath}.persistentVolumeClaim.claimName"),
                &c.claim_name,
            );
        }
        if let Some(d) = &v.downward_api {
            downward_files(errs, &format!("{vpath}.downwardAPI.items"), &d.items);
            mode(
                errs,
                &format!("{vpath}.downwardAPI.defaultMode"),
                d.default_mode,
            );
        }
        if let Some(p) = &v.projected {
            for (j, src) in p.sources.iter().enumerate() {
                let spath = format!("{vpath}.projected.sources[{j}]");
                exactly_one(
                    errs,
                    &spath,
                    &[
                        ("secret", src.secret.is_some()),
                        ("downwardAPI", src.downward_api.is_some()),
                        ("configMap", src.config_map.is_some()),
                        ("serviceAccountToken", src.service_account_token.is_some()),
                    ],
                );
                if let Some(s) = &src.secret {
                    required(errs, &format!("{spath}.secret.name"), &s.name);
                    key_paths(errs, &format!("{spath}.secret.items"), &s.items);
                }
                if let Some(c) = &src.config_map {
                    required(errs, &format!("{spath}.configMap.name"), &c.name);
                    key_paths(errs, &format!("{spath}.configMap.items"), &c.items);
                }
                if let Some(d) = &src.downward_api {
                    downward_files(errs, &format!("{spath}.downwardAPI.items"), &d.items);
                }
                if let Some(t) = &src.service_account_token {
                    relative_path(errs, &format!("{spath}.serviceAccountToken.path"), &t.path);
                    if t.expiration_seconds.is_some_and(|s| s < 600) {
                        errs.push(
                            format!("{spath}.serviceAccountToken.expirationSeconds"),
                            "must be at least 600 seconds",
                        );
                    }
                }
            }
            mode(
                errs,
                &format!("{vpath}.projected.defaultMode"),
                p.default_mode,
            );
        }
    }
    seen
}

/// Checks a container's resources, mounts, probes, hooks, env sources and security
/// context; `path` is the container's own path.
pub(super) fn validate_container_extras(
    errs: &mut Errors,
    path: &str,
    c: &v1::Container,
    volumes: &HashSet<&str>,
) {
    if let Some(res) = &c.resources {
        resources::validate_requirements(errs, &format!("{path}.resources"), res);
    }
    let mut mount_paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let mpath = format!("{path}.volumeMounts[{j}]");
        if m.name.is_empty() {
            errs.push(format!("{mpath}.name"), "required");
        } else if !volumes.contains(m.name.as_str()) {
            errs.push(
                format!("{mpath}.name"),
                format!("volume {:?} not found", m.name),
            );
        }
        if m.mount_path.is_empty() {
            errs.push(format!("{mpath}.mountPath"), "required");
        } else if !m.mount_path.starts_with('/') {
            errs.push(format!("{mpath}.mountPath"), "must be an absolute path");
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            errs.push(format!("{mpath}.mountPath"), "must be unique");
        }
        if !m.sub_path.is_empty() {
            relative_path(errs, &format!("{mpath}.subPath"), &m.sub_path);
        }
        errs.one_of(
            format!("{mpath}.mountPropagation"),
            &m.mount_propagation,
            &PROPAGATIONS,
        );
    }
    for (name, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            validate_probe(errs, &format!("{path}.{name}"), p);
            if name != "readinessProbe" && p.success_threshold > 1 {
                errs.push(
                    format!("{path}.{name}.successThreshold"),
                    "must be 1 for liveness and startup probes",
                );
            }
        }
    }
    if let Some(l) = &c.lifecycle {
        for (name, hook) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = hook {
                let hpath = format!("{path}.lifecycle.{name}");
                exactly_one(
                    errs,
                    &hpath,
                    &[
                        ("exec", h.exec.is_some()),
                        ("httpGet", h.http_get.is_some()),
                        ("tcpSocket", h.tcp_socket.is_some()),
                        ("sleep", h.sleep.is_some()),
                    ],
                );
                actions(
                    errs,
                    &hpath,
                    h.exec.as_ref(),
                    h.http_get.as_ref(),
                    h.tcp_socket.as_ref(),
                );
                if h.sleep.as_ref().is_some_and(|s| s.seconds <= 0) {
                    errs.push(format!("{hpath}.sleep.seconds"), "must be greater than 0");
                }
            }
        }
    }
    for (j, e) in c.env.iter().enumerate() {
        let Some(from) = &e.value_from else { continue };
        let epath = format!("{path}.env[{j}].valueFrom");
        if !e.value.is_empty() {
            errs.push(epath.clone(), "may not be set when `value` is not empty");
        }
        exactly_one(
            errs,
            &epath,
            &[
                ("fieldRef", from.field_ref.is_some()),
                ("resourceFieldRef", from.resource_field_ref.is_some()),
                ("configMapKeyRef", from.config_map_key_ref.is_some()),
                ("secretKeyRef", from.secret_key_ref.is_some()),
            ],
        );
        if let Some(f) = &from.field_ref {
            required(errs, &format!("{epath}.fieldRef.fieldPath"), &f.field_path);
        }
        if let Some(r) = &from.resource_field_ref {
            required(
                errs,
                &format!("{epath}.resourceFieldRef.resource"),
                &r.resource,
            );
        }
        for (field, name, key) in [
            (
                "configMapKeyRef",
                from.config_map_key_ref.as_ref().map(|r| (&r.name, &r.key)),
            ),
            (
                "secretKeyRef",
                from.secret_key_ref.as_ref().map(|r| (&r.name, &r.key)),
            ),
        ]
        .into_iter()
        .filter_map(|(f, r)| r.map(|(n, k)| (f, n, k)))
        {
            required(errs, &format!("{epath}.{field}.name"), name);
            errs.check(format!("{epath}.{field}.key"), names::config_map_key(key));
        }
    }
    for (j, from) in c.env_from.iter().enumerate() {
        let fpath = format!("{path}.envFrom[{j}]");
        exactly_one(
            errs,
            &fpath,
            &[
                ("configMapRef", from.config_map_ref.is_some()),
                ("secretRef", from.secret_ref.is_some()),
            ],
        );
        if let Some(r) = &from.config_map_ref {
            required(errs, &format!("{fpath}.configMapRef.name"), &r.name);
        }
        if let Some(r) = &from.secret_ref {
            required(errs, &format!("{fpath}.secretRef.name"), &r.name);
        }
        if !from.prefix.is_empty() {
            errs.check(format!("{fpath}.prefix"), names::env_var_name(&from.prefix));
        }
    }
    if let Some(sc) = &c.security_context {
        let spath = format!("{path}.securityContext");
        ids(errs, &spath, sc.run_as_user, sc.run_as_group);
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            errs.push(
                format!("{spath}.allowPrivilegeEscalation"),
                "cannot be false when privileged is true",
            );
        }
        if let Some(p) = &sc.seccomp_profile {
            validate_seccomp(errs, &format!("{spath}.seccompProfile"), p);
        }
    }
}

/// A seccomp profile: a known type, and a relative path without `..` exactly for Localhost.
fn validate_seccomp(errs: &mut Errors, path: &str, p: &v1::SeccompProfile) {
    let local = p.localhost_profile.as_deref().unwrap_or_default();
    match p.r#type.as_str() {
        "RuntimeDefault" | "Unconfined" => {
            if p.localhost_profile.is_some() {
                errs.push(
                    format!("{path}.localhostProfile"),
                    "must only be set when type is Localhost",
                );
            }
        }
        "Localhost" => {
            let plain = !local.is_empty()
                && !local.starts_with('/')
                && local.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
            if !plain {
                errs.push(
                    format!("{path}.localhostProfile"),
                    "must be a relative path below the node's seccomp directory, without '..'",
                );
            }
        }
        "" => errs.push(format!("{path}.type"), "Required value"),
        other => errs.push(
            format!("{path}.type"),
            format!(
                "Unsupported value: {other:?}: supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
            ),
        ),
    }
}

/// Checks a pod-level security context at `path`.
pub(super) fn validate_pod_security(errs: &mut Errors, path: &str, sc: &v1::PodSecurityContext) {
    ids(errs, path, sc.run_as_user, sc.run_as_group);
    if let Some(p) = &sc.seccomp_profile {
        validate_seccomp(errs, &format!("{path}.seccompProfile"), p);
    }
    if sc.fs_group.is_some_and(|g| g < 0) {
        errs.push(
            format!("{path}.fsGroup"),
            "must be greater than or equal to 0",
        );
    }
}

fn validate_probe(errs: &mut Errors, path: &str, p: &v1::Probe) {
    exactly_one(
        errs,
        path,
        &[
            ("exec", p.exec.is_some()),
            ("httpGet", p.http_get.is_some()),
            ("tcpSocket", p.tcp_socket.is_some()),
            ("grpc", p.grpc.is_some()),
        ],
    );
    actions(
        errs,
        path,
        p.exec.as_ref(),
        p.http_get.as_ref(),
        p.tcp_socket.as_ref(),
    );
    if let Some(g) = &p.grpc {
        port_number(errs, &format!("{path}.grpc.port"), g.port);
    }
    for (field, value) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if value < 0 {
            errs.push(
                format!("{path}.{field}"),
                "must be greater than or equal to 0",
            );
        }
    }
    if p.termination_grace_period_seconds.is_some_and(|s| s <= 0) {
        errs.push(
            format!("{path}.terminationGracePeriodSeconds"),
            "must be greater than 0",
        );
    }
}

fn actions(
    errs: &mut Errors,
    path: &str,
    exec: Option<&v1::ExecAction>,
    http: Option<&v1::HttpGetAction>,
    tcp: Option<&v1::TcpSocketAction>,
) {
    if exec.is_some_and(|e| e.command.is_empty()) {
        errs.push(format!("{path}.exec.command"), "required");
    }
    if let Some(h) = http {
        target_port(errs, &format!("{path}.httpGet.port"), h.port.as_ref());
        errs.one_of(format!("{path}.httpGet.scheme"), &h.scheme, &SCHEMES);
        if !h.path.is_empty() && !h.path.starts_with('/') {
            errs.push(format!("{path}.httpGet.path"), "must start with '/'");
        }
    }
    if let Some(t) = tcp {
        target_port(errs, &format!("{path}.tcpSocket.port"), t.port.as_ref());
    }
}

/// A port given as a number (1-65535) or a container port name.
pub(super) fn target_port(errs: &mut Errors, path: &str, port: Option<&v1::IntOrString>) {
    match port {
        None => errs.push(path, "required"),
        Some(p) => match (p.as_int(), p.as_str()) {
            (Some(n), _) => port_number(errs, path, n),
            (_, Some(name)) => errs.check(path, names::iana_svc_name(name)),
            _ => errs.push(path, "required"),
        },
    }
}

/// A port number in 1..=65535.
pub(super) fn port_number(errs: &mut Errors, path: &str, port: i32) {
    if !(1..=65535).contains(&port) {
        errs.push(
            path,
            format!("{port} is not a valid port number: must be between 1 and 65535"),
        );
    }
}

fn ids(errs: &mut Errors, path: &str, user: Option<i64>, group: Option<i64>) {
    for (field, id) in [("runAsUser", user), ("runAsGroup", group)] {
        if id.is_some_and(|i| !(0..=i64::from(u32::MAX)).contains(&i)) {
            errs.push(
                format!("{path}.{field}"),
                "must be between 0 and 4294967295",
            );
        }
    }
}

fn required(errs: &mut Errors, path: &str, value: &str) {
    if value.is_empty() {
        errs.push(path, "required");
    }
}

fn mode(errs: &mut Errors, path: &str, mode: Option<i32>) {
    if mode.is_some_and(|m| !(0..=0o777).contains(&m)) {
        errs.push(path, "must be a file mode between 0 and 0777 (octal)");
    }
}

fn relative_path(errs: &mut Errors, path: &str, value: &str) {
    if value.is_empty() {
        errs.push(path, "required");
    } else if value.starts_with('/') {
        errs.push(path, "must be a relative path");
    } else if value.split('/').any(|part| part == "..") {
        errs.push(path, "must not contain '..'");
    }
}

fn key_paths(errs: &mut Errors, path: &str, items: &[v1::KeyToPath]) {
    for (i, item) in items.iter().enumerate() {
        errs.check(format!("{path}[{i}].key"), names::config_map_key(&item.key));
        relative_path(errs, &format!("{path}[{i}].path"), &item.path);
        mode(errs, &format!("{path}[{i}].mode"), item.mode);
    }
}

fn downward_files(errs: &mut Errors, path: &str, items: &[v1::DownwardApiVolumeFile]) {
    for (i, f) in items.iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        relative_path(errs, &format!("{fpath}.path"), &f.path);
        exactly_one(
            errs,
            &fpath,
            &[
                ("fieldRef", f.field_ref.is_some()),
                ("resourceFieldRef", f.resource_field_ref.is_some()),
            ],
        );
        mode(errs, &format!("{fpath}.mode"), f.mode);
    }
}

/// `hostAliases` and `dnsConfig`: IP addresses, DNS names, Kubernetes' limits, and a
/// nameserver when `dnsPolicy` is `None` (the file would have none otherwise).
pub(super) fn validate_dns(errs: &mut Errors, path: &str, spec: &v1::PodSpec) {
    let ip = |s: &str| -> names::Check {
        s.parse::<std::net::IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("{s:?} is not an IP address"))
    };
    for (i, a) in spec.host_aliases.iter().enumerate() {
        let p = format!("{path}.hostAliases[{i}]");
        errs.check(format!("{p}.ip"), ip(&a.ip));
        for (j, h) in a.hostnames.iter().enumerate() {
            errs.check(format!("{p}.hostnames[{j}]"), names::dns1123_subdomain(h));
        }
    }
    let conf = spec.dns_config.clone().unwrap_or_default();
    let p = format!("{path}.dnsConfig");
    if conf.nameservers.len() > 3 {
        errs.push(
            format!("{p}.nameservers"),
            "must not have more than 3 nameservers",
        );
    }
    for (i, ns) in conf.nameservers.iter().enumerate() {
        errs.check(format!("{p}.nameservers[{i}]"), ip(ns));
    }
    if conf.searches.len() > 32 {
        errs.push(
            format!("{p}.searches"),
            "must not have more than 32 search paths",
        );
    }
    for (i, s) in conf.searches.iter().enumerate() {
        // A trailing dot is allowed (kubelet strips it).
        errs.check(
            format!("{p}.searches[{i}]"),
            names::dns1123_subdomain(s.trim_end_matches('.')),
        );
    }
    for (i, o) in conf.options.iter().enumerate() {
        if o.name.is_empty() {
            errs.push(format!("{p}.options[{i}].name"), "must not be empty");
        }
    }
    if spec.dns_policy == "None" && conf.nameservers.is_empty() {
        errs.push(
            format!("{p}.nameservers"),
            "must have at least one nameserver when dnsPolicy is None",
        );
    }
}
