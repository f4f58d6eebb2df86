//! The write-ahead log: what raft must have durable before it answers anyone (new log
//! entries, term and vote), appended and flushed with one `fdatasync`.
//!
//! The LMDB store commits without flushing (see `backend::checkpoint`); this log is what
//! makes a write durable when it is acknowledged. After a crash the store rolls back to its
//! last checkpoint and the records written since are redone, so the log only has to reach
//! back to that checkpoint: older segments are recycled.
//!
//! Files are segments of [`SEGMENT_BYTES`] named by the sequence number of their first
//! record. A segment is filled with zeros when created, so that appending overwrites
//! allocated blocks and the flush writes no file-system metadata (the size does not change);
//! recycled segments keep their old bytes. Each segment starts with a header holding a random
//! salt that every record checksum covers: whatever follows the last record written (zeros,
//! a torn record, records of a segment's earlier life) can never pass for a record.
//!
//! Layout: segment header `magic(8) first_seq(8) salt(8) crc32c(4)`, padded to
//! [`HEADER_BYTES`]; records `len(4) crc32c(salt, seq, payload)(4) seq(8) payload(len)`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size a segment is created with; a record larger than what is left goes to the next one
/// (and a record larger than a whole segment makes that segment grow).
pub const SEGMENT_BYTES: u64 = 16 << 20;
const HEADER_BYTES: u64 = 4096;
const MAGIC: &[u8; 8] = b"rsetwal1";
const RECORD_HEADER: usize = 16;

/// Where the log lives inside the data dir.
pub const WAL_DIR: &str = "member/wal";

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
}

/// An open log positioned for appending after the last valid record.
pub struct Wal {
    dir: PathBuf,
    /// Every segment on disk, oldest first; the last one is being appended to.
    segments: Vec<Segment>,
    file: File,
    salt: u64,
    /// Where the next record goes in the current segment.
    offset: u64,
    next_seq: u64,
    /// Reused between appends.
    buf: Vec<u8>,
}

/// What [`Wal::open`] found: the open log and the records after the requested sequence
/// number, oldest first.
pub struct Opened {
    pub wal: Wal,
    pub records: Vec<(u64, Vec<u8>)>,
}

impl Wal {
    /// Opens the log in `dir` (creating it), reading every valid record. The log ends at the
    /// first record that does not check out: a torn write of a crash, never acknowledged.
    pub fn open(dir: &Path, after_seq: u64) -> io::Result<Opened> {
        std::fs::create_dir_all(dir)?;
        let mut segments = list_segments(dir)?;
        let mut records = Vec::new();
        // (segment index, salt, offset after its last valid record)
        let mut end = None;
        let mut expected: Option<u64> = None;
        for (i, segment) in segments.iter().enumerate() {
            let file = File::open(&segment.path)?;
            let Some(salt) = read_header(&file, segment.first_seq)? else {
                break;
            };
            if expected.is_some_and(|seq| seq != segment.first_seq) {
                break;
            }
            let mut seq = segment.first_seq;
            let mut offset = HEADER_BYTES;
            while let Some((payload, next)) = read_record(&file, salt, seq, offset)? {
                if seq > after_seq {
                    records.push((seq, payload));
                }
                seq += 1;
                offset = next;
            }
            expected = Some(seq);
            end = Some((i, salt, offset));
        }
        // Segments after the end (never reached: a crash while recycling) are garbage.
        let keep = end.map_or(0, |(i, _, _)| i + 1);
        for stale in segments.drain(keep..) {
            std::fs::remove_file(&stale.path)?;
        }
        let (file, salt, offset, next_seq) = match end {
            Some((i, salt, offset)) => {
                let file = OpenOptions::new().read(true).write(true).open(&segments[i].path)?;
                (file, salt, offset, expected.unwrap_or(1))
            }
            None => {
                let first_seq = after_seq + 1;
                let (segment, file, salt) = create_segment(dir, first_seq, None)?;
                segments.push(segment);
                (file, salt, HEADER_BYTES, first_seq)
            }
        };
        let wal =
            Wal { dir: dir.to_path_buf(), segments, file, salt, offset, next_seq, buf: Vec::new() };
        Ok(Opened { wal, records })
    }

