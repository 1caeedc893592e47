//! The client SDK against a real tonic server on loopback. The server is a small
//! in-memory implementation of the `Api` service written for this test; it exercises the
//! wire contract, the `Status` -> `ClientError` mapping and the watch stream, not any
//! storage semantics (those are the API server's and are tested there).

// The in-memory server is test code too: a poisoned lock or a failed bind is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Mutex;

use api::client::{Client, ClientError};
use api::v1::{
    self,
    api_server::{Api, ApiServer},
};
use api::{manifest, validation, EventType, Kind, Selector};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

type Key = (Kind, String, String);

#[derive(Default)]
struct MemApi {
    objects: Mutex<BTreeMap<Key, v1::Object>>,
    revision: Mutex<u64>,
}

fn key(obj: &v1::Object) -> Result<Key, Status> {
    let kind = obj
        .kind()
        .ok_or_else(|| Status::invalid_argument("kind: required"))?;
    Ok((kind, obj.namespace().to_string(), obj.name().to_string()))
}

fn parse_kind(s: &str) -> Result<Kind, Status> {
    Ok(s.parse::<Kind>()?)
}

impl MemApi {
    fn bump(&self) -> String {
        let mut rev = self.revision.lock().unwrap();
        *rev += 1;
        rev.to_string()
    }

    fn replace(
        &self,
        obj: Option<v1::Object>,
        wrong_rv: Status,
    ) -> Result<Response<v1::Object>, Status> {
        let mut obj = obj.ok_or_else(|| Status::invalid_argument("object: required"))?;
        let key = key(&obj)?;
        let mut objects = self.objects.lock().unwrap();
        let current = objects
            .get(&key)
            .ok_or_else(|| Status::not_found(format!("{key:?}")))?;
        if obj.resource_version() != current.resource_version() {
            return Err(wrong_rv);
        }
        obj.metadata_mut().resource_version = self.bump();
        objects.insert(key, obj.clone());
        Ok(Response::new(obj))
    }
}

#[tonic::async_trait]
impl Api for MemApi {
    async fn create(
        &self,
        req: Request<v1::CreateRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        let mut obj = req.into_inner().object.unwrap_or_default();
        api::defaults::apply(&mut obj);
        validation::ensure_valid(&obj)?;
        let key = key(&obj)?;
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(&key) {
            return Err(Status::already_exists(format!(
                "{} {:?} already exists",
                key.0, key.2
            )));
        }
        obj.metadata_mut().resource_version = self.bump();
        objects.insert(key, obj.clone());
        Ok(Response::new(obj))
    }

    async fn get(&self, req: Request<v1::GetRequest>) -> Result<Response<v1::Object>, Status> {
        let r = req.into_inner();
        let key = (parse_kind(&r.kind)?, r.namespace, r.name);
        let objects = self.objects.lock().unwrap();
        objects
            .get(&key)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("{key:?}")))
    }

    async fn list(
        &self,
        req: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let r = req.into_inner();
        let kind = parse_kind(&r.kind)?;
        let selector = Selector::parse(&r.label_selector)?;
        let items = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|((k, ns, _), o)| {
                *k == kind
                    && (r.namespace.is_empty() || *ns == r.namespace)
                    && selector.matches_object(o)
            })
            .map(|(_, o)| o.clone())
            .collect();
        let resource_version = self.revision.lock().unwrap().to_string();
        Ok(Response::new(v1::ListResponse {
            items,
            resource_version,
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

    /// Replays current objects as ADDED, then a BOOKMARK, then fails as a lost leader would.
    async fn watch(
        &self,
        req: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let list = self
            .list(Request::new(v1::ListRequest {
                kind: r.kind,
                namespace: r.namespace,
                label_selector: r.label_selector,
            }))
            .await?
            .into_inner();
        let mut events: Vec<Result<v1::WatchEvent, Status>> = list
            .items
            .into_iter()
            .map(|o| Ok(v1::WatchEvent::new(EventType::Added, o)))
            .collect();
        events.push(Ok(v1::WatchEvent {
            r#type: EventType::Bookmark.as_str().into(),
            object: None,
        }));
        events.push(Err(Status::unavailable("leader lost")));
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }

    async fn update(
        &self,
        req: Request<v1::UpdateRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        self.replace(
            req.into_inner().object,
            Status::aborted("resourceVersion is stale"),
        )
    }

    async fn update_status(
        &self,
        req: Request<v1::UpdateStatusRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        self.replace(
            req.into_inner().object,
            Status::failed_precondition("resourceVersion is stale"),
        )
    }

    async fn bind(&self, req: Request<v1::BindRequest>) -> Result<Response<v1::Object>, Status> {
        let r = req.into_inner();
        let key = (Kind::Pod, r.namespace, r.name);
        let mut objects = self.objects.lock().unwrap();
        let obj = objects
            .get_mut(&key)
            .ok_or_else(|| Status::not_found(format!("{key:?}")))?;
        let spec = obj
            .as_pod_mut()
            .and_then(|p| p.spec.as_mut())
            .ok_or_else(|| Status::internal("no spec"))?;
        spec.node_name = r.node_name;
        obj.metadata_mut().resource_version = self.bump();
        Ok(Response::new(obj.clone()))
    }

    async fn delete(
        &self,
        req: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        let r = req.into_inner();
        let key = (parse_kind(&r.kind)?, r.namespace, r.name);
        let removed = self.objects.lock().unwrap().remove(&key);
        removed
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("{key:?}")))
    }
}

