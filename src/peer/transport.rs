//! Streams raft messages to the other members over gRPC.
//!
//! The raft thread hands every outgoing message to [`Outbound`], which never blocks it. A
//! router task sorts them by destination into one bounded queue per peer; each peer has a
//! task holding one client stream (`Peer.Raft`) open, reconnecting after a failure. A full
//! queue or a broken stream drops messages and tells raft the peer is unreachable: raft
//! resends what matters (log entries are retried from the peer's match index, heartbeats
//! repeat), so a slow or dead peer costs the others nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::pb::rsetcdpb::peer_client::PeerClient;
use crate::pb::rsetcdpb::{RaftBatch, SnapshotChunk};
use crate::raft::MessageSink;

/// Messages waiting for one peer's stream; beyond this the peer is treated as unreachable.
const PEER_QUEUE: usize = 4096;
/// Messages sent in one stream item.
const BATCH: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// What the transport reports back to the raft thread.
pub enum Inbound {
    /// A message that arrived from a peer.
    Message(Box<Message>),
    /// Messages to this peer were lost; raft should probe it rather than stream to it.
    Unreachable(u64),
    /// A snapshot for this peer could not be delivered.
    SnapshotFailed(u64),
    /// A snapshot for this peer was delivered.
    SnapshotSent(u64),
    /// A store copy received from the leader, with its snapshot message.
    Snapshot { message: Box<Message>, dir: PathBuf },
}

/// Delivers [`Inbound`] events to the raft thread.
pub type Deliver = Arc<dyn Fn(Inbound) + Send + Sync>;

/// Finds a member's peer URL in the current membership.
pub type Resolve = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// The other members of the current membership (each gets a stream, used or not, so that
/// connectivity is known as etcd knows it).
pub type Peers = Arc<dyn Fn() -> Vec<u64> + Send + Sync>;

/// Since when each peer's stream has been connected without interruption: etcd's
/// "active since", which its membership changes consult before risking quorum.
#[derive(Debug, Clone, Default)]
pub struct PeerHealth {
    since: Arc<std::sync::Mutex<HashMap<u64, std::time::Instant>>>,
}

impl PeerHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, std::time::Instant>> {
        self.since.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn active_since(&self, id: u64) -> Option<std::time::Instant> {
        self.lock().get(&id).copied()
    }

    fn connected(&self, id: u64) {
        self.lock().entry(id).or_insert_with(std::time::Instant::now);
    }

    fn disconnected(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Writes a consistent copy of the whole store, applied at least up to the given index, to a
/// new file and returns its path (blocking).
pub type CopyStore = Arc<dyn Fn(u64) -> Result<PathBuf, String> + Send + Sync>;

/// Bytes per snapshot stream item.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The raft thread's end of the transport.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Vec<Message>>,
}

impl MessageSink for Outbound {
    fn send(&self, messages: Vec<Message>) {
        if !messages.is_empty() {
            // Only fails once the router stopped with the server.
            let _ = self.tx.send(messages);
        }
    }
}

/// The router's end, to pass to [`Transport::start`].
pub struct Pending(mpsc::UnboundedReceiver<Vec<Message>>);

pub fn channel() -> (Outbound, Pending) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Outbound { tx }, Pending(rx))
}

/// What every stream this member opens says about it.
#[derive(Clone)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: u64,
}

/// Where the router finds members and reports back.
#[derive(Clone)]
pub struct Links {
    pub identity: Identity,
    pub resolve: Resolve,
    pub peers: Peers,
    pub deliver: Deliver,
    pub copy_store: CopyStore,
    pub health: PeerHealth,
}

/// Starts the router; it runs until every [`Outbound`] is dropped.
pub fn start(pending: Pending, links: Links) -> tokio::task::JoinHandle<()> {
    tokio::spawn(route(pending.0, links))
}

async fn route(mut rx: mpsc::UnboundedReceiver<Vec<Message>>, links: Links) {
    let Links { identity, resolve, peers: members, deliver, copy_store, health } = links;
    let mut peers: HashMap<u64, mpsc::Sender<Message>> = HashMap::new();
    let open = |to: u64| {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let stream = PeerStream {
            to,
            identity: identity.clone(),
            resolve: resolve.clone(),
            deliver: deliver.clone(),
            health: health.clone(),
        };
        tokio::spawn(stream.run(rx));
        tx
    };
    let mut membership_check = tokio::time::interval(Duration::from_millis(500));
    loop {
        let messages = tokio::select! {
            next = rx.recv() => match next {
                Some(messages) => messages,
                None => return,
            },
            _ = membership_check.tick() => {
                // A stream per member, also idle ones; a removed member's stream ends.
                let current = members();
                peers.retain(|id, _| current.contains(id));
                for id in current {
                    peers.entry(id).or_insert_with(|| open(id));
                }
                continue;
            }
        };
        for message in messages {
            let to = message.to;
            if message.get_msg_type() == MessageType::MsgSnapshot {
                let sender = SnapshotSender {
                    identity: identity.clone(),
                    resolve: resolve.clone(),
                    copy_store: copy_store.clone(),
                };
                let deliver = deliver.clone();
                tokio::spawn(async move {
                    match sender.send(message).await {
                        Ok(()) => deliver(Inbound::SnapshotSent(to)),
                        Err(err) => {
                            tracing::warn!(
                                peer = format!("{to:x}").as_str(),
                                error = err.as_str(),
                                "failed to send a store copy to a peer"
                            );
                            deliver(Inbound::SnapshotFailed(to));
                            deliver(Inbound::Unreachable(to));
                        }
                    }
                });
                continue;
            }
            let queue = peers.entry(to).or_insert_with(|| open(to));
            if let Err(err) = queue.try_send(message) {
                let message = match err {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
                };
                report_lost(&deliver, &message);
            }
        }
    }
}

