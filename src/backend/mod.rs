//! The LMDB environment and every named table, in one place (etcd's `schema/bucket.go`).
//!
//! One environment holds the raft log, the raft hard state and the state machine, so a single
//! write transaction commits a batch of log entries, their effects and the applied index
//! together: the store is always exactly at some applied index, never in between. Commits are
//! not flushed one by one; see [`checkpoint`] for how the store stays whole across a crash.

mod checkpoint;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use heed::types::Bytes;
use heed::{
    CommitOrAbort, CompactionOption, Database, Env, EnvFlags, EnvOpenOptions, PutFlags, RoTxn,
    RwTxn, WithoutTls,
};

use crate::mvcc::revision::HistOrder;

/// Staging directories of defragmentations a crash interrupted (the data file was either
/// not replaced yet, or already replaced; either way the directory is garbage).
fn clear_defrag_leftovers(member_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(member_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("defrag-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Raw byte table with LMDB's default (memcmp) order.
pub type Table = Database<'static, Bytes, Bytes>;
/// The history table with its (key asc, revision desc) order.
pub type HistTable = Database<'static, Bytes, Bytes, HistOrder>;

/// Name of the LMDB file inside `<data-dir>/member/`, beside etcd's own layout names.
pub const DB_DIR: &str = "member/lmdb";

/// Keys of the `meta` table.
/// Version of the table layout. 2: `revlog` holds whole changes and `hist` is an index.
pub const LAYOUT: i64 = 2;

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
    pub const AUTH: &[u8] = b"auth";
    /// Which layout of the MVCC tables the store uses ([`super::LAYOUT`]).
    pub const LAYOUT: &[u8] = b"layout";
}

/// Declares the tables once: the handles of one open environment (`Tables`; plain numbers
/// that heed checks against the transaction's environment, so they are copied out freely)
/// and an accessor on [`Backend`] for each, reading the current environment's handle.
macro_rules! tables {
    ($($name:ident: $ty:ty),*) => {
        #[derive(Clone, Copy)]
        struct Tables {
            $($name: $ty,)*
        }

        impl Backend {
            $(pub fn $name(&self) -> $ty {
                // Copied out under the lock, without touching the generation's count.
                self.shared.current.read().unwrap_or_else(|p| p.into_inner()).tables.$name
            })*
        }
    };
}

tables!(
    live: Table,
    hist: HistTable,
    revlog: Table,
    lease: Table,
    lease_keys: Table,
    raft_log: Table,
    meta: Table
);

/// One open environment and its tables; replaced as a whole by [`Backend::defragment`].
struct Generation {
    tables: Tables,
    env: Env<WithoutTls>,
}

/// What every clone of a [`Backend`] shares.
struct Shared {
    current: RwLock<Arc<Generation>>,
    /// Read transactions open now; a defragmentation waits for them to end.
    readers: AtomicUsize,
    /// Set while a defragmentation swaps the environment: new readers wait.
    swapping: AtomicBool,
    /// `<data-dir>/member`: the environment's file is `DB_DIR/data.mdb` beneath it, also
    /// after a defragmentation (whose environment is opened elsewhere and moved there).
    member_dir: PathBuf,
    map_size: usize,
    checkpoints: Mutex<checkpoint::State>,
    /// See [`Backend::durable_wal_seq`].
    durable_wal_seq: AtomicU64,
}

/// The LMDB environment and its tables, shared by the raft thread (the only writer) and every
/// reader. Cloning is cheap.
///
/// Tables:
/// - `live`: stored key -> metadata of the key's current version (only keys that exist now).
///   Stored keys are user keys, or digests of long ones: see `mvcc::keys`.
/// - `hist`: (stored key, revision) -> whether the key was written or deleted at it.
/// - `revlog`: revision -> the change made at it, whole (key, metadata and value), in write
///   order (reads with values, watch replay, compaction).
/// - `lease`: lease id -> lease record.
/// - `lease_keys`: lease id (8 bytes BE) + stored key -> the user key if it is a digest key,
///   else nothing: which keys a lease holds.
/// - `raft_log`: index (8 bytes BE) -> encoded raft entry.
/// - `meta`: small named values, see [`meta_key`].
#[derive(Clone)]
pub struct Backend {
    shared: Arc<Shared>,
}

/// A read transaction that keeps its environment open (see [`Backend::defragment`]).
pub struct ReadTxn {
    // Declared first so that it ends before the environment may close.
    txn: std::mem::ManuallyDrop<RoTxn<'static, WithoutTls>>,
    _generation: Arc<Generation>,
    shared: Arc<Shared>,
}

impl std::ops::Deref for ReadTxn {
    type Target = RoTxn<'static, WithoutTls>;
    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before the generation it borrows from.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.txn) };
        self.shared.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A write transaction; only the raft thread (and start-up code before it runs) opens them,
/// and never across a defragmentation, which that thread itself performs.
pub struct WriteTxn {
    txn: RwTxn<'static>,
    _generation: Arc<Generation>,
    backend: Backend,
}

impl std::ops::Deref for WriteTxn {
    type Target = RwTxn<'static>;
    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

impl std::ops::DerefMut for WriteTxn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.txn
    }
}

