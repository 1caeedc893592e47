//! kubectl-shaped output: tables for `get`, and YAML/JSON documents.

use api::v1::{self, Object};
use chrono::{DateTime, Utc};

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Extra columns (IP, node).
    Wide,
    /// YAML document(s).
    Yaml,
    /// JSON document.
    Json,
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 time, as kubectl prints ages.
pub fn age(created: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let s = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// kubectl's STATUS column of a pod: a container's waiting/terminated reason wins over the phase.
pub fn pod_status_column(pod: &v1::Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "Pending".into();
    };
    if pod
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
    {
        return "Terminating".into();
    }
    if status.phase == "Succeeded" {
        return "Completed".into();
    }
    let mut reason = if status.reason.is_empty() {
        status.phase.clone()
    } else {
        status.reason.clone()
    };
    for cs in &status.container_statuses {
        let Some(state) = cs.state.as_ref() else {
            continue;
        };
        if let Some(w) = state.waiting.as_ref().filter(|w| !w.reason.is_empty()) {
            reason = w.reason.clone();
        } else if let Some(t) = state.terminated.as_ref() {
            reason = if t.reason.is_empty() {
                format!("ExitCode:{}", t.exit_code)
            } else {
                t.reason.clone()
            };
        }
    }
    reason
}

/// Prints rows as left-aligned columns separated by three spaces, like kubectl.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{line}");
    }
}

