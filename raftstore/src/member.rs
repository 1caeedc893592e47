//! Member identity and the pure membership decisions: the replicated [`Member`] record (openraft's
//! `Node` type, so every member's name, peer URL and client URLs travel in the membership config
//! and are the same on every member), member ids derived from peer URLs, and the checks a leader
//! makes before adding, promoting, removing or publishing a member.
//!
//! This module does no I/O and never calls Raft; `proposal` and `member_agent` act on what it
//! decides.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::NodeId;

/// One member as recorded in the Raft membership config (openraft's `Node`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name; empty until the member itself publishes it (etcd's "unstarted").
    pub name: String,
    /// The URL its peers reach its Raft peer service at (`http://10.0.0.1:2380`).
    pub peer_url: String,
    /// Where it serves the etcd client API; published by the member once it runs.
    pub client_urls: Vec<String>,
    /// Added as a voter: the leader promotes this learner as soon as it has caught up.
    /// Meaningless once the member is a voter.
    pub promote_when_caught_up: bool,
}

impl Member {
    /// A member known only by its peer URL (as `MemberAdd` knows it).
    pub fn new(peer_url: impl Into<String>) -> Self {
        Member {
            peer_url: peer_url.into(),
            ..Member::default()
        }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.name.is_empty() {
            "(unstarted)"
        } else {
            &self.name
        };
        write!(f, "{name}@{}", self.peer_url)
    }
}

/// Why a membership request was refused; each variant says what to fix.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberError {
    /// No member has this id; list the members and use one of their ids.
    #[error("member {id:x} not found")]
    NotFound {
        /// The id asked for.
        id: NodeId,
    },
    /// Only learners can be promoted.
    #[error("member {id:x} is not a learner")]
    NotLearner {
        /// The member's id.
        id: NodeId,
    },
    /// The learner has not caught up with the leader yet; retry once it has.
    #[error("learner {id:x} is not in sync with the leader (matched index {matched:?} of {leader_index})")]
    LearnerNotReady {
        /// The learner's id.
        id: NodeId,
        /// The last log index the leader knows the learner holds.
        matched: Option<u64>,
        /// The leader's last log index.
        leader_index: u64,
    },
    /// Another member already uses this peer URL.
    #[error("peer URL {url} is already used by member {id:x}")]
    PeerUrlExists {
        /// The URL.
        url: String,
        /// The member using it.
        id: NodeId,
    },
    /// The id is taken by a member with a different peer URL (a hash collision or an explicit id).
    #[error("member id {id:x} is already used by the member at {peer_url}")]
    IdExists {
        /// The id.
        id: NodeId,
        /// The peer URL of the member holding it.
        peer_url: String,
    },
    /// A peer or client URL is not usable; fix the flag or request.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Removing this member would leave the cluster without voters.
    #[error("cannot remove member {id:x}: it is the last voter")]
    LastVoter {
        /// The member's id.
        id: NodeId,
    },
}

/// Normalises a peer URL: `http://host:port` with scheme and host in lower case and no trailing
/// slash. Peers talk plain HTTP/2, so other schemes, paths and queries are refused.
pub fn normalize_peer_url(url: &str) -> Result<String, MemberError> {
    let trimmed = url.trim();
    let bad = |reason: &str| MemberError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or_else(|| bad("needs an http:// scheme"))?;
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad("only http:// is supported (peers do not speak TLS)"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("needs a host and port"));
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad(
            "must be scheme://host:port without path, query or user",
        ));
    }
    Ok(format!("http://{}", authority.to_ascii_lowercase()))
}

/// The member id for a peer URL: the first eight bytes (big-endian) of SHA-256 over the normalised
/// URL. Stable across restarts and processes, so a member added with `etcdctl member add
/// --peer-urls=URL` and the member started with that URL agree on the id without asking each other
/// (etcd likewise derives ids from peer URLs). Never 0, which etcd clients read as "no member".
pub fn member_id(peer_url: &str) -> Result<NodeId, MemberError> {
    let url = normalize_peer_url(peer_url)?;
    let digest = Sha256::digest(url.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Ok(NodeId::from_be_bytes(first).max(1))
}

/// Checks a client URL (`http://host:port` or `https://...`) before it is published.
pub fn check_client_url(url: &str) -> Result<(), MemberError> {
    let bad = |reason: &str| MemberError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("needs an http:// or https:// scheme"))?;
    if !(scheme == "http" || scheme == "https") {
        return Err(bad("needs an http:// or https:// scheme"));
    }
    if rest.trim_end_matches('/').is_empty() || rest.contains(' ') {
        return Err(bad("needs a host and port"));
    }
    Ok(())
}

/// The membership as the pure decisions see it: voter ids and every member's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipView {
    /// Members that count for quorum (in any config of a joint membership).
    pub voters: BTreeSet<NodeId>,
    /// Every member (voters and learners) with its record.
    pub nodes: BTreeMap<NodeId, Member>,
}

