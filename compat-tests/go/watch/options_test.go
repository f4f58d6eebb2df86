package watch

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// TestWatchOptionsTranscript: synced watchers with prev_kv, filters, ranges
// and single keys see a sequence of puts, deletes and txns; every response
// (one per write, none when all its events are filtered) is compared with
// the reference etcd.
func TestWatchOptionsTranscript(t *testing.T) {
	differential(t, func(t *testing.T, s *server) []string {
		var tr []string
		log := func(format string, args ...any) { tr = append(tr, fmt.Sprintf(format, args...)) }
		cli := s.cli
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ctx2 := metadata.AppendToOutgoingContext(ctx, "rsetcd-test-stream", "2")

		log("put o/b b0 -> rev %d", mustPut(t, cli, "o/b", "b0"))
		watchers := []struct {
			name string
			ctx  context.Context
			key  string
			opts []clientv3.OpOption
		}{
			{"prefix o/ prev_kv", ctx, "o/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}},
			{"prefix o/ noput", ctx, "o/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterPut()}},
			{"prefix o/ nodelete", ctx, "o/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterDelete()}},
			{"prefix o/ noput prev_kv", ctx2, "o/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithPrevKV()}},
			{"range [o/b,o/d) nodelete prev_kv", ctx2, "o/b", []clientv3.OpOption{clientv3.WithRange("o/d"), clientv3.WithFilterDelete(), clientv3.WithPrevKV()}},
			{"key o/a", ctx2, "o/a", nil},
			{"noput nodelete", ctx2, "o/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithFilterDelete()}},
			{"from-key o/c", ctx, "o/c", []clientv3.OpOption{clientv3.WithFromKey()}},
			{"empty key, prefix (everything)", ctx, "", []clientv3.OpOption{clientv3.WithPrefix()}},
		}
		chans := make([]clientv3.WatchChan, len(watchers))
		for i, w := range watchers {
			chans[i] = cli.Watch(w.ctx, w.key, append(w.opts, clientv3.WithCreatedNotify())...)
			r, ok, _ := recvResp(chans[i], opTimeout)
			if !ok {
				t.Fatalf("watcher %s: no created notification", w.name)
			}
			log("created %s: %v", w.name, fmtWatchResponse(r))
		}

		do := func(what string, fn func(ctx context.Context) (int64, error)) {
			ctx, cancel := ctxTimeout(opTimeout)
			defer cancel()
			rev, err := fn(ctx)
			log("%s -> %s rev %d", what, errString(err), rev)
		}
		put := func(k, v string, opts ...clientv3.OpOption) {
			do("put "+k+" "+v, func(ctx context.Context) (int64, error) {
				r, err := cli.Put(ctx, k, v, opts...)
				if err != nil {
					return 0, err
				}
				return r.Header.Revision, nil
			})
		}
		del := func(k string, opts ...clientv3.OpOption) {
			do("del "+k, func(ctx context.Context) (int64, error) {
				r, err := cli.Delete(ctx, k, opts...)
				if err != nil {
					return 0, err
				}
				return r.Header.Revision, nil
			})
		}
		txn := func(what string, ops ...clientv3.Op) {
			do("txn "+what, func(ctx context.Context) (int64, error) {
				r, err := cli.Txn(ctx).Then(ops...).Commit()
				if err != nil {
					return 0, err
				}
				return r.Header.Revision, nil
			})
		}

		put("o/a", "a1")
		put("o/b", "b1")
		put("o/a", "a2")
		put("p/outside", "x")
		del("o/a")
		del("o/missing")
		txn("put o/c, del o/b, put o/e, put o/a", clientv3.OpPut("o/c", "c1"), clientv3.OpDelete("o/b"),
			clientv3.OpPut("o/e", "e1"), clientv3.OpPut("o/a", "a3"))
		txn("puts only", clientv3.OpPut("o/b", "b2"), clientv3.OpPut("o/c", "c2"))
		txn("deletes only", clientv3.OpDelete("o/c"), clientv3.OpDelete("o/e"))
		put("o/bb", "bb1")
		put("o/a", "a4", clientv3.WithPrevKV())
		del("o/", clientv3.WithPrefix())
		put("o/a", "recreated")
		put("o/a", "", clientv3.WithIgnoreValue())

		for i, w := range watchers {
			for {
				r, ok, closed := recvResp(chans[i], 700*time.Millisecond)
				if closed || !ok {
					break
				}
				for _, l := range fmtWatchResponse(r) {
					log("%s: %s", w.name, l)
				}
			}
		}
		return tr
	})
}
