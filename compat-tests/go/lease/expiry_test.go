package lease

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLeaseExpiry: 50 leases of TTL 2 with 4 keys each (put in one txn
// right after each grant), never kept alive. A watch on the prefix, started
// before the first grant, must see all 200 keys deleted: each lease's 4 keys
// in one revision (sorted by key, as etcd deletes them), in one watch
// response, and no response mixing leases. Afterwards no key and none of the
// leases is left.
func TestLeaseExpiry(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv *server) {
		const (
			leases       = 50
			keysPerLease = 4
			pfx          = "/expiry/"
			// Generous: the last lease is granted within a few seconds and
			// expires 2 s later.
			expiryTimeout = 60 * time.Second
		)
		cli := srv.cli
		ctx, cancel := ctxTimeout(2 * time.Minute)
		defer cancel()
		start, err := cli.Get(ctx, "some-key")
		if err != nil {
			t.Fatal(err)
		}
		wch := cli.Watch(ctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1), clientv3.WithFilterPut())

		ids := map[clientv3.LeaseID]string{} // lease -> its key group
		for i := range leases {
			g, err := cli.Grant(ctx, 2)
			if err != nil {
				t.Fatalf("Grant %d: %v", i, err)
			}
			group := fmt.Sprintf("%s%02d/", pfx, i)
			ids[g.ID] = group
			var ops []clientv3.Op
			for j := range keysPerLease {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sk%d", group, j), "v", clientv3.WithLease(g.ID)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatalf("putting the keys of lease %d: %v", i, err)
			}
		}

		seenGroups := map[string]int64{} // group -> revision of its deletion
		seenRevs := map[int64]string{}   // revision -> group
		deletes, responses := 0, 0
		timeout := time.After(expiryTimeout)
		for deletes < leases*keysPerLease {
			var wr clientv3.WatchResponse
			select {
			case r, ok := <-wch:
				if !ok {
					t.Fatalf("watch closed after %d of %d deletes", deletes, leases*keysPerLease)
				}
				wr = r
			case <-timeout:
				t.Fatalf("only %d of %d keys deleted within %v (%d of %d leases)", deletes, leases*keysPerLease, expiryTimeout, len(seenGroups), leases)
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			if len(wr.Events) == 0 {
				continue
			}
			responses++
			deletes += len(wr.Events)
			var keys []string
			rev := wr.Events[0].Kv.ModRevision
			for _, ev := range wr.Events {
				if ev.Type != mvccpb.DELETE {
					t.Errorf("watch with NOPUT filter sent %v for %s", ev.Type, ev.Kv.Key)
				}
				keys = append(keys, string(ev.Kv.Key))
				if ev.Kv.ModRevision != rev {
					t.Errorf("one watch response holds deletes at revisions %d and %d (keys %q)", rev, ev.Kv.ModRevision, keysOfEvents(wr.Events))
				}
			}
			group := keys[0][:strings.LastIndexByte(keys[0], '/')+1]
			var want []string
			for j := range keysPerLease {
				want = append(want, fmt.Sprintf("%sk%d", group, j))
			}
			if fmt.Sprint(keys) != fmt.Sprint(want) {
				t.Errorf("watch response at revision %d: deleted keys %q, want exactly one lease's keys in order %q", rev, keys, want)
			}
			if !sort.StringsAreSorted(keys) {
				t.Errorf("watch response at revision %d: deletes not in key order: %q", rev, keys)
			}
			if r, ok := seenGroups[group]; ok {
				t.Errorf("keys of %s deleted at revision %d and again at %d", group, r, rev)
			}
			if g, ok := seenRevs[rev]; ok {
				t.Errorf("revision %d appears in two watch responses (%s and %s)", rev, g, group)
			}
			seenGroups[group], seenRevs[rev] = rev, group
		}
		if len(seenGroups) != leases || responses != leases {
			t.Errorf("%d deletes in %d watch responses covering %d leases; want %d responses, one per lease", deletes, responses, len(seenGroups), leases)
		}
		t.Logf("%d keys of %d leases deleted at %d revisions, one watch response each", deletes, len(seenGroups), len(seenRevs))

		resp, err := cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 0 {
			t.Errorf("%d keys left under %s after all leases expired", resp.Count, pfx)
		}
		lr, err := cli.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lr.Leases {
			if g, ok := ids[l.ID]; ok {
				t.Errorf("expired lease %x (keys %s) still listed by Leases()", l.ID, g)
			}
		}
		for id, g := range ids {
			ttl, err := cli.TimeToLive(ctx, id)
			if err != nil || ttl.TTL != -1 {
				t.Errorf("TimeToLive of expired lease %x (keys %s): got %+v, %v; want TTL -1", id, g, ttl, err)
				break
			}
		}
	})
}

func keysOfEvents(evs []*clientv3.Event) []string {
	var keys []string
	for _, ev := range evs {
		keys = append(keys, string(ev.Kv.Key))
	}
	return keys
}
