//! Cluster and member identity: etcd's deterministic ids, this member's record, and the
//! membership every member stores (see [`membership`]).
//!
//! See etcd's `server/etcdserver/api/membership/member.go` and `cluster.go`: a member id is the
//! first 8 bytes of SHA-1 over its sorted peer URLs and the cluster token; the cluster id is the
//! same over the sorted member ids. Tools compare these ids, so they must match etcd's.

pub mod membership;

use sha1::{Digest, Sha1};

/// One member as `MemberList` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The cluster this member belongs to. The other members are read from the store, as
/// membership is replicated state.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub cluster_id: u64,
    pub local: Member,
}

/// A new cluster: every member and the cluster id follow from `--initial-cluster` (name and
/// peer URLs of each member) and the token, as etcd computes them. Returns (this member's
/// id, the cluster id, the members).
pub fn bootstrap(
    initial: &[(String, Vec<String>)],
    own_urls: &[String],
    token: &str,
) -> (u64, u64, Vec<Member>) {
    let members: Vec<Member> = initial
        .iter()
        .map(|(name, urls)| Member {
            id: member_id(urls, token),
            name: name.clone(),
            peer_urls: urls.clone(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    (member_id(own_urls, token), cluster_id(&ids), members)
}

pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hasher = Sha1::new();
    for url in urls {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("sha1 is 20 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcd() {
        // Values etcd computes for this member (from DESIGN.md's compatibility facts).
        let id = member_id(&["https://localhost:20001".to_string()], "new");
        assert_eq!(id, 0xa8f3458387986d);
        assert_eq!(cluster_id(&[id]), 0x34c21a2d427db393);
    }
}
