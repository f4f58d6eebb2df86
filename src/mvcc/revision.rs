//! Revisions and the byte encodings of the MVCC tables.
//!
//! A revision is etcd's `(main, sub)` pair: `main` counts write requests, `sub` counts the
//! changes inside one request (a Txn with three puts makes `(n, 0) (n, 1) (n, 2)`). Both are
//! stored as 8-byte big-endian integers so that LMDB's byte order is revision order.

use std::cmp::Ordering;

/// A point in the store's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const LEN: usize = 16;

    pub fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        out
    }

    /// Decodes 16 bytes written by [`Revision::to_bytes`]. Anything else is a corrupt table,
    /// which is an invariant break rather than bad client input.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::LEN, "corrupt revision bytes {bytes:?}");
        let main = u64::from_be_bytes(bytes[..8].try_into().unwrap()) as i64;
        let sub = u64::from_be_bytes(bytes[8..].try_into().unwrap()) as i64;
        Self { main, sub }
    }
}

/// Key of the `hist` table: the user key followed by the 16 revision bytes.
///
/// No escaping is needed because [`HistOrder`] splits the revision off the end before
/// comparing, so `"a"` at any revision sorts before `"a\0"` at any revision.
pub fn hist_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + Revision::LEN);
    out.extend_from_slice(key);
    out.extend_from_slice(&rev.to_bytes());
    out
}

/// Splits a `hist` key into the user key and its revision.
pub fn split_hist_key(bytes: &[u8]) -> (&[u8], Revision) {
    let at = bytes.len() - Revision::LEN;
    (&bytes[..at], Revision::from_bytes(&bytes[at..]))
}

/// LMDB comparator of the `hist` table: user key ascending, then revision *descending*.
///
/// Worked example, keys `a` and `b`, where `a` was written at 2 and 5 and `b` at 3:
///
/// ```text
///   (a, 5) (a, 2) (b, 3)
/// ```
///
/// A read of `a` at revision 4 seeks to the first entry `>= (a, 4)`, which is `(a, 2)`: the
/// newest version not after 4, found with one B-tree descent however long `a`'s history is.
/// Seeking to `(a, 0)` lands on the first entry of the next key.
pub enum HistOrder {}

impl heed::Comparator for HistOrder {
    fn compare(a: &[u8], b: &[u8]) -> Ordering {
        // The comparator must never panic (it runs inside LMDB); a short key is treated as a
        // bare user key with the lowest revision.
        let (ak, ar) = split_lenient(a);
        let (bk, br) = split_lenient(b);
        ak.cmp(bk).then_with(|| br.cmp(ar))
    }
}

fn split_lenient(bytes: &[u8]) -> (&[u8], &[u8]) {
    if bytes.len() < Revision::LEN {
        (bytes, &[])
    } else {
        bytes.split_at(bytes.len() - Revision::LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heed::Comparator;

    #[test]
    fn revision_round_trips_in_order() {
        let a = Revision::new(2, 7);
        let b = Revision::new(3, 0);
        assert_eq!(Revision::from_bytes(&a.to_bytes()), a);
        assert!(a.to_bytes() < b.to_bytes());
    }

    #[test]
    fn hist_order_groups_keys_and_puts_newest_first() {
        let a2 = hist_key(b"a", Revision::new(2, 0));
        let a5 = hist_key(b"a", Revision::new(5, 0));
        let a0 = hist_key(b"a\0", Revision::new(1, 0));
        let b3 = hist_key(b"b", Revision::new(3, 0));
        let mut keys = vec![b3.clone(), a2.clone(), a0.clone(), a5.clone()];
        keys.sort_by(|x, y| HistOrder::compare(x, y));
        assert_eq!(keys, vec![a5, a2, a0, b3]);
    }
}
