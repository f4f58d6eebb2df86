//! `etcdserverpb.Maintenance`: Status for now; the rest answers Unimplemented.

use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, HashKvRequest, HashKvResponse, StatusRequest, StatusResponse,
};
use crate::server::Server;

/// etcd's storage version for a 3.6 data layout; reported because etcdctl 3.6 prints it.
const STORAGE_VERSION: &str = "3.6.0";
/// etcd's default backend quota when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;

pub struct MaintenanceService {
    pub server: Server,
    pub quota_bytes: i64,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
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
            is_learner: server.cluster().local.is_learner,
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
