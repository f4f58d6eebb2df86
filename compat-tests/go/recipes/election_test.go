package recipes

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	epb "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
)

// TestElectionHandover: an Observe stream is opened before anyone
// campaigns. A campaigns and wins ("a1"), proclaims "a2"; B's Campaign
// blocks (its key exists, it does not return); A resigns — or, in the
// second subtest, A's lease is revoked — and B's Campaign returns with B's
// leader key; Leader names B; Observe has delivered exactly a1, a2, b1 in
// that order.
func TestElectionHandover(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		for _, how := range []string{"resign", "revoke"} {
			t.Run(how, func(t *testing.T) { handover(t, s, "handover-"+how, how == "revoke") })
		}
	})
}

type observed struct {
	resp *epb.LeaderResponse
	err  error
}

func handover(t *testing.T, s *server, name string, revoke bool) {
	ctx, cancel := ctxTimeout(60 * time.Second)
	defer cancel()
	la := grant(t, s, 60)
	lb := grant(t, s, 60)
	keyA, keyB := lockKey(name, int64(la)), lockKey(name, int64(lb))

	// Observer first: it waits for the first key under the name.
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	stream, err := s.el.Observe(octx, &epb.LeaderRequest{Name: []byte(name)})
	if err != nil {
		t.Fatalf("Observe: %s", renderErr(err))
	}
	obs := make(chan observed, 16)
	go func() {
		for {
			m, err := stream.Recv()
			obs <- observed{m, err}
			if err != nil {
				return
			}
		}
	}()
	var seen []string
	next := func(want, wantKey string) {
		t.Helper()
		select {
		case o := <-obs:
			if o.err != nil {
				t.Fatalf("Observe ended after %q: %s (waiting for %q)", seen, renderErr(o.err), want)
			}
			kv := o.resp.GetKv()
			if kv == nil {
				t.Fatalf("Observe message %d has no kv: %s", len(seen)+1, render(o.resp))
			}
			seen = append(seen, string(kv.Value))
			if string(kv.Value) != want || string(kv.Key) != wantKey {
				t.Fatalf("Observe message %d = key %q value %q, want key %q value %q (all so far: %q)", len(seen), kv.Key, kv.Value, wantKey, want, seen)
			}
			if h := o.resp.GetHeader(); h == nil || h.Revision < kv.ModRevision {
				t.Errorf("Observe message %d: header %s is older than the kv's mod_revision %d", len(seen), render(h), kv.ModRevision)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Observe delivered nothing within 10s after %q (waiting for %q)", seen, want)
		}
	}
	// Give the stream a moment to reach the server before A campaigns; if
	// it is later, Observe still reports A (via its first Get).
	time.Sleep(100 * time.Millisecond)

	ca, err := s.el.Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: int64(la), Value: []byte("a1")})
	if err != nil {
		t.Fatalf("A Campaign: %s", renderErr(err))
	}
	a := ca.GetLeader()
	if string(a.GetKey()) != keyA || a.GetLease() != int64(la) || string(a.GetName()) != name || a.GetRev() == 0 {
		t.Fatalf("A Campaign leader = %s, want key %q lease %d name %q and a rev", render(a), keyA, la, name)
	}
	next("a1", keyA)
	if _, err := s.el.Proclaim(ctx, &epb.ProclaimRequest{Leader: a, Value: []byte("a2")}); err != nil {
		t.Fatalf("A Proclaim: %s", renderErr(err))
	}
	next("a2", keyA)

	bDone := make(chan observed, 1) // reuses the pair type: resp unused
	var cb *epb.CampaignResponse
	go func() {
		resp, err := s.el.Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: int64(lb), Value: []byte("b1")})
		cb = resp
		bDone <- observed{nil, err}
	}()
	if !waitKey(s.cli, keyB, true, 5*time.Second) {
		t.Fatalf("B's key %q did not appear within 5s of its Campaign", keyB)
	}
	select {
	case o := <-bDone:
		t.Fatalf("B's Campaign returned while A leads (err=%v, resp=%s)", o.err, render(cb))
	case <-time.After(300 * time.Millisecond):
	}
	expectLeader(t, s, name, keyA, "a2")

	if revoke {
		if _, err := s.cli.Revoke(ctx, la); err != nil {
			t.Fatalf("revoking A's lease: %v", err)
		}
	} else {
		if _, err := s.el.Resign(ctx, &epb.ResignRequest{Leader: a}); err != nil {
			t.Fatalf("A Resign: %s", renderErr(err))
		}
	}
	select {
	case o := <-bDone:
		if o.err != nil {
			t.Fatalf("B's Campaign failed: %s", renderErr(o.err))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("B's Campaign did not return within 10s of A's %s", map[bool]string{true: "lease revoke", false: "Resign"}[revoke])
	}
	b := cb.GetLeader()
	g, err := s.cli.Get(ctx, keyB)
	if err != nil || len(g.Kvs) != 1 {
		t.Fatalf("Get %q: %v %v", keyB, g, err)
	}
	if string(b.GetKey()) != keyB || b.GetLease() != int64(lb) || string(b.GetName()) != name || b.GetRev() != g.Kvs[0].CreateRevision {
		t.Errorf("B Campaign leader = %s, want key %q lease %d name %q rev %d (its create revision)", render(b), keyB, lb, name, g.Kvs[0].CreateRevision)
	}
	expectLeader(t, s, name, keyB, "b1")
	next("b1", keyB)
	select {
	case o := <-obs:
		t.Errorf("unexpected Observe message after %q: %s %v", seen, render(o.resp), o.err)
	case <-time.After(300 * time.Millisecond):
	}
	if !waitKey(s.cli, keyA, false, time.Second) {
		t.Errorf("A's key %q still exists", keyA)
	}
	t.Logf("%s: Observe saw %q", s.label, seen)
}

