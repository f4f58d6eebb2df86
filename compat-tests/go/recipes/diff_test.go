package recipes

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	epb "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	lpb "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/status"

	"rsetcd/compat-tests/internal/etcdproc"
)

// TestRecipesDiff runs each scenario against a fresh rsetcd and a fresh
// reference etcd and requires identical transcripts.
func TestRecipesDiff(t *testing.T) {
	etcdproc.BinFromEnv(t) // skip at once when $RSETCD_BIN is unset
	scenarios := []struct {
		name string
		run  func(r *rec)
	}{
		{"lock", scenarioLock},
		{"lock-lease-0", scenarioLease0},
		{"election", scenarioElection},
		{"errors", scenarioErrors},
		{"waiters", scenarioWaiters},
		{"cancelled-waiters", scenarioCancelledWaiters},
		{"revoked-waiter", scenarioRevokedWaiter},
		{"observe", scenarioObserve},
	}
	t.Parallel()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sut, ref := startPair(t)
			recs := []*rec{newRec(sut), newRec(ref)}
			var wg sync.WaitGroup
			for _, r := range recs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sc.run(r)
				}()
			}
			wg.Wait()
			compare(t, recs[0], recs[1])
		})
	}
}

// ---- scenarios ----
//
// A scenario must make the same calls whatever the answers are, so that the
// two transcripts line up step by step. Lease IDs are chosen by the script.

// scenarioLock: Lock with a lease, re-Lock by the same lease, Unlock (also
// of a key that is gone), Lock by a second lease once free, an empty name.
func scenarioLock(r *rec) {
	r.Grant(0x1a, 60)
	r.Grant(0x1b, 60)
	r.Lock("lk", 0x1a)
	r.GetPrefix("lk/")
	r.Note("same lease again: the recipe finds its own key and holds the lock, no new revision")
	r.Lock("lk", 0x1a)
	r.GetPrefix("lk/")
	r.Unlock(lockKey("lk", 0x1a))
	r.GetPrefix("lk/")
	r.Note("the key is already gone")
	r.Unlock(lockKey("lk", 0x1a))
	r.Lock("lk", 0x1b)
	r.Get(lockKey("lk", 0x1b))
	r.Unlock(lockKey("lk", 0x1b))
	r.Note("empty name: key is \"/<lease hex>\"")
	r.Lock("", 0x1a)
	r.Get(lockKey("", 0x1a))
	r.Unlock(lockKey("", 0x1a))
	r.Note("name with a trailing slash")
	r.Lock("lk/", 0x1a)
	r.Get(lockKey("lk/", 0x1a))
	r.Unlock(lockKey("lk/", 0x1a))
	r.GetPrefix("")
}

// scenarioLease0: Lock and Campaign with lease 0 make the server grant a
// 60 s lease of its own (not kept alive). Its ID differs between servers,
// so it is checked (TTL) and then shown as a placeholder.
func scenarioLease0(r *rec) {
	resp := r.Lock("auto", 0)
	id := r.AliasFromKey(resp.GetKey(), "auto/", "lock-lease")
	r.GetPrefix("auto/")
	r.LeaseTTL(id)
	r.Unlock(string(resp.GetKey()))
	r.Note("Unlock deletes only the key; the lease stays")
	r.LeaseTTL(id)
	r.GetPrefix("auto/")

	lk := r.Campaign("autoel", 0, "v0")
	var eid int64
	if lk != nil {
		eid = lk.Lease
	}
	r.Alias(eid, "campaign-lease")
	r.LeaseTTL(eid)
	r.Leader("autoel")
	r.Proclaim(lk, "v1")
	r.Leader("autoel")
	r.Resign(lk)
	r.Leader("autoel")
	r.LeaseTTL(eid)
}

