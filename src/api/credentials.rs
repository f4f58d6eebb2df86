//! The caller behind a gRPC request: the token etcd's clients send as `token` metadata (the
//! gateway passes `Authorization` on as `authorization`; a `Bearer ` prefix is dropped),
//! resolved by the server to a user. The checks themselves live in the core.

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::status::to_status;
use crate::auth::{AuthInfo, Credentials};
use crate::server::Server;

/// The token and certificate CN a request brings.
pub fn credentials<T>(request: &Request<T>) -> Credentials {
    // A verified certificate without a CN names user "" (who exists nowhere), as in etcd.
    let common_name = request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| crate::tls::common_name(c).unwrap_or_default()));
    Credentials { token: token(request.metadata()), common_name }
}

fn token(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get("token").or_else(|| metadata.get("authorization"))?;
    let text = value.to_str().ok()?;
    Some(text.strip_prefix("Bearer ").unwrap_or(text).to_string())
}

/// Who sent `request` (`None` while auth is off or without a token).
pub async fn caller<T>(server: &Server, request: &Request<T>) -> Result<Option<AuthInfo>, Status> {
    server.caller(&credentials(request)).await.map_err(to_status)
}

/// Fails unless the caller may administer the cluster (root, while auth is on).
pub async fn require_admin<T>(server: &Server, request: &Request<T>) -> Result<(), Status> {
    let caller = caller(server, request).await?;
    server.check_admin(caller.as_ref()).map_err(to_status)
}

/// Fails unless some user is calling (while auth is on).
pub async fn require_user<T>(server: &Server, request: &Request<T>) -> Result<(), Status> {
    let caller = caller(server, request).await?;
    server.require_caller(caller.as_ref()).map_err(to_status)
}
