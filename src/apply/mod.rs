//! The replicated state machine: decodes a committed [`RaftRequest`] and applies it to the
//! MVCC store inside the raft thread's write transaction.
//!
//! Every check that depends on the state (lease exists, key exists for ignore_value, read
//! revisions) happens here, at apply time, so all members decide the same way.

use heed::RwTxn;
use prost::Message;

pub mod permissions;

use std::sync::Arc;

use crate::auth::{self, AuthInfo, AuthStore};
use crate::cluster::membership;
use crate::lease::Lessor;
use crate::mvcc::{self, store, txn, Store, Writer};
use crate::pb::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse,
    ResponseHeader, TxnResponse,
};
use crate::pb::mvccpb::Event;
use crate::pb::rsetcdpb::raft_request::Request;
use crate::pb::rsetcdpb::RaftRequest;
use crate::raft::StateMachine;
use crate::watch::WatchHub;
use raft::prelude::{ConfChange, ConfChangeType};

/// What applying one request produced; headers carry only the revision (the server adds the
/// member identity).
#[derive(Debug)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseTick,
    MemberAttributes,
    /// The membership after a change.
    Members(Vec<crate::cluster::Member>),
    /// The alarms an alarm request changed.
    Alarms(Vec<crate::pb::etcdserverpb::AlarmMember>),
    Auth(auth::Reply),
}

/// Why a request failed to apply (every member fails it alike).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
    #[error(transparent)]
    Auth(#[from] auth::Error),
}

impl From<heed::Error> for Error {
    fn from(err: heed::Error) -> Self {
        Error::Mvcc(mvcc::Error::Storage(err))
    }
}

impl From<auth::store::ApplyError> for Error {
    fn from(err: auth::store::ApplyError) -> Self {
        match err {
            auth::store::ApplyError::Auth(err) => Error::Auth(err),
            auth::store::ApplyError::Storage(err) => err.into(),
        }
    }
}

/// A lease change to hand to the lessor once committed.
enum LeaseChange {
    Granted(i64, i64),
    Revoked(i64),
    Renewed(i64, i64),
}

pub type Output<T = Applied> = Result<T, Error>;

pub struct Applier {
    store: Store,
    watch: WatchHub,
    lessor: Lessor,
    auth: Arc<AuthStore>,
    /// etcd's smallest lease TTL; a shorter grant is raised to it.
    min_lease_ttl: i64,
    /// Events of the revisions applied in the transaction not yet committed.
    unpublished: Vec<(i64, Vec<Event>)>,
    lease_changes: Vec<LeaseChange>,
}

impl Applier {
    pub fn new(
        store: Store,
        watch: WatchHub,
        lessor: Lessor,
        auth: Arc<AuthStore>,
        min_lease_ttl: i64,
    ) -> Self {
        let (unpublished, lease_changes) = (Vec::new(), Vec::new());
        Self { store, watch, lessor, auth, min_lease_ttl, unpublished, lease_changes }
    }

    /// Finishes a write request, keeping its events for [`StateMachine::committed`].
    fn finish(&mut self, writer: Writer) -> mvcc::Result<ResponseHeader> {
        let (revision, events) = writer.finish()?;
        if !events.is_empty() {
            self.unpublished.push((revision, events));
        }
        Ok(header(revision))
    }

    /// etcd's auth applier: a write must be allowed for its caller at the current auth
    /// revision when it is applied, not only when it was proposed.
    fn check_permissions(&self, txn: &RwTxn, caller: &AuthInfo, request: &Request) -> Output<()> {
        if !self.auth.is_enabled() {
            return Ok(());
        }
        let (auth, store) = (&*self.auth, &self.store);
        match request {
            Request::Put(put) => permissions::check_put(auth, store, txn, caller, put),
            Request::DeleteRange(del) => permissions::check_delete(auth, caller, del),
            Request::Txn(req) => permissions::check_txn(auth, store, txn, caller, req),
            Request::LeaseRevoke(req) => {
                permissions::check_lease_keys(auth, store, txn, caller, req.id)
            }
            _ => Ok(()),
        }
    }

