package durability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"rsetcd/compat-tests/internal/etcdproc"
)

const (
	rounds  = 3
	writers = 16
	prefix  = "durability/"
	// Each round writes for at least minLoad and until at least minAcks
	// puts were acknowledged, then kills the server mid-load.
	minLoad = 3 * time.Second
	minAcks = 200
	// Generous limits; they only keep a broken server from hanging the test.
	startTimeout = 90 * time.Second
	loadTimeout  = 90 * time.Second
	putTimeout   = 15 * time.Second
	readTimeout  = 30 * time.Second
)

// ack is a put the server confirmed.
type ack struct {
	value string
	rev   int64 // header revision of the PutResponse
}

// ledger records what the writers attempted and what was acknowledged.
type ledger struct {
	mu        sync.Mutex
	attempted map[string]string // key -> value, for every put sent
	acked     map[string]ack
	maxRev    int64
}

func newLedger() *ledger {
	return &ledger{attempted: map[string]string{}, acked: map[string]ack{}}
}

func (l *ledger) attempt(key, value string) {
	l.mu.Lock()
	l.attempted[key] = value
	l.mu.Unlock()
}

func (l *ledger) ack(key, value string, rev int64) {
	l.mu.Lock()
	l.acked[key] = ack{value, rev}
	if rev > l.maxRev {
		l.maxRev = rev
	}
	l.mu.Unlock()
}

func (l *ledger) ackCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// TestKill9Durability: under load from 16 concurrent writers the server is
// SIGKILLed, restarted on the same data directory and checked, three times.
// Every acknowledged put must be readable with exactly its value and at the
// revision the put reported, and revisions must keep growing.
func TestKill9Durability(t *testing.T) {
	kill9Rounds(t, "")
}

// With --wal-dir the write-ahead log lives outside the data dir (etcd's dedicated WAL
// directory): recovery must find it there, and nothing is logged under member/wal.
func TestKill9DurabilityWithWALDir(t *testing.T) {
	walDir := filepath.Join(t.TempDir(), "wal")
	kill9Rounds(t, walDir)
	files, err := os.ReadDir(walDir)
	if err != nil || len(files) == 0 {
		t.Fatalf("--wal-dir %s holds no log files (err %v)", walDir, err)
	}
}

func kill9Rounds(t *testing.T, walDir string) {
	bin := etcdproc.BinFromEnv(t)
	srv := etcdproc.New(t, bin, "t1")
	if walDir != "" {
		srv.ExtraArgs = append(srv.ExtraArgs, "--wal-dir", walDir)
		defer func() {
			if _, err := os.Stat(filepath.Join(srv.DataDir, "member", "wal")); err == nil {
				t.Errorf("with --wal-dir, %s/member/wal exists", srv.DataDir)
			}
		}()
	}
	if err := srv.Start(startTimeout); err != nil {
		t.Fatalf("first start: %v", err)
	}
	t.Logf("server %s, data dir %s, client URL %s", bin, srv.DataDir, srv.ClientURL)

	led := newLedger()
	runID := randomHex(4)
	for round := 1; round <= rounds; round++ {
		loadAndKill(t, srv, led, runID, round)
		if t.Failed() {
			return
		}
		if err := srv.Start(startTimeout); err != nil {
			t.Fatalf("round %d: restart after SIGKILL: %v", round, err)
		}
		verify(t, srv, led, round)
		if t.Failed() {
			return
		}
	}
	if err := srv.Stop(30 * time.Second); err != nil {
		t.Errorf("stopping with SIGTERM: %v", err)
	}
}

