//! Cluster membership configuration and the pure decisions made from it: parsing
//! `--initial-cluster`, resolving this member's id (derived from its advertised peer URL, see
//! [`crate::member_id`]), whether this start must call `initialize` or join a running cluster,
//! and the openraft timing/snapshot policy.
//!
//! This module does no I/O; [`crate::Store::open_cluster`] acts on what it decides.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::member::{self, Member};
use crate::types::NodeId;

/// One member of the initial cluster, as given by `name=peer_url` in `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name (`n1`).
    pub name: String,
    /// The member's Raft id, derived from its peer URL ([`crate::member_id`]).
    pub id: NodeId,
    /// The URL its peers reach it at (`http://127.0.0.1:2380`), normalised.
    pub peer_url: String,
}

/// Whether this start creates a new cluster or joins one that already exists (as in etcd).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialClusterState {
    /// The members of the initial cluster form a new cluster; the lowest id initialises it.
    #[default]
    New,
    /// The cluster exists; this member never initialises and waits to be added (by `etcdctl
    /// member add`, [`crate::Store::add_member`], or by asking the cluster itself: see
    /// [`ClusterConfig::join`]).
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

/// openraft 0.9 lets a follower start an election only after `election_timeout_max` (the leader
/// lease) plus its randomised timeout have passed without a heartbeat, so after a leader dies
/// a new one is elected within 400 ms + 250..400 ms with these defaults: under a second, with
/// heartbeats every 50 ms (at least 13 must be missed before a member stands for election).
impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(250),
            election_timeout_max: Duration::from_millis(400),
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
    /// This member's Raft id (derived from `advertise_peer_url` unless given explicitly).
    pub node_id: NodeId,
    /// Directory holding the sled database (created if missing).
    pub data_dir: PathBuf,
    /// Where the peer service listens (`http://127.0.0.1:2380`; may be `http://0.0.0.0:2380`).
    pub listen_peer_url: String,
    /// The URL peers reach this member at: its entry in the initial cluster, else the listen
    /// URL.
    pub advertise_peer_url: String,
    /// Client URLs this member publishes in the membership (`etcdctl member list`,
    /// `endpoint status --cluster`); empty if it serves no client API.
    pub client_urls: Vec<String>,
    /// The members of the initial cluster (all members must be given the same list).
    pub initial_cluster: Vec<InitialMember>,
    /// New cluster or joining an existing one.
    pub initial_cluster_state: InitialClusterState,
    /// Peer URL of any running member to ask for admission on the first start (`--join`).
    pub join: Option<String>,
    /// Raft timing and snapshot policy.
    pub tuning: RaftTuning,
}

