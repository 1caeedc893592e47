//! The public `capstan.v1.Api` gRPC service: decodes requests, calls the [`Registry`], and maps
//! errors to statuses (in `crate::error`, the one place that does it).

use std::pin::Pin;

use api::v1::{self, api_server::Api};
use api::Kind;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::registry::Registry;
use crate::error::Error;

/// The gRPC face of the API server.
#[derive(Debug, Clone)]
pub struct ApiService {
    registry: Registry,
}

impl ApiService {
    /// A service over `registry`.
    pub fn new(registry: Registry) -> Self {
        ApiService { registry }
    }
}

fn kind(s: &str) -> Result<Kind, Status> {
    Kind::parse(s).ok_or_else(|| {
        Status::invalid_argument(format!("kind: Unsupported value: {s:?}: not a known kind"))
    })
}

fn object(o: Option<v1::Object>) -> Result<v1::Object, Status> {
    o.ok_or_else(|| Status::invalid_argument("object: Required value"))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Api for ApiService {
    async fn create(
        &self,
        req: Request<v1::CreateRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        let obj = object(req.into_inner().object)?;
        Ok(Response::new(self.registry.create(obj).await?))
    }

    async fn get(&self, req: Request<v1::GetRequest>) -> Result<Response<v1::Object>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.registry
                .get(kind(&r.kind)?, &r.namespace, &r.name)
                .await?,
        ))
    }

    async fn list(
        &self,
        req: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let r = req.into_inner();
        let (items, rev) = self
            .registry
            .list(kind(&r.kind)?, &r.namespace, &r.label_selector)
            .await?;
        Ok(Response::new(v1::ListResponse {
            items,
            resource_version: rev.to_string(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<v1::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let r = req.into_inner();
        let stream = self
            .registry
            .watch(
                kind(&r.kind)?,
                &r.namespace,
                &r.label_selector,
                &r.resource_version,
            )
            .await?;
        let out = stream.map(|ev| match ev {
            Ok(ev) => Ok(v1::WatchEvent {
                r#type: ev.event_type.as_str().to_string(),
                object: Some(ev.object),
            }),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn update(
        &self,
        req: Request<v1::UpdateRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        let obj = object(req.into_inner().object)?;
        Ok(Response::new(self.registry.update(obj).await?))
    }

    async fn update_status(
        &self,
        req: Request<v1::UpdateStatusRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        let obj = object(req.into_inner().object)?;
        Ok(Response::new(self.registry.update_status(obj).await?))
    }

    async fn bind(&self, req: Request<v1::BindRequest>) -> Result<Response<v1::Object>, Status> {
        let r = req.into_inner();
        if r.node_name.is_empty() {
            return Err(Error::Invalid {
                kind: "Binding".into(),
                name: r.name,
                details: "target.name: Required value".into(),
            }
            .into());
        }
        Ok(Response::new(
            self.registry
                .bind(&r.namespace, &r.name, &r.node_name)
                .await?,
        ))
    }

    async fn delete(
        &self,
        req: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::Object>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.registry
                .delete(kind(&r.kind)?, &r.namespace, &r.name)
                .await?,
        ))
    }
}
