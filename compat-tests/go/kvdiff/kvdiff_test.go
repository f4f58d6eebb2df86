package kvdiff

import (
	"testing"

	"rsetcd/compat-tests/internal/etcdproc"
)

// TestKVDiff runs every scenario against a fresh etcd 3.6.16 and a fresh
// rsetcd and requires identical transcripts. Subtests run in parallel (up to
// -parallel, default GOMAXPROCS); select one with -run 'TestKVDiff/txn/nested'.
func TestKVDiff(t *testing.T) {
	etcdproc.BinFromEnv(t)
	etcdproc.MustRefBin(t)
	all := append(append([]scenario{}, txnScenarios...), kvScenarios...)
	seen := map[string]bool{}
	for _, sc := range all {
		if seen[sc.name] {
			t.Fatalf("duplicate scenario name %q", sc.name)
		}
		seen[sc.name] = true
	}
	for _, sc := range all {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, sc)
		})
	}
}
