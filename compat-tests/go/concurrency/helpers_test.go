package concurrency

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"rsetcd/compat-tests/internal/etcdproc"
)

const (
	startTimeout = 60 * time.Second
	// opTimeout bounds single calls; generous, it only keeps a broken
	// server from hanging the test.
	opTimeout = 30 * time.Second
)

// server is one fresh single-member server started for one subtest.
type server struct {
	name string // "rsetcd" or "etcd"
	proc *etcdproc.Proc
}

// client returns a new client of s, closed when t ends.
func (s *server) client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := s.proc.Client()
	if err != nil {
		t.Fatalf("%s: new client: %v", s.name, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// forEachServer runs fn as two parallel subtests, "rsetcd" against
// $RSETCD_BIN and "etcd" against the reference etcd (which checks the test
// itself), each with its own freshly started server. The whole test skips
// when $RSETCD_BIN is unset; only the etcd subtest skips when the reference
// binary is missing.
func forEachServer(t *testing.T, fn func(t *testing.T, s *server)) {
	t.Helper()
	sut := etcdproc.BinFromEnv(t)
	ref, refErr := etcdproc.RefBin()
	t.Parallel()
	for _, tc := range []struct{ name, bin string }{{"rsetcd", sut}, {"etcd", ref}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.bin == "" {
				t.Skipf("no reference etcd to check this test against: %v", refErr)
			}
			p := etcdproc.New(t, tc.bin, "concurrency")
			if err := p.Start(startTimeout); err != nil {
				t.Fatalf("starting %s (%s): %v", tc.name, tc.bin, err)
			}
			fn(t, &server{name: tc.name, proc: p})
		})
	}
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
