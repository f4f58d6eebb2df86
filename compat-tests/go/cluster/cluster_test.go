// Package cluster checks multi-member behaviour with real processes: a 3- or
// 5-member cluster (etcdproc.NewCluster) of the binary named by RSETCD_BIN,
// driven through clientv3. Every test asserts what a client can observe, so
// the same tests pass against etcd v3.6.16 and are what rsetcd must match.
package cluster

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"rsetcd/compat-tests/internal/etcdproc"
)

const (
	// Generous limits; they only keep a broken server from hanging the test.
	startTimeout = 60 * time.Second
	opTimeout    = 10 * time.Second
	// A new leader must be agreed on within a few election timeouts (1 s).
	failoverTimeout = 10 * time.Second
	// A restarted member must catch up within this.
	catchUpTimeout = 15 * time.Second
)

// startCluster starts an n-member cluster of $RSETCD_BIN.
func startCluster(t *testing.T, n int) *etcdproc.Cluster {
	t.Helper()
	bin := etcdproc.BinFromEnv(t)
	c := etcdproc.NewCluster(t, bin, n)
	start := time.Now()
	if err := c.Start(startTimeout); err != nil {
		t.Fatalf("starting %d members: %v", n, err)
	}
	t.Logf("%d members of %s ready in %v: %v", n, bin, time.Since(start).Round(time.Millisecond), c.Endpoints())
	return c
}

