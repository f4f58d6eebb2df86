//! etcd's JSON gateway on the client port (`/v3/...`, grpc-gateway): a POST with a JSON
//! body is the request message in protobuf's JSON mapping (field names as in the proto or in
//! lowerCamelCase, bytes in base64, 64-bit integers as strings or numbers); the answer is the
//! response message the same way (proto field names, default values left out, 64-bit
//! integers as strings), or `{"code": <gRPC code>, "message": ...}` with the HTTP status
//! grpc-gateway maps the code to. Each route calls the same service handler as gRPC does.
//! The streaming routes `/v3/watch` and `/v3/lease/keepalive` read the body as a sequence of
//! request objects and answer one `{"result": ...}` line per response, as grpc-gateway
//! streams; a watch lasts until the client goes away. `/v3/maintenance/snapshot` and
//! `/v3/election/observe` stream their server-streaming answers the same way.

use std::future::Future;
use std::sync::OnceLock;

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body::Frame;
use http_body_util::StreamBody;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::{Code, Request, Status};

use super::auth::AuthService;
use super::cluster::ClusterService;
use super::election::{ElectionService, LockService};
use super::kv::KvService;
use super::lease::LeaseService;
use super::maintenance::MaintenanceService;
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{LeaseKeepAliveRequest, WatchRequest};
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3lockpb::lock_server::Lock;
use crate::recipes::Recipes;
use crate::server::Server;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET).expect("compiled descriptors")
    })
}

/// The services the gateway calls, as the gRPC server does.
#[derive(Clone)]
pub struct Gateway {
    server: Server,
    recipes: Recipes,
    progress_interval: std::time::Duration,
}

/// A gateway answer: one JSON document, or a stream of `{"result": ...}` lines.
pub enum Answer {
    Json(StatusCode, String),
    Stream(Body),
}

impl Gateway {
    pub fn new(server: Server, recipes: Recipes, progress_interval: std::time::Duration) -> Self {
        Self { server, recipes, progress_interval }
    }

    fn max_message(&self) -> usize {
        self.server.limits().max_request_bytes + super::GRPC_OVERHEAD_BYTES
    }

