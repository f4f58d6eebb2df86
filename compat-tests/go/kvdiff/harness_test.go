package kvdiff

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"rsetcd/compat-tests/internal/etcdproc"
)

const (
	memberName   = "kvdiff" // both servers get the same member name
	startTimeout = 60 * time.Second
	stepTimeout  = 20 * time.Second
)

// refBin returns the reference etcd (etcdproc.RefBin: $REF_ETCD_BIN or
// <repo>/.cache/reference/bin/etcd) or fails the test saying how to get one.
func refBin(t testing.TB) string {
	t.Helper()
	bin, err := etcdproc.RefBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// server is one started member with a client.
type server struct {
	label string // "etcd" or "rsetcd"
	proc  *etcdproc.Proc
	quiet *quietTB
	cli   *clientv3.Client
}

func newClient(p *etcdproc.Proc) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{p.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// Large enough that oversized requests reach the server, which must
		// be the one to refuse them.
		MaxCallSendMsgSize: 64 << 20,
		MaxCallRecvMsgSize: 64 << 20,
	})
}

// startPair starts a fresh reference etcd and a fresh rsetcd (each with a new
// data directory and new ports), concurrently; both are killed when t ends.
func startPair(t *testing.T) (ref, sut *server) {
	t.Helper()
	sutBin := etcdproc.BinFromEnv(t)
	refPath := refBin(t)
	ref = &server{label: "etcd", quiet: &quietTB{TB: t}}
	sut = &server{label: "rsetcd", quiet: &quietTB{TB: t}}
	ref.proc = etcdproc.New(ref.quiet, refPath, memberName)
	sut.proc = etcdproc.New(sut.quiet, sutBin, memberName)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*server{ref, sut} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.proc.Start(startTimeout); err != nil {
				s.quiet.loud.Store(true)
				errs[i] = fmt.Errorf("starting %s (%s): %w", s.label, s.proc.Bin, err)
				return
			}
			s.cli, errs[i] = newClient(s.proc)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, s := range []*server{ref, sut} {
			if s.cli != nil {
				s.cli.Close()
			}
			if !s.proc.Running() {
				// It died during the test: its output matters.
				s.quiet.loud.Store(true)
			}
		}
	})
	return ref, sut
}

// quietTB is the testing.TB given to etcdproc: it hides a failed test from
// etcdproc's cleanup, which would otherwise print 60 lines of each server's
// log under every diff, unless the server failed to start or died.
type quietTB struct {
	testing.TB
	loud atomic.Bool
}

func (q *quietTB) Failed() bool { return q.loud.Load() && q.TB.Failed() }

// step is one recorded call: what was called (and where in the scenario)
// and what came back.
type step struct {
	label string
	out   string
}

// C is what a scenario runs against: one server, through clientv3 or the raw
// etcdserverpb stubs. Every call is recorded as one step of the transcript.
// A scenario must issue the same calls whatever the answers are, so that the
// two transcripts line up step by step.
type C struct {
	cli   *clientv3.Client
	kv    pb.KVClient
	steps []step
	note  string
}

func newC(cli *clientv3.Client) *C {
	return &C{cli: cli, kv: pb.NewKVClient(cli.ActiveConnection())}
}

// Note labels the next step (useful inside loops).
func (c *C) Note(format string, args ...any) { c.note = fmt.Sprintf(format, args...) }

// do runs and records one call. The label names the operation and the line
// of the scenario that issued it.
func (c *C) do(op string, f func(ctx context.Context) (any, error)) {
	_, file, line, _ := runtime.Caller(2)
	label := fmt.Sprintf("%s (%s:%d)", op, filepath.Base(file), line)
	if c.note != "" {
		label += " " + c.note
		c.note = ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	resp, err := f(ctx)
	out := ""
	if err != nil {
		out = renderErr(err)
	} else {
		out = render(resp)
	}
	c.steps = append(c.steps, step{label: label, out: out})
}

// ---- clientv3 calls ----

func (c *C) Put(key, val string, opts ...clientv3.OpOption) {
	c.do(fmt.Sprintf("Put %q", key), func(ctx context.Context) (any, error) { return c.cli.Put(ctx, key, val, opts...) })
}

func (c *C) Get(key string, opts ...clientv3.OpOption) {
	c.do(fmt.Sprintf("Get %q", key), func(ctx context.Context) (any, error) { return c.cli.Get(ctx, key, opts...) })
}

func (c *C) Delete(key string, opts ...clientv3.OpOption) {
	c.do(fmt.Sprintf("Delete %q", key), func(ctx context.Context) (any, error) { return c.cli.Delete(ctx, key, opts...) })
}

func (c *C) Compact(rev int64, opts ...clientv3.CompactOption) {
	c.do(fmt.Sprintf("Compact %d", rev), func(ctx context.Context) (any, error) { return c.cli.Compact(ctx, rev, opts...) })
}

// tx is a transaction built with clientv3 (If/Then/Else).
type tx struct {
	If   []clientv3.Cmp
	Then []clientv3.Op
	Else []clientv3.Op
}

func (c *C) Txn(t tx) {
	c.do("Txn", func(ctx context.Context) (any, error) {
		return c.cli.Txn(ctx).If(t.If...).Then(t.Then...).Else(t.Else...).Commit()
	})
}

// ---- raw requests through pb.NewKVClient(conn) ----

func (c *C) RawRange(r *pb.RangeRequest) {
	c.do(fmt.Sprintf("raw Range %q", r.Key), func(ctx context.Context) (any, error) { return c.kv.Range(ctx, r) })
}

func (c *C) RawPut(r *pb.PutRequest) {
	c.do(fmt.Sprintf("raw Put %q", r.Key), func(ctx context.Context) (any, error) { return c.kv.Put(ctx, r) })
}

func (c *C) RawDelete(r *pb.DeleteRangeRequest) {
	c.do(fmt.Sprintf("raw DeleteRange %q", r.Key), func(ctx context.Context) (any, error) { return c.kv.DeleteRange(ctx, r) })
}

func (c *C) RawTxn(r *pb.TxnRequest) {
	c.do("raw Txn", func(ctx context.Context) (any, error) { return c.kv.Txn(ctx, r) })
}

func (c *C) RawCompact(r *pb.CompactionRequest) {
	c.do(fmt.Sprintf("raw Compact %d", r.Revision), func(ctx context.Context) (any, error) { return c.kv.Compact(ctx, r) })
}

// Leases are granted with a fixed ID through the raw stub, so that both
// servers hold the same lease IDs (clientv3 lets the server pick one).

func (c *C) LeaseGrant(id, ttl int64) {
	c.do(fmt.Sprintf("raw LeaseGrant %d", id), func(ctx context.Context) (any, error) {
		return pb.NewLeaseClient(c.cli.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	})
}

func (c *C) LeaseRevoke(id int64) {
	c.do(fmt.Sprintf("LeaseRevoke %d", id), func(ctx context.Context) (any, error) {
		return c.cli.Revoke(ctx, clientv3.LeaseID(id))
	})
}

// ---- raw request builders ----

func rRange(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func rPut(key, val string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(val)}}}
}

