//! Byte layout of the values in the `live`, `hist` and `revlog` tables.
//!
//! ```text
//! live   key -> mod_main(8) mod_sub(8) create(8) version(8) lease(8)
//! hist   key+rev -> kind(1) [create(8) version(8) lease(8) value...]   (kind 1 = tombstone)
//! revlog rev -> kind(1) user key...
//! ```
//! Keys in `live` and `hist` are stored keys (see [`keys`](super::keys)); `revlog` holds the
//! whole user key. Integers are big-endian i64. A value is stored once, in `hist`: `live`
//! points at the current version by its full revision, so a read with values finds it with
//! one lookup, and keys-only and count reads need no `hist` access at all.

use crate::pb::mvccpb::KeyValue;

use super::revision::Revision;

pub const KIND_PUT: u8 = 0;
pub const KIND_TOMBSTONE: u8 = 1;

/// The metadata and value of one version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    pub modified: Revision,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: &'a [u8],
}

impl Version<'_> {
    pub fn to_key_value(&self, key: &[u8], keys_only: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.modified.main,
            version: self.version,
            value: if keys_only { Vec::new() } else { self.value.to_vec() },
            lease: self.lease,
        }
    }
}

pub fn encode_live(v: &Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&v.modified.to_bytes());
    push_meta(&mut out, v);
    out
}

/// The current version's metadata; its `value` is empty (the value is in `hist`).
pub fn decode_live(bytes: &[u8]) -> Version<'_> {
    assert_eq!(bytes.len(), 40, "corrupt live record of {} bytes", bytes.len());
    let modified = Revision::from_bytes(&bytes[..16]);
    read_meta(modified, &bytes[16..])
}

pub fn encode_hist_put(v: &Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + v.value.len());
    out.push(KIND_PUT);
    push_meta(&mut out, v);
    out.extend_from_slice(v.value);
    out
}

pub const HIST_TOMBSTONE: &[u8] = &[KIND_TOMBSTONE];

/// Decodes a `hist` value written at `modified`; `None` is a tombstone.
pub fn decode_hist(modified: Revision, bytes: &[u8]) -> Option<Version<'_>> {
    match bytes.first() {
        Some(&KIND_PUT) => Some(read_meta(modified, &bytes[1..])),
        Some(&KIND_TOMBSTONE) => None,
        other => panic!("corrupt hist record kind {other:?} at {modified:?}"),
    }
}

pub fn encode_revlog(kind: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(kind);
    out.extend_from_slice(key);
    out
}

/// Returns (kind, key) of a `revlog` value.
pub fn decode_revlog(bytes: &[u8]) -> (u8, &[u8]) {
    assert!(!bytes.is_empty(), "empty revlog record");
    (bytes[0], &bytes[1..])
}

fn push_meta(out: &mut Vec<u8>, v: &Version) {
    out.extend_from_slice(&v.create_revision.to_be_bytes());
    out.extend_from_slice(&v.version.to_be_bytes());
    out.extend_from_slice(&v.lease.to_be_bytes());
}

fn read_meta(modified: Revision, bytes: &[u8]) -> Version<'_> {
    assert!(bytes.len() >= 24, "corrupt version record at {modified:?}");
    let int = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    Version {
        modified,
        create_revision: int(0),
        version: int(8),
        lease: int(16),
        value: &bytes[24..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_hist_records_round_trip() {
        let v = Version {
            modified: Revision::new(9, 2),
            create_revision: 4,
            version: 3,
            lease: 77,
            value: b"hello",
        };
        assert_eq!(decode_live(&encode_live(&v)), Version { value: b"", ..v.clone() });
        assert_eq!(decode_hist(v.modified, &encode_hist_put(&v)), Some(v.clone()));
        assert_eq!(decode_hist(v.modified, HIST_TOMBSTONE), None);
    }
}