    /// Answers `path` (under `/v3/` or `/v3beta/`), or `None` when no route has that path.
    /// `authorization` is the request's `Authorization` header: the token, as etcd's gateway
    /// passes it on.
    pub async fn answer(
        &self,
        path: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Option<Answer> {
        let route = path.strip_prefix("/v3/").or_else(|| path.strip_prefix("/v3beta/"))?;
        let max = self.max_message();
        match route {
            "watch" => return Some(self.watch(body, authorization).await),
            "lease/keepalive" => return Some(self.keep_alive(body, authorization).await),
            "maintenance/snapshot" => {
                let maintenance = MaintenanceService { server: self.server.clone() };
                let (req, resp) = ("etcdserverpb.SnapshotRequest", "etcdserverpb.SnapshotResponse");
                let call = |r| async move { maintenance.snapshot(r).await };
                return Some(server_stream(body, authorization, max, req, resp, call).await);
            }
            "election/observe" => {
                let election = ElectionService { recipes: self.recipes.clone() };
                let (req, resp) = ("v3electionpb.LeaderRequest", "v3electionpb.LeaderResponse");
                let call = |r| async move { election.observe(r).await };
                return Some(server_stream(body, authorization, max, req, resp, call).await);
            }
            _ => {}
        }
        let (status, json) = self.unary_route(route, body, authorization).await?;
        Some(Answer::Json(status, json))
    }

    /// `/v3/watch`: the requests in the body open (or cancel) watchers on one watch stream,
    /// whose responses are streamed back until the client goes away.
    async fn watch(&self, body: &[u8], authorization: Option<&str>) -> Answer {
        let requests =
            match decode_all::<WatchRequest>(body, "etcdserverpb.WatchRequest", self.max_message())
            {
                Ok(requests) => requests,
                Err(status) => return json_error(status),
            };
        let credentials = gateway_credentials(authorization);
        let (stream, responses) = self.recipes.hub.open_stream();
        let stream = Arc::new(stream);
        for request in requests {
            match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => {
                    match super::watch::permit(&self.server, &credentials, &create).await {
                        Ok(()) => stream.create(create).await,
                        Err(reason) => stream.refuse(&reason).await,
                    }
                }
                Some(RequestUnion::CancelRequest(cancel)) => stream.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => stream.request_progress(),
                None => {}
            }
        }
        // Progress notifications for as long as the stream lives.
        let weak = Arc::downgrade(&stream);
        let interval = self.progress_interval;
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                ticks.tick().await;
                match weak.upgrade() {
                    Some(stream) => stream.progress_tick(),
                    None => return,
                }
            }
        });
        let server = self.server.clone();
        let lines = ReceiverStream::new(responses).map(move |mut response| {
            // The stream's watchers end when the client drops the response body.
            let _keep = &stream;
            let revision = response.header.as_ref().map_or(0, |h| h.revision);
            response.header = Some(server.header(revision));
            Ok::<_, Status>(Frame::data(result_line(&response, "etcdserverpb.WatchResponse")))
        });
        Answer::Stream(Body::new(StreamBody::new(lines)))
    }

    /// `/v3/lease/keepalive`: one answer line per keep-alive request in the body.
    async fn keep_alive(&self, body: &[u8], authorization: Option<&str>) -> Answer {
        let requests = match decode_all::<LeaseKeepAliveRequest>(
            body,
            "etcdserverpb.LeaseKeepAliveRequest",
            self.max_message(),
        ) {
            Ok(requests) => requests,
            Err(status) => return json_error(status),
        };
        let mut out = Vec::new();
        for request in requests {
            let caller = self.server.caller(&gateway_credentials(authorization)).await;
            let renewed = match caller {
                Ok(caller) => self.server.lease_keep_alive(request.id, caller.as_ref()).await,
                Err(err) => Err(err),
            };
            match renewed {
                Ok(response) => {
                    out.extend(result_line(&response, "etcdserverpb.LeaseKeepAliveResponse"))
                }
                Err(err) => out.extend(error_line(&super::status::to_status(err))),
            }
        }
        let frames = tokio_stream::iter([Ok::<_, Status>(Frame::data(Bytes::from(out)))]);
        Answer::Stream(Body::new(StreamBody::new(frames)))
    }

    async fn unary_route(
        &self,
        route: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Option<(StatusCode, String)> {
        let kv = KvService { server: self.server.clone() };
        let lease = LeaseService { server: self.server.clone() };
        let cluster = ClusterService { server: self.server.clone() };
        let maintenance = MaintenanceService { server: self.server.clone() };
        let election = ElectionService { recipes: self.recipes.clone() };
        let lock = LockService { recipes: self.recipes.clone() };
        let auth = AuthService { server: self.server.clone() };
        let max_message = self.max_message();
        macro_rules! call {
            ($service:expr, $method:ident, $req:literal, $resp:literal) => {
                unary(body, authorization, max_message, $req, $resp, |r| async move {
                    $service.$method(r).await
                })
                .await
            };
        }
        Some(match route {
            "kv/range" => {
                call!(kv, range, "etcdserverpb.RangeRequest", "etcdserverpb.RangeResponse")
            }
            "kv/put" => call!(kv, put, "etcdserverpb.PutRequest", "etcdserverpb.PutResponse"),
            "kv/deleterange" => call!(
                kv,
                delete_range,
                "etcdserverpb.DeleteRangeRequest",
                "etcdserverpb.DeleteRangeResponse"
            ),
            "kv/txn" => call!(kv, txn, "etcdserverpb.TxnRequest", "etcdserverpb.TxnResponse"),
            "kv/compaction" => call!(
                kv,
                compact,
                "etcdserverpb.CompactionRequest",
                "etcdserverpb.CompactionResponse"
            ),
            "lease/grant" => call!(
                lease,
                lease_grant,
                "etcdserverpb.LeaseGrantRequest",
                "etcdserverpb.LeaseGrantResponse"
            ),
            "lease/revoke" | "kv/lease/revoke" => call!(
                lease,
                lease_revoke,
                "etcdserverpb.LeaseRevokeRequest",
                "etcdserverpb.LeaseRevokeResponse"
            ),
            "lease/timetolive" | "kv/lease/timetolive" => call!(
                lease,
                lease_time_to_live,
                "etcdserverpb.LeaseTimeToLiveRequest",
                "etcdserverpb.LeaseTimeToLiveResponse"
            ),
            "lease/leases" | "kv/lease/leases" => call!(
                lease,
                lease_leases,
                "etcdserverpb.LeaseLeasesRequest",
                "etcdserverpb.LeaseLeasesResponse"
            ),
            "cluster/member/add" => call!(
                cluster,
                member_add,
                "etcdserverpb.MemberAddRequest",
                "etcdserverpb.MemberAddResponse"
            ),
            "cluster/member/remove" => call!(
                cluster,
                member_remove,
                "etcdserverpb.MemberRemoveRequest",
                "etcdserverpb.MemberRemoveResponse"
            ),
            "cluster/member/update" => call!(
                cluster,
                member_update,
                "etcdserverpb.MemberUpdateRequest",
                "etcdserverpb.MemberUpdateResponse"
            ),
            "cluster/member/list" => call!(
                cluster,
                member_list,
                "etcdserverpb.MemberListRequest",
                "etcdserverpb.MemberListResponse"
            ),
            "cluster/member/promote" => call!(
                cluster,
                member_promote,
                "etcdserverpb.MemberPromoteRequest",
                "etcdserverpb.MemberPromoteResponse"
            ),
            "maintenance/alarm" => {
                call!(maintenance, alarm, "etcdserverpb.AlarmRequest", "etcdserverpb.AlarmResponse")
            }
            "maintenance/status" => call!(
                maintenance,
                status,
                "etcdserverpb.StatusRequest",
                "etcdserverpb.StatusResponse"
            ),
            "maintenance/defragment" => call!(
                maintenance,
                defragment,
                "etcdserverpb.DefragmentRequest",
                "etcdserverpb.DefragmentResponse"
            ),
            "maintenance/hash" => {
                call!(maintenance, hash, "etcdserverpb.HashRequest", "etcdserverpb.HashResponse")
            }
            "maintenance/hashkv" => call!(
                maintenance,
                hash_kv,
                "etcdserverpb.HashKVRequest",
                "etcdserverpb.HashKVResponse"
            ),
            "maintenance/transfer-leadership" => call!(
                maintenance,
                move_leader,
                "etcdserverpb.MoveLeaderRequest",
                "etcdserverpb.MoveLeaderResponse"
            ),
            "maintenance/downgrade" => call!(
                maintenance,
                downgrade,
                "etcdserverpb.DowngradeRequest",
                "etcdserverpb.DowngradeResponse"
            ),
            "election/campaign" => call!(
                election,
                campaign,
                "v3electionpb.CampaignRequest",
                "v3electionpb.CampaignResponse"
            ),
            "election/proclaim" => call!(
                election,
                proclaim,
                "v3electionpb.ProclaimRequest",
                "v3electionpb.ProclaimResponse"
            ),
            "election/leader" => {
                call!(election, leader, "v3electionpb.LeaderRequest", "v3electionpb.LeaderResponse")
            }
            "election/resign" => {
                call!(election, resign, "v3electionpb.ResignRequest", "v3electionpb.ResignResponse")
            }
            "lock/lock" => call!(lock, lock, "v3lockpb.LockRequest", "v3lockpb.LockResponse"),
            "lock/unlock" => {
                call!(lock, unlock, "v3lockpb.UnlockRequest", "v3lockpb.UnlockResponse")
            }
            "auth/enable" => call!(
                auth,
                auth_enable,
                "etcdserverpb.AuthEnableRequest",
                "etcdserverpb.AuthEnableResponse"
            ),
            "auth/disable" => call!(
                auth,
                auth_disable,
                "etcdserverpb.AuthDisableRequest",
                "etcdserverpb.AuthDisableResponse"
            ),
            "auth/status" => call!(
                auth,
                auth_status,
                "etcdserverpb.AuthStatusRequest",
                "etcdserverpb.AuthStatusResponse"
            ),
            "auth/authenticate" => call!(
                auth,
                authenticate,
                "etcdserverpb.AuthenticateRequest",
                "etcdserverpb.AuthenticateResponse"
            ),
            "auth/user/add" => call!(
                auth,
                user_add,
                "etcdserverpb.AuthUserAddRequest",
                "etcdserverpb.AuthUserAddResponse"
            ),
            "auth/user/get" => call!(
                auth,
                user_get,
                "etcdserverpb.AuthUserGetRequest",
                "etcdserverpb.AuthUserGetResponse"
            ),
            "auth/user/list" => call!(
                auth,
                user_list,
                "etcdserverpb.AuthUserListRequest",
                "etcdserverpb.AuthUserListResponse"
            ),
            "auth/user/delete" => call!(
                auth,
                user_delete,
                "etcdserverpb.AuthUserDeleteRequest",
                "etcdserverpb.AuthUserDeleteResponse"
            ),
            "auth/user/changepw" => call!(
                auth,
                user_change_password,
                "etcdserverpb.AuthUserChangePasswordRequest",
                "etcdserverpb.AuthUserChangePasswordResponse"
            ),
            "auth/user/grant" => call!(
                auth,
                user_grant_role,
                "etcdserverpb.AuthUserGrantRoleRequest",
                "etcdserverpb.AuthUserGrantRoleResponse"
            ),
            "auth/user/revoke" => call!(
                auth,
                user_revoke_role,
                "etcdserverpb.AuthUserRevokeRoleRequest",
                "etcdserverpb.AuthUserRevokeRoleResponse"
            ),
            "auth/role/add" => call!(
                auth,
                role_add,
                "etcdserverpb.AuthRoleAddRequest",
                "etcdserverpb.AuthRoleAddResponse"
            ),
            "auth/role/get" => call!(
                auth,
                role_get,
                "etcdserverpb.AuthRoleGetRequest",
                "etcdserverpb.AuthRoleGetResponse"
            ),
            "auth/role/list" => call!(
                auth,
                role_list,
                "etcdserverpb.AuthRoleListRequest",
                "etcdserverpb.AuthRoleListResponse"
            ),
            "auth/role/delete" => call!(
                auth,
                role_delete,
                "etcdserverpb.AuthRoleDeleteRequest",
                "etcdserverpb.AuthRoleDeleteResponse"
            ),
            "auth/role/grant" => call!(
                auth,
                role_grant_permission,
                "etcdserverpb.AuthRoleGrantPermissionRequest",
                "etcdserverpb.AuthRoleGrantPermissionResponse"
            ),
            "auth/role/revoke" => call!(
                auth,
                role_revoke_permission,
                "etcdserverpb.AuthRoleRevokePermissionRequest",
                "etcdserverpb.AuthRoleRevokePermissionResponse"
            ),
            _ => return None,
        })
    }
}

