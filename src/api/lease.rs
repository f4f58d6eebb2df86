//! `etcdserverpb.Lease`: thin handlers over [`Server`]; keep-alives are answered from memory.

use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::credentials::{caller, credentials};
use super::status::to_status;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::server::Server;

pub struct LeaseService {
    pub server: Server,
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let resp = self.server.lease_grant(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        self.server.require_caller(caller.as_ref()).map_err(to_status)?;
        let resp = self.server.lease_revoke(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        let server = self.server.clone();
        // Resolved again for each keep-alive, as etcd does (and each use keeps the token
        // alive).
        let credentials = credentials(&request);
        // One response per request, in order; the stream ends when the client's side does.
        let responses = request.into_inner().then(move |message| {
            let (server, credentials) = (server.clone(), credentials.clone());
            async move {
                let req = message?;
                crate::metrics::grpc_message_received("/etcdserverpb.Lease/LeaseKeepAlive");
                let caller = server.caller(&credentials).await.map_err(to_status)?;
                server.lease_keep_alive(req.id, caller.as_ref()).await.map_err(to_status)
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let resp = self.server.lease_time_to_live(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        self.server.lease_leases(caller.as_ref()).map(Response::new).map_err(to_status)
    }
}
