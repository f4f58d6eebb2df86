package kvdiff

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"rsetcd/compat-tests/internal/etcdproc"
	"rsetcd/compat-tests/internal/transcript"
)

const (
	memberName   = "kvdiff" // both servers get the same member name
	startTimeout = 60 * time.Second
	stepTimeout  = 20 * time.Second
)

// server is one started member with a client.
type server struct {
	label string // "etcd" or "rsetcd"
	proc  *etcdproc.Proc
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
// data directory and new ports, see etcdproc.StartPair), concurrently, each
// with a client; both are killed when t ends.
func startPair(t *testing.T) (ref, sut *server) {
	t.Helper()
	refProc, sutProc := etcdproc.StartPair(t, memberName, startTimeout)
	ref = &server{label: "etcd", proc: refProc}
	sut = &server{label: "rsetcd", proc: sutProc}
	for _, s := range []*server{ref, sut} {
		cli, err := newClient(s.proc)
		if err != nil {
			t.Fatalf("%s: clientv3: %v", s.label, err)
		}
		s.cli = cli
		t.Cleanup(func() { cli.Close() })
	}
	return ref, sut
}

// C is what a scenario runs against: one server, through clientv3 or the raw
// etcdserverpb stubs. Every call is recorded as one step of the transcript.
// A scenario must issue the same calls whatever the answers are, so that the
// two transcripts line up step by step.
type C struct {
	cli   *clientv3.Client
	kv    pb.KVClient
	steps []transcript.Step
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
		out = transcript.RenderErr(err)
	} else {
		out = transcript.Render(resp)
	}
	c.steps = append(c.steps, transcript.Step{Label: label, Out: out})
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
	if d := transcript.Diff(want.steps, got.steps, diffContext); d != "" {
		t.Errorf("%s: rsetcd differs from etcd %s\n%s", sc.name, "3.6.16", d)
	}
	if testing.Verbose() {
		t.Logf("etcd transcript:\n%s", transcript.Format(want.steps))
	}
}

// diffContext is how many unchanged lines a diff shows around a change.
const diffContext = 6
