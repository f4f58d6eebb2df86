// Package auth holds differential tests of the Auth service and of the
// permission checks every other service makes once auth is enabled: each
// scenario starts a fresh rsetcd ($RSETCD_BIN) and a fresh reference etcd
// 3.6.16 ($REF_ETCD_BIN, default <repo>/.cache/reference/bin/etcd), runs the
// same calls against both, records every response and every error (gRPC code
// and message) and requires both transcripts to be identical.
//
// Calls are made by named callers: clientv3 clients created with
// clientv3.Config{Username, Password} (which authenticate in New and refresh
// their token on "invalid auth token"), and a plain gRPC connection sending
// explicit "token" metadata (a token from Authenticate, a made-up one, an
// empty one, or none), so that errors the client would hide are seen.
//
// Normalization is small: in every ResponseHeader cluster_id, member_id and
// raft_term print as "<set>" (set-versus-unset is compared; revisions are
// compared exactly), an AuthenticateResponse token prints as "<set>" (plus
// whether it differs from every earlier token), remaining lease TTLs are
// checked to lie within [granted-10, granted], and Maintenance/Cluster
// answers whose fields differ between servers by nature (IDs, URLs, hashes,
// sizes) are summarized as their type, header and member count.
//
// Scenarios also state what etcd answers (Want, WantEach): a step whose
// output lacks that text fails the test on the server that gave it, so the
// transcripts are known to contain the errors they are meant to exercise.
//
// jwt_test.go runs JWT scenarios the same way (TestJWTDiff), both servers
// started with the same --auth-token jwt options and key files made by the
// test, which also signs tokens of its own; TestJWTStartOptions compares
// only whether each server starts with given --auth-token options, and
// TestJWTCrossServer uses tokens of one server on the other.
//
// The tests skip when RSETCD_BIN is unset.
package auth
