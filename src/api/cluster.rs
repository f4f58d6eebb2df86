//! `etcdserverpb.Cluster`: MemberList for now; membership changes answer Unimplemented.

use tonic::{Request, Response, Status};

use crate::cluster::Member;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{self as pb, MemberListRequest, MemberListResponse};
use crate::server::Server;

pub struct ClusterService {
    pub server: Server,
}

fn to_pb(member: &Member) -> pb::Member {
    pb::Member {
        id: member.id,
        name: member.name.clone(),
        peer_ur_ls: member.peer_urls.clone(),
        client_ur_ls: member.client_urls.clone(),
        is_learner: member.is_learner,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        // etcd sends revision 0 in Cluster headers.
        Ok(Response::new(MemberListResponse {
            header: Some(self.server.header(0)),
            members: self.server.cluster().members.iter().map(to_pb).collect(),
        }))
    }
}