/// Serves `MemApi` on an ephemeral loopback port; the server task is aborted on drop.
struct TestServer {
    endpoint: String,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ApiServer::new(MemApi::default()))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        TestServer { endpoint, task }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: busybox:1.36
";

#[tokio::test]
async fn client_round_trips_every_call_and_maps_errors() {
    let server = TestServer::start().await;
    let client = Client::connect(server.endpoint.clone()).await.unwrap();
    let pod = manifest::decode_one(POD).unwrap();

    let created = client.create(pod.clone()).await.unwrap();
    assert_eq!(created.namespace(), "default", "server defaulted it");
    assert_eq!(created.resource_version(), "1");
    assert!(matches!(
        client.create(pod.clone()).await,
        Err(ClientError::AlreadyExists(_))
    ));

    let mut bad = pod.clone();
    bad.as_pod_mut().unwrap().spec.as_mut().unwrap().containers[0]
        .image
        .clear();
    bad.metadata_mut().name = "bad".into();
    match client.create(bad).await {
        Err(ClientError::Invalid(m)) => {
            assert!(m.contains("spec.containers[0].image: required"), "{m}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    assert_eq!(
        client.get(Kind::Pod, "default", "web").await.unwrap(),
        created
    );
    assert!(matches!(
        client.get(Kind::Pod, "default", "nope").await,
        Err(ClientError::NotFound(_))
    ));

    let listed = client.list(Kind::Pod, "default", "app=web").await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&created));
    assert!(client
        .list(Kind::Pod, "", "app!=web")
        .await
        .unwrap()
        .is_empty());
    let with_rv = client.list_with_version(Kind::Pod, "", "").await.unwrap();
    assert_eq!(with_rv.resource_version, "1");
    match client.list(Kind::Pod, "", "app in (web").await {
        Err(ClientError::Invalid(m)) => assert!(m.contains("label selector"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }

    let mut stale = created.clone();
    stale.metadata_mut().resource_version = "0".into();
    assert!(matches!(
        client.update(stale.clone()).await,
        Err(ClientError::Conflict(_))
    ));
    assert!(matches!(
        client.update_status(stale).await,
        Err(ClientError::Conflict(_))
    ));
    let mut next = created.clone();
    next.metadata_mut()
        .labels
        .insert("tier".into(), "front".into());
    let updated = client.update(next).await.unwrap();
    assert_eq!(updated.resource_version(), "2");

    let bound = client.bind("default", "web", "node-1").await.unwrap();
    assert_eq!(
        bound.as_pod().unwrap().spec.as_ref().unwrap().node_name,
        "node-1"
    );

    let mut watch = client.watch(Kind::Pod, "", "tier=front", "").await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.event_type(), Some(EventType::Added));
    assert_eq!(first.object.unwrap().name(), "web");
    assert_eq!(
        watch.next().await.unwrap().unwrap().event_type(),
        Some(EventType::Bookmark)
    );
    assert!(matches!(
        watch.next().await,
        Some(Err(ClientError::Unavailable(_)))
    ));

    let gone = client.delete(Kind::Pod, "default", "web").await.unwrap();
    assert_eq!(gone.name(), "web");
    assert!(matches!(
        client.delete(Kind::Pod, "default", "web").await,
        Err(ClientError::NotFound(_))
    ));
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_and_lazy_clients_fail_on_use() {
    // Bind then drop to get a loopback port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("http://{addr}");
    assert!(matches!(
        Client::connect(endpoint.clone()).await,
        Err(ClientError::Connect { .. })
    ));
    let lazy = Client::connect_lazy(endpoint).unwrap();
    let err = lazy.get(Kind::Node, "", "n1").await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(matches!(
        Client::connect_lazy("not a uri"),
        Err(ClientError::Connect { .. })
    ));
}
