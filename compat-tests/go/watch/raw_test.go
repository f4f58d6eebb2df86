package watch

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestWatchRawCreateCancel drives one raw Watch stream through creates
// (auto and client-chosen watch ids, duplicates, empty ranges, negative
// start revisions, empty keys), cancels (known and unknown ids) and
// progress requests, and compares every response with the reference etcd.
// clientv3 never chooses watch ids itself, but the wire allows it.
func TestWatchRawCreateCancel(t *testing.T) {
	differential(t, func(t *testing.T, s *server) []string {
		var tr []string
		log := func(format string, args ...any) { tr = append(tr, fmt.Sprintf(format, args...)) }
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := rawStream(t, ctx, s.cli)
		step := func(what string, req *pb.WatchRequest, expectReply bool) {
			if err := st.Send(req); err != nil {
				t.Fatalf("%s: send: %v", what, err)
			}
			if !expectReply {
				log("%s: (sent)", what)
				return
			}
			r, err := st.recv(3 * time.Second)
			if err != nil {
				log("%s: %v", what, err)
				return
			}
			log("%s: %v", what, fmtRaw(r))
		}
		create := func(c *pb.WatchCreateRequest) *pb.WatchRequest {
			return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
		}
		cancelReq := func(id int64) *pb.WatchRequest {
			return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
		}
		progress := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}

		log("put a -> rev %d", mustPut(t, s.cli, "a", "1"))
		step("create a (auto id)", create(&pb.WatchCreateRequest{Key: []byte("a")}), true)
		step("create b (auto id)", create(&pb.WatchCreateRequest{Key: []byte("b")}), true)
		step("cancel 0", cancelReq(0), true)
		step("create c (auto id, after canceling 0)", create(&pb.WatchCreateRequest{Key: []byte("c")}), true)
		step("create d with id 7", create(&pb.WatchCreateRequest{Key: []byte("d"), WatchId: 7}), true)
		step("create e with id 7 again", create(&pb.WatchCreateRequest{Key: []byte("e"), WatchId: 7}), true)
		step("create f with id 3", create(&pb.WatchCreateRequest{Key: []byte("f"), WatchId: 3}), true)
		step("create g (auto id)", create(&pb.WatchCreateRequest{Key: []byte("g")}), true)
		step("create [b,a) (empty range)", create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")}), true)
		step("create [b,b) (empty range)", create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("b")}), true)
		step("create a start -5", create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -5}), true)
		step("create empty key (auto id)", create(&pb.WatchCreateRequest{}), true)
		step("create from empty key (range_end \\0)", create(&pb.WatchCreateRequest{RangeEnd: []byte{0}}), true)
		step("cancel unknown 99", cancelReq(99), false)
		step("empty WatchRequest", &pb.WatchRequest{}, false)
		step("progress", progress, true)
		// readEvents reads responses until none came for 500 ms; several
		// watchers' responses to one write may come in any order, so they
		// are sorted by watch id.
		readEvents := func(what string) {
			var lines []string
			for {
				r, err := st.recv(500 * time.Millisecond)
				if err != nil {
					break
				}
				lines = append(lines, strings.Join(fmtRaw(r), " | "))
			}
			sort.Strings(lines)
			log("%s: %d responses", what, len(lines))
			for _, l := range lines {
				log("  %s", l)
			}
		}
		log("put \\0 -> rev %d", mustPut(t, s.cli, "\x00", "nul"))
		readEvents("after put \\0")
		log("put zz -> rev %d", mustPut(t, s.cli, "zz", "z"))
		readEvents("after put zz")
		log("put g -> rev %d", mustPut(t, s.cli, "g", "g"))
		readEvents("after put g")
		step("cancel 7", cancelReq(7), true)
		step("create h with id 7 (reused after cancel)", create(&pb.WatchCreateRequest{Key: []byte("h"), WatchId: 7}), true)
		step("create with id -1", create(&pb.WatchCreateRequest{Key: []byte("i"), WatchId: -1}), true)
		// auto ids are never reused on a stream (etcd: a counter that only
		// moves up), also not the id of the last watcher after its cancel:
		// a reused id would let in-flight events of the canceled watcher
		// reach the new one
		step("create j (auto id)", create(&pb.WatchCreateRequest{Key: []byte("j")}), true)
		step("cancel 8 (the watcher just created)", cancelReq(8), true)
		step("create k (auto id)", create(&pb.WatchCreateRequest{Key: []byte("k")}), true)
		log("put j -> rev %d", mustPut(t, s.cli, "j", "j"))
		log("put k -> rev %d", mustPut(t, s.cli, "k", "k"))
		readEvents("after put j, put k")
		return tr
	})
}
