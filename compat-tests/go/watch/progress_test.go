package watch

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// rawWatch is a raw Watch stream on a clientv3 connection. Responses are
// received by one goroutine that reads a message only when recv asks for
// one (at most one message ahead), so a stream nobody reads stays unread.
type rawWatch struct {
	pb.Watch_WatchClient
	ctx  context.Context
	ch   chan rawResult
	once sync.Once
}

type rawResult struct {
	r   *pb.WatchResponse
	err error
}

// rawStream opens a raw Watch stream on cli's connection.
func rawStream(t testing.TB, ctx context.Context, cli *clientv3.Client) *rawWatch {
	t.Helper()
	// (clientv3 sets its unlimited receive size per call, not on the
	// connection: without this, grpc-go's 4 MiB default applies)
	st, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(ctx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		t.Fatalf("opening a watch stream: %v", err)
	}
	return &rawWatch{Watch_WatchClient: st, ctx: ctx, ch: make(chan rawResult)}
}

// recv returns the next response, or an error when none arrives within d
// (a later recv still gets it).
func (w *rawWatch) recv(d time.Duration) (*pb.WatchResponse, error) {
	w.once.Do(func() {
		go func() {
			for {
				r, err := w.Recv()
				select {
				case w.ch <- rawResult{r, err}:
				case <-w.ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	})
	select {
	case x := <-w.ch:
		return x.r, x.err
	case <-time.After(d):
		return nil, fmt.Errorf("no response within %v", d)
	}
}

// fmtRaw renders a raw WatchResponse without cluster/member id and term.
func fmtRaw(r *pb.WatchResponse) []string {
	out := []string{fmt.Sprintf("raw rev=%d id=%d created=%v canceled=%v compact=%d reason=%q fragment=%v events=%d",
		r.Header.GetRevision(), r.WatchId, r.Created, r.Canceled, r.CompactRevision, r.CancelReason, r.Fragment, len(r.Events))}
	for _, ev := range r.Events {
		out = append(out, "  "+fmtEvent(ev))
	}
	return out
}

// TestWatchRequestProgress: a progress request on a stream whose watchers
// are all synced yields one empty response at the current revision
// (clientv3: IsProgressNotify on every watcher of the stream; raw: watch_id
// -1), compared with the reference etcd.
func TestWatchRequestProgress(t *testing.T) {
	differential(t, func(t *testing.T, s *server) []string {
		var tr []string
		log := func(format string, args ...any) { tr = append(tr, fmt.Sprintf(format, args...)) }
		cli := s.cli
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		for i := 0; i < 5; i++ {
			mustPut(t, cli, fmt.Sprintf("other/%d", i), "x")
		}
		w1 := cli.Watch(ctx, "p/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		w2 := cli.Watch(ctx, "q", clientv3.WithCreatedNotify())
		for _, w := range []clientv3.WatchChan{w1, w2} {
			r, ok, _ := recvResp(w, opTimeout)
			if !ok {
				t.Fatal("no created notification")
			}
			log("created: %v", fmtWatchResponse(r))
		}
		log("put p/1 -> rev %d", mustPut(t, cli, "p/1", "a"))
		log("put zzz -> rev %d", mustPut(t, cli, "zzz", "outside"))
		r, _, _ := recvResp(w1, opTimeout)
		log("w1: %v", fmtWatchResponse(r))

		rctx, rcancel := ctxTimeout(opTimeout)
		err := cli.RequestProgress(rctx)
		rcancel()
		log("RequestProgress: %s (current rev %d)", errString(err), currentRev(t, cli))
		for i, w := range []clientv3.WatchChan{w1, w2} {
			r, ok, _ := recvResp(w, 5*time.Second)
			if !ok {
				log("w%d: no progress notify within 5s", i+1)
				continue
			}
			log("w%d: %v", i+1, fmtWatchResponse(r))
		}
		log("put other -> rev %d", mustPut(t, cli, "other/x", "y"))
		rctx, rcancel = ctxTimeout(opTimeout)
		err = cli.RequestProgress(rctx)
		rcancel()
		log("RequestProgress again: %s", errString(err))
		for i, w := range []clientv3.WatchChan{w1, w2} {
			r, ok, _ := recvResp(w, 5*time.Second)
			if !ok {
				log("w%d: no progress notify within 5s", i+1)
				continue
			}
			log("w%d: %v", i+1, fmtWatchResponse(r))
		}

		// Raw stream: the reply carries watch_id -1.
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		st := rawStream(t, sctx, cli)
		send := func(req *pb.WatchRequest) {
			if err := st.Send(req); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		progress := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
		send(progress)
		if r, err := st.recv(700 * time.Millisecond); err != nil {
			log("raw, no watchers, progress: %v", err)
		} else {
			log("raw, no watchers, progress: %v", fmtRaw(r))
		}
		send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte("p/"), RangeEnd: []byte("p0")}}})
		r2, err := st.recv(opTimeout)
		if err != nil {
			t.Fatalf("raw create: %v", err)
		}
		log("raw create: %v", fmtRaw(r2))
		send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte("q"), StartRevision: 2}}})
		r2, err = st.recv(opTimeout)
		if err != nil {
			t.Fatalf("raw create 2: %v", err)
		}
		log("raw create 2 (start 2, no events for q): %v", fmtRaw(r2))
		time.Sleep(300 * time.Millisecond) // let the second watcher catch up (nothing to send)
		send(progress)
		r2, err = st.recv(5 * time.Second)
		if err != nil {
			log("raw progress: %v", err)
		} else {
			log("raw progress: %v", fmtRaw(r2))
		}
		log("put p/2 -> rev %d", mustPut(t, cli, "p/2", "b"))
		r2, err = st.recv(5 * time.Second)
		if err != nil {
			log("raw event: %v", err)
		} else {
			log("raw event: %v", fmtRaw(r2))
		}
		send(progress)
		r2, err = st.recv(5 * time.Second)
		if err != nil {
			log("raw progress: %v", err)
		} else {
			log("raw progress: %v", fmtRaw(r2))
		}
		// cancel one watcher, unknown ids are ignored
		send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 1}}})
		r2, err = st.recv(5 * time.Second)
		if err != nil {
			log("raw cancel 1: %v", err)
		} else {
			log("raw cancel 1: %v", fmtRaw(r2))
		}
		send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 42}}})
		send(progress)
		r2, err = st.recv(5 * time.Second)
		if err != nil {
			log("raw cancel 42 + progress: %v", err)
		} else {
			log("raw cancel 42 + progress: %v", fmtRaw(r2))
		}
		// A watcher whose start revision is in the future is not "synced"
		// for progress purposes: no reply until the store reaches it.
		cur := currentRev(t, cli)
		send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte("fut"), StartRevision: cur + 3}}})
		r2, err = st.recv(opTimeout)
		if err != nil {
			t.Fatalf("raw create future: %v", err)
		}
		log("raw create future (start current+3): %v", fmtRaw(r2))
		send(progress)
		r2, err = st.recv(700 * time.Millisecond)
		if err != nil {
			log("raw progress with a future watcher: %v", err)
			return tr
		}
		log("raw progress with a future watcher: %v", fmtRaw(r2))
		return tr
	})
}

