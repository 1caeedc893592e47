//! The etcd `Cluster` and `Maintenance` services: member list, add, remove and promote mapped
//! onto Raft membership (names and client URLs from the replicated member records), and
//! member status.
//!
//! Owns only the translation and etcd's texts for membership errors; membership changes are
//! [`Store`] calls and the decisions behind them live in `crate::member`.

use tonic::{Request, Response, Status};

use super::pb;
use super::{header, status, unsupported, EtcdServerConfig};
use crate::member::MemberError;
use crate::store::Store;
use crate::store_cluster::MemberInfo;
use crate::types::NodeId;

/// The version `Maintenance.Status` reports: the etcd API level Capstan serves (clients compare
/// it with semver), marked as Capstan in the pre-release part.
const VERSION: &str = "3.5.0-capstan";

/// The gRPC metadata key carrying the leader's id (hex) on a "leader changed" error.
const LEADER_ID_KEY: &str = "capstan-leader-id";
/// The gRPC metadata key carrying the leader's peer URL on a "leader changed" error.
const LEADER_URL_KEY: &str = "capstan-leader-peer-url";

/// The status for a request that reached a member which is not the leader: etcd's text, plus
/// the leader's id and peer URL as metadata for clients that can use them.
pub(crate) fn leader_changed(leader: NodeId, leader_url: Option<&str>) -> Status {
    let mut status = Status::unavailable("etcdserver: leader changed");
    let meta = status.metadata_mut();
    if let Ok(id) = format!("{leader:x}").parse() {
        meta.insert(LEADER_ID_KEY, id);
    }
    if let Some(Ok(url)) = leader_url.map(str::parse) {
        meta.insert(LEADER_URL_KEY, url);
    }
    status
}

/// The status etcd answers a refused membership request with (clients match on the texts).
pub(crate) fn member_status(e: &MemberError) -> Status {
    match e {
        MemberError::NotFound { .. } => Status::not_found("etcdserver: member not found"),
        MemberError::NotLearner { .. } => {
            Status::failed_precondition("etcdserver: can only promote a learner member")
        }
        MemberError::LearnerNotReady { .. } => Status::failed_precondition(
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        MemberError::PeerUrlExists { .. } => {
            Status::failed_precondition("etcdserver: Peer URLs already exists")
        }
        MemberError::IdExists { .. } => {
            Status::failed_precondition("etcdserver: member ID already exist")
        }
        MemberError::BadUrl { url, reason } => Status::invalid_argument(format!(
            "etcdserver: given member URLs are invalid: {url:?}: {reason}"
        )),
        MemberError::LastVoter { .. } => Status::failed_precondition(
            "etcdserver: re-configuration failed due to not enough started members",
        ),
    }
}

pub(crate) struct ClusterService {
    pub(crate) store: Store,
    pub(crate) cfg: EtcdServerConfig,
}

impl ClusterService {
    /// A member as etcd lists it; the fallbacks fill in only what its record leaves empty.
    fn member(&self, m: MemberInfo) -> pb::Member {
        let name = if m.name.is_empty() {
            self.cfg
                .member_names
                .get(&m.id)
                .cloned()
                .unwrap_or_default()
        } else {
            m.name
        };
        let client_ur_ls = if m.client_urls.is_empty() {
            self.cfg.client_urls.get(&m.id).cloned().unwrap_or_default()
        } else {
            m.client_urls
        };
        pb::Member {
            id: m.id,
            name,
            peer_ur_ls: vec![m.peer_url],
            client_ur_ls,
            is_learner: !m.voter,
        }
    }

    fn members(&self, members: Vec<MemberInfo>) -> Vec<pb::Member> {
        members.into_iter().map(|m| self.member(m)).collect()
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        header(&self.store, self.store.revision())
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    /// Adds a member by its peer URL under the id derived from it. A learner stays one until
    /// promoted; a voter is added as a learner that the leader promotes once it has caught up,
    /// so a member that is not running yet never counts for quorum.
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = request.into_inner();
        let [peer_url] = req.peer_ur_ls.as_slice() else {
            return Err(Status::invalid_argument(format!(
                "etcdserver: given member URLs are invalid: a Capstan member has exactly one \
                 peer URL, got {:?}",
                req.peer_ur_ls
            )));
        };
        let (id, members) = self
            .store
            .add_member(peer_url, req.is_learner)
            .await
            .map_err(status)?;
        let added = members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.peer_url.clone())
            .unwrap_or_else(|| peer_url.clone());
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: vec![added],
                client_ur_ls: Vec::new(),
                // The role asked for: a voter add is a learner only until it has caught up.
                is_learner: req.is_learner,
            }),
            members: self.members(members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        let (_, members) = self
            .store
            .change(crate::wire::Proposal::Remove { id })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members: self.members(members),
        }))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unsupported(
            "member update (a member's id follows from its peer URL: remove the member and add \
             it again with the new URL)",
        ))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: self.members(self.store.members().members),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        let (_, members) = self
            .store
            .change(crate::wire::Proposal::Promote { id })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members: self.members(members),
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
            is_learner: s.is_learner(),
        }))
    }

    type SnapshotStream = super::snapshot::SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        super::snapshot::serve(&self.store).await.map(Response::new)
    }
}
