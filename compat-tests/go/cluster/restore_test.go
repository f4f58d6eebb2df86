package cluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"rsetcd/compat-tests/internal/etcdproc"
)

// TestSnapshotRestoreNewCluster pins rsetcd's `snapshot restore`, its counterpart of
// `etcdutl snapshot restore`: a file saved by `etcdctl snapshot save` (clientv3's
// snapshot package) from one member becomes the data dir of each member of a new
// 3-member cluster, with the keys, their revisions and the leases kept, and a fresh
// raft state. rsetcd's snapshot file is its own store format, which etcdutl cannot
// read (and rsetcd cannot read etcd's bbolt files), so this test runs against rsetcd
// only.
func TestSnapshotRestoreNewCluster(t *testing.T) {
	bin := etcdproc.BinFromEnv(t)
	if filepath.Base(bin) == "etcd" {
		t.Skip("rsetcd's snapshot restore subcommand; etcd restores with etcdutl")
	}
	src := etcdproc.New(t, bin, "src")
	if err := src.Start(startTimeout); err != nil {
		t.Fatal(err)
	}
	cli, err := src.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, k := range []string{"r/a", "r/b", "r/c"} {
		if _, err := cli.Put(ctxT(t, opTimeout), k, "v-"+k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctxT(t, opTimeout), "r/b"); err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctxT(t, opTimeout), 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctxT(t, opTimeout), "r/leased", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	before, err := cli.Get(ctxT(t, opTimeout), "r/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "snap.db")
	if _, err := snapshot.SaveWithVersion(ctxT(t, 30*time.Second), zap.NewNop(),
		clientv3.Config{Endpoints: []string{src.ClientURL}, DialTimeout: 5 * time.Second}, file); err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	if err := src.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	c := etcdproc.NewCluster(t, bin, 3)
	restore := func(p *etcdproc.Proc, file string) (string, error) {
		out, err := exec.Command(bin, "snapshot", "restore", file, "--name", p.Name,
			"--data-dir", p.DataDir, "--initial-cluster", p.InitialCluster,
			"--initial-cluster-token", p.InitialClusterToken,
			"--initial-advertise-peer-urls", p.PeerURL).CombinedOutput()
		return string(out), err
	}
	for _, p := range c.Members {
		if out, err := restore(p, file); err != nil {
			t.Fatalf("restore for %s: %v\n%s", p.Name, err, out)
		}
	}
	// A second restore into the same data dir is refused and changes nothing.
	if out, err := restore(c.Members[0], file); err == nil || !strings.Contains(out, "exists") {
		t.Errorf("restore into an existing data dir: %v, %q; want an error saying it exists", err, out)
	}
	// A truncated file is refused.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.db")
	if err := os.WriteFile(cut, data[:len(data)-100], 0o600); err != nil {
		t.Fatal(err)
	}
	spare := etcdproc.New(t, bin, "spare")
	spare.InitialCluster = "spare=" + spare.PeerURL
	if out, err := restore(spare, cut); err == nil || !strings.Contains(out, "checksum") {
		t.Errorf("restore of a truncated file: %v, %q; want a checksum error", err, out)
	}

	if err := c.Start(startTimeout); err != nil {
		t.Fatal(err)
	}
	ccli := clusterClient(t, c)
	after, err := ccli.Get(ctxT(t, opTimeout), "r/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision || len(after.Kvs) != len(before.Kvs) {
		t.Fatalf("restored cluster: revision %d with %d keys, want revision %d with %d keys",
			after.Header.Revision, len(after.Kvs), before.Header.Revision, len(before.Kvs))
	}
	for i, kv := range after.Kvs {
		want := before.Kvs[i]
		if string(kv.Key) != string(want.Key) || string(kv.Value) != string(want.Value) ||
			kv.CreateRevision != want.CreateRevision || kv.ModRevision != want.ModRevision ||
			kv.Version != want.Version || kv.Lease != want.Lease {
			t.Errorf("restored key %d: %+v, want %+v", i, kv, want)
		}
	}
	ttl, err := ccli.TimeToLive(ctxT(t, opTimeout), lease.ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.GrantedTTL != 600 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "r/leased" {
		t.Errorf("restored lease: %+v, %v; want granted 600 holding r/leased", ttl, err)
	}
	put, err := ccli.Put(ctxT(t, opTimeout), "r/new", "n")
	if err != nil || put.Header.Revision != before.Header.Revision+1 {
		t.Fatalf("first put after restore: %+v, %v; want revision %d", put, err, before.Header.Revision+1)
	}
	members, err := ccli.MemberList(ctxT(t, opTimeout))
	if err != nil || len(members.Members) != 3 {
		t.Fatalf("restored cluster members: %+v, %v; want 3", members, err)
	}
	for _, p := range c.Members {
		pc, err := p.Client()
		if err != nil {
			t.Fatal(err)
		}
		kv, _ := getOne(t, p.Name, pc, "r/new", clientv3.WithSerializable())
		deadline := time.Now().Add(5 * time.Second)
		for (kv == nil || kv.ModRevision != put.Header.Revision) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			kv, _ = getOne(t, p.Name, pc, "r/new", clientv3.WithSerializable())
		}
		if kv == nil || kv.ModRevision != put.Header.Revision {
			t.Errorf("%s: r/new = %+v, want mod revision %d", p.Name, kv, put.Header.Revision)
		}
		pc.Close()
	}
}
