//! Request checks that need no state, done before proposing (etcd `v3rpc/key.go`).

use std::collections::HashSet;

use super::error::{Error, Result};
use crate::mvcc::KeyRange;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

pub fn range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if SortOrder::try_from(req.sort_order).is_err()
        || SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

pub fn put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(req: &DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` then `checkIntervals` on both branches.
pub fn txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    check_ops(req, max_ops)?;
    intervals(&req.success)?;
    intervals(&req.failure)?;
    Ok(())
}

/// The longest of compares, success and failure must fit in `max_ops`; nested Txns get what
/// is left.
fn check_ops(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let used = req.compare.len().max(req.success.len()).max(req.failure.len());
    if used > max_ops {
        return Err(Error::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => range(r)?,
            Some(Request::RequestPut(p)) => put(p)?,
            Some(Request::RequestDeleteRange(d)) => delete_range(d)?,
            Some(Request::RequestTxn(t)) => check_ops(t, max_ops - used)?,
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// The interval etcd's duplicate check uses for a delete: `range_end == "\0"` is taken
/// literally as the (empty) interval `[key, "\0")`, so a from-key delete never conflicts.
fn delete_interval(key: &[u8], range_end: &[u8]) -> KeyRange {
    match range_end {
        [0] => KeyRange::Between(key.to_vec(), vec![0]),
        _ => KeyRange::new(key, range_end),
    }
}

/// Within one branch a key may not be put twice, nor put inside a range the branch deletes.
/// The two branches of a nested Txn exclude each other, so each may put the same key.
/// Returns the keys put and the ranges deleted by `ops`, for the enclosing branch.
fn intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<KeyRange>)> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(delete_interval(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    let deleted = |dels: &[KeyRange], key: &[u8]| dels.iter().any(|r| r.contains(key));
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = intervals(&nested.success)?;
        let (puts_else, dels_else) = intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&dels, key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            if (puts.contains(key) && !puts_then.contains(key)) || deleted(&dels, key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}