// scenarioElection: Campaign / Leader / Proclaim / Resign, re-Campaign with
// the same lease, stale leader keys, Observe of the current leader.
func scenarioElection(r *rec) {
	r.Grant(0x2a, 60)
	r.Grant(0x2b, 60)
	r.Leader("el")
	a := r.Campaign("el", 0x2a, "a1")
	r.Leader("el")
	r.Observe("el", 1)
	r.Proclaim(a, "a2")
	r.Leader("el")
	r.Note("same lease, other value: the recipe proclaims the new value")
	a2 := r.Campaign("el", 0x2a, "a3")
	r.Leader("el")
	r.Note("same lease, same value: nothing written")
	r.Campaign("el", 0x2a, "a3")
	r.Leader("el")
	r.Note("wrong rev: not leader")
	r.Proclaim(withRev(a2, 1000), "x")
	r.Note("wrong rev: Resign is a no-op, not an error")
	r.Resign(withRev(a2, 1000))
	r.Leader("el")
	r.Observe("el", 1)
	r.Resign(a2)
	r.Leader("el")
	r.GetPrefix("el/")
	r.Note("stale leader key after Resign")
	r.Proclaim(a, "x")
	r.Resign(a)
	r.Note("second candidate wins at once when nobody holds the election")
	b := r.Campaign("el", 0x2b, "b1")
	r.Leader("el")
	r.Note("the old leader key of a is stale")
	r.Proclaim(a, "x")
	r.Resign(b)
	r.Leader("el")
}

// scenarioErrors: the plain errors of the recipe services.
func scenarioErrors(r *rec) {
	r.Grant(0x5a, 60)
	r.Note("nobody campaigns")
	r.Leader("none")
	r.Note("no leader field")
	r.ProclaimReq(&epb.ProclaimRequest{Value: []byte("x")})
	r.ResignReq(&epb.ResignRequest{})
	r.Note("unknown lease")
	r.Campaign("unk", 0x99, "v")
	r.GetPrefix("unk/")
	r.Lock("unkl", 0x99)
	r.GetPrefix("unkl/")
	r.Note("stale leader key: never campaigned")
	r.Proclaim(&epb.LeaderKey{Name: []byte("ghost"), Key: []byte(lockKey("ghost", 0x5a)), Rev: 2, Lease: 0x5a}, "x")
	r.Resign(&epb.LeaderKey{Name: []byte("ghost"), Key: []byte(lockKey("ghost", 0x5a)), Rev: 2, Lease: 0x5a})
	r.Note("leader key whose lease is unknown")
	c := r.Campaign("el5", 0x5a, "c1")
	bad := withLease(c, 0x98)
	r.Proclaim(bad, "c2")
	r.Leader("el5")
	r.Resign(bad)
	r.Leader("el5")
	r.Note("Unlock of an empty key")
	r.Unlock("")
}

// scenarioWaiters: a blocked Lock / Campaign returns once the holder is
// gone; the header each one answers with.
func scenarioWaiters(r *rec) {
	r.Grant(0x4a, 60)
	r.Grant(0x4b, 60)
	r.Lock("lw", 0x4a)
	h := r.GoLock("lw", 0x4b)
	r.WaitKey(lockKey("lw", 0x4b), true, 5*time.Second)
	r.StillBlocked(h, 300*time.Millisecond)
	r.Put("unrelated", "x")
	r.Unlock(lockKey("lw", 0x4a))
	r.Collect(h)
	r.GetPrefix("lw/")
	r.Unlock(lockKey("lw", 0x4b))

	a := r.Campaign("ew", 0x4a, "a")
	h = r.GoCampaign("ew", 0x4b, "b")
	r.WaitKey(lockKey("ew", 0x4b), true, 5*time.Second)
	r.StillBlocked(h, 300*time.Millisecond)
	r.Leader("ew")
	r.Put("unrelated", "y")
	r.Resign(a)
	r.Collect(h)
	r.Leader("ew")
	r.GetPrefix("ew/")
}

// scenarioCancelledWaiters: a Lock / Campaign abandoned by its caller (its
// deadline passes while it waits) removes its waiting key, so it does not
// block later callers. (A server that leaves the key blocks the later
// callers until their 5 s timeout.)
func scenarioCancelledWaiters(r *rec) {
	r.timeout = 5 * time.Second
	r.Grant(0x3a, 60)
	r.Grant(0x3b, 60)
	r.Grant(0x3c, 60)
	r.Lock("cw", 0x3a)
	r.LockDeadline("cw", 0x3b, 500*time.Millisecond)
	r.WaitKey(lockKey("cw", 0x3b), false, 5*time.Second)
	r.GetPrefix("cw/")
	r.Unlock(lockKey("cw", 0x3a))
	r.Lock("cw", 0x3c)
	r.Unlock(lockKey("cw", 0x3c))

	a := r.Campaign("ce", 0x3a, "a")
	r.CampaignDeadline("ce", 0x3b, "b", 500*time.Millisecond)
	r.WaitKey(lockKey("ce", 0x3b), false, 5*time.Second)
	r.GetPrefix("ce/")
	r.Resign(a)
	r.Campaign("ce", 0x3c, "c")
	r.Leader("ce")
}

