//! Txn: compares, then the ops of one branch, at one main revision.
//!
//! As in etcd, every compare (nested Txns' included) is evaluated against the state before the
//! Txn starts, which fixes the *path* through the branches; then every op on that path is
//! checked (leases exist, kept values exist, read revisions are valid), and only then are the
//! ops executed. A Txn therefore fails whole or applies whole.

use heed::RoTxn;

use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;

use super::keys;
use super::store::{KeyRange, Store, Writer};
use super::{Error, Result};

/// Where a Txn runs: a [`Writer`] for Txns that write, a read transaction for read-only ones.
pub trait TxnTarget {
    fn store(&self) -> &Store;
    fn view(&self) -> &RoTxn<'_>;
    fn current_rev(&self) -> i64;
    fn put(&mut self, req: &PutRequest) -> Result<PutResponse>;
    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse>;
}

impl TxnTarget for Writer<'_, '_, '_> {
    fn store(&self) -> &Store {
        Writer::store(self)
    }
    fn view(&self) -> &RoTxn<'_> {
        Writer::view(self)
    }
    fn current_rev(&self) -> i64 {
        Writer::current_rev(self)
    }
    fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let value = (!req.ignore_value).then_some(req.value.as_slice());
        let lease = (!req.ignore_lease).then_some(req.lease);
        let prev = Writer::put(self, &req.key, value, lease)?;
        Ok(PutResponse {
            header: Some(header(self.current_rev())),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }
    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let deleted = Writer::delete_range(self, &KeyRange::new(&req.key, &req.range_end))?;
        Ok(DeleteRangeResponse {
            header: Some(header(self.current_rev())),
            deleted: deleted.len() as i64,
            prev_kvs: if req.prev_kv { deleted } else { Vec::new() },
        })
    }
}

/// A Txn with no Put or DeleteRange on any branch, served from a read transaction.
pub struct ReadOnly<'a, 'e> {
    pub store: &'a Store,
    pub txn: &'a RoTxn<'e>,
    pub current: i64,
}

impl TxnTarget for ReadOnly<'_, '_> {
    fn store(&self) -> &Store {
        self.store
    }
    fn view(&self) -> &RoTxn<'_> {
        self.txn
    }
    fn current_rev(&self) -> i64 {
        self.current
    }
    fn put(&mut self, _: &PutRequest) -> Result<PutResponse> {
        unreachable!("a read-only Txn was checked to hold no Put")
    }
    fn delete_range(&mut self, _: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        unreachable!("a read-only Txn was checked to hold no DeleteRange")
    }
}

/// True when no branch, at any depth, writes.
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| match &op.request {
        Some(Request::RequestRange(_)) | None => true,
        Some(Request::RequestTxn(t)) => is_read_only(t),
        Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
    })
}

/// Whether any branch of the Txn (nested ones included) holds a Put.
pub fn has_puts(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).any(|op| match &op.request {
        Some(Request::RequestPut(_)) => true,
        Some(Request::RequestTxn(t)) => has_puts(t),
        _ => false,
    })
}

/// Runs a whole Txn. The header carries the revision after it.
pub fn execute(target: &mut impl TxnTarget, req: &TxnRequest) -> Result<TxnResponse> {
    let mut path = Vec::new();
    choose_path(target, req, &mut path)?;
    check_path(target, req, &mut path.iter().copied())?;
    let mut resp = run_path(target, req, &mut path.iter().copied())?;
    resp.header = Some(header(target.current_rev()));
    Ok(resp)
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader { revision, ..Default::default() }
}

