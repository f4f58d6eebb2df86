//! Range, put, delete-range and compaction over the tables of [`Backend`].
//!
//! Reads at the current revision walk `live` (one step per key); reads at an older revision
//! walk `hist` with two seeks per key (see [`HistOrder`](super::revision::HistOrder)), so
//! neither reads keys outside the requested range nor a key's older history.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

use super::keys::{self, KeyOrder, Walk};
use super::lease;
use super::record::{self, Change, Version, HIST_TOMBSTONE};
use super::revision::{hist_key, split_hist_key, Revision};
use super::{Error, Result};
use crate::backend::{append, meta_key, Backend};

/// The keys a request names, decoded from etcd's `(key, range_end)` convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `range_end == "\0"`: every key `>= key`.
    From(Vec<u8>),
    /// `[key, range_end)`; empty when `key >= range_end`.
    Between(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => Self::Single(key.to_vec()),
            [0] => Self::From(key.to_vec()),
            end => Self::Between(key.to_vec(), end.to_vec()),
        }
    }

    pub fn start(&self) -> &[u8] {
        match self {
            Self::Single(k) | Self::From(k) | Self::Between(k, _) => k,
        }
    }

    /// True when `key` is at or below the upper end (keys are visited in order from start).
    pub fn below_end(&self, key: &[u8]) -> bool {
        match self {
            Self::Single(k) => key == k.as_slice(),
            Self::From(_) => true,
            Self::Between(_, end) => key < end.as_slice(),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start() && self.below_end(key)
    }

    fn is_empty(&self) -> bool {
        matches!(self, Self::Between(start, end) if start >= end)
    }
}

/// Read access to the key space. Cheap to clone (LMDB handles are shared).
#[derive(Clone)]
pub struct Store {
    pub backend: Backend,
}

