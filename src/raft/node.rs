//! The one thread that owns the `RawNode` and every LMDB write transaction.
//!
//! It runs raft-rs's Ready loop in the documented order (persist, send, apply, advance) and
//! knows nothing about keys: new log entries and the hard state are appended to the
//! write-ahead log and flushed, then committed to LMDB (unflushed) in the same write
//! transaction as the committed entries' effects, which go to a [`StateMachine`]; callers are
//! answered only after that. Everything that arrived while the previous Ready was being
//! written is proposed together, so one flush serves a whole batch. The store is checkpointed
//! in the background every [`CHECKPOINT_INTERVAL`].
//!
//! A single voter commits an entry by persisting it, so a lone leader applies the entries of a
//! Ready in the very transaction that persists them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heed::RwTxn;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType,
};
use raft::storage::MemStorage;
use raft::{RawNode, SnapshotStatus, StateRole, Storage};
use tokio::sync::oneshot;

use super::storage::{encode_record, snapshot_metadata, RaftLog};
use super::wal::Wal;
use crate::backend::{Backend, StoreCopy};

/// The replicated state machine fed by committed entries.
pub trait StateMachine: Send + 'static {
    type Output: Send + 'static;

    /// Applies the committed entry `index` carrying `data` inside `txn`. Must be deterministic:
    /// every member applies the same entries to the same state.
    fn apply(&mut self, txn: &mut RwTxn, index: u64, data: &[u8]) -> Self::Output;

    /// Called once the transaction holding the last applied entries committed, before any
    /// caller is answered: the place to publish their effects (watch events).
    fn committed(&mut self) {}

    /// Applies a committed membership change (raft has already applied it to its
    /// configuration); `change.context` is what the proposer attached.
    fn apply_conf_change(
        &mut self,
        txn: &mut RwTxn,
        index: u64,
        change: &ConfChange,
    ) -> Self::Output;

    /// Called once a store copy from the leader replaced the whole state: whatever the
    /// state machine keeps in memory must be rebuilt from the store.
    fn restored(&mut self) {}
}

/// Where the raft thread sends messages for other members. Must not block.
pub trait MessageSink: Send + 'static {
    fn send(&self, messages: Vec<Message>);
}

/// Why a proposal or a read barrier got no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("proposal dropped")]
    Dropped,
    #[error("raft node stopped")]
    Stopped,
    #[error("this member is not the leader")]
    NotLeader,
    #[error("the learner is not in sync with the leader")]
    LearnerNotReady,
    #[error("the leader changed")]
    LeaderChanged,
}

type Reply<T> = oneshot::Sender<Result<T, ProposeError>>;

/// Requests to the raft thread.
pub enum Input<O> {
    /// Replicate `data`; the reply carries what the state machine returned for it.
    Propose { data: Vec<u8>, reply: Reply<O> },
    /// Linearizable-read barrier: replies once this member has applied everything committed
    /// before the request arrived (raft's ReadIndex).
    ReadIndex { reply: Reply<u64> },
    /// A message from another member.
    Step(Box<Message>),
    /// Messages to this member were lost.
    Unreachable(u64),
    /// A snapshot for this member was not delivered.
    SnapshotFailed(u64),
    /// A snapshot for this member was delivered.
    SnapshotSent(u64),
    /// Hand leadership to this member (the leader only).
    TransferLeader(u64),
    /// Rewrite the store compacted (etcd's Defragment; this member only). Done on the raft
    /// thread because it is the only writer: no write is in flight meanwhile.
    Defragment { reply: oneshot::Sender<heed::Result<()>> },
    /// Replicate a membership change. A promotion (`AddNode` of a learner) is checked by
    /// the leader first: the learner must have 90% of the leader's log, as etcd requires.
    ProposeConfChange { change: ConfChange, promotion: bool, reply: Reply<O> },
    /// A store copy from the leader, received into `dir`, for a member behind the leader's
    /// compacted log; `message` is the leader's snapshot message.
    InstallSnapshot { message: Box<Message>, dir: std::path::PathBuf },
    /// Stop after persisting what is already accepted (the transport keeps senders alive,
    /// so the thread cannot wait for every sender to go).
    Stop,
}

