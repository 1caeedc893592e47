//! The member agent: a small background task per cluster member that keeps the replicated
//! membership in line with what the member is. It publishes this member's name and client URLs
//! once it is a member (as etcd's "publish" does); while this member leads, it promotes
//! learners that were added as voters as soon as they have caught up; and it notices when this
//! member was removed: from its own committed membership, or, since a removed follower may
//! never receive the entry that removes it, by asking the others once it has heard from no
//! leader for a while (etcd's peers tell a removed member the same).
//!
//! It decides with the pure functions of [`crate::member`] and acts through the same proposal
//! path as every membership change. It holds only a weak reference to the store, so it never
//! keeps a dropped store alive, and [`crate::Store::shutdown`] stops it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::member::{self, MembershipView};
use crate::proposal::propose_local;
use crate::store::Store;
use crate::types::NodeId;
use crate::wire::Proposal;

/// How often the agent looks at the membership.
const TICK: Duration = Duration::from_millis(250);
/// How long the agent leaves a publication alone after trying it (the result takes a moment
/// to reach this member's view; a failure is retried after this).
const HOLD_OFF: Duration = Duration::from_secs(1);
/// How long a former member goes without a leader before it asks the others whether it was
/// removed, and how long it waits between such questions.
const ASK_REMOVED_AFTER: Duration = Duration::from_secs(3);

/// What the agent wants done at one look.
#[derive(Debug, Default, PartialEq, Eq)]
struct Actions {
    /// Publish this record for this member.
    publish: Option<(String, Vec<String>)>,
    /// Promote these learners (only when this member leads).
    promote: Vec<NodeId>,
}

/// Decides from this member's view of the cluster.
fn decide(
    me: NodeId,
    name: &str,
    client_urls: &[String],
    metrics: &openraft::RaftMetrics<NodeId, crate::types::Node>,
) -> Actions {
    let view = MembershipView::of(metrics.membership_config.membership());
    let publish =
        member::publish_update(&view, me, name, client_urls).map(|m| (m.name, m.client_urls));
    let promote = match (&metrics.replication, metrics.current_leader == Some(me)) {
        (Some(replication), true) => {
            let matched: BTreeMap<NodeId, Option<u64>> = replication
                .iter()
                .map(|(id, log)| (*id, log.map(|l| l.index)))
                .collect();
            member::learners_to_promote(&view, &matched, metrics.last_log_index.unwrap_or(0))
        }
        _ => Vec::new(),
    };
    Actions { publish, promote }
}

/// What this member's own view says about its membership, given the log index of the latest
/// committed membership that included it (`member_since`): the new such index and whether a
/// later committed membership leaves it out (it was removed). Uncommitted memberships decide
/// nothing: a truncated log can fall back to an older one.
fn own_membership(
    me: NodeId,
    metrics: &openraft::RaftMetrics<NodeId, crate::types::Node>,
    member_since: Option<u64>,
) -> (Option<u64>, bool) {
    let Some(log_id) = metrics.membership_config.log_id() else {
        return (member_since, false);
    };
    let applied = metrics.last_applied.map_or(0, |l| l.index);
    if log_id.index > applied {
        return (member_since, false);
    }
    let includes_me = metrics
        .membership_config
        .membership()
        .get_node(&me)
        .is_some();
    if includes_me {
        (
            Some(member_since.map_or(log_id.index, |s| s.max(log_id.index))),
            false,
        )
    } else {
        (member_since, member_since.is_some_and(|s| log_id.index > s))
    }
}

