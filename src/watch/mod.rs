//! The watch hub: delivers each applied revision's events to the watchers whose range they
//! touch, and lets watchers that start in the past or fall behind catch up from the store.
//!
//! Fed by the applier after each LMDB commit (before callers are answered), so an event is
//! published in revision order exactly once. A watcher is either *synced* (it gets events
//! straight from [`WatchHub::publish`]) or *catching up* (a task reads history in batches).
//!
//! No event is lost or repeated across the switch: a watcher's `next_rev` says which revision
//! it needs next; publishing skips revisions below it, and a catching-up watcher becomes synced
//! only under the hub lock once `next_rev` passed the last published revision. A slow stream
//! never grows memory: each stream has a bounded queue, and a watcher whose queue is full drops
//! back to catching up from the store, which waits for room.
//!
//! Lock order: the hub's one mutex; never held across an `.await` or a store read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message;
use tokio::sync::mpsc;

use crate::mvcc::{history, KeyRange, Store};
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::Event;

/// Responses queued per stream before its slowest watchers fall back to catching up.
const STREAM_QUEUE: usize = 256;
/// Events read from the store per catch-up step.
const CATCH_UP_BATCH: usize = 1000;

pub const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
pub const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
pub const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

type StreamId = u64;
type WatchId = i64;

struct Watcher {
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// The first revision this watcher has not been sent yet.
    next_rev: i64,
    synced: bool,
    /// Whether anything was sent since the last progress tick.
    sent_since_tick: bool,
}

struct StreamState {
    tx: mpsc::Sender<WatchResponse>,
    watchers: HashMap<WatchId, Watcher>,
    next_watch_id: WatchId,
    /// A progress request waits for every watcher of the stream to be synced.
    progress_pending: bool,
}

struct HubState {
    last_published: i64,
    streams: HashMap<StreamId, StreamState>,
    next_stream: StreamId,
}

/// Shared by the applier (publishing) and every watch stream.
#[derive(Clone)]
pub struct WatchHub {
    state: Arc<Mutex<HubState>>,
    store: Store,
    runtime: tokio::runtime::Handle,
    /// Largest response before a fragmenting watcher's events are split.
    max_response_bytes: usize,
}

/// One gRPC watch stream's view of the hub. Dropping it removes its watchers.
pub struct WatchStream {
    hub: WatchHub,
    id: StreamId,
}

impl WatchHub {
    pub fn new(
        store: Store,
        current_rev: i64,
        runtime: tokio::runtime::Handle,
        max_response_bytes: usize,
    ) -> Self {
        let state =
            HubState { last_published: current_rev, streams: HashMap::new(), next_stream: 1 };
        Self { state: Arc::new(Mutex::new(state)), store, runtime, max_response_bytes }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a stream; its responses come out of the returned receiver.
    pub fn open_stream(&self) -> (WatchStream, mpsc::Receiver<WatchResponse>) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut state = self.lock();
        let id = state.next_stream;
        state.next_stream += 1;
        let stream =
            StreamState { tx, watchers: HashMap::new(), next_watch_id: 0, progress_pending: false };
        state.streams.insert(id, stream);
        (WatchStream { hub: self.clone(), id }, rx)
    }

    /// Delivers the events of one applied revision. Called by the applier after the commit
    /// that made `revision` durable, in revision order; never blocks.
    pub fn publish(&self, revision: i64, events: &[Event]) {
        let mut state = self.lock();
        state.last_published = revision;
        let mut fallen_behind = Vec::new();
        for (&stream_id, stream) in state.streams.iter_mut() {
            for (&watch_id, watcher) in stream.watchers.iter_mut() {
                if !watcher.synced || revision < watcher.next_rev {
                    continue;
                }
                let mine = watcher.select(events);
                if mine.is_empty() {
                    watcher.next_rev = revision + 1;
                    continue;
                }
                let responses =
                    watcher.responses(watch_id, revision, mine, self.max_response_bytes);
                if stream.tx.capacity() < responses.len() {
                    watcher.synced = false;
                    fallen_behind.push((stream_id, watch_id));
                    continue;
                }
                for response in responses {
                    let _ = stream.tx.try_send(response);
                }
                watcher.next_rev = revision + 1;
                watcher.sent_since_tick = true;
            }
        }
        drop(state);
        for (stream_id, watch_id) in fallen_behind {
            self.spawn_catch_up(stream_id, watch_id);
        }
    }

