//! The membership as replicated state: every member stores the same list, written at
//! bootstrap from `--initial-cluster` and changed only by applied raft entries (a member
//! publishing its name and client URLs; later, membership changes).

use heed::{RoTxn, RwTxn};
use prost::Message;

use super::Member;
use crate::backend::{meta_key, Backend};
use crate::pb::etcdserverpb as pb;
use crate::pb::rsetcdpb::{MemberAttributes, MemberSet, MemberUpdate};

/// A committed membership change, as raft carries it (see `raft::node`).
pub enum Change<'a> {
    /// A new voter, or the promotion of a learner; `context` is the proposed member.
    AddVoter {
        id: u64,
        context: &'a [u8],
    },
    AddLearner {
        id: u64,
        context: &'a [u8],
    },
    Remove {
        id: u64,
    },
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> Self {
        pb::Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: m.client_urls.clone(),
            is_learner: m.is_learner,
        }
    }
}

impl From<pb::Member> for Member {
    fn from(m: pb::Member) -> Self {
        Member {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

/// Every member, sorted by id as etcd lists them.
pub fn load(backend: &Backend, txn: &RoTxn) -> heed::Result<Vec<Member>> {
    let Some(bytes) = backend.meta().get(txn, meta_key::MEMBERS)? else {
        return Ok(Vec::new());
    };
    let set = MemberSet::decode(bytes).expect("corrupt stored membership");
    let mut members: Vec<Member> = set.members.into_iter().map(Member::from).collect();
    members.sort_by_key(|m| m.id);
    Ok(members)
}

pub fn save(backend: &Backend, txn: &mut RwTxn, members: &[Member]) -> heed::Result<()> {
    let set = MemberSet { members: members.iter().map(pb::Member::from).collect() };
    backend.meta().put(txn, meta_key::MEMBERS, &set.encode_to_vec())
}

/// Records what a member published about itself; a member no longer in the cluster is
/// ignored, as etcd does.
pub fn set_attributes(
    backend: &Backend,
    txn: &mut RwTxn,
    attributes: &MemberAttributes,
) -> heed::Result<()> {
    let mut members = load(backend, txn)?;
    let Some(member) = members.iter_mut().find(|m| m.id == attributes.id) else {
        return Ok(());
    };
    member.name = attributes.name.clone();
    member.client_urls = attributes.client_urls.clone();
    save(backend, txn, &members)
}

/// Applies a committed membership change and returns the new membership.
pub fn apply_change(
    backend: &Backend,
    txn: &mut RwTxn,
    change: Change<'_>,
) -> heed::Result<Vec<Member>> {
    let mut members = load(backend, txn)?;
    let proposed = |id: u64, context: &[u8], is_learner: bool| {
        let mut member = Member::from(pb::Member::decode(context).unwrap_or_default());
        member.id = id;
        member.is_learner = is_learner;
        member
    };
    match change {
        Change::AddVoter { id, context } => match members.iter_mut().find(|m| m.id == id) {
            Some(learner) => learner.is_learner = false,
            None => members.push(proposed(id, context, false)),
        },
        Change::AddLearner { id, context } => {
            if !members.iter().any(|m| m.id == id) {
                members.push(proposed(id, context, true));
            }
        }
        Change::Remove { id } => members.retain(|m| m.id != id),
    }
    members.sort_by_key(|m| m.id);
    save(backend, txn, &members)?;
    Ok(members)
}

/// Records a member's new peer URLs and returns the new membership.
pub fn update_peer_urls(
    backend: &Backend,
    txn: &mut RwTxn,
    update: &MemberUpdate,
) -> heed::Result<Vec<Member>> {
    let mut members = load(backend, txn)?;
    if let Some(member) = members.iter_mut().find(|m| m.id == update.id) {
        member.peer_urls = update.peer_urls.clone();
    }
    save(backend, txn, &members)?;
    Ok(members)
}
