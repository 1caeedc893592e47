//! The API server's storage layer: turns API requests into store transactions.
//!
//! Owns object semantics that Kubernetes' generic registry has: defaulting and validation before a
//! write, uid/creationTimestamp/generation, `resourceVersion` = the store's mod revision (stale
//! writes are refused as conflicts through a compare-and-swap transaction), graceful deletion of
//! bound pods. It must not act on objects (that is the controllers' and node agents' job).

use std::sync::Arc;

use api::v1::{self, Object};
pub use api::watch::EventType;
use api::Kind;
use futures::{Stream, StreamExt};
use raftstore::{Compare, CompareOp, CompareTarget, EventKind, KeyValue, Store, Txn, TxnOp};

use super::fence::Fence;
use super::keys;
use super::service_alloc;
use crate::error::{Error, Result};

/// One watch event: what happened, and the object after it (before it, for deletions).
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    /// What happened.
    pub event_type: EventType,
    /// The object, with `resourceVersion` set to the event's revision.
    pub object: Object,
}

/// The API server's registry: every request that reads or writes objects goes through it.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    clock: Arc<dyn Fn() -> String + Send + Sync>,
    service_cidr: net::Ipv4Net,
    /// When set, every write is conditional on this leader's fencing token.
    fence: Option<Fence>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Store) -> Self {
        let service_cidr = service_alloc::DEFAULT_SERVICE_CIDR
            .parse()
            .unwrap_or_else(|_| net::Ipv4Net::default());
        Registry {
            store,
            clock: Arc::new(now_rfc3339),
            service_cidr,
            fence: None,
        }
    }

    /// The same registry allocating Service ClusterIPs from `cidr`.
    pub fn with_service_cidr(mut self, cidr: net::Ipv4Net) -> Self {
        self.service_cidr = cidr;
        self
    }

    /// The same registry with every write conditional on `fence`: once another server has
    /// taken the leader lease over, writes fail with [`Error::Fenced`]. The elected control
    /// plane writes only through such a registry.
    pub fn fenced(&self, fence: Fence) -> Registry {
        Registry {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The fencing token this registry's writes carry, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Writes the Lease `lease` (created when it has no resourceVersion, else compare-and-swapped
    /// on it) and, in the same transaction, rewrites `fence_key`: that transaction's revision,
    /// the lease's new resourceVersion, is the new holder's fencing token (see
    /// [`Registry::fenced`]). A lost race is [`Error::Conflict`] or [`Error::AlreadyExists`].
    pub async fn take_over_lease(&self, lease: Object, fence_key: &str) -> Result<(Object, Fence)> {
        if lease.kind() != Some(Kind::Lease) {
            return Err(Error::Invalid {
                kind: kind_of(&lease)?.as_str().into(),
                name: lease.metadata().name.clone(),
                details: "kind: Unsupported value: only a Lease can be taken over".into(),
            });
        }
        let holder = lease
            .as_typed::<v1::Lease>()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        let fence_put = vec![TxnOp::Put {
            key: fence_key.as_bytes().to_vec(),
            value: holder.into_bytes(),
        }];
        let written = if lease.metadata().resource_version.is_empty() {
            self.create_with(lease, fence_put).await?
        } else {
            self.update_with(lease, fence_put).await?
        };
        let revision = parse_rv(&written.metadata().resource_version)?;
        Ok((
            written,
            Fence {
                key: fence_key.to_string(),
                revision,
            },
        ))
    }

    /// Adds this registry's fence (if any) to `txn`.
    fn guard(&self, txn: &mut Txn) {
        if let Some(f) = &self.fence {
            f.guard(txn);
        }
    }

    /// After `txn` failed: [`Error::Fenced`] if this registry's fence moved.
    fn check_fence(&self, res: &raftstore::TxnResult) -> Result<()> {
        match &self.fence {
            Some(f) => f.check(res),
            None => Ok(()),
        }
    }

    /// The store underneath (for the process's shutdown).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates the namespace `name` unless it exists (used at start-up for `default`).
    pub async fn ensure_namespace(&self, name: &str) -> Result<()> {
        let ns = v1::Namespace {
            metadata: Some(v1::ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self.create(Object::from(ns)).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates an object: defaults, validates, checks its namespace, then stores it if absent.
    pub async fn create(&self, obj: Object) -> Result<Object> {
        self.create_with(obj, Vec::new()).await
    }

    /// [`Registry::create`], with `extra` operations in the same transaction.
    async fn create_with(&self, mut obj: Object, extra: Vec<TxnOp>) -> Result<Object> {
        let kind = kind_of(&obj)?;
        api::defaults::apply(&mut obj);
        {
            let meta = obj.metadata_mut();
            if meta.name.is_empty() && !meta.generate_name.is_empty() {
                meta.name = generated_name(&meta.generate_name);
            }
            if !kind.namespaced() {
                meta.namespace.clear();
            }
            meta.uid = uuid::Uuid::new_v4().to_string();
            meta.creation_timestamp = (self.clock)();
            meta.deletion_timestamp.clear();
            meta.resource_version.clear();
            meta.generation = 1;
        }
        reset_status_for_create(&mut obj);
        validate(kind, &obj)?;
        let (namespace, name) = ns_name(&obj);
        if kind.namespaced() {
            self.require_active_namespace(&namespace).await?;
        }
        let key = keys::object_key(kind, &namespace, &name);
        let base = obj;
        // A Service's ClusterIP/NodePorts are reserved in the same transaction; a reservation
        // lost to a concurrent create is retried with fresh values.
        for _ in 0..5 {
            let mut obj = base.clone();
            let mut reserved = Vec::new();
            if let Some(v1::object::Kind::Service(svc)) = obj.kind.as_mut() {
                self.allocate(svc, None, &name).await?;
                reserved = service_alloc::reservations(svc);
            }
            let mut txn = Txn {
                compares: vec![absent(&key)],
                success: vec![TxnOp::Put {
                    key: key.clone().into_bytes(),
                    value: obj.to_bytes(),
                }],
                failure: vec![],
            };
            for r in &reserved {
                let (compare, put) = reserve(r, &namespace, &name);
                txn.compares.push(compare);
                txn.success.push(put);
            }
            txn.success.extend(extra.iter().cloned());
            self.guard(&mut txn);
            let res = self.store.txn(txn).await?;
            if !res.succeeded {
                self.check_fence(&res)?;
            }
            if res.succeeded {
                obj.metadata_mut().resource_version = res.revision.to_string();
                tracing::info!(kind = kind.as_str(), namespace = %namespace, name = %name, resource_version = res.revision, "object created");
                return Ok(obj);
            }
            if reserved.is_empty() || self.store.get(key.as_bytes()).await?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: kind.as_str().to_string(),
                    key: keys::display_key(kind, &namespace, &name),
                });
            }
        }
        Err(Error::Conflict {
            key,
            expected: "free ClusterIP and NodePorts".into(),
            actual: "taken by concurrent creates; retry".into(),
        })
    }

    /// Fills `svc`'s empty ClusterIP and NodePorts with values no other Service holds (`own`:
    /// what this Service already holds, free for it to keep); a bad request names the field.
    async fn allocate(
        &self,
        svc: &mut v1::Service,
        own: Option<&v1::Service>,
        name: &str,
    ) -> Result<()> {
        let (mut ips, mut ports) = self.used_service_values().await?;
        if let Some(own) = own {
            service_alloc::release_own(own, &mut ips, &mut ports);
        }
        service_alloc::assign(svc, self.service_cidr, &ips, &ports).map_err(|details| {
            Error::Invalid {
                kind: Kind::Service.as_str().into(),
                name: name.to_string(),
                details,
            }
        })
    }

    /// ClusterIPs and NodePorts reserved by existing Services.
    async fn used_service_values(
        &self,
    ) -> Result<(
        std::collections::HashSet<std::net::Ipv4Addr>,
        std::collections::HashSet<u16>,
    )> {
        let tail = |kv: &KeyValue, prefix: &str| {
            String::from_utf8_lossy(&kv.key)
                .strip_prefix(prefix)
                .map(str::to_string)
        };
        let ips = self
            .store
            .range_prefix(service_alloc::IP_PREFIX.as_bytes())
            .await?;
        let ports = self
            .store
            .range_prefix(service_alloc::NODE_PORT_PREFIX.as_bytes())
            .await?;
        Ok((
            ips.kvs
                .iter()
                .filter_map(|kv| tail(kv, service_alloc::IP_PREFIX)?.parse().ok())
                .collect(),
            ports
                .kvs
                .iter()
                .filter_map(|kv| tail(kv, service_alloc::NODE_PORT_PREFIX)?.parse().ok())
                .collect(),
        ))
    }

    /// Reads one object.
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        let key = keys::object_key(kind, namespace, name);
        match self.store.get(key.as_bytes()).await? {
            Some(kv) => decode(&kv),
            None => Err(not_found(kind, namespace, name)),
        }
    }

    /// Reads one object from this store member's applied state, without asking the store's
    /// leader: it works while the store elects a new leader, but may be stale. Only for
    /// observers that act through a compare-and-swap (which fails on a stale read).
    pub async fn get_local(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        let key = keys::object_key(kind, namespace, name);
        match self
            .store
            .get_with(key.as_bytes(), raftstore::ReadConsistency::Serializable)
            .await?
        {
            Some(kv) => decode(&kv),
            None => Err(not_found(kind, namespace, name)),
        }
    }

    /// Lists objects of `kind` in `namespace` (all when empty) matching `selector`, with the
    /// store revision the list is consistent at.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: &str,
        selector: &str,
    ) -> Result<(Vec<Object>, i64)> {
        let selector = parse_selector(selector)?;
        let prefix = keys::list_prefix(kind, namespace);
        let res = self.store.range_prefix(prefix.as_bytes()).await?;
        let mut items = Vec::with_capacity(res.kvs.len());
        for kv in &res.kvs {
            let obj = decode(kv)?;
            if selector.matches(&obj.metadata().labels) {
                items.push(obj);
            }
        }
        Ok((items, res.revision))
    }

    /// Watches `kind` objects in `namespace` (all when empty) matching `selector`, for changes
    /// after `resource_version` (after now when empty or "0").
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: &str,
        selector: &str,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<ObjectEvent>> + Send + 'static> {
        let selector = parse_selector(selector)?;
        let start = match resource_version {
            "" | "0" => 0,
            rv => parse_rv(rv)? + 1,
        };
        let prefix = keys::list_prefix(kind, namespace);
        let stream = match self.store.watch(prefix.into_bytes(), start).await {
            Ok(s) => s,
            Err(raftstore::Error::Compacted { compact_revision }) => {
                return Err(Error::Expired {
                    requested: start - 1,
                    compacted: compact_revision,
                })
            }
            Err(e) => return Err(e.into()),
        };
        Ok(stream.filter_map(move |ev| {
            let out = match ev {
                Err(raftstore::Error::Compacted { compact_revision }) => {
                    Some(Err(Error::Expired {
                        requested: start - 1,
                        compacted: compact_revision,
                    }))
                }
                Err(e) => Some(Err(Error::Store(e))),
                Ok(ev) => selected_event(&ev, &selector).transpose(),
            };
            futures::future::ready(out)
        }))
    }

    /// Replaces an object's spec and metadata (labels, annotations, finalizers); keeps status.
    /// A non-empty `resourceVersion` must match the stored one.
    pub async fn update(&self, obj: Object) -> Result<Object> {
        self.update_with(obj, Vec::new()).await
    }

    /// [`Registry::update`], with `extra` operations in the same transaction.
    async fn update_with(&self, obj: Object, extra: Vec<TxnOp>) -> Result<Object> {
        let kind = kind_of(&obj)?;
        let (namespace, name) = ns_name(&obj);
        let (current, kv) = self.load(kind, &namespace, &name).await?;
        check_rv(&obj, &kv)?;
        let mut next = obj;
        api::defaults::apply(&mut next);
        if kind == Kind::Pod && pod_spec(&current) != pod_spec(&next) {
            return Err(Error::Invalid {
                kind: kind.as_str().into(),
                name,
                details: "spec: Forbidden: pod updates may not change the pod spec".into(),
            });
        }
        {
            let cur = current.metadata();
            let spec_changed = current.desired_state_bytes() != next.desired_state_bytes();
            let meta = next.metadata_mut();
            meta.uid = cur.uid.clone();
            meta.creation_timestamp = cur.creation_timestamp.clone();
            meta.deletion_timestamp = cur.deletion_timestamp.clone();
            meta.generation = cur.generation + i64::from(spec_changed);
            meta.resource_version.clear();
        }
        next.copy_status_from(&current);
        keep_service_allocations(&current, &mut next);
        validate(kind, &next)?;
        let mut compares = Vec::new();
        let mut extra = extra;
        if let (Some(v1::object::Kind::Service(cur)), Some(v1::object::Kind::Service(svc))) =
            (current.kind.as_ref(), next.kind.as_mut())
        {
            // Ports added by the update are allocated (and reserved in the same transaction,
            // absent until now); ports it drops give their NodePorts back.
            self.allocate(svc, Some(cur), &name).await?;
            let (take, release) = service_alloc::reservation_changes(cur, svc);
            for r in &take {
                let (compare, put) = reserve(r, &namespace, &name);
                compares.push(compare);
                extra.push(put);
            }
            extra.extend(release.into_iter().map(|r| TxnOp::Delete {
                key: r.into_bytes(),
            }));
        }
        self.swap_checked(kind, &kv, next, compares, extra).await
    }

    /// Replaces an object's status (the status subresource). A non-empty `resourceVersion`
    /// must match the stored one.
    pub async fn update_status(&self, obj: Object) -> Result<Object> {
        let kind = kind_of(&obj)?;
        let (namespace, name) = ns_name(&obj);
        let (mut current, kv) = self.load(kind, &namespace, &name).await?;
        check_rv(&obj, &kv)?;
        current.copy_status_from(&obj);
        current.metadata_mut().resource_version.clear();
        self.swap(kind, &kv, current, Vec::new()).await
    }

    /// Binds a pending pod to a node (the Binding subresource).
    pub async fn bind(&self, namespace: &str, name: &str, node_name: &str) -> Result<Object> {
        let (mut obj, kv) = self.load(Kind::Pod, namespace, name).await?;
        let now = (self.clock)();
        let Some(v1::object::Kind::Pod(pod)) = obj.kind.as_mut() else {
            return Err(not_found(Kind::Pod, namespace, name));
        };
        let spec = pod.spec.get_or_insert_with(Default::default);
        if !spec.node_name.is_empty() {
            return Err(Error::Conflict {
                key: keys::display_key(Kind::Pod, namespace, name),
                expected: "an unbound pod".into(),
                actual: format!("pod bound to node {}", spec.node_name),
            });
        }
        spec.node_name = node_name.to_string();
        let status = pod.status.get_or_insert_with(Default::default);
        set_pod_condition(status, "PodScheduled", "True", &now);
        obj.metadata_mut().resource_version.clear();
        self.swap(Kind::Pod, &kv, obj, Vec::new()).await
    }

    /// Deletes an object. A pod bound to a node is deleted gracefully: the first call sets
    /// `deletionTimestamp` and the node agent stops its containers and calls again to remove it.
    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        let (mut obj, kv) = self.load(kind, namespace, name).await?;
        if kind == Kind::Namespace {
            let (pods, _) = self.list(Kind::Pod, name, "").await?;
            if !pods.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "namespace {name:?} still holds {} pod(s); delete them first",
                    pods.len()
                )));
            }
        }
        let graceful = kind == Kind::Pod
            && !pod_spec(&obj)
                .map(|s| s.node_name.is_empty())
                .unwrap_or(true)
            && obj.metadata().deletion_timestamp.is_empty();
        if graceful {
            obj.metadata_mut().deletion_timestamp = (self.clock)();
            obj.metadata_mut().resource_version.clear();
            return self.swap(kind, &kv, obj, Vec::new()).await;
        }
        let key = kv.key.clone();
        let mut txn = Txn {
            compares: vec![mod_rev_equals(&key, kv.mod_revision)],
            success: vec![TxnOp::Delete { key: key.clone() }],
            failure: vec![],
        };
        if let Some(v1::object::Kind::Service(svc)) = obj.kind.as_ref() {
            for r in service_alloc::reservations(svc) {
                txn.success.push(TxnOp::Delete {
                    key: r.into_bytes(),
                });
            }
        }
        self.guard(&mut txn);
        let res = self.store.txn(txn).await?;
        if !res.succeeded {
            self.check_fence(&res)?;
            return Err(conflict_on(&key, kv.mod_revision));
        }
        obj.metadata_mut().resource_version = res.revision.to_string();
        tracing::info!(kind = kind.as_str(), namespace = %namespace, name = %name, resource_version = res.revision, "object deleted");
        Ok(obj)
    }

    async fn require_active_namespace(&self, namespace: &str) -> Result<()> {
        match self.get(Kind::Namespace, "", namespace).await {
            Ok(ns) if !ns.metadata().deletion_timestamp.is_empty() => Err(
                Error::FailedPrecondition(format!("namespace {namespace:?} is terminating")),
            ),
            Ok(_) => Ok(()),
            Err(Error::NotFound { .. }) => Err(Error::FailedPrecondition(format!(
                "namespace {namespace:?} not found"
            ))),
            Err(e) => Err(e),
        }
    }

    async fn load(&self, kind: Kind, namespace: &str, name: &str) -> Result<(Object, KeyValue)> {
        let key = keys::object_key(kind, namespace, name);
        match self.store.get(key.as_bytes()).await? {
            Some(kv) => Ok((decode(&kv)?, kv)),
            None => Err(not_found(kind, namespace, name)),
        }
    }

    /// Writes `next` over the object read as `kv`, if nobody changed it since, with `extra`
    /// operations in the same transaction.
    async fn swap(
        &self,
        kind: Kind,
        kv: &KeyValue,
        next: Object,
        extra: Vec<TxnOp>,
    ) -> Result<Object> {
        self.swap_checked(kind, kv, next, Vec::new(), extra).await
    }

    /// [`Registry::swap`], also requiring `compares` (a failed one reads as a conflict).
    async fn swap_checked(
        &self,
        kind: Kind,
        kv: &KeyValue,
        mut next: Object,
        compares: Vec<Compare>,
        extra: Vec<TxnOp>,
    ) -> Result<Object> {
        let mut txn = Txn {
            compares: std::iter::once(mod_rev_equals(&kv.key, kv.mod_revision))
                .chain(compares)
                .collect(),
            success: vec![TxnOp::Put {
                key: kv.key.clone(),
                value: next.to_bytes(),
            }],
            failure: vec![],
        };
        txn.success.extend(extra);
        self.guard(&mut txn);
        let res = self.store.txn(txn).await?;
        if !res.succeeded {
            self.check_fence(&res)?;
            return Err(conflict_on(&kv.key, kv.mod_revision));
        }
        next.metadata_mut().resource_version = res.revision.to_string();
        tracing::debug!(kind = kind.as_str(), key = %String::from_utf8_lossy(&kv.key), resource_version = res.revision, "object updated");
        Ok(next)
    }
}

