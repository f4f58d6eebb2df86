//! The lessor: when each lease expires. Grants and revokes reach it from the applier once
//! committed; keep-alives renew it from memory. It only *detects* expiry: the server proposes
//! a revoke through raft, so every member deletes the same keys at the same revision.
//!
//! As etcd without lease checkpoints, a restart gives every lease its full TTL again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// etcd's largest TTL (`MaxLeaseTTL`, seconds).
pub const MAX_TTL: i64 = 9_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: i64,
    deadline: Instant,
    /// A revoke for it has been proposed and not yet applied.
    revoking: bool,
}

/// Remaining life of a lease, as TimeToLive reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub granted_ttl: i64,
    pub ttl: i64,
}

#[derive(Clone, Default)]
pub struct Lessor {
    leases: Arc<Mutex<HashMap<i64, Lease>>>,
}

impl Lessor {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Lease>> {
        self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A lease granted (or loaded at start-up) now lives for its full TTL.
    pub fn granted(&self, id: i64, ttl: i64) {
        let deadline = Instant::now() + Duration::from_secs(ttl.max(0) as u64);
        self.lock().insert(id, Lease { ttl, deadline, revoking: false });
    }

    pub fn revoked(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Restarts a lease's TTL; `None` for an unknown or already expired lease.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let mut leases = self.lock();
        let lease = leases.get_mut(&id)?;
        let now = Instant::now();
        if lease.deadline <= now {
            return None;
        }
        lease.deadline = now + Duration::from_secs(lease.ttl as u64);
        Some(lease.ttl)
    }

    pub fn remaining(&self, id: i64) -> Option<Remaining> {
        let leases = self.lock();
        let lease = leases.get(&id)?;
        let left = lease.deadline.saturating_duration_since(Instant::now());
        // etcd truncates the remaining seconds.
        Some(Remaining { granted_ttl: lease.ttl, ttl: left.as_secs() as i64 })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases past their deadline with no revoke in flight, at most `max`; they are marked as
    /// being revoked until [`Lessor::revoked`] or [`Lessor::revoke_failed`].
    pub fn take_expired(&self, max: usize) -> Vec<i64> {
        let now = Instant::now();
        let mut leases = self.lock();
        let mut expired: Vec<i64> = leases
            .iter()
            .filter(|(_, l)| !l.revoking && l.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        expired.sort_unstable();
        expired.truncate(max);
        for id in &expired {
            if let Some(lease) = leases.get_mut(id) {
                lease.revoking = true;
            }
        }
        expired
    }

    pub fn revoke_failed(&self, id: i64) {
        if let Some(lease) = self.lock().get_mut(&id) {
            lease.revoking = false;
        }
    }
}

/// etcd's smallest TTL: 1.5 election timeouts, rounded up to whole seconds (2 s by default).
pub fn min_ttl(election_timeout: Duration) -> i64 {
    (election_timeout.as_secs_f64() * 1.5).ceil() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_matches_etcd_defaults() {
        assert_eq!(min_ttl(Duration::from_millis(1000)), 2);
        assert_eq!(min_ttl(Duration::from_millis(5000)), 8);
    }

    #[test]
    fn expired_leases_are_handed_out_once() {
        let lessor = Lessor::default();
        lessor.granted(7, 0);
        assert_eq!(lessor.take_expired(10), vec![7]);
        assert!(lessor.take_expired(10).is_empty());
        lessor.revoke_failed(7);
        assert_eq!(lessor.take_expired(10), vec![7]);
        assert_eq!(lessor.renew(7), None);
    }
}