impl Store {
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }

    pub fn current_rev(&self, txn: &RoTxn) -> Result<i64> {
        Ok(self.backend.meta_i64(txn, meta_key::CURRENT_REV)?.unwrap_or(1))
    }

    /// The revision compacted to, or -1 before any compaction (etcd's initial value).
    pub fn compact_rev(&self, txn: &RoTxn) -> Result<i64> {
        Ok(self.backend.meta_i64(txn, meta_key::COMPACT_REV)?.unwrap_or(-1))
    }

    pub fn lease_exists(&self, txn: &RoTxn, lease: i64) -> Result<bool> {
        Ok(self.backend.lease().get(txn, &lease.to_be_bytes())?.is_some())
    }

    /// Calls `visit` with each key of `range` as it was at revision `at`, in key order, until
    /// `visit` returns false. `current` is the newest revision visible in `txn`. Without
    /// `with_values` the versions carry empty values (keys-only and count reads skip the
    /// lookup of the value). Returns how many table entries were read, which tests use to
    /// prove reads stay in their range.
    pub fn visit(
        &self,
        txn: &RoTxn,
        range: &KeyRange,
        at: i64,
        current: i64,
        with_values: bool,
        mut visit: impl FnMut(&[u8], Version<'_>) -> bool,
    ) -> Result<usize> {
        if range.is_empty() {
            return Ok(0);
        }
        if at >= current {
            return self.visit_live(txn, range, with_values, &mut visit);
        }
        self.visit_hist(txn, range, at, &mut visit)
    }

    /// The change made at `rev`, which history must hold (e.g. one that `live` or `hist`
    /// names).
    pub(super) fn change_at<'t>(&self, txn: &'t RoTxn, rev: Revision) -> Result<Change<'t>> {
        let bytes = self.backend.revlog().get(txn, &rev.to_bytes())?;
        let bytes = bytes.unwrap_or_else(|| panic!("revlog lacks {rev:?}, named by an index"));
        Ok(record::decode_change(rev, bytes))
    }

    /// The version a put wrote at `rev`.
    pub(super) fn version_at<'t>(&self, txn: &'t RoTxn, rev: Revision) -> Result<Version<'t>> {
        let change = self.change_at(txn, rev)?;
        Ok(change.version.unwrap_or_else(|| panic!("the change at {rev:?} is not a put")))
    }

    /// The user key of a stored key that changed at `rev`.
    fn user_key(&self, txn: &RoTxn, stored: &[u8], rev: Revision) -> Result<Vec<u8>> {
        if !keys::is_digest(stored) {
            return Ok(stored.to_vec());
        }
        Ok(self.change_at(txn, rev)?.key.to_vec())
    }

    /// The current version of `stored`, with or without its value.
    fn current<'t>(
        &self,
        txn: &'t RoTxn,
        live: &'t [u8],
        with_values: bool,
    ) -> Result<Version<'t>> {
        let meta = record::decode_live(live);
        if with_values {
            return self.version_at(txn, meta.modified);
        }
        Ok(meta)
    }

    fn visit_live(
        &self,
        txn: &RoTxn,
        range: &KeyRange,
        with_values: bool,
        visit: &mut impl FnMut(&[u8], Version<'_>) -> bool,
    ) -> Result<usize> {
        if let KeyRange::Single(key) = range {
            let stored = keys::stored(key);
            if let Some(bytes) = self.backend.live().get(txn, &stored)? {
                visit(key, self.current(txn, bytes, with_values)?);
                return Ok(1);
            }
            return Ok(0);
        }
        // An end of inline length bounds stored keys exactly as it bounds user keys (see
        // `keys`); past a longer end, `KeyOrder` finds where to stop.
        let upper = match range {
            KeyRange::Between(_, end) if !keys::is_digest(end) => Bound::Excluded(end.as_slice()),
            _ => Bound::Unbounded,
        };
        // LMDB refuses to seek to an empty key; an empty start means the first key anyway.
        let lower = match keys::seek_floor(range.start()) {
            [] => Bound::Unbounded,
            floor => Bound::Included(floor),
        };
        let bounds = (lower, upper);
        let mut order = KeyOrder::new(range);
        let mut touched = 0;
        for item in self.backend.live().range(txn, &bounds)? {
            let (stored, bytes) = item?;
            touched += 1;
            let version = self.current(txn, bytes, with_values)?;
            let modified = version.modified;
            let user_key = || self.user_key(txn, stored, modified);
            if order.offer(stored, Some(version), user_key, visit)? == Walk::Stop {
                return Ok(touched);
            }
        }
        order.finish(visit);
        Ok(touched)
    }

    fn visit_hist(
        &self,
        txn: &RoTxn,
        range: &KeyRange,
        at: i64,
        visit: &mut impl FnMut(&[u8], Version<'_>) -> bool,
    ) -> Result<usize> {
        let newest_at = Revision::new(at, i64::MAX);
        if let KeyRange::Single(key) = range {
            let stored = keys::stored(key);
            let found = self
                .backend
                .hist()
                .get_greater_than_or_equal_to(txn, &hist_key(&stored, newest_at))?;
            if let Some((entry, bytes)) = found {
                let (found_key, rev) = split_hist_key(entry);
                if found_key == stored.as_ref() && !record::hist_is_tombstone(bytes) {
                    visit(key, self.version_at(txn, rev)?);
                }
            }
            return Ok(1);
        }
        let mut seek = hist_key(keys::seek_floor(range.start()), newest_at);
        let mut order = KeyOrder::new(range);
        let mut touched = 0;
        while let Some((entry, bytes)) =
            self.backend.hist().get_greater_than_or_equal_to(txn, &seek)?
        {
            touched += 1;
            let (stored, rev) = split_hist_key(entry);
            if rev.main > at {
                // Every version of this key at hand is too new: jump to its newest <= at,
                // unless the key is already past the range.
                if order.offer(stored, None, || Ok::<_, Error>(Vec::new()), visit)? == Walk::Stop {
                    return Ok(touched);
                }
                seek = hist_key(stored, newest_at);
                continue;
            }
            let version = match record::hist_is_tombstone(bytes) {
                true => None,
                false => Some(self.version_at(txn, rev)?),
            };
            let user_key = || self.user_key(txn, stored, rev);
            if order.offer(stored, version, user_key, visit)? == Walk::Stop {
                return Ok(touched);
            }
            // (key, 0.0) sorts after every real version of key: the next entry is the next key.
            seek = hist_key(stored, Revision::default());
        }
        order.finish(visit);
        Ok(touched)
    }

    /// Checks a read revision against the compacted and current revisions, as etcd does:
    /// a future revision and one below the compaction point fail; `<= 0` means current.
    pub fn check_read_rev(&self, txn: &RoTxn, requested: i64, current: i64) -> Result<i64> {
        if requested > current {
            return Err(Error::FutureRev);
        }
        let at = if requested <= 0 { current } else { requested };
        if at < self.compact_rev(txn)? {
            return Err(Error::Compacted);
        }
        Ok(at)
    }

    /// Executes a Range with etcd's semantics for limit, sorting, filters and count.
    /// `current` is the newest revision visible in `txn` (own writes included in a Txn).
    pub fn range(&self, txn: &RoTxn, req: &RangeRequest, current: i64) -> Result<RangeResponse> {
        let at = self.check_read_rev(txn, req.revision, current)?;
        let range = KeyRange::new(&req.key, &req.range_end);
        let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // Sorting and filtering need every key; otherwise one past the limit tells `more`.
        let fetch_all = order != SortOrder::None || filtered || req.limit <= 0;
        let wanted = if fetch_all { usize::MAX } else { req.limit as usize + 1 };

        // keys_only blanks values after sorting (a VALUE sort still orders by them).
        let blank_early = req.keys_only && target != SortTarget::Value;
        let mut kvs = Vec::new();
        let mut count: i64 = 0;
        let with_values = !req.count_only && !blank_early;
        self.visit(txn, &range, at, current, with_values, |key, version| {
            count += 1;
            if !req.count_only && kvs.len() < wanted {
                kvs.push(version.to_key_value(key, blank_early));
            }
            true
        })?;

        if req.count_only {
            kvs.clear();
        }
        if filtered {
            kvs.retain(|kv| passes_filters(req, kv));
        }
        sort(&mut kvs, order, target);
        if req.keys_only && !blank_early {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        Ok(RangeResponse { header: None, kvs, more, count })
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    let above = |v: i64, min: i64| min == 0 || v >= min;
    let below = |v: i64, max: i64| max == 0 || v <= max;
    above(kv.mod_revision, req.min_mod_revision)
        && below(kv.mod_revision, req.max_mod_revision)
        && above(kv.create_revision, req.min_create_revision)
        && below(kv.create_revision, req.max_create_revision)
}

/// etcd's ordering rules: results are key-ascending unless asked otherwise, and a non-key
/// target with no order means ascending.
fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order == SortOrder::Ascend && target == SortTarget::Key {
        return;
    }
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    // Stable sort keeps key order among equal values, as etcd's sort.Stable does.
    if order == SortOrder::Descend {
        kvs.sort_by(|a, b| cmp(b, a));
    } else {
        kvs.sort_by(cmp);
    }
}

/// Applies the writes of one request (a Put, a DeleteRange or a whole Txn) at one new main
/// revision. Reads through [`Writer::view`] see the writes made so far.
pub struct Writer<'s, 't, 'e> {
    store: &'s Store,
    txn: &'t mut RwTxn<'e>,
    /// Revision before this request.
    base: i64,
    /// Changes made so far; also the next sub revision.
    sub: i64,
    /// The changes as watch events, each with its previous version.
    events: Vec<Event>,
}

impl<'s, 't, 'e> Writer<'s, 't, 'e> {
    pub fn new(store: &'s Store, txn: &'t mut RwTxn<'e>) -> Result<Self> {
        let base = store.current_rev(txn)?;
        Ok(Self { store, txn, base, sub: 0, events: Vec::new() })
    }

    pub fn store(&self) -> &Store {
        self.store
    }

    /// The store and the write transaction, for the other write operations of this module's
    /// siblings (leases).
    pub(super) fn parts(&mut self) -> (&Store, &mut RwTxn<'e>) {
        (self.store, self.txn)
    }

    pub fn view(&self) -> &RoTxn<'e> {
        self.txn
    }

    /// The newest revision visible to reads inside this request.
    pub fn current_rev(&self) -> i64 {
        if self.sub > 0 {
            self.base + 1
        } else {
            self.base
        }
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.base + 1, self.sub);
        self.sub += 1;
        rev
    }

    /// Checks what a put needs before anything is written: the key exists when a value or
    /// lease is to be kept, and a new lease exists.
    pub fn check_put(&self, key: &[u8], keep_value: bool, lease: Option<i64>) -> Result<()> {
        // etcd checks the lease before the key.
        if let Some(id) = lease.filter(|&id| id != 0) {
            if !self.store.lease_exists(self.txn, id)? {
                return Err(Error::LeaseNotFound);
            }
        }
        if (keep_value || lease.is_none())
            && self.store.backend.live().get(self.txn, &keys::stored(key))?.is_none()
        {
            return Err(Error::KeyNotFound);
        }
        Ok(())
    }

    /// Writes `key`. `value: None` keeps the current value (ignore_value) and `lease: None`
    /// keeps the current lease (ignore_lease); call [`Writer::check_put`] first. Returns the
    /// previous version, if the key existed.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        lease: Option<i64>,
    ) -> Result<Option<KeyValue>> {
        self.check_put(key, value.is_none(), lease)?;
        let stored = keys::stored(key);
        let prev = match self.store.backend.live().get(self.txn, &stored)? {
            Some(bytes) => {
                let modified = record::decode_live(bytes).modified;
                Some(self.store.version_at(self.txn, modified)?.to_key_value(key, false))
            }
            None => None,
        };
        let rev = self.next_rev();
        let value = match (value, &prev) {
            (Some(v), _) => v.to_vec(),
            (None, Some(p)) => p.value.clone(),
            (None, None) => unreachable!("check_put ensured the key exists"),
        };
        let lease = lease.or(prev.as_ref().map(|p| p.lease)).unwrap_or(0);
        let version = Version {
            modified: rev,
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value: &value,
        };
        let b = &self.store.backend;
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != lease {
            if old_lease != 0 {
                b.lease_keys().delete(self.txn, &lease::attachment_key(old_lease, key))?;
            }
            if lease != 0 {
                let attached = lease::attachment_value(key);
                b.lease_keys().put(self.txn, &lease::attachment_key(lease, key), attached)?;
            }
        }
        b.live().put(self.txn, &stored, &record::encode_live(&version))?;
        b.hist().put(self.txn, &hist_key(&stored, rev), record::HIST_PUT)?;
        append(b.revlog(), self.txn, &rev.to_bytes(), &record::encode_put(key, &version))?;
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(version.to_key_value(key, false)),
            prev_kv: prev.clone(),
        });
        Ok(prev)
    }

    /// Deletes every existing key of `range`; returns the deleted versions in key order.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        let mut deleted = Vec::new();
        let current = self.current_rev();
        self.store.visit(self.txn, range, current, current, true, |key, version| {
            deleted.push(version.to_key_value(key, false));
            true
        })?;
        for kv in &deleted {
            let rev = self.next_rev();
            let b = &self.store.backend;
            if kv.lease != 0 {
                b.lease_keys().delete(self.txn, &lease::attachment_key(kv.lease, &kv.key))?;
            }
            let stored = keys::stored(&kv.key);
            b.live().delete(self.txn, &stored)?;
            b.hist().put(self.txn, &hist_key(&stored, rev), HIST_TOMBSTONE)?;
            append(b.revlog(), self.txn, &rev.to_bytes(), &record::encode_tombstone(&kv.key))?;
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: kv.key.clone(),
                    mod_revision: rev.main,
                    ..Default::default()
                }),
                prev_kv: Some(kv.clone()),
            });
        }
        Ok(deleted)
    }

    /// Records the new current revision if anything changed and returns the revision the
    /// request produced (the old one for a request that changed nothing) with its events.
    pub fn finish(self) -> Result<(i64, Vec<Event>)> {
        let rev = self.current_rev();
        if self.sub > 0 {
            self.store.backend.put_meta_i64(self.txn, meta_key::CURRENT_REV, rev)?;
        }
        Ok((rev, self.events))
    }
}

