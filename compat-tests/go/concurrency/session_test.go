package concurrency

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestSessionTTL: two Sessions with TTL 2, each with 3 keys on its lease.
// The first one's client is closed, which stops its keepalives without
// revoking the lease: the lease must expire and its keys vanish within a few
// seconds. The second one is kept alive for 6 s (three times its TTL): its
// keys must be there throughout, and its session must not report Done.
func TestSessionTTL(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv *server) {
		const (
			keptFor      = 6 * time.Second
			expiryWithin = 10 * time.Second // generous: TTL 2 plus detection
		)
		ctx, cancel := ctxTimeout(time.Minute)
		defer cancel()
		obs := srv.client(t)

		cliA, err := srv.proc.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer cliA.Close()
		sA, err := concurrency.NewSession(cliA, concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		sB, err := concurrency.NewSession(srv.client(t), concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		defer sB.Close()
		for _, s := range []struct {
			name string
			sess *concurrency.Session
		}{{"a", sA}, {"b", sB}} {
			for i := range 3 {
				if _, err := s.sess.Client().Put(ctx, fmt.Sprintf("/session/%s/%d", s.name, i), "v", clientv3.WithLease(s.sess.Lease())); err != nil {
					t.Fatal(err)
				}
			}
			ttl, err := obs.TimeToLive(ctx, s.sess.Lease())
			if err != nil {
				t.Fatal(err)
			}
			if ttl.GrantedTTL != 2 {
				t.Errorf("session %s: granted TTL %d, want 2", s.name, ttl.GrantedTTL)
			}
		}
		count := func(name string) int {
			t.Helper()
			resp, err := obs.Get(ctx, "/session/"+name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			return int(resp.Count)
		}

		// Stop A's keepalives: closing the client cancels them; nothing
		// revokes the lease.
		closed := time.Now()
		cliA.Close()
		var goneAfter time.Duration
		for {
			elapsed := time.Since(closed)
			if n := count("b"); n != 3 {
				t.Fatalf("%v after the start: the kept-alive session's keys: %d of 3 left", elapsed.Round(time.Millisecond), n)
			}
			select {
			case <-sB.Done():
				t.Fatalf("%v after the start: the kept-alive session is Done", elapsed.Round(time.Millisecond))
			default:
			}
			if goneAfter == 0 && count("a") == 0 {
				goneAfter = elapsed
				t.Logf("session without keepalives: its keys vanished %v after its client was closed", elapsed.Round(time.Millisecond))
			}
			if goneAfter == 0 && elapsed > expiryWithin {
				t.Fatalf("session without keepalives (TTL 2): %d of its 3 keys still there %v after its client was closed", count("a"), elapsed.Round(time.Millisecond))
			}
			if goneAfter != 0 && elapsed > keptFor {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if ttl, err := obs.TimeToLive(ctx, sA.Lease()); err != nil || ttl.TTL != -1 {
			t.Errorf("TimeToLive of the expired session's lease: got %+v, %v; want TTL -1", ttl, err)
		}
		if ttl, err := obs.TimeToLive(ctx, sB.Lease()); err != nil || ttl.TTL <= 0 || ttl.TTL > 2 {
			t.Errorf("TimeToLive of the kept-alive session's lease: got %+v, %v; want TTL 1 or 2", ttl, err)
		}
	})
}
