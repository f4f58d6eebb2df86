package recipes

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"rsetcd/compat-tests/internal/etcdproc"
)

const (
	memberName   = "recipes" // both servers get the same member name
	startTimeout = 60 * time.Second
	// opTimeout bounds single calls that are not expected to block; it
	// only keeps a broken server from hanging the test.
	opTimeout = 20 * time.Second
)

// server is one started single-member server with a clientv3 client and
// the recipe service stubs over a plain gRPC connection.
type server struct {
	label string // "rsetcd" or "etcd"
	proc  *etcdproc.Proc
	quiet *quietTB
	cli   *clientv3.Client
	conn  *grpc.ClientConn
	el    v3electionpb.ElectionClient
	lk    v3lockpb.LockClient
	lease pb.LeaseClient
}

// quietTB is the testing.TB given to etcdproc: a failed differential test
// does not need 60 lines of each server's log unless the server failed to
// start or died.
type quietTB struct {
	testing.TB
	loud atomic.Bool
}

func (q *quietTB) Failed() bool { return q.loud.Load() && q.TB.Failed() }

// newServer prepares a member (not started) whose process is killed when t
// ends.
func newServer(t testing.TB, label, bin string, quiet bool) *server {
	q := &quietTB{TB: t}
	q.loud.Store(!quiet)
	return &server{label: label, quiet: q, proc: etcdproc.New(q, bin, memberName)}
}

// start starts the process and connects the clients.
func (s *server) start() error {
	if err := s.proc.Start(startTimeout); err != nil {
		s.quiet.loud.Store(true)
		return fmt.Errorf("starting %s (%s): %w", s.label, s.proc.Bin, err)
	}
	cli, err := s.proc.Client()
	if err != nil {
		return fmt.Errorf("%s: clientv3: %w", s.label, err)
	}
	s.cli = cli
	conn, err := dial(s)
	if err != nil {
		return err
	}
	s.conn = conn
	s.el = v3electionpb.NewElectionClient(conn)
	s.lk = v3lockpb.NewLockClient(conn)
	s.lease = pb.NewLeaseClient(conn)
	s.quiet.Cleanup(func() {
		s.conn.Close()
		s.cli.Close()
		if !s.proc.Running() {
			s.quiet.loud.Store(true) // it died during the test
		}
	})
	return nil
}

// dial opens a new plain gRPC connection to s (no clientv3 interceptors, so
// errors are exactly what the server sent).
func dial(s *server) (*grpc.ClientConn, error) {
	target := strings.TrimPrefix(s.proc.ClientURL, "http://")
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("%s: grpc dial %s: %w", s.label, target, err)
	}
	return conn, nil
}

// newClient returns another clientv3 client of s, closed when t ends.
func (s *server) newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := s.proc.Client()
	if err != nil {
		t.Fatalf("%s: new client: %v", s.label, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// refBin returns the reference etcd or fails saying how to get one.
func refBin(t testing.TB) string {
	t.Helper()
	bin, err := etcdproc.RefBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startPair starts a fresh rsetcd and a fresh reference etcd concurrently.
func startPair(t *testing.T) (sut, ref *server) {
	t.Helper()
	sutBin := etcdproc.BinFromEnv(t)
	refPath := refBin(t)
	sut = newServer(t, "rsetcd", sutBin, true)
	ref = newServer(t, "etcd", refPath, true)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*server{sut, ref} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.start()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return sut, ref
}

// forEachServer runs fn as two parallel subtests, "rsetcd" against
// $RSETCD_BIN and "etcd" against the reference etcd (a check of the test
// itself), each with its own fresh server. The test skips when $RSETCD_BIN
// is unset; only the etcd subtest skips when the reference is missing.
func forEachServer(t *testing.T, fn func(t *testing.T, s *server)) {
	t.Helper()
	sutBin := etcdproc.BinFromEnv(t)
	ref, refErr := etcdproc.RefBin()
	t.Parallel()
	for _, tc := range []struct{ name, bin string }{{"rsetcd", sutBin}, {"etcd", ref}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.bin == "" {
				t.Skipf("no reference etcd to check this test against: %v", refErr)
			}
			s := newServer(t, tc.name, tc.bin, false)
			if err := s.start(); err != nil {
				t.Fatal(err)
			}
			fn(t, s)
		})
	}
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// grantID grants a lease with a chosen ID (so that both servers of a
// differential test have the same keys) or fails the test.
func grantID(t testing.TB, s *server, id, ttl int64) {
	t.Helper()
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	resp, err := s.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	if err != nil {
		t.Fatalf("%s: LeaseGrant id=%x ttl=%d: %v", s.label, id, ttl, err)
	}
	if resp.Error != "" || resp.ID != id {
		t.Fatalf("%s: LeaseGrant id=%x ttl=%d: got id=%x error=%q", s.label, id, ttl, resp.ID, resp.Error)
	}
}

// grant grants a lease with a server-chosen ID.
func grant(t testing.TB, s *server, ttl int64) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	resp, err := s.cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatalf("%s: Grant ttl=%d: %v", s.label, ttl, err)
	}
	return resp.ID
}

