package watch

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

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

// startServer starts bin as a fresh single-member server with etcd's flags
// plus extra; it and its client go away when t ends.
func startServer(t testing.TB, name, bin string, extra ...string) *server {
	t.Helper()
	p := etcdproc.New(t, bin, "watch")
	p.ExtraArgs = extra
	if err := p.Start(startTimeout); err != nil {
		t.Fatalf("starting %s (%s): %v", name, bin, err)
	}
	s := &server{name: name, proc: p}
	s.cli = s.newClient(t)
	return s
}

// newClient returns another client of s (its own gRPC connection, so its
// own watch streams), closed when t ends.
func (s *server) newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:          []string{s.proc.ClientURL},
		DialTimeout:        5 * time.Second,
		Logger:             zap.NewNop(),
		MaxCallSendMsgSize: 16 << 20,
	})
	if err != nil {
		t.Fatalf("%s: new client: %v", s.name, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
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
// and a fresh reference etcd (the latter checks the test itself), both
// started with extra flags.
func forEachServer(t *testing.T, fn func(t *testing.T, s *server), extra ...string) {
	t.Helper()
	sut, ref := binaries(t)
	for _, tc := range []struct{ name, bin string }{{"rsetcd", sut}, {"etcd", ref}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fn(t, startServer(t, tc.name, tc.bin, extra...))
		})
	}
}

// differential runs fn on a fresh rsetcd and a fresh reference etcd (in
// parallel) and requires the two transcripts fn returns to be identical.
func differential(t *testing.T, fn func(t *testing.T, s *server) []string, extra ...string) {
	t.Helper()
	sut, ref := binaries(t)
	var got [2][]string
	t.Run("servers", func(t *testing.T) {
		for i, tc := range []struct{ name, bin string }{{"rsetcd", sut}, {"etcd", ref}} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				got[i] = fn(t, startServer(t, tc.name, tc.bin, extra...))
			})
		}
	})
	if t.Failed() {
		return
	}
	compareTranscripts(t, got[1], got[0])
}

// compareTranscripts fails t with the differing lines (- etcd, + rsetcd).
func compareTranscripts(t *testing.T, ref, sut []string) {
	t.Helper()
	n := len(ref)
	if len(sut) > n {
		n = len(sut)
	}
	var diff []string
	for i := 0; i < n; i++ {
		var r, s string
		if i < len(ref) {
			r = ref[i]
		} else {
			r = "(missing)"
		}
		if i < len(sut) {
			s = sut[i]
		} else {
			s = "(missing)"
		}
		if r != s {
			diff = append(diff, fmt.Sprintf("line %d:\n  - etcd:   %s\n  + rsetcd: %s", i+1, r, s))
		}
	}
	if len(diff) > 0 {
		t.Errorf("transcripts differ (%d of %d lines):\n%s", len(diff), n, strings.Join(diff, "\n"))
	} else {
		t.Logf("transcripts identical (%d lines)", n)
	}
	t.Logf("etcd transcript:\n  %s", strings.Join(ref, "\n  "))
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func errString(err error) string { return wire.ErrString(err) }

// fmtKV renders a KeyValue with every field; nil is "-".
func fmtKV(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "-"
	}
	return fmt.Sprintf("{key=%q create=%d mod=%d ver=%d lease=%d value=%s}", kv.Key,
		kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease, fmtValue(kv.Value))
}

// fmtValue shows short values as they are and long ones by length and ends.
func fmtValue(v []byte) string {
	if len(v) <= 40 {
		return strconv.Quote(string(v))
	}
	return fmt.Sprintf("<%d bytes %q..%q>", len(v), v[:8], v[len(v)-8:])
}

// fmtEvent renders one event with its kv and prev_kv.
func fmtEvent(ev *mvccpb.Event) string {
	return fmt.Sprintf("%s kv=%s prev=%s", ev.Type, fmtKV(ev.Kv), fmtKV(ev.PrevKv))
}

// fmtWatchResponse renders what a clientv3 WatchResponse carries, except
// the cluster and member ids and the raft term.
func fmtWatchResponse(r clientv3.WatchResponse) []string {
	out := []string{fmt.Sprintf("resp rev=%d created=%v canceled=%v compact=%d progress=%v events=%d err=%s",
		r.Header.Revision, r.Created, r.Canceled, r.CompactRevision, r.IsProgressNotify(),
		len(r.Events), errString(r.Err()))}
	for _, ev := range r.Events {
		out = append(out, "  "+fmtEvent((*mvccpb.Event)(ev)))
	}
	return out
}

// currentRev returns the store's current revision (from a Get's header).
func currentRev(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	r, err := cli.Get(ctx, "rev-probe")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return r.Header.Revision
}

// mustPut puts key=val and returns the revision of the write.
func mustPut(t testing.TB, cli *clientv3.Client, key, val string) int64 {
	t.Helper()
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	r, err := cli.Put(ctx, key, val)
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return r.Header.Revision
}

// recvResp waits up to d for the next response on ch; ok is false on a
// timeout, closed is true when ch was closed.
func recvResp(ch clientv3.WatchChan, d time.Duration) (r clientv3.WatchResponse, ok, closed bool) {
	select {
	case r, open := <-ch:
		return r, open, !open
	case <-time.After(d):
		return clientv3.WatchResponse{}, false, false
	}
}

// memInfo is a process's memory from /proc/<pid>/status, in KiB.
type memInfo struct {
	RSS, HWM, Anon, File int64 // VmRSS, VmHWM (peak RSS), RssAnon, RssFile
}

func (m memInfo) String() string {
	return fmt.Sprintf("RSS %d MiB (anon %d MiB, file %d MiB)", m.RSS>>10, m.Anon>>10, m.File>>10)
}

// readMem reads /proc/<pid>/status.
func readMem(pid int) (memInfo, error) {
	var m memInfo
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			m.RSS = v
		case "VmHWM:":
			m.HWM = v
		case "RssAnon:":
			m.Anon = v
		case "RssFile:":
			m.File = v
		}
	}
	return m, sc.Err()
}
