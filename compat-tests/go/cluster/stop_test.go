package cluster

import (
	"testing"
	"time"
)

// TestClusterMemberStopsOnSIGTERM pins that one member of a running cluster
// exits on SIGTERM while the others go on (a rolling restart): etcd exits in
// about a second. The bound only keeps a member that never exits (waiting for
// its peers' raft streams to close) from passing; the survivors keep a leader
// and take writes.
func TestClusterMemberStopsOnSIGTERM(t *testing.T) {
	c := startCluster(t, 3)
	_, li := c.Leader(t)
	for _, i := range []int{follower(c, li), li} {
		p := c.Members[i]
		started := time.Now()
		if err := p.Stop(15 * time.Second); err != nil {
			t.Fatalf("SIGTERM to %s while its peers run: %v", p.Name, err)
		}
		t.Logf("%s exited %v after SIGTERM", p.Name, time.Since(started).Round(time.Millisecond))
		if err := p.Start(startTimeout); err != nil {
			t.Fatalf("restarting %s: %v", p.Name, err)
		}
		cli := clusterClient(t, c)
		if _, err := cli.Put(ctxT(t, opTimeout), "after-"+p.Name, "v"); err != nil {
			t.Fatalf("Put after restarting %s: %v", p.Name, err)
		}
	}
}