// loadAndKill runs the writers, kills the server while puts are in flight,
// then stops the writers.
func loadAndKill(t *testing.T, srv *etcdproc.Proc, led *ledger, runID string, round int) {
	cli, err := srv.Client()
	if err != nil {
		t.Fatalf("round %d: client: %v", round, err)
	}
	defer cli.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		killed      atomic.Bool
		inFlight    atomic.Int64
		healthyErrs sync.Map // writer -> first error seen before the kill
		wg          sync.WaitGroup
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("%sr%d/w%02d/%09d", prefix, round, w, i)
				value := fmt.Sprintf("%s/%s/%s", runID, key, randomHex(8))
				led.attempt(key, value)
				pctx, pcancel := context.WithTimeout(ctx, putTimeout)
				inFlight.Add(1)
				resp, err := cli.Put(pctx, key, value)
				inFlight.Add(-1)
				pcancel()
				if err == nil {
					led.ack(key, value, resp.Header.Revision)
					continue
				}
				if killed.Load() {
					return
				}
				healthyErrs.LoadOrStore(w, fmt.Sprintf("put %s: %v", key, err))
			}
		}(w)
	}

	start := time.Now()
	for time.Since(start) < minLoad || led.ackCount() < minAcks*round {
		if time.Since(start) > loadTimeout {
			killed.Store(true)
			cancel()
			wg.Wait()
			t.Fatalf("round %d: only %d puts acknowledged in %v", round, led.ackCount(), loadTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	killed.Store(true)
	pending := inFlight.Load()
	if err := srv.Kill(); err != nil {
		t.Fatalf("round %d: SIGKILL: %v", round, err)
	}
	cancel()
	wg.Wait()
	t.Logf("round %d: killed with %d puts in flight; %d acknowledged so far in total", round, pending, led.ackCount())
	healthyErrs.Range(func(w, msg any) bool {
		t.Errorf("round %d: writer %v: put failed while the server was up: %v", round, w, msg)
		return true
	})
}

// verify reads back everything under the prefix and checks it against the
// ledger.
func verify(t *testing.T, srv *etcdproc.Proc, led *ledger, round int) {
	cli, err := srv.Client()
	if err != nil {
		t.Fatalf("round %d: client: %v", round, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()

	// Read the whole prefix in pages, all at one revision.
	type found struct {
		value                string
		create, mod, version int64
	}
	got := map[string]found{}
	var headerRev int64
	from, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(5000)}
		if headerRev != 0 {
			opts = append(opts, clientv3.WithRev(headerRev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			t.Fatalf("round %d: reading back %q: %v", round, from, err)
		}
		if headerRev == 0 {
			headerRev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = found{string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}

	led.mu.Lock()
	defer led.mu.Unlock()
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}

	// Every acknowledged put is there, unchanged, at the revision the
	// server reported for it.
	lost := 0
	for key, a := range led.acked {
		f, ok := got[key]
		switch {
		case !ok:
			lost++
			report("acknowledged key %s (rev %d) is missing", key, a.rev)
		case f.value != a.value:
			report("acknowledged key %s: value %q, want %q", key, f.value, a.value)
		case f.mod != a.rev || f.create != a.rev || f.version != 1:
			report("acknowledged key %s: create/mod revision %d/%d version %d, want %d/%d version 1",
				key, f.create, f.mod, f.version, a.rev, a.rev)
		}
	}
	// Anything else under the prefix must be a put that was in flight (or
	// failed) at the kill, with the value that was sent.
	unacked := 0
	revs := map[int64]string{}
	var maxFoundRev int64
	for key, f := range got {
		if want, ok := led.attempted[key]; !ok {
			report("key %s was never written by this test", key)
		} else if want != f.value {
			report("key %s: value %q was never written (sent %q)", key, f.value, want)
		}
		if _, ok := led.acked[key]; !ok {
			unacked++
		}
		if other, dup := revs[f.mod]; dup {
			report("keys %s and %s share mod revision %d, but every put was a separate request", key, other, f.mod)
		}
		revs[f.mod] = key
		if f.mod > maxFoundRev {
			maxFoundRev = f.mod
		}
	}
	// Revisions are sane: the store is at least at the newest acknowledged
	// revision and no key claims a revision beyond the store's.
	if headerRev < led.maxRev {
		report("header revision %d after restart is below the highest acknowledged revision %d", headerRev, led.maxRev)
	}
	if maxFoundRev > headerRev {
		report("a key has mod revision %d, beyond the header revision %d", maxFoundRev, headerRev)
	}
	// Each put of this test took exactly one revision and nothing else
	// writes to the store, so every revision from the first of ours up to
	// the header revision must belong to a key we can read.
	if len(revs) > 0 {
		var sorted []int64
		for r := range revs {
			sorted = append(sorted, r)
		}
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		gaps := 0
		for r := sorted[0]; r <= headerRev; r++ {
			if _, ok := revs[r]; !ok {
				if gaps < 5 {
					report("revision %d (between %d and header %d) belongs to no key", r, sorted[0], headerRev)
				}
				gaps++
			}
		}
		if gaps > 5 {
			report("... %d revisions in total belong to no key", gaps)
		}
	}

	checked := len(led.acked)

	// A new write after the restart gets a revision above everything seen.
	probeKey := fmt.Sprintf("%sprobe/%d", prefix, round)
	led.attempted[probeKey] = "probe"
	presp, err := cli.Put(ctx, probeKey, "probe")
	if err != nil {
		t.Fatalf("round %d: put after restart: %v", round, err)
	}
	led.acked[probeKey] = ack{"probe", presp.Header.Revision}
	if r := presp.Header.Revision; r <= headerRev || r <= led.maxRev {
		report("put after restart got revision %d, not above header %d / acknowledged %d", r, headerRev, led.maxRev)
	}
	if presp.Header.Revision > led.maxRev {
		led.maxRev = presp.Header.Revision
	}

	t.Logf("round %d: after restart: %d acknowledged keys (probes included) checked, %d keys present (%d of them unacknowledged in-flight puts that landed), header revision %d, highest acknowledged %d",
		round, checked, len(got), unacked, headerRev, led.maxRev)
	if len(problems) > 0 {
		sort.Strings(problems)
		shown := problems
		if len(shown) > 40 {
			shown = shown[:40]
		}
		t.Errorf("round %d: %d problems after kill -9 and restart (%d acknowledged puts lost):\n  %s",
			round, len(problems), lost, strings.Join(shown, "\n  "))
	}
}
