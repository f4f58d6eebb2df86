//! Member-to-member traffic, client side: raft messages streamed to each peer
//! ([`transport`]) and lease requests forwarded to the leader ([`forward`]). The serving side
//! is `api::peer`.

pub mod dial;
pub mod forward;
pub mod transport;

pub use transport::{Inbound, Outbound};
