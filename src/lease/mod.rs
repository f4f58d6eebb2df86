//! The lessor: when each lease expires. Grants and revokes reach it from the applier once
//! committed; keep-alives renew it from memory. It only *detects* expiry: the server proposes
//! a revoke through raft, so every member deletes the same keys at the same revision.
//!
//! Remaining time survives restarts through the replicated lease clock: the leader proposes
//! a tick about every 500 ms while leases exist, carrying the time elapsed and the leases
//! renewed since the previous tick (see [`Lessor::take_renewals`]); each lease's deadline is
//! stored on that clock, so a restarted member resumes every lease with what it had left, to
//! within one tick. A keep-alive is answered from memory at once, as etcd's leader does; the
//! tick that carries it follows within [`RENEWAL_FLUSH`]. (etcd 3.6 by default persists no
//! remaining TTL at all: every lease restarts with its full TTL.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How soon after a keep-alive the tick carrying it is proposed. Keep-alives arriving
/// meanwhile share that tick, so a keep-alive storm costs a few raft writes a second.
pub const RENEWAL_FLUSH: Duration = Duration::from_millis(50);

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

#[derive(Default)]
struct Leases {
    by_id: HashMap<i64, Lease>,
    /// Renewed since the last tick was taken.
    renewed: HashSet<i64>,
}

#[derive(Clone, Default)]
pub struct Lessor {
    leases: Arc<Mutex<Leases>>,
}

impl Lessor {
    fn lock(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A lease granted now lives for its full TTL.
    pub fn granted(&self, id: i64, ttl: i64) {
        self.resumed(id, ttl, ttl.max(0).saturating_mul(1000));
    }

    /// A lease loaded at start-up with `remaining_ms` left (possibly negative: expired).
    pub fn resumed(&self, id: i64, ttl: i64, remaining_ms: i64) {
        let deadline = Instant::now() + Duration::from_millis(remaining_ms.max(0) as u64);
        self.lock().by_id.insert(id, Lease { ttl, deadline, revoking: false });
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_id.is_empty()
    }

    /// The leases renewed since the previous call, with the milliseconds each has left.
    pub fn take_renewals(&self) -> Vec<(i64, i64)> {
        let now = Instant::now();
        let mut leases = self.lock();
        let renewed: Vec<i64> = leases.renewed.drain().collect();
        let mut out: Vec<(i64, i64)> = renewed
            .into_iter()
            .filter_map(|id| {
                let lease = leases.by_id.get(&id)?;
                Some((id, lease.deadline.saturating_duration_since(now).as_millis() as i64))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Forgets every lease and loads those of `store`, each with the time it has left on the
    /// replicated lease clock: at start-up, and after a store copy replaced the state.
    pub fn reload(&self, store: &crate::mvcc::Store) -> crate::mvcc::Result<()> {
        let txn = store.backend.read_txn()?;
        let clock = store.lease_clock(&txn)?;
        let stored = store.leases(&txn)?;
        self.lock().by_id.clear();
        self.lock().renewed.clear();
        for lease in stored {
            self.resumed(lease.id, lease.ttl, lease.deadline_ms - clock);
        }
        Ok(())
    }

    /// A renewal made durable by a lease tick: the lease lives at least `remaining_ms` from
    /// now. Followers learn keep-alives this way, so a new leader knows the deadlines; on the
    /// leader itself a later keep-alive may already have pushed the deadline further.
    pub fn renewed(&self, id: i64, remaining_ms: i64) {
        let deadline = Instant::now() + Duration::from_millis(remaining_ms.max(0) as u64);
        if let Some(lease) = self.lock().by_id.get_mut(&id) {
            lease.deadline = lease.deadline.max(deadline);
        }
    }

    pub fn revoked(&self, id: i64) {
        let mut leases = self.lock();
        leases.by_id.remove(&id);
        leases.renewed.remove(&id);
    }

    /// Restarts a lease's TTL and returns it; `None` for an unknown or already expired lease.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let mut leases = self.lock();
        let lease = leases.by_id.get_mut(&id)?;
        let now = Instant::now();
        if lease.deadline <= now {
            return None;
        }
        lease.deadline = now + Duration::from_secs(lease.ttl as u64);
        let ttl = lease.ttl;
        leases.renewed.insert(id);
        Some(ttl)
    }

    pub fn remaining(&self, id: i64) -> Option<Remaining> {
        let leases = self.lock();
        let lease = leases.by_id.get(&id)?;
        let left = lease.deadline.saturating_duration_since(Instant::now());
        // etcd truncates the remaining seconds.
        Some(Remaining { granted_ttl: lease.ttl, ttl: left.as_secs() as i64 })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases past their deadline with no revoke in flight, at most `max`; they are marked as
    /// being revoked until [`Lessor::revoked`] or [`Lessor::revoke_failed`].
    pub fn take_expired(&self, max: usize) -> Vec<i64> {
        let now = Instant::now();
        let mut leases = self.lock();
        let mut expired: Vec<i64> = leases
            .by_id
            .iter()
            .filter(|(_, l)| !l.revoking && l.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        expired.sort_unstable();
        expired.truncate(max);
        for id in &expired {
            if let Some(lease) = leases.by_id.get_mut(id) {
                lease.revoking = true;
            }
        }
        expired
    }

    pub fn revoke_failed(&self, id: i64) {
        if let Some(lease) = self.lock().by_id.get_mut(&id) {
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

    #[test]
    fn renewals_are_reported_once_with_time_left() {
        let lessor = Lessor::default();
        lessor.granted(1, 10);
        lessor.granted(2, 10);
        assert_eq!(lessor.renew(2), Some(10));
        let renewals = lessor.take_renewals();
        assert_eq!(renewals.len(), 1);
        assert_eq!(renewals[0].0, 2);
        assert!((9_000..=10_000).contains(&renewals[0].1), "{renewals:?}");
        assert!(lessor.take_renewals().is_empty());
    }
}
