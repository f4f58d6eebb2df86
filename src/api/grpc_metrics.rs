//! grpc-prometheus's `grpc_server_started_total` and `grpc_server_handled_total` for every
//! gRPC call on the client port: started when the request arrives, handled when its status
//! is known (in the headers of an error answered at once, else in the trailers that end the
//! response body, which may be a long stream).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use tonic::body::Body;
use tonic::{Code, Status};

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{self, GrpcCounters};

/// A call being counted: its method's counters and when it arrived.
pub struct Call {
    counters: Arc<GrpcCounters>,
    started: Instant,
}

/// Counts the call as started; returns what [`handled`] needs.
pub fn started(path: &str) -> Option<Call> {
    let counters = metrics::grpc_started(path)?;
    Some(Call { counters, started: Instant::now() })
}

/// Counts the call as handled once its status is known.
pub fn handled(response: Response<Body>, call: Option<Call>) -> Response<Body> {
    let Some(call) = call else {
        return response;
    };
    if let Some(status) = Status::from_header_map(response.headers()) {
        call.counters.handled(status.code(), call.started);
        return response;
    }
    response.map(|body| Body::new(Counted { inner: body, call: Some(call) }))
}

/// A response body that counts its call when the trailers (or the end) go by.
struct Counted {
    inner: Body,
    call: Option<Call>,
}

impl Counted {
    fn count(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            call.counters.handled(code, call.started);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = Status::from_header_map(trailers).map_or(Code::Ok, |s| s.code());
                    self.count(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.count(code);
            }
            // A stream that ends without trailers was cut off.
            Poll::Ready(None) => self.count(Code::Unavailable),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // The client went away before the end (a cancelled watch, say): grpc-go counts
        // such a call as Canceled.
        self.count(Code::Cancelled);
    }
}
