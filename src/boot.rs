//! Composition root: opens the store, settles the member's identity and the bootstrap
//! membership, starts the raft thread and the peer transport, and serves gRPC on every client
//! and peer URL until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;

use crate::apply::Applier;
use crate::backend::{meta_key, Backend};
use crate::cluster::{self, membership, Cluster, Member};
use crate::config::{display_url, ClusterState, Config};
use crate::lease::Lessor;
use crate::mvcc::Store;
use crate::peer::transport::{self, Inbound};
use crate::raft::wal::WAL_DIR;
use crate::raft::{Input, NodeConfig};
use crate::server::{Limits, Server, Settings};
use crate::watch::WatchHub;

/// How far the LMDB map may grow; a sparse reservation, not memory. The quota (NOSPACE)
/// stops clients long before it.
fn map_size(quota: i64) -> usize {
    let quota = if quota > 0 { quota as usize } else { 2 << 30 };
    (quota * 4).max(16 << 30)
}

/// Runs a member until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    for flag in &config.ignored_flags {
        tracing::warn!(
            flag = flag.as_str(),
            "flag is accepted for compatibility but has no effect in rsetcd yet"
        );
    }
    for var in &config.unknown_env {
        tracing::warn!(variable = var.as_str(), "unrecognized environment variable");
    }
    crate::metrics::set_extensive(config.extensive_metrics);
    crate::metrics::install();
    let client_tls = match &config.client_tls {
        Some(settings) => Some(settings.server_config().context("client TLS")?),
        None => None,
    };
    let peer_tls = match &config.peer_tls {
        Some(settings) => {
            crate::peer::dial::configure(settings).context("peer TLS")?;
            Some(settings.server_config().context("peer TLS")?)
        }
        None => None,
    };
    let listeners = bind_all(&config.listen_client_urls, 2379).await?;
    let peer_listeners = bind_all(&config.listen_peer_urls, 2380).await?;
    let metrics_listeners = bind_all(&config.listen_metrics_urls, 2381).await?;

    let backend = Backend::open(&config.data_dir, map_size(config.quota_backend_bytes))
        .with_context(|| format!("opening data dir {}", config.data_dir.display()))?;
    let wal_dir = config.wal_dir.clone().unwrap_or_else(|| config.data_dir.join(WAL_DIR));
    let wal =
        crate::raft::storage::recover(&backend, &wal_dir).context("redoing the write-ahead log")?;
    let (cluster, members) = identity(&config, &backend).await?;
    tracing::info!(
        name = config.name.as_str(),
        data_dir = %config.data_dir.display(),
        member_id = format!("{:x}", cluster.local.id).as_str(),
        cluster_id = format!("{:x}", cluster.cluster_id).as_str(),
        "starting rsetcd member"
    );

    let store = Store::new(backend.clone());
    let ticks = |d: std::time::Duration| {
        (d.as_millis() / config.heartbeat_interval.as_millis()).max(1) as usize
    };
    let node_config = NodeConfig {
        id: cluster.local.id,
        voters: members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect(),
        learners: members.iter().filter(|m| m.is_learner).map(|m| m.id).collect(),
        tick: config.heartbeat_interval,
        election_ticks: ticks(config.election_timeout),
        heartbeat_ticks: 1,
        snapshot_count: config.snapshot_count,
        catch_up_entries: config.snapshot_catchup_entries,
    };
    let current_rev = {
        let txn = backend.read_txn()?;
        store.current_rev(&txn)?
    };
    let hub = WatchHub::new(
        store.clone(),
        current_rev,
        tokio::runtime::Handle::current(),
        config.max_request_bytes + crate::api::GRPC_OVERHEAD_BYTES,
    );
    let lessor = Lessor::default();
    lessor.reload(&store)?;
    let min_lease_ttl = crate::lease::min_ttl(config.election_timeout);
    let tokens = match &config.auth_token {
        crate::config::AuthToken::Simple => crate::auth::tokens::Tokens::Simple(
            crate::auth::tokens::SimpleTokens::new(config.auth_token_ttl),
        ),
        crate::config::AuthToken::Jwt(options) => crate::auth::tokens::Tokens::Jwt(
            crate::auth::jwt::JwtTokens::from_options(options).context("--auth-token")?,
        ),
    };
    let auth = Arc::new(crate::auth::AuthStore::open(&backend, tokens, config.bcrypt_cost)?);
    let applier =
        Applier::new(store.clone(), hub.clone(), lessor.clone(), auth.clone(), min_lease_ttl);
    let (outbound, pending) = transport::channel();
    let raft =
        crate::raft::node::spawn(node_config, backend.clone(), wal, applier, Box::new(outbound))
            .context("starting raft")?;
    let raft_thread = raft.thread;
    let inputs = std::sync::Mutex::new(raft.inputs.clone());
    let deliver: transport::Deliver = Arc::new(move |event| {
        let input = match event {
            Inbound::Message(message) => Input::Step(message),
            Inbound::Unreachable(id) => Input::Unreachable(id),
            Inbound::SnapshotFailed(id) => Input::SnapshotFailed(id),
            Inbound::SnapshotSent(id) => Input::SnapshotSent(id),
            Inbound::Snapshot { message, dir } => Input::InstallSnapshot { message, dir },
        };
        // Fails only once the raft thread stopped.
        let _ = inputs.lock().unwrap_or_else(|p| p.into_inner()).send(input);
    });
    let resolve: transport::Resolve = {
        let backend = backend.clone();
        Arc::new(move |id| {
            let txn = backend.read_txn().ok()?;
            let members = membership::load(&backend, &txn).ok()?;
            members.into_iter().find(|m| m.id == id)?.peer_urls.into_iter().next()
        })
    };
    let identity =
        transport::Identity { cluster_id: cluster.cluster_id, member_id: cluster.local.id };
    let snapshot_dir = config.data_dir.join("member").join("snap");
    std::fs::create_dir_all(&snapshot_dir)
        .with_context(|| format!("creating {}", snapshot_dir.display()))?;
    clear_stale_copies(&snapshot_dir);
    let copy_store: transport::CopyStore = {
        let (backend, dir) = (backend.clone(), snapshot_dir.clone());
        Arc::new(move |index| copy_store(&backend, &dir, index))
    };
    let peers: transport::Peers = {
        let (backend, local) = (backend.clone(), cluster.local.id);
        Arc::new(move || {
            let Ok(txn) = backend.read_txn() else {
                return Vec::new();
            };
            let members = membership::load(&backend, &txn).unwrap_or_default();
            members.into_iter().map(|m| m.id).filter(|id| *id != local).collect()
        })
    };
    let peer_health = transport::PeerHealth::default();
    let links = transport::Links {
        identity,
        resolve,
        peers,
        deliver: deliver.clone(),
        copy_store,
        health: peer_health.clone(),
    };
    let router = transport::start(pending, links);
    let limits = Limits {
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        // etcd: 5 s plus two election timeouts.
        request_timeout: std::time::Duration::from_secs(5) + 2 * config.election_timeout,
        quota_bytes: if config.quota_backend_bytes > 0 {
            config.quota_backend_bytes as u64
        } else {
            crate::server::DEFAULT_QUOTA_BYTES
        },
    };
    let server = Server::new(
        store,
        raft.inputs.clone(),
        raft.status,
        cluster,
        lessor,
        auth.clone(),
        Settings {
            limits,
            etcd_version: config.etcd_version.clone(),
            snapshot_dir: snapshot_dir.clone(),
            peer_health,
            client_cert_auth: config.client_tls.as_ref().is_some_and(|t| t.client_cert_auth),
        },
    );
    let lease_loop = tokio::spawn(server.clone().run_lease_loop());
    let token_sweep = tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            auth.sweep_tokens();
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for ((listener, addr), url) in peer_listeners.into_iter().zip(&config.listen_peer_urls) {
        let tls = peer_tls.clone().filter(|_| url.scheme() == "https");
        let service = crate::api::peer::PeerService {
            server: server.clone(),
            deliver: deliver.clone(),
            snapshot_dir: snapshot_dir.clone(),
        };
        let mut stop = stop_rx.clone();
        if tls.is_some() {
            tracing::info!(address = %addr, "serving peer traffic securely");
        } else {
            tracing::info!(address = %addr, "serving peer traffic insecurely");
        }
        tasks.push(tokio::spawn(crate::api::peer::serve(service, listener, tls, async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }
    for ((listener, addr), url) in listeners.into_iter().zip(&config.listen_client_urls) {
        let settings =
            crate::api::ApiSettings { watch_progress_interval: config.watch_progress_interval };
        let router = crate::api::router(server.clone(), hub.clone(), settings).await;
        let mut stop = stop_rx.clone();
        let tls = client_tls.clone().filter(|_| url.scheme() == "https");
        if tls.is_some() {
            tracing::info!(address = %addr, "serving client traffic securely");
        } else {
            tracing::info!(address = %addr, "serving client traffic insecurely; this is strongly discouraged!");
        }
        tasks.push(tokio::spawn(crate::api::serve(router, listener, tls, async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }
    for (listener, addr) in metrics_listeners {
        let router = crate::api::metrics_router(server.clone());
        let mut stop = stop_rx.clone();
        tracing::info!(address = %addr, "serving metrics");
        tasks.push(tokio::spawn(crate::api::serve(router, listener, None, async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }
    // As etcd, "ready" means requests can be served now, which needs a known leader (etcd
    // waits until it published itself through raft).
    server.wait_for_leader().await;
    publish(&server).await;
    tracing::info!("ready to serve client requests");

    shutdown.await;
    tracing::info!("received shutdown signal; stopping");
    let _ = stop_tx.send(true);
    lease_loop.abort();
    token_sweep.abort();
    router.abort();
    // Open connections end the graceful stop, but the other members' raft streams stay open
    // as long as those members run (and watch streams as long as their clients): like etcd,
    // which gives its gRPC servers a moment before closing them, wait only so long.
    let aborts: Vec<_> = tasks.iter().map(|task| task.abort_handle()).collect();
    let serving = async {
        for task in tasks {
            task.await.context("client server task")?.context("serving clients")?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(GRACEFUL_STOP, serving).await {
        Ok(served) => served?,
        Err(_) => {
            tracing::info!("closing the connections still open after {GRACEFUL_STOP:?}");
            aborts.iter().for_each(|task| task.abort());
        }
    }
    drop(server);
    let _ = raft.inputs.send(Input::Stop);
    tokio::task::spawn_blocking(move || raft_thread.join()).await.ok();
    tracing::info!("stopped serving clients");
    Ok(())
}

/// How long a stopping member lets open connections finish.
const GRACEFUL_STOP: std::time::Duration = std::time::Duration::from_secs(2);

/// Store copies left by a crash mid-transfer are of no use.
fn clear_stale_copies(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("incoming-") {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if name.starts_with("outgoing-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A consistent copy of the store for a member behind the compacted log, once this member
/// applied at least `index` (the index raft promised in its snapshot message).
fn copy_store(
    backend: &Backend,
    dir: &std::path::Path,
    index: u64,
) -> Result<std::path::PathBuf, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let applied = backend
            .read_txn()
            .and_then(|txn| backend.meta_u64(&txn, meta_key::APPLIED_INDEX))
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        if applied >= index {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("applied index {applied} did not reach {index}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let path = dir.join(format!("outgoing-{:016x}.mdb", rand::random::<u64>()));
    backend.copy_to(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Makes this member's name and client URLs known to the others through raft, as etcd's
/// publish does before it serves clients; retried until it commits.
async fn publish(server: &crate::server::Server) {
    loop {
        match server.publish_self().await {
            Ok(()) => {
                tracing::info!("published local member to cluster through raft");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to publish local member; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn bind_all(
    urls: &[url::Url],
    default_port: u16,
) -> anyhow::Result<Vec<(TcpListener, SocketAddr)>> {
    let mut out = Vec::new();
    for url in urls {
        let host = url.host_str().unwrap_or("localhost");
        let port = url.port().unwrap_or(default_port);
        let listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("listen tcp {}: cannot bind", display_url(url)))?;
        let addr = listener.local_addr()?;
        out.push((listener, addr));
    }
    Ok(out)
}

/// On first start the ids and the membership come from the flags (as etcd computes them) and
/// are stored; on a restart the stored ones win, as etcd ignores `--initial-*` once a data
/// dir exists.
async fn identity(config: &Config, backend: &Backend) -> anyhow::Result<(Cluster, Vec<Member>)> {
    let initial = config.initial_members();
    let own_urls = config.own_cluster_urls();
    if own_urls.is_empty() {
        bail!("couldn't find local name {:?} in the initial cluster configuration", config.name);
    }
    let mut advertised: Vec<String> =
        config.initial_advertise_peer_urls.iter().map(display_url).collect();
    let mut listed = own_urls.clone();
    advertised.sort();
    listed.sort();
    if advertised != listed {
        bail!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} ",
            config.name,
            listed.join(","),
            advertised.join(",")
        );
    }

    let txn = backend.read_txn()?;
    let stored = (
        backend.meta_u64(&txn, meta_key::MEMBER_ID)?,
        backend.meta_u64(&txn, meta_key::CLUSTER_ID)?,
    );
    let stored_members = membership::load(backend, &txn)?;
    drop(txn);
    let (member_id, cluster_id, members) = match stored {
        (Some(m), Some(c)) if !stored_members.is_empty() => (m, c, stored_members),
        _ => {
            let (member_id, cluster_id, members) =
                if config.initial_cluster_state == ClusterState::Existing {
                    join(&initial, &own_urls).await?
                } else {
                    cluster::bootstrap(&initial, &own_urls, &config.initial_cluster_token)
                };
            let mut txn = backend.write_txn()?;
            backend.put_meta_i64(&mut txn, meta_key::MEMBER_ID, member_id as i64)?;
            backend.put_meta_i64(&mut txn, meta_key::CLUSTER_ID, cluster_id as i64)?;
            membership::save(backend, &mut txn, &members)?;
            txn.commit_durable()?;
            (member_id, cluster_id, members)
        }
    };
    let local = Member {
        id: member_id,
        name: config.name.clone(),
        peer_urls: own_urls,
        client_urls: config.advertise_client_urls.iter().map(display_url).collect(),
        is_learner: members.iter().any(|m| m.id == member_id && m.is_learner),
    };
    Ok((Cluster { cluster_id, local }, members))
}

/// Joining a running cluster (`--initial-cluster-state existing`), after `member add`:
/// the membership and the cluster id come from a running member, as etcd fetches them; this
/// member is the one added with its peer URLs.
async fn join(
    initial: &[(String, Vec<String>)],
    own_urls: &[String],
) -> anyhow::Result<(u64, u64, Vec<Member>)> {
    let mut failures = Vec::new();
    let others = initial.iter().flat_map(|(_, urls)| urls).filter(|u| !own_urls.contains(u));
    for url in others {
        match crate::peer::forward::fetch_members(url).await {
            Ok((cluster_id, members)) => {
                let mut own = own_urls.to_vec();
                own.sort();
                let me = members.iter().find(|m| {
                    let mut urls = m.peer_urls.clone();
                    urls.sort();
                    urls == own
                });
                let Some(me) = me else {
                    bail!(
                        "error validating peerURLs: no member of cluster {cluster_id:x} has peer \
                         URLs {}; add this member first (etcdctl member add)",
                        own.join(",")
                    );
                };
                return Ok((me.id, cluster_id, members));
            }
            Err(err) => failures.push(err.to_string()),
        }
    }
    bail!(
        "cannot fetch cluster info from the peer urls of --initial-cluster: {}",
        if failures.is_empty() {
            "no other member listed".to_string()
        } else {
            failures.join("; ")
        }
    )
}