impl ClusterConfig {
    /// A member of a new cluster: `initial_cluster` is `n1=http://h:p,n2=...` and `name` must be
    /// listed in it; its id is derived from its peer URL there.
    pub fn new(
        name: &str,
        data_dir: PathBuf,
        listen_peer_url: &str,
        initial_cluster: &str,
    ) -> Result<Self> {
        let members = parse_initial_cluster(initial_cluster)?;
        let me = members.iter().find(|m| m.name == name).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "--initial-cluster: member {name:?} is not listed; list it, or join a running \
                 cluster with --join"
            ))
        })?;
        Ok(ClusterConfig {
            name: name.to_string(),
            node_id: me.id,
            data_dir,
            listen_peer_url: listen_peer_url.to_string(),
            advertise_peer_url: me.peer_url.clone(),
            client_urls: Vec::new(),
            initial_cluster: members,
            initial_cluster_state: InitialClusterState::New,
            join: None,
            tuning: RaftTuning::default(),
        })
    }

    /// A member that joins an existing cluster under an explicit `node_id`: it starts empty and
    /// waits until a running member adds it (as a learner, then a voter) with its peer URL,
    /// e.g. with [`crate::Store::add_learner`].
    pub fn joining(name: &str, node_id: NodeId, data_dir: PathBuf, listen_peer_url: &str) -> Self {
        ClusterConfig {
            name: name.to_string(),
            node_id,
            data_dir,
            listen_peer_url: listen_peer_url.to_string(),
            advertise_peer_url: listen_peer_url.to_string(),
            client_urls: Vec::new(),
            initial_cluster: Vec::new(),
            initial_cluster_state: InitialClusterState::Existing,
            join: None,
            tuning: RaftTuning::default(),
        }
    }

    /// A member that joins the cluster one of whose members listens at `join_url` (a peer
    /// URL): on its first start it asks that cluster to add it as a learner, catches up, and
    /// the leader promotes it to a voter. Its id is derived from `listen_peer_url` (see
    /// [`ClusterConfig::with_advertise_peer_url`] when peers reach it at another URL).
    pub fn join(
        name: &str,
        data_dir: PathBuf,
        listen_peer_url: &str,
        join_url: &str,
    ) -> Result<Self> {
        let advertise = member::normalize_peer_url(listen_peer_url)
            .map_err(|e| Error::InvalidConfig(format!("--listen-peer-url: {e}")))?;
        let join_url = member::normalize_peer_url(join_url)
            .map_err(|e| Error::InvalidConfig(format!("--join: {e}")))?;
        if join_url == advertise {
            return Err(Error::InvalidConfig(format!(
                "--join {join_url}: that is this member's own peer URL; give a running member's"
            )));
        }
        Ok(ClusterConfig {
            node_id: member::member_id(&advertise)?,
            advertise_peer_url: advertise,
            join: Some(join_url),
            ..ClusterConfig::joining(name, 0, data_dir, listen_peer_url)
        })
    }

    /// Sets the peer URL this member is reached at (when it listens on another, e.g.
    /// `0.0.0.0`) and derives the id from it. Refused if the initial cluster lists this member
    /// under a different URL.
    pub fn with_advertise_peer_url(mut self, url: &str) -> Result<Self> {
        let url = member::normalize_peer_url(url)
            .map_err(|e| Error::InvalidConfig(format!("--initial-advertise-peer-urls: {e}")))?;
        if let Some(listed) = self.initial_cluster.iter().find(|m| m.name == self.name) {
            if listed.peer_url != url {
                return Err(Error::InvalidConfig(format!(
                    "--initial-cluster lists {}={} but the advertised peer URL is {url}",
                    self.name, listed.peer_url
                )));
            }
        }
        self.node_id = member::member_id(&url)?;
        self.advertise_peer_url = url;
        Ok(self)
    }

    /// Sets the client URLs this member publishes (`http://10.0.0.1:2379`).
    pub fn with_client_urls(mut self, urls: &[String]) -> Result<Self> {
        for url in urls {
            member::check_client_url(url)
                .map_err(|e| Error::InvalidConfig(format!("--advertise-client-urls: {e}")))?;
        }
        self.client_urls = urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        Ok(self)
    }

    /// The record this member wants the membership to hold for it.
    pub(crate) fn member(&self, promote_when_caught_up: bool) -> Member {
        Member {
            name: self.name.clone(),
            peer_url: self.advertise_peer_url.clone(),
            client_urls: self.client_urls.clone(),
            promote_when_caught_up,
        }
    }

    /// The initial membership: every initial member's record, named, with this member's client
    /// URLs (the others publish theirs once they run).
    pub(crate) fn initial_members(&self) -> Vec<(NodeId, Member)> {
        self.initial_cluster
            .iter()
            .map(|m| {
                let member = if m.id == self.node_id {
                    self.member(false)
                } else {
                    Member {
                        name: m.name.clone(),
                        ..Member::new(m.peer_url.clone())
                    }
                };
                (m.id, member)
            })
            .collect()
    }
}

/// Parses `n1=http://127.0.0.1:2380,n2=...`. Each member's id is derived from its peer URL;
/// names and URLs must be unique.
pub fn parse_initial_cluster(spec: &str) -> Result<Vec<InitialMember>> {
    let mut members: Vec<InitialMember> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            Error::InvalidConfig(format!("--initial-cluster entry {part:?} is not name=url"))
        })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "--initial-cluster entry {part:?} needs a name"
            )));
        }
        let peer_url = member::normalize_peer_url(url)
            .map_err(|e| Error::InvalidConfig(format!("--initial-cluster entry {part:?}: {e}")))?;
        if members.iter().any(|m| m.name == name) {
            return Err(Error::InvalidConfig(format!(
                "--initial-cluster: member {name:?} is listed twice"
            )));
        }
        if let Some(other) = members.iter().find(|m| m.peer_url == peer_url) {
            return Err(Error::InvalidConfig(format!(
                "--initial-cluster: {name:?} and {:?} share the peer URL {peer_url}",
                other.name
            )));
        }
        members.push(InitialMember {
            name: name.to_string(),
            id: member::member_id(&peer_url)?,
            peer_url,
        });
    }
    Ok(members)
}