// scenarioRevokedWaiter: the waiter's own lease is revoked while it waits
// (its key goes). Once the holder lets go, etcd's Lock checks that its key
// still exists and fails with "mutex: session is expired"; Campaign does
// not check.
func scenarioRevokedWaiter(r *rec) {
	r.timeout = 5 * time.Second
	r.Grant(0x6a, 60)
	r.Grant(0x6b, 60)
	r.Lock("rw", 0x6a)
	h := r.GoLock("rw", 0x6b)
	r.WaitKey(lockKey("rw", 0x6b), true, 5*time.Second)
	r.Revoke(0x6b)
	r.StillBlocked(h, 300*time.Millisecond)
	r.Unlock(lockKey("rw", 0x6a))
	r.Collect(h)
	r.GetPrefix("rw/")

	r.Grant(0x6c, 60)
	r.Grant(0x6d, 60)
	a := r.Campaign("re", 0x6c, "a")
	h = r.GoCampaign("re", 0x6d, "b")
	r.WaitKey(lockKey("re", 0x6d), true, 5*time.Second)
	r.Revoke(0x6d)
	r.StillBlocked(h, 300*time.Millisecond)
	r.Resign(a)
	r.Collect(h)
	r.Leader("re")
	r.GetPrefix("re/")
}

// scenarioObserve: an Observe stream opened before anyone campaigns gets
// the first leader, every value the leader proclaims (etcd delivers each
// put of the leader key, in order, even back to back), then the next
// leader; writes outside the election name send nothing.
func scenarioObserve(r *rec) {
	r.Grant(0x7a, 60)
	r.Grant(0x7b, 60)
	o := r.OpenObserve("ob")
	r.Observed(o, 0, 300*time.Millisecond)
	a := r.Campaign("ob", 0x7a, "a0")
	r.Observed(o, 1, 5*time.Second)
	for i := 1; i <= 10; i++ {
		r.Proclaim(a, fmt.Sprintf("a%d", i))
	}
	r.Observed(o, 10, 5*time.Second)
	r.Put("ob", "not under ob/")
	r.Put("ob0", "not under ob/")
	r.Observed(o, 0, 300*time.Millisecond)
	h := r.GoCampaign("ob", 0x7b, "b0")
	r.WaitKey(lockKey("ob", 0x7b), true, 5*time.Second)
	r.Observed(o, 0, 300*time.Millisecond)
	r.Resign(a)
	r.Collect(h)
	r.Observed(o, 1, 5*time.Second)
	r.Observed(o, 0, 300*time.Millisecond)
	r.CloseObserve(o)
}

func withRev(k *epb.LeaderKey, rev int64) *epb.LeaderKey {
	if k == nil {
		return &epb.LeaderKey{Rev: rev}
	}
	c := *k
	c.Rev = rev
	return &c
}

func withLease(k *epb.LeaderKey, lease int64) *epb.LeaderKey {
	if k == nil {
		return &epb.LeaderKey{Lease: lease}
	}
	c := *k
	c.Lease = lease
	return &c
}

// ---- recorder ----

type step struct {
	label string
	out   string
}

// rec runs a scenario against one server and records every call.
type rec struct {
	s       *server
	timeout time.Duration // per call; opTimeout when zero
	steps   []step
	note    string
	aliases []alias
}

type alias struct {
	id   int64
	name string
}

func newRec(s *server) *rec { return &rec{s: s} }

// Note labels the next step.
func (r *rec) Note(format string, args ...any) { r.note = fmt.Sprintf(format, args...) }

func (r *rec) record(op, out string) {
	_, file, line, _ := runtime.Caller(2)
	label := fmt.Sprintf("%s:%d %s", filepath.Base(file), line, op)
	if r.note != "" {
		label += "   # " + r.note
		r.note = ""
	}
	r.steps = append(r.steps, step{label: label, out: out})
}

// call runs f with opTimeout and records its answer; it returns the
// response, or nil on error.
func call[T any](r *rec, op string, f func(ctx context.Context) (*T, error)) *T {
	ctx, cancel := ctxTimeout(r.callTimeout())
	defer cancel()
	resp, err := f(ctx)
	_, file, line, _ := runtime.Caller(2)
	label := fmt.Sprintf("%s:%d %s", filepath.Base(file), line, op)
	if r.note != "" {
		label += "   # " + r.note
		r.note = ""
	}
	out := ""
	if err != nil {
		out = renderErr(err)
		resp = nil
	} else {
		out = render(resp)
	}
	r.steps = append(r.steps, step{label: label, out: out})
	return resp
}