/// Taking reservation `key` for Service `namespace/name`: the key must be absent, then holds
/// the owner.
fn reserve(key: &str, namespace: &str, name: &str) -> (Compare, TxnOp) {
    let put = TxnOp::Put {
        key: key.as_bytes().to_vec(),
        value: format!("{namespace}/{name}").into_bytes(),
    };
    (absent(key), put)
}

fn absent(key: &str) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        target: CompareTarget::CreateRevision(0),
        op: CompareOp::Equal,
    }
}

/// A Service's ClusterIP is immutable once allocated and its ports keep their NodePorts: an
/// update keeps them (NodePorts only while the type still has them).
fn keep_service_allocations(current: &Object, next: &mut Object) {
    use v1::object::Kind as K;
    let (Some(K::Service(cur)), Some(K::Service(nxt))) =
        (current.kind.as_ref(), next.kind.as_mut())
    else {
        return;
    };
    let (Some(cs), Some(ns)) = (cur.spec.as_ref(), nxt.spec.as_mut()) else {
        return;
    };
    ns.cluster_ip = cs.cluster_ip.clone();
    ns.cluster_ips = cs.cluster_ips.clone();
    if !matches!(ns.r#type.as_str(), "NodePort" | "LoadBalancer") {
        for p in ns.ports.iter_mut() {
            p.node_port = 0;
        }
        return;
    }
    for p in ns.ports.iter_mut() {
        if let Some(c) = cs
            .ports
            .iter()
            .find(|c| c.port == p.port && c.protocol == p.protocol)
        {
            p.node_port = c.node_port;
        }
    }
}

