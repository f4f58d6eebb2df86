package lease

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"rsetcd/compat-tests/internal/etcdproc"
	"rsetcd/compat-tests/internal/wire"
)

const (
	startTimeout = 60 * time.Second
	// opTimeout bounds single calls; generous, it only keeps a broken
	// server from hanging the test.
	opTimeout = 30 * time.Second
)

// server is one fresh single-member server.
type server struct {
	name string // "rsetcd" or "etcd"
	proc *etcdproc.Proc
	cli  *clientv3.Client
}

// startServer starts bin as a fresh single-member server; it and its client
// go away when t ends.
func startServer(t testing.TB, name, bin string) *server {
	t.Helper()
	p := etcdproc.New(t, bin, "lease")
	if err := p.Start(startTimeout); err != nil {
		t.Fatalf("starting %s (%s): %v", name, bin, err)
	}
	cli, err := p.Client()
	if err != nil {
		t.Fatalf("%s: new client: %v", name, err)
	}
	t.Cleanup(func() { cli.Close() })
	return &server{name: name, proc: p, cli: cli}
}

// binaries returns rsetcd's binary (skipping the test when $RSETCD_BIN is
// unset) and the reference etcd's (failing the test when it is missing).
func binaries(t testing.TB) (sut, ref string) {
	t.Helper()
	sut = etcdproc.BinFromEnv(t)
	ref, err := etcdproc.RefBin()
	if err != nil {
		t.Fatal(err)
	}
	return sut, ref
}

// forEachServer runs fn as two parallel subtests, against a fresh rsetcd
// and a fresh reference etcd (the latter checks the test itself).
func forEachServer(t *testing.T, fn func(t *testing.T, s *server)) {
	t.Helper()
	sut, ref := binaries(t)
	t.Parallel()
	for _, tc := range []struct{ name, bin string }{{"rsetcd", sut}, {"etcd", ref}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fn(t, startServer(t, tc.name, tc.bin))
		})
	}
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func errString(err error) string { return wire.ErrString(err) }
