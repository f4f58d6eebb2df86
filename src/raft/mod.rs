//! Consensus: raft-rs's `RawNode` driven by one thread, its log persisted in LMDB and made
//! durable by a write-ahead log.
//! Knows nothing of keys; see [`node::StateMachine`] for the seam to the applier.

pub mod node;
pub mod storage;
pub mod wal;

pub use node::{Input, MessageSink, NodeConfig, NodeStatus, ProposeError, StateMachine};
