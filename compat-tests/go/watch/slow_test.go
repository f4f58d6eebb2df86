package watch

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	slowPuts      = 20000
	slowWriters   = 16
	slowValueSize = 1024
	// rssLimitKiB bounds the server's peak RSS while a watcher is stalled.
	rssLimitKiB = 300 << 10
	// slowWriteTimeout is a generous bound on the 20,000 puts: the stalled
	// watcher must not block the writers.
	slowWriteTimeout = 90 * time.Second
)

// TestWatchSlowConsumer: a raw watch stream (so that nothing reads on the
// client side, unlike clientv3 which buffers without limit) stops reading
// while 20,000 puts of 1 KiB happen. The puts must complete, the server's
// RSS must stay bounded, and reading afterwards yields all 20,000 events in
// revision order with the right keys and values.
func TestWatchSlowConsumer(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		pid := s.proc.Pid()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		mem0, err := readMem(pid)
		if err != nil {
			t.Fatalf("reading the server's RSS: %v", err)
		}

		st := rawStream(t, ctx, s.newClient(t))
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte("s/"), RangeEnd: []byte("s0")}}}); err != nil {
			t.Fatalf("create: %v", err)
		}
		created, err := st.recv(opTimeout)
		if err != nil || !created.Created {
			t.Fatalf("create: %v %v", err, created)
		}
		rev0 := currentRev(t, s.cli)

		// Sample the server's RSS (and its anonymous part: LMDB's or bbolt's
		// mmap of the data file counts as file-backed RSS) until the end.
		var peak, peakAnon atomic.Int64
		peak.Store(mem0.RSS)
		peakAnon.Store(mem0.Anon)
		stopSampling := make(chan struct{})
		var sampler sync.WaitGroup
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			for {
				if m, err := readMem(pid); err == nil {
					if m.RSS > peak.Load() {
						peak.Store(m.RSS)
					}
					if m.Anon > peakAnon.Load() {
						peakAnon.Store(m.Anon)
					}
				}
				select {
				case <-stopSampling:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		defer func() {
			close(stopSampling)
			sampler.Wait()
		}()

		// The writers (the watcher is not read meanwhile).
		keyAt := make([]string, slowPuts+1)   // by revision offset
		valueAt := make([]string, slowPuts+1) // by revision offset
		var mu sync.Mutex
		var writeErr atomic.Value
		var wg sync.WaitGroup
		start := time.Now()
		wctx, wcancel := context.WithTimeout(ctx, slowWriteTimeout)
		defer wcancel()
		pad := strings.Repeat("x", slowValueSize-16)
		for w := 0; w < slowWriters; w++ {
			wg.Add(1)
			cli := s.cli
			if w%2 == 1 {
				cli = s.newClient(t)
			}
			go func(w int) {
				defer wg.Done()
				for i := w; i < slowPuts; i += slowWriters {
					k := fmt.Sprintf("s/%05d", i)
					v := fmt.Sprintf("%016d", i) + pad
					r, err := cli.Put(wctx, k, v)
					if err != nil {
						writeErr.Store(fmt.Sprintf("put %s: %v", k, err))
						return
					}
					off := r.Header.Revision - rev0
					if off < 1 || off > slowPuts {
						writeErr.Store(fmt.Sprintf("put %s got revision %d, outside %d..%d", k, r.Header.Revision, rev0+1, rev0+slowPuts))
						return
					}
					mu.Lock()
					keyAt[off], valueAt[off] = k, v
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		writeTime := time.Since(start)
		if e := writeErr.Load(); e != nil {
			t.Fatalf("writers with a stalled watcher (after %v): %s", writeTime.Round(time.Millisecond), e)
		}
		memAfterWrites, _ := readMem(pid)
		t.Logf("%d puts of %d bytes by %d writers while the watcher was stalled: %v (%.0f puts/s)",
			slowPuts, slowValueSize, slowWriters, writeTime.Round(time.Millisecond), float64(slowPuts)/writeTime.Seconds())

		// Now read everything.
		readStart := time.Now()
		var got, responses int
		var problems []string
		problem := func(format string, args ...any) {
			if len(problems) < 10 {
				problems = append(problems, fmt.Sprintf(format, args...))
			}
		}
		next := rev0 + 1
		for got < slowPuts {
			r, err := st.recv(30 * time.Second)
			if err != nil {
				problem("after %d of %d events: %v", got, slowPuts, err)
				break
			}
			responses++
			if r.Canceled || r.CompactRevision != 0 || r.WatchId != created.WatchId {
				problem("unexpected response: %v", fmtRaw(r)[0])
				if r.Canceled {
					break
				}
			}
			for _, ev := range r.Events {
				rev := ev.Kv.ModRevision
				if rev != next {
					problem("event %d: revision %d, expected %d", got, rev, next)
				}
				off := rev - rev0
				if ev.Type != mvccpb.PUT || off < 1 || off > slowPuts || string(ev.Kv.Key) != keyAt[off] || string(ev.Kv.Value) != valueAt[off] {
					problem("event %d at revision %d: %s %q (value %d bytes), the put at that revision was %q",
						got, rev, ev.Type, ev.Kv.Key, len(ev.Kv.Value), keyAt[max(0, min(off, slowPuts))])
				}
				next = rev + 1
				got++
			}
		}
		memEnd, _ := readMem(pid)
		t.Logf("read %d events in %d responses in %v", got, responses, time.Since(readStart).Round(time.Millisecond))
		t.Logf("%s memory: before %v; after the writes %v; after reading %v; peak sampled RSS %d MiB (anon %d MiB), VmHWM %d MiB",
			s.name, mem0, memAfterWrites, memEnd, peak.Load()>>10, peakAnon.Load()>>10, memEnd.HWM>>10)
		for _, p := range problems {
			t.Error(p)
		}
		if got != slowPuts {
			t.Errorf("read %d events, expected %d", got, slowPuts)
		}
		if peak.Load() > rssLimitKiB {
			t.Errorf("server RSS peaked at %d MiB (limit %d MiB) with one stalled watcher", peak.Load()>>10, rssLimitKiB>>10)
		}
		// nothing more should come
		if r, err := st.recv(300 * time.Millisecond); err == nil {
			t.Errorf("unexpected extra response: %v", fmtRaw(r)[0])
		}
	})
}

// TestWatchSlowConsumerCompacted: a raw watch stream stalls while 5,000
// puts happen, then the store is compacted at the current revision, then
// the stream is read. The watcher may get the events the server still
// holds for it, in order and without a gap, and then - because it has not
// caught up before the compaction - a cancel with compact_revision set
// (etcd: the watcher's next revision is below the compacted one); or all
// events. Never an event after a gap, never a silent stop.
func TestWatchSlowConsumerCompacted(t *testing.T) {
	const puts = 5000
	forEachServer(t, func(t *testing.T, s *server) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := rawStream(t, ctx, s.newClient(t))
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte("c/"), RangeEnd: []byte("c0")}}}); err != nil {
			t.Fatalf("create: %v", err)
		}
		created, err := st.recv(opTimeout)
		if err != nil || !created.Created {
			t.Fatalf("create: %v %v", err, created)
		}
		rev0 := currentRev(t, s.cli)
		pad := strings.Repeat("y", 1000)
		var wg sync.WaitGroup
		var writeErr atomic.Value
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < puts; i += 8 {
					pctx, pcancel := ctxTimeout(opTimeout)
					_, err := s.cli.Put(pctx, fmt.Sprintf("c/%05d", i), pad)
					pcancel()
					if err != nil {
						writeErr.Store(err.Error())
						return
					}
				}
			}(w)
		}
		wg.Wait()
		if e := writeErr.Load(); e != nil {
			t.Fatalf("put: %s", e)
		}
		last := currentRev(t, s.cli)
		cctx, ccancel := ctxTimeout(opTimeout)
		_, err = s.cli.Compact(cctx, last, clientv3.WithCompactPhysical())
		ccancel()
		if err != nil {
			t.Fatalf("compact %d: %v", last, err)
		}

		next := rev0 + 1
		var got, responses int
		var final *pb.WatchResponse
		for got < puts {
			r, err := st.recv(10 * time.Second)
			if err != nil {
				t.Errorf("after %d events (next revision %d): %v", got, next, err)
				break
			}
			responses++
			if len(r.Events) == 0 {
				final = r
				break
			}
			for _, ev := range r.Events {
				if ev.Kv.ModRevision != next {
					t.Fatalf("event %d at revision %d, expected %d (a gap or a duplicate)", got, ev.Kv.ModRevision, next)
				}
				next++
				got++
			}
		}
		switch {
		case got == puts:
			t.Logf("%s: all %d events in %d responses despite the compaction at %d", s.name, got, responses, last)
			if r, err := st.recv(300 * time.Millisecond); err == nil {
				t.Errorf("unexpected response after all events: %v", fmtRaw(r))
			}
		case final != nil:
			t.Logf("%s: %d events (revisions %d..%d) in %d responses, then %v", s.name, got, rev0+1, next-1, responses, fmtRaw(final))
			if !final.Canceled || final.CompactRevision != last || final.WatchId != created.WatchId {
				t.Errorf("expected a cancel of watch %d with compact_revision %d after the stalled watcher fell behind the compaction, got %v",
					created.WatchId, last, fmtRaw(final))
			}
			if next >= last {
				t.Errorf("canceled as compacted although it had received everything up to revision %d (compacted at %d)", next-1, last)
			}
		}
	})
}
