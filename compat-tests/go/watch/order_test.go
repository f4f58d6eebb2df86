package watch

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// change is one event a write produced: what a watcher of its key must get.
type change struct {
	Rev     int64
	Idx     int // position of the event within its revision (txn op order)
	Key     string
	Type    mvccpb.Event_EventType
	Value   string // PUT: the value written
	Prev    string // the value before (prev_kv), if HasPrev
	HasPrev bool
}

func (c change) String() string {
	// (Idx is not shown: a watcher sees only the events of its range, in
	// the txn's op order, so positions are compared through list order)
	s := fmt.Sprintf("rev=%d %s %q", c.Rev, c.Type, c.Key)
	if c.Type == mvccpb.PUT {
		s += fmt.Sprintf("=%q", c.Value)
	}
	if c.HasPrev {
		s += fmt.Sprintf(" prev=%q", c.Prev)
	}
	return s
}

// watchSpec is one watcher: a key range and options.
type watchSpec struct {
	name     string
	key, end string // end "" = single key; "\x00" = from key
	prefix   bool
	prevKV   bool
}

func (w watchSpec) contains(key string) bool {
	switch {
	case w.prefix:
		return strings.HasPrefix(key, w.key)
	case w.end == "":
		return key == w.key
	case w.end == "\x00":
		return key >= w.key
	default:
		return key >= w.key && key < w.end
	}
}

func (w watchSpec) opts(rev int64) []clientv3.OpOption {
	var o []clientv3.OpOption
	switch {
	case w.prefix:
		o = append(o, clientv3.WithPrefix())
	case w.end == "\x00":
		o = append(o, clientv3.WithFromKey())
	case w.end != "":
		o = append(o, clientv3.WithRange(w.end))
	}
	if w.prevKV {
		o = append(o, clientv3.WithPrevKV())
	}
	if rev != 0 {
		o = append(o, clientv3.WithRev(rev))
	} else {
		o = append(o, clientv3.WithCreatedNotify())
	}
	return o
}

// received is what one watcher got.
type received struct {
	mu        sync.Mutex
	events    []change
	problems  []string
	responses int
	seenRev   map[int64]int // revision -> index of the response that carried it
}

func (r *received) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// consume reads ch until it closes, recording events and anything wrong
// with the responses themselves.
func (r *received) consume(ch clientv3.WatchChan) {
	r.seenRev = map[int64]int{}
	for resp := range ch {
		r.mu.Lock()
		if err := resp.Err(); err != nil {
			if resp.Canceled && strings.Contains(err.Error(), "context canceled") {
				r.mu.Unlock()
				continue
			}
			r.problems = append(r.problems, fmt.Sprintf("response %d: error %s (canceled=%v compact=%d)",
				r.responses, errString(err), resp.Canceled, resp.CompactRevision))
		}
		if resp.Created || resp.IsProgressNotify() {
			r.mu.Unlock()
			continue
		}
		idx := r.responses
		r.responses++
		var last int64
		n := 0
		for _, ev := range resp.Events {
			rev := ev.Kv.ModRevision
			if rev != last {
				n = 0
				if prev, ok := r.seenRev[rev]; ok && prev != idx {
					r.problems = append(r.problems, fmt.Sprintf(
						"revision %d split across responses %d and %d", rev, prev, idx))
				}
				r.seenRev[rev] = idx
			}
			if rev > resp.Header.Revision {
				r.problems = append(r.problems, fmt.Sprintf(
					"response %d: event at revision %d but header revision %d", idx, rev, resp.Header.Revision))
			}
			c := change{Rev: rev, Idx: n, Key: string(ev.Kv.Key), Type: ev.Type}
			if ev.Type == mvccpb.PUT {
				c.Value = string(ev.Kv.Value)
			}
			if ev.PrevKv != nil {
				c.HasPrev, c.Prev = true, string(ev.PrevKv.Value)
			}
			r.events = append(r.events, c)
			last = rev
			n++
		}
		r.mu.Unlock()
	}
}

// ledger collects the changes of acknowledged writes.
type ledger struct {
	mu      sync.Mutex
	byRev   map[int64][]change
	writers map[int64]string // revision -> which write got it
	dupRevs []string
}