func (r *rec) callTimeout() time.Duration {
	if r.timeout > 0 {
		return r.timeout
	}
	return opTimeout
}

func (r *rec) Grant(id, ttl int64) {
	call(r, fmt.Sprintf("LeaseGrant id=%x ttl=%d", id, ttl), func(ctx context.Context) (*pb.LeaseGrantResponse, error) {
		return r.s.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	})
}

func (r *rec) Revoke(id int64) {
	call(r, fmt.Sprintf("LeaseRevoke id=%x", id), func(ctx context.Context) (*pb.LeaseRevokeResponse, error) {
		return r.s.lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
	})
}

func (r *rec) Lock(name string, lease int64) *lpb.LockResponse {
	return call(r, fmt.Sprintf("Lock name=%q lease=%x", name, lease), func(ctx context.Context) (*lpb.LockResponse, error) {
		return r.s.lk.Lock(ctx, &lpb.LockRequest{Name: []byte(name), Lease: lease})
	})
}

func (r *rec) Unlock(key string) {
	call(r, fmt.Sprintf("Unlock key=%q", key), func(ctx context.Context) (*lpb.UnlockResponse, error) {
		return r.s.lk.Unlock(ctx, &lpb.UnlockRequest{Key: []byte(key)})
	})
}

func (r *rec) Campaign(name string, lease int64, value string) *epb.LeaderKey {
	resp := call(r, fmt.Sprintf("Campaign name=%q lease=%x value=%q", name, lease, value), func(ctx context.Context) (*epb.CampaignResponse, error) {
		return r.s.el.Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte(value)})
	})
	return resp.GetLeader()
}

func (r *rec) Proclaim(k *epb.LeaderKey, value string) {
	if k == nil {
		k = &epb.LeaderKey{} // the campaign failed: still make a call
	}
	call(r, fmt.Sprintf("Proclaim leader=%s value=%q", render(k), value), func(ctx context.Context) (*epb.ProclaimResponse, error) {
		return r.s.el.Proclaim(ctx, &epb.ProclaimRequest{Leader: k, Value: []byte(value)})
	})
}

func (r *rec) ProclaimReq(req *epb.ProclaimRequest) {
	call(r, "Proclaim "+render(req), func(ctx context.Context) (*epb.ProclaimResponse, error) {
		return r.s.el.Proclaim(ctx, req)
	})
}

func (r *rec) Resign(k *epb.LeaderKey) {
	if k == nil {
		k = &epb.LeaderKey{}
	}
	call(r, fmt.Sprintf("Resign leader=%s", render(k)), func(ctx context.Context) (*epb.ResignResponse, error) {
		return r.s.el.Resign(ctx, &epb.ResignRequest{Leader: k})
	})
}

func (r *rec) ResignReq(req *epb.ResignRequest) {
	call(r, "Resign "+render(req), func(ctx context.Context) (*epb.ResignResponse, error) {
		return r.s.el.Resign(ctx, req)
	})
}

func (r *rec) Leader(name string) {
	call(r, fmt.Sprintf("Leader name=%q", name), func(ctx context.Context) (*epb.LeaderResponse, error) {
		return r.s.el.Leader(ctx, &epb.LeaderRequest{Name: []byte(name)})
	})
}

// Observe opens an Observe stream, records its first n messages (or what
// ended the stream) and closes it.
func (r *rec) Observe(name string, n int) {
	ctx, cancel := ctxTimeout(5 * time.Second)
	defer cancel()
	var outs []string
	st, err := r.s.el.Observe(ctx, &epb.LeaderRequest{Name: []byte(name)})
	if err != nil {
		outs = append(outs, renderErr(err))
	} else {
		for len(outs) < n {
			m, err := st.Recv()
			if err != nil {
				outs = append(outs, renderErr(err))
				break
			}
			outs = append(outs, render(m))
		}
	}
	r.record(fmt.Sprintf("Observe name=%q (first %d messages)", name, n), strings.Join(outs, "\n      "))
}

// observer is an open Observe stream read in the background.
type observer struct {
	name   string
	cancel context.CancelFunc
	msgs   chan string // rendered messages; the stream's end as an error line
}

