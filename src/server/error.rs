//! Every way a client request can fail in the core. `api/status.rs` turns each into etcd's
//! exact gRPC status.

use crate::mvcc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::Error),
    #[error("key is not provided")]
    EmptyKey,
    #[error("key not found")]
    KeyNotFound,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("invalid sort option")]
    InvalidSortOption,
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("request is too large")]
    RequestTooLarge,
    #[error("request timed out")]
    Timeout,
    #[error("no leader")]
    NoLeader,
    #[error("not leader")]
    NotLeader,
    #[error("leader changed")]
    LeaderChanged,
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    #[error("request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    #[error("member not found")]
    MemberNotFound,
    #[error("can only promote a learner member")]
    MemberNotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("unhealthy cluster")]
    Unhealthy,
    #[error("rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("server stopped")]
    Stopped,
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<crate::apply::Error> for Error {
    fn from(err: crate::apply::Error) -> Self {
        match err {
            crate::apply::Error::Mvcc(err) => Error::Mvcc(err),
            crate::apply::Error::Auth(err) => Error::Auth(err),
        }
    }
}

impl Error {
    /// The error a leader answered a forwarded request with, from etcd's message text
    /// (only those a forwarded membership change can produce).
    pub fn from_etcd_message(message: &str) -> Option<Error> {
        let text = message.strip_prefix("etcdserver: ")?;
        [Error::MemberNotFound, Error::MemberNotLearner, Error::LearnerNotReady, Error::NotLeader]
            .into_iter()
            .find(|err| err.to_string() == text)
    }
}
