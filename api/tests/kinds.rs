//! The kinds beyond Pod/Node/Namespace against realistic manifests in `tests/data/`:
//! decoding, lossless round trips (YAML, JSON, protobuf), defaulting and validation
//! errors that name the field.

use api::manifest::{decode, decode_one, to_json, to_yaml};
use api::{defaults, v1, validation, Error, Kind};

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn all_objects() -> Vec<v1::Object> {
    ["workloads.yaml", "services-config.yaml"]
        .into_iter()
        .flat_map(|f| decode(&data(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

fn fields(obj: &v1::Object) -> Vec<String> {
    validation::validate(obj)
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn every_new_kind_has_a_realistic_manifest_that_decodes() {
    let objs = all_objects();
    let kinds: std::collections::BTreeSet<Kind> = objs.iter().filter_map(|o| o.kind()).collect();
    for k in Kind::ALL {
        if matches!(k, Kind::Pod | Kind::Node | Kind::Namespace) {
            continue;
        }
        assert!(kinds.contains(&k), "no sample manifest for {k}");
    }
}

#[test]
fn manifests_round_trip_losslessly_through_yaml_json_and_protobuf() {
    for obj in all_objects() {
        let name = format!("{}/{}", obj.kind().unwrap(), obj.name());
        let yaml = to_yaml(&obj).unwrap();
        assert_eq!(decode_one(&yaml).unwrap(), obj, "{name} via YAML:\n{yaml}");
        let json = to_json(&obj).unwrap();
        assert_eq!(decode_one(&json).unwrap(), obj, "{name} via JSON:\n{json}");
        let bytes = obj.to_bytes();
        assert_eq!(
            v1::Object::from_bytes(&bytes).unwrap(),
            obj,
            "{name} via protobuf"
        );
        let kind = obj.kind().unwrap();
        assert!(
            yaml.starts_with(&format!(
                "apiVersion: {}\nkind: {kind}\n",
                kind.api_version()
            )),
            "{yaml}"
        );
    }
}

#[test]
fn realistic_manifests_are_valid_before_and_after_defaulting() {
    for mut obj in all_objects() {
        let name = format!("{}/{}", obj.kind().unwrap(), obj.name());
        assert_eq!(validation::validate(&obj), vec![], "{name}");
        defaults::apply(&mut obj);
        assert_eq!(validation::validate(&obj), vec![], "{name} after defaults");
        let once = obj.clone();
        defaults::apply(&mut obj);
        assert_eq!(obj, once, "{name}: defaulting is idempotent");
    }
}

#[test]
fn deployment_fields_decode_with_kubernetes_names() {
    let objs = decode(&data("workloads.yaml")).unwrap();
    let d: &v1::Deployment = objs[0].as_typed().unwrap();
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let ru = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(ru.max_surge.as_ref().unwrap().as_int(), Some(1));
    assert_eq!(ru.max_unavailable.as_ref().unwrap().as_str(), Some("25%"));
    let sel = spec.selector.as_ref().unwrap();
    assert_eq!(sel.match_expressions[0].operator, "In");
    let pod = spec.template.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(pod.init_containers[0].name, "migrate");
    let web = &pod.containers[0];
    let live = web.liveness_probe.as_ref().unwrap();
    let port = live.http_get.as_ref().unwrap().port.as_ref().unwrap();
    assert_eq!(port.as_str(), Some("http"));
    assert_eq!(live.failure_threshold, 4);
    assert_eq!(
        web.startup_probe
            .as_ref()
            .unwrap()
            .grpc
            .as_ref()
            .unwrap()
            .service
            .as_deref(),
        Some("web")
    );
    assert_eq!(
        web.lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .sleep
            .as_ref()
            .unwrap()
            .seconds,
        5
    );
    assert_eq!(
        web.env[1]
            .value_from
            .as_ref()
            .unwrap()
            .resource_field_ref
            .as_ref()
            .unwrap()
            .divisor,
        "1Mi"
    );
    assert_eq!(web.env_from[0].prefix, "APP_");
    assert_eq!(
        pod.volumes[3].downward_api.as_ref().unwrap().items[0].path,
        "labels"
    );
    assert_eq!(pod.volumes[4].projected.as_ref().unwrap().sources.len(), 4);
    assert_eq!(pod.security_context.as_ref().unwrap().fs_group, Some(2000));
    assert_eq!(
        pod.volumes[0].config_map.as_ref().unwrap().items[0].mode,
        Some(0o644)
    );
}

#[test]
fn secret_data_is_base64_in_yaml_and_bytes_in_the_object() {
    let objs = decode(&data("services-config.yaml")).unwrap();
    let secret = objs
        .iter()
        .find_map(|o| o.as_typed::<v1::Secret>())
        .unwrap();
    assert_eq!(secret.data["tls.crt"], b"-----BEGIN CERTIFICATE-----\n");
    let yaml = to_yaml(&v1::Object::from(secret.clone())).unwrap();
    assert!(
        yaml.contains("tls.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="),
        "{yaml}"
    );
    let cm = objs
        .iter()
        .find_map(|o| o.as_typed::<v1::ConfigMap>())
        .unwrap();
    assert_eq!(cm.binary_data["logo.png"], b"\x89PNG\r\n\x1a\n");

    let err = decode(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {password: 'not base64!'}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Decode { path, reason, .. } if path == "data" && reason.contains("password")),
        "{err:?}"
    );
}

#[test]
fn string_data_is_merged_into_data_by_defaulting() {
    let mut obj = decode_one(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {user: YWRtaW4=}\nstringData: {password: hunter2}\n",
    )
    .unwrap();
    defaults::apply(&mut obj);
    let s: &v1::Secret = obj.as_typed().unwrap();
    assert_eq!(s.r#type, "Opaque");
    assert_eq!(s.data["user"], b"admin");
    assert_eq!(s.data["password"], b"hunter2");
    assert!(s.string_data.is_empty());
    assert_eq!(obj.namespace(), "default");
}

#[test]
fn wrong_group_for_a_kind_is_an_error_naming_api_version() {
    for (api_version, kind) in [
        ("v1", "Deployment"),
        ("extensions/v1beta1", "Deployment"),
        ("apps/v1", "Job"),
        ("batch/v1", "Service"),
        ("v1", "Lease"),
        ("v1", "Role"),
        ("v1", "StorageClass"),
        ("apps/v1", "ConfigMap"),
    ] {
        let err = decode(&format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n"
        ))
        .unwrap_err();
        assert!(
            matches!(&err, Error::ApiVersion { found, .. } if found == api_version),
            "{kind}: {err:?}"
        );
        assert!(err.to_string().starts_with("apiVersion:"), "{err}");
    }
}

#[test]
fn deployment_defaults_match_kubernetes() {
    let mut obj = decode_one(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    )
    .unwrap();
    defaults::apply(&mut obj);
    let d: &v1::Deployment = obj.as_typed().unwrap();
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let strategy = spec.strategy.as_ref().unwrap();
    assert_eq!(strategy.r#type, "RollingUpdate");
    let ru = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(ru.max_surge.as_ref().unwrap().as_str(), Some("25%"));
    assert_eq!(ru.max_unavailable.as_ref().unwrap().as_str(), Some("25%"));
    let pod = spec.template.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy, "Always");
    assert_eq!(pod.containers[0].image_pull_policy, "Always");
    assert_eq!(obj.namespace(), "default");
    assert_eq!(validation::validate(&obj), vec![]);
}

#[test]
fn service_defaults_fill_type_protocol_and_target_port() {
    let mut obj = decode_one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: s}, ports: [{port: 80}]}\n",
    )
    .unwrap();
    defaults::apply(&mut obj);
    let spec = obj
        .as_typed::<v1::Service>()
        .unwrap()
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(spec.r#type, "ClusterIP");
    assert_eq!(spec.session_affinity, "None");
    assert_eq!(spec.ports[0].protocol, "TCP");
    assert_eq!(spec.ports[0].target_port, Some(v1::IntOrString::int(80)));
}

#[test]
fn selector_must_match_template_labels() {
    let mut obj = decode(&data("workloads.yaml")).unwrap().remove(0);
    let d: &mut v1::Deployment = obj.as_typed_mut().unwrap();
    let template = d.spec.as_mut().unwrap().template.as_mut().unwrap();
    template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("tier".into(), "backend".into());
    assert_eq!(fields(&obj), ["spec.template.metadata.labels"]);
    let err = validation::validate(&obj).remove(0);
    assert!(err.reason.contains("does not match"), "{}", err.reason);

    let d: &mut v1::Deployment = obj.as_typed_mut().unwrap();
    d.spec.as_mut().unwrap().selector = Some(v1::LabelSelector::default());
    assert_eq!(fields(&obj), ["spec.selector"]);
}

#[test]
fn workload_validation_names_each_bad_field() {
    let objs = decode(&data("workloads.yaml")).unwrap();
    let mut d = objs[0].clone();
    {
        let spec = d
            .as_typed_mut::<v1::Deployment>()
            .unwrap()
            .spec
            .as_mut()
            .unwrap();
        spec.replicas = Some(-1);
        spec.revision_history_limit = Some(-2);
        let ru = spec
            .strategy
            .as_mut()
            .unwrap()
            .rolling_update
            .as_mut()
            .unwrap();
        ru.max_surge = Some(v1::IntOrString::string("150%"));
        ru.max_unavailable = Some(v1::IntOrString::string("many"));
        let pod = spec.template.as_mut().unwrap().spec.as_mut().unwrap();
        pod.restart_policy = "Never".into();
        pod.containers[0].volume_mounts[0].name = "missing".into();
        pod.containers[0]
            .liveness_probe
            .as_mut()
            .unwrap()
            .tcp_socket = Some(v1::TcpSocketAction {
            port: Some(v1::IntOrString::int(70000)),
            host: String::new(),
        });
        pod.volumes[1].host_path = Some(v1::HostPathVolumeSource {
            path: "relative".into(),
            r#type: String::new(),
        });
    }
    assert_eq!(
        fields(&d),
        [
            "spec.replicas",
            "spec.revisionHistoryLimit",
            "spec.strategy.rollingUpdate.maxSurge",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "spec.template.spec.volumes[1]",
            "spec.template.spec.volumes[1].hostPath.path",
            "spec.template.spec.containers[0].volumeMounts[0].name",
            "spec.template.spec.containers[0].livenessProbe",
            "spec.template.spec.containers[0].livenessProbe.tcpSocket.port",
            "spec.template.spec.restartPolicy",
        ]
    );

    let mut job = objs[4].clone();
    {
        let spec = job
            .as_typed_mut::<v1::Job>()
            .unwrap()
            .spec
            .as_mut()
            .unwrap();
        spec.completions = None;
        spec.template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .restart_policy = String::new();
    }
    assert_eq!(
        fields(&job),
        ["spec.completions", "spec.template.spec.restartPolicy"]
    );

    let mut cj = objs[5].clone();
    {
        let spec = cj
            .as_typed_mut::<v1::CronJob>()
            .unwrap()
            .spec
            .as_mut()
            .unwrap();
        spec.schedule = "every day".into();
        spec.concurrency_policy = "Sometimes".into();
        let job = spec.job_template.as_mut().unwrap().spec.as_mut().unwrap();
        job.backoff_limit = Some(-1);
    }
    assert_eq!(
        fields(&cj),
        [
            "spec.schedule",
            "spec.concurrencyPolicy",
            "spec.jobTemplate.spec.backoffLimit"
        ]
    );
}

#[test]
fn service_validation_checks_ports_node_ports_and_types() {
    let svc = |spec: &str| {
        decode_one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {spec}\n"
        ))
        .unwrap()
    };
    assert_eq!(
        fields(&svc(
            "{ports: [{name: a, port: 0}, {name: a, port: 70000}]}"
        )),
        [
            "spec.ports[0].port",
            "spec.ports[1].name",
            "spec.ports[1].port"
        ]
    );
    assert_eq!(
        fields(&svc("{type: NodePort, ports: [{port: 80, nodePort: 80}]}")),
        ["spec.ports[0].nodePort"]
    );
    assert_eq!(
        fields(&svc("{ports: [{port: 80, nodePort: 30080}]}")),
        ["spec.ports[0].nodePort"],
        "nodePort needs type NodePort"
    );
    assert_eq!(fields(&svc("{type: NodePort, ports: [{port: 80, nodePort: 30000}, {name: b, port: 81, nodePort: 32767}]}")), ["spec.ports[0].name"]);
    assert_eq!(fields(&svc("{type: ExternalName}")), ["spec.externalName"]);
    assert_eq!(
        fields(&svc("{type: Magic, ports: [{port: 1}]}")),
        ["spec.type"]
    );
    assert_eq!(
        fields(&svc("{clusterIP: None}")),
        Vec::<String>::new(),
        "headless without ports"
    );
    assert_eq!(
        fields(&svc("{clusterIP: 10.96.0.300, ports: [{port: 1}]}")),
        ["spec.clusterIP"]
    );
    assert_eq!(
        fields(&svc("{ports: [{port: 1, targetPort: Not_A_Name}]}")),
        ["spec.ports[0].targetPort"]
    );
    let bad_name = decode_one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec: {ports: [{port: 1}]}\n",
    )
    .unwrap();
    assert_eq!(fields(&bad_name), ["metadata.name"]);
}

