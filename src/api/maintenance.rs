//! `etcdserverpb.Maintenance`: Status, HashKV, Hash, MoveLeader, Snapshot and Alarm;
//! Defragment; Downgrade answers a clear refusal.

use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};

use super::credentials::{require_admin, require_user};
use super::status::to_status;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::server::Server;
use tonic::codegen::BoxStream;

/// etcd's storage version for a 3.6 data layout; reported because etcdctl 3.6 prints it.
const STORAGE_VERSION: &str = "3.6.0";

pub struct MaintenanceService {
    pub server: Server,
}

/// etcd's snapshot blob size.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// Streams the store copy at `path` as etcd does: 32 KiB blobs with the bytes remaining
/// after each, then the SHA-256 of all blobs (which clients check), then removes the file.
async fn stream_copy(
    path: std::path::PathBuf,
    tx: tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let result = async {
        let mut file = tokio::fs::File::open(&path).await?;
        let total = file.metadata().await?.len();
        let mut sent = 0u64;
        let mut digest = sha2::Sha256::new();
        while sent < total {
            let mut blob = vec![0u8; SNAPSHOT_CHUNK.min((total - sent) as usize)];
            file.read_exact(&mut blob).await?;
            digest.update(&blob);
            sent += blob.len() as u64;
            let message = SnapshotResponse {
                header: None,
                remaining_bytes: total - sent,
                blob,
                version: STORAGE_VERSION.to_string(),
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(()); // the client went away
            }
        }
        let blob = digest.finalize().to_vec();
        let last = SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob,
            version: STORAGE_VERSION.to_string(),
        };
        let _ = tx.send(Ok(last)).await;
        Ok::<(), std::io::Error>(())
    }
    .await;
    if let Err(err) = result {
        let _ =
            tx.send(Err(Status::internal(format!("rsetcd: reading the store copy: {err}")))).await;
    }
    let _ = tokio::fs::remove_file(&path).await;
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        require_admin(&self.server, &request).await?;
        let (hash, revision) = self.server.hash_all().map_err(to_status)?;
        Ok(Response::new(HashResponse { header: Some(self.server.header(revision)), hash }))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        require_admin(&self.server, &request).await?;
        self.server.move_leader(request.get_ref().target_id).await.map_err(to_status)?;
        // etcd's MoveLeader response carries no header.
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        require_admin(&self.server, &request).await?;
        let path = self.server.store_copy().await.map_err(to_status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(stream_copy(path, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        require_admin(&self.server, &request).await?;
        self.server.defragment().await.map_err(to_status)?;
        // etcd's Defragment response carries no header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        require_admin(&self.server, &request).await?;
        Err(Status::unimplemented(
            "rsetcd: /etcdserverpb.Maintenance/Downgrade: rsetcd does not support downgrading \
             the cluster version",
        ))
    }

    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // Listing alarms needs a user; changing them needs root.
        if request.get_ref().action
            == crate::pb::etcdserverpb::alarm_request::AlarmAction::Get as i32
        {
            require_user(&self.server, &request).await?;
        } else {
            require_admin(&self.server, &request).await?;
        }
        let alarms = self.server.alarm(request.into_inner()).await.map_err(to_status)?;
        let revision = self.server.current_revision().map_err(to_status)?;
        Ok(Response::new(AlarmResponse { header: Some(self.server.header(revision)), alarms }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        require_admin(&self.server, &request).await?;
        let (hash, current) = self.server.hash_kv(request.get_ref().revision).map_err(to_status)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.server.header(current)),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.revision,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        require_user(&self.server, &request).await?;
        let server = &self.server;
        let raft = server.raft_status();
        let leader = raft.leader.load(Ordering::Relaxed);
        let revision = server.current_revision().map_err(to_status)?;
        let backend = server.backend();
        let mut errors = Vec::new();
        if leader == 0 {
            errors.push("etcdserver: no leader".to_string());
        }
        // etcd lists each alarm in Go's text form of AlarmMember.
        for alarm in server.alarms().map_err(to_status)? {
            errors.push(format!(
                "memberID:{} alarm:{} ",
                alarm.member_id,
                crate::alarm::name(alarm.alarm)
            ));
        }
        Ok(Response::new(StatusResponse {
            header: Some(server.header(revision)),
            version: server.etcd_version().to_string(),
            db_size: backend.file_size() as i64,
            leader,
            raft_index: raft.commit.load(Ordering::Relaxed),
            raft_term: raft.term.load(Ordering::Relaxed),
            raft_applied_index: raft.applied.load(Ordering::Relaxed),
            errors,
            db_size_in_use: backend.size_in_use() as i64,
            is_learner: server.is_learner(),
            storage_version: STORAGE_VERSION.to_string(),
            db_size_quota: server.limits().quota_bytes as i64,
            // etcd always sends the (empty) downgrade state; etcdctl prints it.
            downgrade_info: Some(Default::default()),
        }))
    }
}
