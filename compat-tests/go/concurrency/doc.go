// Package concurrency runs etcd's client-side recipes
// (go.etcd.io/etcd/client/v3/concurrency, v3.6.16) against rsetcd: Mutex
// under contention within one process and across processes, Election with
// several candidates and an observer, STM money transfers under the
// serializable and repeatable-read isolation levels, and Session lease
// expiry.
//
// Each test runs against rsetcd ($RSETCD_BIN; the tests skip when it is
// unset) and, as a check of the test itself, against the reference etcd
// ($REF_ETCD_BIN, default <repo>/.cache/reference/bin/etcd; that subtest
// skips when it is missing). Every subtest starts its own fresh server.
package concurrency