func rPutReq(r *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: r}}
}

func rGet(key string) *pb.RequestOp {
	return rRange(&pb.RangeRequest{Key: []byte(key)})
}

func rDel(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func rTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func rCmp(target pb.Compare_CompareTarget, result pb.Compare_CompareResult, key string) *pb.Compare {
	return &pb.Compare{Target: target, Result: result, Key: []byte(key)}
}

// ---- running and comparing ----

// scenario is one differential test case.
type scenario struct {
	name string
	run  func(c *C)
}

// runScenario starts a fresh pair, runs sc against both concurrently and
// fails with a step-by-step diff unless the transcripts are identical.
func runScenario(t *testing.T, sc scenario) {
	ref, sut := startPair(t)
	want, got := newC(ref.cli), newC(sut.cli)
	var wg sync.WaitGroup
	for _, c := range []*C{want, got} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc.run(c)
		}()
	}
	wg.Wait()
	if d := diffTranscripts(want.steps, got.steps); d != "" {
		t.Errorf("%s: rsetcd differs from etcd %s\n%s", sc.name, "3.6.16", d)
	}
	if testing.Verbose() {
		var b strings.Builder
		for i, s := range want.steps {
			fmt.Fprintf(&b, "step %d: %s\n%s", i+1, s.label, indent(s.out, "    "))
		}
		t.Logf("etcd transcript:\n%s", b.String())
	}
}

// diffTranscripts reports every step whose output differs, as a line diff
// ("-" etcd, "+" rsetcd) with the full output of both sides around it.
func diffTranscripts(want, got []step) string {
	var b strings.Builder
	n := max(len(want), len(got))
	differing := 0
	for i := 0; i < n; i++ {
		var w, g step
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w == g {
			continue
		}
		differing++
		label := w.label
		if label == "" {
			label = g.label
		}
		fmt.Fprintf(&b, "--- step %d/%d: %s\n", i+1, n, label)
		b.WriteString(lineDiff(w.out, g.out))
	}
	if differing == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d steps differ (- etcd, + rsetcd):\n%s", differing, n, b.String())
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

// lineDiff is a small LCS line diff: " " common, "-" only in a, "+" only in b.
func lineDiff(a, b string) string {
	x := strings.Split(strings.TrimRight(a, "\n"), "\n")
	y := strings.Split(strings.TrimRight(b, "\n"), "\n")
	// lcs[i][j] = LCS length of x[i:], y[j:]
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	// Edit script, then print it with diffContext common lines around changes.
	type line struct {
		op   byte
		text string
	}
	var script []line
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			script = append(script, line{' ', x[i]})
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			script = append(script, line{'-', x[i]})
			i++
		default:
			script = append(script, line{'+', y[j]})
			j++
		}
	}
	near := make([]bool, len(script))
	for k, l := range script {
		if l.op != ' ' {
			for d := max(0, k-diffContext); d <= min(len(script)-1, k+diffContext); d++ {
				near[d] = true
			}
		}
	}
	var out strings.Builder
	for k := 0; k < len(script); k++ {
		if !near[k] {
			n := 0
			for k < len(script) && !near[k] {
				n++
				k++
			}
			k--
			fmt.Fprintf(&out, "    ... %d unchanged lines\n", n)
			continue
		}
		out.WriteString("  " + string(script[k].op) + " " + script[k].text + "\n")
	}
	return out.String()
}

// diffContext is how many unchanged lines are shown around a change.
const diffContext = 6