impl WriteTxn {
    /// Commits without flushing: readers see the changes at once, but a crash rolls the store
    /// back to its last checkpoint. For changes the raft write-ahead log can redo, or that
    /// raft redoes itself (applying committed entries again).
    pub fn commit(self) -> heed::Result<()> {
        self.txn.commit()
    }

    /// Commits and makes the store durable as it is now (a checkpoint): for changes nothing
    /// could redo after a crash.
    pub fn commit_durable(self) -> heed::Result<()> {
        let backend = self.backend.clone();
        self.txn.commit()?;
        backend.checkpoint(None)
    }
}

fn open_generation(dir: &Path, map_size: usize) -> heed::Result<Generation> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(8).max_readers(1024);
    // SAFETY: each directory is opened once per process; NO_READ_AHEAD suits the random
    // access of B-tree pages. NO_SYNC: commits are made durable by the raft write-ahead log
    // and by checkpoints, which also keep the store whole across a crash (see `checkpoint`).
    let env = unsafe { options.flags(EnvFlags::NO_READ_AHEAD | EnvFlags::NO_SYNC).open(dir)? };
    let wtxn = env.write_txn()?;
    let tables = env.create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
        let hist: Database<Bytes, Bytes, HistOrder> = opener
            .database_options()
            .types::<Bytes, Bytes>()
            .key_comparator::<HistOrder>()
            .name("hist")
            .create(wtxn)?;
        let tables: [Database<Bytes, Bytes>; 6] = [
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
    // SAFETY: heed ties handles to a borrow of the environment; they are kept beside it in
    // the same generation and heed checks at every use that a handle belongs to the
    // transaction's environment, so a stale handle fails loudly rather than reading garbage.
    let tables = unsafe {
        Tables {
            live: std::mem::transmute::<Database<Bytes, Bytes>, Table>(live),
            hist: std::mem::transmute::<Database<Bytes, Bytes, HistOrder>, HistTable>(hist),
            revlog: std::mem::transmute::<Database<Bytes, Bytes>, Table>(revlog),
            lease: std::mem::transmute::<Database<Bytes, Bytes>, Table>(lease),
            lease_keys: std::mem::transmute::<Database<Bytes, Bytes>, Table>(lease_keys),
            raft_log: std::mem::transmute::<Database<Bytes, Bytes>, Table>(raft_log),
            meta: std::mem::transmute::<Database<Bytes, Bytes>, Table>(meta),
        }
    };
    // Digest keys plus the longest suffix a table appends must fit LMDB's key limit.
    let longest = crate::mvcc::keys::INLINE_MAX + 32 + crate::mvcc::Revision::LEN;
    assert!(longest <= env.max_key_size(), "LMDB key limit below {longest} bytes");
    Ok(Generation { tables, env })
}

