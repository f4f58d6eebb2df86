//! Election and lock, served by the member itself with the recipes of etcd's `concurrency`
//! package (what etcd's v3election and v3lock services run): a contender's key is
//! `<name>/<lease id in hex>`, attached to its lease; the owner is the key with the lowest
//! create revision; waiting means watching the next older key until it is deleted.

use crate::auth::AuthInfo;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest,
};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::server::{Error, Server};
use crate::watch::WatchHub;

/// TTL of the lease a session creates when the caller gives none (etcd's session default).
const SESSION_TTL: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(transparent)]
    Server(#[from] Error),
    #[error("election: not leader")]
    NotLeader,
    #[error("election: no leader")]
    NoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    #[error("mutex: session is expired")]
    SessionExpired,
}

pub type Result<T> = std::result::Result<T, RecipeError>;

/// A contender that holds its key: what Campaign returns and Proclaim/Resign take back.
#[derive(Debug, Clone)]
pub struct Held {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub lease: i64,
    pub header: ResponseHeader,
}

#[derive(Clone)]
pub struct Recipes {
    pub server: Server,
    pub hub: WatchHub,
    /// Whose requests these are: every read and write is checked as the caller's own.
    pub caller: Option<AuthInfo>,
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// etcd's prefix end: the prefix with its last byte below 0xff incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn create_revision_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        range_end: Vec::new(),
    }
}

fn op(request: Op) -> RequestOp {
    RequestOp { request: Some(request) }
}

impl Recipes {
    pub fn new(server: Server, hub: WatchHub) -> Self {
        Self { server, hub, caller: None }
    }

    /// The same recipes, acting for `caller`.
    pub fn for_caller(&self, caller: Option<AuthInfo>) -> Recipes {
        Recipes { caller, ..self.clone() }
    }

