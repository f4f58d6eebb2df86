package watch

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxRequestBytes for TestWatchFragment: a txn of three 1,000,000-byte
// values fits; etcd fragments watch responses of at least this + 512 KiB.
const maxRequestBytes = 3 << 20

// TestWatchFragment: with prev_kv, a txn overwriting three ~1 MB values
// gives a ~6 MB watch response; a watcher that asked for fragments gets it
// in parts (raw stream: how many, which events, fragment flags), clientv3
// reassembles them, a watcher that did not ask gets one response.
// Compared with the reference etcd.
func TestWatchFragment(t *testing.T) {
	differential(t, func(t *testing.T, s *server) []string {
		var tr []string
		log := func(format string, args ...any) { tr = append(tr, fmt.Sprintf(format, args...)) }
		cli := s.cli
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		big := func(c byte) string { return string(bytes.Repeat([]byte{c}, 1000*1000)) }

		rev0 := currentRev(t, cli)
		for i, c := range []byte("abc") {
			log("put f/%d (1 MB) -> rev %d", i+1, mustPut(t, cli, fmt.Sprintf("f/%d", i+1), big(c)))
		}

		// raw streams: fragmented and not
		newRaw := func(fragment bool, start int64) *rawWatch {
			st := rawStream(t, ctx, cli)
			err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
				Key: []byte("f/"), RangeEnd: []byte("f0"), PrevKv: true, Fragment: fragment, StartRevision: start}}})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			r, err := st.recv(opTimeout)
			if err != nil || !r.Created {
				t.Fatalf("create: %v %v", err, r)
			}
			return st
		}
		fragRaw := newRaw(true, 0)
		wholeRaw := newRaw(false, 0)
		cliFrag := cli.Watch(ctx, "f/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithFragment(), clientv3.WithCreatedNotify())
		cliWhole := cli.Watch(ctx, "f/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		for _, ch := range []clientv3.WatchChan{cliFrag, cliWhole} {
			if r, ok, _ := recvResp(ch, opTimeout); !ok || !r.Created {
				t.Fatalf("no created notification")
			}
		}

		tctx, tcancel := ctxTimeout(opTimeout)
		tr2, err := cli.Txn(tctx).Then(clientv3.OpPut("f/1", big('x')), clientv3.OpPut("f/2", big('y')),
			clientv3.OpPut("f/3", big('z'))).Commit()
		tcancel()
		if err != nil {
			t.Fatalf("txn of three 1 MB puts: %v", err)
		}
		log("txn of three 1 MB puts -> rev %d", tr2.Header.Revision)

		// readRaw reads messages until `events` events arrived; it returns the
		// transcript lines and the events in arrival order.
		readRaw := func(name string, st *rawWatch, events int) (lines, evs []string) {
			for len(evs) < events {
				r, err := st.recv(10 * time.Second)
				if err != nil {
					return append(lines, fmt.Sprintf("%s: %v", name, err)), evs
				}
				// (the message size is only logged: the header's member and
				// cluster ids differ in varint length between servers)
				t.Logf("%s: message of %d bytes, fragment=%v, %d events", name, r.Size(), r.Fragment, len(r.Events))
				lines = append(lines, fmt.Sprintf("%s: fragment=%v events=%d hdr=%d", name, r.Fragment, len(r.Events), r.Header.GetRevision()))
				for _, ev := range r.Events {
					lines = append(lines, fmt.Sprintf("%s:   %s", name, fmtEvent(ev)))
					evs = append(evs, fmtEvent(ev))
				}
				if !r.Fragment && len(evs) < events {
					lines = append(lines, fmt.Sprintf("%s: (a message without fragment=true ended a response before all %d events)", name, events))
				}
			}
			return lines, evs
		}
		for _, c := range []struct {
			name string
			st   *rawWatch
		}{{"raw fragment=true", fragRaw}, {"raw fragment=false", wholeRaw}} {
			lines, _ := readRaw(c.name, c.st, 3)
			tr = append(tr, lines...)
		}
		for _, c := range []struct {
			name string
			ch   clientv3.WatchChan
		}{{"clientv3 WithFragment", cliFrag}, {"clientv3 without", cliWhole}} {
			r, ok, _ := recvResp(c.ch, 10*time.Second)
			if !ok {
				log("%s: nothing", c.name)
				continue
			}
			for _, l := range fmtWatchResponse(r) {
				log("%s: %s", c.name, l)
			}
		}

		// A replay of the whole history (6 events, ~9 MB) with fragments: how
		// a catch-up is cut into responses is the server's choice, so only
		// the events (in order) are compared; the layout is logged.
		replay := newRaw(true, rev0+1)
		lines, evs := readRaw("raw replay fragment=true", replay, 6)
		t.Logf("replay layout:\n  %s", strings.Join(lines, "\n  "))
		for _, e := range evs {
			log("replay event: %s", e)
		}
		return tr
	}, fmt.Sprintf("--max-request-bytes=%d", maxRequestBytes))
}