fn kind_of(obj: &Object) -> Result<Kind> {
    obj.kind().ok_or_else(|| Error::Invalid {
        kind: "Object".into(),
        name: String::new(),
        details: "kind: Required value: the object envelope is empty".into(),
    })
}

fn ns_name(obj: &Object) -> (String, String) {
    let m = obj.metadata();
    (m.namespace.clone(), m.name.clone())
}

fn validate(kind: Kind, obj: &Object) -> Result<()> {
    let errors = api::validation::validate(obj);
    if errors.is_empty() {
        return Ok(());
    }
    let details = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Invalid {
        kind: kind.as_str().into(),
        name: obj.metadata().name.clone(),
        details,
    })
}

fn parse_selector(s: &str) -> Result<api::selector::Selector> {
    api::selector::Selector::parse(s).map_err(|e| Error::Invalid {
        kind: "ListOptions".into(),
        name: String::new(),
        details: format!("labelSelector: {e}"),
    })
}

fn parse_rv(rv: &str) -> Result<i64> {
    rv.parse::<i64>().map_err(|_| Error::Invalid {
        kind: "ListOptions".into(),
        name: String::new(),
        details: format!("resourceVersion: Invalid value: {rv:?}: must be an integer"),
    })
}

fn check_rv(obj: &Object, kv: &KeyValue) -> Result<()> {
    let rv = &obj.metadata().resource_version;
    if rv.is_empty() || parse_rv(rv)? == kv.mod_revision {
        return Ok(());
    }
    Err(Error::Conflict {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        expected: rv.clone(),
        actual: kv.mod_revision.to_string(),
    })
}