    fn apply_request(
        &mut self,
        txn: &mut RwTxn,
        index: u64,
        caller: &AuthInfo,
        request: Request,
    ) -> Output {
        // Under a NOSPACE alarm every member refuses what grows the store (etcd's capped
        // applier); deletes, compaction and lease revokes still free space.
        let grows = match &request {
            Request::Put(_) | Request::LeaseGrant(_) => true,
            Request::Txn(req) => txn::has_puts(req),
            _ => false,
        };
        if grows && crate::alarm::no_space(&self.store.backend, txn)? {
            return Err(mvcc::Error::NoSpace.into());
        }
        self.check_permissions(txn, caller, &request)?;
        match request {
            Request::Auth(req) => {
                let request = req.request.expect("an auth entry carries a request");
                let reply = self.auth.apply(&self.store.backend, txn, index, caller, request)?;
                Ok(Applied::Auth(reply))
            }
            Request::Alarm(req) => {
                let changed = crate::alarm::apply(&self.store.backend, txn, &req)?;
                Ok(Applied::Alarms(changed))
            }
            Request::Put(req) => {
                let store = self.store.clone();
                let mut writer = Writer::new(&store, txn)?;
                let mut resp = txn::TxnTarget::put(&mut writer, &req)?;
                resp.header = Some(self.finish(writer)?);
                Ok(Applied::Put(resp))
            }
            Request::DeleteRange(req) => {
                let store = self.store.clone();
                let mut writer = Writer::new(&store, txn)?;
                let mut resp = txn::TxnTarget::delete_range(&mut writer, &req)?;
                resp.header = Some(self.finish(writer)?);
                Ok(Applied::DeleteRange(resp))
            }
            Request::Txn(req) => {
                let store = self.store.clone();
                let mut writer = Writer::new(&store, txn)?;
                let mut resp = txn::execute(&mut writer, &req)?;
                resp.header = Some(self.finish(writer)?);
                Ok(Applied::Txn(resp))
            }
            Request::LeaseGrant(req) => {
                let ttl = req.ttl.max(self.min_lease_ttl);
                let store = self.store.clone();
                let mut writer = Writer::new(&store, txn)?;
                writer.grant_lease(req.id, ttl)?;
                let header = self.finish(writer)?;
                self.lease_changes.push(LeaseChange::Granted(req.id, ttl));
                Ok(Applied::LeaseGrant(LeaseGrantResponse {
                    header: Some(header),
                    id: req.id,
                    ttl,
                    error: String::new(),
                }))
            }
            Request::LeaseRevoke(req) => {
                let store = self.store.clone();
                let mut writer = Writer::new(&store, txn)?;
                writer.revoke_lease(req.id)?;
                let header = self.finish(writer)?;
                self.lease_changes.push(LeaseChange::Revoked(req.id));
                Ok(Applied::LeaseRevoke(LeaseRevokeResponse { header: Some(header) }))
            }
            Request::LeaseTick(tick) => {
                let store = self.store.clone();
                let mut writer = Writer::new(&store, txn)?;
                let renewals: Vec<(i64, i64)> =
                    tick.renewals.iter().map(|r| (r.id, r.remaining_ms)).collect();
                writer.lease_tick(tick.elapsed_ms, &renewals)?;
                self.finish(writer)?;
                let renewed = renewals.into_iter().map(|(id, ms)| LeaseChange::Renewed(id, ms));
                self.lease_changes.extend(renewed);
                Ok(Applied::LeaseTick)
            }
            Request::MemberUpdate(update) => {
                let members = membership::update_peer_urls(&self.store.backend, txn, &update)
                    .map_err(mvcc::Error::from)?;
                Ok(Applied::Members(members))
            }
            Request::MemberAttributes(attributes) => {
                membership::set_attributes(&self.store.backend, txn, &attributes)
                    .map_err(mvcc::Error::from)?;
                Ok(Applied::MemberAttributes)
            }
            Request::Compaction(req) => {
                store::compact(&self.store, txn, req.revision)?;
                let current = self.store.current_rev(txn)?;
                Ok(Applied::Compaction(CompactionResponse { header: Some(header(current)) }))
            }
        }
    }
}

impl StateMachine for Applier {
    type Output = Output;

    fn apply(&mut self, txn: &mut RwTxn, index: u64, data: &[u8]) -> Output {
        let entry = RaftRequest::decode(data)
            .unwrap_or_else(|err| panic!("undecodable raft entry {index}: {err}"));
        let request =
            entry.request.unwrap_or_else(|| panic!("raft entry {index} carries no request"));
        let caller = entry
            .caller
            .map(|c| AuthInfo { username: c.username, revision: c.auth_revision })
            .unwrap_or_default();
        let output = self.apply_request(txn, index, &caller, request);
        if let Err(Error::Mvcc(mvcc::Error::Storage(err))) = &output {
            // A failed LMDB write inside the batch transaction cannot be rolled back alone;
            // continuing would let members diverge.
            panic!("storage failure applying entry {index}: {err}");
        }
        output
    }

    fn apply_conf_change(&mut self, txn: &mut RwTxn, _index: u64, change: &ConfChange) -> Output {
        let id = change.node_id;
        let context = change.context.as_ref();
        let change = match change.get_change_type() {
            ConfChangeType::AddNode => membership::Change::AddVoter { id, context },
            ConfChangeType::AddLearnerNode => membership::Change::AddLearner { id, context },
            ConfChangeType::RemoveNode => membership::Change::Remove { id },
        };
        let members = membership::apply_change(&self.store.backend, txn, change)
            .unwrap_or_else(|err| panic!("storage failure applying a membership change: {err}"));
        Ok(Applied::Members(members))
    }

    fn restored(&mut self) {
        self.unpublished.clear();
        self.lease_changes.clear();
        if let Err(err) = self.lessor.reload(&self.store) {
            panic!("cannot read the leases of the installed store copy: {err}");
        }
        if let Err(err) = self.auth.reload(&self.store.backend) {
            panic!("cannot read the auth state of the installed store copy: {err}");
        }
        let current = self
            .store
            .backend
            .read_txn()
            .map_err(mvcc::Error::from)
            .and_then(|txn| self.store.current_rev(&txn));
        match current {
            Ok(revision) => self.watch.jumped(revision),
            Err(err) => panic!("cannot read the installed store copy: {err}"),
        }
    }

    fn committed(&mut self) {
        for (revision, events) in self.unpublished.drain(..) {
            self.watch.publish(revision, &events);
        }
        for change in self.lease_changes.drain(..) {
            match change {
                LeaseChange::Granted(id, ttl) => self.lessor.granted(id, ttl),
                LeaseChange::Revoked(id) => self.lessor.revoked(id),
                LeaseChange::Renewed(id, ms) => self.lessor.renewed(id, ms),
            }
        }
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader { revision, ..Default::default() }
}