fn report_lost(deliver: &Deliver, message: &Message) {
    if message.get_msg_type() == MessageType::MsgSnapshot {
        deliver(Inbound::SnapshotFailed(message.to));
    }
    deliver(Inbound::Unreachable(message.to));
}

/// One peer's outgoing stream.
struct PeerStream {
    to: u64,
    identity: Identity,
    resolve: Resolve,
    deliver: Deliver,
    health: PeerHealth,
}

impl PeerStream {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut logged_failure = false;
        loop {
            let failure = match self.connect().await {
                Ok(client) => {
                    self.health.connected(self.to);
                    if logged_failure {
                        tracing::info!(
                            peer = format!("{:x}", self.to).as_str(),
                            "reconnected the raft stream to a peer"
                        );
                        logged_failure = false;
                    }
                    self.stream(client, &mut queue).await
                }
                Err(err) => Some(err),
            };
            self.health.disconnected(self.to);
            let Some(failure) = failure else {
                return; // the router stopped
            };
            if !logged_failure {
                tracing::warn!(
                    peer = format!("{:x}", self.to).as_str(),
                    error = failure.as_str(),
                    "lost the raft stream to a peer; reconnecting"
                );
                logged_failure = true;
            }
            // Whatever queued meanwhile would arrive stale: drop it and let raft resend.
            while let Ok(message) = queue.try_recv() {
                report_lost(&self.deliver, &message);
            }
            self.deliver.as_ref()(Inbound::Unreachable(self.to));
            if queue.is_closed() {
                return; // the router stopped
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    async fn connect(&self) -> Result<PeerClient<Channel>, String> {
        let url = (self.resolve)(self.to).ok_or_else(|| "not a member".to_string())?;
        let endpoint = super::dial::endpoint(&url)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| format!("connecting {url}: {e}"))?;
        Ok(PeerClient::new(channel).max_encoding_message_size(usize::MAX))
    }

    /// Streams until the stream breaks (the reason) or the router stops (`None`).
    async fn stream(
        &self,
        mut client: PeerClient<Channel>,
        queue: &mut mpsc::Receiver<Message>,
    ) -> Option<String> {
        let (tx, rx) = mpsc::channel::<RaftBatch>(16);
        let mut call = Box::pin(client.raft(ReceiverStream::new(rx)));
        loop {
            tokio::select! {
                ended = &mut call => {
                    return Some(match ended {
                        Ok(_) => "the peer closed the stream".to_string(),
                        Err(status) => status.message().to_string(),
                    });
                }
                next = queue.recv() => {
                    let first = next?;
                    let mut messages = vec![first];
                    while messages.len() < BATCH {
                        match queue.try_recv() {
                            Ok(message) => messages.push(message),
                            Err(_) => break,
                        }
                    }
                    let batch = RaftBatch {
                        cluster_id: self.identity.cluster_id,
                        from: self.identity.member_id,
                        messages: messages
                            .iter()
                            .map(|m| m.write_to_bytes().expect("raft message encodes"))
                            .collect(),
                    };
                    let bytes: usize = batch.messages.iter().map(Vec::len).sum();
                    metrics::counter!(crate::metrics::PEER_SENT, "To" => format!("{:x}", self.to))
                        .increment(bytes as u64);
                    if tx.send(batch).await.is_err() {
                        for message in &messages {
                            report_lost(&self.deliver, message);
                        }
                        return Some("the stream closed".to_string());
                    }
                }
            }
        }
    }
}

/// Sends one store copy to a member behind this leader's compacted log.
struct SnapshotSender {
    identity: Identity,
    resolve: Resolve,
    copy_store: CopyStore,
}

impl SnapshotSender {
    async fn send(&self, message: Message) -> Result<(), String> {
        let to = message.to;
        let index = message.get_snapshot().get_metadata().index;
        let copy_store = self.copy_store.clone();
        let path = tokio::task::spawn_blocking(move || copy_store(index))
            .await
            .map_err(|e| e.to_string())??;
        let result = self.stream(to, &message, &path).await;
        let _ = tokio::fs::remove_file(&path).await;
        result
    }

    async fn stream(&self, to: u64, message: &Message, path: &PathBuf) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        let url = (self.resolve)(to).ok_or_else(|| "not a member".to_string())?;
        let channel = super::dial::endpoint(&url)?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("connecting {url}: {e}"))?;
        let mut client = PeerClient::new(channel).max_encoding_message_size(usize::MAX);
        let mut file = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
        let size = file.metadata().await.map_err(|e| e.to_string())?.len();
        tracing::info!(
            peer = format!("{to:x}").as_str(),
            bytes = size,
            "sending a store copy to a peer behind the compacted log"
        );
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
        let first = SnapshotChunk {
            cluster_id: self.identity.cluster_id,
            message: message.write_to_bytes().expect("raft message encodes"),
            data: Default::default(),
        };
        let feed = async move {
            tx.send(first).await.map_err(|_| "the stream closed".to_string())?;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok::<(), String>(());
                }
                buf.truncate(n);
                let chunk = SnapshotChunk { data: buf, ..Default::default() };
                tx.send(chunk).await.map_err(|_| "the stream closed".to_string())?;
            }
        };
        let call = client.snapshot(ReceiverStream::new(rx));
        let (fed, answer) = tokio::join!(feed, call);
        fed?;
        answer.map(|_| ()).map_err(|status| status.message().to_string())
    }
}
