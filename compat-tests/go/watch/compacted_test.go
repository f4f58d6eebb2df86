package watch

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// collect reads ch until an event at revision untilRev arrived (0: none
// expected), the channel closed, or quiet passed without a response. Event
// responses are flattened to one line per event (how a replay is split
// into responses is not part of the contract); other responses get a line
// of their own.
func collect(ch clientv3.WatchChan, untilRev int64, quiet time.Duration) []string {
	var out []string
	for {
		r, ok, closed := recvResp(ch, quiet)
		if closed {
			return append(out, "channel closed")
		}
		if !ok {
			return append(out, fmt.Sprintf("no response within %v", quiet))
		}
		if len(r.Events) == 0 {
			out = append(out, fmtWatchResponse(r)...)
			continue
		}
		done := false
		for _, ev := range r.Events {
			out = append(out, fmt.Sprintf("event hdr=%d %s", r.Header.Revision, fmtEvent((*mvccpb.Event)(ev))))
			if untilRev != 0 && ev.Kv.ModRevision >= untilRev {
				done = true
			}
		}
		if err := r.Err(); err != nil {
			out = append(out, "err="+errString(err))
		}
		if done {
			return out
		}
	}
}

// TestWatchCompacted: watches starting below, at and after the compacted
// revision, compared with the reference etcd.
func TestWatchCompacted(t *testing.T) {
	differential(t, func(t *testing.T, s *server) []string {
		var tr []string
		log := func(format string, args ...any) { tr = append(tr, fmt.Sprintf(format, args...)) }
		cli := s.cli
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		live := cli.Watch(ctx, "k", clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		if r, ok, _ := recvResp(live, opTimeout); !ok || !r.Created {
			t.Fatalf("no created notification: %v", fmtWatchResponse(r))
		}
		for i := 1; i <= 9; i++ {
			log("put k v%d -> rev %d", i, mustPut(t, cli, "k", fmt.Sprintf("v%d", i)))
		}
		log("put j w -> rev %d", mustPut(t, cli, "j", "w"))
		cctx, ccancel := ctxTimeout(opTimeout)
		cr, err := cli.Compact(cctx, 6)
		ccancel()
		log("compact 6: %s (hdr rev %d)", errString(err), cr.Header.Revision)

		for _, tc := range []struct {
			name  string
			key   string
			until int64
			opts  []clientv3.OpOption
		}{
			{"below (rev 3)", "k", 0, []clientv3.OpOption{clientv3.WithRev(3)}},
			{"just below (rev 5), prefix", "", 0, []clientv3.OpOption{clientv3.WithRev(5), clientv3.WithPrefix()}},
			{"rev 1", "k", 0, []clientv3.OpOption{clientv3.WithRev(1), clientv3.WithPrevKV()}},
			{"at compacted (rev 6), prev_kv", "k", 10, []clientv3.OpOption{clientv3.WithRev(6), clientv3.WithPrevKV()}},
			{"at compacted (rev 6), all keys", "", 11, []clientv3.OpOption{clientv3.WithRev(6), clientv3.WithPrefix()}},
			{"above (rev 7), prev_kv", "k", 10, []clientv3.OpOption{clientv3.WithRev(7), clientv3.WithPrevKV()}},
			{"negative (rev -1)", "k", 0, []clientv3.OpOption{clientv3.WithRev(-1)}},
		} {
			log("watch %s:", tc.name)
			wctx, wcancel := context.WithCancel(ctx)
			ch := cli.Watch(wctx, tc.key, tc.opts...)
			lines := collect(ch, tc.until, time.Second)
			wcancel()
			for _, l := range lines {
				log("  %s", l)
			}
			// clientv3's view: the first response's error
			if len(lines) > 0 && tc.until == 0 {
				wctx, wcancel := context.WithCancel(ctx)
				r, ok, _ := recvResp(cli.Watch(wctx, tc.key, tc.opts...), 5*time.Second)
				wcancel()
				log("  again: ok=%v ErrCompacted=%v canceled=%v compact=%d",
					ok, errors.Is(r.Err(), rpctypes.ErrCompacted), r.Canceled, r.CompactRevision)
			}
		}

		// The live watcher created before the compaction is not affected.
		log("put k after -> rev %d", mustPut(t, cli, "k", "after"))
		for _, l := range collect(live, 12, time.Second) {
			log("live: %s", l)
		}

		// A future start revision is accepted and waits.
		fut := cli.Watch(ctx, "k", clientv3.WithRev(14))
		log("future watch (rev 14) before the writes: %v", collect(fut, 0, 300*time.Millisecond))
		log("put k f13 -> rev %d", mustPut(t, cli, "k", "f13"))
		log("put k f14 -> rev %d", mustPut(t, cli, "k", "f14"))
		for _, l := range collect(fut, 14, 2*time.Second) {
			log("future: %s", l)
		}

		// Compacting again (physically) moves the limit.
		cctx, ccancel = ctxTimeout(opTimeout)
		cr, err = cli.Compact(cctx, 12, clientv3.WithCompactPhysical())
		ccancel()
		log("compact 12 physical: %s (hdr rev %d)", errString(err), cr.Header.Revision)
		for _, l := range collect(cli.Watch(ctx, "k", clientv3.WithRev(11)), 0, time.Second) {
			log("watch rev 11: %s", l)
		}
		for _, l := range collect(cli.Watch(ctx, "k", clientv3.WithRev(12), clientv3.WithPrevKV()), 14, time.Second) {
			log("watch rev 12: %s", l)
		}
		return tr
	})
}