/// Records, in depth-first order, which branch each Txn on the taken path takes.
fn choose_path(target: &impl TxnTarget, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
    let mut succeeded = true;
    for cmp in &req.compare {
        if !compare(target, cmp)? {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    for op in branch(req, succeeded) {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            choose_path(target, nested, path)?;
        }
    }
    Ok(())
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

fn check_path(
    target: &impl TxnTarget,
    req: &TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<()> {
    let succeeded = path.next().expect("path covers every txn");
    let current = target.current_rev();
    for op in branch(req, succeeded) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(target, r.revision, current)?,
            Some(Request::RequestPut(p)) => check_put(target, p)?,
            Some(Request::RequestDeleteRange(_)) | None => {}
            Some(Request::RequestTxn(nested)) => check_path(target, nested, path)?,
        }
    }
    Ok(())
}

/// etcd's `checkRange` for ranges inside a Txn: unlike a plain Range, a negative revision is
/// compared with the compaction point (-1 before any compaction) rather than meaning "latest".
fn check_range(target: &impl TxnTarget, revision: i64, current: i64) -> Result<()> {
    if revision == 0 {
        return Ok(());
    }
    if revision > current {
        return Err(Error::FutureRev);
    }
    if revision < target.store().compact_rev(target.view())? {
        return Err(Error::Compacted);
    }
    Ok(())
}

fn check_put(target: &impl TxnTarget, p: &PutRequest) -> Result<()> {
    let store = target.store();
    let txn = target.view();
    // etcd checks the lease before the key.
    if !p.ignore_lease && p.lease != 0 && !store.lease_exists(txn, p.lease)? {
        return Err(Error::LeaseNotFound);
    }
    if (p.ignore_value || p.ignore_lease)
        && store.backend.live().get(txn, &keys::stored(&p.key))?.is_none()
    {
        return Err(Error::KeyNotFound);
    }
    Ok(())
}

fn run_path(
    target: &mut impl TxnTarget,
    req: &TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<TxnResponse> {
    let succeeded = path.next().expect("path covers every txn");
    let mut responses = Vec::new();
    for op in branch(req, succeeded) {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => {
                let current = target.current_rev();
                let mut resp = target.store().range(target.view(), r, current)?;
                resp.header = Some(header(current));
                Response::ResponseRange(resp)
            }
            Some(Request::RequestPut(p)) => Response::ResponsePut(target.put(p)?),
            Some(Request::RequestDeleteRange(d)) => {
                Response::ResponseDeleteRange(target.delete_range(d)?)
            }
            Some(Request::RequestTxn(nested)) => {
                let mut resp = run_path(target, nested, path)?;
                // etcd leaves a nested Txn's header empty (only its ops' headers are set).
                resp.header = Some(ResponseHeader::default());
                Response::ResponseTxn(resp)
            }
            None => continue,
        };
        responses.push(ResponseOp { response: Some(response) });
    }
    Ok(TxnResponse { header: None, succeeded, responses })
}

/// One compare; with a range_end every key in the range must pass, and an empty range compares
/// a zero KeyValue (so `create_revision == 0` means "absent"), except VALUE, which fails.
fn compare(target: &impl TxnTarget, cmp: &Compare) -> Result<bool> {
    let range = KeyRange::new(&cmp.key, &cmp.range_end);
    let current = target.current_rev();
    let mut kvs = Vec::new();
    let with_values = cmp.target == CompareTarget::Value as i32;
    target.store().visit(
        target.view(),
        &range,
        current,
        current,
        with_values,
        |key, version| {
            kvs.push(version.to_key_value(key, false));
            true
        },
    )?;
    if kvs.is_empty() {
        if cmp.target == CompareTarget::Value as i32 {
            return Ok(false);
        }
        return Ok(compare_one(cmp, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_one(cmp, kv)))
}

fn compare_one(cmp: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    // As etcd: the operand counts only when its kind matches the target (else 0 or empty), an
    // unknown target compares equal, and an unknown result is true.
    let union = cmp.target_union.as_ref();
    let ordering = match CompareTarget::try_from(cmp.target) {
        Ok(CompareTarget::Value) => {
            let v = match union {
                Some(TargetUnion::Value(v)) => v.as_slice(),
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Ok(CompareTarget::Version) => kv.version.cmp(&match union {
            Some(TargetUnion::Version(v)) => *v,
            _ => 0,
        }),
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&match union {
            Some(TargetUnion::CreateRevision(v)) => *v,
            _ => 0,
        }),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&match union {
            Some(TargetUnion::ModRevision(v)) => *v,
            _ => 0,
        }),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&match union {
            Some(TargetUnion::Lease(v)) => *v,
            _ => 0,
        }),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(cmp.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Err(_) => true,
    }
}
