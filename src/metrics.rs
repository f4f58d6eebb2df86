//! Prometheus metrics with etcd's names, labels and types, rendered at `/metrics`.
//!
//! Events are counted where they happen through the `metrics` facade (gRPC calls, peer
//! bytes, disk commit times, failed proposals); levels (leader, sizes, raft indexes, memory)
//! are read when scraped, so they are never stale. Histograms use etcd's buckets.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::server::Server;

pub const WAL_FSYNC: &str = "etcd_disk_wal_fsync_duration_seconds";
pub const BACKEND_COMMIT: &str = "etcd_disk_backend_commit_duration_seconds";
pub const DEFRAG: &str = "etcd_disk_backend_defrag_duration_seconds";
pub const PEER_SENT: &str = "etcd_network_peer_sent_bytes_total";
pub const PEER_RECEIVED: &str = "etcd_network_peer_received_bytes_total";
pub const PROPOSALS_FAILED: &str = "etcd_server_proposals_failed_total";
pub const GRPC_STARTED: &str = "grpc_server_started_total";
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
pub const GRPC_HANDLING: &str = "grpc_server_handling_seconds";
pub const GRPC_MSG_RECEIVED: &str = "grpc_server_msg_received_total";
pub const GRPC_MSG_SENT: &str = "grpc_server_msg_sent_total";

/// `--metrics=extensive`: also the gRPC handling-time histograms.
static EXTENSIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns on `--metrics=extensive` (before the first gRPC call).
pub fn set_extensive(on: bool) {
    EXTENSIVE.store(on, Ordering::Relaxed);
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // etcd's buckets: disk ExponentialBuckets(0.001, 2, 14), defrag (0.1, 2, 13).
        let disk: Vec<f64> = (0..14).map(|i| 0.001 * f64::powi(2.0, i)).collect();
        let defrag: Vec<f64> = (0..13).map(|i| 0.1 * f64::powi(2.0, i)).collect();
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(WAL_FSYNC.into()), &disk)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BACKEND_COMMIT.into()), &disk))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DEFRAG.into()), &defrag))
            // Prometheus's default buckets, as grpc-prometheus uses them.
            .and_then(|b| {
                let default = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
                b.set_buckets_for_metric(Matcher::Full(GRPC_HANDLING.into()), &default)
            })
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails if another recorder was installed, which nothing else does.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        start_time_seconds();
        // etcd's plain counters exist from the start, at 0.
        counter!(PROPOSALS_FAILED).absolute(0);
        handle
    })
}

fn describe() {
    describe_histogram!(
        WAL_FSYNC,
        Unit::Seconds,
        "The latency distributions of fsync called by WAL."
    );
    describe_histogram!(
        BACKEND_COMMIT,
        Unit::Seconds,
        "The latency distributions of commit called by backend."
    );
    describe_histogram!(
        DEFRAG,
        Unit::Seconds,
        "The latency distribution of backend defragmentation."
    );
    describe_counter!(PEER_SENT, Unit::Bytes, "The total number of bytes sent to peers.");
    describe_counter!(PEER_RECEIVED, Unit::Bytes, "The total number of bytes received from peers.");
    describe_counter!(PROPOSALS_FAILED, "The total number of failed proposals seen.");
    describe_counter!(GRPC_STARTED, "Total number of RPCs started on the server.");
    describe_counter!(
        GRPC_MSG_RECEIVED,
        "Total number of RPC stream messages received on the server."
    );
    describe_counter!(GRPC_MSG_SENT, "Total number of gRPC stream messages sent by the server.");
    describe_histogram!(
        GRPC_HANDLING,
        Unit::Seconds,
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server."
    );
    describe_counter!(
        GRPC_HANDLED,
        "Total number of RPCs completed on the server, regardless of success or failure."
    );
    describe_gauge!(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not."
    );
    describe_gauge!(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise."
    );
    describe_gauge!(
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise."
    );
    describe_counter!(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen."
    );
    describe_gauge!(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed."
    );
    describe_gauge!(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied."
    );
    describe_gauge!(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit."
    );
    describe_gauge!(
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version."
    );
    describe_gauge!(
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."
    );
    describe_gauge!(
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes."
    );
    describe_gauge!(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes."
    );
    describe_gauge!(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes."
    );
    describe_gauge!("etcd_debugging_mvcc_keys_total", "Total number of keys.");
    describe_gauge!("etcd_network_active_peers", "The current number of active peer connections.");
    describe_gauge!("process_resident_memory_bytes", "Resident memory size in bytes.");
    describe_gauge!(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds."
    );
}

/// The gRPC service and method of a request path (`/etcdserverpb.KV/Range`).
pub fn grpc_labels(path: &str) -> Option<(String, String)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some((service.to_string(), method.to_string()))
}

/// grpc-prometheus's `grpc_type`: etcd's streaming methods and the unary rest.
pub fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot")
        | ("v3electionpb.Election", "Observe")
        | ("grpc.health.v1.Health", "Watch") => "server_stream",
        _ => "unary",
    }
}

/// The counters of one gRPC method, registered once: resolving labelled counters through the
/// recorder on every call would cost every request a few allocations and a hash lookup.
pub struct GrpcCounters {
    service: String,
    method: String,
    started: metrics::Counter,
    /// By gRPC code (0..=16), registered on first use.
    handled: [OnceLock<metrics::Counter>; 17],
    /// With `--metrics=extensive` only.
    handling: Option<metrics::Histogram>,
    pub msg_received: metrics::Counter,
    pub msg_sent: metrics::Counter,
    /// Whether the client sends a stream (its messages are counted by the handler).
    pub client_streams: bool,
}