// memberClient returns a client whose only endpoint is p, closed when the
// test ends.
func memberClient(t *testing.T, p *etcdproc.Proc) *clientv3.Client {
	t.Helper()
	cli, err := p.Client()
	if err != nil {
		t.Fatalf("%s: client: %v", p.Name, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// clusterClient returns a client with every member as an endpoint, closed
// when the test ends.
func clusterClient(t *testing.T, c *etcdproc.Cluster) *clientv3.Client {
	t.Helper()
	cli, err := c.Client()
	if err != nil {
		t.Fatalf("cluster client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// status calls Maintenance.Status on p or fails the test.
func status(t *testing.T, p *etcdproc.Proc) *clientv3.StatusResponse {
	t.Helper()
	resp, err := p.Status(ctxT(t, opTimeout))
	if err != nil {
		t.Fatalf("%s: Status: %v", p.Name, err)
	}
	return resp
}

// follower returns the index of a member other than the leader.
func follower(c *etcdproc.Cluster, leader int) int {
	return (leader + 1) % len(c.Members)
}

// getOne reads key through cli and returns its single KeyValue (nil when
// absent) and the response header revision.
func getOne(t *testing.T, who string, cli *clientv3.Client, key string, opts ...clientv3.OpOption) (*mvccpb.KeyValue, int64) {
	t.Helper()
	resp, err := cli.Get(ctxT(t, opTimeout), key, opts...)
	if err != nil {
		t.Fatalf("%s: Get %q: %v", who, key, err)
	}
	if len(resp.Kvs) > 1 {
		t.Fatalf("%s: Get %q returned %d kvs", who, key, len(resp.Kvs))
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision
	}
	return resp.Kvs[0], resp.Header.Revision
}

// TestClusterReplicatesAcrossMembers pins that a write through one member is
// visible through every member: a linearizable Get on any other member sees
// it at the same mod revision right away, serializable Gets see it once the
// member has applied it; every response header carries the one cluster ID
// and the answering member's own ID (as MemberList names it); Txn and
// DeleteRange sent to a follower are forwarded and take effect everywhere.
func TestClusterReplicatesAcrossMembers(t *testing.T) {
	c := startCluster(t, 3)
	clis := make([]*clientv3.Client, 3)
	for i, p := range c.Members {
		clis[i] = memberClient(t, p)
	}

	put, err := clis[0].Put(ctxT(t, opTimeout), "k1", "v1")
	if err != nil {
		t.Fatalf("m1: Put k1: %v", err)
	}
	putRev := put.Header.Revision
	for i := 1; i < 3; i++ {
		kv, rev := getOne(t, c.Members[i].Name, clis[i], "k1")
		if kv == nil || string(kv.Value) != "v1" || kv.ModRevision != putRev {
			t.Errorf("%s: linearizable Get k1 = %v, want v1 at mod revision %d", c.Members[i].Name, kv, putRev)
		}
		if rev < putRev {
			t.Errorf("%s: linearizable Get header revision %d < put revision %d", c.Members[i].Name, rev, putRev)
		}
	}
	for i, cli := range clis {
		deadline := time.Now().Add(5 * time.Second)
		for {
			kv, _ := getOne(t, c.Members[i].Name, cli, "k1", clientv3.WithSerializable())
			if kv != nil && string(kv.Value) == "v1" && kv.ModRevision == putRev {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: serializable Get k1 = %v after 5 s, want v1 at mod revision %d", c.Members[i].Name, kv, putRev)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Header identities.
	ml, err := clis[0].MemberList(ctxT(t, opTimeout))
	if err != nil {
		t.Fatalf("m1: MemberList: %v", err)
	}
	idOf := map[string]uint64{}
	for _, m := range ml.Members {
		idOf[m.Name] = m.ID
	}
	var clusterID uint64
	seen := map[uint64]string{}
	for i, cli := range clis {
		name := c.Members[i].Name
		resp, err := cli.Get(ctxT(t, opTimeout), "k1")
		if err != nil {
			t.Fatalf("%s: Get: %v", name, err)
		}
		h := resp.Header
		if h.ClusterId == 0 {
			t.Errorf("%s: header cluster_id is 0", name)
		}
		if i == 0 {
			clusterID = h.ClusterId
		} else if h.ClusterId != clusterID {
			t.Errorf("%s: header cluster_id %x, m1 says %x", name, h.ClusterId, clusterID)
		}
		if other, dup := seen[h.MemberId]; dup {
			t.Errorf("%s and %s both answer with member_id %x", other, name, h.MemberId)
		}
		seen[h.MemberId] = name
		if want, ok := idOf[name]; !ok || h.MemberId != want {
			t.Errorf("%s: header member_id %x, MemberList gives %s the id %x (found %v)", name, h.MemberId, name, want, ok)
		}
	}
	if ml.Header.ClusterId != clusterID {
		t.Errorf("MemberList header cluster_id %x, Get headers %x", ml.Header.ClusterId, clusterID)
	}

	// Txn and DeleteRange through a follower.
	_, li := c.Leader(t)
	fi := follower(c, li)
	fname := c.Members[fi].Name
	txn, err := clis[fi].Txn(ctxT(t, opTimeout)).
		If(clientv3.Compare(clientv3.Value("k1"), "=", "v1")).
		Then(clientv3.OpPut("k2", "v2")).
		Else(clientv3.OpPut("k3", "v3")).
		Commit()
	if err != nil {
		t.Fatalf("%s (follower): Txn: %v", fname, err)
	}
	if !txn.Succeeded {
		t.Fatalf("%s (follower): Txn compare k1 = v1 did not succeed", fname)
	}
	txnRev := txn.Header.Revision
	if txnRev != putRev+1 {
		t.Errorf("%s (follower): Txn revision %d, want %d", fname, txnRev, putRev+1)
	}
	for i, cli := range clis {
		if kv, _ := getOne(t, c.Members[i].Name, cli, "k2"); kv == nil || string(kv.Value) != "v2" || kv.ModRevision != txnRev {
			t.Errorf("%s: Get k2 after follower Txn = %v, want v2 at mod revision %d", c.Members[i].Name, kv, txnRev)
		}
		if kv, _ := getOne(t, c.Members[i].Name, cli, "k3"); kv != nil {
			t.Errorf("%s: k3 exists after follower Txn took the then branch: %v", c.Members[i].Name, kv)
		}
	}
	del, err := clis[fi].Delete(ctxT(t, opTimeout), "k1")
	if err != nil {
		t.Fatalf("%s (follower): Delete k1: %v", fname, err)
	}
	if del.Deleted != 1 || del.Header.Revision != txnRev+1 {
		t.Errorf("%s (follower): Delete k1: deleted %d at revision %d, want 1 at %d", fname, del.Deleted, del.Header.Revision, txnRev+1)
	}
	for i, cli := range clis {
		kv, rev := getOne(t, c.Members[i].Name, cli, "k1")
		if kv != nil {
			t.Errorf("%s: k1 still there after follower Delete: %v", c.Members[i].Name, kv)
		}
		if rev != del.Header.Revision {
			t.Errorf("%s: header revision %d after Delete, want %d", c.Members[i].Name, rev, del.Header.Revision)
		}
	}
}

// TestClusterMemberList pins MemberList and Status on every member: each
// lists the same 3 members, named m1..m3 with the peer and client URLs they
// were started with, none a learner; Status agrees on one leader, at term
// >= 1, and exactly one member reports itself leader.
func TestClusterMemberList(t *testing.T) {
	c := startCluster(t, 3)
	type member struct {
		ID      uint64
		Name    string
		Peer    []string
		Client  []string
		Learner bool
	}
	want := map[string]member{}
	for _, p := range c.Members {
		want[p.Name] = member{Name: p.Name, Peer: []string{p.PeerURL}, Client: []string{p.ClientURL}}
	}

	var first []member
	for _, p := range c.Members {
		resp, err := memberClient(t, p).MemberList(ctxT(t, opTimeout))
		if err != nil {
			t.Fatalf("%s: MemberList: %v", p.Name, err)
		}
		var got []member
		for _, m := range resp.Members {
			peer := append([]string(nil), m.PeerURLs...)
			cl := append([]string(nil), m.ClientURLs...)
			sort.Strings(peer)
			sort.Strings(cl)
			got = append(got, member{m.ID, m.Name, peer, cl, m.IsLearner})
		}
		sort.Slice(got, func(i, j int) bool { return got[i].Name < got[j].Name })
		if len(got) != 3 {
			t.Errorf("%s: MemberList has %d members, want 3: %+v", p.Name, len(got), got)
		}
		for _, m := range got {
			w, ok := want[m.Name]
			w.ID = m.ID
			if !ok || !reflect.DeepEqual(m, w) {
				t.Errorf("%s: MemberList entry %+v, want %+v", p.Name, m, w)
			}
			if m.ID == 0 {
				t.Errorf("%s: MemberList entry %s has ID 0", p.Name, m.Name)
			}
		}
		if first == nil {
			first = got
		} else if !reflect.DeepEqual(got, first) {
			t.Errorf("%s: MemberList %+v, %s says %+v", p.Name, got, c.Members[0].Name, first)
		}
	}

	// Right after start a late election could still be settling: poll until
	// all members name the same leader, then check that snapshot.
	var resps []*clientv3.StatusResponse
	deadline := time.Now().Add(5 * time.Second)
	for {
		resps = resps[:0]
		agree := true
		for _, p := range c.Members {
			r := status(t, p)
			resps = append(resps, r)
			agree = agree && r.Leader != 0 && r.Leader == resps[0].Leader
		}
		if agree || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	selfLeaders := 0
	for i, r := range resps {
		name := c.Members[i].Name
		if r.Leader == 0 || r.Leader != resps[0].Leader {
			t.Errorf("%s: Status leader %x, m1 says %x", name, r.Leader, resps[0].Leader)
		}
		if r.RaftTerm < 1 {
			t.Errorf("%s: Status raft term %d, want >= 1", name, r.RaftTerm)
		}
		if r.Header.MemberId == r.Leader {
			selfLeaders++
		}
		if r.IsLearner {
			t.Errorf("%s: Status says learner", name)
		}
	}
	if selfLeaders != 1 {
		t.Errorf("%d members report themselves leader, want exactly 1", selfLeaders)
	}
}

// TestClusterWatchOnFollower pins that a watch served by a follower delivers
// the writes made through the leader, in order, each with the revision the
// write reported.
func TestClusterWatchOnFollower(t *testing.T) {
	c := startCluster(t, 3)
	leader, li := c.Leader(t)
	fol := c.Members[follower(c, li)]
	lcli, fcli := memberClient(t, leader), memberClient(t, fol)

	ctx := ctxT(t, 30*time.Second)
	wch := fcli.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created || resp.Err() != nil {
		t.Fatalf("%s: watch not created: %+v (%v)", fol.Name, resp, resp.Err())
	}

	type ev struct {
		typ   mvccpb.Event_EventType
		key   string
		value string
		rev   int64
	}
	var want []ev
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("w/%02d", i%7)
		if i%5 == 4 {
			resp, err := lcli.Delete(ctxT(t, opTimeout), key)
			if err != nil {
				t.Fatalf("%s (leader): Delete %s: %v", leader.Name, key, err)
			}
			if resp.Deleted == 1 {
				want = append(want, ev{mvccpb.DELETE, key, "", resp.Header.Revision})
			}
			continue
		}
		value := fmt.Sprintf("v%d", i)
		resp, err := lcli.Put(ctxT(t, opTimeout), key, value)
		if err != nil {
			t.Fatalf("%s (leader): Put %s: %v", leader.Name, key, err)
		}
		want = append(want, ev{mvccpb.PUT, key, value, resp.Header.Revision})
	}

	var got []ev
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case resp, ok := <-wch:
			if !ok {
				t.Fatalf("%s: watch channel closed after %d of %d events", fol.Name, len(got), len(want))
			}
			if err := resp.Err(); err != nil {
				t.Fatalf("%s: watch error: %v", fol.Name, err)
			}
			for _, e := range resp.Events {
				got = append(got, ev{e.Type, string(e.Kv.Key), string(e.Kv.Value), e.Kv.ModRevision})
				if resp.Header.Revision < e.Kv.ModRevision {
					t.Errorf("%s: watch response header revision %d < event revision %d", fol.Name, resp.Header.Revision, e.Kv.ModRevision)
				}
			}
		case <-timeout:
			t.Fatalf("%s: only %d of %d events within 10 s: got %+v", fol.Name, len(got), len(want), got)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: watch events\n got %+v\nwant %+v", fol.Name, got, want)
	}
}

// TestClusterLeaseOnFollower pins that lease RPCs sent to followers work as
// on the leader: Grant, attaching a key through another member, KeepAliveOnce
// (TTL back to the granted 5 s), TimeToLive (granted 5, remaining in (0,5],
// the attached key listed) and Revoke, which deletes the key on every member.
func TestClusterLeaseOnFollower(t *testing.T) {
	c := startCluster(t, 3)
	leader, li := c.Leader(t)
	f1 := c.Members[follower(c, li)]
	f2 := c.Members[follower(c, follower(c, li))]
	lcli, f1cli, f2cli := memberClient(t, leader), memberClient(t, f1), memberClient(t, f2)

	grant, err := f1cli.Grant(ctxT(t, opTimeout), 5)
	if err != nil {
		t.Fatalf("%s (follower): Grant: %v", f1.Name, err)
	}
	if grant.TTL != 5 || grant.ID == 0 {
		t.Fatalf("%s (follower): Grant = id %x ttl %d, want a nonzero id with ttl 5", f1.Name, grant.ID, grant.TTL)
	}
	if _, err := lcli.Put(ctxT(t, opTimeout), "lease/k", "v", clientv3.WithLease(grant.ID)); err != nil {
		t.Fatalf("%s (leader): Put with the follower's lease: %v", leader.Name, err)
	}
	for _, cli := range []*clientv3.Client{f1cli, f2cli} {
		ka, err := cli.KeepAliveOnce(ctxT(t, opTimeout), grant.ID)
		if err != nil {
			t.Fatalf("KeepAliveOnce via follower %v: %v", cli.Endpoints(), err)
		}
		if ka.ID != grant.ID || ka.TTL != 5 {
			t.Errorf("KeepAliveOnce via follower %v = id %x ttl %d, want id %x ttl 5", cli.Endpoints(), ka.ID, ka.TTL, grant.ID)
		}
	}
	ttl, err := f2cli.TimeToLive(ctxT(t, opTimeout), grant.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatalf("%s (follower): TimeToLive: %v", f2.Name, err)
	}
	if ttl.GrantedTTL != 5 || ttl.TTL <= 0 || ttl.TTL > 5 {
		t.Errorf("%s (follower): TimeToLive granted %d remaining %d, want granted 5 and remaining in (0,5]", f2.Name, ttl.GrantedTTL, ttl.TTL)
	}
	if len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "lease/k" {
		t.Errorf("%s (follower): TimeToLive keys %q, want [lease/k]", f2.Name, ttl.Keys)
	}

	rev, err := f2cli.Revoke(ctxT(t, opTimeout), grant.ID)
	if err != nil {
		t.Fatalf("%s (follower): Revoke: %v", f2.Name, err)
	}
	for _, p := range c.Members {
		kv, hrev := getOne(t, p.Name, memberClient(t, p), "lease/k")
		if kv != nil {
			t.Errorf("%s: lease/k still there after Revoke via a follower: %v", p.Name, kv)
		}
		if hrev < rev.Header.Revision {
			t.Errorf("%s: header revision %d < revoke revision %d", p.Name, hrev, rev.Header.Revision)
		}
	}
	ttl, err = f1cli.TimeToLive(ctxT(t, opTimeout), grant.ID)
	if err != nil {
		t.Fatalf("%s (follower): TimeToLive after Revoke: %v", f1.Name, err)
	}
	if ttl.TTL != -1 {
		t.Errorf("%s (follower): TimeToLive after Revoke: ttl %d, want -1", f1.Name, ttl.TTL)
	}
}

// acks records the puts the cluster acknowledged.
type acks struct {
	mu sync.Mutex
	m  map[string]string
}

func (a *acks) add(k, v string) {
	a.mu.Lock()
	a.m[k] = v
	a.mu.Unlock()
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}

// missing compares a prefix read with the acknowledged puts and describes
// up to 5 that are absent or have another value.
func (a *acks) missing(kvs []*mvccpb.KeyValue) (int, string) {
	got := map[string]string{}
	for _, kv := range kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	var sample []string
	for k, v := range a.m {
		if got[k] != v {
			n++
			if len(sample) < 5 {
				sample = append(sample, fmt.Sprintf("%s: got %q want %q", k, got[k], v))
			}
		}
	}
	return n, strings.Join(sample, "; ")
}

// TestClusterLeaderKill pins failover: with 8 writers going through a client
// that knows every member, the leader is SIGKILLed; the two survivors agree
// on a new leader within 10 s and writes resume; every acknowledged put is
// readable through a survivor. The killed member, restarted on its data
// directory, catches up: within 15 s its serializable reads return every
// acknowledged put and HashKV at one revision is equal on all three.
func TestClusterLeaderKill(t *testing.T) {
	const prefix = "leaderkill/"
	c := startCluster(t, 3)
	cli := clusterClient(t, c)
	oldLeader, oi := c.Leader(t)
	oldID := status(t, oldLeader).Header.MemberId

	led := &acks{m: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("%sw%d/%06d", prefix, w, i)
				value := fmt.Sprintf("v-%d-%d", w, i)
				pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := cli.Put(pctx, key, value)
				pcancel()
				if err == nil {
					led.add(key, value)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	stopWriters := func() {
		cancel()
		wg.Wait()
	}
	defer stopWriters()

	time.Sleep(time.Second)
	before := led.count()
	if before == 0 {
		t.Fatalf("no put acknowledged in the first second")
	}
	if err := oldLeader.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", oldLeader.Name, err)
	}
	killedAt := time.Now()
	newLeader, _ := c.Leader(t) // polls the survivors, up to 10 s
	newID := status(t, newLeader).Header.MemberId
	if newID == oldID {
		t.Fatalf("new leader %s has the killed leader's id %x", newLeader.Name, oldID)
	}
	t.Logf("leader %s killed after %d acks; %s leads after %v", oldLeader.Name, before, newLeader.Name, time.Since(killedAt).Round(time.Millisecond))

	atElection := led.count()
	resumeDeadline := time.Now().Add(15 * time.Second)
	time.Sleep(time.Second)
	for led.count() < atElection+20 {
		if time.Now().After(resumeDeadline) {
			t.Fatalf("writes did not resume after the new leader was elected: %d acks since", led.count()-atElection)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopWriters()
	total := led.count()
	t.Logf("%d puts acknowledged (%d after the new leader), %d failed or cancelled", total, total-atElection, failed.Load())

	scli := memberClient(t, newLeader)
	resp, err := scli.Get(ctxT(t, opTimeout), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("%s: Get prefix: %v", newLeader.Name, err)
	}
	if n, sample := led.missing(resp.Kvs); n > 0 {
		t.Fatalf("%s: %d of %d acknowledged puts missing or wrong: %s", newLeader.Name, n, total, sample)
	}
	rev := resp.Header.Revision

	if err := c.Restart(oi, startTimeout); err != nil {
		t.Fatalf("restarting %s: %v", oldLeader.Name, err)
	}
	rcli := memberClient(t, oldLeader)
	deadline := time.Now().Add(catchUpTimeout)
	for {
		resp, err := rcli.Get(ctxT(t, opTimeout), prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
		var n int
		var sample string
		if err == nil {
			n, sample = led.missing(resp.Kvs)
			if n == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (restarted): serializable reads after %v: err %v, %d of %d acknowledged puts missing or wrong: %s", oldLeader.Name, catchUpTimeout, err, n, total, sample)
		}
		time.Sleep(100 * time.Millisecond)
	}

	hashes := make([]uint32, len(c.Members))
	for {
		var errs []string
		for i, p := range c.Members {
			h, err := cli.HashKV(ctxT(t, opTimeout), p.ClientURL, rev)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", p.Name, err))
				continue
			}
			hashes[i] = h.Hash
			if h.Header.Revision < rev {
				errs = append(errs, fmt.Sprintf("%s: HashKV header revision %d < %d", p.Name, h.Header.Revision, rev))
			}
		}
		if len(errs) == 0 && hashes[0] == hashes[1] && hashes[1] == hashes[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HashKV at revision %d: hashes %x, errors %v", rev, hashes, errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("HashKV at revision %d equal on all members: %x", rev, hashes[0])
}

// TestClusterNoLeader pins what a member without quorum answers: with two
// of three members SIGKILLed a Put through the survivor fails with a server
// error rather than hanging, a linearizable Get fails too, a serializable
// Get still serves the data written before; once one member is back, Puts
// succeed again.
//
// etcd v3.6.16 answered (survivor a follower, the leader and the other
// follower killed): the Put failed after 7.0 s (its request timeout, 5 s +
// 2 election timeouts) with codes.Unavailable "etcdserver: request timed
// out"; so did the linearizable Range sent concurrently on a plain gRPC
// connection, also after 7.0 s. Through clientv3, which retries Range on
// codes.Unavailable, the linearizable Get only ended with its context:
// "context deadline exceeded".
func TestClusterNoLeader(t *testing.T) {
	c := startCluster(t, 3)
	_, li := c.Leader(t)
	si := follower(c, li)
	surv := c.Members[si]
	scli := memberClient(t, surv)
	put, err := scli.Put(ctxT(t, opTimeout), "noleader/before", "v0")
	if err != nil {
		t.Fatalf("%s: Put before: %v", surv.Name, err)
	}
	// Make sure the survivor has applied it before quorum goes away.
	if _, err := scli.Get(ctxT(t, opTimeout), "noleader/before"); err != nil {
		t.Fatalf("%s: Get before: %v", surv.Name, err)
	}
	for i, p := range c.Members {
		if i != si {
			if err := p.Kill(); err != nil {
				t.Fatalf("SIGKILL %s: %v", p.Name, err)
			}
		}
	}
	t.Logf("killed all but %s (a follower)", surv.Name)

	// A linearizable read on a plain gRPC connection (clientv3 retries Range
	// on codes.Unavailable until its context ends, so only this shows what
	// the server answered), concurrently with the Put.
	conn, err := grpc.NewClient(strings.TrimPrefix(surv.ClientURL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc dial %s: %v", surv.ClientURL, err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	var putErr, rangeErr error
	var putTook, rangeTook time.Duration
	wg.Add(2)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		start := time.Now()
		_, putErr = scli.Put(ctx, "noleader/after", "v1")
		putTook = time.Since(start)
	}()
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		start := time.Now()
		_, rangeErr = pb.NewKVClient(conn).Range(ctx, &pb.RangeRequest{Key: []byte("noleader/before")})
		rangeTook = time.Since(start)
	}()
	wg.Wait()
	t.Logf("Put without quorum: after %v: %v", putTook.Round(time.Millisecond), putErr)
	t.Logf("linearizable Range (plain gRPC) without quorum: after %v: %v", rangeTook.Round(time.Millisecond), rangeErr)
	for _, r := range []struct {
		what string
		err  error
	}{{"Put", putErr}, {"linearizable Range (plain gRPC)", rangeErr}} {
		// etcd answers "request timed out" here, also with no leader known: only a client
		// asking for a leader (below) hears "no leader".
		if r.err == nil || !strings.Contains(r.err.Error(), "etcdserver: request timed out") {
			t.Errorf("%s without quorum: %v, want etcdserver: request timed out", r.what, r.err)
		}
	}
	// clientv3.WithRequireLeader (kube-apiserver's watches use it) is refused at once.
	start := time.Now()
	_, err = scli.Put(clientv3.WithRequireLeader(ctxT(t, 10*time.Second)), "noleader/required", "v")
	took := time.Since(start)
	t.Logf("Put WithRequireLeader without quorum: after %v: %v", took.Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "etcdserver: no leader") || took > 5*time.Second {
		t.Errorf("Put WithRequireLeader without quorum: %v after %v, want etcdserver: no leader at once", err, took)
	}
	// Through clientv3 the read keeps being retried; it must still fail.
	start = time.Now()
	_, err = scli.Get(ctxT(t, 3*time.Second), "noleader/before")
	t.Logf("linearizable Get (clientv3) without quorum: after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if err == nil {
		t.Errorf("linearizable Get (clientv3) without quorum succeeded")
	}

	kv, _ := getOne(t, surv.Name, scli, "noleader/before", clientv3.WithSerializable())
	if kv == nil || string(kv.Value) != "v0" || kv.ModRevision != put.Header.Revision {
		t.Errorf("%s: serializable Get without quorum = %v, want v0 at mod revision %d", surv.Name, kv, put.Header.Revision)
	}

	back := (si + 1) % 3
	if err := c.Restart(back, startTimeout); err != nil {
		t.Fatalf("restarting %s: %v", c.Members[back].Name, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := scli.Put(ctxT(t, 3*time.Second), "noleader/again", "v2")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: Put with %s back: %v", surv.Name, c.Members[back].Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFiveMembersLoseTwo pins that a 5-member cluster tolerates two
// failures: with the leader and one follower SIGKILLed the three survivors
// elect a new leader, writes and linearizable reads through each survivor
// work, and the data written before is intact.
func TestFiveMembersLoseTwo(t *testing.T) {
	c := startCluster(t, 5)
	leader, li := c.Leader(t)
	cli := clusterClient(t, c)
	want := map[string]string{}
	for i := 0; i < 10; i++ {
		k, v := fmt.Sprintf("five/before/%d", i), fmt.Sprintf("b%d", i)
		if _, err := cli.Put(ctxT(t, opTimeout), k, v); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
		want[k] = v
	}
	other := follower(c, li)
	for _, i := range []int{li, other} {
		if err := c.Members[i].Kill(); err != nil {
			t.Fatalf("SIGKILL %s: %v", c.Members[i].Name, err)
		}
	}
	t.Logf("killed %s (leader) and %s", leader.Name, c.Members[other].Name)
	newLeader, ni := c.Leader(t)
	if ni == li {
		t.Fatalf("%s still leads after being killed", newLeader.Name)
	}
	t.Logf("%s leads", newLeader.Name)

	for _, p := range c.Members {
		if !p.Running() {
			continue
		}
		mcli := memberClient(t, p)
		for j := 0; j < 5; j++ {
			k, v := fmt.Sprintf("five/after/%s/%d", p.Name, j), fmt.Sprintf("a%d", j)
			resp, err := mcli.Put(ctxT(t, opTimeout), k, v)
			if err != nil {
				t.Fatalf("%s: Put %s: %v", p.Name, k, err)
			}
			want[k] = v
			kv, _ := getOne(t, p.Name, mcli, k)
			if kv == nil || string(kv.Value) != v || kv.ModRevision != resp.Header.Revision {
				t.Errorf("%s: Get %s after Put = %v, want %s at mod revision %d", p.Name, k, kv, v, resp.Header.Revision)
			}
		}
	}
	for _, p := range c.Members {
		if !p.Running() {
			continue
		}
		resp, err := memberClient(t, p).Get(ctxT(t, opTimeout), "five/", clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("%s: Get five/: %v", p.Name, err)
		}
		got := map[string]string{}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = string(kv.Value)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: five/ = %v, want %v", p.Name, got, want)
		}
	}
}
