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
    let sent = call.counters.msg_sent.clone();
    let framing = Framing::default();
    response.map(|body| Body::new(Counted { inner: body, call: Some(call), sent, framing }))
}

/// Finds where gRPC messages start in a stream of body bytes (each is a 5-byte prefix with
/// its length, then the message), to count the messages sent.
#[derive(Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
}

impl Framing {
    /// How many messages start in `bytes`.
    fn starts_in(&mut self, mut bytes: &[u8]) -> u64 {
        let mut started = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len());
                self.remaining -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.prefix_len).min(bytes.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&bytes[..take]);
            self.prefix_len += take;
            bytes = &bytes[take..];
            if self.prefix_len == 5 {
                started += 1;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.remaining = len as usize;
                self.prefix_len = 0;
            }
        }
        started
    }
}

/// A response body that counts its messages as they go by, and its call when the trailers
/// (or the end) do.
struct Counted {
    inner: Body,
    call: Option<Call>,
    sent: ::metrics::Counter,
    framing: Framing,
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
                if let Some(data) = frame.data_ref() {
                    let started = self.framing.starts_in(data);
                    self.sent.increment(started);
                }
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

#[cfg(test)]
mod tests {
    use super::Framing;

    #[test]
    fn messages_are_found_across_chunk_boundaries() {
        let mut wire = Vec::new();
        for len in [3u32, 0, 70_000, 1] {
            wire.push(0);
            wire.extend_from_slice(&len.to_be_bytes());
            wire.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for chunk in [1, 2, 5, 6, 1000, wire.len()] {
            let mut framing = Framing::default();
            let found: u64 = wire.chunks(chunk).map(|c| framing.starts_in(c)).sum();
            assert_eq!(found, 4, "chunks of {chunk}");
        }
    }
}