impl GrpcCounters {
    /// Counts the call as handled with `code`, `started` being when it arrived.
    pub fn handled(&self, code: tonic::Code, started: std::time::Instant) {
        self.handled_counter(code).increment(1);
        if let Some(handling) = &self.handling {
            handling.record(started.elapsed().as_secs_f64());
        }
    }

    fn handled_counter(&self, code: tonic::Code) -> &metrics::Counter {
        let slot = &self.handled[(code as usize).min(16)];
        slot.get_or_init(|| {
            let kind = grpc_type(&self.service, &self.method);
            counter!(GRPC_HANDLED, "grpc_type" => kind, "grpc_service" => self.service.clone(),
                "grpc_method" => self.method.clone(), "grpc_code" => code_name(code))
        })
    }
}

/// The counters of the gRPC method at `path`, registered on first use; `None` for a path
/// that names no method.
fn grpc_counters(path: &str) -> Option<std::sync::Arc<GrpcCounters>> {
    type Registry = std::sync::RwLock<HashMap<String, std::sync::Arc<GrpcCounters>>>;
    static METHODS: OnceLock<Registry> = OnceLock::new();
    let methods = METHODS.get_or_init(Default::default);
    let known = methods.read().unwrap_or_else(|p| p.into_inner()).get(path).cloned();
    if known.is_some() {
        return known;
    }
    let (service, method) = grpc_labels(path)?;
    let kind = grpc_type(&service, &method);
    let started = counter!(GRPC_STARTED, "grpc_type" => kind,
        "grpc_service" => service.clone(), "grpc_method" => method.clone());
    let handling = EXTENSIVE.load(Ordering::Relaxed).then(|| {
        metrics::histogram!(GRPC_HANDLING, "grpc_type" => kind,
            "grpc_service" => service.clone(), "grpc_method" => method.clone())
    });
    let msg_received = counter!(GRPC_MSG_RECEIVED, "grpc_type" => kind,
        "grpc_service" => service.clone(), "grpc_method" => method.clone());
    let msg_sent = counter!(GRPC_MSG_SENT, "grpc_type" => kind,
        "grpc_service" => service.clone(), "grpc_method" => method.clone());
    let counters = std::sync::Arc::new(GrpcCounters {
        service,
        method,
        started,
        handled: Default::default(),
        handling,
        msg_received,
        msg_sent,
        client_streams: kind == "bidi_stream" || kind == "client_stream",
    });
    let mut methods = methods.write().unwrap_or_else(|p| p.into_inner());
    Some(methods.entry(path.to_string()).or_insert(counters).clone())
}

/// Counts a call of the gRPC method at `path` as started; `None` for a path that names none.
pub fn grpc_started(path: &str) -> Option<std::sync::Arc<GrpcCounters>> {
    let counters = grpc_counters(path)?;
    counters.started.increment(1);
    // A unary or server-streaming call brings exactly one message.
    if !counters.client_streams {
        counters.msg_received.increment(1);
    }
    Some(counters)
}

/// Counts one message received on a client stream of the method at `path` (the handlers
/// of streaming methods call this per message, as grpc-prometheus counts each RecvMsg).
pub fn grpc_message_received(path: &str) {
    if let Some(counters) = grpc_counters(path) {
        counters.msg_received.increment(1);
    }
}

/// Shows every series of these methods at zero before any call, as etcd does for the
/// services of its gRPC server (grpc-prometheus's `Register`): started, and handled by
/// every status code. `paths` are `/service/method`.
pub fn zero_grpc_series<'a>(paths: impl IntoIterator<Item = &'a str>) {
    const CODES: [tonic::Code; 17] = {
        use tonic::Code::*;
        [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ]
    };
    for path in paths {
        let Some(counters) = grpc_counters(path) else { continue };
        counters.started.increment(0);
        counters.msg_received.increment(0);
        counters.msg_sent.increment(0);
        for code in CODES {
            counters.handled_counter(code).increment(0);
        }
    }
}

/// grpc-go's names of status codes, as grpc-prometheus labels them.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// The Prometheus text exposition, with the levels read now.
pub fn render(server: &Server) -> String {
    let handle = install();
    let status = server.raft_status();
    let local = server.cluster().local.id;
    let leader = status.leader.load(Ordering::Relaxed);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauge!("etcd_server_has_leader").set(flag(leader != 0));
    gauge!("etcd_server_is_leader").set(flag(leader == local));
    gauge!("etcd_server_is_learner").set(flag(server.is_learner()));
    counter!("etcd_server_leader_changes_seen_total")
        .absolute(status.leader_changes.load(Ordering::Relaxed));
    gauge!("etcd_server_proposals_committed_total")
        .set(status.commit.load(Ordering::Relaxed) as f64);
    gauge!("etcd_server_proposals_applied_total")
        .set(status.applied.load(Ordering::Relaxed) as f64);
    gauge!("etcd_server_proposals_pending").set(status.pending.load(Ordering::Relaxed) as f64);
    gauge!("etcd_server_version", "server_version" => server.etcd_version().to_string()).set(1.0);
    gauge!("etcd_server_id", "server_id" => format!("{local:x}")).set(1.0);
    gauge!("etcd_server_quota_backend_bytes").set(server.limits().quota_bytes as f64);
    let backend = server.backend();
    gauge!("etcd_mvcc_db_total_size_in_bytes").set(backend.file_size() as f64);
    gauge!("etcd_mvcc_db_total_size_in_use_in_bytes").set(backend.size_in_use() as f64);
    if let Ok(keys) = server.key_count() {
        gauge!("etcd_debugging_mvcc_keys_total").set(keys as f64);
    }
    gauge!("etcd_network_active_peers").set(server.active_peers() as f64);
    if let Some(rss) = resident_bytes() {
        gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    gauge!("process_start_time_seconds").set(start_time_seconds());
    handle.render()
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn start_time_seconds() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}
