//! `rsetcd snapshot restore`: a new member's data dir from a file saved by
//! `etcdctl snapshot save` from rsetcd, as `etcdutl snapshot restore` makes one from etcd's.
//!
//! The keys, their revisions, the leases and the compaction point are kept; the raft state
//! starts afresh for the cluster named by `--initial-cluster`, so every member of the new
//! cluster restores the same file with its own `--name`.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::backend::{meta_key, Backend, DB_DIR};
use crate::cluster::{self, membership};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading snapshot file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("snapshot file {0} has no sha256 checksum (it is not a complete snapshot)")]
    NoChecksum(String),
    #[error("snapshot file {0} is corrupt: its sha256 checksum does not match")]
    BadChecksum(String),
    #[error("data-dir {0:?} exists")]
    DataDirExists(String),
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    NotInCluster(String),
    #[error("writing the data dir: {0}")]
    Write(#[from] std::io::Error),
    #[error("preparing the restored store: {0}")]
    Store(#[from] heed::Error),
}

/// What a restore produced, for the summary line.
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    pub revision: i64,
}

pub fn restore(file: &Path, config: &Config) -> Result<Restored, RestoreError> {
    let shown = file.display().to_string();
    let bytes =
        std::fs::read(file).map_err(|source| RestoreError::Read { path: shown.clone(), source })?;
    // etcd's snapshot stream ends with the SHA-256 of everything before it; the data is
    // whole pages, so a complete file is 32 bytes past a multiple of 512 (as clientv3 checks).
    if bytes.len() < 32 || bytes.len() % 512 != 32 {
        return Err(RestoreError::NoChecksum(shown));
    }
    let (data, checksum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(data).as_slice() != checksum {
        return Err(RestoreError::BadChecksum(shown));
    }
    let data_dir = &config.data_dir;
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(RestoreError::DataDirExists(data_dir.display().to_string()));
    }
    let own_urls = config.own_cluster_urls();
    if own_urls.is_empty() {
        return Err(RestoreError::NotInCluster(config.name.clone()));
    }
    let db_dir = data_dir.join(DB_DIR);
    std::fs::create_dir_all(&db_dir)?;
    std::fs::write(db_dir.join("data.mdb"), data)?;

    let initial = config.initial_members();
    let (member_id, cluster_id, members) =
        cluster::bootstrap(&initial, &own_urls, &config.initial_cluster_token);
    let map_size = (data.len() * 4).max(1 << 30);
    let backend = Backend::open(data_dir, map_size)?;
    let mut txn = backend.write_txn()?;
    // The saving cluster's raft state and identity do not carry over: without a stored
    // configuration the member starts raft afresh with the new membership.
    backend.raft_log().clear(&mut txn)?;
    for key in
        [meta_key::HARD_STATE, meta_key::CONF_STATE, meta_key::LOG_START, meta_key::APPLIED_INDEX]
    {
        backend.meta().delete(&mut txn, key)?;
    }
    backend.put_meta_i64(&mut txn, meta_key::MEMBER_ID, member_id as i64)?;
    backend.put_meta_i64(&mut txn, meta_key::CLUSTER_ID, cluster_id as i64)?;
    membership::save(&backend, &mut txn, &members)?;
    let revision = backend.meta_i64(&txn, meta_key::CURRENT_REV)?.unwrap_or(0);
    txn.commit_durable()?;
    Ok(Restored { member_id, cluster_id, revision })
}
