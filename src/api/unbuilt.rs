//! Services whose methods are not built yet, and the layer that makes their Unimplemented
//! answers say which method it was.
//!
//! The generated traits answer every method without a body with `Unimplemented` ("Not yet
//! implemented"); [`NameUnbuiltLayer`] replaces that message with one naming the gRPC path, so
//! a user sees at once which RPC rsetcd lacks. Methods that are built never pass through it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;

use crate::pb::etcdserverpb::auth_server;

/// A service registered on the client port whose methods all answer Unimplemented for now.
pub struct Unbuilt;

#[tonic::async_trait]
impl auth_server::Auth for Unbuilt {}

/// The generated stubs' message; only responses carrying exactly it are rewritten.
const STUB_MESSAGE: &str = "Not yet implemented";

#[derive(Clone, Copy, Default)]
pub struct NameUnbuiltLayer;

impl<S> tower::Layer<S> for NameUnbuiltLayer {
    type Service = NameUnbuilt<S>;
    fn layer(&self, inner: S) -> Self::Service {
        NameUnbuilt { inner }
    }
}

#[derive(Clone)]
pub struct NameUnbuilt<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for NameUnbuilt<S>
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
            match Status::from_header_map(response.headers()) {
                Some(status)
                    if status.code() == tonic::Code::Unimplemented
                        && status.message() == STUB_MESSAGE =>
                {
                    let message = format!("rsetcd: {path} is not implemented yet");
                    Ok(Status::unimplemented(message).into_http())
                }
                _ => Ok(response),
            }
        })
    }
}
