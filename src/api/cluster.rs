//! `etcdserverpb.Cluster`: MemberList for now; membership changes answer Unimplemented.

use tonic::{Request, Response, Status};

use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{self as pb, MemberListRequest, MemberListResponse};
use crate::server::Server;

pub struct ClusterService {
    pub server: Server,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let members = self
            .server
            .members(request.get_ref().linearizable)
            .await
            .map_err(crate::api::status::to_status)?;
        // etcd sends revision 0 in Cluster headers.
        Ok(Response::new(MemberListResponse {
            header: Some(self.server.header(0)),
            members: members.iter().map(pb::Member::from).collect(),
        }))
    }
}
