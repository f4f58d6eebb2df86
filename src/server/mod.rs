//! The core a client request reaches after the gRPC layer: validation, proposing writes
//! through raft, linearizable and serializable reads, and the response headers.
//! It knows nothing of gRPC; `api/` wraps it.

pub mod auth_requests;
pub mod error;
pub mod health;
pub mod ids;
pub mod maintenance;
pub mod member_changes;
pub mod validate;

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::oneshot;

pub use error::{Error, Result};

use crate::apply::{Applied, Output};
use crate::auth::{self, AuthInfo, AuthStore};
use crate::backend::Backend;
use crate::cluster::{membership, Cluster, Member};
use crate::lease::{self, Lessor};
use crate::mvcc::{txn, Store};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use crate::pb::rsetcdpb::raft_request::Request;
use crate::pb::rsetcdpb::{Caller, LeaseRenewal, LeaseTick, RaftRequest};
use crate::peer::forward::LeaderLink;
use crate::raft::{Input, NodeStatus, ProposeError};

/// Limits a client cannot exceed (etcd's `--max-request-bytes`, `--max-txn-ops`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
    /// `--quota-backend-bytes`, with etcd's default of 2 GiB for 0.
    pub quota_bytes: u64,
}

/// etcd's backend quota when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// What the server is told at start-up besides its collaborators.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// The etcd version this member reports (Status, /version, --version).
    pub etcd_version: String,
    /// Where store copies are written (snapshots for clients and for members).
    pub snapshot_dir: std::path::PathBuf,
    /// Which peers this member has been connected to, and since when.
    pub peer_health: crate::peer::transport::PeerHealth,
    /// `--client-cert-auth`: a request without a token acts as its certificate's CN.
    pub client_cert_auth: bool,
}

/// Cloneable handle to the running member.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    raft: Sender<Input<Output>>,
    status: Arc<NodeStatus>,
    cluster: Cluster,
    limits: Limits,
    lessor: Lessor,
    auth: Arc<AuthStore>,
    /// Picks the ids of leases granted with ID 0.
    ids: ids::IdGenerator,
    /// Wakes the lease loop when renewals wait to be made durable.
    renewals_waiting: tokio::sync::Notify,
    /// The etcd version this member reports (Status, /version, --version).
    etcd_version: String,
    /// Where a follower sends the lease requests only the leader can answer.
    leader_link: LeaderLink,
    /// Where store copies are written (snapshots for clients and for members).
    snapshot_dir: std::path::PathBuf,
    peer_health: crate::peer::transport::PeerHealth,
    client_cert_auth: bool,
}