// lockKey is the key the lock (or election) recipe creates for a lease.
func lockKey(name string, lease int64) string { return fmt.Sprintf("%s/%x", name, lease) }

// waitKey polls until key exists (present) or is gone (!present), up to d.
// It reports whether that state was reached.
func waitKey(cli *clientv3.Client, key string, present bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := ctxTimeout(opTimeout)
		resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
		cancel()
		if err == nil && (resp.Count > 0) == present {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- rendering ----

// render turns a gogo-generated response into one stable line: fields by
// protobuf name, proto3 zero scalars omitted, []byte quoted. In a
// ResponseHeader a non-zero cluster_id, member_id or raft_term prints as
// "<set>" (every server has its own IDs and term).
func render(v any) string {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || (rv.Kind() == reflect.Pointer && rv.IsNil()) {
		return "<nil response>"
	}
	var b strings.Builder
	b.WriteString(reflect.Indirect(rv).Type().Name())
	writeValue(&b, rv)
	return b.String()
}

var headerType = reflect.TypeOf(pb.ResponseHeader{})

var headerOpaque = map[string]bool{"cluster_id": true, "member_id": true, "raft_term": true}

func protoName(f reflect.StructField) string {
	if strings.HasPrefix(f.Name, "XXX_") {
		return ""
	}
	for _, part := range strings.Split(f.Tag.Get("protobuf"), ",") {
		if name, ok := strings.CutPrefix(part, "name="); ok {
			return name
		}
	}
	return ""
}

func writeValue(b *strings.Builder, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			b.WriteString("<nil>")
			return
		}
		writeValue(b, v.Elem())
	case reflect.Struct:
		t := v.Type()
		b.WriteString("{")
		first := true
		for i := 0; i < t.NumField(); i++ {
			name := protoName(t.Field(i))
			fv := v.Field(i)
			if name == "" || fv.IsZero() {
				continue
			}
			if fv.Kind() == reflect.Slice && fv.Len() == 0 {
				continue
			}
			if !first {
				b.WriteString(" ")
			}
			first = false
			b.WriteString(name + ":")
			if t == headerType && headerOpaque[name] {
				b.WriteString("<set>")
				continue
			}
			writeValue(b, fv)
		}
		b.WriteString("}")
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b.WriteString(strconv.Quote(string(v.Bytes())))
			return
		}
		b.WriteString("[")
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				b.WriteString(" ")
			}
			writeValue(b, v.Index(i))
		}
		b.WriteString("]")
	case reflect.String:
		b.WriteString(strconv.Quote(v.String()))
	default:
		if s, ok := v.Interface().(fmt.Stringer); ok && v.Kind() == reflect.Int32 {
			b.WriteString(s.String())
			return
		}
		fmt.Fprintf(b, "%v", v.Interface())
	}
}

// renderErr keeps what a client sees of an error: gRPC code and message.
func renderErr(err error) string {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return fmt.Sprintf("error code=%s msg=%q", ee.Code(), ee.Error())
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("error code=%s msg=%q", st.Code(), st.Message())
	}
	return fmt.Sprintf("error (not a gRPC status) %q", err.Error())
}
