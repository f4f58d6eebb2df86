// Package alarm checks the NOSPACE alarm of one member of the binary named by
// RSETCD_BIN: the backend quota (--quota-backend-bytes) raising it, what is
// refused and what still works while it is active, the alarm as
// Maintenance.AlarmList, Maintenance.Status and /health report it, and
// disarming it, by clientv3 and by raw Maintenance.Alarm requests. Every
// assertion is what etcd v3.6.16 answers.
package alarm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"rsetcd/compat-tests/internal/etcdproc"
)

const (
	startTimeout = 60 * time.Second
	opTimeout    = 10 * time.Second

	// quotaBytes is small enough that etcd's bbolt file (some tens of KiB
	// when fresh) reaches it after about 20 puts of valueSize.
	quotaBytes = 2 << 20
	valueSize  = 100 << 10
	// maxPuts bounds the puts made to reach the quota; minPuts is how many
	// must succeed first (5 x 100 KiB is far below 2 MiB).
	maxPuts = 40
	minPuts = 5
	// putPause separates those puts: etcd compares against the size its
	// backend had at its last batch commit (every 100 ms), so puts made in
	// a burst all pass; paced, etcd refuses one a few puts after the quota.
	putPause = 30 * time.Millisecond

	// noSpaceMsg is etcd's rpctypes.ErrGRPCNoSpace, sent with code
	// ResourceExhausted.
	noSpaceMsg = "etcdserver: mvcc: database space exceeded"
)

// member is one started server with a clientv3 client and a plain gRPC
// connection (which neither retries nor converts errors, so the server's own
// status code and message are seen).
type member struct {
	proc *etcdproc.Proc
	cli  *clientv3.Client
	conn *grpc.ClientConn
	id   uint64 // this member's ID, as its Status header reports it
}

