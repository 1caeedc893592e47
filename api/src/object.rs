//! Helpers on the generic [`v1::Object`] envelope: which kind it carries, its metadata,
//! conversions from and to the typed objects (the [`Resource`] trait), and the protobuf
//! bytes used for storage.
//! Nothing here validates or defaults; see `validation` and `defaults`.

use std::collections::BTreeMap;

use prost::Message;

use crate::error::{Error, Result};
use crate::kind::{for_each_kind, Kind};
use crate::v1::{self, object::Kind as Oneof};

/// What `metadata()` returns for objects without metadata.
static EMPTY_META: v1::ObjectMeta = v1::ObjectMeta {
    name: String::new(),
    generate_name: String::new(),
    namespace: String::new(),
    uid: String::new(),
    resource_version: String::new(),
    generation: 0,
    creation_timestamp: String::new(),
    deletion_timestamp: String::new(),
    deletion_grace_period_seconds: None,
    labels: BTreeMap::new(),
    annotations: BTreeMap::new(),
    owner_references: Vec::new(),
    finalizers: Vec::new(),
};

impl v1::Object {
    /// Wraps a pod.
    pub fn from_pod(pod: v1::Pod) -> Self {
        Self {
            kind: Some(Oneof::Pod(pod)),
        }
    }

    /// Wraps a node.
    pub fn from_node(node: v1::Node) -> Self {
        Self {
            kind: Some(Oneof::Node(node)),
        }
    }

    /// Wraps a namespace.
    pub fn from_namespace(namespace: v1::Namespace) -> Self {
        Self {
            kind: Some(Oneof::Namespace(namespace)),
        }
    }

    /// The kind carried, or `None` for an empty envelope.
    pub fn kind(&self) -> Option<Kind> {
        macro_rules! arms {
            ($($k:ident),*) => {
                match self.kind.as_ref()? {
                    $(Oneof::$k(_) => Some(Kind::$k),)*
                }
            };
        }
        for_each_kind!(arms)
    }

    /// The object's metadata; an empty [`v1::ObjectMeta`] if the envelope is empty or
    /// the object has none.
    pub fn metadata(&self) -> &v1::ObjectMeta {
        macro_rules! arms {
            ($($k:ident),*) => {
                match self.kind.as_ref() {
                    $(Some(Oneof::$k(o)) => o.metadata.as_ref(),)*
                    None => None,
                }
            };
        }
        for_each_kind!(arms).unwrap_or(&EMPTY_META)
    }

    /// Mutable metadata, created empty if missing; `None` only for an empty envelope.
    pub fn try_metadata_mut(&mut self) -> Option<&mut v1::ObjectMeta> {
        macro_rules! arms {
            ($($k:ident),*) => {
                match self.kind.as_mut()? {
                    $(Oneof::$k(o) => &mut o.metadata,)*
                }
            };
        }
        let meta = for_each_kind!(arms);
        Some(meta.get_or_insert_with(Default::default))
    }

    /// Wraps any typed object.
    pub fn new<T: Resource>(object: T) -> Self {
        object.into_object()
    }

    /// The typed object, if the envelope carries a `T`.
    pub fn as_typed<T: Resource>(&self) -> Option<&T> {
        T::from_object_ref(self)
    }

    /// The typed object, mutably, if the envelope carries a `T`.
    pub fn as_typed_mut<T: Resource>(&mut self) -> Option<&mut T> {
        T::from_object_mut(self)
    }

    /// Unwraps into the typed object, if the envelope carries a `T`.
    pub fn into_typed<T: Resource>(self) -> Option<T> {
        T::from_object(self)
    }

    /// Mutable metadata, created empty if missing.
    ///
    /// # Panics
    /// On an empty envelope (`kind()` is `None`), which has no metadata to change.
    /// Reject empty envelopes at the edge (validation does) or use
    /// [`try_metadata_mut`](Self::try_metadata_mut).
    #[track_caller]
    pub fn metadata_mut(&mut self) -> &mut v1::ObjectMeta {
        match self.try_metadata_mut() {
            Some(meta) => meta,
            None => panic!("metadata_mut on an empty Object envelope: check kind() first"),
        }
    }

