//! Durable raft state in LMDB, mirrored into raft-rs's `MemStorage` for the `RawNode`.
//!
//! The log entries, hard state and conf state are written inside the same LMDB write
//! transaction as the effects of the entries applied in that Ready, so the log, the hard state
//! and the applied index are always consistent with each other. New entries and hard states
//! are first appended to the write-ahead log ([`super::wal`]), which is what makes them
//! durable: after a crash the store rolls back to its last checkpoint and [`recover`] redoes
//! the records written since. The in-memory mirror is rebuilt from LMDB at start-up; it holds
//! only the entries since the last log compaction.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;

use super::wal::Wal;
use crate::backend::{append, meta_key, Backend, StoreCopy};

/// What a restart needs: the rebuilt storage and where the state machine stands.
pub struct Loaded {
    pub storage: MemStorage,
    pub applied: u64,
    /// False on a data dir that has never run raft.
    pub initialized: bool,
}

#[derive(Clone)]
pub struct RaftLog {
    backend: Backend,
}

impl RaftLog {
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }

    /// Rebuilds the in-memory mirror from LMDB.
    pub fn load(&self) -> heed::Result<Loaded> {
        let txn = self.backend.read_txn()?;
        let m = &self.backend.meta();
        let Some(conf) = m.get(&txn, meta_key::CONF_STATE)? else {
            return Ok(Loaded { storage: MemStorage::new(), applied: 0, initialized: false });
        };
        let conf_state = ConfState::parse_from_bytes(conf).expect("corrupt raft conf state");
        let hard_state = match m.get(&txn, meta_key::HARD_STATE)? {
            Some(bytes) => HardState::parse_from_bytes(bytes).expect("corrupt raft hard state"),
            None => HardState::default(),
        };
        let (start_index, start_term) = self.log_start(&txn)?;
        let applied = self.backend.meta_u64(&txn, meta_key::APPLIED_INDEX)?.unwrap_or(0);

        let storage = MemStorage::new();
        {
            let mut core = storage.wl();
            if start_index == 0 {
                // Nothing compacted yet: the log starts at index 1 as in a fresh MemStorage.
                core.set_conf_state(conf_state);
            } else {
                let mut snapshot = Snapshot::default();
                snapshot.mut_metadata().index = start_index;
                snapshot.mut_metadata().term = start_term;
                snapshot.mut_metadata().set_conf_state(conf_state);
                core.apply_snapshot(snapshot).expect("fresh MemStorage accepts a snapshot");
            }
            let mut entries = Vec::new();
            for item in self.backend.raft_log().iter(&txn)? {
                let (_, bytes) = item?;
                entries.push(Entry::parse_from_bytes(bytes).expect("corrupt raft entry"));
            }
            core.append(&entries).expect("entries follow the log start");
            core.set_hardstate(hard_state);
        }
        Ok(Loaded { storage, applied, initialized: true })
    }

    /// (index, term) of the entry just before the first one kept in the log.
    fn log_start(&self, txn: &RoTxn) -> heed::Result<(u64, u64)> {
        Ok(match self.backend.meta().get(txn, meta_key::LOG_START)? {
            Some(b) if b.len() == 16 => (
                u64::from_be_bytes(b[..8].try_into().unwrap()),
                u64::from_be_bytes(b[8..].try_into().unwrap()),
            ),
            Some(b) => panic!("corrupt raft log start {b:?}"),
            None => (0, 0),
        })
    }

    /// Appends entries, replacing any conflicting suffix (a follower's log can be truncated).
    pub fn append(&self, txn: &mut RwTxn, entries: &[Entry]) -> heed::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let from = first.index.to_be_bytes();
        let stale = (Bound::Included(from.as_slice()), Bound::Unbounded);
        self.backend.raft_log().delete_range(txn, &stale)?;
        for entry in entries {
            let bytes = entry.write_to_bytes().expect("raft entry encodes");
            // Every later entry was just deleted, so each index is the log's new last.
            append(self.backend.raft_log(), txn, &entry.index.to_be_bytes(), &bytes)?;
        }
        Ok(())
    }

    /// Redoes one write-ahead log record: the entries it appended (but none the log has
    /// compacted since) and its hard state, whose commit index never goes back.
    fn redo(&self, txn: &mut RwTxn, hs: &HardState, mut entries: Vec<Entry>) -> heed::Result<()> {
        let (start, _) = self.log_start(txn)?;
        entries.retain(|e| e.index > start);
        let last = match self.backend.raft_log().last(txn)? {
            Some((key, _)) => u64::from_be_bytes(key.try_into().expect("raft log key")),
            None => start,
        };
        if entries.first().is_some_and(|e| e.index > last + 1) {
            // Never written so (an installed store copy is checkpointed before anything after
            // it is logged); refusing the gap keeps the log whole, and the leader resends.
            tracing::warn!(first = entries[0].index, last, "write-ahead log record skipped: gap");
            return Ok(());
        }
        self.append(txn, &entries)?;
        let mut hs = hs.clone();
        if let Some(bytes) = self.backend.meta().get(txn, meta_key::HARD_STATE)? {
            let stored = HardState::parse_from_bytes(bytes).expect("corrupt raft hard state");
            hs.commit = hs.commit.max(stored.commit);
        }
        self.set_hard_state(txn, &hs)
    }

    pub fn set_hard_state(&self, txn: &mut RwTxn, hs: &HardState) -> heed::Result<()> {
        let bytes = hs.write_to_bytes().expect("hard state encodes");
        self.backend.meta().put(txn, meta_key::HARD_STATE, &bytes)
    }

    pub fn set_conf_state(&self, txn: &mut RwTxn, cs: &ConfState) -> heed::Result<()> {
        let bytes = cs.write_to_bytes().expect("conf state encodes");
        self.backend.meta().put(txn, meta_key::CONF_STATE, &bytes)
    }

    pub fn set_applied(&self, txn: &mut RwTxn, index: u64) -> heed::Result<()> {
        self.backend.put_meta_i64(txn, meta_key::APPLIED_INDEX, index as i64)
    }

    /// Drops entries before `first_kept`; `(index, term)` of the entry before it is kept so
    /// that raft can still check the log matching property at the new start.
    pub fn compact(&self, txn: &mut RwTxn, first_kept: u64, prev_term: u64) -> heed::Result<()> {
        let end = first_kept.to_be_bytes();
        let old = (Bound::Unbounded, Bound::Excluded(end.as_slice()));
        self.backend.raft_log().delete_range(txn, &old)?;
        let mut start = [0u8; 16];
        start[..8].copy_from_slice(&(first_kept - 1).to_be_bytes());
        start[8..].copy_from_slice(&prev_term.to_be_bytes());
        self.backend.meta().put(txn, meta_key::LOG_START, &start)
    }

    /// Replaces this member's whole state with a store copy from the leader, described by
    /// `metadata` (see [`snapshot_metadata`]): the log restarts right after the copy's
    /// applied index. The member's own identity and hard state stay.
    pub fn install(
        &self,
        txn: &mut RwTxn,
        copy: &StoreCopy,
        metadata: &raft::prelude::SnapshotMetadata,
    ) -> heed::Result<()> {
        let keep = [meta_key::MEMBER_ID, meta_key::HARD_STATE];
        self.backend.replace_from(txn, copy, &keep, &["raft_log"])?;
        let mut start = [0u8; 16];
        start[..8].copy_from_slice(&metadata.index.to_be_bytes());
        start[8..].copy_from_slice(&metadata.term.to_be_bytes());
        self.backend.meta().put(txn, meta_key::LOG_START, &start)?;
        self.set_conf_state(txn, metadata.get_conf_state())?;
        self.set_applied(txn, metadata.index)
    }
}