// TestWatchProgressNotifyInterval: a WithProgressNotify watch on a server
// started with --experimental-watch-progress-notify-interval=200ms gets
// progress notifies at the current revision while idle.
func TestWatchProgressNotifyInterval(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *server) {
		cli := s.cli
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := cli.Watch(ctx, "pn/", clientv3.WithPrefix(), clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
		if r, ok, _ := recvResp(w, opTimeout); !ok || !r.Created {
			t.Fatalf("no created notification: %v", fmtWatchResponse(r))
		}
		mustPut(t, cli, "pn/a", "1")
		rev := mustPut(t, cli, "elsewhere", "2")
		var events, notifies, wrongRev int
		var lastNotify int64
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			r, ok, closed := recvResp(w, time.Until(deadline))
			if closed {
				t.Fatal("watch channel closed")
			}
			if !ok {
				break
			}
			if err := r.Err(); err != nil {
				t.Fatalf("watch error: %s", errString(err))
			}
			switch {
			case len(r.Events) > 0:
				events += len(r.Events)
			case r.IsProgressNotify():
				notifies++
				lastNotify = r.Header.Revision
				if r.Header.Revision != rev {
					wrongRev++
				}
			default:
				t.Errorf("unexpected response: %v", fmtWatchResponse(r))
			}
		}
		t.Logf("in 2 s: %d events, %d progress notifies (last at revision %d, current %d)", events, notifies, lastNotify, rev)
		if events != 1 {
			t.Errorf("expected 1 event (pn/a), got %d", events)
		}
		if notifies < 2 || notifies > 20 {
			t.Errorf("expected about 2 s / 200 ms = 10 progress notifies (at least 2, at most 20), got %d", notifies)
		}
		if wrongRev > 0 {
			t.Errorf("%d progress notifies did not carry the current revision %d (last: %d)", wrongRev, rev, lastNotify)
		}
	}, "--experimental-watch-progress-notify-interval=200ms")
}
