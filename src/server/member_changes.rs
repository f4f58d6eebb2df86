//! Membership changes as etcd's Cluster service makes them: checked against the current
//! membership, then replicated as raft configuration changes (peer URL updates as a plain
//! entry), answered with the membership after the change.

use std::sync::atomic::Ordering;

use prost::Message as _;
use raft::prelude::{ConfChange, ConfChangeType};
use tokio::sync::oneshot;

use super::{Error, Result, Server};
use crate::apply::Applied;
use crate::cluster::{self, Member};
use crate::pb::etcdserverpb as pb;
use crate::pb::rsetcdpb::raft_request::Request;
use crate::pb::rsetcdpb::MemberUpdate;
use crate::raft::Input;

/// etcd's default `--max-learners`.
const MAX_LEARNERS: usize = 1;

/// How long a peer must have been connected to count as active (etcd's `HealthInterval`).
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// etcd accepts http and https peer URLs with a host (and no path).
fn check_urls(urls: &[String]) -> Result<()> {
    let valid = |text: &String| {
        url::Url::parse(text).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && matches!(u.path(), "" | "/")
        })
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(Error::MemberBadUrls);
    }
    Ok(())
}

fn started(member: &Member) -> bool {
    !member.name.is_empty()
}

impl Server {
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
        caller: Option<&crate::auth::AuthInfo>,
    ) -> Result<(Member, Vec<Member>)> {
        // etcd validates the URLs before it checks who asks.
        check_urls(&peer_urls)?;
        self.check_admin(caller)?;
        let members = self.members(true).await?;
        if members.iter().any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u))) {
            return Err(Error::PeerUrlExists);
        }
        let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        if is_learner {
            if members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                return Err(Error::TooManyLearners);
            }
        } else {
            // etcd's strict reconfiguration check: after the change, the started voters must
            // still make a quorum (a second member may join a first alone).
            let after = voters.len() + 1;
            let started = voters.iter().filter(|m| started(m)).count();
            if !(started == 1 && after == 2) && started < after / 2 + 1 {
                return Err(Error::NotEnoughStartedMembers);
            }
        }
        if self.active_voters(&voters) != voters.len() {
            // etcd adds a member only while connected to every voter for a while.
            return Err(Error::Unhealthy);
        }
        // As etcd, an added member's id also hashes the time, so re-adding the same URLs
        // later gives a new id.
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = cluster::member_id(&peer_urls, &unix.to_string());
        let member =
            Member { id, name: String::new(), peer_urls, client_urls: Vec::new(), is_learner };
        let change = ConfChange {
            change_type: if is_learner {
                ConfChangeType::AddLearnerNode
            } else {
                ConfChangeType::AddNode
            },
            node_id: id,
            context: pb::Member::from(&member).encode_to_vec().into(),
            ..Default::default()
        };
        let members = self.propose_conf_change(change, false).await?;
        Ok((member, members))
    }

    pub async fn member_remove(&self, id: u64) -> Result<Vec<Member>> {
        let members = self.members(true).await?;
        let Some(target) = members.iter().find(|m| m.id == id) else {
            return Err(Error::MemberNotFound);
        };
        if !target.is_learner {
            let remaining: Vec<&Member> =
                members.iter().filter(|m| !m.is_learner && m.id != id).collect();
            let started = remaining.iter().filter(|m| started(m)).count();
            if started < remaining.len() / 2 + 1 {
                return Err(Error::NotEnoughStartedMembers);
            }
            // A member that is down is not part of the active quorum: removing it is safe.
            // Otherwise the active voters left must still make a quorum, as etcd checks.
            let local = self.inner.cluster.local.id;
            let down = id != local && self.inner.peer_health.active_since(id).is_none();
            let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
            if !down && self.active_voters(&voters) - 1 < 1 + (voters.len() - 1) / 2 {
                return Err(Error::Unhealthy);
            }
        }
        let change = ConfChange {
            change_type: ConfChangeType::RemoveNode,
            node_id: id,
            ..Default::default()
        };
        self.propose_conf_change(change, false).await
    }

    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
        caller: Option<&crate::auth::AuthInfo>,
    ) -> Result<Vec<Member>> {
        check_urls(&peer_urls)?;
        self.check_admin(caller)?;
        let members = self.members(true).await?;
        if !members.iter().any(|m| m.id == id) {
            return Err(Error::MemberNotFound);
        }
        let taken = members
            .iter()
            .filter(|m| m.id != id)
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)));
        if taken {
            return Err(Error::PeerUrlExists);
        }
        match self.propose(Request::MemberUpdate(MemberUpdate { id, peer_urls }), None).await? {
            Applied::Members(members) => Ok(members),
            other => unreachable!("a member update applies as a membership, not {other:?}"),
        }
    }

    /// Promotes a learner; only the leader knows whether it caught up, so a follower asks
    /// the leader, as etcd's do.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<Member>> {
        let members = self.members(true).await?;
        let Some(target) = members.iter().find(|m| m.id == id) else {
            return Err(Error::MemberNotFound);
        };
        if !target.is_learner {
            return Err(Error::MemberNotLearner);
        }
        let change =
            ConfChange { change_type: ConfChangeType::AddNode, node_id: id, ..Default::default() };
        match self.propose_conf_change(change, true).await {
            Err(Error::NotLeader) => {}
            other => return other,
        }
        let link = &self.inner.leader_link;
        let forwarded = self.on_leader(|url| async move { link.member_promote(&url, id).await });
        match forwarded.await? {
            Some(Ok(members)) => Ok(members.into_iter().map(Member::from).collect()),
            Some(Err(err)) => Err(err),
            // This member became leader meanwhile: the client may retry.
            None => Err(Error::NotLeader),
        }
    }

    async fn propose_conf_change(
        &self,
        change: ConfChange,
        promotion: bool,
    ) -> Result<Vec<Member>> {
        let (reply, answer) = oneshot::channel();
        let input = Input::ProposeConfChange { change, promotion, reply };
        self.inner.raft.send(input).map_err(|_| Error::Stopped)?;
        match self.wait(answer).await?? {
            Applied::Members(members) => Ok(members),
            other => unreachable!("a membership change applies as a membership, not {other:?}"),
        }
    }

    /// How many of `voters` this member counts as active: itself, and every peer connected
    /// for at least [`HEALTH_INTERVAL`].
    fn active_voters(&self, voters: &[&Member]) -> usize {
        let local = self.inner.cluster.local.id;
        let cutoff = std::time::Instant::now().checked_sub(HEALTH_INTERVAL);
        let health = &self.inner.peer_health;
        voters
            .iter()
            .filter(|m| {
                m.id == local
                    || health
                        .active_since(m.id)
                        .is_some_and(|since| cutoff.is_some_and(|c| since <= c))
            })
            .count()
    }

    /// Whether this member is a learner now; learners serve only what etcd lets them.
    pub fn is_learner(&self) -> bool {
        self.inner.status.is_learner.load(Ordering::Relaxed)
    }
}