/// A write-ahead log record: what a Ready must have durable before raft may answer anyone.
/// Layout: hard state length (4, LE) and bytes, then per entry its length (4, LE) and bytes.
pub fn encode_record(entries: &[Entry], hard_state: &HardState) -> Vec<u8> {
    let mut out = Vec::new();
    let hs = hard_state.write_to_bytes().expect("hard state encodes");
    out.extend_from_slice(&(hs.len() as u32).to_le_bytes());
    out.extend_from_slice(&hs);
    for entry in entries {
        let bytes = entry.write_to_bytes().expect("raft entry encodes");
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_record(mut bytes: &[u8]) -> Option<(HardState, Vec<Entry>)> {
    let mut next = || -> Option<&[u8]> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let item = bytes.get(4..4 + len)?;
        bytes = &bytes[4 + len..];
        Some(item)
    };
    let hard_state = HardState::parse_from_bytes(next()?).ok()?;
    let mut entries = Vec::new();
    while let Some(item) = next() {
        entries.push(Entry::parse_from_bytes(item).ok()?);
    }
    Some((hard_state, entries))
}

/// Redoes, after a crash, the write-ahead log records the store's last checkpoint does not
/// cover, and returns the log ready for appending.
pub fn recover(backend: &Backend, wal_dir: &std::path::Path) -> std::io::Result<Wal> {
    let opened = Wal::open(wal_dir, backend.durable_wal_seq())?;
    if opened.records.is_empty() {
        return Ok(opened.wal);
    }
    let log = RaftLog::new(backend.clone());
    let redo = || -> heed::Result<()> {
        let mut txn = backend.write_txn()?;
        for (seq, payload) in &opened.records {
            let Some((hard_state, entries)) = decode_record(payload) else {
                panic!("write-ahead log record {seq} passed its checksum but does not decode");
            };
            log.redo(&mut txn, &hard_state, entries)?;
        }
        txn.commit()?;
        backend.checkpoint(Some(opened.wal.last_seq()))
    };
    redo().map_err(|err| match err {
        heed::Error::Io(err) => err,
        other => std::io::Error::other(other.to_string()),
    })?;
    tracing::info!(
        records = opened.records.len(),
        "redid the write-ahead log since the last checkpoint"
    );
    Ok(opened.wal)
}

/// What a store copy holds, in raft's terms: its applied index, the term of that entry and
/// the membership configuration.
pub fn snapshot_metadata(copy: &StoreCopy) -> heed::Result<raft::prelude::SnapshotMetadata> {
    let u64_of = |bytes: Option<Vec<u8>>| -> u64 {
        bytes.and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
    };
    let index = u64_of(copy.meta(meta_key::APPLIED_INDEX)?);
    let term = match copy.raft_entry(index)? {
        Some(bytes) => Entry::parse_from_bytes(&bytes).expect("corrupt raft entry").term,
        None => {
            // The applied entry was the last compacted one: its term is the log start's.
            let start = copy.meta(meta_key::LOG_START)?.unwrap_or_default();
            if start.len() == 16 && u64::from_be_bytes(start[..8].try_into().unwrap()) == index {
                u64::from_be_bytes(start[8..].try_into().unwrap())
            } else {
                0
            }
        }
    };
    let conf_state = match copy.meta(meta_key::CONF_STATE)? {
        Some(bytes) => ConfState::parse_from_bytes(&bytes).expect("corrupt raft conf state"),
        None => ConfState::default(),
    };
    let mut metadata = raft::prelude::SnapshotMetadata { index, term, ..Default::default() };
    metadata.set_conf_state(conf_state);
    Ok(metadata)
}
