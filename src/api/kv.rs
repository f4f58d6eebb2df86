//! `etcdserverpb.KV`: thin handlers over [`Server`].

use tonic::{Request, Response, Status};

use super::credentials::caller;
use super::status::to_status;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::server::Server;

pub struct KvService {
    pub server: Server,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let resp = self.server.range(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let resp = self.server.put(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let resp = self.server.delete_range(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let resp = self.server.txn(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let resp = self.server.compact(request.into_inner(), caller.as_ref()).await;
        resp.map(Response::new).map_err(to_status)
    }
}
