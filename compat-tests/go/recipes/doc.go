// Package recipes tests the server-side recipe services that etcd serves on
// its client port, v3electionpb.Election (Campaign, Proclaim, Leader,
// Observe, Resign) and v3lockpb.Lock (Lock, Unlock), through their generated
// gRPC clients (go.etcd.io/etcd/server/v3 v3.6.16), with clientv3 for leases
// and KV checks.
//
//   - TestRecipesDiff: the same scripted calls against a fresh rsetcd and a
//     fresh reference etcd; every response (ResponseHeader cluster_id,
//     member_id and raft_term shown only as "<set>") and every error (gRPC
//     code and message) must be identical. Leases are granted with fixed IDs
//     so keys such as "<name>/<lease hex>" line up; a lease the server grants
//     itself (lease 0) is shown as a placeholder after its TTL is checked.
//     Scenarios: lock, lock-lease-0, election, errors, waiters (headers of
//     a Lock/Campaign that waited), cancelled-waiters (a Lock/Campaign whose
//     caller gives up removes its key), revoked-waiter (Lock fails with
//     "mutex: session is expired" when its own key went while waiting),
//     observe.
//   - TestLockContention: 5 clients, each with its own lease, take the same
//     lock 20 times each and increment a counter key with Get+Put inside the
//     critical section; no two holders overlap and no increment is lost.
//   - TestElectionHandover: A wins, B's Campaign blocks until A resigns (or
//     A's lease is revoked); Leader then names B and an Observe stream sees
//     A's values then B's, in order.
//   - TestObserveEveryPut: 50 concurrent puts of the leader key each reach
//     an Observe stream, in revision order (etcd watches the leader key).
//   - TestLeaseExpiryReleases: a lock holder (and an election leader) whose
//     TTL-2 lease is not kept alive lets the waiter in once the lease
//     expires.
//
// Everything but TestRecipesDiff runs against rsetcd and, as a check of the
// test itself, against the reference etcd (that subtest skips when the
// binary is missing). The tests skip when $RSETCD_BIN is unset; the
// reference etcd is $REF_ETCD_BIN or <repo>/.cache/reference/bin/etcd.
package recipes