fn mod_rev_equals(key: &[u8], rev: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        target: CompareTarget::ModRevision(rev),
        op: CompareOp::Equal,
    }
}

fn conflict_on(key: &[u8], read_rev: i64) -> Error {
    Error::Conflict {
        key: String::from_utf8_lossy(key).into_owned(),
        expected: read_rev.to_string(),
        actual: "a newer revision".into(),
    }
}

fn not_found(kind: Kind, namespace: &str, name: &str) -> Error {
    Error::NotFound {
        kind: kind.as_str().into(),
        key: keys::display_key(kind, namespace, name),
    }
}

/// Decodes a stored object and stamps its resourceVersion from the store.
fn decode(kv: &KeyValue) -> Result<Object> {
    let mut obj = Object::from_bytes(&kv.value).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        reason: e.to_string(),
    })?;
    obj.metadata_mut().resource_version = kv.mod_revision.to_string();
    Ok(obj)
}

fn to_object_event(ev: &raftstore::WatchEvent) -> Result<ObjectEvent> {
    match ev.kind {
        EventKind::Put => {
            let event_type = if ev.kv.version == 1 {
                EventType::Added
            } else {
                EventType::Modified
            };
            Ok(ObjectEvent {
                event_type,
                object: decode(&ev.kv)?,
            })
        }
        EventKind::Delete => {
            let prev = ev.prev_kv.as_ref().ok_or_else(|| Error::Corrupt {
                key: String::from_utf8_lossy(&ev.kv.key).into_owned(),
                reason: "delete event without the previous value".into(),
            })?;
            let mut object = decode(prev)?;
            object.metadata_mut().resource_version = ev.kv.mod_revision.to_string();
            Ok(ObjectEvent {
                event_type: EventType::Deleted,
                object,
            })
        }
    }
}