/// Compacts history to `rev`: reads below it fail from now on, and every version that no read
/// at or above `rev` can see is deleted. A tombstone exactly at `rev` is kept (etcd >= 3.5.16)
/// so that a watch from `rev` still sees that delete.
pub fn compact(store: &Store, txn: &mut RwTxn, rev: i64) -> Result<()> {
    let current = store.current_rev(txn)?;
    if rev <= store.compact_rev(txn)? {
        return Err(Error::Compacted);
    }
    if rev > current {
        return Err(Error::FutureRev);
    }
    let b = &store.backend;
    b.put_meta_i64(txn, meta_key::COMPACT_REV, rev)?;

    let mut doomed: Vec<(Vec<u8>, Revision)> = Vec::new();
    for item in b.revlog().iter(txn)? {
        let (rev_bytes, bytes) = item?;
        let at = Revision::from_bytes(rev_bytes);
        if at.main > rev {
            break;
        }
        let change = record::decode_change(at, bytes);
        let stored = keys::stored(change.key);
        let newest = b
            .hist()
            .get_greater_than_or_equal_to(txn, &hist_key(&stored, Revision::new(rev, i64::MAX)))?
            .map(|(entry, _)| split_hist_key(entry).1);
        let keep = newest == Some(at) && (change.version.is_some() || at.main == rev);
        if !keep {
            doomed.push((stored.into_owned(), at));
        }
    }
    for (stored, at) in doomed {
        b.hist().delete(txn, &hist_key(&stored, at))?;
        b.revlog().delete(txn, &at.to_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path(), 1 << 30).unwrap();
        (dir, Store::new(backend))
    }

    fn put(store: &Store, key: &[u8], value: &[u8]) -> i64 {
        let mut txn = store.backend.write_txn().unwrap();
        let mut writer = Writer::new(store, &mut txn).unwrap();
        writer.put(key, Some(value), Some(0)).unwrap();
        let (rev, _) = writer.finish().unwrap();
        txn.commit().unwrap();
        rev
    }

    /// (values seen, entries read) of a visit over `range` at `at`.
    fn read(store: &Store, range: &KeyRange, at: i64) -> (Vec<Vec<u8>>, usize) {
        let txn = store.backend.read_txn().unwrap();
        let current = store.current_rev(&txn).unwrap();
        let mut seen = Vec::new();
        let touched = store
            .visit(&txn, range, at, current, true, |_, v| {
                seen.push(v.value.to_vec());
                true
            })
            .unwrap();
        (seen, touched)
    }

    #[test]
    fn prefix_range_reads_only_its_keys() {
        let (_dir, store) = open();
        for i in 0..200 {
            put(&store, format!("a/{i:03}").as_bytes(), b"x");
            put(&store, format!("c/{i:03}").as_bytes(), b"x");
        }
        put(&store, b"b/1", b"one");
        put(&store, b"b/2", b"two");
        let prefix = KeyRange::Between(b"b/".to_vec(), b"b0".to_vec());
        let (values, touched) = read(&store, &prefix, i64::MAX);
        assert_eq!(values, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(touched, 2, "a prefix read must not walk the other 400 keys");
        let (values, touched) = read(&store, &prefix, 402);
        assert_eq!(values.len(), 1);
        assert!(touched <= 4, "historical prefix read touched {touched} entries");
    }

    #[test]
    fn old_revision_read_seeks_past_long_histories() {
        let (_dir, store) = open();
        let first = put(&store, b"k", b"v0");
        let other = put(&store, b"l", b"w");
        for i in 1..=1000 {
            put(&store, b"k", format!("v{i}").as_bytes());
        }
        let (values, touched) = read(&store, &KeyRange::From(b"k".to_vec()), other);
        assert_eq!(values, vec![b"v0".to_vec(), b"w".to_vec()]);
        assert!(touched <= 4, "reading 2 keys at an old revision touched {touched} entries");
        let (values, _) = read(&store, &KeyRange::Single(b"k".to_vec()), first);
        assert_eq!(values, vec![b"v0".to_vec()]);
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_need() {
        let (_dir, store) = open();
        put(&store, b"a", b"1");
        let keep_rev = put(&store, b"a", b"2");
        put(&store, b"b", b"x");
        let mut txn = store.backend.write_txn().unwrap();
        compact(&store, &mut txn, keep_rev).unwrap();
        txn.commit().unwrap();
        let (values, _) = read(&store, &KeyRange::From(b"a".to_vec()), keep_rev);
        assert_eq!(values, vec![b"2".to_vec()]);
        let txn = store.backend.read_txn().unwrap();
        assert!(matches!(store.check_read_rev(&txn, keep_rev - 1, 10), Err(Error::Compacted)));
        assert_eq!(store.backend.hist().len(&txn).unwrap(), 2, "the overwritten version is gone");
    }

    #[test]
    fn revlog_pages_fill_up_and_hist_stays_an_index() {
        let (_dir, store) = open();
        // Keys in random order, as a workload writes them: revisions still only grow.
        let mut key = 7u64;
        for _ in 0..3000 {
            key = key.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            put(&store, &key.to_be_bytes(), &[0xab; 256]);
        }
        let txn = store.backend.read_txn().unwrap();
        let revlog = store.backend.revlog().stat(&txn).unwrap();
        let record = 16 + 1 + 4 + 8 + 24 + 256;
        let fill = (revlog.entries * record) as f64 / (revlog.leaf_pages * 4096) as f64;
        assert!(fill > 0.88, "revlog leaf pages only {:.0}% full", fill * 100.0);
        let hist = store.backend.hist().stat(&txn).unwrap();
        assert!(hist.leaf_pages * 4 < revlog.leaf_pages, "hist holds values: {hist:?}");
    }

    #[test]
    fn a_store_in_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path(), 1 << 30).unwrap();
        let mut txn = backend.write_txn().unwrap();
        backend.meta().delete(&mut txn, meta_key::LAYOUT).unwrap();
        backend.put_meta_i64(&mut txn, meta_key::CURRENT_REV, 5).unwrap();
        txn.commit_durable().unwrap();
        drop(backend);
        let err = Backend::open(dir.path(), 1 << 30).err().expect("an old layout is refused");
        assert!(err.to_string().contains("table layout 1"), "{err}");
    }

    fn long_key(tail: u8) -> Vec<u8> {
        let mut key = vec![b'L'; keys::INLINE_MAX + 100];
        key.push(tail);
        key
    }

    #[test]
    fn keys_longer_than_lmdb_allows_read_write_and_compact_in_order() {
        let (_dir, store) = open();
        let tails: Vec<u8> = (0..30).rev().collect();
        for &t in &tails {
            put(&store, &long_key(t), &[t]);
        }
        put(&store, b"L", b"short");
        let before_delete = put(&store, b"M", b"after");
        let all = KeyRange::From(Vec::new());
        let expected: Vec<Vec<u8>> =
            std::iter::once(b"short".to_vec()).chain((0..30).map(|t| vec![t])).collect();
        let mut expected_all = expected.clone();
        expected_all.push(b"after".to_vec());
        assert_eq!(read(&store, &all, i64::MAX).0, expected_all);

        // A range with long bounds, then a delete of part of the group.
        let middle = KeyRange::Between(long_key(10), long_key(20));
        assert_eq!(
            read(&store, &middle, i64::MAX).0,
            (10..20).map(|t| vec![t]).collect::<Vec<_>>()
        );
        let mut txn = store.backend.write_txn().unwrap();
        let mut writer = Writer::new(&store, &mut txn).unwrap();
        let deleted = writer.delete_range(&middle).unwrap();
        let keys_deleted: Vec<Vec<u8>> = deleted.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys_deleted, (10..20).map(long_key).collect::<Vec<_>>());
        writer.finish().unwrap();
        txn.commit().unwrap();
        assert_eq!(read(&store, &middle, i64::MAX).0, Vec::<Vec<u8>>::new());

        // History still answers in key order, before and after compaction.
        assert_eq!(read(&store, &all, before_delete).0, expected_all);
        let mut txn = store.backend.write_txn().unwrap();
        compact(&store, &mut txn, before_delete).unwrap();
        txn.commit().unwrap();
        assert_eq!(read(&store, &all, before_delete).0, expected_all);
        let single = KeyRange::Single(long_key(15));
        assert_eq!(read(&store, &single, before_delete).0, vec![vec![15]]);
    }
}
