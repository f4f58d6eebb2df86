//! A layer over every client-port service that makes two statuses read as etcd's do:
//!
//! - The generated stubs' `Unimplemented` ("Not yet implemented") names the gRPC path, so a
//!   user sees at once which RPC rsetcd lacks.
//! - A request over the gRPC size limit gets grpc-go's `ResourceExhausted` text (tonic says
//!   `OutOfRange` in its own words), and an expired deadline grpc-go's `DeadlineExceeded`
//!   (tonic says `Cancelled`), which clients and scripts match on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};

/// The generated stubs' message; only responses carrying exactly it are rewritten.
const STUB_MESSAGE: &str = "Not yet implemented";

#[derive(Clone, Copy, Default)]
pub struct EtcdStatusLayer;

impl<S> tower::Layer<S> for EtcdStatusLayer {
    type Service = EtcdStatus<S>;
    fn layer(&self, inner: S) -> Self::Service {
        EtcdStatus { inner }
    }
}

#[derive(Clone)]
pub struct EtcdStatus<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for EtcdStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // Only trailers-only responses (an error before any message) carry the status in
            // the headers; those are the two cases rewritten here.
            if let Some(status) = Status::from_header_map(response.headers()) {
                if let Some(rewritten) = etcd_status(&status, &path) {
                    return Ok(rewritten.into_http());
                }
                return Ok(response);
            }
            // Errors found while reading the request (such as its size) come in the trailers.
            Ok(response.map(|body| Body::new(RewriteTrailers { inner: body, path })))
        })
    }
}

/// A response body whose trailing status is rewritten by [`etcd_status`].
struct RewriteTrailers {
    inner: Body,
    path: String,
}

impl http_body::Body for RewriteTrailers {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let Some(trailers) = frame.trailers_ref() else { return Poll::Ready(Some(Ok(frame))) };
        let rewritten = Status::from_header_map(trailers).and_then(|s| etcd_status(&s, &self.path));
        let Some(status) = rewritten else { return Poll::Ready(Some(Ok(frame))) };
        let mut trailers = trailers.clone();
        if let Err(err) = status.add_header(&mut trailers) {
            return Poll::Ready(Some(Err(err)));
        }
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The etcd-shaped replacement for `status`, if it needs one.
fn etcd_status(status: &Status, path: &str) -> Option<Status> {
    match status.code() {
        Code::Unimplemented if status.message() == STUB_MESSAGE => {
            Some(Status::unimplemented(format!("rsetcd: {path} is not implemented yet")))
        }
        // tonic's answer to an expired grpc-timeout; grpc-go (and so etcd) says this.
        Code::Cancelled if status.message() == "Timeout expired" => {
            Some(Status::deadline_exceeded("context deadline exceeded"))
        }
        Code::OutOfRange => {
            // tonic: "Error, decoded message length too large: found N bytes, the limit is: M bytes"
            let message = status.message();
            let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
            let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
            let limit = rest.strip_suffix(" bytes")?;
            Some(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({found} vs. {limit})"
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_messages_read_as_grpc_go() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 2097162 bytes, the limit is: 2097152 bytes",
        );
        let etcd = etcd_status(&tonic, "/etcdserverpb.KV/Put").unwrap();
        assert_eq!(etcd.code(), Code::ResourceExhausted);
        assert_eq!(etcd.message(), "grpc: received message larger than max (2097162 vs. 2097152)");
        assert!(etcd_status(
            &Status::out_of_range("etcdserver: mvcc: required revision has been compacted"),
            "/x"
        )
        .is_none());
    }
}
