//! `etcdserverpb.Watch`: one task per stream reads create/cancel/progress requests and hands
//! them to the [`WatchHub`]; responses flow back from the hub's bounded queue.

use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchRequest, WatchResponse};
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
        let mut inbound = request.into_inner();
        let (stream, responses) = self.hub.open_stream();
        let interval = self.progress_interval;
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(req)) => match req.request_union {
                            Some(RequestUnion::CreateRequest(create)) => stream.create(create).await,
                            Some(RequestUnion::CancelRequest(cancel)) => stream.cancel(cancel.watch_id).await,
                            Some(RequestUnion::ProgressRequest(_)) => stream.request_progress(),
                            None => {}
                        },
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
