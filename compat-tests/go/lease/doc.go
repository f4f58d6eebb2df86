// Package lease checks rsetcd's Lease service with etcd's Go client
// (go.etcd.io/etcd/client/v3, v3.6.16):
//
//   - TestLeaseDifferential runs the same Grant/KeepAlive/TimeToLive/Leases/
//     Revoke calls (and lease-attached Puts) on a fresh rsetcd and a fresh
//     reference etcd and compares the results: exactly (errors, IDs chosen by
//     the client, TTLs granted, header revisions, attached keys), and loosely
//     where time matters (remaining TTLs);
//   - TestLeaseExpiry lets 50 leases with 4 keys each expire and checks, with
//     a watch, that each lease's keys are deleted in one revision, in one
//     watch response (against both servers);
//   - TestLeaseRestart (rsetcd only) checks that a lease's remaining TTL
//     survives a SIGKILL and restart.
//
// rsetcd comes from $RSETCD_BIN (the tests skip when it is unset), the
// reference etcd from $REF_ETCD_BIN (default <repo>/.cache/reference/bin/etcd).
package lease