    /// `metadata.name`, empty if unset.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// `metadata.namespace`, empty if unset or cluster-scoped.
    pub fn namespace(&self) -> &str {
        &self.metadata().namespace
    }

    /// `metadata.resourceVersion`, empty if unset.
    pub fn resource_version(&self) -> &str {
        &self.metadata().resource_version
    }

    /// The pod, if this is one.
    pub fn as_pod(&self) -> Option<&v1::Pod> {
        match self.kind.as_ref()? {
            Oneof::Pod(p) => Some(p),
            _ => None,
        }
    }

    /// The pod, mutably, if this is one.
    pub fn as_pod_mut(&mut self) -> Option<&mut v1::Pod> {
        match self.kind.as_mut()? {
            Oneof::Pod(p) => Some(p),
            _ => None,
        }
    }

    /// The node, if this is one.
    pub fn as_node(&self) -> Option<&v1::Node> {
        match self.kind.as_ref()? {
            Oneof::Node(n) => Some(n),
            _ => None,
        }
    }

    /// The node, mutably, if this is one.
    pub fn as_node_mut(&mut self) -> Option<&mut v1::Node> {
        match self.kind.as_mut()? {
            Oneof::Node(n) => Some(n),
            _ => None,
        }
    }

    /// The namespace, if this is one.
    pub fn as_namespace(&self) -> Option<&v1::Namespace> {
        match self.kind.as_ref()? {
            Oneof::Namespace(n) => Some(n),
            _ => None,
        }
    }

    /// The namespace, mutably, if this is one.
    pub fn as_namespace_mut(&mut self) -> Option<&mut v1::Namespace> {
        match self.kind.as_mut()? {
            Oneof::Namespace(n) => Some(n),
            _ => None,
        }
    }

    /// Unwraps into the pod, if this is one.
    pub fn into_pod(self) -> Option<v1::Pod> {
        match self.kind? {
            Oneof::Pod(p) => Some(p),
            _ => None,
        }
    }

    /// Unwraps into the node, if this is one.
    pub fn into_node(self) -> Option<v1::Node> {
        match self.kind? {
            Oneof::Node(n) => Some(n),
            _ => None,
        }
    }

    /// Unwraps into the namespace, if this is one.
    pub fn into_namespace(self) -> Option<v1::Namespace> {
        match self.kind? {
            Oneof::Namespace(n) => Some(n),
            _ => None,
        }
    }

    /// Protobuf encoding of the envelope, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes stored protobuf bytes; an empty envelope is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let obj = Self::decode(bytes)?;
        if obj.kind.is_none() {
            return Err(Error::EmptyObject);
        }
        Ok(obj)
    }
}

/// A typed object that travels in the [`v1::Object`] envelope.
pub trait Resource: Sized {
    /// The kind of the type.
    const KIND: Kind;
    /// The object's metadata, if set.
    fn meta(&self) -> Option<&v1::ObjectMeta>;
    /// Wraps the object into the envelope.
    fn into_object(self) -> v1::Object;
    /// The object in the envelope, if it is of this type.
    fn from_object_ref(obj: &v1::Object) -> Option<&Self>;
    /// The object in the envelope, mutably, if it is of this type.
    fn from_object_mut(obj: &mut v1::Object) -> Option<&mut Self>;
    /// Unwraps the envelope, if it carries this type.
    fn from_object(obj: v1::Object) -> Option<Self>;
}

