//! A user's merged key permissions: the union of every granted role's ranges, one set for
//! reading and one for writing, and the checks etcd makes against them. A range request
//! must be covered entirely; a single key must fall in some granted range.

use crate::pb::authpb::{permission::Type, Role};

/// `[start, end)`; `end == None` reaches past every key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    /// A permission's range: an empty end is the key alone, `"\0"` every key from it on.
    fn of_permission(key: &[u8], range_end: &[u8]) -> Span {
        match range_end {
            [] => Span { start: key.to_vec(), end: Some(successor(key)) },
            [0] => Span { start: key.to_vec(), end: None },
            end => Span { start: key.to_vec(), end: Some(end.to_vec()) },
        }
    }

    fn reaches_past(&self, point: &[u8]) -> bool {
        self.end.as_deref().is_none_or(|end| end > point)
    }
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Granted ranges, sorted by start.
#[derive(Debug, Default, Clone)]
pub struct SpanSet {
    spans: Vec<Span>,
}

impl SpanSet {
    fn insert(&mut self, span: Span) {
        let at = self.spans.partition_point(|s| s.start <= span.start);
        self.spans.insert(at, span);
    }

    /// Whether some granted range holds `key`.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.spans.iter().take_while(|s| s.start.as_slice() <= key).any(|s| s.reaches_past(key))
    }

    /// Whether the granted ranges together cover `[start, end)` (`end == None`: every key
    /// from `start` on).
    pub fn covers(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        if end.is_some_and(|end| end <= start) {
            // etcd's interval tree finds nothing to cover an empty or inverted range.
            return false;
        }
        let mut reached = start.to_vec();
        for span in &self.spans {
            if span.start > reached {
                return false;
            }
            match &span.end {
                None => return true,
                Some(span_end) if *span_end > reached => {
                    reached.clone_from(span_end);
                    if end.is_some_and(|end| reached.as_slice() >= end) {
                        return true;
                    }
                }
                Some(_) => {}
            }
        }
        false
    }
}

/// What one user may read and write.
#[derive(Debug, Default, Clone)]
pub struct UserPerms {
    pub read: SpanSet,
    pub write: SpanSet,
}

impl UserPerms {
    pub fn merge<'a>(roles: impl IntoIterator<Item = &'a Role>) -> UserPerms {
        let mut perms = UserPerms::default();
        for role in roles {
            for perm in &role.key_permission {
                let span = Span::of_permission(&perm.key, &perm.range_end);
                match Type::try_from(perm.perm_type).unwrap_or(Type::Read) {
                    Type::Read => perms.read.insert(span),
                    Type::Write => perms.write.insert(span),
                    Type::Readwrite => {
                        perms.read.insert(span.clone());
                        perms.write.insert(span);
                    }
                }
            }
        }
        perms
    }
}

/// etcd's rule for a range a permission may name: a key, and an end that is empty, `"\0"`,
/// or after the key.
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

impl SpanSet {
    /// Whether a request on `key` and `range_end` (as in a RangeRequest: empty for the key
    /// alone, `"\0"` for every key from it on) stays inside the granted ranges.
    pub fn permits(&self, key: &[u8], range_end: &[u8]) -> bool {
        match range_end {
            [] => self.holds(key),
            [0] => self.covers(key, None),
            end => self.covers(key, Some(end)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::authpb::Permission;

    fn role(perms: &[(Type, &[u8], &[u8])]) -> Role {
        Role {
            name: b"r".to_vec(),
            key_permission: perms
                .iter()
                .map(|(t, k, e)| Permission {
                    perm_type: *t as i32,
                    key: k.to_vec(),
                    range_end: e.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_range_must_be_covered_whole_even_across_adjacent_grants() {
        let r =
            role(&[(Type::Read, b"a", b"c"), (Type::Read, b"c", b"e"), (Type::Write, b"k", b"")]);
        let perms = UserPerms::merge([&r]);
        assert!(perms.read.covers(b"a", Some(b"e")));
        assert!(perms.read.covers(b"b", Some(b"d")));
        assert!(!perms.read.covers(b"a", Some(b"f")));
        assert!(!perms.read.covers(b"a", None));
        assert!(perms.read.holds(b"d"));
        assert!(!perms.read.holds(b"e"));
        assert!(perms.write.holds(b"k"));
        assert!(!perms.write.holds(b"k\0"));
        assert!(perms.write.covers(b"k", Some(b"k\0")));
        assert!(!perms.write.covers(b"k", Some(b"k\0\0")));
    }

    #[test]
    fn an_open_ended_grant_covers_every_later_key() {
        let r = role(&[(Type::Readwrite, b"m", b"\0")]);
        let perms = UserPerms::merge([&r]);
        assert!(perms.read.covers(b"m", None));
        assert!(perms.write.covers(b"x", Some(b"z")));
        assert!(!perms.read.covers(b"l", None));
        assert!(!perms.read.holds(b"a"));
    }

    #[test]
    fn permission_ranges_follow_etcds_rule() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"\0"));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(!is_valid_permission_range(b"", b""));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"a", b"a"));
    }
}
