//! The LMDB environment and every named table, in one place (etcd's `schema/bucket.go`).
//!
//! One environment holds the raft log, the raft hard state and the state machine, so a single
//! write transaction makes a batch of log entries, their effects and the applied index durable
//! together: after a crash the store is exactly at some applied index, never in between.

use std::path::Path;

use heed::types::Bytes;
use heed::{
    CommitOrAbort, CompactionOption, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn,
    WithoutTls,
};

use crate::mvcc::revision::HistOrder;

/// Raw byte table with LMDB's default (memcmp) order.
pub type Table = Database<'static, Bytes, Bytes>;
/// The history table with its (key asc, revision desc) order.
pub type HistTable = Database<'static, Bytes, Bytes, HistOrder>;

/// Name of the LMDB file inside `<data-dir>/member/`, beside etcd's own layout names.
pub const DB_DIR: &str = "member/lmdb";

/// Keys of the `meta` table.
pub mod meta_key {
    pub const CURRENT_REV: &[u8] = b"current_rev";
    pub const COMPACT_REV: &[u8] = b"compact_rev";
    pub const APPLIED_INDEX: &[u8] = b"applied_index";
    pub const HARD_STATE: &[u8] = b"raft_hard_state";
    pub const CONF_STATE: &[u8] = b"raft_conf_state";
    pub const LOG_START: &[u8] = b"raft_log_start";
    pub const CLUSTER_ID: &[u8] = b"cluster_id";
    pub const MEMBER_ID: &[u8] = b"member_id";
    pub const LEASE_CLOCK: &[u8] = b"lease_clock_ms";
    pub const MEMBERS: &[u8] = b"members";
    pub const ALARMS: &[u8] = b"alarms";
}

#[derive(Clone)]
pub struct Backend {
    pub env: &'static Env<WithoutTls>,
    /// stored key -> metadata of the key's current version (only keys that exist now).
    /// Stored keys are user keys, or digests of long ones: see `mvcc::keys`.
    pub live: Table,
    /// (stored key, revision) -> the version written at that revision, or a tombstone.
    pub hist: HistTable,
    /// revision -> which key changed at it, in write order (watch replay, compaction).
    pub revlog: Table,
    /// lease id -> lease record.
    pub lease: Table,
    /// lease id (8 bytes BE) + stored key -> the user key if it is a digest key, else nothing:
    /// which keys a lease holds.
    pub lease_keys: Table,
    /// raft log: index (8 bytes BE) -> encoded raft entry.
    pub raft_log: Table,
    /// small named values, see [`meta_key`].
    pub meta: Table,
}