impl MembershipView {
    /// The view of an openraft membership.
    pub fn of(membership: &openraft::Membership<NodeId, Member>) -> Self {
        MembershipView {
            voters: membership.voter_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, node)| (*id, node.clone()))
                .collect(),
        }
    }

    fn is_learner(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id) && !self.voters.contains(&id)
    }
}

/// What adding a member amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddDecision {
    /// Propose the member as a new learner.
    Add,
    /// The same member (id and peer URL) is already in the cluster: nothing to do (a retried
    /// join, or a member restarted before it received any log).
    AlreadyMember,
}

/// Decides whether `member` can be added under `id`. A `rejoin` (the member itself asking
/// again) finds it already there and is done; an operator's add of a peer URL in use is
/// refused, as etcd refuses it.
pub fn decide_add(
    view: &MembershipView,
    id: NodeId,
    member: &Member,
    rejoin: bool,
) -> Result<AddDecision, MemberError> {
    if let Some(existing) = view.nodes.get(&id) {
        if existing.peer_url == member.peer_url {
            if rejoin {
                return Ok(AddDecision::AlreadyMember);
            }
            return Err(MemberError::PeerUrlExists {
                url: member.peer_url.clone(),
                id,
            });
        }
        return Err(MemberError::IdExists {
            id,
            peer_url: existing.peer_url.clone(),
        });
    }
    if let Some((other, _)) = view
        .nodes
        .iter()
        .find(|(_, m)| m.peer_url == member.peer_url)
    {
        return Err(MemberError::PeerUrlExists {
            url: member.peer_url.clone(),
            id: *other,
        });
    }
    Ok(AddDecision::Add)
}

/// Whether a learner whose log matches the leader's up to `matched` has caught up with a leader
/// whose last log index is `leader_index`: as etcd, at least 90% of the leader's log.
pub fn learner_caught_up(matched: Option<u64>, leader_index: u64) -> bool {
    match matched {
        Some(m) => u128::from(m) * 10 >= u128::from(leader_index) * 9,
        None => false,
    }
}

/// Checks that `id` is a learner that has caught up (`matched` as the leader's replication
/// reports it) and may be promoted.
pub fn decide_promote(
    view: &MembershipView,
    id: NodeId,
    matched: Option<u64>,
    leader_index: u64,
) -> Result<(), MemberError> {
    if !view.nodes.contains_key(&id) {
        return Err(MemberError::NotFound { id });
    }
    if !view.is_learner(id) {
        return Err(MemberError::NotLearner { id });
    }
    if !learner_caught_up(matched, leader_index) {
        return Err(MemberError::LearnerNotReady {
            id,
            matched,
            leader_index,
        });
    }
    Ok(())
}

/// What removing a member amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveKind {
    /// A voter: a joint-consensus change that also drops its record.
    Voter,
    /// A learner: only its record goes.
    Learner,
}

/// Checks that `id` can be removed.
pub fn decide_remove(view: &MembershipView, id: NodeId) -> Result<RemoveKind, MemberError> {
    if !view.nodes.contains_key(&id) {
        return Err(MemberError::NotFound { id });
    }
    if !view.voters.contains(&id) {
        return Ok(RemoveKind::Learner);
    }
    if view.voters.len() == 1 {
        return Err(MemberError::LastVoter { id });
    }
    Ok(RemoveKind::Voter)
}

/// Learners the leader should promote now: added as voters and caught up. `matched` is the
/// leader's replication progress per member, `leader_index` its last log index.
pub fn learners_to_promote(
    view: &MembershipView,
    matched: &BTreeMap<NodeId, Option<u64>>,
    leader_index: u64,
) -> Vec<NodeId> {
    view.nodes
        .iter()
        .filter(|(id, m)| m.promote_when_caught_up && view.is_learner(**id))
        .filter(|(id, _)| learner_caught_up(matched.get(id).copied().flatten(), leader_index))
        .map(|(id, _)| *id)
        .collect()
}

