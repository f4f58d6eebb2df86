//! Authentication and role-based access control, as etcd's `server/auth`: users with bcrypt
//! passwords, roles granting read and write on keys, ranges and prefixes, simple tokens, and
//! the checks each request makes. Auth changes go through raft like any write; the checks
//! run at apply time for writes (so every member decides alike) and before reading for
//! reads.

pub mod error;
pub mod jwt;
pub mod perms;
pub mod store;
pub mod tokens;

pub use error::{Error, Result};
pub use store::{AuthStore, Reply, ROOT_ROLE, ROOT_USER};

/// What a request brings to prove who sends it: the token of its metadata, and the Subject
/// CN of the verified client certificate it was sent with ("" for one without a CN).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub common_name: Option<String>,
}

/// Who makes a request: the user its token or certificate names, and the auth revision the
/// credentials were checked at (etcd's AuthInfo). Revision 0 means no credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

impl AuthInfo {
    /// The member itself, for what it proposes on its own (revoking expired leases), as
    /// etcd's `WithRoot`. While auth is on, user root exists and holds the root role (etcd
    /// refuses to delete either), and no auth change can make these credentials stale.
    pub fn member() -> AuthInfo {
        AuthInfo { username: ROOT_USER.to_string(), revision: u64::MAX }
    }

    pub fn is_member(&self) -> bool {
        self.revision == u64::MAX && self.username == ROOT_USER
    }
}