impl Backend {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path, map_size: usize) -> heed::Result<Self> {
        let dir = data_dir.join(DB_DIR);
        std::fs::create_dir_all(&dir)?;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(map_size).max_dbs(8).max_readers(1024);
        // SAFETY: the environment is opened once per process; NO_READ_AHEAD suits the random
        // access of B-tree pages. Durability flags stay at LMDB's safe defaults (fsync on
        // every commit), because a reply is sent only after that commit.
        let env = unsafe { options.flags(EnvFlags::NO_READ_AHEAD).open(&dir)? };
        // heed ties table handles to the environment's lifetime; the environment lives as long
        // as the process, so it is leaked once here to give every handle a 'static lifetime.
        let env: &'static Env<WithoutTls> = Box::leak(Box::new(env));
        let wtxn = env.write_txn()?;
        let tables = env.create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
            let hist: HistTable = opener
                .database_options()
                .types::<Bytes, Bytes>()
                .key_comparator::<HistOrder>()
                .name("hist")
                .create(wtxn)?;
            let tables: [Table; 6] = [
                opener.create_database(wtxn, Some("lease_keys"))?,
                opener.create_database(wtxn, Some("live"))?,
                opener.create_database(wtxn, Some("revlog"))?,
                opener.create_database(wtxn, Some("lease"))?,
                opener.create_database(wtxn, Some("raft_log"))?,
                opener.create_database(wtxn, Some("meta"))?,
            ];
            Ok(CommitOrAbort::<_, ()>::Commit((hist, tables)))
        })?;
        let (hist, [lease_keys, live, revlog, lease, raft_log, meta]) = tables.unwrap_commit();
        // Digest keys plus the longest suffix a table appends must fit LMDB's key limit.
        let longest = crate::mvcc::keys::INLINE_MAX + 32 + crate::mvcc::Revision::LEN;
        assert!(longest <= env.max_key_size(), "LMDB key limit below {longest} bytes");
        Ok(Self { env, live, hist, revlog, lease, lease_keys, raft_log, meta })
    }

    pub fn read_txn(&self) -> heed::Result<RoTxn<'_, WithoutTls>> {
        self.env.read_txn()
    }

    pub fn write_txn(&self) -> heed::Result<RwTxn<'_>> {
        self.env.write_txn()
    }

    pub fn meta_i64(&self, txn: &RoTxn, key: &[u8]) -> heed::Result<Option<i64>> {
        Ok(self.meta.get(txn, key)?.map(decode_i64))
    }

    pub fn meta_u64(&self, txn: &RoTxn, key: &[u8]) -> heed::Result<Option<u64>> {
        Ok(self.meta.get(txn, key)?.map(|b| decode_i64(b) as u64))
    }

    pub fn put_meta_i64(&self, txn: &mut RwTxn, key: &[u8], value: i64) -> heed::Result<()> {
        self.meta.put(txn, key, &value.to_be_bytes())
    }

    /// Size of the data file on disk (what etcd reports as `dbSize`).
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(self.env.path().join("data.mdb")).map(|m| m.len()).unwrap_or(0)
    }

    /// Bytes in pages that hold data (etcd's `dbSizeInUse`, which the quota limits): the pages
    /// of every table but the raft log, not the free pages LMDB keeps for reuse after
    /// compaction or deletes. The raft log is left out as etcd's WAL is outside its bbolt
    /// file: otherwise the entries that filled the store would keep it over quota after a
    /// compaction, until the log is compacted.
    pub fn size_in_use(&self) -> u64 {
        let Ok(txn) = self.read_txn() else {
            return self.file_size();
        };
        let root = self.env.unnamed_database_stat();
        let page = u64::from(root.page_size);
        let pages =
            |s: heed::DatabaseStat| (s.branch_pages + s.leaf_pages + s.overflow_pages) as u64;
        // The two meta pages and the root table of table names.
        let mut used = 2 + pages(root);
        used += self.hist.stat(&txn).map_or(0, pages);
        for name in PLAIN_TABLES.into_iter().filter(|n| *n != "raft_log") {
            used += self.plain_table(name).stat(&txn).map_or(0, pages);
        }
        used * page
    }
}

/// The tables with LMDB's default order, by name (all but `hist`).
const PLAIN_TABLES: [&str; 6] = ["lease_keys", "live", "revlog", "lease", "raft_log", "meta"];

impl Backend {
    fn plain_table(&self, name: &str) -> Table {
        match name {
            "lease_keys" => self.lease_keys,
            "live" => self.live,
            "revlog" => self.revlog,
            "lease" => self.lease,
            "raft_log" => self.raft_log,
            "meta" => self.meta,
            other => unreachable!("no table {other}"),
        }
    }

    /// A CRC-32C over the replicated tables (not the raft log or the member's own metadata,
    /// which differ between members at the same applied index).
    pub fn state_hash(&self, txn: &RoTxn) -> heed::Result<u32> {
        let mut hash = 0u32;
        for name in ["live", "revlog", "lease", "lease_keys"] {
            hash = crc32c::crc32c_append(hash, name.as_bytes());
            for item in self.plain_table(name).iter(txn)? {
                let (key, value) = item?;
                hash = crc32c::crc32c_append(hash, key);
                hash = crc32c::crc32c_append(hash, value);
            }
        }
        hash = crc32c::crc32c_append(hash, b"hist");
        for item in self.hist.iter(txn)? {
            let (key, value) = item?;
            hash = crc32c::crc32c_append(hash, key);
            hash = crc32c::crc32c_append(hash, value);
        }
        Ok(hash)
    }

    /// Writes a consistent, compacted copy of the whole store to the file `path`, as of one
    /// read transaction (what a member behind the leader's log receives).
    pub fn copy_to(&self, path: &Path) -> heed::Result<()> {
        self.env.copy_to_path(path, CompactionOption::Enabled)?;
        Ok(())
    }

