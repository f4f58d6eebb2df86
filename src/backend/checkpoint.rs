//! Checkpoints: how the store stays whole although its commits are not flushed.
//!
//! The environment commits without flushing (`MDB_NOSYNC`): a commit costs a few writes to
//! the page cache, and the raft write-ahead log is what makes a write durable before it is
//! acknowledged (as etcd, whose bbolt commits every 100 ms while its WAL is synced per
//! write). Unflushed, LMDB can be corrupted by a power loss: its meta page may reach the
//! disk before the pages it points to, or a later commit may have reused pages of the last
//! flushed state. A checkpoint prevents both:
//!
//! 1. Right after a commit, a read transaction is opened and kept: LMDB never reuses pages a
//!    reader may see, so the tree of that commit stays intact on disk from then on.
//! 2. The data file is flushed, and a copy of its two meta pages (as they are after that
//!    commit) is written to a checkpoint file and flushed, with the write-ahead log position
//!    the commit covers.
//! 3. Only then is the previous checkpoint's reader let go.
//!
//! Opening a store puts the saved meta pages back first, so the store is exactly the last
//! checkpoint's state whatever reached the disk after it; the records of the write-ahead log
//! after its position are then redone. Two checkpoint files are written in turn, so a crash
//! while writing one leaves the other (whose reader was still kept).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heed::{RoTxn, WithoutTls};

use super::{Backend, Generation};

const MAGIC: &[u8; 8] = b"rsetckp1";
const FILES: [&str; 2] = ["checkpoint.0", "checkpoint.1"];
/// The data file, in the environment's directory.
const DATA_FILE: &str = "data.mdb";

/// A read transaction kept open so that LMDB keeps a checkpoint's pages.
pub(super) struct Pin {
    txn: std::mem::ManuallyDrop<RoTxn<'static, WithoutTls>>,
    _generation: Arc<Generation>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before the generation it borrows from.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.txn) };
    }
}

impl Pin {
    fn new(generation: Arc<Generation>) -> heed::Result<Self> {
        let txn = generation.env.read_txn()?;
        // SAFETY: the transaction borrows `generation.env`, which this value keeps alive and
        // drops after it.
        let txn = unsafe {
            std::mem::transmute::<RoTxn<'_, WithoutTls>, RoTxn<'static, WithoutTls>>(txn)
        };
        Ok(Self { txn: std::mem::ManuallyDrop::new(txn), _generation: generation })
    }
}

/// One checkpoint file's contents.
#[derive(Debug, Clone, PartialEq)]
struct Saved {
    counter: u64,
    wal_seq: u64,
    /// Inode of the data file the meta pages belong to: after a defragmentation replaced the
    /// file, an older checkpoint must not be put back into the new one.
    inode: u64,
    meta: Vec<u8>,
}

impl Saved {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.meta.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(&self.wal_seq.to_le_bytes());
        out.extend_from_slice(&self.inode.to_le_bytes());
        out.extend_from_slice(&(self.meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.meta);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let body = bytes.get(..bytes.len().checked_sub(4)?)?;
        let crc = u32::from_le_bytes(bytes[body.len()..].try_into().ok()?);
        if body.len() < 36 || &body[..8] != MAGIC || crc32c::crc32c(body) != crc {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        let len = u32::from_le_bytes(body[32..36].try_into().unwrap()) as usize;
        let meta = body.get(36..36 + len)?.to_vec();
        Some(Self { counter: u64_at(8), wal_seq: u64_at(16), inode: u64_at(24), meta })
    }
}

/// The newest valid checkpoint in `dir`, if any.
fn newest(dir: &Path) -> io::Result<Option<Saved>> {
    let mut best: Option<Saved> = None;
    for name in FILES {
        let bytes = match std::fs::read(dir.join(name)) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if let Some(saved) = Saved::decode(&bytes) {
            if best.as_ref().is_none_or(|b| saved.counter > b.counter) {
                best = Some(saved);
            }
        }
    }
    Ok(best)
}

/// What opening found: where the last checkpoint stands.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Recovered {
    pub counter: u64,
    pub wal_seq: u64,
}

