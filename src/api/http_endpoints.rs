//! Plain HTTP on the client port, beside gRPC as etcd serves it: `/version`, `/health`,
//! `/livez` and `/readyz` (with `/livez/<check>`, `/readyz/<check>`), answered with etcd's
//! status codes, bodies and headers. A request is gRPC when its content-type says so;
//! everything else comes here, `/metrics` included, and `/v3/...` goes to the JSON gateway
//! (`gateway`). gRPC requests pass through, after etcd's require-leader check.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use tonic::body::Body;

use crate::server::health::Check;
use crate::server::Server;

#[derive(Clone)]
pub struct HttpEndpointsLayer {
    pub server: Server,
    /// False on `--listen-metrics-urls`, which serve these endpoints only (no gRPC).
    pub grpc: bool,
    /// The JSON gateway (`/v3/...`), on the client URLs only.
    pub gateway: Option<super::gateway::Gateway>,
}

impl<S> tower::Layer<S> for HttpEndpointsLayer {
    type Service = HttpEndpoints<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpEndpoints {
            inner,
            server: self.server.clone(),
            grpc: self.grpc,
            gateway: self.gateway.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpEndpoints<S> {
    inner: S,
    server: Server,
    grpc: bool,
    gateway: Option<super::gateway::Gateway>,
}

impl<S, B> tower::Service<Request<B>> for HttpEndpoints<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc && !self.grpc {
            return Box::pin(async { Ok(text(StatusCode::NOT_FOUND, "404 page not found\n")) });
        }
        if grpc {
            let labels = super::grpc_metrics::started(request.uri().path());
            if let Some(refused) = super::require_leader::refusal(&self.server, &request) {
                return Box::pin(async move { Ok(super::grpc_metrics::handled(refused, labels)) });
            }
            let answer = self.inner.call(request);
            return Box::pin(
                async move { Ok(super::grpc_metrics::handled(answer.await?, labels)) },
            );
        }
        let path = request.uri().path();
        if path.starts_with("/v3/") || path.starts_with("/v3beta/") {
            if self.server.refuses_gateway_cn(client_cn(&request).as_deref()) {
                // etcd's words: its gateway would otherwise act as its own certificate.
                let refusal = "CommonName of client sending a request against gateway will be \
                               ignored and not used as expected\n";
                return Box::pin(async move { Ok(text(StatusCode::BAD_REQUEST, refusal)) });
            }
            if let Some(gateway) = self.gateway.clone() {
                let max = self.server.limits().max_request_bytes + super::GRPC_OVERHEAD_BYTES;
                return Box::pin(async move { Ok(gateway_call(gateway, request, max).await) });
            }
        }
        let server = self.server.clone();
        let method = request.method().clone();
        let uri = request.uri().clone();
        Box::pin(async move {
            let query = Query::parse(uri.query().unwrap_or(""));
            Ok(respond(&server, &method, uri.path(), &query).await)
        })
    }
}

/// The Subject CN of the client certificate an HTTP request came with over TLS.
fn client_cn<B>(request: &Request<B>) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    crate::tls::common_name(certs.first()?)
}

async fn respond(server: &Server, method: &Method, path: &str, query: &Query) -> Response<Body> {
    let route = match path {
        "/version" => Route::Version,
        "/health" => Route::Health,
        "/livez" => Route::Probe(Probe::Livez),
        "/readyz" => Route::Probe(Probe::Readyz),
        "/metrics" => Route::Metrics,
        p => match single_check(p) {
            Some(check) => Route::Check(check),
            None => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
        },
    };
    if method != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match route {
        Route::Version => version(server),
        Route::Metrics => {
            let mut response = respond_with(StatusCode::OK, crate::metrics::render(server));
            // Prometheus's text format, as etcd's promhttp handler labels it.
            set(&mut response, CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
            response
        }
        Route::Health => health(server, query).await,
        Route::Probe(probe) => run_probe(server, probe, query).await,
        Route::Check(check) => match server.check(check).await {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(reason) => {
                text(StatusCode::SERVICE_UNAVAILABLE, &format!("internal server error: {reason}\n"))
            }
        },
    }
}

enum Route {
    Version,
    Metrics,
    Health,
    Probe(Probe),
    Check(Check),
}

#[derive(Clone, Copy)]
enum Probe {
    Livez,
    Readyz,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Livez => "livez",
            Probe::Readyz => "readyz",
        }
    }

    fn checks(self) -> &'static [Check] {
        match self {
            Probe::Livez => &[Check::SerializableRead],
            Probe::Readyz => &Check::ALL,
        }
    }
}

/// `/livez/<check>` or `/readyz/<check>` naming one of that probe's checks.
fn single_check(path: &str) -> Option<Check> {
    let (probe, name) = if let Some(name) = path.strip_prefix("/livez/") {
        (Probe::Livez, name)
    } else {
        (Probe::Readyz, path.strip_prefix("/readyz/")?)
    };
    let check = Check::from_name(name)?;
    probe.checks().contains(&check).then_some(check)
}

fn version(server: &Server) -> Response<Body> {
    let server_version = server.etcd_version();
    let mut parts = server_version.split('.');
    let (major, minor) = (parts.next().unwrap_or("3"), parts.next().unwrap_or("0"));
    let cluster_version = format!("{major}.{minor}.0");
    let mut body = serde_json::json!({
        "etcdserver": server_version,
        "etcdcluster": cluster_version,
    });
    // etcd 3.6 added the storage version; 3.5 does not report it.
    if minor.parse::<u32>().is_ok_and(|m| m >= 6) {
        body["storage"] = serde_json::Value::String(cluster_version);
    }
    let mut response = respond_with(StatusCode::OK, body.to_string());
    set(&mut response, CONTENT_TYPE, "application/json");
    response
}

