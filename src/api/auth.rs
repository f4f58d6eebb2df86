//! `etcdserverpb.Auth`: each call is proposed for its caller and answered with what the
//! members applied, stamped with this member's header.

use tonic::{Request, Response, Status};

use super::credentials::caller;
use super::status::to_status;
use crate::auth::Reply;
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::*;
use crate::pb::rsetcdpb::auth_request::Request as AuthCall;
use crate::server::Server;

pub struct AuthService {
    pub server: Server,
}

impl AuthService {
    /// Stamps a reply's header with the current revision, as etcd's auth responses carry.
    fn answer<T>(
        &self,
        reply: Result<Reply, crate::server::Error>,
        take: fn(Reply) -> Option<T>,
        header: fn(&mut T) -> &mut Option<ResponseHeader>,
    ) -> Result<Response<T>, Status> {
        let reply = reply.map_err(to_status)?;
        let mut resp = take(reply).expect("an auth call applies as its own kind of reply");
        let revision = self.server.current_revision().map_err(to_status)?;
        *header(&mut resp) = Some(self.server.header(revision));
        Ok(Response::new(resp))
    }
}

/// Picks one kind of reply out of what applying a call answered.
macro_rules! reply {
    ($variant:ident) => {
        |r| match r {
            Reply::$variant(resp) => Some(resp),
            _ => None,
        }
    };
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::Enable(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(Enable), |r| &mut r.header)
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::Disable(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(Disable), |r| &mut r.header)
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::Status(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(Status), |r| &mut r.header)
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::UserGet(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(UserGet), |r| &mut r.header)
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::UserList(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(UserList), |r| &mut r.header)
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::UserDelete(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(UserDelete), |r| &mut r.header)
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::UserGrantRole(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(UserGrantRole), |r| &mut r.header)
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::UserRevokeRole(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(UserRevokeRole), |r| &mut r.header)
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::RoleAdd(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(RoleAdd), |r| &mut r.header)
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::RoleGet(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(RoleGet), |r| &mut r.header)
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::RoleList(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(RoleList), |r| &mut r.header)
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::RoleDelete(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(RoleDelete), |r| &mut r.header)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::RoleGrantPermission(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(RoleGrantPermission), |r| &mut r.header)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let call = AuthCall::RoleRevokePermission(request.into_inner());
        let reply = self.server.auth_call(call, caller.as_ref()).await;
        self.answer(reply, reply!(RoleRevokePermission), |r| &mut r.header)
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let AuthenticateRequest { name, password } = request.into_inner();
        let reply = self.server.authenticate(name, password).await;
        self.answer(reply, reply!(Authenticate), |r| &mut r.header)
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let reply = self.server.user_add(request.into_inner(), caller.as_ref()).await;
        self.answer(reply, reply!(UserAdd), |r| &mut r.header)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let caller = caller(&self.server, &request).await?;
        let reply = self.server.user_change_password(request.into_inner(), caller.as_ref()).await;
        self.answer(reply, reply!(UserChangePassword), |r| &mut r.header)
    }
}