/// Puts the last checkpoint's meta pages back into the data file in `dir`, before LMDB opens
/// it: whatever was committed after that checkpoint is dropped, to be redone from the
/// write-ahead log.
pub(super) fn roll_back(dir: &Path) -> io::Result<Recovered> {
    let Some(saved) = newest(dir)? else {
        return Ok(Recovered::default());
    };
    let recovered = Recovered { counter: saved.counter, wal_seq: saved.wal_seq };
    let file = match OpenOptions::new().read(true).write(true).open(dir.join(DATA_FILE)) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(recovered),
        Err(err) => return Err(err),
    };
    if file.metadata()?.ino() != saved.inode {
        // A defragmentation replaced the file (already flushed whole) after this checkpoint.
        return Ok(recovered);
    }
    let mut current = vec![0u8; saved.meta.len()];
    file.read_exact_at(&mut current, 0)?;
    if current != saved.meta {
        tracing::info!(
            checkpoint = saved.counter,
            "the store was not stopped cleanly: rolling it back to its last checkpoint"
        );
        file.write_all_at(&saved.meta, 0)?;
        file.sync_data()?;
    }
    Ok(recovered)
}

/// Checkpoint bookkeeping, shared by every clone of the backend.
pub(super) struct State {
    dir: PathBuf,
    counter: u64,
    wal_seq: u64,
    /// The last durable checkpoint's reader.
    pin: Option<Pin>,
    /// LMDB transaction id of the last checkpoint started.
    txn_id: usize,
    in_flight: Option<JoinHandle<io::Result<Finished>>>,
    last_started: Option<Instant>,
}

struct Finished {
    counter: u64,
    wal_seq: u64,
    pin: Pin,
}

impl State {
    pub(super) fn new(dir: PathBuf, recovered: Recovered) -> Self {
        Self {
            dir,
            counter: recovered.counter,
            wal_seq: recovered.wal_seq,
            pin: None,
            txn_id: 0,
            in_flight: None,
            last_started: None,
        }
    }

    /// Takes in a finished background checkpoint; with `wait`, waits for it.
    fn settle(&mut self, backend: &Backend, wait: bool) -> io::Result<()> {
        let done = self.in_flight.as_ref().is_some_and(|h| h.is_finished());
        if !(done || wait) {
            return Ok(());
        }
        let Some(handle) = self.in_flight.take() else {
            return Ok(());
        };
        let finished =
            handle.join().map_err(|_| io::Error::other("checkpoint thread panicked"))??;
        self.install(backend, finished);
        Ok(())
    }

    fn install(&mut self, backend: &Backend, finished: Finished) {
        self.counter = finished.counter;
        self.wal_seq = finished.wal_seq;
        backend.shared.durable_wal_seq.store(finished.wal_seq, Ordering::SeqCst);
        // The previous checkpoint's pages may be reused from now on.
        self.pin = Some(finished.pin);
    }

    /// Pins the current state and reads its meta pages: must run right after a commit, with
    /// no write transaction open.
    fn prepare(&mut self, backend: &Backend, wal_seq: u64) -> io::Result<Job> {
        let generation = backend.generation();
        let txn_id = generation.env.info().last_txn_id;
        let page = generation.env.unnamed_database_stat().page_size as usize;
        let pin = Pin::new(generation.clone()).map_err(heed_to_io)?;
        let file = File::open(self.dir.join(DATA_FILE))?;
        let mut meta = vec![0u8; 2 * page];
        file.read_exact_at(&mut meta, 0)?;
        self.counter += 1;
        self.txn_id = txn_id;
        self.last_started = Some(Instant::now());
        let saved = Saved { counter: self.counter, wal_seq, inode: file.metadata()?.ino(), meta };
        Ok(Job { saved, pin, data: file, dir: self.dir.clone() })
    }

    fn unchanged(&self, backend: &Backend, wal_seq: u64) -> bool {
        let generation = backend.generation();
        // A defragmentation's new environment may carry on the old one's transaction ids.
        self.pin.as_ref().is_some_and(|pin| Arc::ptr_eq(&pin._generation, &generation))
            && self.wal_seq == wal_seq
            && generation.env.info().last_txn_id == self.txn_id
    }
}

/// A checkpoint prepared on the writer's thread, to be made durable anywhere.
struct Job {
    saved: Saved,
    pin: Pin,
    data: File,
    dir: PathBuf,
}

impl Job {
    fn run(self) -> io::Result<Finished> {
        let started = Instant::now();
        // Flushes every page written so far, the pinned state's among them.
        self.data.sync_data()?;
        let name = FILES[(self.saved.counter % 2) as usize];
        let path = self.dir.join(name);
        let existed = path.exists();
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(&path)?;
        let bytes = self.saved.encode();
        file.write_all_at(&bytes, 0)?;
        file.set_len(bytes.len() as u64)?;
        file.sync_data()?;
        if !existed {
            File::open(&self.dir)?.sync_all()?;
        }
        metrics::histogram!(crate::metrics::BACKEND_COMMIT).record(started.elapsed());
        Ok(Finished { counter: self.saved.counter, wal_seq: self.saved.wal_seq, pin: self.pin })
    }
}