    /// The store jumped to `revision` without publishing the revisions in between (a store
    /// copy from the leader was installed): every watcher reads what it missed from the
    /// store, or learns that it was compacted.
    pub fn jumped(&self, revision: i64) {
        let mut state = self.lock();
        state.last_published = revision;
        let mut behind = Vec::new();
        for (&stream_id, stream) in state.streams.iter_mut() {
            for (&watch_id, watcher) in stream.watchers.iter_mut() {
                if watcher.synced {
                    watcher.synced = false;
                    behind.push((stream_id, watch_id));
                }
            }
        }
        drop(state);
        for (stream_id, watch_id) in behind {
            self.spawn_catch_up(stream_id, watch_id);
        }
    }

    fn spawn_catch_up(&self, stream_id: StreamId, watch_id: WatchId) {
        let hub = self.clone();
        self.runtime.spawn(async move { hub.catch_up(stream_id, watch_id).await });
    }

    /// Sends a watcher its missing history, batch by batch, until it reaches the last published
    /// revision, then marks it synced (under the lock, so no publish falls in between).
    async fn catch_up(&self, stream_id: StreamId, watch_id: WatchId) {
        loop {
            let (next, last, tx) = {
                let mut state = self.lock();
                let last = state.last_published;
                let Some(stream) = state.streams.get_mut(&stream_id) else {
                    return;
                };
                let tx = stream.tx.clone();
                let Some(watcher) = stream.watchers.get_mut(&watch_id) else {
                    return;
                };
                if watcher.next_rev > last {
                    watcher.synced = true;
                    let all_synced = stream.watchers.values().all(|w| w.synced);
                    if stream.progress_pending && all_synced {
                        stream.progress_pending = false;
                        let _ = stream.tx.try_send(progress_response(-1, last));
                    }
                    return;
                }
                (watcher.next_rev, last, tx)
            };
            let batch = match self.read_history(next, last) {
                Ok(batch) => batch,
                Err(History::Compacted(compact_rev)) => {
                    self.remove(stream_id, watch_id);
                    let _ = tx.send(compacted_response(watch_id, compact_rev)).await;
                    return;
                }
                Err(History::Failed(err)) => {
                    tracing::error!(error = %err, "watch catch-up could not read history");
                    self.remove(stream_id, watch_id);
                    return;
                }
            };
            let read_to = batch.last().map_or(last, |r| r.revision);
            // Like etcd, one response carries the whole batch, stamped with the revision the
            // watcher is catching up to; revisions with nothing for this watcher send nothing.
            let responses = {
                let state = self.lock();
                let Some(watcher) =
                    state.streams.get(&stream_id).and_then(|s| s.watchers.get(&watch_id))
                else {
                    return;
                };
                let mine: Vec<Event> =
                    batch.iter().flat_map(|r| watcher.select(&r.events)).collect();
                if mine.is_empty() {
                    Vec::new()
                } else {
                    watcher.responses(watch_id, last, mine, self.max_response_bytes)
                }
            };
            for response in responses {
                if tx.send(response).await.is_err() {
                    return;
                }
            }
            let mut state = self.lock();
            let Some(watcher) =
                state.streams.get_mut(&stream_id).and_then(|s| s.watchers.get_mut(&watch_id))
            else {
                return;
            };
            watcher.next_rev =
                watcher.next_rev.max(if read_to >= last { last + 1 } else { read_to + 1 });
            watcher.sent_since_tick = true;
        }
    }

    fn read_history(&self, from: i64, to: i64) -> Result<Vec<history::RevisionEvents>, History> {
        let txn = self.store.backend.read_txn().map_err(|e| History::Failed(e.into()))?;
        let compacted = self.store.compact_rev(&txn).map_err(History::Failed)?;
        if from < compacted {
            return Err(History::Compacted(compacted));
        }
        history::events(&self.store, &txn, from, to, CATCH_UP_BATCH).map_err(History::Failed)
    }

