package auth

import (
	"testing"

	"rsetcd/compat-tests/internal/etcdproc"
)

// TestAuthDiff runs every scenario against a fresh etcd 3.6.16 and a fresh
// rsetcd and requires identical transcripts. Subtests run in parallel (up to
// -parallel, default GOMAXPROCS); select one with -run 'TestAuthDiff/perms/kv'.
func TestAuthDiff(t *testing.T) {
	etcdproc.BinFromEnv(t)
	etcdproc.MustRefBin(t)
	var all []scenario
	for _, group := range [][]scenario{mgmtScenarios, authnScenarios, permScenarios, tokenScenarios} {
		all = append(all, group...)
	}
	seen := map[string]bool{}
	for _, sc := range all {
		if seen[sc.name] {
			t.Fatalf("duplicate scenario name %q", sc.name)
		}
		seen[sc.name] = true
	}
	for name := range scenarioArgs {
		if !seen[name] {
			t.Fatalf("scenarioArgs names no scenario: %q", name)
		}
	}
	for _, sc := range all {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, sc)
		})
	}
}
