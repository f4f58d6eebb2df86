package lease

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"rsetcd/compat-tests/internal/etcdproc"
)

// transcript records what one server answered to the differential script:
// one line per observation, in a form where everything that must be equal
// on both servers is printed exactly, and everything that depends on time
// is printed as the outcome of a loose check ("in [55,60]").
type transcript struct {
	s      *server
	lines  []string
	labels map[clientv3.LeaseID]string // server-chosen lease IDs -> "auto1", ...
	autos  int
	// expect collects violations of expectations stated by the test itself
	// (independent of the other server), e.g. "grant TTL 1 -> TTL 2".
	expect []string
}

func (r *transcript) add(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *transcript) expectf(format string, args ...any) {
	r.expect = append(r.expect, fmt.Sprintf(format, args...))
}

// label names a lease ID: server-chosen IDs by order of appearance, IDs
// chosen by the test by their value.
func (r *transcript) label(id clientv3.LeaseID) string {
	if l, ok := r.labels[id]; ok {
		return l
	}
	return fmt.Sprintf("%d", int64(id))
}

// auto registers a server-chosen ID (which must be positive).
func (r *transcript) auto(what string, id clientv3.LeaseID) string {
	if id <= 0 {
		r.expectf("%s: server-chosen lease ID %d is not positive", what, id)
	}
	if l, ok := r.labels[id]; ok {
		r.expectf("%s: server-chosen lease ID %d was already given out (%s)", what, id, l)
		return l
	}
	r.autos++
	l := fmt.Sprintf("auto%d", r.autos)
	r.labels[id] = l
	return l
}

func within(v, lo, hi int64) string {
	if v >= lo && v <= hi {
		return fmt.Sprintf("in [%d,%d]", lo, hi)
	}
	return fmt.Sprintf("%d NOT in [%d,%d]", v, lo, hi)
}

// TestLeaseDifferential runs the same Lease calls against a fresh rsetcd and
// a fresh reference etcd (concurrently) and compares the transcripts line by
// line. It also checks known etcd behaviour on both servers: the minimum TTL
// of 2 s, the maximum TTL, errors for unknown and duplicate leases, TTL 0
// for a keepalive of an unknown lease, TTL -1 from TimeToLive of an unknown
// lease, attached keys following Put/Delete, and revoke deleting them.
func TestLeaseDifferential(t *testing.T) {
	sut, ref := binaries(t)
	t.Parallel()
	var servers [2]*server
	var wg sync.WaitGroup
	for i, b := range []struct{ name, bin string }{{"etcd", ref}, {"rsetcd", sut}} {
		p := etcdproc.New(t, b.bin, "lease")
		servers[i] = &server{name: b.name, proc: p}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Start(startTimeout); err != nil {
				t.Errorf("starting %s (%s): %v", b.name, b.bin, err)
				return
			}
			cli, err := p.Client()
			if err != nil {
				t.Errorf("%s: new client: %v", b.name, err)
				return
			}
			servers[i].cli = cli
		}()
	}
	wg.Wait()
	for _, s := range servers {
		if s.cli != nil {
			t.Cleanup(func() { s.cli.Close() })
		}
	}
	if t.Failed() {
		return
	}
	runs := make([]*transcript, 2)
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &transcript{s: s, labels: map[clientv3.LeaseID]string{}}
			defer func() {
				if p := recover(); p != nil {
					r.expectf("script aborted: %v", p)
				}
			}()
			runs[i] = r
			leaseScript(r)
		}()
	}
	wg.Wait()

	refRun, sutRun := runs[0], runs[1]
	for _, r := range runs {
		for _, e := range r.expect {
			t.Errorf("%s: %s", r.s.name, e)
		}
	}
	n := max(len(refRun.lines), len(sutRun.lines))
	var diff strings.Builder
	mismatches := 0
	for i := range n {
		var a, b string
		if i < len(refRun.lines) {
			a = refRun.lines[i]
		}
		if i < len(sutRun.lines) {
			b = sutRun.lines[i]
		}
		if a == b {
			fmt.Fprintf(&diff, "    %s\n", a)
			continue
		}
		mismatches++
		fmt.Fprintf(&diff, "  - etcd:   %s\n  + rsetcd: %s\n", a, b)
	}
	if mismatches > 0 {
		t.Errorf("%d of %d transcript lines differ between etcd and rsetcd:\n%s", mismatches, n, diff.String())
	} else {
		t.Logf("%d transcript lines, identical on etcd and rsetcd:\n%s", n, diff.String())
	}
}

