package cluster

import (
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
)

// TestClusterReadDuringLeaderChange pins what a linearizable Range sent to a
// follower answers when the leader dies just before: raw gRPC (no client
// retries), sent right after the leader's SIGKILL, so the follower still
// counts on the dead leader for its read index. etcd answers once a new
// leader is elected, either with the value (when the read index was asked of
// the new leader) or with Unavailable "etcdserver: leader changed"; it never
// lets the read wait out the request timeout ("etcdserver: request timed
// out"), which is what clients with a deadline below it would see as a hang.
func TestClusterReadDuringLeaderChange(t *testing.T) {
	c := startCluster(t, 3)
	leader, li := c.Leader(t)
	fi := follower(c, li)
	kv := pb.NewKVClient(grpcConn(t, c.Members[fi]))
	if _, err := kv.Put(ctxT(t, opTimeout), &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatalf("Put through %s: %v", c.Members[fi].Name, err)
	}
	// The follower has applied the put once a linearizable read through it
	// succeeds, so the read below has nothing to wait for but its read index.
	if _, err := kv.Range(ctxT(t, opTimeout), &pb.RangeRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("Range through %s: %v", c.Members[fi].Name, err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", leader.Name, err)
	}
	killedAt := time.Now()
	resp, err := kv.Range(ctxT(t, 30*time.Second), &pb.RangeRequest{Key: []byte("k")})
	took := time.Since(killedAt).Round(time.Millisecond)
	switch st, _ := grpcstatus.FromError(err); {
	case err == nil:
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
			t.Fatalf("Range after the leader's death: %v, want k=v", resp.Kvs)
		}
		t.Logf("read answered with the value after %v", took)
	case st.Code() == codes.Unavailable && st.Message() == "etcdserver: leader changed":
		t.Logf("read refused with %q after %v", st.Message(), took)
	default:
		t.Fatalf("Range after the leader's death: %v after %v, want the value or Unavailable %q",
			err, took, "etcdserver: leader changed")
	}
	// Reads work again through the same member once the new leader is known.
	c.Leader(t)
	deadline := time.Now().Add(failoverTimeout)
	for {
		resp, err := kv.Range(ctxT(t, opTimeout), &pb.RangeRequest{Key: []byte("k")})
		if err == nil && len(resp.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) || (err != nil && !strings.Contains(err.Error(), "leader")) {
			t.Fatalf("Range through %s after the election: %v", c.Members[fi].Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