#[test]
fn config_keys_and_secret_types_are_checked() {
    let cm = decode_one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'a/b': x, ok.key: y}\nbinaryData: {ok.key: eA==}\n").unwrap();
    assert_eq!(fields(&cm), ["data[a/b]", "binaryData[ok.key]"]);
    let s = decode_one("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: eA==}\n").unwrap();
    assert_eq!(fields(&s), ["data[tls.key]"]);
}

#[test]
fn resources_must_be_quantities_with_requests_within_limits() {
    let pod = decode_one(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests: {cpu: '2', memory: lots}\n      limits: {cpu: 1500m, memory: -1Gi}\n",
    )
    .unwrap();
    let errs = validation::validate(&pod);
    let got: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        got,
        [
            "spec.containers[0].resources.limits[memory]",
            "spec.containers[0].resources.requests[memory]",
            "spec.containers[0].resources.requests[cpu]",
        ],
        "{errs:#?}"
    );
    assert!(errs[2].reason.contains("1500m"), "{}", errs[2].reason);

    let pvc = decode_one("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteSometimes], resources: {requests: {storage: 1.5.Gi}}}\n").unwrap();
    assert_eq!(
        fields(&pvc),
        ["spec.accessModes[0]", "spec.resources.requests[storage]"]
    );
}

