//! The core a client request reaches after the gRPC layer: validation, proposing writes
//! through raft, linearizable and serializable reads, and the response headers.
//! It knows nothing of gRPC; `api/` wraps it.

pub mod error;
pub mod validate;

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::oneshot;

pub use error::{Error, Result};

use crate::apply::{Applied, Output};
use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::mvcc::{txn, Store};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::pb::rsetcdpb::raft_request::Request;
use crate::pb::rsetcdpb::RaftRequest;
use crate::raft::{Input, NodeStatus, ProposeError};

/// Limits a client cannot exceed (etcd's `--max-request-bytes`, `--max-txn-ops`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
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
    /// The etcd version this member reports (Status, /version, --version).
    etcd_version: String,
}

impl Server {
    pub fn new(
        store: Store,
        raft: Sender<Input<Output>>,
        status: Arc<NodeStatus>,
        cluster: Cluster,
        limits: Limits,
        etcd_version: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                raft,
                status,
                cluster,
                limits,
                etcd_version,
            }),
        }
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

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        validate::range(&req)?;
        if !req.serializable {
            self.read_barrier().await?;
        }
        let store = &self.inner.store;
        let txn = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let current = store.current_rev(&txn)?;
        let mut resp = store.range(&txn, &req, current)?;
        resp.header = Some(self.header(current));
        Ok(resp)
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        validate::put(&req)?;
        match self.propose(Request::Put(req)).await? {
            Applied::Put(mut resp) => {
                self.stamp(&mut resp.header);
                Ok(resp)
            }
            other => unreachable!("put applied as {other:?}"),
        }
    }

    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        validate::delete_range(&req)?;
        match self.propose(Request::DeleteRange(req)).await? {
            Applied::DeleteRange(mut resp) => {
                self.stamp(&mut resp.header);
                Ok(resp)
            }
            other => unreachable!("delete applied as {other:?}"),
        }
    }

    /// A Txn that writes goes through raft; a read-only one is served locally after the same
    /// read barrier as a linearizable Range (etcd does the same).
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        validate::txn(&req, self.inner.limits.max_txn_ops)?;
        let mut resp = if txn::is_read_only(&req) {
            self.read_barrier().await?;
            let store = &self.inner.store;
            let view = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
            let current = store.current_rev(&view)?;
            let mut target = txn::ReadOnly {
                store,
                txn: &view,
                current,
            };
            txn::execute(&mut target, &req)?
        } else {
            match self.propose(Request::Txn(req)).await? {
                Applied::Txn(resp) => resp,
                other => unreachable!("txn applied as {other:?}"),
            }
        };
        self.stamp(&mut resp.header);
        Ok(resp)
    }

    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse> {
        match self.propose(Request::Compaction(req)).await? {
            Applied::Compaction(mut resp) => {
                self.stamp(&mut resp.header);
                Ok(resp)
            }
            other => unreachable!("compaction applied as {other:?}"),
        }
    }

    async fn propose(&self, request: Request) -> Result<Applied> {
        let data = RaftRequest {
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > self.inner.limits.max_request_bytes {
            return Err(Error::RequestTooLarge);
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .raft
            .send(Input::Propose { data, reply })
            .map_err(|_| Error::Stopped)?;
        Ok(self.wait(answer).await??)
    }

    /// Waits until this member has applied everything committed before now.
    pub async fn read_barrier(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .raft
            .send(Input::ReadIndex { reply })
            .map_err(|_| Error::Stopped)?;
        self.wait(answer).await?;
        Ok(())
    }

    async fn wait<T>(
        &self,
        answer: oneshot::Receiver<std::result::Result<T, ProposeError>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.limits.request_timeout, answer).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(_)) | Ok(Ok(Err(ProposeError::Stopped))) => Err(Error::Stopped),
            Ok(Ok(Err(ProposeError::Dropped))) => Err(Error::Timeout),
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}
