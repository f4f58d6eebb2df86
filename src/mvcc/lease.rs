//! Leases in the store: the lease table, which keys each lease holds, and revoking (deleting
//! every attached key at one revision). Timing (expiry, keep-alive) lives in `crate::lease`;
//! this module only records what raft has decided.

use heed::RoTxn;

use super::store::{KeyRange, Writer};
use super::{Error, Result, Store};

/// A lease as stored: its id and granted TTL in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLease {
    pub id: i64,
    pub ttl: i64,
}

pub fn attachment_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&lease.to_be_bytes());
    out.extend_from_slice(key);
    out
}

impl Store {
    pub fn leases(&self, txn: &RoTxn) -> Result<Vec<StoredLease>> {
        let mut out = Vec::new();
        for item in self.backend.lease.iter(txn)? {
            let (id, ttl) = item?;
            out.push(StoredLease { id: decode_i64(id), ttl: decode_i64(ttl) });
        }
        Ok(out)
    }

    /// Keys attached to `lease`, in key order.
    pub fn lease_keys(&self, txn: &RoTxn, lease: i64) -> Result<Vec<Vec<u8>>> {
        let prefix = lease.to_be_bytes();
        let mut keys = Vec::new();
        for item in self.backend.lease_keys.prefix_iter(txn, &prefix)? {
            let (entry, _) = item?;
            keys.push(entry[8..].to_vec());
        }
        Ok(keys)
    }
}

impl Writer<'_, '_, '_> {
    /// Records a granted lease; an id in use is etcd's "lease already exists".
    pub fn grant_lease(&mut self, lease: StoredLease) -> Result<()> {
        let id = lease.id.to_be_bytes();
        let (store, txn) = self.parts();
        if store.backend.lease.get(txn, &id)?.is_some() {
            return Err(Error::LeaseExists);
        }
        store.backend.lease.put(txn, &id, &lease.ttl.to_be_bytes())?;
        Ok(())
    }

    /// Removes a lease and deletes every key attached to it, all at this request's revision.
    /// Returns the deleted keys.
    pub fn revoke_lease(&mut self, lease: i64) -> Result<Vec<Vec<u8>>> {
        let id = lease.to_be_bytes();
        let keys = {
            let (store, txn) = self.parts();
            if store.backend.lease.get(txn, &id)?.is_none() {
                return Err(Error::LeaseNotFound);
            }
            store.lease_keys(txn, lease)?
        };
        for key in &keys {
            self.delete_range(&KeyRange::Single(key.clone()))?;
        }
        let (store, txn) = self.parts();
        store.backend.lease.delete(txn, &id)?;
        Ok(keys)
    }
}

fn decode_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(
        bytes.try_into().unwrap_or_else(|_| panic!("corrupt lease record {bytes:?}")),
    )
}
