//! Manifest decoding and encoding against the sample manifests in `tests/data/`.

use api::manifest::{decode, decode_one, to_json, to_json_list, to_yaml, to_yaml_all};
use api::{v1, Error, Kind};

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decode_err(input: &str) -> Error {
    match decode(input) {
        Ok(objs) => panic!("expected an error, decoded {objs:?}"),
        Err(e) => e,
    }
}

#[test]
fn realistic_pod_decodes_into_typed_fields() {
    let obj = decode_one(&data("pod.yaml")).unwrap();
    assert_eq!(obj.kind(), Some(Kind::Pod));
    let pod = obj.as_pod().unwrap();
    let meta = pod.metadata.as_ref().unwrap();
    assert_eq!(meta.name, "web");
    assert_eq!(meta.namespace, "shop");
    assert_eq!(meta.labels["app.kubernetes.io/part-of"], "shop");
    assert_eq!(meta.annotations["example.com/owner"], "team-a");
    assert_eq!(meta.creation_timestamp, "", "null means unset");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy, "OnFailure");
    assert_eq!(spec.termination_grace_period_seconds, Some(10));
    assert_eq!(spec.node_selector["disk"], "ssd");
    assert_eq!(spec.hostname, "web-0");
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(spec.containers.len(), 2);
    let server = &spec.containers[0];
    assert_eq!(server.image, "docker.io/library/nginx:1.25");
    assert_eq!(server.command, ["/bin/sh", "-c"]);
    assert_eq!(server.args, ["exec nginx -g 'daemon off;'"]);
    assert_eq!(server.working_dir, "/srv");
    assert_eq!(server.ports[0].name, "http");
    assert_eq!(server.ports[0].container_port, 80);
    assert_eq!(server.ports[1].host_port, 19090);
    assert_eq!(server.env[0].name, "MODE");
    assert_eq!(server.env[0].value, "production");
    assert_eq!(server.env[1].value, "");
    let res = server.resources.as_ref().unwrap();
    assert_eq!(res.requests["cpu"], "250m");
    assert_eq!(res.limits["memory"], "128Mi");
    assert_eq!(spec.containers[1].command, ["sleep", "3600"]);
    assert!(api::validation::validate(&obj).is_empty());
}

#[test]
fn node_and_namespace_decode_with_kubernetes_field_names() {
    let node = decode_one(&data("node.yaml")).unwrap();
    let node = node.as_node().unwrap();
    assert_eq!(node.spec.as_ref().unwrap().pod_cidr, "10.244.1.0/24");
    let status = node.status.as_ref().unwrap();
    assert_eq!(status.capacity["pods"], "110");
    assert_eq!(status.allocatable["memory"], "7Gi");
    assert_eq!(status.conditions[0].r#type, "Ready");
    assert_eq!(
        status.conditions[0].last_heartbeat_time,
        "2026-01-02T03:04:05Z"
    );
    assert_eq!(status.addresses[0].address, "10.0.0.11");
    let info = status.node_info.as_ref().unwrap();
    assert_eq!(info.machine_id, "0123456789abcdef");
    assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");

    let ns = decode_one(&data("namespace.yaml")).unwrap();
    assert_eq!(ns.kind(), Some(Kind::Namespace));
    assert_eq!(ns.name(), "shop");
    assert_eq!(
        ns.as_namespace().unwrap().spec.as_ref().unwrap().finalizers,
        ["kubernetes"]
    );
}

#[test]
fn json_pod_with_status_decodes() {
    let obj = decode_one(&data("pod-with-status.json")).unwrap();
    let pod = obj.as_pod().unwrap();
    let meta = pod.metadata.as_ref().unwrap();
    assert_eq!(meta.generation, 1);
    assert_eq!(meta.owner_references[0].controller, Some(true));
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.host_ip, "10.0.0.11");
    assert_eq!(status.pod_ip, "10.244.1.7");
    let cs = &status.container_statuses[0];
    assert_eq!(cs.container_id, "capstan://abc123");
    assert_eq!(cs.restart_count, 2);
    assert!(cs.state.as_ref().unwrap().running.is_some());
    let term = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((term.exit_code, term.signal), (137, 9));
    assert_eq!(
        pod.spec.as_ref().unwrap().termination_grace_period_seconds,
        Some(0)
    );
}

#[test]
fn multi_document_yaml_skips_empty_documents() {
    let objs = decode(&data("multi.yaml")).unwrap();
    let kinds: Vec<_> = objs
        .iter()
        .map(|o| (o.kind().unwrap(), o.name().to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Kind::Namespace, "team-a".into()),
            (Kind::Pod, "hello".into())
        ]
    );
    assert!(decode_one(&data("multi.yaml")).is_err());
}

#[test]
fn encode_then_decode_is_lossless() {
    for file in [
        "pod.yaml",
        "node.yaml",
        "namespace.yaml",
        "multi.yaml",
        "pod-with-status.json",
    ] {
        let objs = decode(&data(file)).unwrap();
        let yaml = to_yaml_all(&objs).unwrap();
        assert_eq!(decode(&yaml).unwrap(), objs, "{file} via YAML:\n{yaml}");
        for obj in &objs {
            let json = to_json(obj).unwrap();
            assert_eq!(&decode_one(&json).unwrap(), obj, "{file} via JSON:\n{json}");
        }
        let list = to_json_list(&objs).unwrap();
        assert_eq!(decode(&list).unwrap(), objs, "{file} via JSON List");
    }
}

