package concurrency

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestMutexContention: 8 goroutines, each with its own client and Session,
// take concurrency.NewMutex(s, "/lock") 25 times each and increment a counter
// key with a plain read-modify-write inside the critical section. No two
// critical sections may overlap (checked with an in-process holder count and
// with revisions: every acquisition's Header().Revision is after the
// previous holder's counter write), and the counter must end at 200.
func TestMutexContention(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv *server) {
		const (
			workers = 8
			rounds  = 25
			counter = "/counter"
		)
		var (
			holders  atomic.Int32 // goroutines inside the critical section
			overlaps atomic.Int32
			mu       sync.Mutex // guards the fields below (never contended if the lock works)
			lastPut  int64      // revision of the latest counter write
			revErrs  []string
		)
		// Create the sessions first, so that all workers contend from the start.
		sessions := make([]*concurrency.Session, workers)
		for w := range sessions {
			s, err := concurrency.NewSession(srv.client(t), concurrency.WithTTL(30))
			if err != nil {
				t.Fatalf("NewSession: %v", err)
			}
			sessions[w] = s
		}
		errc := make(chan error, workers)
		start := make(chan struct{})
		for w := range workers {
			go func() {
				errc <- func() error {
					s := sessions[w]
					defer s.Close()
					cli := s.Client()
					m := concurrency.NewMutex(s, "/lock")
					<-start
					for i := range rounds {
						ctx, cancel := ctxTimeout(opTimeout)
						err := func() error {
							if err := m.Lock(ctx); err != nil {
								return fmt.Errorf("worker %d round %d: Lock: %w", w, i, err)
							}
							if holders.Add(1) != 1 {
								overlaps.Add(1)
							}
							lockRev := m.Header().Revision
							resp, err := cli.Get(ctx, counter)
							if err != nil {
								return fmt.Errorf("worker %d round %d: Get: %w", w, i, err)
							}
							n := 0
							if len(resp.Kvs) == 1 {
								n, _ = strconv.Atoi(string(resp.Kvs[0].Value))
							}
							// Give other goroutines a chance to run into the section.
							time.Sleep(time.Millisecond)
							presp, err := cli.Put(ctx, counter, strconv.Itoa(n+1))
							if err != nil {
								return fmt.Errorf("worker %d round %d: Put: %w", w, i, err)
							}
							mu.Lock()
							if lockRev <= lastPut {
								revErrs = append(revErrs, fmt.Sprintf("worker %d round %d: lock acquired at revision %d, not after the previous holder's counter write at revision %d", w, i, lockRev, lastPut))
							}
							lastPut = presp.Header.Revision
							mu.Unlock()
							holders.Add(-1)
							if err := m.Unlock(ctx); err != nil {
								return fmt.Errorf("worker %d round %d: Unlock: %w", w, i, err)
							}
							return nil
						}()
						cancel()
						if err != nil {
							return err
						}
					}
					return nil
				}()
			}()
		}
		close(start)
		for range workers {
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
		if n := overlaps.Load(); n != 0 {
			t.Errorf("%d times a goroutine entered the critical section while another was inside", n)
		}
		for _, e := range revErrs {
			t.Error(e)
		}
		ctx, cancel := ctxTimeout(opTimeout)
		defer cancel()
		cli := srv.client(t)
		resp, err := cli.Get(ctx, counter)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != strconv.Itoa(workers*rounds) {
			t.Errorf("counter after %d locked increments: got %v, want %d", workers*rounds, resp.Kvs, workers*rounds)
		}
		// Every session was closed: no waiter key may be left.
		resp, err = cli.Get(ctx, "/lock/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 {
			t.Errorf("keys left under /lock/ after all sessions closed: %v", resp.Kvs)
		}
	})
}

// TestMutexTryLock: TryLock fails with ErrLocked (and removes its waiter
// key) while another session holds the mutex, succeeds for the holder's own
// session and once the mutex is free; Lock with an expiring context gives up
// and removes its key.
func TestMutexTryLock(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv *server) {
		const pfx = "/trylock"
		ctx, cancel := ctxTimeout(opTimeout)
		defer cancel()
		s1, err := concurrency.NewSession(srv.client(t), concurrency.WithTTL(30))
		if err != nil {
			t.Fatal(err)
		}
		defer s1.Close()
		s2, err := concurrency.NewSession(srv.client(t), concurrency.WithTTL(30))
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		cli := s1.Client()
		waiters := func() []string {
			t.Helper()
			resp, err := cli.Get(ctx, pfx+"/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, kv := range resp.Kvs {
				keys = append(keys, string(kv.Key))
			}
			return keys
		}
		key1 := fmt.Sprintf("%s/%x", pfx, s1.Lease())
		key2 := fmt.Sprintf("%s/%x", pfx, s2.Lease())

		m1 := concurrency.NewMutex(s1, pfx)
		m2 := concurrency.NewMutex(s2, pfx)
		if err := m1.Lock(ctx); err != nil {
			t.Fatalf("m1.Lock on a free mutex: %v", err)
		}
		if got := m1.Key(); got != key1 {
			t.Errorf("m1.Key() = %q, want %q", got, key1)
		}
		if err := m2.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
			t.Errorf("m2.TryLock while m1 holds the mutex: got %v, want %v", err, concurrency.ErrLocked)
		}
		if got := waiters(); len(got) != 1 || got[0] != key1 {
			t.Errorf("keys under %s/ after the failed TryLock: got %q, want only the holder's %q", pfx, got, key1)
		}
		// The holder's own session already holds it.
		if err := concurrency.NewMutex(s1, pfx).TryLock(ctx); err != nil {
			t.Errorf("TryLock from the holding session: got %v, want nil", err)
		}
		// Lock with a context that expires while m1 holds the mutex.
		shortCtx, shortCancel := ctxTimeout(500 * time.Millisecond)
		err = m2.Lock(shortCtx)
		shortCancel()
		if err == nil {
			t.Errorf("m2.Lock with a 500ms context while m1 holds the mutex: got nil, want a context error")
		}
		if got := waiters(); len(got) != 1 || got[0] != key1 {
			t.Errorf("keys under %s/ after the abandoned Lock: got %q, want only the holder's %q", pfx, got, key1)
		}
		if err := m1.Unlock(ctx); err != nil {
			t.Fatalf("m1.Unlock: %v", err)
		}
		if err := m1.Unlock(ctx); !errors.Is(err, concurrency.ErrLockReleased) {
			t.Errorf("second m1.Unlock: got %v, want %v", err, concurrency.ErrLockReleased)
		}
		if err := m2.TryLock(ctx); err != nil {
			t.Fatalf("m2.TryLock on a free mutex: got %v, want nil", err)
		}
		if got := waiters(); len(got) != 1 || got[0] != key2 {
			t.Errorf("keys under %s/ after m2 took the mutex: got %q, want only %q", pfx, got, key2)
		}
		if err := m1.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
			t.Errorf("m1.TryLock while m2 holds the mutex: got %v, want %v", err, concurrency.ErrLocked)
		}
		if err := m2.Unlock(ctx); err != nil {
			t.Fatalf("m2.Unlock: %v", err)
		}
		if got := waiters(); len(got) != 0 {
			t.Errorf("keys under %s/ after everything was unlocked: %q", pfx, got)
		}
	})
}
