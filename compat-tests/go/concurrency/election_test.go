package concurrency

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestElection: 5 candidates, each with its own client and Session,
// campaign one after the other (so their create revisions are in that
// order) while an observer watches with Observe. Exactly one candidate is
// leader at a time: the one with the lowest create revision. Leader() and
// Observe() agree on it; Proclaim changes the value Observe reports; when
// the leader's session is closed (which revokes its lease, deleting its
// key) the next candidate in create-revision order wins. With no candidate
// left, Leader() returns ErrElectionNoLeader.
func TestElection(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv *server) {
		const (
			pfx   = "/election"
			cands = 5
		)
		ctx, cancel := ctxTimeout(2 * time.Minute)
		defer cancel()

		// The observer starts before any candidate: it first waits for a
		// key to appear under the prefix.
		obsSess, err := concurrency.NewSession(srv.client(t), concurrency.WithTTL(30))
		if err != nil {
			t.Fatal(err)
		}
		defer obsSess.Close()
		obs := concurrency.NewElection(obsSess, pfx)
		observed := obs.Observe(ctx)

		type candidate struct {
			sess      *concurrency.Session
			e         *concurrency.Election
			key, val  string
			createRev int64
			won       chan error // Campaign's result
			elected   bool
		}
		cs := make([]*candidate, cands)
		for i := range cs {
			s, err := concurrency.NewSession(srv.client(t), concurrency.WithTTL(30))
			if err != nil {
				t.Fatal(err)
			}
			c := &candidate{
				sess: s,
				e:    concurrency.NewElection(s, pfx),
				key:  fmt.Sprintf("%s/%x", pfx, s.Lease()),
				val:  fmt.Sprintf("candidate-%d", i),
				won:  make(chan error, 1),
			}
			cs[i] = c
			go func() { c.won <- c.e.Campaign(ctx, c.val) }()
			// Wait for the candidate's key before starting the next one.
			deadline := time.Now().Add(opTimeout)
			for {
				resp, err := obsSess.Client().Get(ctx, c.key)
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Kvs) == 1 {
					c.createRev = resp.Kvs[0].CreateRevision
					if v := string(resp.Kvs[0].Value); v != c.val {
						t.Errorf("candidate %d key %s: value %q, want %q", i, c.key, v, c.val)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("candidate %d: key %s did not appear within %v of Campaign", i, c.key, opTimeout)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if i > 0 && c.createRev <= cs[i-1].createRev {
				t.Fatalf("candidate %d created at revision %d, not after candidate %d (%d)", i, c.createRev, i-1, cs[i-1].createRev)
			}
		}

		// nextObserved returns the next value from Observe.
		nextObserved := func(what string) *mvccpb.KeyValue {
			t.Helper()
			select {
			case resp, ok := <-observed:
				if !ok {
					t.Fatalf("%s: Observe channel closed", what)
				}
				if len(resp.Kvs) != 1 {
					t.Fatalf("%s: Observe sent %d kvs, want 1", what, len(resp.Kvs))
				}
				return resp.Kvs[0]
			case <-time.After(opTimeout):
				t.Fatalf("%s: nothing observed within %v", what, opTimeout)
			}
			return nil
		}
		sameKV := func(a, b *mvccpb.KeyValue) bool {
			return string(a.Key) == string(b.Key) && string(a.Value) == string(b.Value) &&
				a.CreateRevision == b.CreateRevision && a.ModRevision == b.ModRevision && a.Lease == b.Lease
		}
		checkLeader := func(step string, c *candidate, val string) {
			t.Helper()
			resp, err := obs.Leader(ctx)
			if err != nil {
				t.Fatalf("%s: Leader: %v", step, err)
			}
			kv := resp.Kvs[0]
			if string(kv.Key) != c.key || string(kv.Value) != val || kv.CreateRevision != c.createRev || kv.Lease != int64(c.sess.Lease()) {
				t.Errorf("%s: Leader() = key %s value %q create_revision %d lease %x; want key %s value %q create_revision %d lease %x",
					step, kv.Key, kv.Value, kv.CreateRevision, kv.Lease, c.key, val, c.createRev, c.sess.Lease())
			}
			okv := nextObserved(step)
			if !sameKV(okv, kv) {
				t.Errorf("%s: Observe() and Leader() disagree: observed %v, leader %v", step, okv, kv)
			}
		}

		for k, c := range cs {
			step := fmt.Sprintf("leader %d", k)
			select {
			case err := <-c.won:
				c.elected = true
				if err != nil {
					t.Fatalf("%s: Campaign: %v", step, err)
				}
			case <-time.After(opTimeout):
				t.Fatalf("%s: candidate %d not elected within %v after its predecessor's session was closed", step, k, opTimeout)
			}
			// Nobody else may be elected meanwhile.
			time.Sleep(200 * time.Millisecond)
			for j, o := range cs {
				if o.elected && j != k {
					continue
				}
				select {
				case err := <-o.won:
					o.elected = true
					t.Errorf("%s: candidate %d's Campaign returned (err %v) while candidate %d leads", step, j, err, k)
				default:
				}
			}
			if got := c.e.Key(); got != c.key {
				t.Errorf("%s: Election.Key() = %q, want %q", step, got, c.key)
			}
			if got := c.e.Rev(); got != c.createRev {
				t.Errorf("%s: Election.Rev() = %d, want %d", step, got, c.createRev)
			}
			checkLeader(step, c, c.val)

			proclaimed := c.val + "-proclaimed"
			if err := c.e.Proclaim(ctx, proclaimed); err != nil {
				t.Fatalf("%s: Proclaim: %v", step, err)
			}
			checkLeader(step+" after Proclaim", c, proclaimed)

			// Close revokes the session's lease, which deletes its key.
			if err := c.sess.Close(); err != nil {
				t.Fatalf("%s: Session.Close: %v", step, err)
			}
			resp, err := obsSess.Client().Get(ctx, c.key)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 0 {
				t.Errorf("%s: key %s still there after its session was closed", step, c.key)
			}
		}
		if _, err := obs.Leader(ctx); !errors.Is(err, concurrency.ErrElectionNoLeader) {
			t.Errorf("Leader() with no candidate left: got %v, want %v", err, concurrency.ErrElectionNoLeader)
		}
		resp, err := obsSess.Client().Get(ctx, pfx+"/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 {
			t.Errorf("keys left under %s/: %v", pfx, resp.Kvs)
		}
	})
}