/// Raft facts the rest of the server reads without asking the raft thread.
#[derive(Debug, Default)]
pub struct NodeStatus {
    pub term: AtomicU64,
    pub leader: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
    /// This member is leader and the only voter: everything acknowledged is already applied
    /// here, so a linearizable read needs no ReadIndex round trip.
    pub lone_leader: AtomicBool,
    /// This member is a learner in the applied configuration.
    pub is_learner: AtomicBool,
    /// Times a new leader became known (etcd's `leader_changes_seen_total`).
    pub leader_changes: AtomicU64,
    /// Proposals made here and not answered yet.
    pub pending: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// The configuration a fresh data dir starts with (ignored once raft state exists).
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact the raft log once this many entries were applied since its start.
    pub snapshot_count: u64,
    /// Entries kept behind the applied index when compacting, for slow followers.
    pub catch_up_entries: u64,
}

/// A running raft thread.
pub struct Running<O> {
    /// Requests to the node; the thread stops once every clone is dropped.
    pub inputs: Sender<Input<O>>,
    pub status: Arc<NodeStatus>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the raft thread; `wal` is the write-ahead log [`super::storage::recover`] opened.
pub fn spawn<S: StateMachine>(
    config: NodeConfig,
    backend: Backend,
    wal: Wal,
    state_machine: S,
    sink: Box<dyn MessageSink>,
) -> Result<Running<S::Output>, raft::Error> {
    let (inputs, rx) = std::sync::mpsc::channel();
    let status = Arc::new(NodeStatus::default());
    let mut node = Node::new(config, backend, wal, state_machine, status.clone(), sink)?;
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || node.run(rx))
        .expect("spawn raft thread");
    Ok(Running { inputs, status, thread })
}

struct Node<S: StateMachine> {
    raw: RawNode<MemStorage>,
    log: RaftLog,
    wal: Wal,
    backend: Backend,
    state_machine: S,
    config: NodeConfig,
    status: Arc<NodeStatus>,
    sink: Box<dyn MessageSink>,
    applied: u64,
    next_context: u64,
    proposals: HashMap<u64, Reply<S::Output>>,
    /// Proposals raft refused because no leader is known; proposed again once one is.
    waiting_for_leader: Vec<(Vec<u8>, Reply<S::Output>)>,
    ticks: u64,
    stopping: bool,
    /// This member's removal was applied: it stops, as etcd does.
    removed: bool,
    /// A received store copy handed to raft, installed if raft accepts its snapshot.
    pending_snapshot: Option<(std::path::PathBuf, StoreCopy)>,
    /// Read barriers not yet handed to raft (no leader, or no commit in this term yet).
    reads_queued: Vec<Reply<u64>>,
    /// Read barriers handed to raft, by request context.
    reads_in_raft: HashMap<u64, Vec<Reply<u64>>>,
    /// Read barriers with a read index, waiting for the applied index to reach it.
    reads_waiting_apply: Vec<(u64, Vec<Reply<u64>>)>,
    /// The last leader known (none until the first is elected).
    known_leader: u64,
    /// Committed entries a follower has not applied yet (see [`Self::may_defer`]).
    deferred: Vec<Entry>,
    /// When the deferred entries are applied at the latest.
    deferred_until: Option<Instant>,
}

/// How long a follower may keep committed entries unapplied, waiting for the next entries
/// from the leader to apply them in the transaction that persists those.
const APPLY_DEFERRAL: Duration = Duration::from_millis(2);

/// How often the store is checkpointed (etcd commits its backend every 100 ms too).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

