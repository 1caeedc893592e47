//! The kinds of object Capstan serves and their names (kind, kubectl short names,
//! plural, apiVersion, scope). Adding a kind starts here.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A namespace (cluster-scoped).
    Namespace,
    /// A node (cluster-scoped).
    Node,
    /// A pod (namespaced).
    Pod,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 3] = [Kind::Namespace, Kind::Node, Kind::Pod];

    /// Parses a kind the way kubectl does: `Pod`, `pod`, `pods`, `po` and so on; `None`
    /// for anything else. `str::parse::<Kind>()` gives an [`Error::UnknownKind`] instead.
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Some(Kind::Pod),
            "node" | "nodes" | "no" => Some(Kind::Node),
            "namespace" | "namespaces" | "ns" => Some(Kind::Namespace),
            _ => None,
        }
    }

    /// The Kind name, e.g. `"Pod"`; this is what requests carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
        }
    }

    /// The lowercase plural, e.g. `"pods"`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
        }
    }

    /// The apiVersion the kind is served under.
    pub fn api_version(self) -> &'static str {
        "v1"
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::Pod)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Kind> {
        Kind::parse(s).ok_or_else(|| Error::UnknownKind {
            kind: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_names_parse_to_their_kind() {
        for (s, k) in [
            ("Pod", Kind::Pod),
            ("pod", Kind::Pod),
            ("pods", Kind::Pod),
            ("po", Kind::Pod),
            ("node", Kind::Node),
            ("nodes", Kind::Node),
            ("no", Kind::Node),
            ("Node", Kind::Node),
            ("namespace", Kind::Namespace),
            ("namespaces", Kind::Namespace),
            ("ns", Kind::Namespace),
        ] {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
        }
    }

    #[test]
    fn unknown_kind_is_an_error_naming_it() {
        assert_eq!(Kind::parse("Deployment"), None);
        let err = "Deployment".parse::<Kind>().unwrap_err();
        assert!(matches!(&err, Error::UnknownKind { kind } if kind == "Deployment"));
    }

    #[test]
    fn names_and_scope() {
        assert_eq!(Kind::Pod.as_str(), "Pod");
        assert_eq!(Kind::Pod.plural(), "pods");
        assert_eq!(Kind::Node.api_version(), "v1");
        assert!(Kind::Pod.namespaced());
        assert!(!Kind::Node.namespaced());
        assert!(!Kind::Namespace.namespaced());
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(k.plural().parse::<Kind>().ok(), Some(k));
        }
    }
}