/// What a gateway request brings: its `Authorization` token only (etcd never takes the CN
/// of the gateway's own connection as the user).
fn gateway_credentials(authorization: Option<&str>) -> crate::auth::Credentials {
    let token = authorization.map(|a| a.strip_prefix("Bearer ").unwrap_or(a).to_string());
    crate::auth::Credentials { token, common_name: None }
}

/// A server-streaming route: the JSON request in, one `{"result": ...}` line per response
/// out (an error ends the stream with an `{"error": ...}` line), as grpc-gateway streams.
async fn server_stream<Req, Resp, F, Fut>(
    body: &[u8],
    authorization: Option<&str>,
    max_message: usize,
    request_type: &str,
    response_type: &'static str,
    call: F,
) -> Answer
where
    Req: prost::Message + Default,
    Resp: prost::Message + 'static,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::codegen::BoxStream<Resp>>, Status>>,
{
    let decoded = decode::<Req>(body, request_type);
    let request = match decoded.and_then(|r| check_size(&r, max_message).map(|()| r)) {
        Ok(request) => request,
        Err(status) => return json_error(status),
    };
    let mut request = Request::new(request);
    if let Some(value) = authorization.and_then(|a| a.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    let responses = match call(request).await {
        Ok(responses) => responses.into_inner(),
        Err(status) => return json_error(status),
    };
    let lines = responses.map(move |item| {
        let line = match item {
            Ok(message) => result_line(&message, response_type),
            Err(status) => error_line(&status),
        };
        Ok::<_, Status>(Frame::data(line))
    });
    Answer::Stream(Body::new(StreamBody::new(lines)))
}

/// grpc-gateway's line for an error in a stream.
fn error_line(status: &Status) -> Bytes {
    let line = serde_json::json!({ "error": {
        "code": status.code() as i32, "message": status.message() } });
    Bytes::from(format!("{line}\n"))
}

/// Decodes the JSON request, calls the handler and encodes its answer.
async fn unary<Req, Resp, F, Fut>(
    body: &[u8],
    authorization: Option<&str>,
    max_message: usize,
    request_type: &str,
    response_type: &str,
    call: F,
) -> (StatusCode, String)
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let decoded = decode::<Req>(body, request_type);
    let request = match decoded.and_then(|r| check_size(&r, max_message).map(|()| r)) {
        Ok(request) => request,
        Err(status) => return error(status),
    };
    let mut request = Request::new(request);
    if let Some(value) = authorization.and_then(|a| a.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    match call(request).await {
        Ok(response) => (StatusCode::OK, encode(&response.into_inner(), response_type)),
        Err(status) => error(status),
    }
}

/// A streaming route's body: request objects one after another.
fn decode_all<T: prost::Message + Default>(
    body: &[u8],
    type_name: &str,
    max: usize,
) -> Result<Vec<T>, Status> {
    let values = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    values
        .map(|value| {
            let value = value.map_err(|e| Status::invalid_argument(e.to_string()))?;
            let message: T = decode(value.to_string().as_bytes(), type_name)?;
            check_size(&message, max).map(|()| message)
        })
        .collect()
}

/// One message of a streamed answer, as grpc-gateway writes it.
fn result_line<T: prost::Message>(message: &T, type_name: &str) -> Bytes {
    Bytes::from(format!("{{\"result\":{}}}\n", encode(message, type_name)))
}

fn json_error(status: Status) -> Answer {
    let (code, body) = error(status);
    Answer::Json(code, body)
}

/// The largest message a gRPC call would accept (etcd's gateway feeds its gRPC server, which
/// refuses larger messages with this text).
fn check_size<T: prost::Message>(message: &T, max: usize) -> Result<(), Status> {
    let size = message.encoded_len();
    if size > max {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({size} vs. {max})"
        )));
    }
    Ok(())
}

fn decode<T: prost::Message + Default>(body: &[u8], type_name: &str) -> Result<T, Status> {
    let descriptor = pool()
        .get_message_by_name(type_name)
        .unwrap_or_else(|| panic!("no descriptor for {type_name}"));
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    // etcd's gateway discards unknown fields and enum names (protojson's DiscardUnknown).
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let message = DynamicMessage::deserialize_with_options(descriptor, &mut deserializer, &options)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    T::decode(prost::Message::encode_to_vec(&message).as_slice())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn encode<T: prost::Message>(message: &T, type_name: &str) -> String {
    let descriptor = pool()
        .get_message_by_name(type_name)
        .unwrap_or_else(|| panic!("no descriptor for {type_name}"));
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as its own type");
    let options =
        SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(true);
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    dynamic.serialize_with_options(&mut serializer, &options).expect("JSON encodes");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// grpc-gateway's error answer for a gRPC status.
pub fn error(status: Status) -> (StatusCode, String) {
    let body = serde_json::json!({ "code": status.code() as i32, "message": status.message() });
    (http_status(status.code()), body.to_string())
}

/// grpc-gateway's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}