    /// Sequence number of the last record appended (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Appends one record and flushes it to the device; returns its sequence number.
    /// `durable_seq` is the newest record a store checkpoint covers: segments holding only
    /// records up to it are recycled when a new segment is needed.
    pub fn append(&mut self, payload: &[u8], durable_seq: u64) -> io::Result<u64> {
        let len = (RECORD_HEADER + payload.len()) as u64;
        if self.offset > HEADER_BYTES && self.offset + len > SEGMENT_BYTES {
            self.roll(durable_seq)?;
        }
        let seq = self.next_seq;
        self.buf.clear();
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&record_crc(self.salt, seq, payload).to_le_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        self.offset += len;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Starts the next segment, recycling the oldest one that is no longer needed.
    fn roll(&mut self, durable_seq: u64) -> io::Result<()> {
        // Segment i holds records [first_seq(i), first_seq(i+1)); the current one stays.
        let reusable = self.segments.len() > 1 && self.segments[1].first_seq <= durable_seq + 1;
        let recycle = if reusable { Some(self.segments.remove(0)) } else { None };
        let (segment, file, salt) = create_segment(&self.dir, self.next_seq, recycle)?;
        self.segments.push(segment);
        self.file = file;
        self.salt = salt;
        self.offset = HEADER_BYTES;
        // Segments a checkpoint made useless and that were not recycled: keep one spare.
        while self.segments.len() > 3 && self.segments[1].first_seq <= durable_seq + 1 {
            let old = self.segments.remove(0);
            std::fs::remove_file(&old.path)?;
        }
        Ok(())
    }

    /// Number of segment files (for tests and status).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:016x}.rwal")
}

fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".rwal") {
            if let Ok(first_seq) = u64::from_str_radix(hex, 16) {
                segments.push(Segment { first_seq, path: entry.path() });
            }
        } else if name.ends_with(".rwal.tmp") {
            // A segment being created when the process stopped.
            std::fs::remove_file(entry.path())?;
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Makes a segment starting at `first_seq`, from a recycled one or from a new zero-filled
/// file, with a fresh salt; durable (header and directory entry) before it is used.
fn create_segment(
    dir: &Path,
    first_seq: u64,
    recycle: Option<Segment>,
) -> io::Result<(Segment, File, u64)> {
    let path = dir.join(segment_name(first_seq));
    let tmp = dir.join(format!("{}.tmp", segment_name(first_seq)));
    match recycle {
        Some(old) => std::fs::rename(&old.path, &tmp)?,
        None => {
            let file = File::create(&tmp)?;
            let zeros = vec![0u8; 1 << 20];
            let mut at = 0;
            while at < SEGMENT_BYTES {
                file.write_all_at(&zeros, at)?;
                at += zeros.len() as u64;
            }
        }
    }
    let file = OpenOptions::new().read(true).write(true).open(&tmp)?;
    let salt = rand::random::<u64>();
    let mut header = vec![0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&first_seq.to_le_bytes());
    header[16..24].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32c::crc32c(&header[..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok((Segment { first_seq, path }, file, salt))
}

/// The segment's salt, or None if its header is not one written for `first_seq`.
fn read_header(file: &File, first_seq: u64) -> io::Result<Option<u64>> {
    let mut header = [0u8; 28];
    if let Err(err) = file.read_exact_at(&mut header, 0) {
        return if err.kind() == io::ErrorKind::UnexpectedEof { Ok(None) } else { Err(err) };
    }
    let crc = u32::from_le_bytes(header[24..28].try_into().unwrap());
    let valid = &header[..8] == MAGIC
        && crc32c::crc32c(&header[..24]) == crc
        && u64::from_le_bytes(header[8..16].try_into().unwrap()) == first_seq;
    Ok(valid.then(|| u64::from_le_bytes(header[16..24].try_into().unwrap())))
}

/// The record `seq` at `offset`, with the offset after it, if it is there and whole.
fn read_record(
    file: &File,
    salt: u64,
    seq: u64,
    offset: u64,
) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut header = [0u8; RECORD_HEADER];
    match file.read_exact_at(&mut header, offset) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let stored_seq = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let file_len = file.metadata()?.len();
    if stored_seq != seq || offset + RECORD_HEADER as u64 + len > file_len {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + RECORD_HEADER as u64)?;
    if record_crc(salt, seq, &payload) != crc {
        return Ok(None);
    }
    Ok(Some((payload, offset + RECORD_HEADER as u64 + len)))
}

fn record_crc(salt: u64, seq: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&salt.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &seq.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(opened: &Opened) -> Vec<(u64, Vec<u8>)> {
        opened.records.clone()
    }

    #[test]
    fn records_survive_reopen_and_after_seq_filters() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap().wal;
        for i in 1..=5u8 {
            assert_eq!(wal.append(&[i; 10], 0).unwrap(), i as u64);
        }
        drop(wal);
        let opened = Wal::open(dir.path(), 2).unwrap();
        let seqs: Vec<u64> = payloads(&opened).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(opened.records[0].1, vec![3u8; 10]);
        let mut wal = opened.wal;
        assert_eq!(wal.append(b"six", 0).unwrap(), 6);
        drop(wal);
        assert_eq!(Wal::open(dir.path(), 5).unwrap().records, vec![(6, b"six".to_vec())]);
    }

    #[test]
    fn a_torn_record_ends_the_log_and_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap().wal;
        wal.append(b"one", 0).unwrap();
        wal.append(b"two", 0).unwrap();
        let torn_at = wal.offset - 2;
        let path = wal.segments[0].path.clone();
        drop(wal);
        // The last byte of record 2 never reached the disk.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff, 0xee], torn_at).unwrap();
        let opened = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(opened.records, vec![(1, b"one".to_vec())]);
        let mut wal = opened.wal;
        assert_eq!(wal.append(b"again", 0).unwrap(), 2);
        drop(wal);
        let records = Wal::open(dir.path(), 0).unwrap().records;
        assert_eq!(records, vec![(1, b"one".to_vec()), (2, b"again".to_vec())]);
    }

    #[test]
    fn segments_roll_and_recycle_once_a_checkpoint_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap().wal;
        let big = vec![7u8; (SEGMENT_BYTES / 3) as usize];
        // Nothing is checkpointed: every segment stays.
        for _ in 0..7 {
            wal.append(&big, 0).unwrap();
        }
        assert_eq!(wal.segment_count(), 4);
        // A checkpoint covering the first six records lets the first segments go.
        for _ in 0..4 {
            wal.append(&big, 6).unwrap();
        }
        assert!(wal.segment_count() <= 3, "{:?}", wal.segments);
        let last = wal.last_seq();
        drop(wal);
        // A recycled segment's old records are not taken for new ones.
        let opened = Wal::open(dir.path(), 6).unwrap();
        let seqs: Vec<u64> = opened.records.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (7..=last).collect::<Vec<_>>());
        assert_eq!(opened.wal.last_seq(), last);
    }

    #[test]
    fn a_fresh_log_starts_after_the_checkpointed_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 41).unwrap().wal;
        assert_eq!(wal.last_seq(), 41);
        assert_eq!(wal.append(b"x", 41).unwrap(), 42);
    }
}