    /// The caller's lease, or a fresh 60 s one when it gave none (not kept alive, as etcd's
    /// orphaned session).
    async fn session_lease(&self, lease: i64) -> Result<i64> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self
            .server
            .lease_grant(LeaseGrantRequest { ttl: SESSION_TTL, id: 0 }, self.caller.as_ref())
            .await?;
        Ok(granted.id)
    }

    /// Creates (or finds again) this lease's key under `prefix`, returning the held key and
    /// the Txn response.
    async fn enter(&self, prefix: &[u8], lease: i64, value: &[u8]) -> Result<(Held, TxnResponse)> {
        let mut key = prefix.to_vec();
        key.extend_from_slice(format!("{lease:x}").as_bytes());
        let put =
            PutRequest { key: key.clone(), value: value.to_vec(), lease, ..Default::default() };
        let get = RangeRequest { key: key.clone(), ..Default::default() };
        let resp = self
            .server
            .txn(
                TxnRequest {
                    compare: vec![create_revision_is(&key, 0)],
                    success: vec![op(Op::RequestPut(put))],
                    failure: vec![op(Op::RequestRange(get))],
                },
                self.caller.as_ref(),
            )
            .await?;
        let header = resp.header.unwrap_or_default();
        let create_revision = if resp.succeeded {
            header.revision
        } else {
            existing(&resp).map_or(header.revision, |kv| kv.create_revision)
        };
        Ok((Held { key, create_revision, lease, header }, resp))
    }

    /// Waits until no key under `prefix` created at or before `max_create_rev` is left.
    async fn wait_deletes(&self, prefix: &[u8], max_create_rev: i64) -> Result<ResponseHeader> {
        loop {
            let newest_older = RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                limit: 1,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                max_create_revision: max_create_rev,
                ..Default::default()
            };
            let resp = self.server.range(newest_older, self.caller.as_ref()).await?;
            let header = resp.header.unwrap_or_default();
            let Some(kv) = resp.kvs.first() else { return Ok(header) };
            self.wait_delete(&kv.key, header.revision).await;
        }
    }

    /// Returns once `key` is deleted after revision `rev` (or the watch ends).
    async fn wait_delete(&self, key: &[u8], rev: i64) {
        let (stream, mut responses) = self.hub.open_stream();
        let create =
            WatchCreateRequest { key: key.to_vec(), start_revision: rev + 1, ..Default::default() };
        stream.create(create).await;
        while let Some(resp) = responses.recv().await {
            if resp.canceled || resp.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                return;
            }
        }
    }

    /// Campaign: blocks until this lease's key is the oldest under `name/`. If the caller
    /// goes away while waiting, the key is withdrawn (as etcd resigns a cancelled campaign).
    pub async fn campaign(&self, name: &[u8], lease: i64, value: &[u8]) -> Result<Held> {
        let lease = self.session_lease(lease).await?;
        let prefix = prefix_of(name);
        let (held, resp) = self.enter(&prefix, lease, value).await?;
        let guard = Withdraw::new(self, &held);
        if !resp.succeeded && existing(&resp).is_some_and(|kv| kv.value != value) {
            // The header stays the one of the first Txn, as etcd's Campaign returns it.
            self.proclaim(&held, value).await?;
        }
        self.wait_deletes(&prefix, held.create_revision - 1).await?;
        guard.disarm();
        Ok(held)
    }

    /// Proclaim: a new value for the held leader key, if it is still the one we created.
    pub async fn proclaim(&self, held: &Held, value: &[u8]) -> Result<ResponseHeader> {
        // With the leader's lease, as etcd's Proclaim (an unknown lease fails the put).
        let put = PutRequest {
            key: held.key.clone(),
            value: value.to_vec(),
            lease: held.lease,
            ..Default::default()
        };
        let resp = self
            .server
            .txn(
                TxnRequest {
                    compare: vec![create_revision_is(&held.key, held.create_revision)],
                    success: vec![op(Op::RequestPut(put))],
                    failure: Vec::new(),
                },
                self.caller.as_ref(),
            )
            .await?;
        if !resp.succeeded {
            return Err(RecipeError::NotLeader);
        }
        Ok(resp.header.unwrap_or_default())
    }

    /// Resign: deletes the held key if it is still ours; succeeds either way.
    pub async fn resign(&self, held: &Held) -> Result<ResponseHeader> {
        let delete = DeleteRangeRequest { key: held.key.clone(), ..Default::default() };
        let resp = self
            .server
            .txn(
                TxnRequest {
                    compare: vec![create_revision_is(&held.key, held.create_revision)],
                    success: vec![op(Op::RequestDeleteRange(delete))],
                    failure: Vec::new(),
                },
                self.caller.as_ref(),
            )
            .await?;
        Ok(resp.header.unwrap_or_default())
    }

    /// The current leader's key-value, or `None` when nobody campaigns.
    pub async fn leader(&self, name: &[u8]) -> Result<(ResponseHeader, Option<KeyValue>)> {
        let prefix = prefix_of(name);
        let oldest = RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            ..Default::default()
        };
        let resp = self.server.range(oldest, self.caller.as_ref()).await?;
        Ok((resp.header.unwrap_or_default(), resp.kvs.into_iter().next()))
    }

    /// Calls `send` with the leader, then with every new value it puts, then with the next
    /// leader once it is gone (etcd's Observe), until `send` returns false.
    pub async fn observe(
        &self,
        name: &[u8],
        mut send: impl FnMut(ResponseHeader, KeyValue) -> bool,
    ) -> Result<()> {
        let prefix = prefix_of(name);
        loop {
            let (header, leader) = match self.leader(name).await? {
                (header, Some(kv)) => (header, kv),
                // Nobody campaigns yet: the first key put under the prefix leads.
                (header, None) => {
                    let watch = WatchCreateRequest {
                        key: prefix.clone(),
                        range_end: prefix_end(&prefix),
                        start_revision: header.revision + 1,
                        ..Default::default()
                    };
                    let Some(found) = self.first_put(watch).await else { return Ok(()) };
                    found
                }
            };
            if !send(header, leader.clone()) {
                return Ok(());
            }
            let watch = WatchCreateRequest {
                key: leader.key.clone(),
                start_revision: header.revision + 1,
                ..Default::default()
            };
            let (stream, mut changes) = self.hub.open_stream();
            stream.create(watch).await;
            'leader: while let Some(resp) = changes.recv().await {
                if resp.canceled {
                    return Ok(());
                }
                for event in resp.events {
                    if event.r#type == EventType::Delete as i32 {
                        break 'leader;
                    }
                    let Some(kv) = event.kv else { continue };
                    let header = resp.header.unwrap_or_default();
                    if !send(header, kv) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The first PUT a watch sees, with its response header.
    async fn first_put(&self, watch: WatchCreateRequest) -> Option<(ResponseHeader, KeyValue)> {
        let (stream, mut changes) = self.hub.open_stream();
        stream.create(watch).await;
        while let Some(resp) = changes.recv().await {
            if resp.canceled {
                return None;
            }
            let put = resp.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
            if let Some(kv) = put.and_then(|e| e.kv) {
                return Some((resp.header.unwrap_or_default(), kv));
            }
        }
        None
    }

    /// Lock: blocks until this lease's key is the oldest under `name/`; returns it. If the
    /// caller goes away while waiting, the key is removed so that it blocks nobody.
    pub async fn lock(&self, name: &[u8], lease: i64) -> Result<Held> {
        let lease = self.session_lease(lease).await?;
        let prefix = prefix_of(name);
        let (mut held, _) = self.enter(&prefix, lease, b"").await?;
        let guard = Withdraw::new(self, &held);
        held.header = self.wait_deletes(&prefix, held.create_revision - 1).await?;
        guard.disarm();
        // The key may have gone with its lease while waiting: then the lock was never ours.
        let own = RangeRequest { key: held.key.clone(), ..Default::default() };
        if self.server.range(own, self.caller.as_ref()).await?.kvs.is_empty() {
            return Err(RecipeError::SessionExpired);
        }
        Ok(held)
    }

    /// Unlock: deletes the lock key.
    pub async fn unlock(&self, key: &[u8]) -> Result<ResponseHeader> {
        let resp = self
            .server
            .delete_range(
                DeleteRangeRequest { key: key.to_vec(), ..Default::default() },
                self.caller.as_ref(),
            )
            .await?;
        Ok(resp.header.unwrap_or_default())
    }
}

/// Withdraws a contender's key if its Lock or Campaign is abandoned while waiting (the gRPC
/// call was cancelled and its future dropped): deletes the key if it is still the one we
/// created, like etcd's Resign.
struct Withdraw {
    recipes: Option<Recipes>,
    held: Held,
}

impl Withdraw {
    fn new(recipes: &Recipes, held: &Held) -> Self {
        Self { recipes: Some(recipes.clone()), held: held.clone() }
    }

    fn disarm(mut self) {
        self.recipes = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(recipes) = self.recipes.take() else { return };
        let held = self.held.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = recipes.resign(&held).await {
                    tracing::warn!(error = %err, "could not withdraw an abandoned lock or campaign key");
                }
            });
        }
    }
}

/// The key-value a Txn's failure branch read back (the caller's existing key).
fn existing(resp: &TxnResponse) -> Option<&KeyValue> {
    match resp.responses.first()?.response.as_ref()? {
        OpResponse::ResponseRange(r) => r.kvs.first(),
        _ => None,
    }
}
