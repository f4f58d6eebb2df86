//! The client port: one thin handler file per etcd service over [`Server`], and plain HTTP
//! beside gRPC (`http_endpoints`).
//! Handlers validate nothing themselves and map errors only through [`status::to_status`].

pub mod auth;
pub mod cluster;
pub mod credentials;
pub mod election;
pub mod gateway;
pub mod grpc_metrics;
pub mod http_endpoints;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod peer;
pub mod require_leader;
pub mod status;
pub mod status_layer;
pub mod watch;

use tonic::transport::server::Router;
use tonic_health::ServingStatus;

use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::pb::{v3electionpb::election_server::ElectionServer, v3lockpb::lock_server::LockServer};
use crate::server::Server;
use crate::watch::WatchHub;

/// The client-port router with its layers.
pub type ClientRouter = Router<
    tower::layer::util::Stack<
        http_endpoints::HttpEndpointsLayer,
        tower::layer::util::Stack<status_layer::EtcdStatusLayer, tower::layer::util::Identity>,
    >,
>;

/// etcd accepts this much gRPC framing on top of `--max-request-bytes`.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Every etcd service plus grpc.health.v1, ready to serve.
/// Settings of the client API that are not part of the core.
#[derive(Clone)]
pub struct ApiSettings {
    pub watch_progress_interval: std::time::Duration,
}

/// The methods whose gRPC series etcd shows at zero from the start: those of the services
/// registered on its gRPC server before grpc-prometheus's `Register` (not Election and
/// Lock, which etcd adds later).
fn zero_metric_methods() -> Vec<String> {
    let pool = prost_reflect::DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET)
        .expect("compiled descriptors");
    let mut paths: Vec<String> = pool
        .services()
        .filter(|s| s.package_name() == "etcdserverpb")
        .flat_map(|s| {
            let service = s.full_name().to_string();
            s.methods().map(move |m| format!("/{service}/{}", m.name())).collect::<Vec<_>>()
        })
        .collect();
    paths.extend(["Check", "List", "Watch"].map(|m| format!("/grpc.health.v1.Health/{m}")));
    paths
}

pub async fn router(server: Server, hub: WatchHub, settings: ApiSettings) -> ClientRouter {
    crate::metrics::zero_grpc_series(zero_metric_methods().iter().map(String::as_str));
    let recipes = crate::recipes::Recipes::new(server.clone(), hub.clone());
    let max_recv = server.limits().max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;

    let kv = KvServer::new(kv::KvService { server: server.clone() })
        .max_decoding_message_size(max_recv)
        .max_encoding_message_size(usize::MAX);
    let maintenance =
        MaintenanceServer::new(maintenance::MaintenanceService { server: server.clone() })
            .max_decoding_message_size(max_recv);
    let cluster = ClusterServer::new(cluster::ClusterService { server: server.clone() })
        .max_decoding_message_size(max_recv);

    // HTTP/1.1 is accepted beside h2c gRPC so that the probes and /version share the port.
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(status_layer::EtcdStatusLayer)
        .layer(http_endpoints::HttpEndpointsLayer {
            server: server.clone(),
            grpc: true,
            gateway: Some(gateway::Gateway::new(
                server.clone(),
                recipes.clone(),
                settings.watch_progress_interval,
            )),
        })
        .add_service(kv)
        .add_service(
            WatchServer::new(watch::WatchService {
                server: server.clone(),
                hub,
                progress_interval: settings.watch_progress_interval,
            })
            .max_decoding_message_size(max_recv)
            .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            LeaseServer::new(lease::LeaseService { server: server.clone() })
                .max_decoding_message_size(max_recv),
        )
        .add_service(cluster)
        .add_service(maintenance)
        .add_service(AuthServer::new(auth::AuthService { server: server.clone() }))
        .add_service(ElectionServer::new(election::ElectionService { recipes: recipes.clone() }))
        .add_service(LockServer::new(election::LockService { recipes }))
        .add_service(health_service)
}

/// What `--listen-metrics-urls` serve: `/metrics` and the health probes, no gRPC.
pub fn metrics_router(server: Server) -> ClientRouter {
    let (_, health_service) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(status_layer::EtcdStatusLayer)
        .layer(http_endpoints::HttpEndpointsLayer { server, grpc: false, gateway: None })
        .add_service(health_service)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    router: ClientRouter,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    if let Some(tls) = tls {
        return router
            .serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), shutdown)
            .await;
    }
    // Without TCP_NODELAY a small unary reply waits for the peer's delayed ACK (tens of ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown).await
}