// leaseScript is the differential script. It panics (caught by the caller)
// when a call it depends on fails in a way that makes the rest meaningless.
func leaseScript(r *transcript) {
	cli := r.s.cli
	raw := pb.NewLeaseClient(cli.ActiveConnection())
	ctx, cancel := ctxTimeout(2 * time.Minute)
	defer cancel()
	rev := func(h *pb.ResponseHeader) int64 {
		if h == nil {
			return -999
		}
		return h.Revision
	}

	// --- TTL bounds -------------------------------------------------------
	g, err := cli.Grant(ctx, 1)
	if err != nil {
		panic(fmt.Sprintf("Grant(1): %v", err))
	}
	a := r.auto("Grant(1)", g.ID)
	r.add("Grant(TTL 1): id=%s ttl=%d rev=%d", a, g.TTL, rev(g.ResponseHeader))
	if g.TTL != 2 {
		r.expectf("Grant(TTL 1): TTL %d, want the minimum 2", g.TTL)
	}
	ttl, err := cli.TimeToLive(ctx, g.ID)
	if err != nil {
		panic(err)
	}
	r.add("TimeToLive(%s): id=%s granted=%d ttl %s rev=%d", a, r.label(ttl.ID), ttl.GrantedTTL, within(ttl.TTL, 0, 2), rev(ttl.ResponseHeader))
	rv, err := cli.Revoke(ctx, g.ID)
	r.add("Revoke(%s): %s rev=%d", a, errString(err), rev(hdr(rv)))

	for _, want := range []int64{0, -5} {
		resp, err := raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: want})
		if err != nil {
			r.add("LeaseGrant{TTL %d}: %s", want, errString(err))
			continue
		}
		l := r.auto(fmt.Sprintf("LeaseGrant{TTL %d}", want), clientv3.LeaseID(resp.ID))
		r.add("LeaseGrant{TTL %d}: id=%s ttl=%d error=%q rev=%d", want, l, resp.TTL, resp.Error, rev(resp.Header))
		rv, err := cli.Revoke(ctx, clientv3.LeaseID(resp.ID))
		r.add("Revoke(%s): %s rev=%d", l, errString(err), rev(hdr(rv)))
	}

	_, err = cli.Grant(ctx, 9000000001)
	r.add("Grant(TTL 9000000001): %s", errString(err))
	if err != rpctypes.ErrLeaseTTLTooLarge {
		r.expectf("Grant(TTL 9000000001): got %v, want %v", err, rpctypes.ErrLeaseTTLTooLarge)
	}
	g, err = cli.Grant(ctx, 9000000000)
	if err != nil {
		r.add("Grant(TTL 9000000000): %s", errString(err))
	} else {
		l := r.auto("Grant(9000000000)", g.ID)
		r.add("Grant(TTL 9000000000): id=%s ttl=%d rev=%d", l, g.TTL, rev(g.ResponseHeader))
		ttl, err := cli.TimeToLive(ctx, g.ID)
		if err != nil {
			panic(err)
		}
		r.add("TimeToLive(%s): granted=%d ttl %s", l, ttl.GrantedTTL, within(ttl.TTL, 9000000000-5, 9000000000))
		ka, err := cli.KeepAliveOnce(ctx, g.ID)
		if err != nil {
			r.add("KeepAliveOnce(%s): %s", l, errString(err))
		} else {
			r.add("KeepAliveOnce(%s): id=%s ttl=%d", l, r.label(ka.ID), ka.TTL)
		}
		rv, err := cli.Revoke(ctx, g.ID)
		r.add("Revoke(%s): %s rev=%d", l, errString(err), rev(hdr(rv)))
	}

	// --- a 60 s lease ------------------------------------------------------
	g, err = cli.Grant(ctx, 60)
	if err != nil {
		panic(fmt.Sprintf("Grant(60): %v", err))
	}
	b := r.auto("Grant(60)", g.ID)
	leaseB := g.ID
	r.add("Grant(TTL 60): id=%s ttl=%d rev=%d", b, g.TTL, rev(g.ResponseHeader))
	ttl, err = cli.TimeToLive(ctx, leaseB)
	if err != nil {
		panic(err)
	}
	r.add("TimeToLive(%s): granted=%d ttl %s keys=%d", b, ttl.GrantedTTL, within(ttl.TTL, 55, 60), len(ttl.Keys))
	ka, err := cli.KeepAliveOnce(ctx, leaseB)
	if err != nil {
		r.add("KeepAliveOnce(%s): %s", b, errString(err))
	} else {
		r.add("KeepAliveOnce(%s): id=%s ttl=%d rev=%d", b, r.label(ka.ID), ka.TTL, rev(ka.ResponseHeader))
	}

	// --- client-chosen IDs -------------------------------------------------
	const chosen = 4660
	resp, err := raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: chosen, TTL: 30})
	if err != nil {
		panic(fmt.Sprintf("LeaseGrant{ID %d}: %v", chosen, err))
	}
	r.add("LeaseGrant{ID %d, TTL 30}: id=%d ttl=%d rev=%d", chosen, resp.ID, resp.TTL, rev(resp.Header))
	if resp.ID != chosen || resp.TTL != 30 {
		r.expectf("LeaseGrant{ID %d, TTL 30}: got id %d ttl %d", chosen, resp.ID, resp.TTL)
	}
	_, err = raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: chosen, TTL: 40})
	r.add("LeaseGrant{ID %d, TTL 40} again: %s", chosen, errString(err))
	if !strings.Contains(errString(err), "etcdserver: lease already exists") {
		r.expectf("LeaseGrant with an existing ID: got %v, want %q", err, "etcdserver: lease already exists")
	}
	resp, err = raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: -7, TTL: 30})
	if err != nil {
		r.add("LeaseGrant{ID -7}: %s", errString(err))
	} else {
		r.add("LeaseGrant{ID -7}: id=%d ttl=%d rev=%d", resp.ID, resp.TTL, rev(resp.Header))
		ttl, err := cli.TimeToLive(ctx, -7)
		r.add("TimeToLive(-7): %s granted=%d ttl %s", errString(err), ttlGranted(ttl), within(ttlTTL(ttl), 25, 30))
		rv, err := cli.Revoke(ctx, -7)
		r.add("Revoke(-7): %s rev=%d", errString(err), rev(hdr(rv)))
	}

	// --- attached keys -----------------------------------------------------
	put := func(key string, opts ...clientv3.OpOption) {
		pr, err := cli.Put(ctx, key, "v", opts...)
		var h *pb.ResponseHeader
		if pr != nil {
			h = pr.Header
		}
		r.add("Put(%s): %s rev=%d", key, errString(err), rev(h))
	}
	keysOf := func(id clientv3.LeaseID) {
		ttl, err := cli.TimeToLive(ctx, id, clientv3.WithAttachedKeys())
		if err != nil {
			r.add("TimeToLive(%s, keys): %s", r.label(id), errString(err))
			return
		}
		var keys []string
		for _, k := range ttl.Keys {
			keys = append(keys, string(k))
		}
		sort.Strings(keys) // etcd lists them in map order
		r.add("TimeToLive(%s, keys): granted=%d keys=%q rev=%d", r.label(id), ttl.GrantedTTL, keys, rev(ttl.ResponseHeader))
	}
	getLease := func(key string) {
		gr, err := cli.Get(ctx, key)
		if err != nil {
			r.add("Get(%s): %s", key, errString(err))
			return
		}
		if len(gr.Kvs) == 0 {
			r.add("Get(%s): absent rev=%d", key, gr.Header.Revision)
			return
		}
		r.add("Get(%s): lease=%s rev=%d", key, r.label(clientv3.LeaseID(gr.Kvs[0].Lease)), gr.Header.Revision)
	}
	put("/lease/k1", clientv3.WithLease(chosen))
	put("/lease/k2", clientv3.WithLease(chosen))
	put("/lease/k0", clientv3.WithLease(leaseB))
	put("/lease/k3", clientv3.WithLease(999999))
	keysOf(chosen)
	keysOf(leaseB)
	getLease("/lease/k1")
	getLease("/lease/k3")
	put("/lease/k2") // no lease: detached
	keysOf(chosen)
	getLease("/lease/k2")
	put("/lease/k1", clientv3.WithLease(leaseB)) // moves to B
	keysOf(chosen)
	keysOf(leaseB)
	put("/lease/k2", clientv3.WithLease(chosen))
	dr, err := cli.Delete(ctx, "/lease/k2")
	r.add("Delete(/lease/k2): %s rev=%d", errString(err), rev(hdr(dr)))
	keysOf(chosen)
	put("/lease/k4", clientv3.WithLease(chosen))
	put("/lease/k5", clientv3.WithLease(chosen))
	txr, err := cli.Txn(ctx).Then(
		clientv3.OpPut("/lease/t1", "v", clientv3.WithLease(chosen)),
		clientv3.OpPut("/lease/t2", "v", clientv3.WithLease(leaseB)),
	).Commit()
	r.add("Txn(put t1 lease %d, put t2 lease %s): %s rev=%d", chosen, b, errString(err), rev(hdr(txr)))
	txr, err = cli.Txn(ctx).Then(
		clientv3.OpPut("/lease/t3", "v", clientv3.WithLease(chosen)),
		clientv3.OpPut("/lease/t4", "v", clientv3.WithLease(999999)),
	).Commit()
	r.add("Txn(put t3 lease %d, put t4 unknown lease): %s rev=%d", chosen, errString(err), rev(hdr(txr)))
	keysOf(chosen)
	keysOf(leaseB)

	// --- listing -----------------------------------------------------------
	leases := func(what string) {
		lr, err := cli.Leases(ctx)
		if err != nil {
			r.add("Leases() %s: %s", what, errString(err))
			return
		}
		var ls []string
		for _, l := range lr.Leases {
			ls = append(ls, r.label(l.ID))
		}
		sort.Strings(ls) // etcd lists them in map order
		r.add("Leases() %s: %q rev=%d", what, ls, rev(lr.ResponseHeader))
	}
	leases("with two leases")

	// --- unknown leases ----------------------------------------------------
	for _, id := range []clientv3.LeaseID{424242, 0} {
		_, err := cli.KeepAliveOnce(ctx, id)
		r.add("KeepAliveOnce(%d): %s", id, errString(err))
		if err != rpctypes.ErrLeaseNotFound {
			r.expectf("KeepAliveOnce(unknown %d): got %v, want %v", id, err, rpctypes.ErrLeaseNotFound)
		}
		// What the server sends: TTL 0, no error.
		stream, err := raw.LeaseKeepAlive(ctx)
		if err != nil {
			panic(err)
		}
		if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
			panic(err)
		}
		kr, err := stream.Recv()
		if err != nil {
			r.add("LeaseKeepAlive stream {ID %d}: %s", id, errString(err))
		} else {
			r.add("LeaseKeepAlive stream {ID %d}: id=%d ttl=%d rev=%d", id, kr.ID, kr.TTL, rev(kr.Header))
			if kr.ID != int64(id) || kr.TTL != 0 {
				r.expectf("LeaseKeepAlive stream {ID %d} (unknown): got id %d ttl %d, want id %d ttl 0", id, kr.ID, kr.TTL, id)
			}
		}
		_ = stream.CloseSend()
		ttl, err := cli.TimeToLive(ctx, id, clientv3.WithAttachedKeys())
		if err != nil {
			r.add("TimeToLive(%d): %s", id, errString(err))
		} else {
			r.add("TimeToLive(%d): id=%d ttl=%d granted=%d keys=%d rev=%d", id, ttl.ID, ttl.TTL, ttl.GrantedTTL, len(ttl.Keys), rev(ttl.ResponseHeader))
			if id != 0 && ttl.TTL != -1 {
				r.expectf("TimeToLive(unknown %d): TTL %d, want -1", id, ttl.TTL)
			}
		}
		rv, err := cli.Revoke(ctx, id)
		r.add("Revoke(%d): %s rev=%d", id, errString(err), rev(hdr(rv)))
		if err != rpctypes.ErrLeaseNotFound {
			r.expectf("Revoke(unknown %d): got %v, want %v", id, err, rpctypes.ErrLeaseNotFound)
		}
	}

	// --- revoke deletes the attached keys in one revision ------------------
	before, err := cli.Get(ctx, "/lease/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		panic(err)
	}
	rv, err = cli.Revoke(ctx, chosen)
	r.add("Revoke(%d): %s rev=%d", chosen, errString(err), rev(hdr(rv)))
	if err == nil && rv.Header.Revision != before.Header.Revision+1 {
		r.expectf("Revoke of a lease with keys: revision went from %d to %d, want exactly one new revision", before.Header.Revision, rv.Header.Revision)
	}
	for _, k := range []string{"/lease/k4", "/lease/k5", "/lease/t1", "/lease/t3", "/lease/k0", "/lease/t2"} {
		getLease(k)
	}
	ttl, err = cli.TimeToLive(ctx, chosen)
	r.add("TimeToLive(%d) after revoke: %s ttl=%d", chosen, errString(err), ttlTTL(ttl))
	_, err = cli.KeepAliveOnce(ctx, chosen)
	r.add("KeepAliveOnce(%d) after revoke: %s", chosen, errString(err))
	rv, err = cli.Revoke(ctx, chosen)
	r.add("Revoke(%d) again: %s rev=%d", chosen, errString(err), rev(hdr(rv)))
	leases("after revoke")
	resp, err = raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: chosen, TTL: 5})
	if err != nil {
		r.add("LeaseGrant{ID %d} after revoke: %s", chosen, errString(err))
	} else {
		r.add("LeaseGrant{ID %d} after revoke: id=%d ttl=%d rev=%d", chosen, resp.ID, resp.TTL, rev(resp.Header))
		keysOf(chosen)
		rv, err = cli.Revoke(ctx, chosen)
		r.add("Revoke(%d): %s rev=%d", chosen, errString(err), rev(hdr(rv)))
	}

	// --- KeepAlive keeps a TTL 2 lease alive; it expires once it stops ------
	g, err = cli.Grant(ctx, 2)
	if err != nil {
		panic(err)
	}
	d := r.auto("Grant(2)", g.ID)
	r.add("Grant(TTL 2): id=%s ttl=%d rev=%d", d, g.TTL, rev(g.ResponseHeader))
	put("/lease/ka", clientv3.WithLease(g.ID))
	kctx, kcancel := ctxTimeout(time.Minute)
	ch, err := cli.KeepAlive(kctx, g.ID)
	if err != nil {
		panic(err)
	}
	deadline := time.After(3 * time.Second) // 1.5 TTLs
	var kas []*clientv3.LeaseKeepAliveResponse
	for done := false; !done; {
		select {
		case k, ok := <-ch:
			if !ok {
				done = true
				break
			}
			kas = append(kas, k)
		case <-deadline:
			done = true
		}
	}
	good := len(kas) >= 2
	for _, k := range kas {
		good = good && k.ID == g.ID && k.TTL == 2
	}
	r.add("KeepAlive(%s) for 3s: at least 2 responses, all with id=%s ttl=2: %v", d, d, good)
	if !good {
		var got []string
		for _, k := range kas {
			got = append(got, fmt.Sprintf("{id %s ttl %d}", r.label(k.ID), k.TTL))
		}
		r.expectf("KeepAlive of a TTL 2 lease for 3s: got %d responses %v", len(kas), got)
	}
	getLease("/lease/ka")
	ttl, err = cli.TimeToLive(ctx, g.ID)
	r.add("TimeToLive(%s) while kept alive: %s ttl %s", d, errString(err), within(ttlTTL(ttl), 0, 2))
	kcancel()
	stopped := time.Now()
	for {
		gr, err := cli.Get(ctx, "/lease/ka")
		if err != nil {
			panic(err)
		}
		if len(gr.Kvs) == 0 {
			r.add("Get(/lease/ka) after the keepalives stopped: gone at rev=%d", gr.Header.Revision)
			break
		}
		if time.Since(stopped) > 15*time.Second {
			r.add("Get(/lease/ka) after the keepalives stopped: still there after 15s")
			r.expectf("TTL 2 lease still alive 15 s after its keepalives stopped")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ttl, err = cli.TimeToLive(ctx, g.ID)
	r.add("TimeToLive(%s) after expiry: %s ttl=%d granted=%d", d, errString(err), ttlTTL(ttl), ttlGranted(ttl))
	leases("at the end")
}

// hdr returns the header of any response with one (nil-safe).
func hdr(resp any) *pb.ResponseHeader {
	switch r := resp.(type) {
	case *clientv3.LeaseRevokeResponse:
		if r != nil {
			return r.Header
		}
	case *clientv3.DeleteResponse:
		if r != nil {
			return r.Header
		}
	case *clientv3.TxnResponse:
		if r != nil {
			return r.Header
		}
	}
	return nil
}

func ttlTTL(r *clientv3.LeaseTimeToLiveResponse) int64 {
	if r == nil {
		return -999
	}
	return r.TTL
}

func ttlGranted(r *clientv3.LeaseTimeToLiveResponse) int64 {
	if r == nil {
		return -999
	}
	return r.GrantedTTL
}