// startMember starts a single member of $RSETCD_BIN with extraArgs.
func startMember(t *testing.T, extraArgs ...string) *member {
	t.Helper()
	bin := etcdproc.BinFromEnv(t)
	p := etcdproc.New(t, bin, "alarm")
	p.ExtraArgs = extraArgs
	start := time.Now()
	if err := p.Start(startTimeout); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Logf("%s ready in %v at %s (extra args %q)", bin, time.Since(start).Round(time.Millisecond), p.ClientURL, extraArgs)
	cli, err := p.Client()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	conn, err := grpc.NewClient(strings.TrimPrefix(p.ClientURL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	m := &member{proc: p, cli: cli, conn: conn}
	st, err := cli.Status(ctxT(t), p.ClientURL)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Header.MemberId == 0 {
		t.Fatalf("Status header member_id is 0")
	}
	m.id = st.Header.MemberId
	return m
}

// isRefEtcd reports whether the binary under test is named "etcd".
func (m *member) isRefEtcd() bool { return filepath.Base(m.proc.Bin) == "etcd" }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantNoSpace fails the test unless err is the gRPC status ResourceExhausted
// noSpaceMsg.
func wantNoSpace(t *testing.T, what string, err error) {
	t.Helper()
	st, ok := grpcstatus.FromError(err)
	if err == nil || !ok || st.Code() != codes.ResourceExhausted || st.Message() != noSpaceMsg {
		t.Errorf("%s: got %v (gRPC status %v), want code %v %q", what, err, st, codes.ResourceExhausted, noSpaceMsg)
	}
}

// rawPut puts key=value with a plain gRPC KV client.
func (m *member) rawPut(t *testing.T, key string, value []byte) (*pb.PutResponse, error) {
	return pb.NewKVClient(m.conn).Put(ctxT(t), &pb.PutRequest{Key: []byte(key), Value: value})
}

// wantAlarms fails the test unless alarms is exactly want (in order).
func wantAlarms(t *testing.T, what string, alarms []*pb.AlarmMember, want ...*pb.AlarmMember) {
	t.Helper()
	if len(alarms) != len(want) {
		t.Errorf("%s: alarms %v, want %v", what, alarms, want)
		return
	}
	for i := range want {
		if alarms[i].GetMemberID() != want[i].MemberID || alarms[i].GetAlarm() != want[i].Alarm {
			t.Errorf("%s: alarms %v, want %v", what, alarms, want)
			return
		}
	}
}

// alarmList returns the alarms clientv3 Maintenance.AlarmList reports.
func (m *member) alarmList(t *testing.T) []*pb.AlarmMember {
	t.Helper()
	resp, err := m.cli.AlarmList(ctxT(t))
	if err != nil {
		t.Fatalf("AlarmList: %v", err)
	}
	return resp.Alarms
}

// statusErrors returns Maintenance.Status's errors.
func (m *member) statusErrors(t *testing.T) []string {
	t.Helper()
	st, err := m.cli.Status(ctxT(t), m.proc.ClientURL)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return st.Errors
}

// wantHealth fails the test unless GET path on the client URL answers code
// with exactly body. etcd writes the JSON of a healthy answer as is and an
// unhealthy one through http.Error, which appends a newline.
func (m *member) wantHealth(t *testing.T, path string, code int, body string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, m.proc.ClientURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: reading body: %v", path, err)
		return
	}
	t.Logf("GET %s: %d %q", path, resp.StatusCode, got)
	if resp.StatusCode != code || string(got) != body {
		t.Errorf("GET %s: %d %q, want %d %q", path, resp.StatusCode, got, code, body)
	}
}

const (
	healthNoSpace = `{"health":"false","reason":"ALARM NOSPACE"}` + "\n"
	healthTrue    = `{"health":"true","reason":""}`
)

// TestNoSpaceQuota pins the NOSPACE alarm raised by the backend quota
// (--quota-backend-bytes=2MiB). Puts of 100 KiB values under distinct keys
// (30 ms apart) succeed at least 5 times, then one fails, within 40 puts, with
// ResourceExhausted "etcdserver: mvcc: database space exceeded". From then
// on: AlarmList lists exactly NOSPACE for this member; Status errors are
// exactly ["memberID:<decimal id> alarm:NOSPACE "]; a Put (raw and clientv3),
// a LeaseGrant, a Txn with a Put (in its success branch, or only in its
// failure branch that is not taken) fail with that error; a Txn deleting
// only, a Get and a DeleteRange work; /health answers 503
// {"health":"false","reason":"ALARM NOSPACE"} (plus a newline) and
// /health?exclude=NOSPACE 200 {"health":"true","reason":""}. After a physical compaction at the
// current revision and a Defragment (which must shrink the file),
// AlarmDisarm of the listed alarm answers that
// alarm, AlarmList and Status errors are empty, 100 KiB Puts work again
// and /health answers 200 {"health":"true","reason":""}.
func TestNoSpaceQuota(t *testing.T) {
	m := startMember(t, fmt.Sprintf("--quota-backend-bytes=%d", quotaBytes))
	value := bytes.Repeat([]byte("x"), valueSize)

	if st, err := m.cli.Status(ctxT(t), m.proc.ClientURL); err != nil {
		t.Fatalf("Status: %v", err)
	} else {
		t.Logf("fresh: db size %d, in use %d, quota %d", st.DbSize, st.DbSizeInUse, st.DbSizeQuota)
		if st.DbSizeQuota != quotaBytes {
			t.Errorf("Status db_size_quota %d, want %d", st.DbSizeQuota, quotaBytes)
		}
	}

	var putErr error
	n := 0
	for ; n < maxPuts; n++ {
		_, putErr = m.rawPut(t, fmt.Sprintf("big/%03d", n), value)
		if putErr != nil {
			break
		}
		time.Sleep(putPause)
	}
	if putErr == nil {
		t.Fatalf("%d puts of %d bytes with --quota-backend-bytes=%d all succeeded", maxPuts, valueSize, quotaBytes)
	}
	t.Logf("put #%d (big/%03d) failed: %v", n+1, n, putErr)
	wantNoSpace(t, fmt.Sprintf("put #%d", n+1), putErr)
	if n < minPuts {
		t.Errorf("only %d puts of %d bytes succeeded before %v, want at least %d", n, valueSize, putErr, minPuts)
	}
	if st, err := m.cli.Status(ctxT(t), m.proc.ClientURL); err == nil {
		t.Logf("at quota: db size %d, in use %d", st.DbSize, st.DbSizeInUse)
	}

	// The alarm as AlarmList and Status report it.
	alarms := m.alarmList(t)
	wantAlarms(t, "AlarmList after the quota is hit", alarms, &pb.AlarmMember{MemberID: m.id, Alarm: pb.AlarmType_NOSPACE})
	wantErrs := []string{fmt.Sprintf("memberID:%d alarm:NOSPACE ", m.id)}
	if errs := m.statusErrors(t); !reflect.DeepEqual(errs, wantErrs) {
		t.Errorf("Status errors %q, want %q", errs, wantErrs)
	}

	// What is refused.
	_, err := m.rawPut(t, "small", []byte("v"))
	wantNoSpace(t, "raw Put of a small value under the alarm", err)
	if _, err := m.cli.Put(ctxT(t), "small", "v"); err == nil || err.Error() != noSpaceMsg || err != rpctypes.ErrNoSpace {
		t.Errorf("clientv3 Put under the alarm: %v, want rpctypes.ErrNoSpace %q", err, noSpaceMsg)
	}
	_, err = pb.NewLeaseClient(m.conn).LeaseGrant(ctxT(t), &pb.LeaseGrantRequest{TTL: 60})
	wantNoSpace(t, "LeaseGrant under the alarm", err)
	kv := pb.NewKVClient(m.conn)
	_, err = kv.Txn(ctxT(t), &pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("small"), Value: []byte("v")}}},
	}})
	wantNoSpace(t, "Txn with a Put under the alarm", err)
	_, err = kv.Txn(ctxT(t), &pb.TxnRequest{
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("big/001")}}}},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("small"), Value: []byte("v")}}}},
	})
	wantNoSpace(t, "Txn (no compares) with a Put only in its failure branch under the alarm", err)

	// What still works.
	txn, err := kv.Txn(ctxT(t), &pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("big/000")}}},
	}})
	if err != nil {
		t.Errorf("Txn deleting big/000 under the alarm: %v", err)
	} else if !txn.Succeeded || len(txn.Responses) != 1 || txn.Responses[0].GetResponseDeleteRange().GetDeleted() != 1 {
		t.Errorf("Txn deleting big/000 under the alarm: %v, want succeeded with 1 deleted", txn)
	}
	if get, err := m.cli.Get(ctxT(t), "big/001"); err != nil {
		t.Errorf("Get big/001 under the alarm: %v", err)
	} else if len(get.Kvs) != 1 || !bytes.Equal(get.Kvs[0].Value, value) {
		t.Errorf("Get big/001 under the alarm: %d kvs, want its %d-byte value", len(get.Kvs), valueSize)
	}
	del, err := m.cli.Delete(ctxT(t), "big/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("DeleteRange big/ under the alarm: %v", err)
	}
	// The failed put may or may not have been applied (etcd refuses it
	// before raft unless the size moved in between); big/000 is gone.
	if del.Deleted < int64(n-1) || del.Deleted > int64(n) {
		t.Errorf("DeleteRange big/ under the alarm deleted %d, want %d (or %d)", del.Deleted, n-1, n)
	}
	if get, err := m.cli.Get(ctxT(t), "big/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || get.Count != 0 {
		t.Errorf("Get big/ after the DeleteRange: %v, %v; want count 0", get, err)
	}

	m.wantHealth(t, "/health", http.StatusServiceUnavailable, healthNoSpace)
	m.wantHealth(t, "/health?exclude=NOSPACE", http.StatusOK, healthTrue)

	// Reclaim the space, then disarm.
	if _, err := m.cli.Compact(ctxT(t), del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("Compact at %d under the alarm: %v", del.Header.Revision, err)
	}
	if st, err := m.cli.Status(ctxT(t), m.proc.ClientURL); err == nil {
		t.Logf("after compaction: db size %d, in use %d", st.DbSize, st.DbSizeInUse)
	}
	before, err := m.cli.Status(ctxT(t), m.proc.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.cli.Defragment(ctxT(t), m.proc.ClientURL); err != nil {
		t.Fatalf("Defragment under the alarm: %v", err)
	}
	after, err := m.cli.Status(ctxT(t), m.proc.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("defragment: db size %d -> %d, in use %d -> %d", before.DbSize, after.DbSize, before.DbSizeInUse, after.DbSizeInUse)
	if after.DbSize >= before.DbSize {
		t.Errorf("Defragment did not shrink the database file: %d -> %d bytes", before.DbSize, after.DbSize)
	}
	// The alarm stays until disarmed.
	_, err = m.rawPut(t, "small", []byte("v"))
	wantNoSpace(t, "raw Put after compaction, before disarming", err)

	if len(alarms) == 1 {
		dis, err := m.cli.AlarmDisarm(ctxT(t), (*clientv3.AlarmMember)(alarms[0]))
		if err != nil {
			t.Fatalf("AlarmDisarm %v: %v", alarms[0], err)
		}
		wantAlarms(t, "AlarmDisarm response", dis.Alarms, &pb.AlarmMember{MemberID: m.id, Alarm: pb.AlarmType_NOSPACE})
	} else {
		t.Fatalf("no single alarm listed to disarm: %v", alarms)
	}
	wantAlarms(t, "AlarmList after AlarmDisarm", m.alarmList(t))
	if errs := m.statusErrors(t); len(errs) != 0 {
		t.Errorf("Status errors after AlarmDisarm %q, want none", errs)
	}
	if _, err := m.cli.Put(ctxT(t), "small", "v"); err != nil {
		t.Errorf("Put after AlarmDisarm: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := m.rawPut(t, fmt.Sprintf("again/%d", i), value); err != nil {
			t.Errorf("Put of %d bytes #%d after AlarmDisarm: %v", valueSize, i+1, err)
		}
	}
	wantAlarms(t, "AlarmList after the puts that follow AlarmDisarm", m.alarmList(t))
	m.wantHealth(t, "/health", http.StatusOK, healthTrue)
}

// TestAlarmActivateByClient pins raw Maintenance.Alarm requests (no quota
// set). ACTIVATE NOSPACE for this member answers that alarm, after which
// Puts fail with ResourceExhausted "etcdserver: mvcc: database space
// exceeded" and GET lists it; ACTIVATE of an active alarm answers it again;
// DEACTIVATE answers the alarm and Puts work; DEACTIVATE of an inactive one
// answers no alarms. ACTIVATE NOSPACE for member ID 0 is accepted like any
// other ID (answered, listed, Puts refused) until deactivated. ACTIVATE of
// alarm NONE answers no alarms and activates nothing.
func TestAlarmActivateByClient(t *testing.T) {
	m := startMember(t)
	mc := pb.NewMaintenanceClient(m.conn)
	alarm := func(action pb.AlarmRequest_AlarmAction, id uint64, a pb.AlarmType) []*pb.AlarmMember {
		t.Helper()
		resp, err := mc.Alarm(ctxT(t), &pb.AlarmRequest{Action: action, MemberID: id, Alarm: a})
		if err != nil {
			t.Fatalf("Alarm %v member %d %v: %v", action, id, a, err)
		}
		if resp.Header.GetMemberId() != m.id {
			t.Errorf("Alarm %v member %d %v: header member_id %d, want %d", action, id, a, resp.Header.GetMemberId(), m.id)
		}
		t.Logf("Alarm %v member %d %v -> %v", action, id, a, resp.Alarms)
		return resp.Alarms
	}
	list := func() []*pb.AlarmMember {
		return alarm(pb.AlarmRequest_GET, 0, pb.AlarmType_NONE)
	}
	wantPutOK := func(what string) {
		t.Helper()
		if _, err := m.rawPut(t, "k", []byte("v")); err != nil {
			t.Errorf("Put %s: %v", what, err)
		}
	}
	wantPutNoSpace := func(what string) {
		t.Helper()
		_, err := m.rawPut(t, "k", []byte("v"))
		wantNoSpace(t, "Put "+what, err)
	}
	self := &pb.AlarmMember{MemberID: m.id, Alarm: pb.AlarmType_NOSPACE}
	zero := &pb.AlarmMember{MemberID: 0, Alarm: pb.AlarmType_NOSPACE}

	wantPutOK("before any alarm")
	wantAlarms(t, "GET before any alarm", list())

	wantAlarms(t, "ACTIVATE NOSPACE for this member", alarm(pb.AlarmRequest_ACTIVATE, m.id, pb.AlarmType_NOSPACE), self)
	wantPutNoSpace("after ACTIVATE NOSPACE")
	wantAlarms(t, "GET after ACTIVATE NOSPACE", list(), self)
	wantAlarms(t, "ACTIVATE NOSPACE again", alarm(pb.AlarmRequest_ACTIVATE, m.id, pb.AlarmType_NOSPACE), self)
	wantAlarms(t, "GET after ACTIVATE NOSPACE again", list(), self)
	wantAlarms(t, "DEACTIVATE NOSPACE", alarm(pb.AlarmRequest_DEACTIVATE, m.id, pb.AlarmType_NOSPACE), self)
	wantPutOK("after DEACTIVATE NOSPACE")
	wantAlarms(t, "GET after DEACTIVATE NOSPACE", list())
	wantAlarms(t, "DEACTIVATE NOSPACE again", alarm(pb.AlarmRequest_DEACTIVATE, m.id, pb.AlarmType_NOSPACE))

	wantAlarms(t, "ACTIVATE NOSPACE for member 0", alarm(pb.AlarmRequest_ACTIVATE, 0, pb.AlarmType_NOSPACE), zero)
	wantPutNoSpace("after ACTIVATE NOSPACE for member 0")
	wantAlarms(t, "GET after ACTIVATE NOSPACE for member 0", list(), zero)
	wantAlarms(t, "DEACTIVATE NOSPACE for member 0", alarm(pb.AlarmRequest_DEACTIVATE, 0, pb.AlarmType_NOSPACE), zero)
	wantPutOK("after DEACTIVATE NOSPACE for member 0")
	wantAlarms(t, "GET after DEACTIVATE NOSPACE for member 0", list())

	wantAlarms(t, "ACTIVATE NONE for this member", alarm(pb.AlarmRequest_ACTIVATE, m.id, pb.AlarmType_NONE))
	wantAlarms(t, "GET after ACTIVATE NONE", list())
	wantPutOK("after ACTIVATE NONE")
}