async fn health(server: &Server, query: &Query) -> Response<Body> {
    let serializable = query.values("serializable").any(|v| v == "true");
    let excluded: Vec<&str> = query.values("exclude").collect();
    let (status, healthy, reason) = match server.health(serializable, &excluded).await {
        Ok(()) => (StatusCode::OK, "true", String::new()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, "false", reason),
    };
    // etcd writes this JSON without a content type, so Go labels it as text; an unhealthy
    // answer goes through Go's http.Error, which ends it with a newline.
    let mut body = serde_json::json!({ "health": healthy, "reason": reason }).to_string();
    if status != StatusCode::OK {
        body.push('\n');
    }
    let mut response = respond_with(status, body);
    set(&mut response, CONTENT_TYPE, "text/plain; charset=utf-8");
    response
}

/// `/livez` and `/readyz`: every check not excluded, listed with `?verbose` or on failure.
async fn run_probe(server: &Server, probe: Probe, query: &Query) -> Response<Body> {
    let excluded: Vec<&str> = query.values("exclude").collect();
    let mut listing = String::new();
    let mut failed = false;
    for &check in probe.checks() {
        if excluded.contains(&check.name()) {
            continue;
        }
        match server.check(check).await {
            Ok(()) => listing.push_str(&format!("[+]{} ok\n", check.name())),
            Err(reason) => {
                failed = true;
                listing.push_str(&format!("[-]{} failed: {reason}\n", check.name()));
            }
        }
    }
    if failed {
        let body = format!("{listing}{} check failed\n", probe.name());
        return text(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    if query.has("verbose") {
        return text(StatusCode::OK, &format!("{listing}ok\n"));
    }
    text(StatusCode::OK, "ok\n")
}

/// A gateway request: grpc-gateway routes take POST with a JSON body.
async fn gateway_call<B>(
    gateway: super::gateway::Gateway,
    request: Request<B>,
    max_message: usize,
) -> Response<Body>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    // JSON with base64 bytes is larger than the message it carries: the body may be several
    // times the message limit, which the gateway checks once it is decoded.
    let limit = 4 * max_message;
    let path = request.uri().path().to_string();
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // grpc-gateway's answers for a wrong method and an unknown route.
    let (status, body) = if request.method() != Method::POST {
        (StatusCode::NOT_IMPLEMENTED, r#"{"code":12,"message":"Method Not Allowed"}"#.to_string())
    } else {
        let length = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        match http_body_util::Limited::new(request.into_body(), limit).collect().await {
            // Too large for any message: gRPC's refusal, as etcd's gateway passes it on.
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                let size = length.unwrap_or(limit);
                super::gateway::error(tonic::Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({size} vs. {max_message})"
                )))
            }
            Err(err) => super::gateway::error(tonic::Status::invalid_argument(format!(
                "reading the body: {err}"
            ))),
            Ok(collected) => match gateway
                .answer(&path, &collected.to_bytes(), authorization.as_deref())
                .await
            {
                Some(super::gateway::Answer::Json(status, body)) => (status, body),
                Some(super::gateway::Answer::Stream(body)) => {
                    let mut response = respond_with(StatusCode::OK, String::new());
                    *response.body_mut() = body;
                    set(&mut response, CONTENT_TYPE, "application/json");
                    return response;
                }
                None => (StatusCode::NOT_FOUND, r#"{"code":5,"message":"Not Found"}"#.to_string()),
            },
        }
    };
    let challenge = (status == StatusCode::UNAUTHORIZED)
        .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
        .flatten()
        .and_then(|doc| doc["message"].as_str().map(str::to_string));
    let mut response = respond_with(status, body);
    set(&mut response, CONTENT_TYPE, "application/json");
    // grpc-gateway names the reason of an Unauthenticated answer in this header too.
    if let Some(value) = challenge.and_then(|m| http::HeaderValue::from_str(&m).ok()) {
        response.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

/// A plain-text answer as Go's `http.Error` writes it.
fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = respond_with(status, body.to_string());
    set(&mut response, CONTENT_TYPE, "text/plain; charset=utf-8");
    set(&mut response, "x-content-type-options", "nosniff");
    response
}

/// Every HTTP answer carries the CORS headers etcd's client HTTP handler adds.
fn respond_with(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    set(&mut response, "access-control-allow-origin", "*");
    set(&mut response, "access-control-allow-methods", "POST, GET, OPTIONS, PUT, DELETE");
    set(&mut response, "access-control-allow-headers", "accept, content-type, authorization");
    response
}

fn set<K: http::header::IntoHeaderName>(
    response: &mut Response<Body>,
    name: K,
    value: &'static str,
) {
    response.headers_mut().insert(name, HeaderValue::from_static(value));
}

/// A parsed query string: `name=value` pairs, and bare names (`?verbose`).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        let pairs = raw.split('&').filter(|p| !p.is_empty()).map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        });
        Self(pairs.collect())
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_bare_names_and_repeats() {
        let q = Query::parse("verbose&exclude=a&exclude=b%5Fc");
        assert!(q.has("verbose"));
        assert_eq!(q.values("exclude").collect::<Vec<_>>(), vec!["a", "b_c"]);
    }

    #[test]
    fn single_checks_belong_to_their_probe() {
        assert!(single_check("/livez/serializable_read").is_some());
        assert!(single_check("/livez/linearizable_read").is_none());
        assert!(single_check("/readyz/linearizable_read").is_some());
        assert!(single_check("/readyz/").is_none());
        assert!(single_check("/readyz/nonexist").is_none());
    }
}
