//! etcd's require-leader check: a client that sends the `hasleader: true` metadata (Go's
//! `clientv3.WithRequireLeader`, which kube-apiserver uses for its watches) is refused at
//! once with `etcdserver: no leader` while this member knows no leader, instead of waiting
//! for a request timeout. Applied to every gRPC request by `http_endpoints`, the layer that
//! sorts requests on the client port.

use std::sync::atomic::Ordering;

use http::Request;
use tonic::body::Body;
use tonic::Status;

use crate::server::Server;

/// The metadata key etcd's clients set (`rpctypes.MetadataRequireLeaderKey`).
const REQUIRE_LEADER: &str = "hasleader";

/// The response refusing `request`, if it asks for a leader and none is known.
pub fn refusal<B>(server: &Server, request: &Request<B>) -> Option<http::Response<Body>> {
    let wants_leader =
        request.headers().get(REQUIRE_LEADER).is_some_and(|v| v.as_bytes() == b"true");
    let no_leader = server.raft_status().leader.load(Ordering::Relaxed) == 0;
    (wants_leader && no_leader).then(|| Status::unavailable("etcdserver: no leader").into_http())
}
