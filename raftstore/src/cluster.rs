//! Cluster membership configuration and the pure decisions made from it: parsing
//! `--initial-cluster`, resolving this member's id, whether this start must call `initialize`,
//! and the openraft timing/snapshot policy.
//!
//! This module does no I/O; [`crate::Store::open_cluster`] acts on what it decides.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::NodeId;

/// One member of the initial cluster, as given by `name=peer_url` in `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name (`n1`).
    pub name: String,
    /// The member's Raft id: its 1-based position in the initial cluster list.
    pub id: NodeId,
    /// The URL its peers reach it at (`http://127.0.0.1:2380`).
    pub peer_url: String,
}

/// Whether this start creates a new cluster or joins one that already exists (as in etcd).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialClusterState {
    /// The members of the initial cluster form a new cluster; the lowest id initialises it.
    #[default]
    New,
    /// The cluster exists; this member never initialises and waits to be added by the leader.
    Existing,
}

/// Raft timing and log compaction policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTuning {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind the last snapshot, for slow followers to catch up without one.
    pub logs_to_keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
        }
    }
}

impl RaftTuning {
    /// The openraft configuration for this tuning.
    pub(crate) fn to_openraft(&self) -> Result<openraft::Config> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "capstan".to_string(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.logs_to_keep_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::InvalidConfig(e.to_string()))
    }
}

/// Where and as whom a member of a multi-member cluster runs.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This member's name.
    pub name: String,
    /// This member's Raft id.
    pub node_id: NodeId,
    /// Directory holding the sled database (created if missing).
    pub data_dir: PathBuf,
    /// Where the peer service listens (`http://127.0.0.1:2380`).
    pub listen_peer_url: String,
    /// The members of the initial cluster (all members must be given the same list).
    pub initial_cluster: Vec<InitialMember>,
    /// New cluster or joining an existing one.
    pub initial_cluster_state: InitialClusterState,
    /// Raft timing and snapshot policy.
    pub tuning: RaftTuning,
}

impl ClusterConfig {
    /// A member of a new cluster: `initial_cluster` is `n1=http://h:p,n2=...`, `name` must be
    /// listed in it and its id is its position there.
    pub fn new(
        name: &str,
        data_dir: PathBuf,
        listen_peer_url: &str,
        initial_cluster: &str,
    ) -> Result<Self> {
        let members = parse_initial_cluster(initial_cluster)?;
        let node_id = members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.id)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "member {name:?} is not listed in the initial cluster; give it an explicit id \
                     and join an existing cluster instead"
                ))
            })?;
        Ok(ClusterConfig {
            name: name.to_string(),
            node_id,
            data_dir,
            listen_peer_url: listen_peer_url.to_string(),
            initial_cluster: members,
            initial_cluster_state: InitialClusterState::New,
            tuning: RaftTuning::default(),
        })
    }

    /// A member that joins an existing cluster: it starts empty and waits for the leader to add
    /// it (as a learner, then a voter) under `node_id` with its peer URL.
    pub fn joining(name: &str, node_id: NodeId, data_dir: PathBuf, listen_peer_url: &str) -> Self {
        ClusterConfig {
            name: name.to_string(),
            node_id,
            data_dir,
            listen_peer_url: listen_peer_url.to_string(),
            initial_cluster: Vec::new(),
            initial_cluster_state: InitialClusterState::Existing,
            tuning: RaftTuning::default(),
        }
    }
}

/// Parses `n1=http://127.0.0.1:2380,n2=...`; ids are 1-based positions. Names must be unique.
pub fn parse_initial_cluster(spec: &str) -> Result<Vec<InitialMember>> {
    let mut members: Vec<InitialMember> = Vec::new();
    for (pos, part) in spec.split(',').map(str::trim).enumerate() {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            Error::InvalidConfig(format!("initial cluster entry {part:?} is not name=url"))
        })?;
        let (name, url) = (name.trim(), url.trim());
        if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::InvalidConfig(format!(
                "initial cluster entry {part:?} needs a name and an http(s):// URL"
            )));
        }
        if members.iter().any(|m| m.name == name) {
            return Err(Error::InvalidConfig(format!(
                "member {name:?} is listed twice in the initial cluster"
            )));
        }
        members.push(InitialMember {
            name: name.to_string(),
            id: pos as NodeId + 1,
            peer_url: url.to_string(),
        });
    }
    Ok(members)
}

/// Whether this start must call `initialize`: only the lowest-id member of a new cluster, and
/// only if its storage holds no Raft state yet (so a restart never re-initialises).
pub fn should_initialize(cfg: &ClusterConfig, already_initialized: bool) -> bool {
    !already_initialized
        && cfg.initial_cluster_state == InitialClusterState::New
        && cfg.initial_cluster.iter().map(|m| m.id).min() == Some(cfg.node_id)
}

/// The socket address to bind for a peer URL such as `http://127.0.0.1:2380`.
pub fn listen_addr(peer_url: &str) -> Result<std::net::SocketAddr> {
    let rest = peer_url
        .strip_prefix("http://")
        .ok_or_else(|| Error::InvalidConfig(format!("peer URL {peer_url:?} must be http://")))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .map_err(|e| Error::InvalidConfig(format!("peer URL {peer_url:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str =
        "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2381,n3=http://127.0.0.1:2382";

    #[test]
    fn initial_cluster_ids_follow_list_position() -> Result<()> {
        let members = parse_initial_cluster(THREE)?;
        let ids: Vec<_> = members.iter().map(|m| (m.name.as_str(), m.id)).collect();
        assert_eq!(ids, vec![("n1", 1), ("n2", 2), ("n3", 3)]);
        assert_eq!(members[2].peer_url, "http://127.0.0.1:2382");
        Ok(())
    }

    #[test]
    fn malformed_or_duplicate_initial_cluster_entries_are_rejected() {
        for bad in [
            "n1",
            "n1=127.0.0.1:2380",
            "=http://a:1",
            "n1=http://a:1,n1=http://b:1",
        ] {
            assert!(parse_initial_cluster(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn only_the_lowest_id_of_a_new_cluster_initialises_and_only_once() -> Result<()> {
        let n1 = ClusterConfig::new("n1", "/d".into(), "http://127.0.0.1:2380", THREE)?;
        let n2 = ClusterConfig::new("n2", "/d".into(), "http://127.0.0.1:2381", THREE)?;
        assert!(should_initialize(&n1, false));
        assert!(
            !should_initialize(&n1, true),
            "restart must not re-initialise"
        );
        assert!(!should_initialize(&n2, false));
        let existing = ClusterConfig {
            initial_cluster_state: InitialClusterState::Existing,
            ..n1
        };
        assert!(!should_initialize(&existing, false));
        let joiner = ClusterConfig::joining("n4", 4, "/d".into(), "http://127.0.0.1:2383");
        assert!(!should_initialize(&joiner, false));
        Ok(())
    }

    #[test]
    fn a_name_missing_from_the_initial_cluster_is_a_config_error() {
        assert!(matches!(
            ClusterConfig::new("n9", "/d".into(), "http://127.0.0.1:2380", THREE),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn listen_addr_takes_host_and_port_of_the_url() -> Result<()> {
        assert_eq!(
            listen_addr("http://127.0.0.1:2380")?,
            "127.0.0.1:2380"
                .parse()
                .map_err(|_| Error::Corrupt("test"))?
        );
        assert!(listen_addr("https://127.0.0.1:2380").is_err());
        Ok(())
    }
}