/// Table rows (header first) for `objects` of one kind.
pub fn table(
    kind: api::Kind,
    objects: &[Object],
    wide: bool,
    all_namespaces: bool,
) -> Vec<Vec<String>> {
    let now = Utc::now();
    let mut rows = Vec::new();
    let with_ns = |mut r: Vec<String>, ns: &str| {
        if all_namespaces {
            r.insert(0, ns.to_string());
        }
        r
    };
    match kind {
        api::Kind::Pod => {
            let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
            if wide {
                h.extend(["IP", "NODE"]);
            }
            rows.push(with_ns(
                h.into_iter().map(String::from).collect(),
                "NAMESPACE",
            ));
            for o in objects {
                let Some(v1::object::Kind::Pod(p)) = o.kind.as_ref() else {
                    continue;
                };
                let meta = p.metadata.clone().unwrap_or_default();
                let status = p.status.clone().unwrap_or_default();
                let total = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
                let ready = status.container_statuses.iter().filter(|c| c.ready).count();
                let restarts: i32 = status
                    .container_statuses
                    .iter()
                    .map(|c| c.restart_count)
                    .sum();
                let mut r = vec![
                    meta.name.clone(),
                    format!("{ready}/{total}"),
                    pod_status_column(p),
                    restarts.to_string(),
                    age(&meta.creation_timestamp, now),
                ];
                if wide {
                    let node = p
                        .spec
                        .as_ref()
                        .map(|s| s.node_name.clone())
                        .unwrap_or_default();
                    r.push(if status.pod_ip.is_empty() {
                        "<none>".into()
                    } else {
                        status.pod_ip
                    });
                    r.push(if node.is_empty() {
                        "<none>".into()
                    } else {
                        node
                    });
                }
                rows.push(with_ns(r, &meta.namespace));
            }
        }
        api::Kind::Node => {
            let mut h = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
            if wide {
                h.extend(["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION"]);
            }
            rows.push(h.into_iter().map(String::from).collect());
            for o in objects {
                let Some(v1::object::Kind::Node(n)) = o.kind.as_ref() else {
                    continue;
                };
                let meta = n.metadata.clone().unwrap_or_default();
                let status = n.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True");
                let mut r = vec![
                    meta.name.clone(),
                    if ready { "Ready" } else { "NotReady" }.to_string(),
                    "<none>".into(),
                    age(&meta.creation_timestamp, now),
                    format!("v{}", env!("CARGO_PKG_VERSION")),
                ];
                if wide {
                    let ip = status
                        .addresses
                        .iter()
                        .find(|a| a.r#type == "InternalIP")
                        .map(|a| a.address.clone());
                    let info = status.node_info.clone().unwrap_or_default();
                    r.extend([
                        ip.unwrap_or_else(|| "<none>".into()),
                        info.os_image,
                        info.kernel_version,
                    ]);
                }
                rows.push(r);
            }
        }
        api::Kind::Service => {
            let h = [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ];
            rows.push(with_ns(
                h.into_iter().map(String::from).collect(),
                "NAMESPACE",
            ));
            for o in objects {
                let Some(v1::object::Kind::Service(svc)) = o.kind.as_ref() else {
                    continue;
                };
                let meta = svc.metadata.clone().unwrap_or_default();
                let spec = svc.spec.clone().unwrap_or_default();
                let ports: Vec<String> = spec
                    .ports
                    .iter()
                    .map(|p| {
                        let proto = if p.protocol.is_empty() {
                            "TCP"
                        } else {
                            p.protocol.as_str()
                        };
                        match p.node_port {
                            0 => format!("{}/{proto}", p.port),
                            n => format!("{}:{n}/{proto}", p.port),
                        }
                    })
                    .collect();
                let or_none = |v: String| {
                    if v.is_empty() {
                        "<none>".to_string()
                    } else {
                        v
                    }
                };
                let r = vec![
                    meta.name.clone(),
                    if spec.r#type.is_empty() {
                        "ClusterIP".into()
                    } else {
                        spec.r#type.clone()
                    },
                    or_none(spec.cluster_ip.clone()),
                    or_none(spec.external_ips.join(",")),
                    or_none(ports.join(",")),
                    age(&meta.creation_timestamp, now),
                ];
                rows.push(with_ns(r, &meta.namespace));
            }
        }
        api::Kind::Namespace => {
            rows.push(vec!["NAME".into(), "STATUS".into(), "AGE".into()]);
            for o in objects {
                let Some(v1::object::Kind::Namespace(n)) = o.kind.as_ref() else {
                    continue;
                };
                let meta = n.metadata.clone().unwrap_or_default();
                let phase = n
                    .status
                    .as_ref()
                    .map(|s| s.phase.clone())
                    .unwrap_or_default();
                rows.push(vec![
                    meta.name.clone(),
                    phase,
                    age(&meta.creation_timestamp, now),
                ]);
            }
        }
        api::Kind::Lease => {
            rows.push(with_ns(
                vec!["NAME".into(), "HOLDER".into(), "AGE".into()],
                "NAMESPACE",
            ));
            for o in objects {
                let Some(lease) = o.as_typed::<v1::Lease>() else {
                    continue;
                };
                let meta = o.metadata();
                let holder = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_default();
                rows.push(with_ns(
                    vec![
                        meta.name.clone(),
                        holder,
                        age(&meta.creation_timestamp, now),
                    ],
                    &meta.namespace,
                ));
            }
        }
        api::Kind::Job => {
            rows.push(with_ns(
                ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
                    .map(String::from)
                    .to_vec(),
                "NAMESPACE",
            ));
            for o in objects {
                let Some(job) = o.as_typed::<v1::Job>() else {
                    continue;
                };
                let meta = o.metadata();
                let spec = job.spec.clone().unwrap_or_default();
                let st = job.status.clone().unwrap_or_default();
                let has = |t: &str| {
                    st.conditions
                        .iter()
                        .any(|c| c.r#type == t && c.status == "True")
                };
                let status = ["Complete", "Failed", "Suspended"]
                    .into_iter()
                    .find(|t| has(t))
                    .unwrap_or("Running");
                let completions = match (spec.completions, spec.parallelism.unwrap_or(1)) {
                    (Some(c), _) => format!("{}/{c}", st.succeeded),
                    (None, p) if p > 1 => format!("{}/1 of {p}", st.succeeded),
                    (None, _) => format!("{}/1", st.succeeded),
                };
                let duration = match DateTime::parse_from_rfc3339(&st.start_time) {
                    Ok(start) => {
                        let end = DateTime::parse_from_rfc3339(&st.completion_time)
                            .map(|t| t.with_timezone(&Utc))
                            .unwrap_or(now);
                        age(&start.to_rfc3339(), end)
                    }
                    Err(_) => String::new(),
                };
                rows.push(with_ns(
                    vec![
                        meta.name.clone(),
                        status.into(),
                        completions,
                        duration,
                        age(&meta.creation_timestamp, now),
                    ],
                    &meta.namespace,
                ));
            }
        }
        api::Kind::CronJob => {
            rows.push(with_ns(
                [
                    "NAME",
                    "SCHEDULE",
                    "TIMEZONE",
                    "SUSPEND",
                    "ACTIVE",
                    "LAST SCHEDULE",
                    "AGE",
                ]
                .map(String::from)
                .to_vec(),
                "NAMESPACE",
            ));
            for o in objects {
                let Some(cj) = o.as_typed::<v1::CronJob>() else {
                    continue;
                };
                let meta = o.metadata();
                let spec = cj.spec.clone().unwrap_or_default();
                let st = cj.status.clone().unwrap_or_default();
                let last = if st.last_schedule_time.is_empty() {
                    "<none>".into()
                } else {
                    age(&st.last_schedule_time, now)
                };
                rows.push(with_ns(
                    vec![
                        meta.name.clone(),
                        spec.schedule,
                        spec.time_zone.unwrap_or_else(|| "<none>".into()),
                        spec.suspend.unwrap_or(false).to_string(),
                        st.active.len().to_string(),
                        last,
                        age(&meta.creation_timestamp, now),
                    ],
                    &meta.namespace,
                ));
            }
        }
        // Kinds without a table of their own yet: name and age.
        _ => {
            rows.push(with_ns(vec!["NAME".into(), "AGE".into()], "NAMESPACE"));
            for o in objects {
                let meta = o.metadata();
                rows.push(with_ns(
                    vec![meta.name.clone(), age(&meta.creation_timestamp, now)],
                    &meta.namespace,
                ));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        assert_eq!(age("2026-01-01T23:59:55Z", now), "5s");
        assert_eq!(age("2026-01-01T23:50:00Z", now), "10m");
        assert_eq!(age("2026-01-01T12:00:00Z", now), "12h");
        assert_eq!(age("2025-12-28T00:00:00Z", now), "5d");
        assert_eq!(age("nonsense", now), "<unknown>");
    }

    #[test]
    fn job_and_cronjob_tables_have_kubectls_columns() {
        let job = v1::Job {
            metadata: Some(v1::ObjectMeta {
                name: "pi".into(),
                ..Default::default()
            }),
            spec: Some(v1::JobSpec {
                completions: Some(5),
                ..Default::default()
            }),
            status: Some(v1::JobStatus {
                succeeded: 5,
                start_time: "2026-01-01T00:00:00Z".into(),
                completion_time: "2026-01-01T00:00:42Z".into(),
                conditions: vec![v1::JobCondition {
                    r#type: "Complete".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let rows = table(api::Kind::Job, &[Object::from(job)], false, false);
        assert_eq!(
            rows[0],
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
        );
        assert_eq!(rows[1][..4], ["pi", "Complete", "5/5", "42s"]);
        let cj = v1::CronJob {
            metadata: Some(v1::ObjectMeta {
                name: "tick".into(),
                ..Default::default()
            }),
            spec: Some(v1::CronJobSpec {
                schedule: "*/1 * * * *".into(),
                suspend: Some(false),
                ..Default::default()
            }),
            status: None,
        };
        let rows = table(api::Kind::CronJob, &[Object::from(cj)], false, false);
        assert_eq!(
            rows[0][..6],
            [
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE"
            ]
        );
        assert_eq!(
            rows[1][..6],
            ["tick", "*/1 * * * *", "<none>", "false", "0", "<none>"]
        );
    }
}