/// Whether this start must call `initialize`: only the lowest-id member of a new cluster, and
/// only if its storage holds no Raft state yet (so a restart never re-initialises).
pub fn should_initialize(cfg: &ClusterConfig, already_initialized: bool) -> bool {
    !already_initialized
        && cfg.join.is_none()
        && cfg.initial_cluster_state == InitialClusterState::New
        && cfg.initial_cluster.iter().map(|m| m.id).min() == Some(cfg.node_id)
}

/// Whether this start must ask a running cluster to add this member: only with `--join`, and
/// only while its storage holds no Raft state (a restarted member is already known).
pub fn should_join(cfg: &ClusterConfig, already_initialized: bool) -> Option<&str> {
    cfg.join.as_deref().filter(|_| !already_initialized)
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
    fn initial_cluster_ids_are_derived_from_peer_urls_not_positions() -> Result<()> {
        let members = parse_initial_cluster(THREE)?;
        let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["n1", "n2", "n3"]);
        for m in &members {
            assert_eq!(m.id, member::member_id(&m.peer_url)?);
        }
        // Reordering the list changes no id.
        let reordered = parse_initial_cluster(
            "n3=http://127.0.0.1:2382,n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2381",
        )?;
        let id_of = |ms: &[InitialMember], n: &str| ms.iter().find(|m| m.name == n).map(|m| m.id);
        assert_eq!(id_of(&reordered, "n1"), id_of(&members, "n1"));
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
            "n1=http://a:1,n2=http://A:1/",
            "n1=https://a:1",
        ] {
            let e = parse_initial_cluster(bad);
            assert!(
                matches!(&e, Err(Error::InvalidConfig(m)) if m.contains("--initial-cluster")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn only_the_lowest_id_of_a_new_cluster_initialises_and_only_once() -> Result<()> {
        let members = parse_initial_cluster(THREE)?;
        let lowest = members
            .iter()
            .min_by_key(|m| m.id)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let other = members
            .iter()
            .find(|m| m.name != lowest)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let first = ClusterConfig::new(&lowest, "/d".into(), "http://127.0.0.1:2380", THREE)?;
        let second = ClusterConfig::new(&other, "/d".into(), "http://127.0.0.1:2381", THREE)?;
        assert!(should_initialize(&first, false));
        assert!(
            !should_initialize(&first, true),
            "restart must not re-initialise"
        );
        assert!(!should_initialize(&second, false));
        let existing = ClusterConfig {
            initial_cluster_state: InitialClusterState::Existing,
            ..first
        };
        assert!(!should_initialize(&existing, false));
        let joiner = ClusterConfig::joining("n4", 4, "/d".into(), "http://127.0.0.1:2383");
        assert!(!should_initialize(&joiner, false));
        Ok(())
    }

    #[test]
    fn a_joining_member_asks_the_cluster_only_on_its_first_start() -> Result<()> {
        let cfg = ClusterConfig::join(
            "n4",
            "/d".into(),
            "http://127.0.0.1:2383",
            "http://127.0.0.1:2380/",
        )?;
        assert_eq!(cfg.node_id, member::member_id("http://127.0.0.1:2383")?);
        assert_eq!(should_join(&cfg, false), Some("http://127.0.0.1:2380"));
        assert_eq!(should_join(&cfg, true), None);
        assert!(!should_initialize(&cfg, false));
        assert!(
            ClusterConfig::join("n4", "/d".into(), "http://h:1", "http://h:1").is_err(),
            "joining via itself"
        );
        Ok(())
    }

    #[test]
    fn the_advertised_peer_url_sets_the_id_and_must_match_the_initial_cluster() -> Result<()> {
        let cfg = ClusterConfig::new("n1", "/d".into(), "http://0.0.0.0:2380", THREE)?;
        assert_eq!(cfg.advertise_peer_url, "http://127.0.0.1:2380");
        assert_eq!(cfg.node_id, member::member_id("http://127.0.0.1:2380")?);
        assert!(cfg
            .clone()
            .with_advertise_peer_url("http://127.0.0.1:2380")
            .is_ok());
        assert!(cfg.with_advertise_peer_url("http://10.0.0.1:2380").is_err());
        let joiner = ClusterConfig::join("n4", "/d".into(), "http://0.0.0.0:2383", "http://h:1")?
            .with_advertise_peer_url("http://10.0.0.4:2383")?;
        assert_eq!(joiner.node_id, member::member_id("http://10.0.0.4:2383")?);
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
