//! The member's health as etcd's HTTP probes report it (`/health`, `/livez`, `/readyz`):
//! which checks exist and how each is decided. The HTTP shapes live in `api/http_endpoints`.

use std::sync::atomic::Ordering;

use crate::pb::etcdserverpb::RangeRequest;

use super::Server;

/// The named checks of `/livez` and `/readyz`, in the order rsetcd lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

impl Check {
    pub const ALL: [Check; 4] = [
        Check::DataCorruption,
        Check::SerializableRead,
        Check::LinearizableRead,
        Check::NonLearner,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }

    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl Server {
    /// Runs one check; the error is the reason it failed.
    pub async fn check(&self, check: Check) -> Result<(), String> {
        match check {
            // rsetcd raises no CORRUPT alarm (no corruption checker yet), and a member is
            // never a learner until membership changes exist: both hold by construction.
            Check::DataCorruption | Check::NonLearner => Ok(()),
            Check::SerializableRead => self.probe_read(true).await,
            Check::LinearizableRead => self.probe_read(false).await,
        }
    }

    /// `/health`: no alarm but the `excluded` ones (by name, `NOSPACE`), a leader is known
    /// (unless `serializable`) and a read of the key "health" succeeds. The error is etcd's
    /// reason text.
    pub async fn health(&self, serializable: bool, excluded: &[&str]) -> Result<(), String> {
        for alarm in self.alarms().map_err(|err| format!("etcdserver: {err}"))? {
            let name = crate::alarm::name(alarm.alarm);
            if !excluded.contains(&name) {
                return Err(format!("ALARM {name}"));
            }
        }
        if !serializable && self.inner.status.leader.load(Ordering::Relaxed) == 0 {
            return Err("RAFT NO LEADER".to_string());
        }
        self.probe_read(serializable).await.map_err(|err| format!("RANGE ERROR:{err}"))
    }

    /// Returns once raft knows a leader.
    pub async fn wait_for_leader(&self) {
        while self.inner.status.leader.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn probe_read(&self, serializable: bool) -> Result<(), String> {
        let req = RangeRequest { key: b"health".to_vec(), serializable, ..Default::default() };
        // The member's own probe (etcd treats permission errors as healthy).
        let member = crate::auth::AuthInfo::member();
        self.range(req, Some(&member)).await.map(|_| ()).map_err(|err| format!("etcdserver: {err}"))
    }
}