/// The event a watcher with `selector` sees for `ev`, by Kubernetes' rules: an object that
/// starts matching is ADDED, one that stops matching is DELETED (with its new state), one that
/// matched before and after is MODIFIED; changes outside the selection are not seen.
fn selected_event(
    ev: &raftstore::WatchEvent,
    selector: &api::selector::Selector,
) -> Result<Option<ObjectEvent>> {
    let mut oe = to_object_event(ev)?;
    let now = selector.matches(&oe.object.metadata().labels);
    if oe.event_type != EventType::Modified || selector.is_empty() {
        return Ok(now.then_some(oe));
    }
    let before = match &ev.prev_kv {
        Some(prev) => selector.matches(&decode(prev)?.metadata().labels),
        None => false,
    };
    oe.event_type = match (before, now) {
        (true, true) => EventType::Modified,
        (false, true) => EventType::Added,
        (true, false) => EventType::Deleted,
        (false, false) => return Ok(None),
    };
    Ok(Some(oe))
}

fn pod_spec(obj: &Object) -> Option<&v1::PodSpec> {
    match obj.kind.as_ref() {
        Some(v1::object::Kind::Pod(p)) => p.spec.as_ref(),
        _ => None,
    }
}

/// What the server sets as status on create, whatever the client sent (as Kubernetes does).
fn reset_status_for_create(obj: &mut Object) {
    use v1::object::Kind as K;
    obj.clear_status();
    match obj.kind.as_mut() {
        Some(K::Pod(p)) => {
            p.status = Some(v1::PodStatus {
                phase: "Pending".into(),
                ..Default::default()
            });
        }
        Some(K::Namespace(n)) => {
            n.status = Some(v1::NamespaceStatus {
                phase: "Active".into(),
            });
        }
        Some(K::PersistentVolume(o)) => {
            o.status = Some(v1::PersistentVolumeStatus {
                phase: "Pending".into(),
                ..Default::default()
            });
        }
        Some(K::PersistentVolumeClaim(o)) => {
            o.status = Some(v1::PersistentVolumeClaimStatus {
                phase: "Pending".into(),
                ..Default::default()
            });
        }
        _ => {}
    }
}

/// Sets (or adds) a pod condition, moving its transition time only when the status changes.
pub fn set_pod_condition(status: &mut v1::PodStatus, type_: &str, value: &str, now: &str) {
    if let Some(c) = status.conditions.iter_mut().find(|c| c.r#type == type_) {
        if c.status != value {
            c.status = value.to_string();
            c.last_transition_time = now.to_string();
        }
        return;
    }
    status.conditions.push(v1::PodCondition {
        r#type: type_.to_string(),
        status: value.to_string(),
        last_transition_time: now.to_string(),
        ..Default::default()
    });
}

fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    let suffix: String = id
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}
