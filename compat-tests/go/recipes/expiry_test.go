package recipes

import (
	"testing"
	"time"

	epb "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	lpb "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// TestLeaseExpiryReleases: the holder's lease has TTL 2 and is not kept
// alive; a waiter (lease TTL 60) that is blocked behind it gets the lock
// (or the leadership) once the lease expires, well within 15 s, and the
// holder's key and lease are gone.
func TestLeaseExpiryReleases(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		t.Run("lock", func(t *testing.T) {
			t.Parallel()
			expiry(t, s, "expiry-lock", func(name string, lease int64) (string, error) {
				ctx, cancel := ctxTimeout(30 * time.Second)
				defer cancel()
				resp, err := s.lk.Lock(ctx, &lpb.LockRequest{Name: []byte(name), Lease: lease})
				return string(resp.GetKey()), err
			})
		})
		t.Run("election", func(t *testing.T) {
			t.Parallel()
			expiry(t, s, "expiry-election", func(name string, lease int64) (string, error) {
				ctx, cancel := ctxTimeout(30 * time.Second)
				defer cancel()
				resp, err := s.el.Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte("v")})
				return string(resp.GetLeader().GetKey()), err
			})
		})
	})
}

func expiry(t *testing.T, s *server, name string, acquire func(name string, lease int64) (string, error)) {
	holder := grant(t, s, 2)
	waiter := grant(t, s, 60)
	granted := time.Now()
	hk, err := acquire(name, int64(holder))
	if err != nil {
		t.Fatalf("holder: %s", renderErr(err))
	}
	if want := lockKey(name, int64(holder)); hk != want {
		t.Fatalf("holder key = %q, want %q", hk, want)
	}

	type result struct {
		key string
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		k, err := acquire(name, int64(waiter))
		done <- result{k, err, time.Now()}
	}()
	wk := lockKey(name, int64(waiter))
	if !waitKey(s.cli, wk, true, 5*time.Second) {
		t.Fatalf("waiter key %q did not appear within 5s", wk)
	}
	if time.Since(granted) < 1500*time.Millisecond {
		select {
		case r := <-done:
			t.Fatalf("waiter returned %v after granting the holder's TTL-2 lease, before it could expire (key %q, err %v)", r.at.Sub(granted), r.key, r.err)
		case <-time.After(300 * time.Millisecond):
		}
	}

	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("waiter failed: %s", renderErr(r.err))
		}
		if r.key != wk {
			t.Errorf("waiter key = %q, want %q", r.key, wk)
		}
		t.Logf("%s: waiter got %q %v after the holder's TTL-2 lease was granted", s.label, r.key, r.at.Sub(granted).Round(10*time.Millisecond))
	case <-time.After(15 * time.Second):
		gone, ttl := leaseGone(s, holder)
		t.Fatalf("waiter still blocked %v after the holder's TTL-2 lease was granted (holder lease gone: %v, %s; holder key present: %v)",
			time.Since(granted).Round(time.Second), gone, ttl, !waitKey(s.cli, hk, false, 0))
	}
	if !waitKey(s.cli, hk, false, 0) {
		t.Errorf("holder key %q still exists", hk)
	}
	if gone, ttl := leaseGone(s, holder); !gone {
		t.Errorf("holder lease %x still exists: %s", holder, ttl)
	}
}