impl<S: StateMachine> Node<S> {
    fn new(
        config: NodeConfig,
        backend: Backend,
        wal: Wal,
        state_machine: S,
        status: Arc<NodeStatus>,
        sink: Box<dyn MessageSink>,
    ) -> Result<Self, raft::Error> {
        let log = RaftLog::new(backend.clone());
        let loaded = log.load().map_err(store_error)?;
        let storage = if loaded.initialized {
            loaded.storage
        } else {
            let conf_state = ConfState::from((config.voters.clone(), config.learners.clone()));
            let mut txn = backend.write_txn().map_err(store_error)?;
            log.set_conf_state(&mut txn, &conf_state).map_err(store_error)?;
            txn.commit_durable().map_err(store_error)?;
            MemStorage::new_with_conf_state(conf_state)
        };
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: loaded.applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&raft_config, storage, &logger)?;
        if raw.raft.prs().is_singleton() && raw.raft.prs().conf().voters().contains(config.id) {
            // Nobody else can vote: become leader now rather than after an election timeout.
            raw.campaign()?;
        }
        Ok(Self {
            raw,
            log,
            wal,
            backend,
            state_machine,
            status,
            sink,
            applied: loaded.applied,
            next_context: rand::random::<u64>() >> 1,
            proposals: HashMap::new(),
            waiting_for_leader: Vec::new(),
            ticks: 0,
            stopping: false,
            removed: false,
            pending_snapshot: None,
            reads_queued: Vec::new(),
            reads_in_raft: HashMap::new(),
            reads_waiting_apply: Vec::new(),
            known_leader: raft::INVALID_ID,
            deferred: Vec::new(),
            deferred_until: None,
            config,
        })
    }

    fn run(&mut self, inputs: Receiver<Input<S::Output>>) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let mut wait = next_tick.saturating_duration_since(Instant::now());
            if let Some(until) = self.deferred_until {
                wait = wait.min(until.saturating_duration_since(Instant::now()));
            }
            match inputs.recv_timeout(wait) {
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Batch whatever else is already waiting into the same Ready.
            for input in inputs.try_iter().take(4096) {
                self.handle(input);
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                self.on_tick();
                next_tick += self.config.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.config.tick;
                }
            }
            self.notice_new_leader();
            self.issue_reads();
            let due = self.deferred_until.is_some_and(|until| Instant::now() >= until);
            let applied = if due { self.apply_deferred() } else { Ok(()) };
            let ready = applied.and_then(|()| self.on_ready());
            let checkpointed = ready.and_then(|()| {
                self.backend.checkpoint_if_due(self.wal.last_seq(), CHECKPOINT_INTERVAL)
            });
            if let Err(err) = checkpointed {
                // A failed LMDB commit leaves the durable state unknown: stop rather than
                // answer anyone, as etcd panics on a backend failure.
                panic!("raft persistence failed: {err}");
            }
            if self.removed {
                tracing::warn!("the member has been permanently removed from the cluster");
                // etcd exits (status 0) once its removal is applied.
                std::process::exit(0);
            }
            if self.stopping {
                break;
            }
        }
        for (_, reply) in self.proposals.drain() {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
        // Nothing to redo at the next start.
        if let Err(err) = self.backend.checkpoint(Some(self.wal.last_seq())) {
            tracing::warn!(error = %err, "final checkpoint failed; the next start redoes the log");
        }
    }

    fn handle(&mut self, input: Input<S::Output>) {
        match input {
            Input::Propose { data, reply } => self.propose(data, reply),
            Input::ReadIndex { reply } => self.reads_queued.push(reply),
            Input::InstallSnapshot { message, dir } => self.offer_snapshot(*message, dir),
            Input::Step(message) => {
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    // Snapshots arrive only with their data, as InstallSnapshot.
                    return;
                }
                // Messages of an older term or from removed members are refused by raft.
                let _ = self.raw.step(*message);
            }
            Input::Unreachable(id) => self.raw.report_unreachable(id),
            Input::SnapshotFailed(id) => self.raw.report_snapshot(id, SnapshotStatus::Failure),
            Input::SnapshotSent(id) => self.raw.report_snapshot(id, SnapshotStatus::Finish),
            Input::TransferLeader(id) => self.raw.transfer_leader(id),
            Input::Defragment { reply } => {
                let started = Instant::now();
                let result = self
                    .backend
                    .checkpoint(Some(self.wal.last_seq()))
                    .and_then(|()| self.backend.defragment());
                metrics::histogram!(crate::metrics::DEFRAG).record(started.elapsed());
                tracing::info!(took = ?started.elapsed(), ok = result.is_ok(), "defragmented the store");
                let _ = reply.send(result);
            }
            Input::ProposeConfChange { change, promotion, reply } => {
                self.propose_conf_change(change, promotion, reply)
            }
            Input::Stop => self.stopping = true,
        }
    }

    /// Hands raft the snapshot described by the received store copy (its own applied index,
    /// which may be past what the leader's message named: the copy was taken later).
    fn offer_snapshot(&mut self, mut message: Message, dir: std::path::PathBuf) {
        let opened = StoreCopy::open(&dir).and_then(|copy| {
            let metadata = snapshot_metadata(&copy)?;
            Ok((copy, metadata))
        });
        let (copy, metadata) = match opened {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(error = %err, "unreadable store copy from the leader");
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
        };
        if metadata.index <= self.applied || metadata.term == 0 {
            drop(copy);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        tracing::info!(
            from = format!("{:x}", message.from).as_str(),
            index = metadata.index,
            term = metadata.term,
            "received a store copy from the leader; installing it"
        );
        let snapshot = message.mut_snapshot();
        snapshot.set_metadata(metadata);
        snapshot.data = Vec::new().into();
        if let Some((old, _)) = self.pending_snapshot.replace((dir, copy)) {
            let _ = std::fs::remove_dir_all(old);
        }
        let _ = self.raw.step(message);
    }

    fn propose(&mut self, data: Vec<u8>, reply: Reply<S::Output>) {
        if reply.is_closed() {
            return; // the caller gave up
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            // As etcd, a proposal waits for a leader until the caller's request timeout.
            self.waiting_for_leader.push((data, reply));
            return;
        }
        let context = self.next_context;
        self.next_context = self.next_context.wrapping_add(1);
        match self.raw.propose(context.to_be_bytes().to_vec(), data) {
            Ok(()) => {
                self.proposals.insert(context, reply);
            }
            Err(_) => {
                let _ = reply.send(Err(ProposeError::Dropped));
            }
        }
    }

    fn propose_conf_change(
        &mut self,
        change: ConfChange,
        promotion: bool,
        reply: Reply<S::Output>,
    ) {
        if promotion {
            let raft = &self.raw.raft;
            if raft.state != StateRole::Leader {
                let _ = reply.send(Err(ProposeError::NotLeader));
                return;
            }
            let leader_match = raft.prs().get(raft.id).map_or(0, |p| p.matched);
            let learner_match = raft.prs().get(change.node_id).map_or(0, |p| p.matched);
            if (learner_match as f64) < (leader_match as f64) * 0.9 {
                let _ = reply.send(Err(ProposeError::LearnerNotReady));
                return;
            }
        }
        let context = self.next_context;
        self.next_context = self.next_context.wrapping_add(1);
        match self.raw.propose_conf_change(context.to_be_bytes().to_vec(), change) {
            Ok(()) => {
                self.proposals.insert(context, reply);
            }
            Err(_) => {
                let _ = reply.send(Err(ProposeError::Dropped));
            }
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        if self.raw.raft.leader_id != raft::INVALID_ID && !self.waiting_for_leader.is_empty() {
            for (data, reply) in std::mem::take(&mut self.waiting_for_leader) {
                self.propose(data, reply);
            }
        }
        if self.ticks % 10 == 0 {
            // Requests lost with a failed leader are never answered by raft; forget those
            // whose caller timed out.
            self.proposals.retain(|_, reply| !reply.is_closed());
            self.waiting_for_leader.retain(|(_, reply)| !reply.is_closed());
            self.reads_queued.retain(|reply| !reply.is_closed());
            self.reads_in_raft.retain(|_, replies| {
                replies.retain(|reply| !reply.is_closed());
                !replies.is_empty()
            });
        }
    }

    /// As etcd, read barriers waiting when a new leader takes over fail with "leader
    /// changed" rather than wait out the request timeout: a ReadIndex round sent to a failed
    /// leader is never answered, and clients retry such errors on their own.
    fn notice_new_leader(&mut self) {
        let leader = self.raw.raft.leader_id;
        if leader == raft::INVALID_ID || leader == self.known_leader {
            return;
        }
        let first = self.known_leader == raft::INVALID_ID;
        self.known_leader = leader;
        if first {
            return;
        }
        let waiting = self.reads_in_raft.drain().flat_map(|(_, replies)| replies);
        for reply in waiting.chain(self.reads_queued.drain(..)) {
            let _ = reply.send(Err(ProposeError::LeaderChanged));
        }
    }

    /// Hands queued read barriers to raft as one ReadIndex request. raft-rs silently drops a
    /// ReadIndex before the leader committed an entry of its term, so wait for that first.
    fn issue_reads(&mut self) {
        if self.reads_queued.is_empty()
            || self.raw.raft.leader_id == raft::INVALID_ID
            || !self.raw.raft.commit_to_current_term()
        {
            return;
        }
        let context = self.next_context;
        self.next_context = self.next_context.wrapping_add(1);
        self.raw.read_index(context.to_be_bytes().to_vec());
        self.reads_in_raft.insert(context, std::mem::take(&mut self.reads_queued));
    }

    fn on_ready(&mut self) -> heed::Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // A leader may send before persisting (raft thesis 10.2.1); a follower's messages
        // (votes, acknowledgements) come back from `persisted_messages` below.
        self.sink.send(ready.take_messages());
        let snapshot = ready.snapshot().clone();
        let installing = if snapshot.is_empty() {
            None
        } else {
            Some(self.pending_snapshot.take().expect("raft installs only offered snapshots"))
        };
        let mut committed = ready.take_committed_entries();
        let deferring = installing.is_none() && self.may_defer(&ready, &committed);
        if deferring {
            // Only the commit index moved: raft's mirror learns it now, the store with the
            // deferred entries.
            self.deferred.append(&mut committed);
            self.deferred_until.get_or_insert_with(|| Instant::now() + APPLY_DEFERRAL);
            if let Some(hs) = ready.hs() {
                self.raw.store().wl().set_hardstate(hs.clone());
            }
        } else if !self.deferred.is_empty() {
            self.deferred_until = None;
            let later = std::mem::replace(&mut committed, std::mem::take(&mut self.deferred));
            committed.extend(later);
        }
        let lone_leader =
            self.raw.raft.state == StateRole::Leader && self.raw.raft.prs().is_singleton();

        let mut outputs = Vec::new();
        // A Ready holding only messages (heartbeats and their answers, ReadIndex rounds)
        // changes nothing durable: no transaction, so no fsync delays the answer.
        let durable = installing.is_some()
            || !ready.entries().is_empty()
            || !committed.is_empty()
            || (ready.hs().is_some() && !deferring);
        if durable {
            self.persist_ready(
                &mut ready,
                &snapshot,
                installing,
                &committed,
                lone_leader,
                &mut outputs,
            )?;
        }
        self.sink.send(ready.take_persisted_messages());
        // Status must show the commit before any caller hears of it.
        self.publish_status();
        self.answer(outputs);
        for state in ready.take_read_states() {
            let context =
                u64::from_be_bytes(state.request_ctx.as_slice().try_into().unwrap_or_default());
            if let Some(waiters) = self.reads_in_raft.remove(&context) {
                self.reads_waiting_apply.push((state.index, waiters));
            }
        }
        if !self.reads_waiting_apply.is_empty() && !self.deferred.is_empty() {
            self.apply_deferred()?;
        }

        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.store().wl().mut_hard_state().commit = commit;
        }
        self.sink.send(light.take_messages());
        let committed = light.take_committed_entries();
        if committed.iter().any(|e| e.index > self.applied) {
            self.apply_in_own_txn(&committed)?;
        }
        let applied = self.applied.min(self.raw.raft.raft_log.committed);
        self.note_applied(applied);
        self.answer_reads();
        self.compact_log()?;
        self.publish_status();
        Ok(())
    }

    /// Whether a follower's Ready may leave its committed entries unapplied for a moment.
    /// A follower learns that entries committed from the leader's next message, usually one
    /// carrying nothing else; applying them at once would cost a commit (and its flush) of
    /// its own, where etcd's followers apply without one. Deferred, they are applied by the
    /// transaction that persists the next entries, or after [`APPLY_DEFERRAL`]. Never when
    /// someone here waits for them: a read barrier, a proposal made through this member, or
    /// a membership change; and never on a leader, whose callers wait for its apply.
    fn may_defer(&self, ready: &raft::Ready, committed: &[Entry]) -> bool {
        let stored = self.raw.store().rl().hard_state().clone();
        let vote_or_term_moved =
            ready.hs().is_some_and(|hs| hs.term != stored.term || hs.vote != stored.vote);
        let awaited = |entry: &Entry| {
            entry.entry_type != EntryType::EntryNormal
                || <[u8; 8]>::try_from(entry.context.as_ref())
                    .is_ok_and(|c| self.proposals.contains_key(&u64::from_be_bytes(c)))
        };
        self.raw.raft.state == StateRole::Follower
            && !committed.is_empty()
            && ready.entries().is_empty()
            && ready.snapshot().is_empty()
            && !vote_or_term_moved
            && self.reads_waiting_apply.is_empty()
            && self.deferred.len() + committed.len() <= 1024
            && !committed.iter().any(awaited)
    }

    /// Tells raft what is applied. `advance` already counted every committed entry a Ready
    /// handed out as applied, deferred ones included, and raft refuses to go back.
    fn note_applied(&mut self, applied: u64) {
        if applied > self.raw.raft.raft_log.applied {
            self.raw.advance_apply_to(applied);
        }
    }

    /// Applies the entries a follower deferred, in a transaction of their own.
    fn apply_deferred(&mut self) -> heed::Result<()> {
        self.deferred_until = None;
        let entries = std::mem::take(&mut self.deferred);
        if entries.is_empty() {
            return Ok(());
        }
        self.apply_in_own_txn(&entries)?;
        self.note_applied(self.applied.min(self.raw.raft.raft_log.committed));
        self.answer_reads();
        Ok(())
    }

    /// Applies committed entries, already durable in the log, in a transaction that persists
    /// nothing else: a crash may undo it, and raft then applies them again.
    fn apply_in_own_txn(&mut self, entries: &[Entry]) -> heed::Result<()> {
        let mut outputs = Vec::new();
        let backend = self.backend.clone();
        let mut txn = backend.write_txn()?;
        self.apply_entries(&mut txn, entries, &mut outputs)?;
        // The mirror's hard state, not raft's: raft may hold entries (and a commit index
        // covering them) that are not persisted yet.
        let mut hard_state = self.raw.store().rl().hard_state().clone();
        hard_state.commit = hard_state.commit.max(self.applied);
        self.log.set_hard_state(&mut txn, &hard_state)?;
        self.log.set_applied(&mut txn, self.applied)?;
        let started = Instant::now();
        txn.commit()?;
        metrics::histogram!(crate::metrics::BACKEND_COMMIT).record(started.elapsed());
        self.state_machine.committed();
        // Status must show the commit before any caller hears of it.
        self.publish_status();
        self.answer(outputs);
        Ok(())
    }

    /// Applies a membership change to raft's configuration and to the state machine; the
    /// new configuration is persisted in the same transaction.
    fn apply_conf_change(&mut self, txn: &mut RwTxn, entry: &Entry) -> heed::Result<S::Output> {
        let change = ConfChange::parse_from_bytes(&entry.data).expect("corrupt conf change entry");
        match self.raw.apply_conf_change(&change) {
            Ok(conf_state) => {
                self.log.set_conf_state(txn, &conf_state)?;
                self.raw.store().wl().set_conf_state(conf_state);
            }
            // A change raft refuses (e.g. removing the last voter) leaves the configuration
            // as it was; the membership record follows the same rule in the state machine.
            Err(err) => tracing::warn!(index = entry.index, error = %err, "conf change refused"),
        }
        if change.node_id == self.config.id
            && change.get_change_type() == ConfChangeType::RemoveNode
        {
            self.removed = true;
        }
        Ok(self.state_machine.apply_conf_change(txn, entry.index, &change))
    }

    /// Persists what a Ready holds (a snapshot to install, new entries, the hard state) and
    /// applies its committed entries in the same transaction; also updates the in-memory
    /// mirror once the transaction committed.
    fn persist_ready(
        &mut self,
        ready: &mut raft::Ready,
        snapshot: &raft::prelude::Snapshot,
        installing: Option<(std::path::PathBuf, StoreCopy)>,
        committed: &[Entry],
        lone_leader: bool,
        outputs: &mut Vec<(u64, S::Output)>,
    ) -> heed::Result<()> {
        // Raft needs the log, the term and the vote durable before it answers anyone; the
        // commit index and what was applied can be redone from the log after a crash.
        let hard_state = self.raw.raft.hard_state();
        let before = self.raw.store().rl().hard_state().clone();
        let must_sync = installing.is_some()
            || !ready.entries().is_empty()
            || hard_state.term != before.term
            || hard_state.vote != before.vote;
        if must_sync && installing.is_none() {
            // Durable before anyone hears of it, and before readers can see its effects.
            let mut logged = hard_state.clone();
            logged.commit = logged.commit.max(self.applied);
            let record = encode_record(ready.entries(), &logged);
            let started = Instant::now();
            self.wal.append(&record, self.backend.durable_wal_seq()).map_err(heed::Error::Io)?;
            metrics::histogram!(crate::metrics::WAL_FSYNC).record(started.elapsed());
            // A follower's acknowledgements and votes need only the log durable: they leave
            // now, and the store's commit below overlaps with the leader's round trip.
            self.sink.send(ready.take_persisted_messages());
        }

        let backend = self.backend.clone();
        let mut txn = backend.write_txn()?;
        if let Some((_, copy)) = &installing {
            self.log.install(&mut txn, copy, snapshot.get_metadata())?;
            self.applied = snapshot.get_metadata().index;
        }
        self.log.append(&mut txn, ready.entries())?;
        self.apply_entries(&mut txn, committed, outputs)?;
        // Only when nothing lies between what is applied and these entries: after a restart
        // the log may hold entries the logged commit index did not cover yet (they commit
        // with the new term's first entry, and are applied after `advance`).
        let follows = ready.entries().first().is_some_and(|e| e.index == self.applied + 1);
        if lone_leader && follows {
            let normal =
                ready.entries().iter().take_while(|e| e.entry_type == EntryType::EntryNormal);
            let normal: Vec<Entry> = normal.cloned().collect();
            self.apply_entries(&mut txn, &normal, outputs)?;
        }
        let mut hard_state = hard_state;
        hard_state.commit = hard_state.commit.max(self.applied);
        self.log.set_hard_state(&mut txn, &hard_state)?;
        self.log.set_applied(&mut txn, self.applied)?;
        let started = Instant::now();
        txn.commit()?;
        metrics::histogram!(crate::metrics::BACKEND_COMMIT).record(started.elapsed());
        if installing.is_some() {
            // An installed copy cannot be redone from the write-ahead log: the whole store is
            // made durable instead, with this Ready's entries and hard state. (Logging them
            // alone would let a crash redo entries after the copy onto the log before it.)
            self.backend.checkpoint(Some(self.wal.last_seq()))?;
        }
        if let Some((dir, copy)) = installing {
            drop(copy);
            let _ = std::fs::remove_dir_all(dir);
            self.state_machine.restored();
            tracing::info!(index = self.applied, "installed the store copy from the leader");
        }
        self.state_machine.committed();

        let store = self.raw.store();
        let mut core = store.wl();
        if !snapshot.is_empty() {
            core.apply_snapshot(snapshot.clone()).expect("a newer snapshot replaces the mirror");
        }
        core.append(ready.entries()).expect("persisted entries extend the mirror");
        if let Some(hs) = ready.hs() {
            core.set_hardstate(hs.clone());
        }
        Ok(())
    }

    fn apply_entries(
        &mut self,
        txn: &mut RwTxn,
        entries: &[Entry],
        outputs: &mut Vec<(u64, S::Output)>,
    ) -> heed::Result<()> {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            match entry.entry_type {
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    let output = self.state_machine.apply(txn, entry.index, &entry.data);
                    if let Ok(context) = <[u8; 8]>::try_from(entry.context.as_ref()) {
                        outputs.push((u64::from_be_bytes(context), output));
                    }
                }
                // The empty entry a new leader appends, committed to learn the commit index.
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    let output = self.apply_conf_change(txn, entry)?;
                    if let Ok(context) = <[u8; 8]>::try_from(entry.context.as_ref()) {
                        outputs.push((u64::from_be_bytes(context), output));
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    // rsetcd proposes only single changes (etcd's API changes one member).
                    tracing::warn!(index = entry.index, "joint membership change entry skipped");
                }
            }
            self.applied = entry.index;
        }
        Ok(())
    }

    fn answer(&mut self, outputs: Vec<(u64, S::Output)>) {
        for (context, output) in outputs {
            if let Some(reply) = self.proposals.remove(&context) {
                let _ = reply.send(Ok(output));
            }
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.applied;
        self.reads_waiting_apply.retain_mut(|(index, waiters)| {
            if *index > applied {
                return true;
            }
            for reply in waiters.drain(..) {
                let _ = reply.send(Ok(applied));
            }
            false
        });
    }

    fn compact_log(&mut self) -> heed::Result<()> {
        let first = self.raw.store().first_index().unwrap_or(1);
        if self.applied < first + self.config.snapshot_count {
            return Ok(());
        }
        let first_kept = self.applied.saturating_sub(self.config.catch_up_entries).max(first);
        let Ok(prev_term) = self.raw.raft.raft_log.term(first_kept - 1) else {
            return Ok(());
        };
        let mut txn = self.backend.write_txn()?;
        self.log.compact(&mut txn, first_kept, prev_term)?;
        // Unflushed: after a crash the log is compacted again.
        txn.commit()?;
        self.raw.store().wl().compact(first_kept).expect("compaction below the applied index");
        Ok(())
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        let previous = self.status.leader.load(Ordering::Relaxed);
        if raft.leader_id != previous && raft.leader_id != raft::INVALID_ID {
            self.status.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        self.status.pending.store(self.proposals.len() as u64, Ordering::Relaxed);
        self.status.term.store(raft.term, Ordering::Relaxed);
        self.status.leader.store(raft.leader_id, Ordering::Relaxed);
        self.status.commit.store(raft.raft_log.committed.max(self.applied), Ordering::Relaxed);
        self.status.applied.store(self.applied, Ordering::Relaxed);
        let lone = raft.state == StateRole::Leader && raft.prs().is_singleton();
        self.status.lone_leader.store(lone, Ordering::Release);
        let learner = raft.prs().conf().learners().contains(&raft.id);
        self.status.is_learner.store(learner, Ordering::Relaxed);
    }
}

fn store_error(err: heed::Error) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(err)))
}
