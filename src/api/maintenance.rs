//! `etcdserverpb.Maintenance`: Status, HashKV, Hash, MoveLeader, Snapshot and Alarm GET;
//! Defragment and alarm changes answer Unimplemented, Downgrade a clear refusal.

use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, DowngradeRequest, DowngradeResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::server::Server;
use tonic::codegen::BoxStream;

/// etcd's storage version for a 3.6 data layout; reported because etcdctl 3.6 prints it.
const STORAGE_VERSION: &str = "3.6.0";
/// etcd's default backend quota when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;

pub struct MaintenanceService {
    pub server: Server,
    pub quota_bytes: i64,
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
    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (hash, revision) = self.server.hash_all().map_err(to_status)?;
        Ok(Response::new(HashResponse { header: Some(self.server.header(revision)), hash }))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.server.move_leader(request.get_ref().target_id).await.map_err(to_status)?;
        // etcd's MoveLeader response carries no header.
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        let path = self.server.store_copy().await.map_err(to_status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(stream_copy(path, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "rsetcd: /etcdserverpb.Maintenance/Downgrade: rsetcd does not support downgrading \
             the cluster version",
        ))
    }

    /// Alarms are raised only by the space quota, which is not built yet, so the list is
    /// always empty; changing alarms by hand is refused rather than pretended.
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        match AlarmAction::try_from(request.get_ref().action) {
            Ok(AlarmAction::Get) => {
                let revision = self.server.current_revision().map_err(to_status)?;
                Ok(Response::new(AlarmResponse { header: Some(self.server.header(revision)), alarms: Vec::new() }))
            }
            _ => Err(Status::unimplemented(
                "rsetcd: /etcdserverpb.Maintenance/Alarm ACTIVATE and DEACTIVATE are not implemented yet",
            )),
        }
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let (hash, current) = self.server.hash_kv(request.get_ref().revision).map_err(to_status)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.server.header(current)),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.revision,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let server = &self.server;
        let raft = server.raft_status();
        let leader = raft.leader.load(Ordering::Relaxed);
        let revision = server.current_revision().map_err(to_status)?;
        let backend = server.backend();
        let mut errors = Vec::new();
        if leader == 0 {
            errors.push("etcdserver: no leader".to_string());
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
            db_size_quota: if self.quota_bytes > 0 {
                self.quota_bytes
            } else {
                DEFAULT_QUOTA_BYTES
            },
            // etcd always sends the (empty) downgrade state; etcdctl prints it.
            downgrade_info: Some(Default::default()),
        }))
    }
}