func expectLeader(t *testing.T, s *server, name, key, value string) {
	t.Helper()
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	resp, err := s.el.Leader(ctx, &epb.LeaderRequest{Name: []byte(name)})
	if err != nil {
		t.Fatalf("Leader %q: %s (want %q=%q)", name, renderErr(err), key, value)
	}
	if kv := resp.GetKv(); kv == nil || string(kv.Key) != key || string(kv.Value) != value {
		t.Fatalf("Leader %q = %s, want key %q value %q", name, render(resp), key, value)
	}
}

// leaseGone reports whether the lease no longer exists (TimeToLive -1).
func leaseGone(s *server, id clientv3.LeaseID) (bool, string) {
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	resp, err := s.cli.TimeToLive(ctx, id)
	if err != nil {
		return false, renderErr(err)
	}
	return resp.TTL == -1, fmt.Sprintf("ttl=%d granted_ttl=%d", resp.TTL, resp.GrantedTTL)
}

// TestObserveEveryPut: etcd's Observe forwards every put of the leader key
// (it watches that key), so writes that come in quick succession are all
// delivered, in revision order, none merged. The leader key is written 50
// times by 5 concurrent writers; the stream must then deliver 50 messages
// whose mod_revisions are exactly the 50 write revisions, ascending.
func TestObserveEveryPut(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		const name, writers, perWriter = "observe-every-put", 5, 10
		ctx, cancel := ctxTimeout(60 * time.Second)
		defer cancel()
		lease := grant(t, s, 60)
		ca, err := s.el.Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: int64(lease), Value: []byte("v0")})
		if err != nil {
			t.Fatalf("Campaign: %s", renderErr(err))
		}
		key := string(ca.GetLeader().GetKey())
		stream, err := s.el.Observe(ctx, &epb.LeaderRequest{Name: []byte(name)})
		if err != nil {
			t.Fatalf("Observe: %s", renderErr(err))
		}
		first, err := stream.Recv()
		if err != nil || first.GetKv() == nil || string(first.Kv.Value) != "v0" {
			t.Fatalf("first Observe message = %s, %v; want the leader with value v0", render(first), err)
		}

		revs := make(chan int64, writers*perWriter)
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perWriter; i++ {
					resp, err := s.cli.Put(ctx, key, fmt.Sprintf("w%d-%d", w, i), clientv3.WithLease(lease))
					if err != nil {
						t.Errorf("Put: %v", err)
						return
					}
					revs <- resp.Header.Revision
				}
			}()
		}
		wg.Wait()
		close(revs)
		var want []int64
		for r := range revs {
			want = append(want, r)
		}
		slices.Sort(want)

		var got []int64
		msgs := make(chan *epb.LeaderResponse)
		go func() {
			for {
				m, err := stream.Recv()
				if err != nil {
					close(msgs)
					return
				}
				msgs <- m
			}
		}()
	loop:
		for len(got) < len(want)+1 {
			select {
			case m, ok := <-msgs:
				if !ok {
					break loop
				}
				got = append(got, m.GetKv().ModRevision)
			case <-time.After(2 * time.Second):
				break loop
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("Observe delivered %d messages with mod_revisions %v;\nwant one per write, %d messages: %v", len(got), got, len(want), want)
		}
	})
}