#[test]
fn encoding_is_kubernetes_shaped() {
    let obj = decode_one(&data("pod-with-status.json")).unwrap();
    let yaml = to_yaml(&obj).unwrap();
    assert!(
        yaml.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n"),
        "{yaml}"
    );
    // Kubernetes JSON names, not plain camelCase.
    for needle in [
        "hostIP: 10.0.0.11",
        "podIP: 10.244.1.7",
        "containerID: capstan://abc123",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
    // Numbers and bools are written even when zero/false; empty message kept as {}.
    for needle in [
        "terminationGracePeriodSeconds: 0",
        "hostNetwork: true",
        "running: {}",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
    // Empty strings, lists, maps and unset messages are omitted.
    for absent in [
        "labels",
        "annotations",
        "generateName",
        "message",
        "hostname",
        "null",
        "''",
        "[]",
    ] {
        assert!(!yaml.contains(absent), "unexpected {absent:?} in\n{yaml}");
    }

    let node = decode_one(&data("node.yaml")).unwrap();
    let json = to_json(&node).unwrap();
    assert!(json.contains("\"podCIDR\": \"10.244.1.0/24\""), "{json}");
    assert!(json.contains("\"machineID\""), "{json}");
    assert!(json.contains("\"unschedulable\": false"), "{json}");
}

#[test]
fn unknown_field_is_reported_with_its_path() {
    let yaml = data("pod.yaml").replacen("image: busybox", "imagee: busybox", 1);
    match decode_err(&yaml) {
        Error::Decode {
            document,
            path,
            reason,
        } => {
            assert_eq!(document, 0);
            assert_eq!(path, "spec.containers[1].imagee");
            assert!(reason.contains("unknown field"), "{reason}");
        }
        e => panic!("wrong error {e:?}"),
    }
    let first = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    imagee: busybox\n";
    let err = decode_err(first);
    let msg = err.to_string();
    assert!(
        msg.contains("spec.containers[0].imagee: unknown field"),
        "{msg}"
    );
}

#[test]
fn wrong_type_is_reported_with_its_path() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - containerPort: eighty\n";
    match decode_err(yaml) {
        Error::Decode { path, reason, .. } => {
            assert_eq!(path, "spec.containers[0].ports[0].containerPort");
            assert!(reason.contains("invalid type"), "{reason}");
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn errors_in_later_documents_name_the_document() {
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Node\nmetadata: {{name: n}}\nspec: {{podCidr: x}}\n",
        data("namespace.yaml")
    );
    match decode_err(&yaml) {
        Error::Decode { document, path, .. } => {
            assert_eq!((document, path.as_str()), (1, "spec.podCidr"))
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn unknown_kind_is_an_error_naming_kind() {
    let err = decode_err("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: d}\n");
    assert!(
        matches!(&err, Error::UnknownKind { kind } if kind == "Ingress"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("kind:"), "{err}");
    let err = decode_err("apiVersion: v1\nmetadata: {name: d}\n");
    assert!(
        matches!(&err, Error::Decode { path, .. } if path == "kind"),
        "{err:?}"
    );
    // Manifests use the Kind name exactly; kubectl aliases are for the command line.
    assert!(matches!(
        decode_err("apiVersion: v1\nkind: pod\n"),
        Error::UnknownKind { .. }
    ));
}

#[test]
fn api_version_must_match_the_kind() {
    let err = decode_err("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: p}\n");
    assert!(
        matches!(&err, Error::ApiVersion { found, .. } if found == "apps/v1"),
        "{err:?}"
    );
    let err = decode_err("kind: Pod\nmetadata: {name: p}\n");
    assert!(
        matches!(&err, Error::Decode { path, .. } if path == "apiVersion"),
        "{err:?}"
    );
}

#[test]
fn syntax_errors_and_non_objects_are_rejected() {
    assert!(matches!(
        decode_err("apiVersion: v1\nkind: [Pod\n"),
        Error::Syntax { .. }
    ));
    assert!(matches!(
        decode_err("{\"apiVersion\": \"v1\",}"),
        Error::Syntax { .. }
    ));
    assert!(matches!(decode_err("- a\n- b\n"), Error::Decode { .. }));
    assert_eq!(decode("").unwrap(), Vec::<v1::Object>::new());
}

#[test]
fn json_value_is_kubernetes_shaped_and_decodes_back() {
    let obj = decode_one(&data("pod.yaml")).unwrap();
    let value = api::manifest::to_json_value(&obj).unwrap();
    assert_eq!(value["apiVersion"], "v1");
    assert_eq!(value["kind"], "Pod");
    assert_eq!(
        value["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    assert!(value["status"].is_null(), "unset status is omitted");
    let text = serde_json::to_string(&value).unwrap();
    assert_eq!(decode_one(&text).unwrap(), obj);
}
