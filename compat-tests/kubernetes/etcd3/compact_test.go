package etcd3

// kube-apiserver's etcd compactor (etcd3.NewCompactor / etcd3.Compact: the
// compact_rev_key version-guarded transaction, then Compact), copied from
// upstream's k8s.io/apiserver/pkg/storage/etcd3/compact_test.go with the
// embedded etcd replaced by a server process.

import (
	"context"
	"testing"
	"time"

	etcdrpc "go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"k8s.io/apiserver/pkg/storage/etcd3"
	testingclock "k8s.io/utils/clock/testing"
)

const (
	waitDelay   = time.Millisecond
	waitTimeout = 100 * waitDelay
)

// plainClient starts a server from bin and returns a clientv3 client to it.
func plainClient(t *testing.T, bin string) *clientv3.Client {
	t.Helper()
	srv := startServer(t, bin, "--unsafe-no-fsync")
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{srv.clientURL},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func compactCases() []testCase {
	return []testCase{
		{"Compact", testCompact},
		{"CompactConflict", testCompactConflict},
	}
}

// testCompact is upstream's TestCompact: the compactor, driven by a fake
// clock, compacts one cycle behind (the revision it saw on the previous
// tick).
func testCompact(t *testing.T, bin string) {
	client := plainClient(t, bin)
	ctx := context.Background()
	clock := testingclock.NewFakeClock(time.Now())
	c := etcd3.NewCompactor(client, time.Minute, clock, nil)
	t.Cleanup(c.Stop)
	waitForClockWaiters(t, clock)

	t.Log("First compaction cycle saves revision before first write")
	clock.Step(time.Minute)
	waitForClockWaiters(t, clock)
	compactRev := c.CompactRevision()
	if compactRev != 0 {
		t.Errorf("CompactRevision()=%d, expected %d", compactRev, 0)
	}

	t.Log("First write")
	putResp, err := client.Put(ctx, "/somekey", "data")
	if err != nil {
		t.Fatalf("Put failed: %v", err)
	}
	assertNotCompacted(t, ctx, client, putResp.Header.Revision)

	t.Log("Second compaction cycle compacts before first write")
	clock.Step(time.Minute)
	waitForClockWaiters(t, clock)
	assertNotCompacted(t, ctx, client, putResp.Header.Revision)
	compactRev = c.CompactRevision()
	if compactRev != putResp.Header.Revision-1 {
		t.Errorf("CompactRevision()=%d, expected %d", compactRev, 0)
	}

	t.Log("Create second revision")
	putResp1, err := client.Put(ctx, "/somekey", "data2")
	if err != nil {
		t.Fatalf("Put failed: %v", err)
	}
	assertNotCompacted(t, ctx, client, putResp1.Header.Revision)

	t.Log("Third compaction cycle compacts revision after first write")
	clock.Step(time.Minute)
	waitForClockWaiters(t, clock)
	assertCompacted(t, ctx, client, putResp.Header.Revision)
	compactRev = c.CompactRevision()
	if compactRev != putResp.Header.Revision+1 {
		t.Errorf("CompactRevision()=%d, expected %d", compactRev, putResp.Header.Revision)
	}

	assertNotCompacted(t, ctx, client, putResp1.Header.Revision)

	t.Log("Fourth compaction cycle compacts second write")
	clock.Step(time.Minute)
	waitForClockWaiters(t, clock)
	assertCompacted(t, ctx, client, putResp.Header.Revision)
	assertCompacted(t, ctx, client, putResp1.Header.Revision)
	compactRev = c.CompactRevision()
	if compactRev != putResp1.Header.Revision+1 {
		t.Errorf("CompactRevision()=%d, expected %d", compactRev, putResp1.Header.Revision)
	}
}

func assertCompacted(t *testing.T, ctx context.Context, client *clientv3.Client, rev int64) {
	t.Helper()
	_, err := client.Get(ctx, "/somekey", clientv3.WithRev(rev))
	if err != etcdrpc.ErrCompacted {
		t.Errorf("Expecting rev %d compacted, but err=%v", rev, err)
	}
}

func assertNotCompacted(t *testing.T, ctx context.Context, client *clientv3.Client, rev int64) {
	t.Helper()
	_, err := client.Get(ctx, "/somekey", clientv3.WithRev(rev))
	if err != nil {
		t.Errorf("Get on rev %d failed: %v", rev, err)
	}
}

func waitForClockWaiters(t *testing.T, clock *testingclock.FakeClock) {
	t.Helper()
	for start := time.Now(); time.Since(start) < waitTimeout; {
		if clock.HasWaiters() {
			return
		}
		time.Sleep(waitDelay)
	}
	t.Fatal("No waiters")
}

// testCompactConflict is upstream's TestCompactConflict: compactors racing
// on the same logical time; the loser gets the winner's time and
// revisions back from the failed transaction.
func testCompactConflict(t *testing.T, bin string) {
	client := plainClient(t, bin)
	ctx := context.Background()

	putResp, err := client.Put(ctx, "/somekey", "data")
	if err != nil {
		t.Fatalf("Put failed: %v", err)
	}

	t.Log("First compact on time 0")
	wantCompactRev := putResp.Header.Revision
	curTime, curRev, compactRev, err := etcd3.Compact(ctx, client, 0, wantCompactRev)
	if err != nil {
		t.Fatalf("compact failed: %v", err)
	}
	if compactRev != wantCompactRev {
		t.Errorf("Expect compact revision = %d, get = %d", wantCompactRev, compactRev)
	}
	if curTime != 1 {
		t.Errorf("Expect current logical time = 1, get = %v", curTime)
	}
	wantCurrentRev := putResp.Header.Revision + 1
	if curRev != wantCurrentRev {
		t.Errorf("Expect current revision = %d, get = %d", wantCurrentRev, curRev)
	}

	t.Log("Second compact on time 0")
	curTime2, curRev2, compactRev2, err := etcd3.Compact(ctx, client, 0, wantCompactRev+1)
	if err != nil {
		t.Fatalf("compact failed: %v", err)
	}
	t.Log("Compaction should fail")
	if compactRev2 != wantCompactRev {
		t.Errorf("Expect compact revision = %d, get = %d", wantCompactRev, compactRev2)
	}
	if curTime != curTime2 {
		t.Errorf("Unexpected curTime (%v) != curTime2 (%v)", curTime, curTime2)
	}
	if curRev2 != wantCurrentRev {
		t.Errorf("Expect current revision = %d, get = %d", wantCurrentRev, curRev2)
	}

	t.Log("Third compact on time 1")
	curTime3, curRev3, compactRev3, err := etcd3.Compact(ctx, client, 1, wantCompactRev+1)
	if err != nil {
		t.Fatalf("compact failed: %v", err)
	}
	wantCompactRev++
	if compactRev3 != wantCompactRev {
		t.Errorf("Expect compact revision = %d, get = %d", wantCompactRev, compactRev3)
	}
	if curTime3 != 2 {
		t.Errorf("Expect current logical time = 2, get = %v", curTime3)
	}
	wantCurrentRev++
	if curRev3 != wantCurrentRev {
		t.Errorf("Expect current revision = %d, get = %d", wantCurrentRev, curRev3)
	}
}
