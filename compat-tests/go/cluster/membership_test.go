package cluster

import (
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"rsetcd/compat-tests/internal/etcdproc"
)

// joinTimeout bounds how long a member added with MemberAdd takes from its
// start to "ready to serve client requests".
const joinTimeout = 15 * time.Second

// memberView is a MemberList entry with its URLs sorted.
type memberView struct {
	ID      uint64
	Name    string
	Peer    []string
	Client  []string
	Learner bool
}

func viewOf(m *pb.Member) memberView {
	sorted := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		s = append([]string(nil), s...)
		sort.Strings(s)
		return s
	}
	return memberView{m.ID, m.Name, sorted(m.PeerURLs), sorted(m.ClientURLs), m.IsLearner}
}

func viewsOf(ms []*pb.Member) []memberView {
	var out []memberView
	for _, m := range ms {
		out = append(out, viewOf(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// wantMembers polls MemberList on every running member of c until each
// answers exactly want (compared sorted by ID), or fails the test after
// timeout with what the last answers were. MemberList is linearizable
// (clientv3's default); a member that want names as a learner is not
// asked, since a learner refuses MemberList.
func wantMembers(t *testing.T, c *etcdproc.Cluster, want []memberView, timeout time.Duration) {
	t.Helper()
	want = append([]memberView(nil), want...)
	sort.Slice(want, func(i, j int) bool { return want[i].ID < want[j].ID })
	learners := map[string]bool{}
	for _, w := range want {
		learners[w.Name] = w.Learner
	}
	deadline := time.Now().Add(timeout)
	for {
		var wrong []string
		for _, p := range c.Members {
			if !p.Running() || learners[p.Name] {
				continue
			}
			resp, err := memberClient(t, p).MemberList(ctxT(t, opTimeout))
			if err != nil {
				wrong = append(wrong, fmt.Sprintf("%s: MemberList: %v", p.Name, err))
				continue
			}
			if got := viewsOf(resp.Members); !reflect.DeepEqual(got, want) {
				wrong = append(wrong, fmt.Sprintf("%s: MemberList %+v", p.Name, got))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: want every member to list %+v; got:\n%s", timeout, want, strings.Join(wrong, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// currentMembers returns the views of c's members, with the IDs ids (in
// member order), all voters.
func currentMembers(c *etcdproc.Cluster, ids []uint64) []memberView {
	var out []memberView
	for i, p := range c.Members {
		out = append(out, memberView{ids[i], p.Name, []string{p.PeerURL}, []string{p.ClientURL}, false})
	}
	return out
}

// putRetry retries a Put through cli until it succeeds or timeout passes
// (a write during an election may fail), returning the response.
func putRetry(t *testing.T, who string, cli *clientv3.Client, key, val string, timeout time.Duration) *clientv3.PutResponse {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := cli.Put(ctxT(t, opTimeout), key, val)
		if err == nil {
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: Put %s still failing after %v: %v", who, key, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unhealthyMsg is etcd's answer (codes.Unavailable) to a membership change
// that its strict reconfiguration check refuses: the member asked has not
// been connected to every voting member (to a quorum, for a removal) for 5 s
// (etcdserver.HealthInterval), as right after the cluster started.
const unhealthyMsg = "etcdserver: unhealthy cluster"

// reconfigWait is how long reconfig retries a refused membership change:
// more than the 5 s a fresh cluster is "unhealthy" for.
const reconfigWait = 10 * time.Second

// reconfig calls op until it does not fail with unhealthyMsg (as a gRPC
// status or a clientv3 error), for up to reconfigWait, and returns the last error. It logs
// how long the refusals lasted.
func reconfig(t *testing.T, what string, op func() error) error {
	t.Helper()
	start := time.Now()
	refusals := 0
	for {
		err := op()
		if err == nil || rpctypes.ErrorDesc(err) != unhealthyMsg || time.Since(start) > reconfigWait {
			if refusals > 0 {
				t.Logf("%s: refused with %q %d times over %v first", what, unhealthyMsg, refusals, time.Since(start).Round(time.Millisecond))
			}
			return err
		}
		refusals++
		time.Sleep(250 * time.Millisecond)
	}
}

// startClusterAt starts an n-member cluster of $RSETCD_BIN as startCluster
// does and returns when its processes were launched.
func startClusterAt(t *testing.T, n int) (*etcdproc.Cluster, time.Time) {
	t.Helper()
	bin := etcdproc.BinFromEnv(t)
	c := etcdproc.NewCluster(t, bin, n)
	launched := time.Now()
	if err := c.Start(startTimeout); err != nil {
		t.Fatalf("starting %d members: %v", n, err)
	}
	t.Logf("%d members of %s ready in %v: %v", n, bin, time.Since(launched).Round(time.Millisecond), c.Endpoints())
	return c, launched
}

// wantEarlyRefusal pins etcd's strict reconfiguration check (on by
// default): a member refuses a membership change with Unavailable
// unhealthyMsg until it has been connected to every voter (to a quorum,
// for a removal) for 5 s. When fewer than 4 s have passed since the members
// were launched (so their connections are younger than that), op, a
// membership change on a plain gRPC connection, must be refused. It
// returns whether op was accepted all the same: the caller then carries on
// with that change.
func wantEarlyRefusal(t *testing.T, launched time.Time, what string, op func() error) (accepted bool) {
	t.Helper()
	since := time.Since(launched)
	if since >= 4*time.Second {
		t.Logf("the members were launched %v ago: not checking that an early %s is refused", since.Round(time.Millisecond), what)
		return false
	}
	err := op()
	wantGRPCError(t, fmt.Sprintf("%s %v after the members were launched", what, since.Round(time.Millisecond)), err, codes.Unavailable, unhealthyMsg)
	return err == nil
}

// hasMember reports whether ms has a member with id.
func hasMember(ms []*pb.Member, id uint64) *pb.Member {
	for _, m := range ms {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// TestClusterMemberAddAndJoin pins adding a voting member to a running
// 3-member cluster. MemberAdd through a follower answers the new member (a
// fresh ID, no name or client URLs yet, the given peer URL, not a learner)
// and all 4 members. The new process, started with
// --initial-cluster-state existing, is ready within 15 s; then every member
// (the new one included) lists the 4 members with their names and client
// URLs. The new member serves linearizable and serializable reads of the
// keys written before it joined (same values and mod revisions) and takes
// writes; its Status says it is no learner and names the cluster's leader.
// With the original leader then killed (SIGKILL), the 3 of 4 left elect a
// leader and keep taking writes through every survivor.
//
// Like the other membership tests it also pins etcd's strict
// reconfiguration check (wantEarlyRefusal): the first MemberAdd, sent right
// after the cluster started, is refused with Unavailable "etcdserver:
// unhealthy cluster" (it is then retried until accepted, which took etcd
// v3.6.16 about 5 s from the members' launch).
func TestClusterMemberAddAndJoin(t *testing.T) {
	c, launched := startClusterAt(t, 3)
	ids := memberIDs(t, c)
	cli := clusterClient(t, c)
	revs := map[string]int64{}
	for i := 0; i < 10; i++ {
		k := fmt.Sprintf("join/%02d", i)
		resp, err := cli.Put(ctxT(t, opTimeout), k, "v"+k)
		if err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
		revs[k] = resp.Header.Revision
	}

	_, li := c.Leader(t)
	fol := c.Members[follower(c, li)]
	j := c.NewJoiner("m4")
	var add *clientv3.MemberAddResponse
	wantEarlyRefusal(t, launched, fol.Name+" (follower): MemberAdd", func() error {
		resp, err := pb.NewClusterClient(grpcConn(t, fol)).MemberAdd(ctxT(t, opTimeout), &pb.MemberAddRequest{PeerURLs: []string{j.PeerURL}})
		if err == nil {
			add = (*clientv3.MemberAddResponse)(resp)
		}
		return err
	})
	err := reconfig(t, "MemberAdd", func() (err error) {
		if add != nil {
			return nil
		}
		add, err = memberClient(t, fol).MemberAdd(ctxT(t, opTimeout), []string{j.PeerURL})
		return err
	})
	if err != nil {
		t.Fatalf("%s (follower): MemberAdd(%s): %v", fol.Name, j.PeerURL, err)
	}
	newID := add.Member.ID
	t.Logf("MemberAdd via %s: member %+v; %d members", fol.Name, add.Member, len(add.Members))
	if newID == 0 {
		t.Errorf("MemberAdd: new member ID 0")
	}
	for i, id := range ids {
		if id == newID {
			t.Errorf("MemberAdd: new member ID %x is %s's", newID, c.Members[i].Name)
		}
	}
	if got, want := viewOf(add.Member), (memberView{newID, "", []string{j.PeerURL}, nil, false}); !reflect.DeepEqual(got, want) {
		t.Errorf("MemberAdd: member %+v, want %+v", got, want)
	}
	if len(add.Members) != 4 {
		t.Errorf("MemberAdd: %d members, want 4: %+v", len(add.Members), viewsOf(add.Members))
	}
	if m := hasMember(add.Members, newID); m == nil || m.Name != "" || m.IsLearner || !reflect.DeepEqual(m.PeerURLs, []string{j.PeerURL}) {
		t.Errorf("MemberAdd: Members entry for the new member: %+v", m)
	}
	for i, id := range ids {
		if m := hasMember(add.Members, id); m == nil || m.Name != c.Members[i].Name {
			t.Errorf("MemberAdd: Members entry for %s %x: %+v", c.Members[i].Name, id, m)
		}
	}

	start := time.Now()
	if err := j.Start(joinTimeout); err != nil {
		t.Fatalf("starting %s with --initial-cluster-state existing: %v", j.Name, err)
	}
	t.Logf("%s joined and ready in %v", j.Name, time.Since(start).Round(time.Millisecond))
	c.Members = append(c.Members, j)
	ids = append(ids, newID)
	wantMembers(t, c, currentMembers(c, ids), 10*time.Second)

	jcli := memberClient(t, j)
	for k, rev := range revs {
		kv, _ := getOne(t, j.Name, jcli, k)
		if kv == nil || string(kv.Value) != "v"+k || kv.ModRevision != rev {
			t.Errorf("%s: linearizable Get %s = %v, want v%s at mod revision %d", j.Name, k, kv, k, rev)
		}
		kv, _ = getOne(t, j.Name, jcli, k, clientv3.WithSerializable())
		if kv == nil || string(kv.Value) != "v"+k || kv.ModRevision != rev {
			t.Errorf("%s: serializable Get %s = %v, want v%s at mod revision %d", j.Name, k, kv, k, rev)
		}
	}
	put, err := jcli.Put(ctxT(t, opTimeout), "join/new", "via-m4")
	if err != nil {
		t.Fatalf("%s: Put: %v", j.Name, err)
	}
	if kv, _ := getOne(t, c.Members[0].Name, memberClient(t, c.Members[0]), "join/new"); kv == nil || string(kv.Value) != "via-m4" || kv.ModRevision != put.Header.Revision {
		t.Errorf("%s: Get join/new = %v, want via-m4 at mod revision %d", c.Members[0].Name, kv, put.Header.Revision)
	}
	leader, li := c.Leader(t)
	st := status(t, j)
	if st.IsLearner {
		t.Errorf("%s: Status says learner", j.Name)
	}
	if st.Header.MemberId != newID {
		t.Errorf("%s: Status header member_id %x, MemberAdd gave %x", j.Name, st.Header.MemberId, newID)
	}
	if st.Leader != ids[li] {
		t.Errorf("%s: Status names leader %x, %s leads (%x)", j.Name, st.Leader, leader.Name, ids[li])
	}

	// 3 of 4 are a quorum: lose the leader (an original member).
	if li == 3 {
		t.Logf("the new member %s leads; killing m1 instead", j.Name)
		li = 0
	}
	if err := c.Members[li].Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", c.Members[li].Name, err)
	}
	t.Logf("killed %s", c.Members[li].Name)
	killedAt := time.Now()
	newLeader, _ := c.Leader(t)
	t.Logf("3 of 4 members: %s leads %v after the kill", newLeader.Name, time.Since(killedAt).Round(time.Millisecond))
	for i, p := range c.Members {
		if i == li {
			continue
		}
		k := "join/after-kill/" + p.Name
		resp := putRetry(t, p.Name, memberClient(t, p), k, "v", failoverTimeout)
		for _, q := range c.Members {
			if q.Running() {
				if kv, _ := getOne(t, q.Name, memberClient(t, q), k); kv == nil || kv.ModRevision != resp.Header.Revision {
					t.Errorf("%s: Get %s = %v, want mod revision %d", q.Name, k, kv, resp.Header.Revision)
				}
			}
		}
	}
	t.Logf("3 of 4 members: writes through every survivor done %v after the kill", time.Since(killedAt).Round(time.Millisecond))
}

// TestClusterLearnerPromote pins learners. MemberAddAsLearner answers a
// learner entry; the process joins as learner and refuses Put, linearizable
// Range and MemberList (even serializable) with FailedPrecondition
// "etcdserver: rpc not supported for learner", but serves serializable
// Range (with the keys written before) and Status (IsLearner set, the
// cluster's leader); the voters list it as a named learner. While it exists
// a second learner is refused: FailedPrecondition "etcdserver: too many
// learner members in cluster". Promoting a voter: FailedPrecondition
// "etcdserver: can only promote a learner member". MemberPromote of the
// learner through a follower succeeds once the learner caught up (until
// then it fails with FailedPrecondition "etcdserver: can only promote a
// learner member which is in sync with leader"); then every member lists it
// as a voter and it takes writes and linearizable reads. The first
// MemberAddAsLearner, right after the cluster started, must be refused with
// Unavailable "etcdserver: unhealthy cluster" (wantEarlyRefusal: etcd's
// strict reconfiguration check covers learners too).
func TestClusterLearnerPromote(t *testing.T) {
	c, launched := startClusterAt(t, 3)
	ids := memberIDs(t, c)
	cli := clusterClient(t, c)
	var lastRev int64
	for i := 0; i < 10; i++ {
		resp, err := cli.Put(ctxT(t, opTimeout), fmt.Sprintf("learner/%02d", i), "v")
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		lastRev = resp.Header.Revision
	}

	_, li := c.Leader(t)
	fi := follower(c, li)
	fol := c.Members[fi]
	l := c.NewJoiner("learner")
	var add *clientv3.MemberAddResponse
	wantEarlyRefusal(t, launched, fol.Name+" (follower): MemberAddAsLearner", func() error {
		resp, err := pb.NewClusterClient(grpcConn(t, fol)).MemberAdd(ctxT(t, opTimeout), &pb.MemberAddRequest{PeerURLs: []string{l.PeerURL}, IsLearner: true})
		if err == nil {
			add = (*clientv3.MemberAddResponse)(resp)
		}
		return err
	})
	err := reconfig(t, "MemberAddAsLearner", func() (err error) {
		if add != nil {
			return nil
		}
		add, err = memberClient(t, fol).MemberAddAsLearner(ctxT(t, opTimeout), []string{l.PeerURL})
		return err
	})
	if err != nil {
		t.Fatalf("%s (follower): MemberAddAsLearner(%s): %v", fol.Name, l.PeerURL, err)
	}
	lid := add.Member.ID
	if got, want := viewOf(add.Member), (memberView{lid, "", []string{l.PeerURL}, nil, true}); lid == 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("MemberAddAsLearner: member %+v, want %+v", got, want)
	}
	if m := hasMember(add.Members, lid); len(add.Members) != 4 || m == nil || !m.IsLearner {
		t.Errorf("MemberAddAsLearner: members %+v, want 4 with %x a learner", viewsOf(add.Members), lid)
	}

	start := time.Now()
	if err := l.Start(joinTimeout); err != nil {
		t.Fatalf("starting learner %s: %v", l.Name, err)
	}
	t.Logf("learner %s ready in %v", l.Name, time.Since(start).Round(time.Millisecond))
	want := append(currentMembers(c, ids), memberView{lid, l.Name, []string{l.PeerURL}, []string{l.ClientURL}, true})
	c.Members = append(c.Members, l)
	wantMembers(t, c, want, 10*time.Second)

	lconn := grpcConn(t, l)
	kv := pb.NewKVClient(lconn)
	_, err = kv.Put(ctxT(t, opTimeout), &pb.PutRequest{Key: []byte("learner/put"), Value: []byte("x")})
	wantGRPCError(t, l.Name+" (learner): Put", err, codes.FailedPrecondition, "etcdserver: rpc not supported for learner")
	_, err = kv.Range(ctxT(t, opTimeout), &pb.RangeRequest{Key: []byte("learner/00")})
	wantGRPCError(t, l.Name+" (learner): linearizable Range", err, codes.FailedPrecondition, "etcdserver: rpc not supported for learner")
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := kv.Range(ctxT(t, opTimeout), &pb.RangeRequest{Key: []byte("learner/"), RangeEnd: []byte("learner0"), Serializable: true})
		if err != nil {
			t.Fatalf("%s (learner): serializable Range: %v", l.Name, err)
		}
		if len(resp.Kvs) == 10 && resp.Header.Revision >= lastRev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (learner): serializable Range after 5 s: %d keys at revision %d, want 10 at >= %d", l.Name, len(resp.Kvs), resp.Header.Revision, lastRev)
		}
		time.Sleep(50 * time.Millisecond)
	}
	clusterOnLearner := pb.NewClusterClient(lconn)
	_, err = clusterOnLearner.MemberList(ctxT(t, opTimeout), &pb.MemberListRequest{Linearizable: true})
	wantGRPCError(t, l.Name+" (learner): linearizable MemberList", err, codes.FailedPrecondition, "etcdserver: rpc not supported for learner")
	_, err = clusterOnLearner.MemberList(ctxT(t, opTimeout), &pb.MemberListRequest{})
	wantGRPCError(t, l.Name+" (learner): serializable MemberList", err, codes.FailedPrecondition, "etcdserver: rpc not supported for learner")
	_, err = memberClient(t, l).Put(ctxT(t, opTimeout), "learner/put", "x")
	if err == nil || err.Error() != "etcdserver: rpc not supported for learner" {
		t.Errorf("%s (learner): clientv3 Put: %v, want etcdserver: rpc not supported for learner", l.Name, err)
	}
	leader, li := c.Leader(t)
	st := status(t, l)
	if !st.IsLearner || st.Header.MemberId != lid || st.Leader != ids[li] {
		t.Errorf("%s (learner): Status is_learner %v, member_id %x, leader %x; want true, %x, %s's %x", l.Name, st.IsLearner, st.Header.MemberId, st.Leader, lid, leader.Name, ids[li])
	}

	clusterAPI := pb.NewClusterClient(grpcConn(t, fol))
	second := fmt.Sprintf("http://127.0.0.1:%d", etcdproc.FreePort(t))
	_, err = clusterAPI.MemberAdd(ctxT(t, opTimeout), &pb.MemberAddRequest{PeerURLs: []string{second}, IsLearner: true})
	wantGRPCError(t, fol.Name+": second MemberAddAsLearner", err, codes.FailedPrecondition, "etcdserver: too many learner members in cluster")
	_, err = clusterAPI.MemberPromote(ctxT(t, opTimeout), &pb.MemberPromoteRequest{ID: ids[0]})
	wantGRPCError(t, fol.Name+": MemberPromote(m1, a voter)", err, codes.FailedPrecondition, "etcdserver: can only promote a learner member")
	wantMembers(t, c, want, 5*time.Second)

	// Promote through a follower (forwarded to the leader).
	fi = follower(c, li)
	if fi == 3 {
		fi = follower(c, fi)
	}
	fol = c.Members[fi]
	clusterAPI = pb.NewClusterClient(grpcConn(t, fol))
	start = time.Now()
	notReady := 0
	for {
		resp, err := clusterAPI.MemberPromote(ctxT(t, opTimeout), &pb.MemberPromoteRequest{ID: lid})
		if err == nil {
			if m := hasMember(resp.Members, lid); len(resp.Members) != 4 || m == nil || m.IsLearner {
				t.Errorf("MemberPromote: members %+v, want 4 with %x a voter", viewsOf(resp.Members), lid)
			}
			break
		}
		if st, _ := grpcstatus.FromError(err); st.Code() != codes.FailedPrecondition || st.Message() != "etcdserver: can only promote a learner member which is in sync with leader" {
			t.Fatalf("%s (follower): MemberPromote(%s): %v", fol.Name, l.Name, err)
		}
		notReady++
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s (follower): MemberPromote(%s) still %v after 10 s", fol.Name, l.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("MemberPromote via %s (follower) succeeded after %v (%d \"not in sync\" answers before)", fol.Name, time.Since(start).Round(time.Millisecond), notReady)
	want[3].Learner = false
	wantMembers(t, c, want, 5*time.Second)

	lcli := memberClient(t, l)
	put := putRetry(t, l.Name, lcli, "learner/after-promote", "v", 5*time.Second)
	if kv, _ := getOne(t, l.Name, lcli, "learner/after-promote"); kv == nil || kv.ModRevision != put.Header.Revision {
		t.Errorf("%s (promoted): linearizable Get = %v, want mod revision %d", l.Name, kv, put.Header.Revision)
	}
	if st := status(t, l); st.IsLearner {
		t.Errorf("%s (promoted): Status still says learner", l.Name)
	}
	c.Leader(t)
}

// TestClusterMemberRemove pins MemberRemove and MemberUpdate on 3 members.
// Removing a follower through the other follower answers the 2 members
// left; the removed process exits on its own within 10 s; the two left take
// writes and list 2 members. Removing an unknown ID, or the removed one
// again, fails with NotFound "etcdserver: member not found". MemberUpdate
// of a member's peer URLs to its own plus http://127.0.0.2:<same port>
// (where nothing listens) is listed by both members and writes keep
// working; updating (or adding) to another member's peer URL fails with
// FailedPrecondition "etcdserver: Peer URLs already exists"; adding the
// URL "foo" with InvalidArgument "etcdserver: given member URLs are
// invalid"; updating an unknown ID with NotFound "etcdserver: member not
// found". The first MemberRemove, right after the cluster started, must be
// refused with Unavailable "etcdserver: unhealthy cluster"
// (wantEarlyRefusal).
//
// etcd v3.6.16's removed member (a follower) applied its own removal
// ("removed member"), logged (warn) "server error" with error "the member
// has been permanently removed from the cluster" and "data-dir used by
// this member must be removed", and exited with status 0 about 50 ms after
// the MemberRemove returned. The test only requires that it exits.
func TestClusterMemberRemove(t *testing.T) {
	c, launched := startClusterAt(t, 3)
	ids := memberIDs(t, c)
	_, li := c.Leader(t)
	vi := follower(c, li)
	oi := 3 - li - vi
	victim, via := c.Members[vi], c.Members[oi]
	viaCli := memberClient(t, via)
	if _, err := viaCli.Put(ctxT(t, opTimeout), "remove/before", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}

	var resp *clientv3.MemberRemoveResponse
	wantEarlyRefusal(t, launched, via.Name+" (follower): MemberRemove", func() error {
		r, err := pb.NewClusterClient(grpcConn(t, via)).MemberRemove(ctxT(t, opTimeout), &pb.MemberRemoveRequest{ID: ids[vi]})
		if err == nil {
			resp = (*clientv3.MemberRemoveResponse)(r)
		}
		return err
	})
	err := reconfig(t, "MemberRemove", func() (err error) {
		if resp != nil {
			return nil
		}
		resp, err = viaCli.MemberRemove(ctxT(t, opTimeout), ids[vi])
		return err
	})
	if err != nil {
		t.Fatalf("%s (follower): MemberRemove(%s %x): %v", via.Name, victim.Name, ids[vi], err)
	}
	removedAt := time.Now()
	if len(resp.Members) != 2 || hasMember(resp.Members, ids[vi]) != nil || hasMember(resp.Members, ids[li]) == nil || hasMember(resp.Members, ids[oi]) == nil {
		t.Errorf("MemberRemove: members %+v, want the 2 others", viewsOf(resp.Members))
	}
	for victim.Running() {
		if time.Since(removedAt) > 10*time.Second {
			t.Fatalf("%s still runs 10 s after its removal", victim.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	exitErr := victim.ExitError()
	t.Logf("%s (removed) exited on its own %v after MemberRemove returned: %v", victim.Name, time.Since(removedAt).Round(time.Millisecond), exitStatus(exitErr))
	var removedLines []string
	for _, line := range strings.Split(victim.LogTail(500), "\n") {
		if strings.Contains(strings.ToLower(line), "removed") {
			removedLines = append(removedLines, line)
		}
	}
	t.Logf("%s output lines mentioning \"removed\":\n%s", victim.Name, strings.Join(removedLines, "\n"))

	// The two left: 2 of 2 is a quorum.
	removedID := ids[vi]
	c.Members = []*etcdproc.Proc{c.Members[li], c.Members[oi]}
	ids = []uint64{ids[li], ids[oi]}
	wantMembers(t, c, currentMembers(c, ids), 5*time.Second)
	for _, p := range c.Members {
		k := "remove/after/" + p.Name
		put := putRetry(t, p.Name, memberClient(t, p), k, "v", 5*time.Second)
		for _, q := range c.Members {
			if kv, _ := getOne(t, q.Name, memberClient(t, q), k); kv == nil || kv.ModRevision != put.Header.Revision {
				t.Errorf("%s: Get %s = %v, want mod revision %d", q.Name, k, kv, put.Header.Revision)
			}
		}
	}

	api := pb.NewClusterClient(grpcConn(t, c.Members[1]))
	_, err = api.MemberRemove(ctxT(t, opTimeout), &pb.MemberRemoveRequest{ID: 12345})
	wantGRPCError(t, "MemberRemove(12345)", err, codes.NotFound, "etcdserver: member not found")
	_, err = api.MemberRemove(ctxT(t, opTimeout), &pb.MemberRemoveRequest{ID: removedID})
	wantGRPCError(t, fmt.Sprintf("MemberRemove(%s %x) again", victim.Name, removedID), err, codes.NotFound, "etcdserver: member not found")
	_, err = memberClient(t, c.Members[0]).MemberRemove(ctxT(t, opTimeout), 12345)
	if err == nil || err.Error() != "etcdserver: member not found" {
		t.Errorf("clientv3 MemberRemove(12345): %v, want etcdserver: member not found", err)
	}

	// MemberUpdate: the second member gets an extra peer URL.
	target := c.Members[1]
	port := target.PeerURL[strings.LastIndex(target.PeerURL, ":")+1:]
	extra := "http://127.0.0.2:" + port
	up, err := memberClient(t, c.Members[0]).MemberUpdate(ctxT(t, opTimeout), ids[1], []string{target.PeerURL, extra})
	if err != nil {
		t.Fatalf("MemberUpdate(%s, +%s): %v", target.Name, extra, err)
	}
	if m := hasMember(up.Members, ids[1]); len(up.Members) != 2 || m == nil || !reflect.DeepEqual(viewOf(m).Peer, []string{target.PeerURL, extra}) {
		t.Errorf("MemberUpdate: members %+v, want 2 with %s at peer URLs %s and %s", viewsOf(up.Members), target.Name, target.PeerURL, extra)
	}
	want := currentMembers(c, ids)
	want[1].Peer = []string{target.PeerURL, extra}
	wantMembers(t, c, want, 5*time.Second)
	for _, p := range c.Members {
		putRetry(t, p.Name, memberClient(t, p), "remove/after-update/"+p.Name, "v", 5*time.Second)
	}

	_, err = api.MemberUpdate(ctxT(t, opTimeout), &pb.MemberUpdateRequest{ID: ids[1], PeerURLs: []string{c.Members[0].PeerURL}})
	wantGRPCError(t, fmt.Sprintf("MemberUpdate(%s, %s's peer URL)", target.Name, c.Members[0].Name), err, codes.FailedPrecondition, "etcdserver: Peer URLs already exists")
	_, err = api.MemberAdd(ctxT(t, opTimeout), &pb.MemberAddRequest{PeerURLs: []string{c.Members[0].PeerURL}})
	wantGRPCError(t, fmt.Sprintf("MemberAdd(%s's peer URL)", c.Members[0].Name), err, codes.FailedPrecondition, "etcdserver: Peer URLs already exists")
	// Not sent: MemberUpdate to the peer URL "foo". etcd v3.6.16 does not
	// validate MemberUpdate's URLs (only MemberAdd's): it proposes the
	// change, and every member then panics applying it ("failed NewURLs",
	// rafthttp Transport.UpdatePeer), for good, since the entry is in the
	// log.
	_, err = api.MemberAdd(ctxT(t, opTimeout), &pb.MemberAddRequest{PeerURLs: []string{"foo"}})
	wantGRPCError(t, `MemberAdd(["foo"])`, err, codes.InvalidArgument, "etcdserver: given member URLs are invalid")
	_, err = api.MemberUpdate(ctxT(t, opTimeout), &pb.MemberUpdateRequest{ID: 12345, PeerURLs: []string{"http://127.0.0.1:1"}})
	wantGRPCError(t, "MemberUpdate(12345)", err, codes.NotFound, "etcdserver: member not found")
	wantMembers(t, c, want, 5*time.Second)
}

// exitStatus describes how a process ended: "0" or its exit status or
// signal.
func exitStatus(err error) string {
	var ee *exec.ExitError
	if err == nil {
		return "0"
	}
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return err.Error()
}

// TestClusterRefusesOtherCluster pins that a process started with
// --initial-cluster-state existing whose member was never added does not
// join: with two independent single-member clusters A and B (different
// tokens), a process C naming A's member and itself (A's token), and one
// naming B's member and itself (A's token too), each exit with a non-zero
// status within 15 s without logging "ready to serve client requests"; A
// and B keep serving, each still one member under its own cluster ID.
//
// etcd v3.6.16 exited with status 1 about 20 ms after its launch, logging
// (level fatal, from etcdmain/etcd.go:183) "msg":"discovery failed",
// "error":"error validating peerURLs {ClusterID:<A's> Members:[&{ID:<a's>
// RaftAttributes:{PeerURLs:[<a's peer URL>] IsLearner:false}
// Attributes:{Name:a ClientURLs:[<a's client URL>]}}] RemovedMemberIDs:[]}:
// member count is unequal" (it fetched the cluster from the peer named in
// --initial-cluster and compared). The test does not require a wording.
func TestClusterRefusesOtherCluster(t *testing.T) {
	bin := etcdproc.BinFromEnv(t)
	var single []*etcdproc.Proc
	for _, name := range []string{"a", "b"} {
		p := etcdproc.New(t, bin, name)
		p.InitialClusterToken = "token-" + name
		p.ExtraArgs = []string{"--heartbeat-interval", "100", "--election-timeout", "1000"}
		if err := p.Start(startTimeout); err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		single = append(single, p)
	}
	a, b := single[0], single[1]
	idA, idB := status(t, a).Header.ClusterId, status(t, b).Header.ClusterId
	if idA == idB {
		t.Errorf("clusters A and B have the same cluster ID %x", idA)
	}

	for _, to := range single {
		x := etcdproc.New(t, bin, "c")
		x.InitialCluster = to.Name + "=" + to.PeerURL + ",c=" + x.PeerURL
		x.InitialClusterToken = a.InitialClusterToken
		x.InitialClusterState = "existing"
		x.ExtraArgs = []string{"--heartbeat-interval", "100", "--election-timeout", "1000"}
		start := time.Now()
		err := x.Start(joinTimeout)
		took := time.Since(start)
		tail := x.LogTail(500)
		t.Logf("c joining %s's cluster without MemberAdd: Start after %v: %v; ended: %s; last lines:\n%s", to.Name, took.Round(time.Millisecond), err, exitStatus(x.ExitError()), x.LogTail(3))
		if err == nil {
			t.Errorf("c joined %s's cluster without being added", to.Name)
			continue
		}
		if strings.Contains(tail, etcdproc.ReadyLine) {
			t.Errorf("c (never added to %s's cluster) logged %q", to.Name, etcdproc.ReadyLine)
		}
		if x.Running() || !strings.Contains(err.Error(), "exited before logging") {
			t.Errorf("c (never added to %s's cluster) did not exit on its own within %v", to.Name, joinTimeout)
		} else if x.ExitError() == nil {
			t.Errorf("c (never added to %s's cluster) exited with status 0, want non-zero", to.Name)
		}
	}

	for _, p := range single {
		cli := memberClient(t, p)
		if _, err := cli.Put(ctxT(t, opTimeout), "refuse/after", "v"); err != nil {
			t.Errorf("%s: Put after the refused joins: %v", p.Name, err)
		}
		ml, err := cli.MemberList(ctxT(t, opTimeout))
		if err != nil {
			t.Fatalf("%s: MemberList: %v", p.Name, err)
		}
		want := []memberView{{ml.Header.MemberId, p.Name, []string{p.PeerURL}, []string{p.ClientURL}, false}}
		if got := viewsOf(ml.Members); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: MemberList %+v, want %+v", p.Name, got, want)
		}
	}
	if got := status(t, a).Header.ClusterId; got != idA {
		t.Errorf("a: cluster ID %x, was %x", got, idA)
	}
	if got := status(t, b).Header.ClusterId; got != idB {
		t.Errorf("b: cluster ID %x, was %x", got, idB)
	}
}