/// The record member `id` should publish to carry `name` and `client_urls`, or `None` if it is
/// not a member (yet) or the replicated record already says so. The peer URL is never changed
/// here: changing where a member is reached is a remove and an add.
pub fn publish_update(
    view: &MembershipView,
    id: NodeId,
    name: &str,
    client_urls: &[String],
) -> Option<Member> {
    let current = view.nodes.get(&id)?;
    if current.name == name && current.client_urls == client_urls {
        return None;
    }
    Some(Member {
        name: name.to_string(),
        client_urls: client_urls.to_vec(),
        ..current.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(voters: &[NodeId], learners: &[NodeId]) -> MembershipView {
        let nodes = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, Member::new(format!("http://10.0.0.{id}:2380"))))
            .collect();
        MembershipView {
            voters: voters.iter().copied().collect(),
            nodes,
        }
    }

    #[test]
    fn member_ids_are_stable_hashes_of_the_normalised_peer_url() -> Result<(), MemberError> {
        let id = member_id("http://127.0.0.1:2380")?;
        // The same URL always gives the same id, however it is spelled.
        assert_eq!(member_id("HTTP://127.0.0.1:2380/")?, id);
        assert_eq!(member_id(" http://127.0.0.1:2380 ")?, id);
        assert_ne!(member_id("http://127.0.0.1:2381")?, id);
        // Pinned (`printf http://127.0.0.1:2380 | sha256sum`) so that an accidental change of
        // the derivation, which would orphan every existing data directory, fails here.
        assert_eq!(format!("{id:x}"), "c904513b9703b492");
        Ok(())
    }

    #[test]
    fn unusable_peer_urls_are_refused_with_the_reason() {
        for bad in [
            "127.0.0.1:2380",
            "https://127.0.0.1:2380",
            "http://",
            "http://h:1/path",
            "http://h:1?x",
        ] {
            assert!(
                matches!(member_id(bad), Err(MemberError::BadUrl { .. })),
                "{bad} accepted"
            );
        }
        assert!(check_client_url("http://127.0.0.1:2379").is_ok());
        assert!(check_client_url("127.0.0.1:2379").is_err());
    }

    #[test]
    fn a_rejoin_finds_itself_added_but_an_operator_add_of_a_used_url_is_refused() {
        let v = view(&[1, 2], &[]);
        let same = Member::new("http://10.0.0.1:2380");
        assert_eq!(
            decide_add(&v, 1, &same, true),
            Ok(AddDecision::AlreadyMember)
        );
        assert!(matches!(
            decide_add(&v, 1, &same, false),
            Err(MemberError::PeerUrlExists { id: 1, .. })
        ));
        assert!(matches!(
            decide_add(&v, 9, &same, true),
            Err(MemberError::PeerUrlExists { id: 1, .. })
        ));
        assert!(matches!(
            decide_add(&v, 2, &Member::new("http://10.0.0.9:2380"), true),
            Err(MemberError::IdExists { id: 2, .. })
        ));
        assert_eq!(
            decide_add(&v, 9, &Member::new("http://10.0.0.9:2380"), false),
            Ok(AddDecision::Add)
        );
    }

    #[test]
    fn a_learner_is_promoted_only_once_it_holds_ninety_percent_of_the_leaders_log() {
        let v = view(&[1, 2, 3], &[4]);
        assert_eq!(
            decide_promote(&v, 4, Some(5), 100),
            Err(MemberError::LearnerNotReady {
                id: 4,
                matched: Some(5),
                leader_index: 100
            })
        );
        assert!(decide_promote(&v, 4, None, 0).is_err(), "never contacted");
        assert_eq!(decide_promote(&v, 4, Some(90), 100), Ok(()));
        assert_eq!(
            decide_promote(&v, 2, Some(100), 100),
            Err(MemberError::NotLearner { id: 2 })
        );
        assert_eq!(
            decide_promote(&v, 7, Some(100), 100),
            Err(MemberError::NotFound { id: 7 })
        );
    }

    #[test]
    fn removal_distinguishes_voters_learners_strangers_and_the_last_voter() {
        let v = view(&[1, 2], &[3]);
        assert_eq!(decide_remove(&v, 1), Ok(RemoveKind::Voter));
        assert_eq!(decide_remove(&v, 3), Ok(RemoveKind::Learner));
        assert_eq!(decide_remove(&v, 9), Err(MemberError::NotFound { id: 9 }));
        assert_eq!(
            decide_remove(&view(&[1], &[]), 1),
            Err(MemberError::LastVoter { id: 1 })
        );
    }

    #[test]
    fn only_learners_added_as_voters_and_caught_up_are_auto_promoted() {
        let mut v = view(&[1], &[4, 5, 6]);
        for id in [4, 5] {
            if let Some(m) = v.nodes.get_mut(&id) {
                m.promote_when_caught_up = true;
            }
        }
        let matched = BTreeMap::from([(4, Some(100)), (5, Some(10)), (6, Some(100))]);
        // 5 lags, 6 was added as a learner on purpose.
        assert_eq!(learners_to_promote(&v, &matched, 100), vec![4]);
    }

    #[test]
    fn a_member_publishes_only_when_its_replicated_record_differs() {
        let v = view(&[1], &[]);
        let urls = vec!["http://10.0.0.1:2379".to_string()];
        let update = publish_update(&v, 1, "n1", &urls);
        assert_eq!(
            update.as_ref().map(|m| (&*m.name, &*m.peer_url)),
            Some(("n1", "http://10.0.0.1:2380"))
        );
        let mut published = v.clone();
        if let (Some(m), Some(u)) = (published.nodes.get_mut(&1), update) {
            *m = u;
        }
        assert_eq!(publish_update(&published, 1, "n1", &urls), None);
        assert_eq!(publish_update(&v, 9, "n9", &urls), None, "not a member");
    }
}
