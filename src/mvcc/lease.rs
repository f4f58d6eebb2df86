//! Leases in the store: the lease table, which keys each lease holds, and revoking (deleting
//! every attached key at one revision). Timing (expiry, keep-alive) lives in `crate::lease`;
//! this module only records what raft has decided.

use heed::RoTxn;

use crate::backend::meta_key;

use super::keys;
use super::store::{KeyRange, Writer};
use super::{Error, Result, Store};

/// A lease as stored: its id, granted TTL in seconds, and when it expires on the replicated
/// lease clock (milliseconds; see [`Writer::lease_tick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLease {
    pub id: i64,
    pub ttl: i64,
    pub deadline_ms: i64,
}

impl StoredLease {
    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ttl.to_be_bytes());
        out[8..].copy_from_slice(&self.deadline_ms.to_be_bytes());
        out
    }

    fn decode(id: i64, bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), 16, "corrupt lease record for {id}: {bytes:?}");
        StoredLease { id, ttl: decode_i64(&bytes[..8]), deadline_ms: decode_i64(&bytes[8..]) }
    }
}

/// Key of the `lease_keys` entry recording that `lease` holds `key`.
pub fn attachment_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let stored = keys::stored(key);
    let mut out = Vec::with_capacity(8 + stored.len());
    out.extend_from_slice(&lease.to_be_bytes());
    out.extend_from_slice(&stored);
    out
}

/// Value of that entry: the user key when the stored key is a digest of it.
pub fn attachment_value(key: &[u8]) -> &[u8] {
    if keys::is_digest(&keys::stored(key)) {
        key
    } else {
        &[]
    }
}

impl Store {
    pub fn leases(&self, txn: &RoTxn) -> Result<Vec<StoredLease>> {
        let mut out = Vec::new();
        for item in self.backend.lease().iter(txn)? {
            let (id, record) = item?;
            out.push(StoredLease::decode(decode_i64(id), record));
        }
        Ok(out)
    }

    /// The replicated lease clock: milliseconds of lease time applied so far.
    pub fn lease_clock(&self, txn: &RoTxn) -> Result<i64> {
        Ok(self.backend.meta_i64(txn, meta_key::LEASE_CLOCK)?.unwrap_or(0))
    }

    /// Keys attached to `lease`, in key order (the order a revoke deletes them in, as etcd).
    pub fn lease_keys(&self, txn: &RoTxn, lease: i64) -> Result<Vec<Vec<u8>>> {
        let prefix = lease.to_be_bytes();
        let mut keys = Vec::new();
        for item in self.backend.lease_keys().prefix_iter(txn, &prefix)? {
            let (entry, user_key) = item?;
            keys.push(if user_key.is_empty() { entry[8..].to_vec() } else { user_key.to_vec() });
        }
        keys.sort_unstable();
        Ok(keys)
    }
}

impl Writer<'_, '_, '_> {
    /// Records a granted lease, expiring `ttl` seconds from now on the lease clock; an id in
    /// use is etcd's "lease already exists".
    pub fn grant_lease(&mut self, id: i64, ttl: i64) -> Result<StoredLease> {
        let key = id.to_be_bytes();
        let (store, txn) = self.parts();
        if store.backend.lease().get(txn, &key)?.is_some() {
            return Err(Error::LeaseExists);
        }
        let deadline_ms = store.lease_clock(txn)?.saturating_add(ttl.saturating_mul(1000));
        let lease = StoredLease { id, ttl, deadline_ms };
        store.backend.lease().put(txn, &key, &lease.encode())?;
        Ok(lease)
    }

    /// Advances the lease clock by `elapsed_ms` and moves the deadlines of renewed leases to
    /// `remaining_ms` after the new clock. Unknown ids (revoked meanwhile) are skipped.
    pub fn lease_tick(&mut self, elapsed_ms: i64, renewals: &[(i64, i64)]) -> Result<()> {
        let (store, txn) = self.parts();
        let clock = store.lease_clock(txn)?.saturating_add(elapsed_ms.max(0));
        store.backend.put_meta_i64(txn, meta_key::LEASE_CLOCK, clock)?;
        for &(id, remaining_ms) in renewals {
            let key = id.to_be_bytes();
            let Some(record) = store.backend.lease().get(txn, &key)? else { continue };
            let mut lease = StoredLease::decode(id, record);
            lease.deadline_ms = clock.saturating_add(remaining_ms);
            store.backend.lease().put(txn, &key, &lease.encode())?;
        }
        Ok(())
    }

    /// Removes a lease and deletes every key attached to it, all at this request's revision.
    /// Returns the deleted keys.
    pub fn revoke_lease(&mut self, lease: i64) -> Result<Vec<Vec<u8>>> {
        let id = lease.to_be_bytes();
        let keys = {
            let (store, txn) = self.parts();
            if store.backend.lease().get(txn, &id)?.is_none() {
                return Err(Error::LeaseNotFound);
            }
            store.lease_keys(txn, lease)?
        };
        for key in &keys {
            self.delete_range(&KeyRange::Single(key.clone()))?;
        }
        let (store, txn) = self.parts();
        store.backend.lease().delete(txn, &id)?;
        Ok(keys)
    }
}

fn decode_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(
        bytes.try_into().unwrap_or_else(|_| panic!("corrupt lease record {bytes:?}")),
    )
}
