//! The etcd `Lease` service: LeaseGrant, LeaseRevoke, the LeaseKeepAlive stream,
//! LeaseTimeToLive and LeaseLeases on top of [`Store`]'s lease API.
//!
//! Owns etcd's answers for leases that are gone: a keep-alive answers TTL 0 and a time-to-live
//! answers TTL -1 (what etcd's clients expect), while grant and revoke fail with etcd's error
//! texts (through [`super::status`]). Remaining TTLs are whole seconds, rounded down as etcd
//! does. The service must not decide anything about leases itself.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::pb;
use super::{header, status};
use crate::error::Error;
use crate::lease::LeaseId;
use crate::store::Store;

pub(crate) struct LeaseService {
    pub(crate) store: Store,
}

/// Answers one keep-alive: the lease's TTL, or TTL 0 if it does not exist (any more).
async fn keep_alive(store: &Store, id: LeaseId) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let ttl = match store.lease_keep_alive(id).await {
        Ok(ttl) => ttl,
        Err(Error::LeaseNotFound { .. }) => 0,
        Err(e) => return Err(status(e)),
    };
    Ok(pb::LeaseKeepAliveResponse {
        header: header(store, store.revision()),
        id,
        ttl,
    })
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let granted = self
            .store
            .lease_grant(req.ttl, req.id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: header(&self.store, self.store.revision()),
            id: granted.id,
            ttl: granted.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        let revision = self.store.lease_revoke(req.id).await.map_err(status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: header(&self.store, revision),
        }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let incoming = request.into_inner();
        // One answer per request, in order; the stream ends when the client stops sending.
        let answers = futures::stream::unfold(
            (self.store.clone(), incoming),
            |(store, mut incoming)| async move {
                let request = incoming.next().await?.ok()?;
                let answer = keep_alive(&store, request.id).await;
                Some((answer, (store, incoming)))
            },
        );
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let header = header(&self.store, self.store.revision());
        let response = match self.store.lease_time_to_live(req.id, req.keys).await {
            Ok(ttl) => pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: i64::try_from(ttl.remaining.as_secs()).unwrap_or(i64::MAX),
                granted_ttl: ttl.granted_ttl,
                keys: ttl.keys,
            },
            Err(Error::LeaseNotFound { .. }) => pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(status(e)),
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self.store.leases().await.map_err(status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(&self.store, self.store.revision()),
            leases: leases
                .into_iter()
                .map(|lease| pb::LeaseStatus { id: lease.id })
                .collect(),
        }))
    }
}
