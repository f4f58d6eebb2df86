//! Every way a client request can fail in the core. `api/status.rs` turns each into etcd's
//! exact gRPC status.

use crate::mvcc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
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
    #[error("server stopped")]
    Stopped,
}

pub type Result<T> = std::result::Result<T, Error>;
