//! `etcdserverpb.Watch`: one task per stream reads create/cancel/progress requests and hands
//! them to the [`WatchHub`]; responses flow back from the hub's bounded queue.

use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, AuthInfo};
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::server::Server;
use crate::watch::WatchHub;

pub struct WatchService {
    pub server: Server,
    pub hub: WatchHub,
    /// etcd's `--watch-progress-notify-interval` (default 10 minutes).
    pub progress_interval: Duration,
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        let credentials = super::credentials::credentials(&request);
        let mut inbound = request.into_inner();
        let (stream, responses) = self.hub.open_stream();
        let interval = self.progress_interval;
        let server = self.server.clone();
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(req)) => handle(&stream, &server, &credentials, req).await,
                        // The client closed its side or went away: drop its watchers.
                        Ok(None) | Err(_) => break,
                    },
                    _ = ticks.tick() => stream.progress_tick(),
                }
            }
        });
        let server = self.server.clone();
        let outbound = ReceiverStream::new(responses).map(move |mut response| {
            let revision = response.header.as_ref().map_or(0, |h| h.revision);
            response.header = Some(server.header(revision));
            Ok(response)
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// One request of the client's stream.
async fn handle(
    stream: &crate::watch::WatchStream,
    server: &Server,
    credentials: &auth::Credentials,
    req: WatchRequest,
) {
    crate::metrics::grpc_message_received("/etcdserverpb.Watch/Watch");
    match req.request_union {
        Some(RequestUnion::CreateRequest(create)) => {
            match permit(server, credentials, &create).await {
                Ok(()) => stream.create(create).await,
                Err(reason) => stream.refuse(&reason).await,
            }
        }
        Some(RequestUnion::CancelRequest(cancel)) => stream.cancel(cancel.watch_id).await,
        Some(RequestUnion::ProgressRequest(_)) => stream.request_progress(),
        None => {}
    }
}

/// Whether the caller may watch the requested range (checked per create request, as etcd);
/// `Err` is the cancel reason etcd gives, which keeps gRPC's `rpc error: ...` wording.
pub async fn permit(
    server: &Server,
    credentials: &auth::Credentials,
    create: &WatchCreateRequest,
) -> Result<(), String> {
    // A negative start revision is refused as compacted before any auth check.
    if create.start_revision < 0 {
        return Ok(());
    }
    let key: &[u8] = if create.key.is_empty() { &[0] } else { &create.key };
    let checked = match server.caller(credentials).await {
        Ok(caller) => {
            let anonymous = AuthInfo::default();
            let caller = caller.as_ref().unwrap_or(&anonymous);
            server.auth().check_read(caller, key, &create.range_end)
        }
        Err(crate::server::Error::Auth(err)) => Err(err),
        Err(_) => Err(auth::Error::InvalidAuthToken),
    };
    let err = match checked {
        Ok(()) => return Ok(()),
        Err(
            err @ (auth::Error::InvalidAuthToken
            | auth::Error::AuthOldRevision
            | auth::Error::UserEmpty),
        ) => err,
        Err(_) => auth::Error::PermissionDenied,
    };
    let status = super::status::auth_status(&err);
    Err(format!("rpc error: code = {:?} desc = {}", status.code(), status.message()))
}