impl Server {
    pub fn new(
        store: Store,
        raft: Sender<Input<Output>>,
        status: Arc<NodeStatus>,
        cluster: Cluster,
        lessor: Lessor,
        auth: Arc<AuthStore>,
        settings: Settings,
    ) -> Self {
        let Settings { limits, etcd_version, snapshot_dir, peer_health, client_cert_auth } =
            settings;
        let renewals_waiting = tokio::sync::Notify::new();
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ids = ids::IdGenerator::new(cluster.local.id, unix_ms);
        let inner = Inner {
            store,
            raft,
            status,
            cluster,
            limits,
            lessor,
            auth,
            ids,
            renewals_waiting,
            etcd_version,
            leader_link: LeaderLink::default(),
            snapshot_dir,
            peer_health,
            client_cert_auth,
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn etcd_version(&self) -> &str {
        &self.inner.etcd_version
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.store.backend
    }

    pub fn raft_status(&self) -> &NodeStatus {
        &self.inner.status
    }

    /// Every member of the cluster, as replicated; `linearizable` waits for a read barrier
    /// first, so that a member added just before is seen.
    pub async fn members(&self, linearizable: bool) -> Result<Vec<Member>> {
        if linearizable {
            self.read_barrier().await?;
        }
        let backend = self.backend();
        let txn = backend.read_txn().map_err(crate::mvcc::Error::from)?;
        Ok(membership::load(backend, &txn).map_err(crate::mvcc::Error::from)?)
    }

    /// The member this one currently follows, if it is not the leader itself.
    fn leader(&self) -> Result<Option<Member>> {
        let leader = self.inner.status.leader.load(Ordering::Relaxed);
        if leader == 0 {
            return Err(Error::NoLeader);
        }
        if leader == self.inner.cluster.local.id {
            return Ok(None);
        }
        let backend = self.backend();
        let txn = backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let members = membership::load(backend, &txn).map_err(crate::mvcc::Error::from)?;
        Ok(members.into_iter().find(|m| m.id == leader))
    }

    /// Runs `call` against the leader's peer URL, retrying (a leader may just be changing)
    /// until the request timeout, as etcd's followers do for lease requests.
    async fn on_leader<T, F, Fut>(&self, call: F) -> Result<Option<T>>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<
            Output = std::result::Result<T, crate::peer::forward::ForwardError>,
        >,
    {
        let deadline = tokio::time::Instant::now() + self.inner.limits.request_timeout;
        loop {
            let attempt = match self.leader() {
                Ok(None) => return Ok(None),
                Ok(Some(leader)) => match leader.peer_urls.first() {
                    Some(url) => call(url.clone()).await.map_err(|err| err.to_string()),
                    None => Err("the leader has no peer URL".to_string()),
                },
                Err(err) => Err(err.to_string()),
            };
            match attempt {
                Ok(value) => return Ok(Some(value)),
                Err(reason) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(reason = reason.as_str(), "giving up forwarding to the leader");
                    return Err(self.timeout_error());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// What a request that waited the whole request timeout answers: etcd says "request
    /// timed out" also when no leader is known (only a client that asks for a leader, see
    /// `api::require_leader`, hears "no leader").
    fn timeout_error(&self) -> Error {
        Error::Timeout
    }

    /// A header with this member's identity, the raft term and `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.inner.cluster.cluster_id,
            member_id: self.inner.cluster.local.id,
            revision,
            raft_term: self.inner.status.term.load(Ordering::Relaxed),
        }
    }

    fn stamp(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(revision));
    }

    pub fn current_revision(&self) -> Result<i64> {
        let store = &self.inner.store;
        let txn = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        Ok(store.current_rev(&txn)?)
    }

    /// etcd's HashKV at `revision` (0 = current), with the current revision for the header.
    pub fn hash_kv(&self, revision: i64) -> Result<(crate::mvcc::hash::KvHash, i64)> {
        let store = &self.inner.store;
        let txn = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let hash = crate::mvcc::hash::hash_kv(store, &txn, revision)?;
        Ok((hash, store.current_rev(&txn)?))
    }

    pub fn auth(&self) -> &AuthStore {
        &self.inner.auth
    }

    /// Who a request's credentials name (etcd's `AuthInfoFromCtx`): nobody while auth is
    /// off; the token's user (a token that is unknown, expired or malformed is an error; a
    /// simple token issued at a raft index this member has not applied yet is waited for);
    /// else, with `--client-cert-auth`, the client certificate's CN.
    pub async fn caller(&self, credentials: &auth::Credentials) -> Result<Option<AuthInfo>> {
        let auth = &self.inner.auth;
        if !auth.is_enabled() {
            return Ok(None);
        }
        let Some(token) = credentials.token.as_deref() else {
            let common_name =
                credentials.common_name.clone().filter(|_| self.inner.client_cert_auth);
            return Ok(common_name.map(|username| AuthInfo { username, revision: auth.revision() }));
        };
        let index = auth.token_index(token)?.unwrap_or(0);
        let deadline = tokio::time::Instant::now() + self.inner.limits.request_timeout;
        while self.inner.status.applied.load(Ordering::Acquire) < index {
            if tokio::time::Instant::now() >= deadline {
                return Err(auth::Error::InvalidAuthToken.into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Some(auth.user_of_token(token)?))
    }

    /// etcd's `doSerialize` around a local read: the permission check before, and after it
    /// a check that no auth change happened meanwhile.
    fn check_before_read(
        &self,
        caller: Option<&AuthInfo>,
        check: impl FnOnce(&AuthStore, &AuthInfo) -> auth::Result<()>,
    ) -> Result<()> {
        let anonymous = AuthInfo::default();
        Ok(check(&self.inner.auth, caller.unwrap_or(&anonymous))?)
    }

    fn check_after_read(&self, caller: Option<&AuthInfo>) -> Result<()> {
        match caller {
            Some(c)
                if c.revision != 0
                    && !c.is_member()
                    && c.revision != self.inner.auth.revision() =>
            {
                Err(auth::Error::AuthOldRevision.into())
            }
            _ => Ok(()),
        }
    }

    /// etcd refuses gateway requests made with a named client certificate while auth and
    /// `--client-cert-auth` are on (the CN would not be the gateway's user).
    pub fn refuses_gateway_cn(&self, common_name: Option<&str>) -> bool {
        self.inner.client_cert_auth
            && common_name.is_some_and(|cn| !cn.is_empty())
            && self.inner.auth.is_enabled()
    }

    /// etcd's admin check: with auth on, only root.
    pub fn check_admin(&self, caller: Option<&AuthInfo>) -> Result<()> {
        Ok(self.inner.auth.check_admin(caller)?)
    }

    /// With auth on, any authenticated caller.
    pub fn require_caller(&self, caller: Option<&AuthInfo>) -> Result<()> {
        Ok(self.inner.auth.require_caller(caller)?)
    }

    pub async fn range(
        &self,
        req: RangeRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<RangeResponse> {
        validate::range(&req)?;
        if !req.serializable {
            if self.is_learner() {
                return Err(Error::NotSupportedForLearner);
            }
            self.read_barrier().await?;
        }
        self.check_before_read(caller, |auth, c| auth.check_read(c, &req.key, &req.range_end))?;
        let store = &self.inner.store;
        let txn = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let current = store.current_rev(&txn)?;
        let mut resp = store.range(&txn, &req, current)?;
        self.check_after_read(caller)?;
        resp.header = Some(self.header(current));
        Ok(resp)
    }

    pub async fn put(&self, req: PutRequest, caller: Option<&AuthInfo>) -> Result<PutResponse> {
        validate::put(&req)?;
        self.check_quota(req.key.len() + req.value.len()).await?;
        self.write(Request::Put(req), caller, |a| match a {
            Applied::Put(resp) => Some(resp),
            _ => None,
        })
        .await
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<DeleteRangeResponse> {
        validate::delete_range(&req)?;
        self.write(Request::DeleteRange(req), caller, |a| match a {
            Applied::DeleteRange(resp) => Some(resp),
            _ => None,
        })
        .await
    }

    /// A Txn that writes goes through raft; a read-only one is served locally after the same
    /// read barrier as a linearizable Range (etcd does the same).
    pub async fn txn(&self, req: TxnRequest, caller: Option<&AuthInfo>) -> Result<TxnResponse> {
        validate::txn(&req, self.inner.limits.max_txn_ops)?;
        if txn::has_puts(&req) {
            self.check_quota(req.encoded_len()).await?;
        }
        if !txn::is_read_only(&req) {
            let take = |a| match a {
                Applied::Txn(resp) => Some(resp),
                _ => None,
            };
            return self.write(Request::Txn(req), caller, take).await;
        }
        self.read_barrier().await?;
        let store = &self.inner.store;
        let view = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let anonymous = AuthInfo::default();
        let who = caller.unwrap_or(&anonymous);
        crate::apply::permissions::check_txn(&self.inner.auth, store, &view, who, &req)?;
        let current = store.current_rev(&view)?;
        let mut resp = txn::execute(&mut txn::ReadOnly { store, txn: &view, current }, &req)?;
        self.check_after_read(caller)?;
        self.stamp(&mut resp.header);
        Ok(resp)
    }

    pub async fn compact(
        &self,
        req: CompactionRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<CompactionResponse> {
        self.check_admin(caller)?;
        self.write(Request::Compaction(req), caller, |a| match a {
            Applied::Compaction(resp) => Some(resp),
            _ => None,
        })
        .await
    }

    /// Grants a lease; ID 0 lets the server pick one, as etcd does (see [`ids`]).
    pub async fn lease_grant(
        &self,
        mut req: LeaseGrantRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<LeaseGrantResponse> {
        if req.ttl > lease::MAX_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        self.check_quota(req.encoded_len()).await?;
        self.require_caller(caller)?;
        if req.id == 0 {
            // Chosen before proposing so that every member applies the same id.
            req.id = loop {
                let id = self.inner.ids.next() as i64 & i64::MAX;
                if id != 0 {
                    break id;
                }
            };
        }
        self.write(Request::LeaseGrant(req), caller, |a| match a {
            Applied::LeaseGrant(resp) => Some(resp),
            _ => None,
        })
        .await
    }

    /// Revokes a lease and deletes its keys (also used by the expiry loop).
    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<LeaseRevokeResponse> {
        self.write(Request::LeaseRevoke(req), caller, |a| match a {
            Applied::LeaseRevoke(resp) => Some(resp),
            _ => None,
        })
        .await
    }

    /// One keep-alive: the lease's TTL, or 0 for an unknown or expired lease (not an error).
    /// Answered from memory, as etcd's leader does; the lease clock records the renewal soon
    /// after (see `crate::lease`).
    pub async fn lease_keep_alive(
        &self,
        id: i64,
        caller: Option<&AuthInfo>,
    ) -> Result<LeaseKeepAliveResponse> {
        self.check_lease_keys(id, caller, true)?;
        let link = &self.inner.leader_link;
        if let Some(mut resp) =
            self.on_leader(|url| async move { link.keep_alive(&url, id).await }).await?
        {
            // etcd's follower answers with its own header.
            resp.header = Some(self.header(self.current_revision()?));
            return Ok(resp);
        }
        self.lease_keep_alive_here(id)
    }

    /// A keep-alive on the leader (also one forwarded by a follower).
    pub fn lease_keep_alive_here(&self, id: i64) -> Result<LeaseKeepAliveResponse> {
        // etcd takes the header before renewing.
        let header = self.header(self.current_revision()?);
        let Some(ttl) = self.inner.lessor.renew(id) else {
            return Ok(LeaseKeepAliveResponse { header: Some(header), id, ttl: 0 });
        };
        self.inner.renewals_waiting.notify_one();
        Ok(LeaseKeepAliveResponse { header: Some(header), id, ttl })
    }

    /// TTL -1 for an unknown lease (not an error), as etcd. Only the leader knows the exact
    /// remaining time, so a follower asks it.
    pub async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<LeaseTimeToLiveResponse> {
        self.require_caller(caller)?;
        if req.keys {
            self.check_lease_keys(req.id, caller, false)?;
        }
        let link = &self.inner.leader_link;
        let forwarded =
            self.on_leader(|url| async move { link.time_to_live(&url, req).await }).await?;
        if let Some(mut resp) = forwarded {
            resp.header = Some(self.header(self.current_revision()?));
            return Ok(resp);
        }
        self.lease_time_to_live_here(req)
    }

    /// TimeToLive from this member's lessor (the leader's answer).
    pub fn lease_time_to_live_here(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse> {
        let store = &self.inner.store;
        let txn = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let header = Some(self.header(store.current_rev(&txn)?));
        let Some(remaining) = self.inner.lessor.remaining(req.id) else {
            return Ok(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            });
        };
        let keys = if req.keys { store.lease_keys(&txn, req.id)? } else { Vec::new() };
        Ok(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: remaining.ttl,
            granted_ttl: remaining.granted_ttl,
            keys,
        })
    }

    /// etcd's lease checks outside raft: with auth on, a caller is needed, and unless it is
    /// root it must be able to write (renew) or read (inspect) every key on the lease.
    fn check_lease_keys(&self, id: i64, caller: Option<&AuthInfo>, write: bool) -> Result<()> {
        let auth = &self.inner.auth;
        if !auth.is_enabled() {
            return Ok(());
        }
        let caller = caller.ok_or(auth::Error::UserEmpty)?;
        if auth.check_admin(Some(caller)).is_ok() {
            return Ok(());
        }
        let revision = auth.revision();
        let store = &self.inner.store;
        let txn = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        for key in store.lease_keys(&txn, id)? {
            if write {
                auth.check_write(caller, &key, &[])?;
            } else {
                auth.check_read(caller, &key, &[])?;
            }
        }
        if write && revision != auth.revision() {
            return Err(auth::Error::AuthOldRevision.into());
        }
        Ok(())
    }

    pub fn lease_leases(&self, caller: Option<&AuthInfo>) -> Result<LeaseLeasesResponse> {
        let ids = self.inner.lessor.ids();
        let auth = &self.inner.auth;
        if auth.is_enabled() {
            let revision = auth.revision();
            let caller = caller.ok_or(auth::Error::UserEmpty)?;
            if auth.check_admin(Some(caller)).is_err() {
                for &id in &ids {
                    self.check_lease_keys(id, Some(caller), false)?;
                }
                if revision != auth.revision() {
                    return Err(auth::Error::AuthOldRevision.into());
                }
            }
        }
        let leases = ids.into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(LeaseLeasesResponse { header: Some(self.header(self.current_revision()?)), leases })
    }

    /// Publishes this member's name and client URLs through raft (etcd's publish).
    pub async fn publish_self(&self) -> Result<()> {
        let local = &self.inner.cluster.local;
        let attributes = crate::pb::rsetcdpb::MemberAttributes {
            id: local.id,
            name: local.name.clone(),
            client_urls: local.client_urls.clone(),
        };
        self.propose(Request::MemberAttributes(attributes), None).await?;
        Ok(())
    }

    /// Proposes revokes for expired leases; only the leader does, so members never race.
    pub async fn expire_leases(&self) {
        if self.inner.status.leader.load(Ordering::Relaxed) != self.inner.cluster.local.id {
            return;
        }
        // etcd revokes at most 1000 leases per second.
        for id in self.inner.lessor.take_expired(500) {
            match self.lease_revoke(LeaseRevokeRequest { id }, Some(&AuthInfo::member())).await {
                Ok(_) | Err(Error::Mvcc(crate::mvcc::Error::LeaseNotFound)) => {}
                Err(err) => {
                    tracing::warn!(lease = id, error = %err, "failed to revoke an expired lease; will retry");
                    self.inner.lessor.revoke_failed(id);
                }
            }
        }
    }

    /// Runs the leader's lease duties until the server stops: proposes revokes for expired
    /// leases, and ticks the lease clock every 500 ms while leases exist, or
    /// [`RENEWAL_FLUSH`](crate::lease::RENEWAL_FLUSH) after a keep-alive.
    pub async fn run_lease_loop(self) {
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(500));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => self.expire_leases().await,
                _ = self.inner.renewals_waiting.notified() => {
                    tokio::time::sleep_until(last_tick + crate::lease::RENEWAL_FLUSH).await;
                }
            }
            match self.lease_tick(last_tick.elapsed()).await {
                // Without leases no tick is proposed: the clock only needs to move while
                // leases exist, as a new lease is stored relative to the current clock.
                Ok(_) => last_tick = tokio::time::Instant::now(),
                Err(err) => tracing::warn!(error = %err, "lease clock tick failed; will retry"),
            }
        }
    }

    /// Advances the replicated lease clock by `elapsed` with the keep-alives since the last
    /// tick (leader only, and only while leases exist). Returns whether a tick was proposed.
    async fn lease_tick(&self, elapsed: std::time::Duration) -> Result<bool> {
        let lessor = &self.inner.lessor;
        if self.inner.status.leader.load(Ordering::Relaxed) != self.inner.cluster.local.id
            || lessor.is_empty()
        {
            return Ok(false);
        }
        let renewals = lessor.take_renewals();
        let renewals = renewals
            .into_iter()
            .map(|(id, remaining_ms)| LeaseRenewal { id, remaining_ms })
            .collect();
        let tick = LeaseTick { elapsed_ms: elapsed.as_millis() as i64, renewals };
        self.propose(Request::LeaseTick(tick), None).await?;
        Ok(true)
    }

    /// Proposes a client write and returns its response, stamped with this member's header.
    /// `take` picks the response out of what the applier returned for this kind of request.
    async fn write<T: Stamped>(
        &self,
        request: Request,
        caller: Option<&AuthInfo>,
        take: fn(Applied) -> Option<T>,
    ) -> Result<T> {
        let applied = self.propose(request, caller).await?;
        let mut resp = take(applied).expect("a request applies as its own kind of response");
        self.stamp(resp.header_mut());
        Ok(resp)
    }

    /// Proposes `request` on behalf of `caller`, whose permissions every member checks when
    /// applying it.
    async fn propose(&self, request: Request, caller: Option<&AuthInfo>) -> Result<Applied> {
        let caller =
            caller.map(|c| Caller { username: c.username.clone(), auth_revision: c.revision });
        let data = RaftRequest { request: Some(request), caller }.encode_to_vec();
        if data.len() > self.inner.limits.max_request_bytes {
            return Err(Error::RequestTooLarge);
        }
        let (reply, answer) = oneshot::channel();
        self.inner.raft.send(Input::Propose { data, reply }).map_err(|_| Error::Stopped)?;
        Ok(self.wait(answer).await??)
    }

    /// Waits until this member has applied everything committed before now.
    pub async fn read_barrier(&self) -> Result<()> {
        if self.inner.status.lone_leader.load(Ordering::Acquire) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.inner.raft.send(Input::ReadIndex { reply }).map_err(|_| Error::Stopped)?;
        self.wait(answer).await?;
        Ok(())
    }

    async fn wait<T>(
        &self,
        answer: oneshot::Receiver<std::result::Result<T, ProposeError>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.limits.request_timeout, answer).await {
            Err(_) => {
                metrics::counter!(crate::metrics::PROPOSALS_FAILED).increment(1);
                Err(self.timeout_error())
            }
            Ok(Err(_)) | Ok(Ok(Err(ProposeError::Stopped))) => Err(Error::Stopped),
            Ok(Ok(Err(ProposeError::Dropped))) => Err(Error::Timeout),
            Ok(Ok(Err(ProposeError::NotLeader))) => Err(Error::NotLeader),
            Ok(Ok(Err(ProposeError::LearnerNotReady))) => Err(Error::LearnerNotReady),
            Ok(Ok(Err(ProposeError::LeaderChanged))) => Err(Error::LeaderChanged),
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}

/// A response with a header to stamp.
trait Stamped {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! stamped {
    ($($response:ty),*) => {$(
        impl Stamped for $response {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}

stamped!(
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse
);
