package watch

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestWatchCancelThenNewWatcher: while writers hammer "x/", a clientv3
// watcher on "x/" is canceled and right away another watcher on "y/" (no
// writes) is created on the same stream (kept open by a third watcher),
// 100 times. The new watcher must
// never receive an event: events still in flight for the canceled watcher
// carry its watch id, which the server must not have given to the new one.
func TestWatchCancelThenNewWatcher(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stop atomic.Bool
		var wg sync.WaitGroup
		var puts atomic.Int64
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					pctx, pcancel := ctxTimeout(opTimeout)
					_, err := s.cli.Put(pctx, fmt.Sprintf("x/%d/%d", w, i%50), "v")
					pcancel()
					if err != nil {
						return
					}
					puts.Add(1)
				}
			}(w)
		}
		defer func() { stop.Store(true); wg.Wait() }()

		wcli := s.newClient(t)
		// a watcher that stays: without it clientv3 closes the stream when
		// its last watcher goes, and the next watcher gets a new stream
		keep := wcli.Watch(ctx, "keep", clientv3.WithCreatedNotify())
		if r, ok, _ := recvResp(keep, opTimeout); !ok || !r.Created {
			t.Fatalf("no created notification: %v", fmtWatchResponse(r))
		}
		stray := 0
		for i := 0; i < 100 && stray == 0; i++ {
			actx, acancel := context.WithCancel(ctx)
			a := wcli.Watch(actx, "x/", clientv3.WithPrefix())
			if r, ok, _ := recvResp(a, opTimeout); !ok || len(r.Events) == 0 {
				acancel()
				t.Fatalf("round %d: the x/ watcher got no event: %v", i, fmtWatchResponse(r))
			}
			acancel()
			bctx, bcancel := context.WithCancel(ctx)
			b := wcli.Watch(bctx, "y/", clientv3.WithPrefix())
			if r, ok, _ := recvResp(b, 30*time.Millisecond); ok {
				stray++
				t.Errorf("round %d: the y/ watcher (nothing is written under y/) received: %v", i, fmtWatchResponse(r))
			}
			bcancel()
		}
		t.Logf("%d puts meanwhile", puts.Load())
	})
}
