//! `etcdserverpb.Cluster`: the membership and its changes.

use tonic::{Request, Response, Status};

use crate::api::credentials::{caller, require_admin, require_user};
use crate::api::status::to_status;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    self as pb, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::server::Server;

pub struct ClusterService {
    pub server: Server,
}

fn to_pb(members: &[crate::cluster::Member]) -> Vec<pb::Member> {
    members.iter().map(pb::Member::from).collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let MemberAddRequest { peer_ur_ls, is_learner } = request.into_inner();
        let (member, members) = self
            .server
            .member_add(peer_ur_ls, is_learner, caller.as_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.server.header(0)),
            member: Some(pb::Member::from(&member)),
            members: to_pb(&members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        require_admin(&self.server, &request).await?;
        let members = self.server.member_remove(request.get_ref().id).await.map_err(to_status)?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.server.header(0)),
            members: to_pb(&members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let MemberUpdateRequest { id, peer_ur_ls } = request.into_inner();
        let members =
            self.server.member_update(id, peer_ur_ls, caller.as_ref()).await.map_err(to_status)?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(self.server.header(0)),
            members: to_pb(&members),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        require_admin(&self.server, &request).await?;
        let members = self.server.member_promote(request.get_ref().id).await.map_err(to_status)?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.server.header(0)),
            members: to_pb(&members),
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        require_user(&self.server, &request).await?;
        let members =
            self.server.members(request.get_ref().linearizable).await.map_err(to_status)?;
        // etcd sends revision 0 in Cluster headers.
        Ok(Response::new(MemberListResponse {
            header: Some(self.server.header(0)),
            members: to_pb(&members),
        }))
    }
}
