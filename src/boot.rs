//! Composition root: opens the store, settles the member's identity, starts the raft thread
//! and serves gRPC on every client URL until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::net::TcpListener;

use crate::apply::Applier;
use crate::backend::{meta_key, Backend};
use crate::cluster::{self, Cluster, Member};
use crate::config::{display_url, ClusterState, Config};
use crate::lease::Lessor;
use crate::mvcc::Store;
use crate::raft::NodeConfig;
use crate::server::{Limits, Server};
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
    let listeners = bind_all(&config).await?;

    let backend = Backend::open(&config.data_dir, map_size(config.quota_backend_bytes))
        .with_context(|| format!("opening data dir {}", config.data_dir.display()))?;
    let cluster = identity(&config, &backend)?;
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
        voters: cluster.members.iter().map(|m| m.id).collect(),
        tick: config.heartbeat_interval,
        election_ticks: ticks(config.election_timeout),
        heartbeat_ticks: 1,
        snapshot_count: config.snapshot_count,
        catch_up_entries: 5000,
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
    {
        let txn = backend.read_txn()?;
        let clock = store.lease_clock(&txn)?;
        for lease in store.leases(&txn)? {
            lessor.resumed(lease.id, lease.ttl, lease.deadline_ms - clock);
        }
    }
    let min_lease_ttl = crate::lease::min_ttl(config.election_timeout);
    let applier = Applier::new(store.clone(), hub.clone(), lessor.clone(), min_lease_ttl);
    let raft = crate::raft::node::spawn(node_config, backend, applier).context("starting raft")?;
    let raft_thread = raft.thread;
    let limits = Limits {
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        // etcd: 5 s plus two election timeouts.
        request_timeout: std::time::Duration::from_secs(5) + 2 * config.election_timeout,
    };
    let server = Server::new(
        store,
        raft.inputs,
        raft.status,
        cluster,
        limits,
        lessor,
        config.etcd_version.clone(),
    );
    let lease_loop = tokio::spawn(server.clone().run_lease_loop());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (listener, addr) in listeners {
        let settings = crate::api::ApiSettings {
            quota_bytes: config.quota_backend_bytes,
            watch_progress_interval: config.watch_progress_interval,
        };
        let router = crate::api::router(server.clone(), hub.clone(), settings).await;
        let mut stop = stop_rx.clone();
        tracing::info!(address = %addr, "serving client traffic insecurely; this is strongly discouraged!");
        tasks.push(tokio::spawn(crate::api::serve(router, listener, async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }
    // As etcd, "ready" means requests can be served now, which needs a known leader (etcd
    // waits until it published itself through raft).
    server.wait_for_leader().await;
    tracing::info!("ready to serve client requests");

    shutdown.await;
    tracing::info!("received shutdown signal; stopping");
    let _ = stop_tx.send(true);
    lease_loop.abort();
    for task in tasks {
        task.await.context("client server task")?.context("serving clients")?;
    }
    drop(server);
    tokio::task::spawn_blocking(move || raft_thread.join()).await.ok();
    tracing::info!("stopped serving clients");
    Ok(())
}

async fn bind_all(config: &Config) -> anyhow::Result<Vec<(TcpListener, SocketAddr)>> {
    let mut out = Vec::new();
    for url in &config.listen_client_urls {
        let host = url.host_str().unwrap_or("localhost");
        let port = url.port().unwrap_or(2379);
        let listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("listen tcp {}: cannot bind", display_url(url)))?;
        let addr = listener.local_addr()?;
        out.push((listener, addr));
    }
    Ok(out)
}

/// On first start the ids come from the flags (as etcd computes them) and are stored; on a
/// restart the stored ids win, as etcd ignores `--initial-*` once a data dir exists.
fn identity(config: &Config, backend: &Backend) -> anyhow::Result<Cluster> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in &config.initial_cluster {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    if names.len() > 1 {
        bail!("rsetcd does not support clusters of more than one member yet (--initial-cluster names {})", names.join(", "));
    }
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
    drop(txn);
    let (member_id, cluster_id) = match stored {
        (Some(m), Some(c)) => (m, c),
        _ => {
            if config.initial_cluster_state == ClusterState::Existing {
                bail!("--initial-cluster-state=existing needs a running cluster to join, which rsetcd cannot do yet");
            }
            let member_id = cluster::member_id(&own_urls, &config.initial_cluster_token);
            let cluster_id = cluster::cluster_id(&[member_id]);
            let mut txn = backend.write_txn()?;
            backend.put_meta_i64(&mut txn, meta_key::MEMBER_ID, member_id as i64)?;
            backend.put_meta_i64(&mut txn, meta_key::CLUSTER_ID, cluster_id as i64)?;
            txn.commit()?;
            (member_id, cluster_id)
        }
    };
    let local = Member {
        id: member_id,
        name: config.name.clone(),
        peer_urls: own_urls,
        client_urls: config.advertise_client_urls.iter().map(display_url).collect(),
        is_learner: false,
    };
    Ok(Cluster { cluster_id, local: local.clone(), members: vec![local] })
}
