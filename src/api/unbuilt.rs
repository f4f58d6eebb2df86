//! Services whose methods are not built yet. The generated traits answer each method without
//! a body with `Unimplemented`; `status_layer` puts the method's name in that answer.

use crate::pb::etcdserverpb::auth_server;

/// A service registered on the client port whose methods all answer Unimplemented for now.
pub struct Unbuilt;

#[tonic::async_trait]
impl auth_server::Auth for Unbuilt {}
