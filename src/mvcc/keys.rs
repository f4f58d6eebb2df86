//! How user keys become LMDB keys.
//!
//! etcd accepts keys as long as a request may be, but an LMDB key holds at most about 1.9 KiB
//! (4 KiB pages). Keys up to [`INLINE_MAX`] bytes are stored as they are. A longer key is
//! stored as its first [`INLINE_MAX`] bytes followed by the SHA-256 of the whole key: a
//! *digest key* of fixed length.
//!
//! This keeps byte order almost everywhere. Compare a digest key `P‖h` (user key `P‖tail`,
//! `|P| = INLINE_MAX`) with an inline key `S` (`|S| <= INLINE_MAX`): either they differ within
//! the first `|S|` bytes, where the user key and the digest key agree, or `S` is a prefix of
//! `P`, and then `S` sorts first in both orders. So inline keys and digest groups (all digest
//! keys sharing one `P`) sit exactly where their user keys sort. Only the members of one group
//! are out of order among themselves (by hash), so readers collect a group and sort it by
//! user key; the user key of a digest entry is in the `revlog` record of its revision.
//! [`KeyOrder`] does that for every reader.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::store::KeyRange;

/// Longest key stored as itself. Digest keys are `INLINE_MAX + 32` bytes, which leaves room
/// for the 16 revision bytes of `hist` and the 8 lease-id bytes of `lease_keys`.
pub const INLINE_MAX: usize = 1024;

/// The LMDB form of a user key.
pub fn stored(key: &[u8]) -> Cow<'_, [u8]> {
    if key.len() <= INLINE_MAX {
        return Cow::Borrowed(key);
    }
    let mut out = Vec::with_capacity(INLINE_MAX + 32);
    out.extend_from_slice(&key[..INLINE_MAX]);
    out.extend_from_slice(&Sha256::digest(key));
    Cow::Owned(out)
}

/// True for the stored form of a key longer than [`INLINE_MAX`].
pub fn is_digest(stored: &[u8]) -> bool {
    stored.len() > INLINE_MAX
}

/// Where a walk over stored keys must start to meet every user key `>= start`: a digest
/// group whose user keys are `>= start` may hold digest keys below `stored(start)`.
pub fn seek_floor(start: &[u8]) -> &[u8] {
    &start[..start.len().min(INLINE_MAX)]
}

/// Turns a walk over stored keys (in LMDB order) into visits in user-key order, limited to a
/// range: inline keys pass straight through, digest groups are collected and sorted first.
pub struct KeyOrder<'r, T> {
    range: &'r KeyRange,
    group_prefix: Vec<u8>,
    group: Vec<(Vec<u8>, T)>,
}

/// What the walk should do after [`KeyOrder::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    Continue,
    Stop,
}

impl<'r, T> KeyOrder<'r, T> {
    pub fn new(range: &'r KeyRange) -> Self {
        Self { range, group_prefix: Vec::new(), group: Vec::new() }
    }

    /// Offers the next stored entry. `item` is `None` for a key that does not exist at the
    /// revision read (it still tells where the walk stands). `user_key` is asked only for
    /// digest keys. `visit` returns false to end the walk.
    pub fn offer<E>(
        &mut self,
        stored: &[u8],
        item: Option<T>,
        user_key: impl FnOnce() -> Result<Vec<u8>, E>,
        visit: &mut impl FnMut(&[u8], T) -> bool,
    ) -> Result<Walk, E> {
        if is_digest(stored) {
            let prefix = &stored[..INLINE_MAX];
            if prefix != self.group_prefix.as_slice() {
                if self.flush(visit) == Walk::Stop {
                    return Ok(Walk::Stop);
                }
                // Every user key of this group starts with `prefix`, so if the prefix is past
                // the end, so is the whole group and everything after it.
                if !self.range.below_end(prefix) {
                    return Ok(Walk::Stop);
                }
                self.group_prefix = prefix.to_vec();
            }
            if let Some(item) = item {
                self.group.push((user_key()?, item));
            }
            return Ok(Walk::Continue);
        }
        if self.flush(visit) == Walk::Stop || !self.range.below_end(stored) {
            return Ok(Walk::Stop);
        }
        match item {
            Some(item) if stored >= self.range.start() => {
                Ok(if visit(stored, item) { Walk::Continue } else { Walk::Stop })
            }
            _ => Ok(Walk::Continue),
        }
    }

    /// Visits what is left of the last group; call once the walk ran out of entries.
    pub fn finish(mut self, visit: &mut impl FnMut(&[u8], T) -> bool) {
        self.flush(visit);
    }

    fn flush(&mut self, visit: &mut impl FnMut(&[u8], T) -> bool) -> Walk {
        if self.group.is_empty() {
            return Walk::Continue;
        }
        let mut group = std::mem::take(&mut self.group);
        group.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, item) in group {
            if self.range.contains(&key) && !visit(&key, item) {
                return Walk::Stop;
            }
        }
        Walk::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(prefix: u8, tail: &[u8]) -> Vec<u8> {
        let mut key = vec![prefix; INLINE_MAX];
        key.extend_from_slice(tail);
        key
    }

    /// Walks `keys` in stored order through [`KeyOrder`] and returns the user keys visited.
    fn walk(keys: &[Vec<u8>], range: &KeyRange) -> Vec<Vec<u8>> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> =
            keys.iter().map(|k| (stored(k).into_owned(), k.clone())).collect();
        entries.sort();
        let floor = seek_floor(range.start()).to_vec();
        let mut order = KeyOrder::new(range);
        let mut seen = Vec::new();
        let mut visit = |key: &[u8], item: Vec<u8>| {
            assert_eq!(key, item.as_slice());
            seen.push(item);
            true
        };
        for (s, user) in entries.into_iter().filter(|(s, _)| *s >= floor) {
            let step =
                order.offer(&s, Some(user.clone()), || Ok::<_, ()>(user), &mut visit).unwrap();
            if step == Walk::Stop {
                return seen;
            }
        }
        order.finish(&mut visit);
        seen
    }

    #[test]
    fn digest_keys_come_back_in_user_key_order() {
        let mut keys: Vec<Vec<u8>> = (0u8..40).map(|i| long(b'm', &[i, b'z'])).collect();
        keys.push(vec![b'm'; INLINE_MAX]);
        keys.push(vec![b'm'; 10]);
        keys.push(b"n".to_vec());
        keys.push(long(b'a', b"x"));
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(walk(&keys, &KeyRange::From(Vec::new())), expected);
    }

    #[test]
    fn ranges_bounded_by_long_keys_keep_exactly_their_keys() {
        let keys: Vec<Vec<u8>> = (0u8..20).map(|i| long(b'k', &[i])).collect();
        let range = KeyRange::Between(long(b'k', &[5]), long(b'k', &[9]));
        assert_eq!(walk(&keys, &range), keys[5..9].to_vec());
        let short_end = KeyRange::Between(long(b'k', &[15]), b"l".to_vec());
        assert_eq!(walk(&keys, &short_end), keys[15..].to_vec());
    }
}
