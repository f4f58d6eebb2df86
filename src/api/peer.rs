//! `rsetcdpb.Peer` on the peer URLs: raft messages from the other members into the raft
//! thread, and the lease requests followers forward to the leader.

use protobuf::Message as _;
use raft::prelude::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::api::status::to_status;
use crate::pb::etcdserverpb::{self as pb, MemberPromoteRequest, MemberPromoteResponse};
use crate::pb::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::pb::rsetcdpb::peer_server::{Peer, PeerServer};
use crate::pb::rsetcdpb::{
    MembersRequest, MembersResponse, RaftAck, RaftBatch, SnapshotAck, SnapshotChunk,
};
use crate::peer::transport::{Deliver, Inbound};
use crate::server::Server;

pub struct PeerService {
    pub server: Server,
    pub deliver: Deliver,
    /// Where received store copies are written (inside the data dir, so the move into
    /// the store never crosses file systems).
    pub snapshot_dir: std::path::PathBuf,
}

impl PeerService {
    fn refuse_other_cluster(&self, from: u64, cluster_id: u64) -> Result<(), Status> {
        let own = self.server.cluster().cluster_id;
        if cluster_id == own {
            return Ok(());
        }
        let text = format!(
            "request cluster ID mismatch: member {:x} of cluster {:x} refuses member {:x} of \
             cluster {:x}",
            self.server.cluster().local.id,
            own,
            from,
            cluster_id
        );
        tracing::error!(message = text.as_str(), "refused a peer");
        Err(Status::failed_precondition(text))
    }

    /// Writes a streamed store copy to a fresh directory, as LMDB's data file.
    async fn receive_copy(
        &self,
        stream: &mut Streaming<SnapshotChunk>,
    ) -> Result<std::path::PathBuf, Status> {
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| Status::internal(format!("writing the store copy: {e}"));
        let dir = self.snapshot_dir.join(format!("incoming-{:016x}", rand::random::<u64>()));
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        let mut file = tokio::fs::File::create(dir.join("data.mdb")).await.map_err(io)?;
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok(dir)
    }

    fn leader_only(&self) -> Result<(), Status> {
        let local = self.server.cluster().local.id;
        let leader = self.server.raft_status().leader.load(std::sync::atomic::Ordering::Relaxed);
        if leader == local {
            Ok(())
        } else {
            Err(Status::failed_precondition("rsetcd: this member is not the leader"))
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.refuse_other_cluster(batch.from, batch.cluster_id)?;
            let bytes: usize = batch.messages.iter().map(Vec::len).sum();
            metrics::counter!(crate::metrics::PEER_RECEIVED, "From" => format!("{:x}", batch.from))
                .increment(bytes as u64);
            for bytes in &batch.messages {
                let message = Message::parse_from_bytes(bytes)
                    .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
                (self.deliver)(Inbound::Message(Box::new(message)));
            }
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty"))?;
        let message = Message::parse_from_bytes(&first.message)
            .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
        self.refuse_other_cluster(message.from, first.cluster_id)?;
        let dir = match self.receive_copy(&mut stream).await {
            Ok(dir) => dir,
            Err(status) => return Err(status),
        };
        (self.deliver)(Inbound::Snapshot { message: Box::new(message), dir });
        Ok(Response::new(SnapshotAck {}))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.leader_only()?;
        let members = self.server.member_promote(request.get_ref().id).await.map_err(to_status)?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.server.header(0)),
            members: members.iter().map(pb::Member::from).collect(),
        }))
    }

    async fn members(
        &self,
        _: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let members = self.server.members(true).await.map_err(to_status)?;
        Ok(Response::new(MembersResponse {
            cluster_id: self.server.cluster().cluster_id,
            members: members.iter().map(pb::Member::from).collect(),
        }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        self.leader_only()?;
        let resp = self.server.lease_keep_alive_here(request.get_ref().id);
        resp.map(Response::new).map_err(to_status)
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.leader_only()?;
        let resp = self.server.lease_time_to_live_here(request.into_inner());
        resp.map(Response::new).map_err(to_status)
    }
}

/// Serves the peer service on `listener` until `shutdown` resolves.
pub async fn serve(
    service: PeerService,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let router = tonic::transport::Server::builder()
        .add_service(PeerServer::new(service).max_decoding_message_size(usize::MAX));
    if let Some(tls) = tls {
        return router
            .serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), shutdown)
            .await;
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown).await
}
