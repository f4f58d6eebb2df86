//! The revisioned key-value store on LMDB: etcd's MVCC semantics with no index in RAM.
//!
//! `mvcc` knows nothing of raft, gRPC or watchers. Writes happen inside a write transaction
//! that the caller (the applier) owns, so the caller decides what commits together.

pub mod hash;
pub mod history;
pub mod keys;
pub mod lease;
pub mod record;
pub mod revision;
pub mod store;
pub mod txn;

pub use crate::backend::Backend;
pub use revision::Revision;
pub use store::{KeyRange, Store, Writer};

/// What can go wrong in the store. Converted to gRPC statuses only in `api/status.rs`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    #[error("key not found")]
    KeyNotFound,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("mvcc: database space exceeded")]
    NoSpace,
    #[error("storage: {0}")]
    Storage(#[from] heed::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
