package cluster

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"rsetcd/compat-tests/internal/etcdproc"
)

// snapshotFlags make every member snapshot every 100 applied entries and
// keep only 50 entries of raft log behind a snapshot for slow followers, so
// a follower that misses a few hundred writes can only catch up by having
// the leader send it a snapshot.
var snapshotFlags = []string{"--snapshot-count", "100", "--snapshot-catchup-entries", "50"}

// catchUpWithin bounds how long a restarted member that missed the
// compacted part of the log may take, from the restart, to serve it all.
const catchUpWithin = 20 * time.Second

// startSnapshotCluster starts 3 members of $RSETCD_BIN with snapshotFlags.
func startSnapshotCluster(t *testing.T) *etcdproc.Cluster {
	t.Helper()
	bin := etcdproc.BinFromEnv(t)
	c := etcdproc.NewCluster(t, bin, 3, snapshotFlags...)
	start := time.Now()
	if err := c.Start(startTimeout); err != nil {
		t.Fatalf("starting 3 members with %v: %v", snapshotFlags, err)
	}
	t.Logf("3 members of %s %v ready in %v", bin, snapshotFlags, time.Since(start).Round(time.Millisecond))
	return c
}

// putAll puts every key (value "v-"+key) through clis, 8 at a time, the
// clients taken in turn, and returns each key's put revision. A failed put
// fails the test.
func putAll(t *testing.T, clis []*clientv3.Client, keys []string) map[string]int64 {
	t.Helper()
	revs := make(map[string]int64, len(keys))
	var mu sync.Mutex
	var errs []string
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				key := keys[i]
				resp, err := clis[i%len(clis)].Put(ctxT(t, opTimeout), key, "v-"+key)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Sprintf("Put %s via %v: %v", key, clis[i%len(clis)].Endpoints(), err))
				} else {
					revs[key] = resp.Header.Revision
				}
				mu.Unlock()
			}
		}()
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d puts failed, e.g. %s", len(errs), len(keys), errs[0])
	}
	return revs
}

