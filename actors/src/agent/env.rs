//! A container's environment as Kubernetes builds it (pure): the Service variables first, then
//! `envFrom` sources in order (ConfigMap or Secret keys, with an optional prefix), then `env`
//! in order, each value either literal with `$(VAR)` references expanded against what is
//! defined so far (`$$` escapes) or taken from a ConfigMap or Secret key, a pod field or a
//! container resource. The same expansion applies to `command` and `args`.

use std::collections::BTreeMap;

use api::v1;

use super::volumes::plan::{field_value, resource_value, Fetched};

/// What the environment can refer to beyond the pod object itself.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// The node's address (`status.hostIP`).
    pub host_ip: String,
    /// The pod's address (`status.podIP`), empty without a pod network.
    pub pod_ip: String,
    /// The node's name (`spec.nodeName`).
    pub node_name: String,
}

/// The container's final environment in order, or why it cannot be built (for the
/// container's `CreateContainerConfigError` message).
pub fn container_env(
    pod: &v1::Pod,
    c: &v1::Container,
    fetched: &Fetched,
    facts: &PodFacts,
    service: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for (name, value) in service {
        set(&mut env, name, value);
    }
    for source in &c.env_from {
        let data = if let Some(cm) = &source.config_map_ref {
            config_map(fetched, &cm.name, cm.optional)?
        } else if let Some(s) = &source.secret_ref {
            secret(fetched, &s.name, s.optional)?
        } else {
            return Err("envFrom: one of configMapRef and secretRef must be set".into());
        };
        for (key, value) in data.unwrap_or_default() {
            set(&mut env, format!("{}{key}", source.prefix), value);
        }
    }
    for var in &c.env {
        let value = match &var.value_from {
            None => expand(&var.value, &env),
            Some(from) => value_from(pod, from, fetched, facts)
                .map_err(|reason| format!("env {:?}: {reason}", var.name))?
                .unwrap_or_default(),
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// `command` or `args` with `$(VAR)` references expanded against `env`.
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    words.iter().map(|w| expand(w, env)).collect()
}

/// Kubernetes' expansion: `$(NAME)` of a defined variable becomes its value, `$$` becomes
/// `$`, anything else (an undefined name, a lone `$`) stays as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(n, _)| n == name) {
                        Some((_, value)) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn value_from(
    pod: &v1::Pod,
    from: &v1::EnvVarSource,
    fetched: &Fetched,
    facts: &PodFacts,
) -> Result<Option<String>, String> {
    if let Some(r) = &from.config_map_key_ref {
        let data = config_map(fetched, &r.name, r.optional)?;
        return key(data, &r.key, "ConfigMap", &r.name, r.optional);
    }
    if let Some(r) = &from.secret_key_ref {
        let data = secret(fetched, &r.name, r.optional)?;
        return key(data, &r.key, "Secret", &r.name, r.optional);
    }
    if let Some(f) = &from.field_ref {
        let spec = pod.spec.clone().unwrap_or_default();
        let value = match f.field_path.as_str() {
            "spec.nodeName" => facts.node_name.clone(),
            "spec.serviceAccountName" => spec.service_account_name,
            "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
            "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
            path => field_value(pod, path)
                .ok_or_else(|| format!("fieldRef.fieldPath {path:?} is not supported"))?,
        };
        return Ok(Some(value));
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_value(&pod.spec.clone().unwrap_or_default(), r)
            .map(Some)
            .map_err(|e| format!("resourceFieldRef: {e}"));
    }
    Err("valueFrom: no source is set".into())
}

fn key(
    data: Option<BTreeMap<String, String>>,
    key: &str,
    kind: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<String>, String> {
    match data.map(|d| d.get(key).cloned()) {
        Some(Some(value)) => Ok(Some(value)),
        _ if optional.unwrap_or(false) => Ok(None),
        Some(None) => Err(format!("couldn't find key {key} in {kind} {name:?}")),
        None => Ok(None),
    }
}

fn config_map(
    fetched: &Fetched,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, String>>, String> {
    match fetched.config_map_data(name) {
        Some(data) => Ok(Some(as_text(data))),
        None if optional.unwrap_or(false) => Ok(None),
        None => Err(format!("configmap {name:?} not found")),
    }
}

fn secret(
    fetched: &Fetched,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, String>>, String> {
    match fetched.secret_data(name) {
        Some(data) => Ok(Some(as_text(data))),
        None if optional.unwrap_or(false) => Ok(None),
        None => Err(format!("secret {name:?} not found")),
    }
}

/// Values as environment text (invalid UTF-8 replaced, as the kubelet's conversion does).
fn as_text(data: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    data.into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &str) -> v1::EnvVar {
        v1::EnvVar {
            name: name.into(),
            value: value.into(),
            value_from: None,
        }
    }

    fn from(name: &str, source: v1::EnvVarSource) -> v1::EnvVar {
        v1::EnvVar {
            name: name.into(),
            value: String::new(),
            value_from: Some(source),
        }
    }

    fn fetched() -> Fetched {
        Fetched {
            config_maps: [(
                "cfg".to_string(),
                Some(v1::ConfigMap {
                    data: [
                        ("LEVEL".to_string(), "debug".to_string()),
                        ("MODE".to_string(), "cm".to_string()),
                    ]
                    .into(),
                    ..Default::default()
                }),
            )]
            .into(),
            secrets: [(
                "creds".to_string(),
                Some(v1::Secret {
                    data: [("password".to_string(), b"hunter2".to_vec())].into(),
                    ..Default::default()
                }),
            )]
            .into(),
            ..Default::default()
        }
    }

    fn pod() -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web-1".into(),
                namespace: "prod".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn env_of(c: &v1::Container) -> Result<Vec<(String, String)>, String> {
        let facts = PodFacts {
            host_ip: "192.168.1.5".into(),
            pod_ip: "10.244.0.7".into(),
            node_name: "n1".into(),
        };
        container_env(
            &pod(),
            c,
            &fetched(),
            &facts,
            vec![("WEB_SERVICE_HOST".into(), "10.96.0.9".into())],
        )
    }

    #[test]
    fn env_from_then_env_with_overrides_in_place_and_references() {
        let c = v1::Container {
            env_from: vec![v1::EnvFromSource {
                prefix: "APP_".into(),
                config_map_ref: Some(v1::ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                secret_ref: None,
            }],
            env: vec![
                var("APP_MODE", "explicit"),
                var("WEB_SERVICE_HOST", "10.96.0.99"),
                var(
                    "URL",
                    "http://$(WEB_SERVICE_HOST):80/$(APP_LEVEL)/$(NOPE)/$$(ESC)",
                ),
                from(
                    "PASSWORD",
                    v1::EnvVarSource {
                        secret_key_ref: Some(v1::SecretKeySelector {
                            name: "creds".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "POD_IP",
                    v1::EnvVarSource {
                        field_ref: Some(v1::ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "NS",
                    v1::EnvVarSource {
                        field_ref: Some(v1::ObjectFieldSelector {
                            field_path: "metadata.namespace".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ],
            ..Default::default()
        };
        let env = env_of(&c).unwrap();
        let names: Vec<_> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "WEB_SERVICE_HOST",
                "APP_LEVEL",
                "APP_MODE",
                "URL",
                "PASSWORD",
                "POD_IP",
                "NS"
            ]
        );
        let get = |n: &str| env.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("APP_MODE"), "explicit");
        assert_eq!(
            get("WEB_SERVICE_HOST"),
            "10.96.0.99",
            "the container's own value wins"
        );
        assert_eq!(get("URL"), "http://10.96.0.99:80/debug/$(NOPE)/$(ESC)");
        assert_eq!(get("PASSWORD"), "hunter2");
        assert_eq!(get("POD_IP"), "10.244.0.7");
        assert_eq!(get("NS"), "prod");
    }

    #[test]
    fn missing_keys_and_objects_fail_unless_optional() {
        let key_ref = |name: &str, key: &str, optional| v1::Container {
            env: vec![from(
                "X",
                v1::EnvVarSource {
                    config_map_key_ref: Some(v1::ConfigMapKeySelector {
                        name: name.into(),
                        key: key.into(),
                        optional,
                    }),
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        let err = env_of(&key_ref("cfg", "ABSENT", None)).unwrap_err();
        assert_eq!(
            err,
            "env \"X\": couldn't find key ABSENT in ConfigMap \"cfg\""
        );
        let err = env_of(&key_ref("nope", "A", None)).unwrap_err();
        assert_eq!(err, "env \"X\": configmap \"nope\" not found");
        let env = env_of(&key_ref("nope", "A", Some(true))).unwrap();
        assert_eq!(env.last().unwrap(), &("X".to_string(), String::new()));
    }

    #[test]
    fn expansion_leaves_unknown_and_malformed_references_alone() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("$(A)$(A)", &env), "11");
        assert_eq!(expand("cost: $5 $(A", &env), "cost: $5 $(A");
        assert_eq!(expand("$$$(A)", &env), "$1");
        assert_eq!(
            expand_all(&["echo".into(), "$(A)".into()], &env),
            ["echo", "1"]
        );
    }
}
