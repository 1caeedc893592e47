//! Generates `capstan.v1` Rust types, the tonic server and client from `proto/`.
//!
//! Object-model messages (everything outside `api.proto`) also get serde derives with
//! Kubernetes JSON naming, so manifests decode straight into the protobuf types. The
//! attributes are derived from the descriptor set, not hand-listed, so a new field can't
//! silently miss its `skip_serializing_if`.

use std::path::PathBuf;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

const PACKAGE: &str = "capstan.v1";
/// The service file: its messages embed the `Object` oneof envelope, which has
/// hand-written manifest handling, so they get no serde derives.
const SERVICE_FILE: &str = "capstan/v1/api.proto";
const MESSAGE_SERDE: &str = "#[derive(serde::Serialize, serde::Deserialize)]\n\
     #[serde(rename_all = \"camelCase\", default, deny_unknown_fields)]";

/// Kubernetes JSON names that plain camelCase does not produce ("hostIP", not "hostIp").
const RENAMES: &[(&str, &str, &str)] = &[
    ("NodeSpec", "pod_cidr", "podCIDR"),
    ("NodeSystemInfo", "machine_id", "machineID"),
    ("PodStatus", "host_ip", "hostIP"),
    ("PodStatus", "pod_ip", "podIP"),
    ("ContainerStatus", "container_id", "containerID"),
    ("ServiceSpec", "cluster_ip", "clusterIP"),
    ("ServiceSpec", "cluster_ips", "clusterIPs"),
    ("ServiceSpec", "external_ips", "externalIPs"),
    ("ServiceSpec", "load_balancer_ip", "loadBalancerIP"),
    ("SessionAffinityConfig", "client_ip", "clientIP"),
    ("PolicyRule", "non_resource_urls", "nonResourceURLs"),
    ("Volume", "downward_api", "downwardAPI"),
    ("VolumeProjection", "downward_api", "downwardAPI"),
];

/// Byte maps are base64 strings in YAML and JSON, as Kubernetes writes them.
const BASE64_FIELDS: &[(&str, &str)] = &[("Secret", "data"), ("ConfigMap", "binary_data")];
const BASE64_WITH: &str = "crate::encoding::base64_map";

/// Messages whose JSON shape is not a struct get hand-written serde impls in
/// `src/encoding.rs` instead of the derives.
const HAND_SERDE: &[&str] = &["IntOrString"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let protos: Vec<PathBuf> = [
        "meta",
        "namespace",
        "node",
        "pod",
        "apps",
        "batch",
        "service",
        "config",
        "cluster",
        "rbac",
        "storage",
        "api",
    ]
    .iter()
    .map(|f| root.join("capstan/v1").join(format!("{f}.proto")))
    .collect();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let fds = prost_build::Config::new().load_fds(&protos, &[&root])?;
    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".");
    for (path, attr) in serde_attributes(&fds) {
        builder = match attr {
            Attr::Message(a) => builder.message_attribute(path, a),
            Attr::Field(a) => builder.field_attribute(path, a),
        };
    }
    builder.compile_fds(fds)?;
    Ok(())
}

enum Attr {
    Message(String),
    Field(String),
}

fn serde_attributes(fds: &FileDescriptorSet) -> Vec<(String, Attr)> {
    let mut out = Vec::new();
    for file in &fds.file {
        if file.package() != PACKAGE || file.name() == SERVICE_FILE {
            continue;
        }
        for msg in &file.message_type {
            if HAND_SERDE.contains(&msg.name()) {
                continue;
            }
            let path = format!(".{PACKAGE}.{}", msg.name());
            out.push((path.clone(), Attr::Message(MESSAGE_SERDE.to_string())));
            for field in &msg.field {
                let mut attrs = Vec::new();
                if let Some(skip) = skip_if(msg, field) {
                    attrs.push(format!("skip_serializing_if = \"{skip}\""));
                }
                if let Some((_, _, json)) = RENAMES
                    .iter()
                    .find(|(m, f, _)| *m == msg.name() && *f == field.name())
                {
                    attrs.push(format!("rename = \"{json}\""));
                }
                if BASE64_FIELDS.contains(&(msg.name(), field.name())) {
                    attrs.push(format!("with = \"{BASE64_WITH}\""));
                }
                if !attrs.is_empty() {
                    out.push((
                        format!("{path}.{}", field.name()),
                        Attr::Field(format!("#[serde({})]", attrs.join(", "))),
                    ));
                }
            }
        }
    }
    out
}

/// Empty strings, lists, maps and unset messages are omitted on output, as in
/// Kubernetes; numbers and bools are always written.
fn skip_if(
    msg: &DescriptorProto,
    field: &prost_types::FieldDescriptorProto,
) -> Option<&'static str> {
    if field.label() == Label::Repeated {
        let is_map = field.r#type() == Type::Message
            && msg.nested_type.iter().any(|n| {
                n.options.as_ref().is_some_and(|o| o.map_entry())
                    && field.type_name().ends_with(&format!(".{}", n.name()))
            });
        return Some(if is_map {
            "::std::collections::BTreeMap::is_empty"
        } else {
            "::std::vec::Vec::is_empty"
        });
    }
    if field.proto3_optional() || field.r#type() == Type::Message {
        return Some("::std::option::Option::is_none");
    }
    if field.r#type() == Type::String {
        return Some("::std::string::String::is_empty");
    }
    None
}
