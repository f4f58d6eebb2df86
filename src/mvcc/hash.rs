//! HashKV with etcd's exact algorithm (`server/storage/mvcc/hash.go`), so that a hash from
//! rsetcd equals the one etcd computes over the same history and members can be compared.
//!
//! etcd hashes, with CRC-32C, the bucket name `key` and then every (key, value) pair of its
//! `key` bucket in revision order up to the hashed revision, where the key is the revision
//! (`main` 8 BE, `_`, `sub` 8 BE, `t` for a tombstone) and the value the marshalled
//! KeyValue (a tombstone's holds only the key). Revisions at or below the compaction point
//! count only while they are still their key's visible version, and a tombstone exactly at
//! the compaction point is skipped.

use heed::RoTxn;
use prost::Message;

use super::keys;
use super::record;
use super::revision::{hist_key, Revision};
use super::{Error, Result, Store};
use crate::pb::mvccpb::KeyValue;

/// Result of [`hash_kv`]: the hash, and the compaction and hashed revisions it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    pub compact_revision: i64,
    pub revision: i64,
}

/// Hashes history up to `rev` (0 = current). Fails like a Range for compacted or future
/// revisions.
pub fn hash_kv(store: &Store, txn: &RoTxn, rev: i64) -> Result<KvHash> {
    let current = store.current_rev(txn)?;
    let compacted = store.compact_rev(txn)?;
    if rev > 0 && rev < compacted {
        return Err(Error::Compacted);
    }
    if rev > current {
        return Err(Error::FutureRev);
    }
    let rev = if rev == 0 { current } else { rev };

    let mut hash = crc32c::crc32c(b"key");
    for item in store.backend.revlog().iter(txn)? {
        let (rev_bytes, entry) = item?;
        let at = Revision::from_bytes(rev_bytes);
        if at.main > rev {
            break;
        }
        let change = record::decode_change(at, entry);
        let key = change.key;
        let tombstone = change.version.is_none();
        if at.main <= compacted && (tombstone || !visible_at(store, txn, key, at, rev)?) {
            continue;
        }
        if at.main == compacted && tombstone {
            continue;
        }
        let mut bucket_key = Vec::with_capacity(18);
        bucket_key.extend_from_slice(&rev_bytes[..8]);
        bucket_key.push(b'_');
        bucket_key.extend_from_slice(&rev_bytes[8..]);
        let value = match &change.version {
            None => KeyValue { key: key.to_vec(), ..Default::default() },
            Some(version) => version.to_key_value(key, false),
        };
        if tombstone {
            bucket_key.push(b't');
        }
        hash = crc32c::crc32c_append(hash, &bucket_key);
        hash = crc32c::crc32c_append(hash, &value.encode_to_vec());
    }
    Ok(KvHash { hash, compact_revision: compacted, revision: rev })
}

/// True when `at` is the newest version of `key` at or before `rev`.
fn visible_at(store: &Store, txn: &RoTxn, key: &[u8], at: Revision, rev: i64) -> Result<bool> {
    let stored = keys::stored(key);
    let seek = hist_key(&stored, Revision::new(rev, i64::MAX));
    let newest = store.backend.hist().get_greater_than_or_equal_to(txn, &seek)?;
    let newest = newest.map(|(entry, _)| super::revision::split_hist_key(entry));
    Ok(newest == Some((stored.as_ref(), at)))
}