func (r *rec) OpenObserve(name string) *observer {
	ctx, cancel := context.WithCancel(context.Background())
	o := &observer{name: name, cancel: cancel, msgs: make(chan string, 100)}
	st, err := r.s.el.Observe(ctx, &epb.LeaderRequest{Name: []byte(name)})
	if err != nil {
		o.msgs <- "stream ended: " + renderErr(err)
	} else {
		go func() {
			for {
				m, err := st.Recv()
				if err != nil {
					if ctx.Err() == nil {
						o.msgs <- "stream ended: " + renderErr(err)
					}
					return
				}
				o.msgs <- render(m)
			}
		}()
	}
	r.record(fmt.Sprintf("open Observe name=%q", name), "")
	// Let the stream reach the server: what it observes from then on is
	// compared.
	time.Sleep(200 * time.Millisecond)
	return o
}

// Observed records the next n messages of o (n = 0: that none comes within
// d); it waits at most d for each.
func (r *rec) Observed(o *observer, n int, d time.Duration) {
	var outs []string
	for len(outs) < n || n == 0 {
		select {
		case m := <-o.msgs:
			outs = append(outs, m)
		case <-time.After(d):
			outs = append(outs, fmt.Sprintf("(nothing more within %v)", d))
		}
		if n == 0 || strings.HasPrefix(outs[len(outs)-1], "(nothing") {
			break
		}
	}
	r.record(fmt.Sprintf("Observe %q: next %d messages", o.name, n), strings.Join(outs, "\n         "))
}

func (r *rec) CloseObserve(o *observer) { o.cancel() }

func (r *rec) Get(key string) {
	call(r, fmt.Sprintf("Get %q", key), func(ctx context.Context) (*clientv3.GetResponse, error) {
		return r.s.cli.Get(ctx, key)
	})
}

func (r *rec) GetPrefix(prefix string) {
	call(r, fmt.Sprintf("Get prefix %q", prefix), func(ctx context.Context) (*clientv3.GetResponse, error) {
		return r.s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	})
}

func (r *rec) Put(key, val string) {
	call(r, fmt.Sprintf("Put %q=%q", key, val), func(ctx context.Context) (*clientv3.PutResponse, error) {
		return r.s.cli.Put(ctx, key, val)
	})
}

// LeaseTTL records the granted TTL of a lease and whether the remaining TTL
// is in (0, granted] (its exact value depends on timing), or the error.
func (r *rec) LeaseTTL(id int64) {
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	resp, err := r.s.cli.TimeToLive(ctx, clientv3.LeaseID(id))
	out := ""
	switch {
	case err != nil:
		out = renderErr(err)
	case resp.TTL == -1:
		out = fmt.Sprintf("lease %x: ttl=-1 (not found) granted_ttl=%d", resp.ID, resp.GrantedTTL)
	default:
		out = fmt.Sprintf("lease %x: granted_ttl=%d remaining_ttl_in_(0,granted]=%v", resp.ID, resp.GrantedTTL, resp.TTL > 0 && resp.TTL <= resp.GrantedTTL)
	}
	r.record(fmt.Sprintf("TimeToLive %x", id), out)
}

// Alias shows lease id as <name> in the comparison (its ID is the
// server's choice).
func (r *rec) Alias(id int64, name string) {
	if id != 0 {
		r.aliases = append(r.aliases, alias{id, name})
	}
}

// AliasFromKey takes the lease hex from "<prefix><hex>" and aliases it.
func (r *rec) AliasFromKey(key []byte, prefix, name string) int64 {
	hex, ok := strings.CutPrefix(string(key), prefix)
	if !ok {
		r.record("lease ID from key", fmt.Sprintf("key %q does not start with %q", key, prefix))
		return 0
	}
	id, err := strconv.ParseUint(hex, 16, 64)
	if err != nil || fmt.Sprintf("%x", id) != hex {
		r.record("lease ID from key", fmt.Sprintf("key %q: %q is not lowercase lease hex", key, hex))
		return 0
	}
	r.Alias(int64(id), name)
	return int64(id)
}

// WaitKey polls until key is present (or gone) and records whether it got
// there within d.
func (r *rec) WaitKey(key string, present bool, d time.Duration) {
	ok := waitKey(r.s.cli, key, present, d)
	what := "gone"
	if present {
		what = "present"
	}
	r.record(fmt.Sprintf("wait up to %v until %q is %s", d, key, what), fmt.Sprintf("reached: %v", ok))
}