impl Backend {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path, map_size: usize) -> heed::Result<Self> {
        let dir = data_dir.join(DB_DIR);
        std::fs::create_dir_all(&dir)?;
        let member_dir = dir.parent().expect("DB_DIR has a parent").to_path_buf();
        clear_defrag_leftovers(&member_dir);
        let recovered = checkpoint::roll_back(&dir)?;
        let generation = open_generation(&dir, map_size)?;
        check_layout(&generation)?;
        let shared = Shared {
            current: RwLock::new(Arc::new(generation)),
            readers: AtomicUsize::new(0),
            swapping: AtomicBool::new(false),
            member_dir,
            map_size,
            checkpoints: Mutex::new(checkpoint::State::new(dir, recovered)),
            durable_wal_seq: AtomicU64::new(recovered.wal_seq),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    fn generation(&self) -> Arc<Generation> {
        self.shared.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn read_txn(&self) -> heed::Result<ReadTxn> {
        loop {
            self.shared.readers.fetch_add(1, Ordering::SeqCst);
            if !self.shared.swapping.load(Ordering::SeqCst) {
                break;
            }
            // A defragmentation is swapping the environment (rare, and etcd blocks reads
            // during its defragmentation too): wait for it.
            self.shared.readers.fetch_sub(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let generation = self.generation();
        let txn = match generation.env.read_txn() {
            Ok(txn) => txn,
            Err(err) => {
                self.shared.readers.fetch_sub(1, Ordering::SeqCst);
                return Err(err);
            }
        };
        // SAFETY: the transaction borrows `generation.env`, which the returned value keeps
        // alive and outlives it (field order and Drop above).
        let txn = unsafe {
            std::mem::transmute::<RoTxn<'_, WithoutTls>, RoTxn<'static, WithoutTls>>(txn)
        };
        Ok(ReadTxn {
            txn: std::mem::ManuallyDrop::new(txn),
            _generation: generation,
            shared: self.shared.clone(),
        })
    }

    pub fn write_txn(&self) -> heed::Result<WriteTxn> {
        let generation = self.generation();
        let txn = generation.env.write_txn()?;
        // SAFETY: as for read transactions; the generation is kept in the returned value and
        // dropped after the transaction (declaration order).
        let txn = unsafe { std::mem::transmute::<RwTxn<'_>, RwTxn<'static>>(txn) };
        Ok(WriteTxn { txn, _generation: generation, backend: self.clone() })
    }

    /// etcd's Defragment: a compacted copy of the store replaces it, so the file shrinks to
    /// what is in use. Readers wait meanwhile; the caller (the raft thread, the only writer)
    /// holds no transaction. Crash-safe: the store is checkpointed first, the copy is synced
    /// before it is renamed over the data file (until then the old file is whole), and the
    /// new file checkpointed once in place.
    pub fn defragment(&self) -> heed::Result<()> {
        self.checkpoint(None)?;
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let staging = self.shared.member_dir.join(format!(
            "defrag-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&staging)?;
        self.shared.swapping.store(true, Ordering::SeqCst);
        while self.shared.readers.load(Ordering::SeqCst) != 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let result = self.swap_in_copy(&staging);
        self.shared.swapping.store(false, Ordering::SeqCst);
        result?;
        self.checkpoint(None)
    }

    fn swap_in_copy(&self, staging: &Path) -> heed::Result<()> {
        let old = self.generation();
        let copy = old.env.copy_to_path(staging.join("data.mdb"), CompactionOption::Enabled)?;
        copy.sync_all()?;
        drop(copy);
        let new = open_generation(staging, self.shared.map_size)?;
        let old_dir = old.env.path().to_path_buf();
        *self.shared.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        // The old environment closes once its last handle goes (readers have all ended).
        drop(old);
        // The new environment's file takes the data file's name (same inode, still open),
        // so a restart opens the compacted store.
        let data_dir = self
            .shared
            .member_dir
            .join(Path::new(DB_DIR).file_name().expect("DB_DIR names a directory"));
        std::fs::rename(staging.join("data.mdb"), data_dir.join("data.mdb"))?;
        std::fs::File::open(&data_dir)?.sync_all()?;
        if old_dir != data_dir {
            // The staging directory of a previous defragmentation (its file moved already).
            let _ = std::fs::remove_dir_all(old_dir);
        }
        Ok(())
    }

    pub fn meta_i64(&self, txn: &RoTxn, key: &[u8]) -> heed::Result<Option<i64>> {
        Ok(self.meta().get(txn, key)?.map(decode_i64))
    }

    pub fn meta_u64(&self, txn: &RoTxn, key: &[u8]) -> heed::Result<Option<u64>> {
        Ok(self.meta().get(txn, key)?.map(|b| decode_i64(b) as u64))
    }

    pub fn put_meta_i64(&self, txn: &mut RwTxn, key: &[u8], value: i64) -> heed::Result<()> {
        self.meta().put(txn, key, &value.to_be_bytes())
    }

    /// Size of the data file on disk (what etcd reports as `dbSize`).
    pub fn file_size(&self) -> u64 {
        let file = self
            .shared
            .member_dir
            .join(Path::new(DB_DIR).file_name().expect("DB_DIR names a directory"));
        std::fs::metadata(file.join("data.mdb")).map(|m| m.len()).unwrap_or(0)
    }

    /// Bytes up to LMDB's highest page ever written: an upper bound of [`Self::size_in_use`]
    /// read from the environment's meta data alone, cheap enough for every write.
    pub fn high_water(&self) -> u64 {
        let generation = self.generation();
        let page = u64::from(generation.env.unnamed_database_stat().page_size);
        (generation.env.info().last_page_number as u64 + 1) * page
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
        let root = self.generation().env.unnamed_database_stat();
        let page = u64::from(root.page_size);
        let pages =
            |s: heed::DatabaseStat| (s.branch_pages + s.leaf_pages + s.overflow_pages) as u64;
        // The two meta pages and the root table of table names.
        let mut used = 2 + pages(root);
        used += self.hist().stat(&txn).map_or(0, pages);
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
            "lease_keys" => self.lease_keys(),
            "live" => self.live(),
            "revlog" => self.revlog(),
            "lease" => self.lease(),
            "raft_log" => self.raft_log(),
            "meta" => self.meta(),
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
        for item in self.hist().iter(txn)? {
            let (key, value) = item?;
            hash = crc32c::crc32c_append(hash, key);
            hash = crc32c::crc32c_append(hash, value);
        }
        Ok(hash)
    }

    /// Writes a consistent, compacted copy of the whole store to the file `path`, as of one
    /// read transaction (what a member behind the leader's log receives).
    pub fn copy_to(&self, path: &Path) -> heed::Result<()> {
        self.generation().env.copy_to_path(path, CompactionOption::Enabled)?;
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
            if let Some(value) = self.meta().get(txn, key)? {
                kept.push((key.to_vec(), value.to_vec()));
            }
        }
        copy.copy_into(self, txn, skip)?;
        for (key, value) in kept {
            self.meta().put(txn, &key, &value)?;
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
            // Read in key order into an emptied table: appends fill the pages.
            for item in source.iter(&rtxn)? {
                let (key, value) = item?;
                append(table, txn, key, value)?;
            }
        }
        dst.hist().clear(txn)?;
        if let Some(hist) = hist {
            for item in hist.iter(&rtxn)? {
                let (key, value) = item?;
                dst.hist().put_with_flags(txn, PutFlags::APPEND, key, value)?;
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

/// Marks a new store with [`LAYOUT`] and refuses one written in another layout, which would
/// otherwise be misread.
fn check_layout(generation: &Generation) -> heed::Result<()> {
    let meta = generation.tables.meta;
    let rtxn = generation.env.read_txn()?;
    let found = meta.get(&rtxn, meta_key::LAYOUT)?.map(decode_i64);
    let fresh = found.is_none() && meta.is_empty(&rtxn)?;
    drop(rtxn);
    match found {
        Some(LAYOUT) => Ok(()),
        None if fresh => {
            let mut wtxn = generation.env.write_txn()?;
            meta.put(&mut wtxn, meta_key::LAYOUT, &LAYOUT.to_be_bytes())?;
            wtxn.commit()
        }
        other => Err(heed::Error::Io(std::io::Error::other(format!(
            "the store in {} has table layout {}, this rsetcd reads layout {LAYOUT}: \
             restore it from a snapshot saved by the same version",
            generation.env.path().display(),
            other.map_or("1".to_string(), |v| v.to_string()),
        )))),
    }
}

/// Writes an entry whose key sorts after every key of `table` (revisions, raft log indexes).
/// LMDB then starts a new page when the last one is full instead of splitting it in half, so
/// such tables fill their pages completely.
pub fn append(table: Table, txn: &mut RwTxn, key: &[u8], value: &[u8]) -> heed::Result<()> {
    table.put_with_flags(txn, PutFlags::APPEND, key, value)
}

fn decode_i64(bytes: &[u8]) -> i64 {
    let arr: [u8; 8] = bytes.try_into().unwrap_or_else(|_| panic!("corrupt meta value {bytes:?}"));
    i64::from_be_bytes(arr)
}