#[test]
fn rbac_and_storage_validation_name_the_field() {
    let rb = decode_one("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nsubjects: [{kind: Robot, name: r}]\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: x}\n").unwrap();
    assert_eq!(fields(&rb), ["roleRef.kind", "subjects[0].kind"]);
    let role = decode_one("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: a}\nrules: [{nonResourceURLs: [/metrics], verbs: [get]}, {resources: [pods]}]\n").unwrap();
    assert_eq!(
        fields(&role),
        [
            "rules[0].nonResourceURLs",
            "rules[1].verbs",
            "rules[1].apiGroups"
        ]
    );
    let pv = decode_one("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: v, namespace: shop}\nspec: {accessModes: [ReadWriteOnce], capacity: {storage: 1Gi}}\n").unwrap();
    assert_eq!(fields(&pv), ["metadata.namespace", "spec"]);
}

#[test]
fn typed_access_sees_through_the_envelope() {
    let objs = all_objects();
    let lease = objs.iter().find_map(|o| o.as_typed::<v1::Lease>()).unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("n1_4f1c")
    );
    let obj = v1::Object::new(lease.clone());
    assert_eq!(obj.kind(), Some(Kind::Lease));
    assert_eq!(obj.name(), "capstan-scheduler");
    assert!(obj.as_typed::<v1::Pod>().is_none());
    assert_eq!(obj.into_typed::<v1::Lease>().as_ref(), Some(lease));
}