macro_rules! resource_impls {
    ($($k:ident),*) => {$(
        impl Resource for v1::$k {
            const KIND: Kind = Kind::$k;

            fn meta(&self) -> Option<&v1::ObjectMeta> {
                self.metadata.as_ref()
            }

            fn into_object(self) -> v1::Object {
                v1::Object { kind: Some(Oneof::$k(self)) }
            }

            fn from_object_ref(obj: &v1::Object) -> Option<&Self> {
                match obj.kind.as_ref()? {
                    Oneof::$k(o) => Some(o),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            fn from_object_mut(obj: &mut v1::Object) -> Option<&mut Self> {
                match obj.kind.as_mut()? {
                    Oneof::$k(o) => Some(o),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            fn from_object(obj: v1::Object) -> Option<Self> {
                match obj.kind? {
                    Oneof::$k(o) => Some(o),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }

        impl From<v1::$k> for v1::Object {
            fn from(object: v1::$k) -> Self {
                object.into_object()
            }
        }
    )*};
}
for_each_kind!(resource_impls);

/// Calls `$m!` with the kinds that have a status subresource.
macro_rules! for_each_kind_with_status {
    ($m:ident) => {
        $m!(
            Namespace,
            Node,
            Pod,
            ReplicaSet,
            Deployment,
            StatefulSet,
            DaemonSet,
            Job,
            CronJob,
            Service,
            ResourceQuota,
            PersistentVolume,
            PersistentVolumeClaim
        )
    };
}

impl v1::Object {
    /// Drops the status (the server owns it, not the manifest); kinds without one are unchanged.
    pub fn clear_status(&mut self) {
        macro_rules! arms {
            ($($k:ident),*) => {
                match self.kind.as_mut() {
                    $(Some(Oneof::$k(o)) => o.status = None,)*
                    _ => {}
                }
            };
        }
        for_each_kind_with_status!(arms)
    }

    /// Protobuf bytes of what the user declares: the object without metadata and status
    /// (the spec, or the whole body of kinds without one). Equal bytes mean the same
    /// desired state.
    pub fn desired_state_bytes(&self) -> Vec<u8> {
        let mut body = self.clone();
        if let Some(meta) = body.try_metadata_mut() {
            *meta = v1::ObjectMeta::default();
        }
        body.clear_status();
        body.encode_to_vec()
    }

    /// Replaces this object's status by `from`'s when both are of the same kind.
    pub fn copy_status_from(&mut self, from: &v1::Object) {
        macro_rules! arms {
            ($($k:ident),*) => {
                match (from.kind.as_ref(), self.kind.as_mut()) {
                    $((Some(Oneof::$k(f)), Some(Oneof::$k(t))) => t.status = f.status.clone(),)*
                    _ => {}
                }
            };
        }
        for_each_kind_with_status!(arms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                resource_version: "7".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container {
                    name: "c".into(),
                    image: "busybox".into(),
                    ..Default::default()
                }],
                termination_grace_period_seconds: Some(0),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn accessors_see_through_the_envelope() {
        let mut obj = v1::Object::from(pod("web"));
        assert_eq!(obj.kind(), Some(Kind::Pod));
        assert_eq!(obj.name(), "web");
        assert_eq!(obj.namespace(), "default");
        assert_eq!(obj.resource_version(), "7");
        assert!(obj.as_node().is_none());
        obj.metadata_mut().name = "api".into();
        assert_eq!(obj.as_pod().unwrap().metadata.as_ref().unwrap().name, "api");
    }

    #[test]
    fn metadata_mut_creates_missing_metadata() {
        let mut obj = v1::Object::from_node(v1::Node::default());
        assert_eq!(obj.metadata(), &v1::ObjectMeta::default());
        assert!(obj.as_node().unwrap().metadata.is_none());
        obj.metadata_mut().name = "n1".into();
        assert_eq!(obj.name(), "n1");
        let mut empty = v1::Object::default();
        assert_eq!(empty.metadata().name, "");
        assert!(empty.try_metadata_mut().is_none());
    }

    #[test]
    #[should_panic(expected = "empty Object envelope")]
    fn metadata_mut_on_an_empty_envelope_panics() {
        v1::Object::default().metadata_mut();
    }

    #[test]
    fn bytes_round_trip_keeps_explicit_zero_optionals() {
        let obj = v1::Object::from_pod(pod("web"));
        let back = v1::Object::from_bytes(&obj.to_bytes()).unwrap();
        assert_eq!(back, obj);
        let grace = back
            .as_pod()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .termination_grace_period_seconds;
        assert_eq!(grace, Some(0));
    }

    #[test]
    fn empty_or_garbage_bytes_are_rejected() {
        assert!(matches!(
            v1::Object::from_bytes(&[]),
            Err(Error::EmptyObject)
        ));
        assert!(matches!(
            v1::Object::from_bytes(&[0xff, 0xff, 0xff]),
            Err(Error::Proto(_))
        ));
    }
}
