//! The Auth service in the core: every call goes through raft, as in etcd (reads too, so
//! they are linearizable); passwords are hashed and checked here, off the async threads,
//! so that neither a password nor bcrypt's work enters the log.

use super::{Error, Result, Server};
use crate::apply::Applied;
use crate::auth::{self, tokens::SimpleTokens, AuthInfo};
use crate::pb::etcdserverpb::{AuthUserAddRequest, AuthUserChangePasswordRequest};
use crate::pb::rsetcdpb::auth_request::Request as AuthCall;
use crate::pb::rsetcdpb::raft_request::Request;
use crate::pb::rsetcdpb::{AuthRequest, Authenticate};

impl Server {
    /// Proposes one auth call for `caller` and returns what applying it answered.
    pub async fn auth_call(
        &self,
        call: AuthCall,
        caller: Option<&AuthInfo>,
    ) -> Result<auth::Reply> {
        let request = Request::Auth(AuthRequest { request: Some(call) });
        match self.propose(request, caller).await? {
            Applied::Auth(reply) => Ok(reply),
            other => unreachable!("an auth request applied as {other:?}"),
        }
    }

    /// Checks the password, then has every member register a new simple token. If an auth
    /// change was applied in between, the password is checked again (etcd's retry).
    pub async fn authenticate(&self, name: String, password: String) -> Result<auth::Reply> {
        self.read_barrier().await?;
        loop {
            let store = self.inner.auth.clone();
            let (user, secret) = (name.clone(), password.clone());
            let checked = tokio::task::spawn_blocking(move || store.check_password(&user, &secret))
                .await
                .map_err(|_| Error::Stopped)??;
            let call = AuthCall::Authenticate(Authenticate {
                name: name.clone(),
                simple_token: SimpleTokens::new_prefix(),
            });
            let reply = self.auth_call(call, None).await?;
            if checked == self.inner.auth.revision() {
                return Ok(reply);
            }
        }
    }

    pub async fn user_add(
        &self,
        mut req: AuthUserAddRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<auth::Reply> {
        if !req.options.as_ref().is_some_and(|o| o.no_password) {
            req.hashed_password = self.hash_password(std::mem::take(&mut req.password)).await?;
        }
        req.password.clear();
        self.auth_call(AuthCall::UserAdd(req), caller).await
    }

    pub async fn user_change_password(
        &self,
        mut req: AuthUserChangePasswordRequest,
        caller: Option<&AuthInfo>,
    ) -> Result<auth::Reply> {
        if !req.password.is_empty() {
            req.hashed_password = self.hash_password(std::mem::take(&mut req.password)).await?;
        }
        self.auth_call(AuthCall::UserChangePassword(req), caller).await
    }

    async fn hash_password(&self, password: String) -> Result<String> {
        let store = self.inner.auth.clone();
        let hashed = tokio::task::spawn_blocking(move || store.hash_password(&password))
            .await
            .map_err(|_| Error::Stopped)?;
        // bcrypt refuses only a cost outside 4..=31, which the configuration rules out.
        Ok(hashed.expect("bcrypt hashes with a valid cost"))
    }
}
