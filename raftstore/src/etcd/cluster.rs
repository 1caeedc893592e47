//! The etcd `Cluster` and `Maintenance` services: member list, remove and promote mapped onto
//! Raft membership, and member status.
//!
//! Owns only the translation; membership changes are [`Store`] calls. Adding members is not
//! offered here (Capstan adds a member only once it runs and has caught up).

use tonic::{Request, Response, Status};

use super::pb;
use super::{header, status, unsupported, EtcdServerConfig};
use crate::store::Store;

/// The version `Maintenance.Status` reports: etcd's API level, marked as Capstan.
const VERSION: &str = "3.5.0-capstan";

pub(crate) struct ClusterService {
    pub(crate) store: Store,
    pub(crate) cfg: EtcdServerConfig,
}

impl ClusterService {
    fn members(&self) -> Vec<pb::Member> {
        self.store
            .members()
            .members
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                name: self
                    .cfg
                    .member_names
                    .get(&m.id)
                    .cloned()
                    .unwrap_or_default(),
                peer_ur_ls: vec![m.peer_url],
                client_ur_ls: self.cfg.client_urls.get(&m.id).cloned().unwrap_or_default(),
                is_learner: !m.voter,
            })
            .collect()
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        header(&self.store, self.store.revision())
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(unsupported(
            "member add (start the member with `capstan store` and add it there)",
        ))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        self.store.remove_member(id).await.map_err(status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unsupported("member update"))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        self.store.promote(id).await.map_err(status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}

pub(crate) struct MaintenanceService {
    pub(crate) store: Store,
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        _request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        // Capstan raises no alarms.
        Ok(Response::new(pb::AlarmResponse {
            header: header(&self.store, self.store.revision()),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.store.members();
        let db_size = i64::try_from(self.store.db_size().map_err(status)?).unwrap_or(i64::MAX);
        let me = s.node_id;
        Ok(Response::new(pb::StatusResponse {
            header: header(&self.store, self.store.revision()),
            version: VERSION.to_string(),
            db_size,
            leader: s.leader.unwrap_or(0),
            raft_index: self.store.last_log_index(),
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: s.members.iter().any(|m| m.id == me && !m.voter),
        }))
    }
}
