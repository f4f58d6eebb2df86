//! Maintenance work on a member: leadership transfer, the whole-store hash, and consistent
//! copies of the store for `etcdctl snapshot save`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Error, Result, Server};
use crate::cluster::membership;
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
use crate::pb::rsetcdpb::raft_request::Request;
use crate::raft::Input;

impl Server {
    /// etcd's quota check before proposing what grows the store: over `--quota-backend-bytes`
    /// this member raises NOSPACE (through raft, so every member refuses such writes) and
    /// the request fails.
    pub(super) async fn check_quota(&self, cost: usize) -> Result<()> {
        let quota = self.inner.limits.quota_bytes;
        // The exact count walks every table's statistics: only when the cheap bound is over.
        if self.backend().high_water() + cost as u64 <= quota {
            return Ok(());
        }
        let in_use = self.backend().size_in_use();
        if in_use + cost as u64 <= quota {
            return Ok(());
        }
        let local = self.inner.cluster.local.id;
        let raised = self.alarms()?.iter().any(|a| a.member_id == local);
        if !raised {
            tracing::warn!(
                in_use,
                quota = self.inner.limits.quota_bytes,
                "database space exceeded; raising the NOSPACE alarm"
            );
            let req = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: local,
                alarm: AlarmType::Nospace as i32,
            };
            self.propose(Request::Alarm(req), None).await?;
        }
        Err(Error::Mvcc(crate::mvcc::Error::NoSpace))
    }

    /// The active alarms.
    pub fn alarms(&self) -> Result<Vec<AlarmMember>> {
        let backend = self.backend();
        let txn = backend.read_txn().map_err(crate::mvcc::Error::from)?;
        Ok(crate::alarm::load(backend, &txn).map_err(crate::mvcc::Error::from)?)
    }

    /// etcd's Alarm RPC: GET lists every alarm; ACTIVATE and DEACTIVATE go through raft and
    /// answer with the alarm they changed.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<Vec<AlarmMember>> {
        if req.action == AlarmAction::Get as i32 {
            return self.alarms();
        }
        match self.propose(Request::Alarm(req), None).await? {
            crate::apply::Applied::Alarms(changed) => Ok(changed),
            other => unreachable!("an alarm request applies as alarms, not {other:?}"),
        }
    }

    /// Hands leadership to `target`, as etcd's MoveLeader: only the leader may, only to a
    /// voting member, and the answer waits until the target leads.
    pub async fn move_leader(&self, target: u64) -> Result<()> {
        let local = self.inner.cluster.local.id;
        if self.inner.status.leader.load(Ordering::Relaxed) != local {
            return Err(Error::NotLeader);
        }
        let members = self.members(false).await?;
        if !members.iter().any(|m| m.id == target && !m.is_learner) {
            return Err(Error::BadLeaderTransferee);
        }
        if target == local {
            return Ok(());
        }
        self.inner.raft.send(Input::TransferLeader(target)).map_err(|_| Error::Stopped)?;
        let deadline = tokio::time::Instant::now() + self.inner.limits.request_timeout;
        while self.inner.status.leader.load(Ordering::Relaxed) != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::LeaderTransferTimeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// etcd's Maintenance.Hash: a CRC-32C over the replicated state (every member at the
    /// same applied index has the same one), with the current revision.
    pub fn hash_all(&self) -> Result<(u32, i64)> {
        let store = &self.inner.store;
        let txn = store.backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let hash = store.backend.state_hash(&txn).map_err(crate::mvcc::Error::from)?;
        Ok((hash, store.current_rev(&txn)?))
    }

    /// Writes a consistent copy of the whole store to a new file and returns its path; the
    /// caller removes it.
    pub async fn store_copy(&self) -> Result<PathBuf> {
        let backend = self.backend().clone();
        let dir = self.inner.snapshot_dir.clone();
        let path = dir.join(format!("outgoing-{:016x}.mdb", rand::random::<u64>()));
        let target = path.clone();
        tokio::task::spawn_blocking(move || backend.copy_to(&target))
            .await
            .map_err(|_| Error::Stopped)?
            .map_err(crate::mvcc::Error::from)?;
        Ok(path)
    }

    /// etcd's Defragment of this member's store.
    pub async fn defragment(&self) -> Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner.raft.send(Input::Defragment { reply }).map_err(|_| Error::Stopped)?;
        let result = answer.await.map_err(|_| Error::Stopped)?;
        Ok(result.map_err(crate::mvcc::Error::from)?)
    }

    /// Keys that exist now (etcd's `etcd_debugging_mvcc_keys_total`).
    pub fn key_count(&self) -> Result<u64> {
        let backend = self.backend();
        let txn = backend.read_txn().map_err(crate::mvcc::Error::from)?;
        Ok(backend.live().len(&txn).map_err(crate::mvcc::Error::from)?)
    }

    /// Peers connected now.
    pub fn active_peers(&self) -> usize {
        let health = &self.inner.peer_health;
        self.member_ids()
            .unwrap_or_default()
            .into_iter()
            .filter(|id| health.active_since(*id).is_some())
            .count()
    }

    /// The ids of the current members (for checks that need no read barrier).
    pub fn member_ids(&self) -> Result<Vec<u64>> {
        let backend = self.backend();
        let txn = backend.read_txn().map_err(crate::mvcc::Error::from)?;
        let members = membership::load(backend, &txn).map_err(crate::mvcc::Error::from)?;
        Ok(members.into_iter().map(|m| m.id).collect())
    }
}