// LockDeadline calls Lock with a short deadline; only the code is kept
// (client and server race to report the deadline).
func (r *rec) LockDeadline(name string, lease int64, d time.Duration) {
	ctx, cancel := ctxTimeout(d)
	defer cancel()
	resp, err := r.s.lk.Lock(ctx, &lpb.LockRequest{Name: []byte(name), Lease: lease})
	r.record(fmt.Sprintf("Lock name=%q lease=%x with deadline %v", name, lease, d), codeOnly(resp, err))
}

func (r *rec) CampaignDeadline(name string, lease int64, value string, d time.Duration) {
	ctx, cancel := ctxTimeout(d)
	defer cancel()
	resp, err := r.s.el.Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte(value)})
	r.record(fmt.Sprintf("Campaign name=%q lease=%x value=%q with deadline %v", name, lease, value, d), codeOnly(resp, err))
}

func codeOnly(resp any, err error) string {
	if err == nil {
		return "no error: " + render(resp)
	}
	return "error code=" + status.Code(err).String()
}

// pending is a blocking call run in the background.
type pending struct {
	op   string
	done chan string
}

func (r *rec) GoLock(name string, lease int64) *pending {
	p := &pending{op: fmt.Sprintf("Lock name=%q lease=%x", name, lease), done: make(chan string, 1)}
	go func() {
		ctx, cancel := ctxTimeout(r.callTimeout())
		defer cancel()
		resp, err := r.s.lk.Lock(ctx, &lpb.LockRequest{Name: []byte(name), Lease: lease})
		p.done <- outOf(resp, err)
	}()
	r.record("start in background: "+p.op, "")
	return p
}

func (r *rec) GoCampaign(name string, lease int64, value string) *pending {
	p := &pending{op: fmt.Sprintf("Campaign name=%q lease=%x value=%q", name, lease, value), done: make(chan string, 1)}
	go func() {
		ctx, cancel := ctxTimeout(r.callTimeout())
		defer cancel()
		resp, err := r.s.el.Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte(value)})
		p.done <- outOf(resp, err)
	}()
	r.record("start in background: "+p.op, "")
	return p
}

func outOf(resp any, err error) string {
	if err != nil {
		return renderErr(err)
	}
	return render(resp)
}

// StillBlocked records whether the call has not returned after d.
func (r *rec) StillBlocked(p *pending, d time.Duration) {
	select {
	case out := <-p.done:
		p.done <- out // keep it for Collect
		r.record(fmt.Sprintf("still blocked after %v: %s", d, p.op), "false: it returned")
	case <-time.After(d):
		r.record(fmt.Sprintf("still blocked after %v: %s", d, p.op), "true")
	}
}

// Collect records the answer of the background call (waiting up to 10 s).
func (r *rec) Collect(p *pending) {
	select {
	case out := <-p.done:
		r.record("returned: "+p.op, out)
	case <-time.After(10 * time.Second):
		r.record("returned: "+p.op, "still blocked after 10s")
	}
}

// ---- comparison ----

func (r *rec) transcript() []step {
	out := make([]step, len(r.steps))
	for i, s := range r.steps {
		for _, a := range r.aliases {
			for _, pat := range []string{fmt.Sprintf("%x", a.id), strconv.FormatInt(a.id, 10)} {
				s.label = strings.ReplaceAll(s.label, pat, "<"+a.name+">")
				s.out = strings.ReplaceAll(s.out, pat, "<"+a.name+">")
			}
		}
		out[i] = s
	}
	return out
}

func compare(t *testing.T, sut, ref *rec) {
	t.Helper()
	got, want := sut.transcript(), ref.transcript()
	var diffs []string
	for i := 0; i < len(got) || i < len(want); i++ {
		var g, w step
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			label := w.label
			if label == "" {
				label = g.label
			}
			diffs = append(diffs, fmt.Sprintf("step %d: %s\n    etcd:   %s\n    rsetcd: %s", i+1, label, w.out, g.out))
		}
	}
	if len(diffs) == 0 {
		t.Logf("%d steps identical; etcd transcript:\n%s", len(want), show(want))
		return
	}
	t.Errorf("rsetcd differs from etcd 3.6.16 at %d of %d steps:\n%s\n\netcd transcript:\n%s\n\nrsetcd transcript:\n%s",
		len(diffs), len(want), strings.Join(diffs, "\n"), show(want), show(got))
}

func show(steps []step) string {
	var b strings.Builder
	for i, s := range steps {
		fmt.Fprintf(&b, "  %2d %s\n      -> %s\n", i+1, s.label, s.out)
	}
	return b.String()
}
