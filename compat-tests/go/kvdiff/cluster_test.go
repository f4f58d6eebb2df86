package kvdiff

// Status and MemberList cannot be compared as whole transcripts (IDs, ports,
// sizes and raft indexes differ between two servers); these tests compare
// the fields that must agree and check the invariants of the others.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-semver/semver"
	clientv3 "go.etcd.io/etcd/client/v3"

	"rsetcd/compat-tests/internal/transcript"
)

func ctx10s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// writeSome issues the same few writes on a server (revision ends at 4).
func writeSome(t *testing.T, s *server) {
	t.Helper()
	ctx := ctx10s(t)
	for _, k := range []string{"a", "b", "a"} {
		if _, err := s.cli.Put(ctx, k, "v"); err != nil {
			t.Fatalf("%s: put %q: %v", s.label, k, err)
		}
	}
}

func TestStatus(t *testing.T) {
	ref, sut := startPair(t)
	got := map[string]*clientv3.StatusResponse{}
	for _, s := range []*server{ref, sut} {
		writeSome(t, s)
		resp, err := s.cli.Status(ctx10s(t), s.proc.ClientURL)
		if err != nil {
			t.Fatalf("%s: Status: %v", s.label, err)
		}
		got[s.label] = resp
		t.Logf("%s: %s", s.label, transcript.Render(resp))
	}
	for label, r := range got {
		check := func(ok bool, format string, args ...any) {
			if !ok {
				t.Errorf("%s: "+format, append([]any{label}, args...)...)
			}
		}
		check(r.Header != nil, "no header")
		if r.Header == nil {
			continue
		}
		check(r.Header.ClusterId != 0 && r.Header.MemberId != 0, "header without cluster_id/member_id: %+v", r.Header)
		check(r.Leader == r.Header.MemberId, "leader %x != header.member_id %x (one-member cluster)", r.Leader, r.Header.MemberId)
		check(r.RaftIndex >= r.RaftAppliedIndex, "raftIndex %d < raftAppliedIndex %d", r.RaftIndex, r.RaftAppliedIndex)
		check(r.RaftAppliedIndex > 0, "raftAppliedIndex is 0")
		check(r.RaftTerm > 0 && r.RaftTerm == r.Header.RaftTerm, "raftTerm %d, header.raft_term %d", r.RaftTerm, r.Header.RaftTerm)
		check(r.DbSize > 0, "dbSize %d", r.DbSize)
		check(r.DbSizeInUse > 0 && r.DbSizeInUse <= r.DbSize, "dbSizeInUse %d, dbSize %d", r.DbSizeInUse, r.DbSize)
		check(!r.IsLearner, "isLearner")
		check(len(r.Errors) == 0, "errors %q", r.Errors)
	}
	e, s := got["etcd"], got["rsetcd"]
	equal := func(field string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s: etcd %v, rsetcd %v", field, a, b)
		}
	}
	equal("header.revision", e.Header.Revision, s.Header.Revision)
	equal("dbSizeQuota", e.DbSizeQuota, s.DbSizeQuota)
	equal("storageVersion", e.StorageVersion, s.StorageVersion)
	equal("downgradeInfo", transcript.Render(e.DowngradeInfo), transcript.Render(s.DowngradeInfo))
	// Kubernetes disables RequestWatchProgress unless version >= 3.5.13.
	v, err := semver.NewVersion(s.Version)
	if err != nil {
		t.Errorf("rsetcd: StatusResponse.version %q is not semver: %v", s.Version, err)
	} else if v.LessThan(*semver.New("3.5.13")) {
		t.Errorf("rsetcd: StatusResponse.version %q < 3.5.13", s.Version)
	}
}

func TestMemberList(t *testing.T) {
	ref, sut := startPair(t)
	outs := map[string][]string{}
	for _, s := range []*server{ref, sut} {
		// Client and peer URLs differ only by port: name them.
		norm := strings.NewReplacer(s.proc.ClientURL, "<client-url>", s.proc.PeerURL, "<peer-url>")
		for _, linearizable := range []bool{false, true} {
			var opts []clientv3.OpOption
			if !linearizable {
				opts = append(opts, clientv3.WithSerializable())
			}
			resp, err := s.cli.Cluster.MemberList(ctx10s(t), opts...)
			if err != nil {
				outs[s.label] = append(outs[s.label], transcript.RenderErr(err))
				continue
			}
			if resp.Header != nil && len(resp.Members) == 1 {
				if m := resp.Members[0]; m.ID != resp.Header.MemberId {
					t.Errorf("%s: members[0].ID %x != header.member_id %x", s.label, m.ID, resp.Header.MemberId)
				}
			}
			// Member IDs are hashes of the peer URLs: replace the value.
			for _, m := range resp.Members {
				if m.ID != 0 {
					m.ID = 1
				}
			}
			outs[s.label] = append(outs[s.label], fmt.Sprintf("linearizable=%v: %s", linearizable, norm.Replace(transcript.Render(resp))))
		}
	}
	want, got := strings.Join(outs["etcd"], ""), strings.Join(outs["rsetcd"], "")
	t.Logf("etcd:\n%s", want)
	if want != got {
		t.Errorf("MemberList differs (- etcd, + rsetcd; members[].ID != 0 shown as 1, URLs normalized):\n%s", transcript.LineDiff(want, got, diffContext))
	}
}
