package recipes

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	lpb "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// TestLockContention: 5 workers, each with its own gRPC connection, client
// and lease, call Lock on the same name 20 times each. Inside the critical
// section a worker marks itself as holder (an atomic flag that must have
// been clear), reads the counter key, sleeps a moment and writes counter+1,
// then clears the flag and Unlocks. At the end no two holders overlapped,
// the counter equals the number of acquisitions (no lost update), every
// Lock returned the worker's own "<name>/<lease hex>" key, and no lock key
// is left.
func TestLockContention(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		const (
			workers = 5
			rounds  = 20
			name    = "contended"
			counter = "contended-counter"
		)
		var (
			inCS      atomic.Int32 // 1 while some worker holds the lock
			overlaps  atomic.Int32
			acquired  atomic.Int32
			errsMu    sync.Mutex
			errs      []string
			lastRevMu sync.Mutex
			lastRev   int64 // header revision of the latest Lock answer
		)
		fail := func(format string, args ...any) {
			errsMu.Lock()
			defer errsMu.Unlock()
			if len(errs) < 20 {
				errs = append(errs, fmt.Sprintf(format, args...))
			}
		}

		ctx, cancel := ctxTimeout(60 * time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			cli := s.newClient(t)
			conn, err := dial(s)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			lk := lpb.NewLockClient(conn)
			lease := grant(t, s, 60)
			wantKey := lockKey(name, int64(lease))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < rounds; i++ {
					resp, err := lk.Lock(ctx, &lpb.LockRequest{Name: []byte(name), Lease: int64(lease)})
					if err != nil {
						fail("worker %d round %d: Lock: %s", w, i, renderErr(err))
						return
					}
					if !inCS.CompareAndSwap(0, 1) {
						overlaps.Add(1)
						fail("worker %d round %d: Lock returned %q while another worker was in the critical section", w, i, resp.Key)
					}
					acquired.Add(1)
					if string(resp.Key) != wantKey {
						fail("worker %d round %d: Lock key = %q, want %q", w, i, resp.Key, wantKey)
					}
					lastRevMu.Lock()
					if resp.Header == nil {
						fail("worker %d round %d: Lock answer has no header", w, i)
					} else if resp.Header.Revision < lastRev {
						fail("worker %d round %d: Lock header revision %d < %d of an earlier Lock", w, i, resp.Header.Revision, lastRev)
					} else {
						lastRev = resp.Header.Revision
					}
					lastRevMu.Unlock()

					g, err := cli.Get(ctx, counter)
					if err != nil {
						fail("worker %d round %d: Get counter: %v", w, i, err)
						return
					}
					n := 0
					if len(g.Kvs) == 1 {
						n, _ = strconv.Atoi(string(g.Kvs[0].Value))
					}
					time.Sleep(time.Millisecond)
					if _, err := cli.Put(ctx, counter, strconv.Itoa(n+1)); err != nil {
						fail("worker %d round %d: Put counter: %v", w, i, err)
						return
					}
					inCS.Store(0)
					if _, err := lk.Unlock(ctx, &lpb.UnlockRequest{Key: resp.Key}); err != nil {
						fail("worker %d round %d: Unlock %q: %s", w, i, resp.Key, renderErr(err))
						return
					}
				}
			}()
		}
		start := time.Now()
		wg.Wait()
		t.Logf("%s: %d acquisitions by %d workers in %v", s.label, acquired.Load(), workers, time.Since(start).Round(time.Millisecond))
		for _, e := range errs {
			t.Error(e)
		}
		if n := overlaps.Load(); n != 0 {
			t.Errorf("%d times a Lock returned while another holder was inside the critical section", n)
		}
		if got, want := acquired.Load(), int32(workers*rounds); got != want {
			t.Errorf("acquisitions = %d, want %d", got, want)
		}
		gctx, gcancel := ctxTimeout(opTimeout)
		defer gcancel()
		g, err := s.cli.Get(gctx, counter)
		if err != nil {
			t.Fatal(err)
		}
		got := -1
		if len(g.Kvs) == 1 {
			got, _ = strconv.Atoi(string(g.Kvs[0].Value))
		}
		if want := int(acquired.Load()); got != want {
			t.Errorf("counter = %d, want %d (the number of acquisitions): updates were lost, the lock did not exclude", got, want)
		}
		left, err := s.cli.Get(gctx, name+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		if len(left.Kvs) != 0 {
			var keys []string
			for _, kv := range left.Kvs {
				keys = append(keys, string(kv.Key))
			}
			t.Errorf("lock keys left after every Unlock: %q", keys)
		}
	})
}
