// Package kvdiff holds differential tests of the KV API: every scenario
// starts a fresh rsetcd ($RSETCD_BIN) and a fresh reference etcd 3.6.16
// ($REF_ETCD_BIN, default <repo>/.cache/reference/bin/etcd), runs the same
// sequence of go.etcd.io/etcd/client/v3 calls (and raw etcdserverpb requests
// the client would not build) against each, records every response and every
// error, and requires both transcripts to be identical.
//
// Normalization is deliberately small: in every ResponseHeader the values of
// cluster_id, member_id and raft_term are replaced by "<set>" (so set-versus-
// unset still counts); revisions are compared as they are. Errors are
// compared by gRPC status code and message.
//
// The tests skip when RSETCD_BIN is unset. Besides the table of scenarios
// (TestKVDiff) the package checks Status and MemberList field by field
// (TestStatus, TestMemberList) and, against rsetcd only, that the services
// not built (Maintenance.Downgrade) answer Unimplemented
// (TestUnbuiltRPCsSayUnimplemented).
package kvdiff