fn heed_to_io(err: heed::Error) -> io::Error {
    match err {
        heed::Error::Io(err) => err,
        other => io::Error::other(other.to_string()),
    }
}

impl Backend {
    /// Makes everything committed so far durable, and the state a restart rolls back to.
    /// `wal_seq` is the newest write-ahead log record whose effects are committed (`None`:
    /// as at the last checkpoint). The caller holds no write transaction.
    pub fn checkpoint(&self, wal_seq: Option<u64>) -> heed::Result<()> {
        let mut state = self.shared.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        state.settle(self, true)?;
        let wal_seq = wal_seq.unwrap_or(state.wal_seq);
        if state.unchanged(self, wal_seq) {
            return Ok(());
        }
        let job = state.prepare(self, wal_seq)?;
        let finished = job.run()?;
        state.install(self, finished);
        Ok(())
    }

    /// Starts a checkpoint in the background if the last one started `interval` ago or more
    /// and something was committed since; takes in a finished one. Called by the writer
    /// right after its commits, with `wal_seq` as for [`Self::checkpoint`].
    pub fn checkpoint_if_due(&self, wal_seq: u64, interval: Duration) -> heed::Result<()> {
        let mut state = self.shared.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        state.settle(self, false)?;
        let due = state.last_started.is_none_or(|at| at.elapsed() >= interval);
        if state.in_flight.is_some() || !due || state.unchanged(self, wal_seq) {
            return Ok(());
        }
        let job = state.prepare(self, wal_seq)?;
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || job.run())
            .map_err(heed::Error::Io)?;
        state.in_flight = Some(handle);
        Ok(())
    }

    /// The newest write-ahead log record a durable checkpoint covers: older records are
    /// no longer needed.
    pub fn durable_wal_seq(&self) -> u64 {
        self.shared.durable_wal_seq.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_many(backend: &Backend, from: u32, count: u32, value_len: usize) {
        let mut txn = backend.write_txn().unwrap();
        for i in from..from + count {
            backend.live().put(&mut txn, &i.to_be_bytes(), &vec![i as u8; value_len]).unwrap();
        }
        txn.commit().unwrap();
    }

    fn delete_all(backend: &Backend) {
        let mut txn = backend.write_txn().unwrap();
        backend.live().clear(&mut txn).unwrap();
        txn.commit().unwrap();
    }

    fn contents(backend: &Backend) -> Vec<(Vec<u8>, Vec<u8>)> {
        let txn = backend.read_txn().unwrap();
        let items = backend.live().iter(&txn).unwrap();
        items.map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
    }

    #[test]
    fn a_restart_rolls_back_to_the_checkpoint_whatever_was_written_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path(), 1 << 30).unwrap();
        put_many(&backend, 0, 2000, 300);
        backend.checkpoint(Some(7)).unwrap();
        let expected = contents(&backend);
        // Churn: without the checkpoint's reader these commits would reuse (overwrite) the
        // pages of the checkpointed tree, and rolling back would find garbage.
        for round in 0..20 {
            delete_all(&backend);
            put_many(&backend, round * 100, 2000, 300);
        }
        let after: Vec<_> = contents(&backend);
        assert_ne!(after, expected);
        drop(backend);
        let backend = Backend::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(backend.durable_wal_seq(), 7);
        assert_eq!(contents(&backend), expected);
        // The rolled back store is whole: it takes writes and a checkpoint again.
        put_many(&backend, 5000, 10, 10);
        backend.checkpoint(Some(8)).unwrap();
        drop(backend);
        let backend = Backend::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(backend.durable_wal_seq(), 8);
        assert_eq!(contents(&backend).len(), expected.len() + 10);
    }

    #[test]
    fn background_checkpoints_advance_and_a_torn_file_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path(), 1 << 30).unwrap();
        put_many(&backend, 0, 10, 10);
        backend.checkpoint_if_due(3, Duration::ZERO).unwrap();
        backend.checkpoint(None).unwrap();
        assert_eq!(backend.durable_wal_seq(), 3);
        let first = contents(&backend);
        put_many(&backend, 10, 10, 10);
        backend.checkpoint(Some(4)).unwrap();
        drop(backend);
        // The newest checkpoint file is torn: the one before it still describes a whole
        // store (its pages were kept until the newer checkpoint was durable).
        let db = dir.path().join(crate::backend::DB_DIR);
        let newest = FILES
            .iter()
            .map(|n| db.join(n))
            .max_by_key(|p| Saved::decode(&std::fs::read(p).unwrap()).map_or(0, |s| s.counter));
        let newest = newest.unwrap();
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap();
        let backend = Backend::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(backend.durable_wal_seq(), 3);
        assert_eq!(contents(&backend), first);
    }
}
