//! Byte layout of the values in the `live`, `hist` and `revlog` tables.
//!
//! ```text
//! live   key -> mod_main(8) mod_sub(8) create(8) version(8) lease(8)
//! hist   key+rev -> kind(1)                                         (kind 1 = tombstone)
//! revlog rev -> kind(1) key_len(4) user key [create(8) version(8) lease(8) value...]
//! ```
//! Keys in `live` and `hist` are stored keys (see [`keys`](super::keys)); `revlog` holds the
//! whole user key. Integers are big-endian. Every change is written once, whole, in `revlog`,
//! whose keys only grow: appended there, its pages are filled completely and a write touches
//! only the table's last page, while `hist` and `live` are small indexes by key. `live` points
//! at the current version by its full revision, so a read with values finds it with one
//! lookup, and keys-only and count reads at the current revision read no `revlog` page.

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

/// `hist` value of a put: the version itself is in `revlog` at the same revision.
pub const HIST_PUT: &[u8] = &[KIND_PUT];
pub const HIST_TOMBSTONE: &[u8] = &[KIND_TOMBSTONE];

/// True when a `hist` value marks a tombstone (the key did not exist from that revision on).
pub fn hist_is_tombstone(bytes: &[u8]) -> bool {
    match bytes {
        [KIND_PUT] => false,
        [KIND_TOMBSTONE] => true,
        other => panic!("corrupt hist record {other:?}"),
    }
}

/// One change as `revlog` holds it: the user key and, for a put, the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    pub key: &'a [u8],
    /// `None` for a tombstone.
    pub version: Option<Version<'a>>,
}

pub fn encode_put(key: &[u8], v: &Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len() + 24 + v.value.len());
    push_key(&mut out, KIND_PUT, key);
    push_meta(&mut out, v);
    out.extend_from_slice(v.value);
    out
}

pub fn encode_tombstone(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len());
    push_key(&mut out, KIND_TOMBSTONE, key);
    out
}

/// Decodes the `revlog` value of the change made at `modified`.
pub fn decode_change(modified: Revision, bytes: &[u8]) -> Change<'_> {
    assert!(bytes.len() >= 5, "corrupt revlog record at {modified:?}");
    let key_len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    assert!(bytes.len() >= 5 + key_len, "corrupt revlog key at {modified:?}");
    let (key, rest) = bytes[5..].split_at(key_len);
    let version = match bytes[0] {
        KIND_PUT => Some(read_meta(modified, rest)),
        KIND_TOMBSTONE => None,
        other => panic!("corrupt revlog record kind {other} at {modified:?}"),
    };
    Change { key, version }
}

fn push_key(out: &mut Vec<u8>, kind: u8, key: &[u8]) {
    out.push(kind);
    let len = u32::try_from(key.len()).expect("keys are bounded by the request size limit");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
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
    fn live_and_revlog_records_round_trip() {
        let v = Version {
            modified: Revision::new(9, 2),
            create_revision: 4,
            version: 3,
            lease: 77,
            value: b"hello",
        };
        assert_eq!(decode_live(&encode_live(&v)), Version { value: b"", ..v.clone() });
        let put = encode_put(b"key", &v);
        assert_eq!(
            decode_change(v.modified, &put),
            Change { key: b"key", version: Some(v.clone()) }
        );
        let gone = encode_tombstone(b"key");
        assert_eq!(decode_change(v.modified, &gone), Change { key: b"key", version: None });
        assert!(hist_is_tombstone(HIST_TOMBSTONE) && !hist_is_tombstone(HIST_PUT));
    }
}