// kvLines renders key-values with everything a client sees of them, for
// comparing two members' reads.
func kvLines(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, fmt.Sprintf("%s=%q create=%d mod=%d version=%d lease=%x",
			kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	return out
}

// diffLines describes how got differs from want (both sorted), at most 5
// lines of each side.
func diffLines(got, want []string) string {
	in := func(s []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range s {
			m[x] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var missing, extra []string
	for _, x := range want {
		if !g[x] {
			missing = append(missing, x)
		}
	}
	for _, x := range got {
		if !w[x] {
			extra = append(extra, x)
		}
	}
	cut := func(s []string) string {
		if len(s) > 5 {
			return strings.Join(s[:5], "; ") + fmt.Sprintf("; ... (%d in all)", len(s))
		}
		return strings.Join(s, "; ")
	}
	return fmt.Sprintf("%d kvs, want %d; missing or different: [%s]; unexpected: [%s]", len(got), len(want), cut(missing), cut(extra))
}

// TestClusterSnapshotCatchUp pins catching up through a snapshot: with
// every member started with --snapshot-count 100 --snapshot-catchup-entries
// 50, a follower is SIGKILLed while 600 keys are put through the other two
// members (a few then deleted, one attached to a 60 s lease), so the
// leader's raft log is compacted far past the dead follower's position.
// Restarted, within 20 s the follower alone serves (serializable reads)
// every key with the leader's create/mod revisions and versions, not the
// deleted ones, and the lease key with its lease; its Status reaches the
// leader's raft index, applied index and revision; HashKV at that revision
// is equal on all three members. Afterwards it follows the log: a put
// through the leader is readable linearizably through it, and TimeToLive
// through it reports the lease granted with TTL 60 and its key.
func TestClusterSnapshotCatchUp(t *testing.T) {
	const prefix = "snap/"
	c := startSnapshotCluster(t)
	leader, li := c.Leader(t)
	fi := follower(c, li)
	oi := 3 - li - fi
	fol, other := c.Members[fi], c.Members[oi]
	lcli, ocli := memberClient(t, leader), memberClient(t, other)

	// The follower has applied something before it dies.
	put, err := lcli.Put(ctxT(t, opTimeout), prefix+"before", "b")
	if err != nil {
		t.Fatalf("%s (leader): Put: %v", leader.Name, err)
	}
	if kv, _ := getOne(t, fol.Name, memberClient(t, fol), prefix+"before"); kv == nil || kv.ModRevision != put.Header.Revision {
		t.Fatalf("%s (follower): Get %sbefore = %v, want mod revision %d", fol.Name, prefix, kv, put.Header.Revision)
	}
	fst := status(t, fol)
	if err := fol.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", fol.Name, err)
	}
	t.Logf("killed %s (follower) at raft index %d; %s leads", fol.Name, fst.RaftIndex, leader.Name)

	var keys []string
	for i := 0; i < 600; i++ {
		keys = append(keys, fmt.Sprintf("%skey/%04d", prefix, i))
	}
	start := time.Now()
	putAll(t, []*clientv3.Client{lcli, ocli}, keys)
	deleted := []string{keys[7], keys[123], keys[300], keys[456], keys[599]}
	for i, k := range deleted {
		cli := []*clientv3.Client{lcli, ocli}[i%2]
		resp, err := cli.Delete(ctxT(t, opTimeout), k)
		if err != nil || resp.Deleted != 1 {
			t.Fatalf("Delete %s via %v: %v (deleted %v)", k, cli.Endpoints(), err, resp)
		}
	}
	grant, err := ocli.Grant(ctxT(t, opTimeout), 60)
	if err != nil {
		t.Fatalf("%s: Grant 60: %v", other.Name, err)
	}
	leaseKey := prefix + "lease"
	if _, err := lcli.Put(ctxT(t, opTimeout), leaseKey, "l", clientv3.WithLease(grant.ID)); err != nil {
		t.Fatalf("%s (leader): Put %s with lease %x: %v", leader.Name, leaseKey, grant.ID, err)
	}
	want, err := lcli.Get(ctxT(t, opTimeout), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("%s (leader): Get %s: %v", leader.Name, prefix, err)
	}
	wantLines := kvLines(want.Kvs)
	if len(wantLines) != 1+600-len(deleted)+1 {
		t.Fatalf("%s (leader): %d keys under %s, want %d", leader.Name, len(wantLines), prefix, 1+600-len(deleted)+1)
	}
	lst := status(t, leader)
	t.Logf("%d puts, %d deletes, a lease in %v; leader at raft index %d, revision %d", len(keys), len(deleted),
		time.Since(start).Round(time.Millisecond), lst.RaftIndex, lst.Header.Revision)

	restartAt := time.Now()
	deadline := restartAt.Add(catchUpWithin)
	if err := c.Restart(fi, catchUpWithin); err != nil {
		t.Fatalf("restarting %s: %v", fol.Name, err)
	}
	t.Logf("%s restarted and serving in %v", fol.Name, time.Since(restartAt).Round(time.Millisecond))
	rcli := memberClient(t, fol)
	var got []*mvccpb.KeyValue
	for {
		resp, err := rcli.Get(ctxT(t, opTimeout), prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
		if err == nil {
			got = resp.Kvs
			if reflect.DeepEqual(kvLines(got), wantLines) {
				break
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("%s (restarted): serializable Get %s %v after the restart: %v", fol.Name, prefix, catchUpWithin, err)
			}
			t.Fatalf("%s (restarted): serializable Get %s %v after the restart: %s", fol.Name, prefix, catchUpWithin, diffLines(kvLines(got), wantLines))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s serves all %d keys %v after the restart", fol.Name, len(got), time.Since(restartAt).Round(time.Millisecond))
	byKey := map[string]*mvccpb.KeyValue{}
	for _, kv := range got {
		byKey[string(kv.Key)] = kv
	}
	for _, k := range deleted {
		if kv := byKey[k]; kv != nil {
			t.Errorf("%s (restarted): deleted key %s is there: %v", fol.Name, k, kv)
		}
	}
	if kv := byKey[leaseKey]; kv == nil || kv.Lease != int64(grant.ID) {
		t.Errorf("%s (restarted): %s = %v, want it attached to lease %x", fol.Name, leaseKey, kv, grant.ID)
	}

	// Status: same raft index, applied index and revision as the leader.
	var ls, fs *clientv3.StatusResponse
	statusDeadline := time.Now().Add(5 * time.Second)
	for {
		ls, fs = status(t, leader), status(t, fol)
		if fs.RaftIndex == ls.RaftIndex && fs.RaftAppliedIndex == ls.RaftAppliedIndex && fs.Header.Revision == ls.Header.Revision {
			break
		}
		if time.Now().After(statusDeadline) {
			t.Fatalf("Status after 5 s: %s (restarted) raft index %d applied %d revision %d, %s (leader) %d, %d, %d",
				fol.Name, fs.RaftIndex, fs.RaftAppliedIndex, fs.Header.Revision, leader.Name, ls.RaftIndex, ls.RaftAppliedIndex, ls.Header.Revision)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fs.Leader != ls.Leader || fs.RaftTerm != ls.RaftTerm {
		t.Errorf("%s (restarted): Status leader %x term %d, %s (leader) says %x term %d", fol.Name, fs.Leader, fs.RaftTerm, leader.Name, ls.Leader, ls.RaftTerm)
	}
	t.Logf("Status agrees: raft index %d, applied %d, revision %d", ls.RaftIndex, ls.RaftAppliedIndex, ls.Header.Revision)

	rev := ls.Header.Revision
	hashes := map[string]uint32{}
	for _, p := range c.Members {
		h, err := lcli.HashKV(ctxT(t, opTimeout), p.ClientURL, rev)
		if err != nil {
			t.Fatalf("%s: HashKV at %d: %v", p.Name, rev, err)
		}
		hashes[p.Name] = h.Hash
	}
	if hashes[fol.Name] != hashes[leader.Name] || hashes[other.Name] != hashes[leader.Name] {
		t.Errorf("HashKV at revision %d differs: %x", rev, hashes)
	}

	// It follows the log normally afterwards.
	after, err := lcli.Put(ctxT(t, opTimeout), prefix+"after", "a")
	if err != nil {
		t.Fatalf("%s (leader): Put %safter: %v", leader.Name, prefix, err)
	}
	if kv, _ := getOne(t, fol.Name, rcli, prefix+"after"); kv == nil || string(kv.Value) != "a" || kv.ModRevision != after.Header.Revision {
		t.Errorf("%s (restarted): linearizable Get %safter = %v, want a at mod revision %d", fol.Name, prefix, kv, after.Header.Revision)
	}
	ttl, err := rcli.TimeToLive(ctxT(t, opTimeout), grant.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatalf("%s (restarted): TimeToLive %x: %v", fol.Name, grant.ID, err)
	}
	if ttl.GrantedTTL != 60 || ttl.TTL <= 0 || ttl.TTL > 60 {
		t.Errorf("%s (restarted): TimeToLive %x: granted %d remaining %d, want granted 60, remaining in (0,60]", fol.Name, grant.ID, ttl.GrantedTTL, ttl.TTL)
	}
	if len(ttl.Keys) != 1 || string(ttl.Keys[0]) != leaseKey {
		t.Errorf("%s (restarted): TimeToLive %x keys %q, want [%s]", fol.Name, grant.ID, ttl.Keys, leaseKey)
	}
}

// TestClusterWatchAcrossSnapshot pins that a member that caught up through
// a snapshot has the history, not just the latest values: a follower is
// SIGKILLed after the first /w/ put, 300 more /w/ keys are put (and a few
// deleted or overwritten, a key outside /w/ put too) through the leader
// with every member snapshotting every 100 entries, and the follower is
// restarted. A watch on it from the first put's revision replays every /w/
// event in order with the revisions the writes reported, then delivers a
// new put live.
func TestClusterWatchAcrossSnapshot(t *testing.T) {
	const prefix = "/w/"
	c := startSnapshotCluster(t)
	leader, li := c.Leader(t)
	bi := follower(c, li)
	b := c.Members[bi]
	lcli := memberClient(t, leader)

	type ev struct {
		typ   mvccpb.Event_EventType
		key   string
		value string
		rev   int64
	}
	first, err := lcli.Put(ctxT(t, opTimeout), prefix+"first", "v0")
	if err != nil {
		t.Fatalf("%s (leader): Put: %v", leader.Name, err)
	}
	r0 := first.Header.Revision
	want := []ev{{mvccpb.PUT, prefix + "first", "v0", r0}}
	if kv, _ := getOne(t, b.Name, memberClient(t, b), prefix+"first"); kv == nil || kv.ModRevision != r0 {
		t.Fatalf("%s (follower): Get %sfirst = %v, want mod revision %d", b.Name, prefix, kv, r0)
	}
	if err := b.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", b.Name, err)
	}
	t.Logf("killed %s (follower) after revision %d; %s leads", b.Name, r0, leader.Name)

	var keys []string
	for i := 0; i < 300; i++ {
		keys = append(keys, fmt.Sprintf("%sk%04d", prefix, i))
	}
	for k, rev := range putAll(t, []*clientv3.Client{lcli}, keys) {
		want = append(want, ev{mvccpb.PUT, k, "v-" + k, rev})
	}
	if _, err := lcli.Put(ctxT(t, opTimeout), "/x/outside", "x"); err != nil {
		t.Fatalf("%s (leader): Put /x/outside: %v", leader.Name, err)
	}
	for _, i := range []int{10, 100, 200} {
		resp, err := lcli.Delete(ctxT(t, opTimeout), keys[i])
		if err != nil || resp.Deleted != 1 {
			t.Fatalf("%s (leader): Delete %s: %v (%v)", leader.Name, keys[i], err, resp)
		}
		want = append(want, ev{mvccpb.DELETE, keys[i], "", resp.Header.Revision})
	}
	over, err := lcli.Put(ctxT(t, opTimeout), keys[5], "v2")
	if err != nil {
		t.Fatalf("%s (leader): Put %s again: %v", leader.Name, keys[5], err)
	}
	want = append(want, ev{mvccpb.PUT, keys[5], "v2", over.Header.Revision})
	sort.Slice(want, func(i, j int) bool { return want[i].rev < want[j].rev })
	t.Logf("%d /w/ events up to revision %d", len(want), want[len(want)-1].rev)

	restartAt := time.Now()
	if err := c.Restart(bi, catchUpWithin); err != nil {
		t.Fatalf("restarting %s: %v", b.Name, err)
	}
	t.Logf("%s restarted and serving in %v", b.Name, time.Since(restartAt).Round(time.Millisecond))
	bcli := memberClient(t, b)
	ctx := ctxT(t, 30*time.Second)
	wch := bcli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(r0))

	var got []ev
	collect := func(n int, within time.Duration) {
		t.Helper()
		timeout := time.After(within)
		for len(got) < n {
			select {
			case resp, ok := <-wch:
				if !ok {
					t.Fatalf("%s: watch channel closed after %d of %d events", b.Name, len(got), n)
				}
				if err := resp.Err(); err != nil {
					t.Fatalf("%s: watch from revision %d: %v (compact revision %d)", b.Name, r0, err, resp.CompactRevision)
				}
				for _, e := range resp.Events {
					got = append(got, ev{e.Type, string(e.Kv.Key), string(e.Kv.Value), e.Kv.ModRevision})
					if resp.Header.Revision < e.Kv.ModRevision {
						t.Errorf("%s: watch response header revision %d < event revision %d", b.Name, resp.Header.Revision, e.Kv.ModRevision)
					}
				}
			case <-timeout:
				t.Fatalf("%s: only %d of %d events within %v; last %+v", b.Name, len(got), n, within, got[max(0, len(got)-3):])
			}
		}
	}
	collect(len(want), 10*time.Second)
	if !reflect.DeepEqual(got, want) {
		for i := range want {
			if i >= len(got) || got[i] != want[i] {
				t.Fatalf("%s: replayed watch events differ from event %d on: got %+v, want %+v", b.Name, i, got[i:min(len(got), i+3)], want[i:min(len(want), i+3)])
			}
		}
		t.Fatalf("%s: %d replayed watch events, want %d: extra %+v", b.Name, len(got), len(want), got[len(want):])
	}

	live, err := lcli.Put(ctxT(t, opTimeout), prefix+"live", "l")
	if err != nil {
		t.Fatalf("%s (leader): Put %slive: %v", leader.Name, prefix, err)
	}
	want = append(want, ev{mvccpb.PUT, prefix + "live", "l", live.Header.Revision})
	collect(len(want), 5*time.Second)
	if got[len(got)-1] != want[len(want)-1] || len(got) != len(want) {
		t.Errorf("%s: after the replay the watch delivered %+v, want %+v", b.Name, got[len(want)-1:], want[len(want)-1])
	}
}
