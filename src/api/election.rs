//! `v3electionpb.Election` and `v3lockpb.Lock`: thin handlers over [`Recipes`].

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::credentials::caller;
use super::status::to_status;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::recipes::{Held, RecipeError, Recipes};

pub struct ElectionService {
    pub recipes: Recipes,
}

pub struct LockService {
    pub recipes: Recipes,
}

/// Every recipe error travels as codes.Unknown with its text, as etcd's do (its recipes run
/// through an internal client, whose errors lose their gRPC codes).
fn recipe_status(err: RecipeError) -> Status {
    match err {
        RecipeError::Server(e) => Status::unknown(to_status(e).message()),
        other => Status::unknown(other.to_string()),
    }
}

fn held(leader: Option<LeaderKey>) -> Result<Held, Status> {
    let leader = leader.ok_or_else(|| recipe_status(RecipeError::MissingLeaderKey))?;
    Ok(Held {
        key: leader.key,
        create_revision: leader.rev,
        lease: leader.lease,
        header: Default::default(),
    })
}

/// The recipes acting for the request's caller; a bad token fails as any recipe error
/// does (code Unknown, etcd's text).
async fn for_caller<T>(recipes: &Recipes, request: &Request<T>) -> Result<Recipes, Status> {
    match caller(&recipes.server, request).await {
        Ok(who) => Ok(recipes.for_caller(who)),
        Err(status) => Err(Status::unknown(status.message())),
    }
}

impl ElectionService {
    async fn for_caller<T>(&self, request: &Request<T>) -> Result<Recipes, Status> {
        for_caller(&self.recipes, request).await
    }
}

impl LockService {
    async fn for_caller<T>(&self, request: &Request<T>) -> Result<Recipes, Status> {
        for_caller(&self.recipes, request).await
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let recipes = self.for_caller(&request).await?;
        let req = request.into_inner();
        let held =
            recipes.campaign(&req.name, req.lease, &req.value).await.map_err(recipe_status)?;
        let header = self.recipes.server.header(held.header.revision);
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(LeaderKey {
                name: req.name,
                key: held.key,
                rev: held.create_revision,
                lease: held.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let recipes = self.for_caller(&request).await?;
        let req = request.into_inner();
        let held = held(req.leader)?;
        let header = recipes.proclaim(&held, &req.value).await.map_err(recipe_status)?;
        Ok(Response::new(ProclaimResponse {
            header: Some(self.recipes.server.header(header.revision)),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let recipes = self.for_caller(&request).await?;
        let (header, kv) =
            recipes.leader(&request.into_inner().name).await.map_err(recipe_status)?;
        let kv = kv.ok_or_else(|| recipe_status(RecipeError::NoLeader))?;
        Ok(Response::new(LeaderResponse {
            header: Some(self.recipes.server.header(header.revision)),
            kv: Some(kv),
        }))
    }

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        let recipes = self.for_caller(&request).await?;
        let name = request.into_inner().name;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let server = recipes.server.clone();
            let result = recipes
                .observe(&name, |header, kv| {
                    let resp = LeaderResponse {
                        header: Some(server.header(header.revision)),
                        kv: Some(kv),
                    };
                    // A full queue means the client stopped reading: drop the update rather
                    // than block; the next change resends the then-current leader.
                    !matches!(
                        tx.try_send(Ok(resp)),
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(_))
                    )
                })
                .await;
            if let Err(err) = result {
                let _ = tx.send(Err(recipe_status(err))).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let recipes = self.for_caller(&request).await?;
        let held = held(request.into_inner().leader)?;
        let header = recipes.resign(&held).await.map_err(recipe_status)?;
        Ok(Response::new(ResignResponse {
            header: Some(self.recipes.server.header(header.revision)),
        }))
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let recipes = self.for_caller(&request).await?;
        let req = request.into_inner();
        let held = recipes.lock(&req.name, req.lease).await.map_err(recipe_status)?;
        Ok(Response::new(LockResponse {
            header: Some(self.recipes.server.header(held.header.revision)),
            key: held.key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let recipes = self.for_caller(&request).await?;
        let header = recipes.unlock(&request.into_inner().key).await.map_err(recipe_status)?;
        Ok(Response::new(UnlockResponse {
            header: Some(self.recipes.server.header(header.revision)),
        }))
    }
}