/// Starts the agent for `store`, which wants the membership to record `name` and
/// `client_urls` for it.
pub(crate) fn spawn(store: &Store, name: String, client_urls: Vec<String>) -> JoinHandle<()> {
    let weak = Arc::downgrade(&store.inner);
    let me = store.node_id();
    let metrics = store.inner.raft.metrics();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_publish = Instant::now();
        let mut member_since = None;
        let mut heard_leader = Instant::now();
        loop {
            ticks.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            let store = Store { inner };
            if store.check_open().is_err() {
                break;
            }
            let (since, removed) = own_membership(me, &metrics.borrow(), member_since);
            member_since = since;
            if removed {
                store.mark_removed();
                break;
            }
            let (leader, learner, peers) = {
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                let peers: Vec<(NodeId, String)> = membership
                    .nodes()
                    .filter(|(id, _)| **id != me)
                    .map(|(id, n)| (*id, n.peer_url.clone()))
                    .collect();
                let learner =
                    membership.get_node(&me).is_some() && !membership.voter_ids().any(|v| v == me);
                (m.current_leader, learner, peers)
            };
            // A removed voter soon loses its leader (it campaigns); a removed learner never
            // campaigns and keeps its stale leader, so a learner asks every few seconds.
            if leader.is_some() && !learner {
                heard_leader = Instant::now();
            } else if member_since.is_some() && heard_leader.elapsed() >= ASK_REMOVED_AFTER {
                heard_leader = Instant::now();
                if let Some(members) = store.ask_membership(&peers).await {
                    if !members.iter().any(|m| m.id == me) {
                        store.mark_removed();
                        break;
                    }
                }
            }
            let actions = decide(me, &name, &client_urls, &metrics.borrow());
            if let Some((name, client_urls)) = actions.publish {
                if Instant::now() >= next_publish {
                    next_publish = Instant::now() + HOLD_OFF;
                    let proposal = Proposal::Publish {
                        id: me,
                        name,
                        client_urls,
                    };
                    match store.change(proposal).await {
                        Ok(_) => tracing::info!(node = me, "published member name and client URLs"),
                        Err(e) => {
                            tracing::debug!(node = me, error = %e, "publishing failed; will retry")
                        }
                    }
                }
            }
            for id in actions.promote {
                match propose_local(
                    &store.inner.raft,
                    &store.inner.lessor,
                    &store.inner.writes,
                    Proposal::Promote { id },
                )
                .await
                {
                    Ok(_) => {
                        tracing::info!(node = id, "learner caught up and was promoted to voter")
                    }
                    Err(e) => {
                        tracing::debug!(node = id, error = %e, "promotion failed; will retry")
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::Member;

    type Metrics = openraft::RaftMetrics<NodeId, Member>;

    fn metrics(me: NodeId, leader: Option<NodeId>, learner: Member) -> Metrics {
        let nodes = BTreeMap::from([(1, Member::new("http://h1:1")), (4, learner)]);
        let membership = openraft::Membership::new(vec![[1].into()], nodes);
        let mut m = Metrics::new_initial(me);
        m.membership_config = Arc::new(openraft::StoredMembership::new(None, membership));
        m.current_leader = leader;
        m.last_log_index = Some(100);
        if leader == Some(me) {
            let log = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 95);
            m.replication = Some(BTreeMap::from([(4, Some(log))]));
        }
        m
    }

    #[test]
    fn the_leader_promotes_a_caught_up_learner_that_was_added_as_a_voter() {
        let learner = Member {
            promote_when_caught_up: true,
            ..Member::new("http://h4:1")
        };
        let leading = decide(1, "n1", &[], &metrics(1, Some(1), learner.clone()));
        assert_eq!(leading.promote, vec![4]);
        // A follower never promotes.
        let following = decide(4, "n4", &[], &metrics(4, Some(1), learner));
        assert!(following.promote.is_empty());
    }

    #[test]
    fn only_a_committed_membership_without_this_member_means_it_was_removed() {
        let mut m = metrics(4, Some(1), Member::new("http://h4:1"));
        let log = |index| openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        let with_me = m.membership_config.membership().clone();
        let without_me = openraft::Membership::new(
            vec![[1].into()],
            BTreeMap::from([(1, Member::new("http://h1:1"))]),
        );
        // Not yet applied: nothing is decided.
        m.membership_config = Arc::new(openraft::StoredMembership::new(Some(log(10)), with_me));
        m.last_applied = Some(log(5));
        assert_eq!(own_membership(4, &m, None), (None, false));
        // Committed with this member: it is a member since index 10.
        m.last_applied = Some(log(10));
        assert_eq!(own_membership(4, &m, None), (Some(10), false));
        // A later committed membership without it: removed.
        m.membership_config = Arc::new(openraft::StoredMembership::new(Some(log(12)), without_me));
        m.last_applied = Some(log(12));
        assert_eq!(own_membership(4, &m, Some(10)), (Some(10), true));
        // A member that was never in a committed membership is not "removed" (still joining).
        assert_eq!(own_membership(4, &m, None), (None, false));
    }

    #[test]
    fn a_new_member_publishes_its_name_and_client_urls_once() {
        let urls = vec!["http://h4:2379".to_string()];
        let fresh = decide(
            4,
            "n4",
            &urls,
            &metrics(4, Some(1), Member::new("http://h4:1")),
        );
        assert_eq!(fresh.publish, Some(("n4".to_string(), urls.clone())));
        let published = Member {
            name: "n4".to_string(),
            client_urls: urls.clone(),
            ..Member::new("http://h4:1")
        };
        let done = decide(4, "n4", &urls, &metrics(4, Some(1), published));
        assert_eq!(done, Actions::default());
    }
}