func (l *ledger) add(rev int64, who string, cs []change) {
	if len(cs) == 0 {
		return // nothing changed: no revision, no event
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w, ok := l.writers[rev]; ok {
		l.dupRevs = append(l.dupRevs, fmt.Sprintf("revision %d given to %s and %s", rev, w, who))
		return
	}
	l.writers[rev] = who
	for i := range cs {
		cs[i].Rev, cs[i].Idx = rev, i
	}
	l.byRev[rev] = cs
}

// sorted returns all changes in revision order, with prev values filled in
// from the history (the value the key had just before, if it existed).
func (l *ledger) sorted() []change {
	revs := make([]int64, 0, len(l.byRev))
	for r := range l.byRev {
		revs = append(revs, r)
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	cur := map[string]string{}
	var out []change
	for _, r := range revs {
		for _, c := range l.byRev[r] {
			if v, ok := cur[c.Key]; ok {
				c.HasPrev, c.Prev = true, v
			}
			if c.Type == mvccpb.PUT {
				cur[c.Key] = c.Value
			} else {
				delete(cur, c.Key)
			}
			out = append(out, c)
		}
	}
	return out
}

// TestWatchOrderUnderLoad: 8 writers, 2000 operations, 20 watchers on 4
// streams; every watcher gets exactly its range's changes, in order, each
// revision in one response.
func TestWatchOrderUnderLoad(t *testing.T) {
	forEachServer(t, testWatchOrderUnderLoad)
}

func testWatchOrderUnderLoad(t *testing.T, s *server) {
	const (
		writers      = 8
		opsPerWriter = 250
	)
	groups := []string{"v/a/", "w/a/", "w/b/", "w/c/", "w/d/"}
	keyOf := func(r *rand.Rand) string { return groups[r.Intn(len(groups))] + fmt.Sprint(r.Intn(8)) }

	specs := []watchSpec{
		// stream A: client 1, plain context, created before the writes
		{name: "A0 prefix w/", key: "w/", prefix: true},
		{name: "A1 prefix w/a/", key: "w/a/", prefix: true},
		{name: "A2 prefix w/b/", key: "w/b/", prefix: true},
		{name: "A3 key w/c/3", key: "w/c/3"},
		{name: "A4 range [w/a/4,w/c/2)", key: "w/a/4", end: "w/c/2"},
		{name: "A5 from-key w/c", key: "w/c", end: "\x00"},
		// stream B: client 1, other metadata (so another stream)
		{name: "B6 prefix '' (all)", key: "", prefix: true},
		{name: "B7 prefix v/", key: "v/", prefix: true},
		{name: "B8 prefix w/d/", key: "w/d/", prefix: true},
		{name: "B9 range [v/a/5,w/a/3)", key: "v/a/5", end: "w/a/3"},
		// stream C: client 2
		{name: "C10 prefix w/ prev", key: "w/", prefix: true, prevKV: true},
		{name: "C11 prefix w/b/ prev", key: "w/b/", prefix: true, prevKV: true},
		{name: "C12 key v/a/1 prev", key: "v/a/1", prevKV: true},
		{name: "C13 prefix w/c/", key: "w/c/", prefix: true},
		{name: "C14 prefix w/a/1", key: "w/a/1", prefix: true},
		// stream D: client 3, created mid-load from the first revision of the
		// writes (catching up while the writes go on)
		{name: "D15 prefix w/ (late)", key: "w/", prefix: true},
		{name: "D16 prefix '' (late)", key: "", prefix: true},
		{name: "D17 prefix w/d/ prev (late)", key: "w/d/", prefix: true, prevKV: true},
		{name: "D18 range [w/b,w/d) (late)", key: "w/b", end: "w/d"},
		{name: "D19 prefix v/ prev (late)", key: "v/", prefix: true, prevKV: true},
		// stream E: client 2, other metadata, created at 50 % of the writes
		// without a start revision (racing with the writes): they must get
		// a gap-free suffix of their range's changes that includes every
		// change after the revision of their created response
		{name: "E20 prefix w/ (mid-load)", key: "w/", prefix: true},
		{name: "E21 prefix '' (mid-load)", key: "", prefix: true},
		{name: "E22 prefix v/ prev (mid-load)", key: "v/", prefix: true, prevKV: true},
	}
	late, mid := 15, 20

	cli1, cli2, cli3 := s.cli, s.newClient(t), s.newClient(t)
	watchCtx, stopWatches := context.WithCancel(context.Background())
	defer stopWatches()
	ctxA := watchCtx
	ctxB := metadata.AppendToOutgoingContext(watchCtx, "rsetcd-test-stream", "b")
	ctxE := metadata.AppendToOutgoingContext(watchCtx, "rsetcd-test-stream", "e")
	streams := []struct {
		cli *clientv3.Client
		ctx context.Context
	}{{cli1, ctxA}, {cli1, ctxB}, {cli2, watchCtx}, {cli3, watchCtx}, {cli2, ctxE}}
	streamOf := func(i int) int {
		switch {
		case i < 6:
			return 0
		case i < 10:
			return 1
		case i < 15:
			return 2
		case i < 20:
			return 3
		}
		return 4
	}

	rev0 := currentRev(t, cli1)
	recv := make([]*received, len(specs))
	var consumers sync.WaitGroup
	startWatch := func(i int, rev int64) {
		st := streams[streamOf(i)]
		ch := st.cli.Watch(st.ctx, specs[i].key, specs[i].opts(rev)...)
		if rev == 0 {
			// wait for the created notification: the watch is synced from
			// rev0+1 before the first write
			r, ok, _ := recvResp(ch, opTimeout)
			if !ok || !r.Created {
				t.Fatalf("watcher %s: no created notification (ok=%v, %v)", specs[i].name, ok, fmtWatchResponse(r))
			}
		}
		recv[i] = &received{}
		consumers.Add(1)
		go func() { defer consumers.Done(); recv[i].consume(ch) }()
	}
	for i := 0; i < late; i++ {
		startWatch(i, 0)
	}
	// startMid starts watcher i without a start revision while the writes
	// go on; it runs in a writer goroutine, so problems are recorded, not
	// fatal.
	createdRev := make([]int64, len(specs))
	startMid := func(i int) {
		st := streams[streamOf(i)]
		ch := st.cli.Watch(st.ctx, specs[i].key, specs[i].opts(0)...)
		recv[i] = &received{}
		r, ok, _ := recvResp(ch, opTimeout)
		if !ok || !r.Created {
			recv[i].problems = append(recv[i].problems, fmt.Sprintf("no created notification (ok=%v, %v)", ok, fmtWatchResponse(r)))
		}
		createdRev[i] = r.Header.Revision
		consumers.Add(1)
		go func() { defer consumers.Done(); recv[i].consume(ch) }()
	}

	l := &ledger{byRev: map[int64][]change{}, writers: map[int64]string{}}
	var done atomic.Int64
	var writeErrs []string
	var errMu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(1000 + w)))
			cli := []*clientv3.Client{cli1, cli2, cli3}[w%3]
			fail := func(format string, args ...any) {
				errMu.Lock()
				writeErrs = append(writeErrs, fmt.Sprintf("writer %d: ", w)+fmt.Sprintf(format, args...))
				errMu.Unlock()
			}
			for n := 0; n < opsPerWriter; n++ {
				who := fmt.Sprintf("writer %d op %d", w, n)
				ctx, cancel := ctxTimeout(opTimeout)
				p := r.Float64()
				switch {
				case p < 0.5:
					k, v := keyOf(r), fmt.Sprintf("p%d.%d", w, n)
					resp, err := cli.Put(ctx, k, v)
					if err != nil {
						fail("put: %v", err)
					} else {
						l.add(resp.Header.Revision, who, []change{{Key: k, Type: mvccpb.PUT, Value: v}})
					}
				case p < 0.7:
					k := keyOf(r)
					resp, err := cli.Delete(ctx, k)
					if err != nil {
						fail("delete: %v", err)
					} else if resp.Deleted == 1 {
						l.add(resp.Header.Revision, who, []change{{Key: k, Type: mvccpb.DELETE}})
					}
				default:
					nops := 2 + r.Intn(3)
					used := map[string]bool{}
					var ops []clientv3.Op
					var cs []change
					var isPut []bool
					var keys []string
					for len(ops) < nops {
						k := keyOf(r)
						if used[k] {
							continue
						}
						used[k] = true
						if r.Float64() < 0.7 {
							v := fmt.Sprintf("t%d.%d.%d", w, n, len(ops))
							ops = append(ops, clientv3.OpPut(k, v))
							cs = append(cs, change{Key: k, Type: mvccpb.PUT, Value: v})
							isPut = append(isPut, true)
						} else {
							ops = append(ops, clientv3.OpDelete(k))
							cs = append(cs, change{Key: k, Type: mvccpb.DELETE})
							isPut = append(isPut, false)
						}
						keys = append(keys, k)
					}
					resp, err := cli.Txn(ctx).Then(ops...).Commit()
					if err != nil {
						fail("txn: %v", err)
						break
					}
					var happened []change
					for i, c := range cs {
						if isPut[i] || resp.Responses[i].GetResponseDeleteRange().Deleted == 1 {
							happened = append(happened, c)
						}
					}
					l.add(resp.Header.Revision, who, happened)
				}
				cancel()
				if done.Add(1) == writers*opsPerWriter*3/10 {
					// 30 % of the writes are done: the late watchers start
					// from the first revision of the writes
					for i := late; i < mid; i++ {
						startWatch(i, rev0+1)
					}
				}
				if done.Load() == writers*opsPerWriter/2 {
					for i := mid; i < len(specs); i++ {
						startMid(i)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	writeTime := time.Since(start)
	if len(writeErrs) > 0 {
		t.Fatalf("%d writes failed, first: %s", len(writeErrs), writeErrs[0])
	}
	if len(l.dupRevs) > 0 {
		t.Fatalf("two writes got the same revision: %v", l.dupRevs)
	}
	all := l.sorted()
	lastRev := currentRev(t, cli1)
	t.Logf("%d writes in %v: %d revisions (%d..%d), %d changes", writers*opsPerWriter,
		writeTime.Round(time.Millisecond), len(l.byRev), rev0+1, lastRev, len(all))
	if int64(len(l.byRev)) != lastRev-rev0 {
		t.Errorf("the writes produced %d revisions but the store went from revision %d to %d",
			len(l.byRev), rev0, lastRev)
	}

	// The ledger agrees with the final state.
	checkFinalState(t, cli1, all)

	// Wait until every watcher has (at least) its expected number of
	// events, then a little more so that duplicates at the end show.
	expected := make([][]change, len(specs))
	for i, sp := range specs {
		for _, c := range all {
			if sp.contains(c.Key) {
				if !sp.prevKV {
					c.HasPrev, c.Prev = false, ""
				}
				expected[i] = append(expected[i], c)
			}
		}
	}
	// mid-load watchers: at least the changes after their created revision
	mustHave := make([]int, len(specs))
	for i := range specs {
		mustHave[i] = len(expected[i])
		if i >= mid {
			mustHave[i] = 0
			for _, c := range expected[i] {
				if c.Rev > createdRev[i] {
					mustHave[i]++
				}
			}
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := range specs {
		for recv[i].count() < mustHave[i] && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond)
	stopWatches()
	consumers.Wait()

	for i, sp := range specs {
		r := recv[i]
		got := r.events
		for _, p := range r.problems {
			t.Errorf("watcher %s: %s", sp.name, p)
		}
		for j := 1; j < len(got); j++ {
			if got[j].Rev < got[j-1].Rev {
				t.Errorf("watcher %s: event %d at revision %d after revision %d", sp.name, j, got[j].Rev, got[j-1].Rev)
				break
			}
		}
		want := expected[i]
		if i >= mid {
			// the suffix of the expected list that got starts with, if any;
			// it must start at or before the first change after the
			// created revision
			k := len(want) - len(got)
			if k < 0 || k > len(want)-mustHave[i] {
				t.Errorf("watcher %s (created at revision %d): got %d events, but %d changes came after the created revision (%d in its range in total)",
					sp.name, createdRev[i], len(got), mustHave[i], len(want))
				k = max(0, min(k, len(want)))
			}
			want = want[k:]
		}
		if d := diffChanges(want, got); d != "" {
			t.Errorf("watcher %s (%d responses): expected %d events, got %d; first difference:\n%s",
				sp.name, r.responses, len(want), len(got), d)
		} else {
			t.Logf("watcher %-30s %5d events in %4d responses: ok", sp.name, len(got), r.responses)
		}
	}
}

// checkFinalState compares the ledger's last write of every key with a Get
// of everything.
func checkFinalState(t *testing.T, cli *clientv3.Client, all []change) {
	t.Helper()
	want := map[string]change{}
	for _, c := range all {
		if c.Type == mvccpb.PUT {
			want[c.Key] = c
		} else {
			delete(want, c.Key)
		}
	}
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("final Get: %v", err)
	}
	got := map[string]bool{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if !strings.HasPrefix(k, "v/") && !strings.HasPrefix(k, "w/") {
			continue
		}
		got[k] = true
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("final state: %q exists (mod %d) but the writes deleted it last", k, kv.ModRevision)
		case string(kv.Value) != w.Value || kv.ModRevision != w.Rev:
			t.Errorf("final state: %q = %q at mod revision %d, the writes say %q at %d",
				k, kv.Value, kv.ModRevision, w.Value, w.Rev)
		}
	}
	for k := range want {
		if !got[k] {
			t.Errorf("final state: %q is missing, the writes last put it at revision %d", k, want[k].Rev)
		}
	}
}

// diffChanges returns "" when the lists are equal, otherwise the first
// difference with some context.
func diffChanges(want, got []change) string {
	n := len(want)
	if len(got) > n {
		n = len(got)
	}
	for i := 0; i < n; i++ {
		var w, g string
		if i < len(want) {
			w = want[i].String()
		}
		if i < len(got) {
			g = got[i].String()
		}
		if w == g {
			continue
		}
		var b bytes.Buffer
		for j := max(0, i-3); j < min(n, i+4); j++ {
			var wj, gj string
			if j < len(want) {
				wj = want[j].String()
			} else {
				wj = "(none)"
			}
			if j < len(got) {
				gj = got[j].String()
			} else {
				gj = "(none)"
			}
			mark := " "
			if wj != gj {
				mark = "!"
			}
			fmt.Fprintf(&b, "  %s event %d: want %s\n  %s           got  %s\n", mark, j, wj, mark, gj)
		}
		return b.String()
	}
	return ""
}
