//! What a KV write (or a read-only Txn) needs from its caller when auth is on, as etcd's
//! auth applier checks it: write access to what it changes, read access to what it reads
//! back (compares, prev_kv, ranges), both branches of a Txn, and write access to every key
//! already on a lease it puts to or revokes (root needs none of this).

use heed::RoTxn;

use super::Output;
use crate::auth::{AuthInfo, AuthStore};
use crate::mvcc::Store;
use crate::pb::etcdserverpb::{request_op, DeleteRangeRequest, PutRequest, TxnRequest};

pub fn check_put(
    auth: &AuthStore,
    store: &Store,
    txn: &RoTxn,
    caller: &AuthInfo,
    put: &PutRequest,
) -> Output<()> {
    auth.check_write(caller, &put.key, &[])?;
    check_lease_keys(auth, store, txn, caller, put.lease)?;
    if put.prev_kv {
        auth.check_read(caller, &put.key, &[])?;
    }
    Ok(())
}

pub fn check_delete(auth: &AuthStore, caller: &AuthInfo, del: &DeleteRangeRequest) -> Output<()> {
    auth.check_write(caller, &del.key, &del.range_end)?;
    if del.prev_kv {
        auth.check_read(caller, &del.key, &del.range_end)?;
    }
    Ok(())
}

pub fn check_txn(
    auth: &AuthStore,
    store: &Store,
    txn: &RoTxn,
    caller: &AuthInfo,
    req: &TxnRequest,
) -> Output<()> {
    if !auth.is_enabled() {
        return Ok(());
    }
    for compare in &req.compare {
        auth.check_read(caller, &compare.key, &compare.range_end)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => {
                auth.check_read(caller, &r.key, &r.range_end)?
            }
            Some(request_op::Request::RequestPut(p)) => check_put(auth, store, txn, caller, p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => check_delete(auth, caller, d)?,
            Some(request_op::Request::RequestTxn(t)) => check_txn(auth, store, txn, caller, t)?,
            None => {}
        }
    }
    Ok(())
}

pub fn check_lease_keys(
    auth: &AuthStore,
    store: &Store,
    txn: &RoTxn,
    caller: &AuthInfo,
    lease: i64,
) -> Output<()> {
    if lease == 0 || !auth.is_enabled() || auth.check_admin(Some(caller)).is_ok() {
        return Ok(());
    }
    for key in store.lease_keys(txn, lease)? {
        auth.check_write(caller, &key, &[])?;
    }
    Ok(())
}