    /// Replaces the contents of every table with the store copy's, inside `txn`, so that the
    /// switch is atomic. The `keep_meta` entries of `meta` keep this store's values (what
    /// belongs to the member rather than to the replicated state); `skip` tables are emptied.
    pub fn replace_from(
        &self,
        txn: &mut RwTxn,
        copy: &StoreCopy,
        keep_meta: &[&[u8]],
        skip: &[&str],
    ) -> heed::Result<()> {
        let mut kept = Vec::new();
        for key in keep_meta {
            if let Some(value) = self.meta.get(txn, key)? {
                kept.push((key.to_vec(), value.to_vec()));
            }
        }
        copy.copy_into(self, txn, skip)?;
        for (key, value) in kept {
            self.meta.put(txn, &key, &value)?;
        }
        Ok(())
    }
}

/// A store copy received from another member: a directory holding one LMDB data file.
pub struct StoreCopy {
    env: Env<WithoutTls>,
}

type CopyTables<'e> =
    (Option<Database<'e, Bytes, Bytes, HistOrder>>, [Option<Database<'e, Bytes, Bytes>>; 6]);

impl StoreCopy {
    pub fn open(dir: &Path) -> heed::Result<Self> {
        let size = std::fs::metadata(dir.join("data.mdb"))?.len() as usize;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(size * 2 + (64 << 20)).max_dbs(8);
        // SAFETY: the directory is this process's own, opened once, and removed after use.
        let env = unsafe { options.open(dir)? };
        Ok(Self { env })
    }

    /// The copy's tables: `hist`, then those of [`PLAIN_TABLES`] in its order.
    fn tables(&self) -> heed::Result<CopyTables<'_>> {
        let rtxn = self.env.read_txn()?;
        let opened = self.env.open_databases_and_commit(rtxn, |opener, rtxn| {
            let hist = opener
                .database_options()
                .types::<Bytes, Bytes>()
                .key_comparator::<HistOrder>()
                .name("hist")
                .open(rtxn)?;
            let mut plain = [None; 6];
            for (slot, name) in plain.iter_mut().zip(PLAIN_TABLES) {
                *slot = opener.open_database::<Bytes, Bytes>(rtxn, Some(name))?;
            }
            Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((hist, plain)))
        })?;
        Ok(opened.unwrap_commit())
    }

    fn copy_into(&self, dst: &Backend, txn: &mut RwTxn, skip: &[&str]) -> heed::Result<()> {
        let (hist, plain) = self.tables()?;
        let rtxn = self.env.read_txn()?;
        for (source, name) in plain.into_iter().zip(PLAIN_TABLES) {
            let table = dst.plain_table(name);
            table.clear(txn)?;
            let Some(source) = source.filter(|_| !skip.contains(&name)) else {
                continue;
            };
            for item in source.iter(&rtxn)? {
                let (key, value) = item?;
                table.put(txn, key, value)?;
            }
        }
        dst.hist.clear(txn)?;
        if let Some(hist) = hist {
            for item in hist.iter(&rtxn)? {
                let (key, value) = item?;
                dst.hist.put(txn, key, value)?;
            }
        }
        Ok(())
    }

    /// A value of the copy's `meta` table.
    pub fn meta(&self, key: &[u8]) -> heed::Result<Option<Vec<u8>>> {
        self.get(5, key)
    }

    /// A raft log entry of the copy, encoded.
    pub fn raft_entry(&self, index: u64) -> heed::Result<Option<Vec<u8>>> {
        self.get(4, &index.to_be_bytes())
    }

    fn get(&self, table: usize, key: &[u8]) -> heed::Result<Option<Vec<u8>>> {
        let (_, plain) = self.tables()?;
        let rtxn = self.env.read_txn()?;
        let Some(db) = plain[table] else {
            return Ok(None);
        };
        Ok(db.get(&rtxn, key)?.map(<[u8]>::to_vec))
    }
}

fn decode_i64(bytes: &[u8]) -> i64 {
    let arr: [u8; 8] = bytes.try_into().unwrap_or_else(|_| panic!("corrupt meta value {bytes:?}"));
    i64::from_be_bytes(arr)
}
