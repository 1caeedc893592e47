//! Storage keys of API objects: `/registry/<resource>/<namespace>/<name>` for namespaced kinds,
//! `/registry/<resource>/<name>` for cluster-scoped ones. Pure; no I/O.

use api::Kind;

/// Root of every API object in the store.
pub const ROOT: &str = "/registry/";

/// The key of one object.
pub fn object_key(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{ROOT}{}/{namespace}/{name}", kind.plural())
    } else {
        format!("{ROOT}{}/{name}", kind.plural())
    }
}

/// The prefix under which `kind` objects of `namespace` (all namespaces when empty) live.
pub fn list_prefix(kind: Kind, namespace: &str) -> String {
    if kind.namespaced() && !namespace.is_empty() {
        format!("{ROOT}{}/{namespace}/", kind.plural())
    } else {
        format!("{ROOT}{}/", kind.plural())
    }
}

/// `namespace/name` or `name`, for messages.
pub fn display_key(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_and_cluster_scoped_keys_differ_in_shape() {
        assert_eq!(
            object_key(Kind::Pod, "default", "hello"),
            "/registry/pods/default/hello"
        );
        assert_eq!(object_key(Kind::Node, "", "n1"), "/registry/nodes/n1");
        assert_eq!(list_prefix(Kind::Pod, ""), "/registry/pods/");
        assert_eq!(list_prefix(Kind::Pod, "kube"), "/registry/pods/kube/");
        assert_eq!(
            list_prefix(Kind::Namespace, "ignored"),
            "/registry/namespaces/"
        );
    }

    #[test]
    fn a_namespace_prefix_does_not_match_a_longer_namespace() {
        let p = list_prefix(Kind::Pod, "a");
        assert!(!object_key(Kind::Pod, "ab", "x").starts_with(&p));
    }
}
