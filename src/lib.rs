//! rsetcd: an etcd v3 wire-compatible key-value store on raft-rs and LMDB.
//!
//! # Layout
//! Lower modules never import higher ones:
//!
//! ```text
//! main -> server::run (boot) -> api, server, raft, apply, cluster, config
//! api      thin tonic handlers; maps core errors to etcd's gRPC statuses
//! server   validation, propose-and-wait, read barrier, response headers
//! raft     the thread owning raft-rs's RawNode; persists the log in LMDB; knows no keys
//! apply    the state machine: decodes committed requests, applies them to mvcc
//! mvcc     revisioned key space on LMDB (range, put, delete, txn, compact)
//! backend  the LMDB environment and its tables (shared by raft and mvcc)
//! alarm    the replicated alarms (NOSPACE)
//! auth     users, roles, permissions and tokens; the checks requests make
//! cluster  member and cluster ids, the replicated membership
//! peer     member-to-member traffic: raft message streams, lease forwarding
//! config   etcd's flags, environment variables and defaults
//! restore  `rsetcd snapshot restore`: a data dir from a saved snapshot
//! tls      TLS on the client port (rustls), with etcd's flags
//! logging  zap-style JSON log lines, as etcd writes them
//! metrics  Prometheus metrics with etcd's names, rendered at /metrics
//! ```

pub mod alarm;
pub mod api;
pub mod apply;
pub mod auth;
pub mod backend;
pub mod boot;
pub mod cluster;
pub mod config;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod mvcc;
pub mod pb;
pub mod peer;
pub mod raft;
pub mod recipes;
pub mod restore;
pub mod server;
pub mod tls;
pub mod watch;