    fn remove(&self, stream_id: StreamId, watch_id: WatchId) {
        if let Some(stream) = self.lock().streams.get_mut(&stream_id) {
            stream.watchers.remove(&watch_id);
        }
    }
}

enum History {
    Compacted(i64),
    Failed(crate::mvcc::Error),
}

impl Watcher {
    /// The events of one revision this watcher wants, shaped by its options.
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| self.range.contains(&kv.key)))
            .filter(|e| {
                let is_put = e.r#type == EventType::Put as i32;
                !(is_put && self.no_put || !is_put && self.no_delete)
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }

    /// One response, or several with `fragment` set on all but the last when the watcher
    /// asked for fragmenting and the events are too large for one message.
    fn responses(
        &self,
        watch_id: WatchId,
        revision: i64,
        events: Vec<Event>,
        max_bytes: usize,
    ) -> Vec<WatchResponse> {
        let whole = WatchResponse {
            header: Some(ResponseHeader { revision, ..Default::default() }),
            watch_id,
            events,
            ..Default::default()
        };
        if !self.fragment || whole.events.len() < 2 || whole.encoded_len() < max_bytes {
            return vec![whole];
        }
        let mut parts: Vec<WatchResponse> = Vec::new();
        let mut current = WatchResponse { header: whole.header, watch_id, ..Default::default() };
        for event in whole.events {
            let size = event.encoded_len();
            if !current.events.is_empty() && current.encoded_len() + size >= max_bytes {
                let next = WatchResponse { header: whole.header, watch_id, ..Default::default() };
                let mut done = std::mem::replace(&mut current, next);
                done.fragment = true;
                parts.push(done);
            }
            current.events.push(event);
        }
        parts.push(current);
        parts
    }
}

fn progress_response(watch_id: WatchId, revision: i64) -> WatchResponse {
    WatchResponse {
        header: Some(ResponseHeader { revision, ..Default::default() }),
        watch_id,
        ..Default::default()
    }
}

fn compacted_response(watch_id: WatchId, compact_rev: i64) -> WatchResponse {
    WatchResponse {
        header: Some(ResponseHeader::default()),
        watch_id,
        canceled: true,
        compact_revision: compact_rev,
        ..Default::default()
    }
}

