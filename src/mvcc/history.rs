//! Reads past changes back as watch events, in revision order, from `revlog` (the previous
//! versions are found through `hist`).

use heed::RoTxn;

use super::keys;
use super::record;
use super::revision::{hist_key, split_hist_key, Revision};
use super::{Result, Store};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

/// The changes of one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Events of revisions `from..=to`, whole revisions only, stopping once at least `max_events`
/// were read. Each event carries its previous version (if history still holds it).
pub fn events(
    store: &Store,
    txn: &RoTxn,
    from: i64,
    to: i64,
    max_events: usize,
) -> Result<Vec<RevisionEvents>> {
    let mut out: Vec<RevisionEvents> = Vec::new();
    let start = Revision::new(from.max(1), 0).to_bytes();
    let bounds = (std::ops::Bound::Included(start.as_slice()), std::ops::Bound::Unbounded);
    for (count, item) in store.backend.revlog().range(txn, &bounds)?.enumerate() {
        let (rev_bytes, entry) = item?;
        let at = Revision::from_bytes(rev_bytes);
        if at.main > to {
            break;
        }
        let is_new_revision = out.last().is_none_or(|r| r.revision != at.main);
        if is_new_revision && count >= max_events {
            break;
        }
        if is_new_revision {
            out.push(RevisionEvents { revision: at.main, events: Vec::new() });
        }
        let change = record::decode_change(at, entry);
        let key = change.key;
        let event = match change.version {
            None => Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.to_vec(),
                    mod_revision: at.main,
                    ..Default::default()
                }),
                prev_kv: previous(store, txn, key, at)?,
            },
            Some(version) => Event {
                r#type: EventType::Put as i32,
                kv: Some(version.to_key_value(key, false)),
                prev_kv: previous(store, txn, key, at)?,
            },
        };
        out.last_mut().expect("pushed above").events.push(event);
    }
    Ok(out)
}

/// The version of `key` just before revision `at`, if it existed and was not compacted away.
fn previous(store: &Store, txn: &RoTxn, key: &[u8], at: Revision) -> Result<Option<KeyValue>> {
    let stored = keys::stored(key);
    let Some((entry, bytes)) =
        store.backend.hist().get_greater_than(txn, &hist_key(&stored, at))?
    else {
        return Ok(None);
    };
    let (found, rev) = split_hist_key(entry);
    if found != stored.as_ref() {
        return Ok(None);
    }
    if record::hist_is_tombstone(bytes) {
        return Ok(None);
    }
    Ok(Some(store.version_at(txn, rev)?.to_key_value(key, false)))
}
