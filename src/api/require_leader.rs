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

/// What a learner serves (etcd's `isRPCSupportedForLearner`; a Range must also be
/// serializable, which the core checks).
const LEARNER_PATHS: [&str; 3] = [
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.KV/Range",
];

/// The response refusing `request`: on a learner, what learners do not serve; and a request
/// that asks for a leader while none is known.
pub fn refusal<B>(server: &Server, request: &Request<B>) -> Option<http::Response<Body>> {
    if server.is_learner() && !LEARNER_PATHS.contains(&request.uri().path()) {
        let refused = Status::failed_precondition("etcdserver: rpc not supported for learner");
        return Some(refused.into_http());
    }
    let wants_leader =
        request.headers().get(REQUIRE_LEADER).is_some_and(|v| v.as_bytes() == b"true");
    let no_leader = server.raft_status().leader.load(Ordering::Relaxed) == 0;
    (wants_leader && no_leader).then(|| Status::unavailable("etcdserver: no leader").into_http())
}
