package cluster

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"rsetcd/compat-tests/internal/etcdproc"
)

// storageVersion is what etcd v3.6 reports as the Version of its snapshot
// stream (the data's storage version, not the binary's version).
const storageVersion = "3.6.0"

// grpcConn returns a plain gRPC connection to p, closed when the test ends:
// unlike clientv3 it neither retries nor converts errors, so a test sees
// the server's own status code and message.
func grpcConn(t *testing.T, p *etcdproc.Proc) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(p.ClientURL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("%s: grpc dial: %v", p.Name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// memberIDs returns each member's ID as its Status header reports it, in
// member order.
func memberIDs(t *testing.T, c *etcdproc.Cluster) []uint64 {
	t.Helper()
	ids := make([]uint64, len(c.Members))
	for i, p := range c.Members {
		ids[i] = status(t, p).Header.MemberId
		if ids[i] == 0 {
			t.Fatalf("%s: Status header member_id is 0", p.Name)
		}
	}
	return ids
}

// wantGRPCError fails the test unless err is a gRPC status error with code
// and exactly message.
func wantGRPCError(t *testing.T, what string, err error, code codes.Code, message string) {
	t.Helper()
	st, ok := grpcstatus.FromError(err)
	if err == nil || !ok || st.Code() != code || st.Message() != message {
		t.Errorf("%s: got %v (gRPC status %v), want code %v %q", what, err, st, code, message)
	}
}

// TestClusterMoveLeader pins Maintenance.MoveLeader on 3 members. Sent to
// the leader with a follower's ID it succeeds only once the transfer is done:
// the old leader's own Status right after the call names the transferee,
// every member names it within 5 s (the transferee reporting itself leader,
// at a higher raft term), and writes through the new leader and through the
// old one keep working. This is done for both original followers and then
// back to the original leader, each time asking the current leader. Sent to
// a follower it fails with FailedPrecondition "etcdserver: not leader";
// sent to the leader with an ID that is no member (12345) it fails with
// FailedPrecondition "etcdserver: bad leader transferee" and the leader
// stays.
func TestClusterMoveLeader(t *testing.T) {
	c := startCluster(t, 3)
	ids := memberIDs(t, c)
	_, li := c.Leader(t)
	targets := []int{follower(c, li), follower(c, follower(c, li)), li}
	cur := li
	for round, ti := range targets {
		old, target := c.Members[cur], c.Members[ti]
		before := status(t, old)
		cli := memberClient(t, old)
		start := time.Now()
		resp, err := cli.MoveLeader(ctxT(t, opTimeout), ids[ti])
		took := time.Since(start)
		if err != nil {
			t.Fatalf("round %d: MoveLeader(%s %x) via %s (leader): %v after %v", round, target.Name, ids[ti], old.Name, err, took)
		}
		t.Logf("round %d: MoveLeader %s -> %s took %v (response header %v)", round, old.Name, target.Name, took.Round(time.Millisecond), resp.Header)

		// etcd answers only once it sees the transferee as leader itself.
		if st := status(t, old); st.Leader != ids[ti] {
			t.Errorf("round %d: %s (old leader): Status right after MoveLeader names leader %x, want %s %x", round, old.Name, st.Leader, target.Name, ids[ti])
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			var wrong []string
			for i, p := range c.Members {
				st := status(t, p)
				if st.Leader != ids[ti] {
					wrong = append(wrong, fmt.Sprintf("%s names %x", p.Name, st.Leader))
				}
				if i == ti && st.Leader == ids[ti] && st.RaftTerm <= before.RaftTerm {
					wrong = append(wrong, fmt.Sprintf("%s (new leader) at raft term %d, the old leader was at %d", p.Name, st.RaftTerm, before.RaftTerm))
				}
			}
			if len(wrong) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: 5 s after MoveLeader to %s %x: %s", round, target.Name, ids[ti], strings.Join(wrong, "; "))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, ni := c.Leader(t); ni != ti {
			t.Fatalf("round %d: %s leads after MoveLeader to %s", round, c.Members[ni].Name, target.Name)
		}

		// Writes keep working, through the new leader and the old one.
		key := fmt.Sprintf("move/%d", round)
		put1, err := memberClient(t, target).Put(ctxT(t, opTimeout), key, "via-new")
		if err != nil {
			t.Fatalf("round %d: %s (new leader): Put %s: %v", round, target.Name, key, err)
		}
		put2, err := cli.Put(ctxT(t, opTimeout), key, "via-old")
		if err != nil {
			t.Fatalf("round %d: %s (old leader): Put %s: %v", round, old.Name, key, err)
		}
		if put2.Header.Revision != put1.Header.Revision+1 {
			t.Errorf("round %d: Put revisions %d then %d, want consecutive", round, put1.Header.Revision, put2.Header.Revision)
		}
		for _, p := range c.Members {
			if kv, _ := getOne(t, p.Name, memberClient(t, p), key); kv == nil || string(kv.Value) != "via-old" || kv.ModRevision != put2.Header.Revision {
				t.Errorf("round %d: %s: Get %s = %v, want via-old at mod revision %d", round, p.Name, key, kv, put2.Header.Revision)
			}
		}
		cur = ti
	}

	// Sent to a follower: refused, whichever the transferee.
	leader := c.Members[cur]
	fi := follower(c, cur)
	fol := c.Members[fi]
	other := 3 - cur - fi
	_, err := memberClient(t, fol).MoveLeader(ctxT(t, opTimeout), ids[other])
	if !errors.Is(err, rpctypes.ErrNotLeader) || err.Error() != "etcdserver: not leader" {
		t.Errorf("%s (follower): clientv3 MoveLeader(%x): %v, want %v", fol.Name, ids[other], err, rpctypes.ErrNotLeader)
	}
	if ee, ok := err.(rpctypes.EtcdError); ok && ee.Code() != codes.FailedPrecondition {
		t.Errorf("%s (follower): clientv3 MoveLeader error code %v, want %v", fol.Name, ee.Code(), codes.FailedPrecondition)
	}
	for _, target := range []int{other, cur} {
		_, err = pb.NewMaintenanceClient(grpcConn(t, fol)).MoveLeader(ctxT(t, opTimeout), &pb.MoveLeaderRequest{TargetID: ids[target]})
		wantGRPCError(t, fmt.Sprintf("%s (follower): MoveLeader(%s)", fol.Name, c.Members[target].Name), err, codes.FailedPrecondition, "etcdserver: not leader")
	}

	// An ID that is no member, via the leader.
	_, err = memberClient(t, leader).MoveLeader(ctxT(t, opTimeout), 12345)
	if !errors.Is(err, rpctypes.ErrBadLeaderTransferee) || err.Error() != "etcdserver: bad leader transferee" {
		t.Errorf("%s (leader): clientv3 MoveLeader(12345): %v, want %v", leader.Name, err, rpctypes.ErrBadLeaderTransferee)
	}
	_, err = pb.NewMaintenanceClient(grpcConn(t, leader)).MoveLeader(ctxT(t, opTimeout), &pb.MoveLeaderRequest{TargetID: 12345})
	wantGRPCError(t, fmt.Sprintf("%s (leader): MoveLeader(12345)", leader.Name), err, codes.FailedPrecondition, "etcdserver: bad leader transferee")

	if _, ni := c.Leader(t); ni != cur {
		t.Errorf("%s leads after the refused MoveLeader calls, want %s still", c.Members[ni].Name, leader.Name)
	}
	if _, err := clusterClient(t, c).Put(ctxT(t, opTimeout), "move/last", "v"); err != nil {
		t.Errorf("Put after the refused MoveLeader calls: %v", err)
	}
}

// TestClusterSnapshotStream pins Maintenance.Snapshot on a member of a
// 3-member cluster holding a few hundred KiB of keys, read on a plain gRPC
// stream: no message carries a header; every message's Version is the
// storage version "3.6.0"; remaining_bytes of each data message is the
// number of data bytes still to follow (etcd does not count the trailing
// digest), so it falls to 0; the last message is a 32-byte blob, the
// SHA-256 of all the blobs before it, and the whole stream is 32 bytes more
// than a multiple of 512 (what clientv3's snapshot package checks).
// snapshot.SaveWithVersion then writes such a file and returns "3.6.0".
//
// The file is not opened as a bbolt database: rsetcd's snapshot format is
// its own, and restoring an rsetcd snapshot with etcdutl is not supported
// (rsetcd restores its own snapshots).
func TestClusterSnapshotStream(t *testing.T) {
	c := startCluster(t, 3)
	cli := clusterClient(t, c)
	value := strings.Repeat("x", 1024)
	for i := 0; i < 300; i++ {
		if _, err := cli.Put(ctxT(t, opTimeout), fmt.Sprintf("snapstream/%04d", i), value); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	_, li := c.Leader(t)

	for _, i := range []int{li, follower(c, li)} {
		p := c.Members[i]
		stream, err := pb.NewMaintenanceClient(grpcConn(t, p)).Snapshot(ctxT(t, 30*time.Second), &pb.SnapshotRequest{})
		if err != nil {
			t.Fatalf("%s: Snapshot: %v", p.Name, err)
		}
		var msgs []*pb.SnapshotResponse
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: Snapshot stream after %d messages: %v", p.Name, len(msgs), err)
			}
			msgs = append(msgs, m)
		}
		if len(msgs) < 2 {
			t.Fatalf("%s: Snapshot stream has %d messages, want the data and a digest", p.Name, len(msgs))
		}
		data, digest := msgs[:len(msgs)-1], msgs[len(msgs)-1]
		var all []byte
		for _, m := range data {
			all = append(all, m.Blob...)
		}
		total := len(all) + len(digest.Blob)
		t.Logf("%s: %d messages, %d data bytes + %d-byte digest", p.Name, len(msgs), len(all), len(digest.Blob))

		for j, m := range msgs {
			if m.Header != nil {
				t.Errorf("%s: Snapshot message %d has header %v, want none", p.Name, j, m.Header)
			}
			if m.Version != storageVersion {
				t.Errorf("%s: Snapshot message %d version %q, want %q", p.Name, j, m.Version, storageVersion)
			}
		}
		sent := 0
		for j, m := range data {
			sent += len(m.Blob)
			if want := uint64(len(all) - sent); m.RemainingBytes != want {
				t.Errorf("%s: Snapshot data message %d (%d bytes, %d sent in all): remaining_bytes %d, want %d (data bytes after it)",
					p.Name, j, len(m.Blob), sent, m.RemainingBytes, want)
			}
			if j > 0 && m.RemainingBytes > data[j-1].RemainingBytes {
				t.Errorf("%s: Snapshot message %d remaining_bytes %d > %d in the message before", p.Name, j, m.RemainingBytes, data[j-1].RemainingBytes)
			}
		}
		if digest.RemainingBytes != 0 {
			t.Errorf("%s: last Snapshot message remaining_bytes %d, want 0", p.Name, digest.RemainingBytes)
		}
		sum := sha256.Sum256(all)
		if !bytes.Equal(digest.Blob, sum[:]) {
			t.Errorf("%s: last Snapshot blob (%d bytes) %x, want the SHA-256 of the %d data bytes %x", p.Name, len(digest.Blob), digest.Blob, len(all), sum)
		}
		if total%512 != sha256.Size {
			t.Errorf("%s: Snapshot stream is %d bytes, %d mod 512, want %d mod 512", p.Name, total, total%512, sha256.Size)
		}
		if len(all) < 300*1024 {
			t.Errorf("%s: Snapshot holds %d data bytes, less than the 300 KiB of values put", p.Name, len(all))
		}

		// clientv3's snapshot package, as etcdctl snapshot save uses it.
		path := filepath.Join(t.TempDir(), "snap.db")
		ver, err := snapshot.SaveWithVersion(ctxT(t, 30*time.Second), zap.NewNop(),
			clientv3.Config{Endpoints: []string{p.ClientURL}, DialTimeout: 5 * time.Second}, path)
		if err != nil {
			t.Fatalf("%s: snapshot.SaveWithVersion: %v (version %q)", p.Name, err, ver)
		}
		if ver != storageVersion {
			t.Errorf("%s: snapshot.SaveWithVersion version %q, want %q", p.Name, ver, storageVersion)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("%s: snapshot file: %v", p.Name, err)
		}
		if fi.Size()%512 != sha256.Size || fi.Size() < 300*1024 {
			t.Errorf("%s: snapshot file is %d bytes (%d mod 512), want at least 300 KiB and 32 mod 512", p.Name, fi.Size(), fi.Size()%512)
		}
	}
}

// TestClusterHashesAgree pins Hash and HashKV on 3 members after 100 puts
// (some overwriting, some deleted) and a compaction: once every member's
// Status reports the same applied index, HashKV at the current revision
// and at revision 0 (the current one) is equal through each endpoint, as is
// Maintenance.Hash; every response header carries the current revision,
// HashKV's compact_revision the compaction revision and hash_revision the
// revision hashed. HashKV below the compaction revision fails with
// "mvcc: required revision has been compacted", above the current one with
// "mvcc: required revision is a future revision".
func TestClusterHashesAgree(t *testing.T) {
	c := startCluster(t, 3)
	cli := clusterClient(t, c)
	var compactAt int64
	for i := 0; i < 100; i++ {
		key := fmt.Sprintf("hash/%02d", i%40)
		resp, err := cli.Put(ctxT(t, opTimeout), key, fmt.Sprintf("v%d", i))
		if err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
		if i == 60 {
			compactAt = resp.Header.Revision
		}
		if i%9 == 8 {
			if _, err := cli.Delete(ctxT(t, opTimeout), fmt.Sprintf("hash/%02d", i%40-3)); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		}
	}
	if _, err := cli.Compact(ctxT(t, opTimeout), compactAt, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("Compact %d: %v", compactAt, err)
	}
	last, err := cli.Put(ctxT(t, opTimeout), "hash/last", "after-compaction")
	if err != nil {
		t.Fatalf("Put hash/last: %v", err)
	}
	rev := last.Header.Revision

	// Every member has applied the same entries (and its compaction has
	// run) before the hashes are compared.
	type reading struct {
		applied       uint64
		hash          uint32
		hashRev       int64
		kv, kv0       *clientv3.HashKVResponse
		kvErr, kv0Err error
	}
	var got []reading
	deadline := time.Now().Add(5 * time.Second)
	for {
		got = got[:0]
		same := true
		for _, p := range c.Members {
			var r reading
			r.applied = status(t, p).RaftAppliedIndex
			h, err := pb.NewMaintenanceClient(grpcConn(t, p)).Hash(ctxT(t, opTimeout), &pb.HashRequest{})
			if err != nil {
				t.Fatalf("%s: Hash: %v", p.Name, err)
			}
			r.hash, r.hashRev = h.Hash, h.Header.GetRevision()
			mcli := memberClient(t, p)
			r.kv, r.kvErr = mcli.HashKV(ctxT(t, opTimeout), p.ClientURL, rev)
			r.kv0, r.kv0Err = mcli.HashKV(ctxT(t, opTimeout), p.ClientURL, 0)
			got = append(got, r)
			g := got[0]
			same = same && r.applied == g.applied && r.hash == g.hash && r.kvErr == nil && r.kv0Err == nil &&
				g.kvErr == nil && g.kv0Err == nil && r.kv.Hash == g.kv.Hash && r.kv0.Hash == g.kv0.Hash
		}
		if same || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, r := range got {
		p := c.Members[i]
		t.Logf("%s: applied %d, Hash %08x, HashKV(%d) %s, HashKV(0) %s", p.Name, r.applied, r.hash, rev, hashKVString(r.kv, r.kvErr), hashKVString(r.kv0, r.kv0Err))
		if r.applied != got[0].applied {
			t.Errorf("%s: Status applied index %d, %s %d (after 5 s)", p.Name, r.applied, c.Members[0].Name, got[0].applied)
		}
		if r.hash != got[0].hash {
			t.Errorf("%s: Hash %08x, %s %08x", p.Name, r.hash, c.Members[0].Name, got[0].hash)
		}
		if r.hashRev != rev {
			t.Errorf("%s: Hash header revision %d, want the current revision %d", p.Name, r.hashRev, rev)
		}
		for _, x := range []struct {
			req  int64
			resp *clientv3.HashKVResponse
			err  error
			ref  *clientv3.HashKVResponse
		}{{rev, r.kv, r.kvErr, got[0].kv}, {0, r.kv0, r.kv0Err, got[0].kv0}} {
			if x.err != nil {
				t.Errorf("%s: HashKV(%d): %v", p.Name, x.req, x.err)
				continue
			}
			if x.ref != nil && x.resp.Hash != x.ref.Hash {
				t.Errorf("%s: HashKV(%d) %08x, %s %08x", p.Name, x.req, x.resp.Hash, c.Members[0].Name, x.ref.Hash)
			}
			if x.resp.Header.GetRevision() != rev || x.resp.CompactRevision != compactAt || x.resp.HashRevision != rev {
				t.Errorf("%s: HashKV(%d): header revision %d, compact_revision %d, hash_revision %d; want %d, %d, %d",
					p.Name, x.req, x.resp.Header.GetRevision(), x.resp.CompactRevision, x.resp.HashRevision, rev, compactAt, rev)
			}
		}
	}
	if got[0].kvErr == nil && got[0].kv0Err == nil && got[0].kv.Hash != got[0].kv0.Hash {
		t.Errorf("HashKV(%d) %08x differs from HashKV(0) %08x at the same current revision", rev, got[0].kv.Hash, got[0].kv0.Hash)
	}

	// An earlier revision after the compaction hashes equally too.
	mid := compactAt + 10
	var midHash []uint32
	for _, p := range c.Members {
		h, err := memberClient(t, p).HashKV(ctxT(t, opTimeout), p.ClientURL, mid)
		if err != nil {
			t.Errorf("%s: HashKV(%d): %v", p.Name, mid, err)
			continue
		}
		if h.HashRevision != mid || h.Header.GetRevision() != rev {
			t.Errorf("%s: HashKV(%d): hash_revision %d, header revision %d; want %d, %d", p.Name, mid, h.HashRevision, h.Header.GetRevision(), mid, rev)
		}
		midHash = append(midHash, h.Hash)
		if midHash[len(midHash)-1] != midHash[0] {
			t.Errorf("%s: HashKV(%d) %08x, another member %08x", p.Name, mid, h.Hash, midHash[0])
		}
	}

	for _, p := range c.Members {
		mc := pb.NewMaintenanceClient(grpcConn(t, p))
		_, err := mc.HashKV(ctxT(t, opTimeout), &pb.HashKVRequest{Revision: compactAt - 1})
		wantGRPCError(t, fmt.Sprintf("%s: HashKV(%d) below the compaction", p.Name, compactAt-1), err, codes.OutOfRange, "etcdserver: mvcc: required revision has been compacted")
		_, err = mc.HashKV(ctxT(t, opTimeout), &pb.HashKVRequest{Revision: rev + 100})
		wantGRPCError(t, fmt.Sprintf("%s: HashKV(%d) in the future", p.Name, rev+100), err, codes.OutOfRange, "etcdserver: mvcc: required revision is a future revision")
	}
}

// hashKVString renders a HashKV answer for the log.
func hashKVString(h *clientv3.HashKVResponse, err error) string {
	if err != nil {
		return "error " + err.Error()
	}
	return fmt.Sprintf("hash %08x compact_revision %d hash_revision %d header revision %d", h.Hash, h.CompactRevision, h.HashRevision, h.Header.GetRevision())
}
