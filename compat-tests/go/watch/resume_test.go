package watch

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestWatchResumeAfterReconnect: a watcher reads part of a stream of puts,
// its client is closed while the puts go on, a new client resumes with
// WithRev(last received revision + 1): together they see every put once.
func TestWatchResumeAfterReconnect(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		const puts = 300
		writer := s.newClient(t)
		var mu sync.Mutex
		var written []change // in revision order (one writer)
		writerDone := make(chan struct{})
		var writeErr error
		startWriter := make(chan struct{})
		go func() {
			defer close(writerDone)
			<-startWriter
			for i := 0; i < puts; i++ {
				k, v := fmt.Sprintf("r/%d", i%10), fmt.Sprintf("v%d", i)
				ctx, cancel := ctxTimeout(opTimeout)
				resp, err := writer.Put(ctx, k, v)
				cancel()
				if err != nil {
					writeErr = err
					return
				}
				mu.Lock()
				written = append(written, change{Rev: resp.Header.Revision, Key: k, Type: mvccpb.PUT, Value: v})
				mu.Unlock()
				if i%50 == 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()

		// First client: read until at least 100 events, then close it.
		first := s.newClient(t)
		ch := first.Watch(context.Background(), "r/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if r, ok, _ := recvResp(ch, opTimeout); !ok || !r.Created {
			t.Fatalf("no created notification: %v", fmtWatchResponse(r))
		}
		close(startWriter)
		var got []change
		for len(got) < 100 {
			r, ok, closed := recvResp(ch, opTimeout)
			if !ok || closed {
				t.Fatalf("first watcher: no response after %d events (closed=%v)", len(got), closed)
			}
			if err := r.Err(); err != nil {
				t.Fatalf("first watcher: %s", errString(err))
			}
			for _, ev := range r.Events {
				got = append(got, change{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), Type: ev.Type, Value: string(ev.Kv.Value)})
			}
		}
		first.Close()
		lastRev := got[len(got)-1].Rev
		t.Logf("first client closed after %d events (last revision %d)", len(got), lastRev)
		time.Sleep(200 * time.Millisecond) // the writer goes on meanwhile

		// Second client (a fresh connection) resumes.
		second := s.newClient(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch2 := second.Watch(ctx, "r/", clientv3.WithPrefix(), clientv3.WithRev(lastRev+1))
		<-writerDone
		if writeErr != nil {
			t.Fatalf("writer: %v", writeErr)
		}
		for len(got) < len(written) {
			r, ok, closed := recvResp(ch2, 30*time.Second)
			if !ok || closed {
				break
			}
			if err := r.Err(); err != nil {
				t.Fatalf("second watcher: %s", errString(err))
			}
			for _, ev := range r.Events {
				got = append(got, change{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), Type: ev.Type, Value: string(ev.Kv.Value)})
			}
		}
		// anything more would be a duplicate
		if r, ok, _ := recvResp(ch2, 500*time.Millisecond); ok {
			t.Errorf("second watcher: unexpected extra response: %v", fmtWatchResponse(r))
		}
		if d := diffChanges(written, got); d != "" {
			t.Errorf("expected the %d puts once each, got %d events; first difference:\n%s", len(written), len(got), d)
		} else {
			t.Logf("%d puts seen exactly once across the reconnect", len(written))
		}
	})
}