fn created_failure(reason: &str, revision: i64) -> WatchResponse {
    WatchResponse {
        header: Some(ResponseHeader { revision, ..Default::default() }),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}

impl WatchStream {
    /// Handles a create request: answers `created` (or a failure) and starts the watcher.
    pub async fn create(&self, req: WatchCreateRequest) {
        let key = if req.key.is_empty() { vec![0] } else { req.key.clone() };
        let range = KeyRange::new(&key, &req.range_end);
        let hub = &self.hub;
        // Read before taking the hub lock (no store reads under it); catch-up re-checks.
        let compact = hub
            .store
            .backend
            .read_txn()
            .ok()
            .and_then(|txn| hub.store.compact_rev(&txn).ok())
            .unwrap_or(-1);
        let outcome = {
            let mut state = hub.lock();
            let last = state.last_published;
            let Some(stream) = state.streams.get_mut(&self.id) else {
                return;
            };
            let tx = stream.tx.clone();
            let failure = if matches!(&range, KeyRange::Between(start, end) if start >= end) {
                Some(ERR_EMPTY_RANGE)
            } else if req.start_revision < 0 {
                Some(ERR_COMPACTED)
            } else if req.watch_id != 0 && stream.watchers.contains_key(&req.watch_id) {
                Some(ERR_DUPLICATE_ID)
            } else {
                None
            };
            match failure {
                Some(reason) => Err((tx, created_failure(reason, last))),
                None => {
                    Ok(register(stream, &req, range, last, compact).map(|(w, c, s)| (tx, w, c, s)))
                }
            }
        };
        let (tx, watch_id, compacted, synced) = match outcome {
            Err((tx, failure)) => {
                let _ = tx.send(failure).await;
                return;
            }
            Ok(None) => return,
            Ok(Some(registered)) => registered,
        };
        let start_catch_up = compacted.is_none() && !synced;
        if let Some(compact) = compacted {
            let _ = tx.send(compacted_response(watch_id, compact)).await;
        } else if start_catch_up {
            hub.spawn_catch_up(self.id, watch_id);
        }
    }

    /// Answers a create request that may not be served (etcd's auth refusal): created and
    /// canceled at once, with watch id -1 and `reason`.
    pub async fn refuse(&self, reason: &str) {
        let refusal = {
            let state = self.hub.lock();
            let Some(stream) = state.streams.get(&self.id) else {
                return;
            };
            (stream.tx.clone(), created_failure(reason, state.last_published))
        };
        let _ = refusal.0.send(refusal.1).await;
    }

    /// Cancels a watcher; an unknown id is ignored, as etcd does.
    pub async fn cancel(&self, watch_id: WatchId) {
        let tx = {
            let mut state = self.hub.lock();
            let last = state.last_published;
            let Some(stream) = state.streams.get_mut(&self.id) else {
                return;
            };
            if stream.watchers.remove(&watch_id).is_none() {
                return;
            }
            (stream.tx.clone(), last)
        };
        let response = WatchResponse {
            header: Some(ResponseHeader { revision: tx.1, ..Default::default() }),
            watch_id,
            canceled: true,
            ..Default::default()
        };
        let _ = tx.0.send(response).await;
    }

    /// Answers a progress request once every watcher of this stream is synced. As etcd, a
    /// stream without watchers, or with one whose start revision is still ahead, gets nothing.
    pub fn request_progress(&self) {
        let mut state = self.hub.lock();
        let last = state.last_published;
        let Some(stream) = state.streams.get_mut(&self.id) else { return };
        if stream.watchers.is_empty() || stream.watchers.values().any(|w| w.next_rev > last + 1) {
            return;
        }
        if stream.watchers.values().all(|w| w.synced) {
            let _ = stream.tx.try_send(progress_response(-1, last));
        } else {
            stream.progress_pending = true;
        }
    }

    /// Sends a progress notification to each idle, synced watcher that asked for them.
    pub fn progress_tick(&self) {
        let mut state = self.hub.lock();
        let last = state.last_published;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return;
        };
        for (&watch_id, watcher) in stream.watchers.iter_mut() {
            if watcher.progress_notify && watcher.synced && !watcher.sent_since_tick {
                let _ = stream.tx.try_send(progress_response(watch_id, last));
            }
            watcher.sent_since_tick = false;
        }
    }
}

/// Adds a watcher to `stream` and queues its `created` response; returns its id, the
/// compaction revision if its start is already compacted (then it is not kept), and whether it
/// starts synced. `None` when the stream's queue is full (the client is not reading).
fn register(
    stream: &mut StreamState,
    req: &WatchCreateRequest,
    range: KeyRange,
    last: i64,
    compact: i64,
) -> Option<(WatchId, Option<i64>, bool)> {
    // Automatic ids only count up on a stream (as etcd's), so a cancelled watcher's id is
    // never handed out again while its last events may still be in flight.
    let watch_id = if req.watch_id != 0 {
        req.watch_id
    } else {
        while stream.watchers.contains_key(&stream.next_watch_id) {
            stream.next_watch_id += 1;
        }
        stream.next_watch_id += 1;
        stream.next_watch_id - 1
    };
    let next_rev = if req.start_revision == 0 { last + 1 } else { req.start_revision };
    let filters = |f: FilterType| req.filters.contains(&(f as i32));
    let watcher = Watcher {
        range,
        no_put: filters(FilterType::Noput),
        no_delete: filters(FilterType::Nodelete),
        prev_kv: req.prev_kv,
        fragment: req.fragment,
        progress_notify: req.progress_notify,
        next_rev,
        synced: next_rev > last,
        sent_since_tick: false,
    };
    // `created` must reach the client before any event of this watcher, so it is queued
    // before the watcher can receive anything (the caller holds the hub lock).
    let created = WatchResponse {
        header: Some(ResponseHeader { revision: last, ..Default::default() }),
        watch_id,
        created: true,
        ..Default::default()
    };
    stream.tx.try_send(created).ok()?;
    let synced = watcher.synced;
    let compacted = req.start_revision > 0 && req.start_revision < compact;
    if !compacted {
        stream.watchers.insert(watch_id, watcher);
    }
    Some((watch_id, compacted.then_some(compact), synced))
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.hub.lock().streams.remove(&self.id);
    }
}
