package auth

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	epb "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	lpb "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"

	"rsetcd/compat-tests/internal/transcript"
)

// Every helper below is one recorded step: a raw etcdserverpb (or
// v3electionpb / v3lockpb) call made by who (see the caller constants in
// harness_test.go).

// summary renders a response whose fields differ between servers by nature
// (member IDs, URLs, hashes, sizes, versions): its type, its header and
// extra.
func summary(resp any, extra string) string {
	rv := reflect.ValueOf(resp)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "<nil response>"
		}
		rv = rv.Elem()
	}
	out := "ok " + rv.Type().Name() + "\n"
	if h := rv.FieldByName("Header"); h.IsValid() {
		if h.IsNil() {
			out += "  no header\n"
		} else {
			out += "  header " + strings.TrimPrefix(transcript.Render(h.Interface()), "ResponseHeader ")
		}
	}
	if extra != "" {
		out += "  " + extra + "\n"
	}
	return out
}

// ---- Auth ----

func (c *C) AuthStatus(who string) {
	c.call(who, "AuthStatus", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).AuthStatus(ctx, &pb.AuthStatusRequest{})
	})
}

func (c *C) AuthEnable(who string) {
	c.call(who, "AuthEnable", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).AuthEnable(ctx, &pb.AuthEnableRequest{})
	})
}

func (c *C) AuthDisable(who string) {
	c.call(who, "AuthDisable", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).AuthDisable(ctx, &pb.AuthDisableRequest{})
	})
}

func (c *C) UserAdd(who, name, password string) {
	c.call(who, fmt.Sprintf("UserAdd %q/%q", name, password), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserAdd(ctx, &pb.AuthUserAddRequest{Name: name, Password: password})
	})
}

// UserAddNoPassword adds name with Options{NoPassword: true} (and a password
// the server must ignore).
func (c *C) UserAddNoPassword(who, name, password string) {
	c.call(who, fmt.Sprintf("UserAdd %q/%q NoPassword", name, password), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserAdd(ctx, &pb.AuthUserAddRequest{Name: name, Password: password, Options: &authpb.UserAddOptions{NoPassword: true}})
	})
}

func (c *C) UserGet(who, name string) {
	c.call(who, fmt.Sprintf("UserGet %q", name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserGet(ctx, &pb.AuthUserGetRequest{Name: name})
	})
}

func (c *C) UserList(who string) {
	c.call(who, "UserList", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserList(ctx, &pb.AuthUserListRequest{})
	})
}

func (c *C) UserDelete(who, name string) {
	c.call(who, fmt.Sprintf("UserDelete %q", name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserDelete(ctx, &pb.AuthUserDeleteRequest{Name: name})
	})
}

func (c *C) UserChangePassword(who, name, password string) {
	c.call(who, fmt.Sprintf("UserChangePassword %q/%q", name, password), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserChangePassword(ctx, &pb.AuthUserChangePasswordRequest{Name: name, Password: password})
	})
}

func (c *C) UserGrantRole(who, user, role string) {
	c.call(who, fmt.Sprintf("UserGrantRole %q %q", user, role), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: user, Role: role})
	})
}

func (c *C) UserRevokeRole(who, user, role string) {
	c.call(who, fmt.Sprintf("UserRevokeRole %q %q", user, role), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).UserRevokeRole(ctx, &pb.AuthUserRevokeRoleRequest{Name: user, Role: role})
	})
}

func (c *C) RoleAdd(who, name string) {
	c.call(who, fmt.Sprintf("RoleAdd %q", name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: name})
	})
}

func (c *C) RoleGet(who, name string) {
	c.call(who, fmt.Sprintf("RoleGet %q", name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).RoleGet(ctx, &pb.AuthRoleGetRequest{Role: name})
	})
}

func (c *C) RoleList(who string) {
	c.call(who, "RoleList", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).RoleList(ctx, &pb.AuthRoleListRequest{})
	})
}

func (c *C) RoleDelete(who, name string) {
	c.call(who, fmt.Sprintf("RoleDelete %q", name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).RoleDelete(ctx, &pb.AuthRoleDeleteRequest{Role: name})
	})
}

// Grant grants role permission typ on [key, end) (end "" is the single key
// key, "\x00" everything from key on).
func (c *C) Grant(who, role string, typ authpb.Permission_Type, key, end string) {
	c.GrantReq(who, &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: &authpb.Permission{PermType: typ, Key: []byte(key), RangeEnd: []byte(end)}})
}

func (c *C) GrantReq(who string, r *pb.AuthRoleGrantPermissionRequest) {
	c.call(who, "RoleGrantPermission "+oneLine(r), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).RoleGrantPermission(ctx, r)
	})
}

func (c *C) Revoke(who, role, key, end string) {
	c.call(who, fmt.Sprintf("RoleRevokePermission %q [%q, %q)", role, key, end), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewAuthClient(cc).RoleRevokePermission(ctx, &pb.AuthRoleRevokePermissionRequest{Role: role, Key: []byte(key), RangeEnd: []byte(end)})
	})
}

// ---- KV ----

// V3Get is a clientv3 Get of key by the clientv3 client who (see V3).
func (c *C) V3Get(who, key string) {
	c.V3(who, "Get "+key, func(ctx context.Context, cli *clientv3.Client) (any, error) { return cli.Get(ctx, key) })
}

func (c *C) Get(who, key string) { c.Range(who, &pb.RangeRequest{Key: []byte(key)}) }

func (c *C) GetRange(who, key, end string) {
	c.Range(who, &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)})
}

func (c *C) Range(who string, r *pb.RangeRequest) {
	c.call(who, "Range "+oneLine(r), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewKVClient(cc).Range(ctx, r)
	})
}

func (c *C) Put(who, key, val string) {
	c.PutReq(who, &pb.PutRequest{Key: []byte(key), Value: []byte(val)})
}

func (c *C) PutReq(who string, r *pb.PutRequest) {
	c.call(who, "Put "+oneLine(r), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewKVClient(cc).Put(ctx, r)
	})
}

func (c *C) Del(who, key, end string) {
	c.DelReq(who, &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)})
}

func (c *C) DelReq(who string, r *pb.DeleteRangeRequest) {
	c.call(who, "DeleteRange "+oneLine(r), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewKVClient(cc).DeleteRange(ctx, r)
	})
}

func (c *C) Txn(who string, r *pb.TxnRequest) {
	c.call(who, "Txn", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewKVClient(cc).Txn(ctx, r)
	})
}

func (c *C) Compact(who string, rev int64) {
	c.call(who, fmt.Sprintf("Compact %d", rev), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewKVClient(cc).Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: true})
	})
}

func oneLine(m any) string {
	s := transcript.Render(m)
	s = s[strings.Index(s, " ")+1:]
	return strings.Join(strings.Fields(s), " ")
}

func opGet(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func opPut(key, val string) *pb.RequestOp {
	return opPutReq(&pb.PutRequest{Key: []byte(key), Value: []byte(val)})
}

func opPutReq(r *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: r}}
}

func opDel(key, end string, prevKV bool) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end), PrevKv: prevKV}}}
}

func opTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

// cmpVersion compares the version of key (range [key, end)) with v.
func cmpVersion(key, end string, r pb.Compare_CompareResult, v int64) *pb.Compare {
	return &pb.Compare{Target: pb.Compare_VERSION, Result: r, Key: []byte(key), RangeEnd: []byte(end), TargetUnion: &pb.Compare_Version{Version: v}}
}

// ---- Lease ----

func (c *C) LeaseGrant(who string, id, ttl int64) {
	c.call(who, fmt.Sprintf("LeaseGrant id=%d ttl=%d", id, ttl), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewLeaseClient(cc).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	})
}

func (c *C) LeaseRevoke(who string, id int64) {
	c.call(who, fmt.Sprintf("LeaseRevoke id=%d", id), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewLeaseClient(cc).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
	})
}

// LeaseTTL records a LeaseTimeToLive answer with the remaining TTL replaced
// by whether it lies within [granted-10, granted] (it depends on time).
func (c *C) LeaseTTL(who string, id int64, keys bool) {
	c.call(who, fmt.Sprintf("LeaseTimeToLive id=%d keys=%v", id, keys), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewLeaseClient(cc).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id, Keys: keys})
		if err != nil {
			return nil, err
		}
		if r.GrantedTTL == 0 { // not found: TTL -1
			return r, nil
		}
		ttl := r.TTL
		r.TTL = 0
		return fmt.Sprintf("%sremaining ttl in [granted-10, granted]: %v\n", transcript.Render(r), ttl <= r.GrantedTTL && ttl >= r.GrantedTTL-10), nil
	})
}

func (c *C) LeaseLeases(who string) {
	c.call(who, "LeaseLeases", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewLeaseClient(cc).LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
		if err == nil {
			sortLeases(r)
		}
		return r, err
	})
}

// KeepAliveOnce sends one LeaseKeepAliveRequest on a new stream and records
// the first answer (or the error that ended the stream).
func (c *C) KeepAliveOnce(who string, id int64) {
	c.call(who, fmt.Sprintf("LeaseKeepAlive stream, id=%d", id), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := pb.NewLeaseClient(cc).LeaseKeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil && err != io.EOF {
			return nil, err
		}
		return st.Recv()
	})
}

// ---- Watch ----

// watchStream is one raw Watch stream; a goroutine receives everything.
type watchStream struct {
	c      *C
	who    string
	st     pb.Watch_WatchClient
	cancel context.CancelFunc
	recv   chan any // *pb.WatchResponse or error
	err    error    // opening failed
}

// OpenWatch opens a raw Watch stream as who (nothing is recorded: the
// server answers only once a request is sent).
func (c *C) OpenWatch(who string) *watchStream {
	w := &watchStream{c: c, who: who, recv: make(chan any, 100)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	w.cancel = cancel
	ctx, cc, err := c.caller(ctx, who)
	if err != nil {
		w.err = err
		return w
	}
	w.st, w.err = pb.NewWatchClient(cc).Watch(ctx)
	if w.err == nil {
		go func() {
			for {
				r, err := w.st.Recv()
				if err != nil {
					w.recv <- err
					return
				}
				w.recv <- r
			}
		}()
	}
	return w
}

// Create sends a create request and records the next message.
func (w *watchStream) Create(r *pb.WatchCreateRequest) {
	w.do("create "+oneLine(r), 5*time.Second, func() error {
		return w.st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}})
	})
}

// Next records the next message, or that none came within d.
func (w *watchStream) Next(d time.Duration) {
	w.do(fmt.Sprintf("next message (within %v)", d), d, nil)
}

func (w *watchStream) do(op string, d time.Duration, send func() error) {
	w.c.record(fmt.Sprintf("[%s] Watch stream: %s", w.who, op), output(w.exchange(d, send)))
}

func (w *watchStream) exchange(d time.Duration, send func() error) (any, error) {
	if w.err != nil {
		if _, ok := w.err.(errSkip); ok {
			return "skipped: " + w.err.Error(), nil
		}
		return nil, w.err
	}
	if send != nil {
		if err := send(); err != nil {
			return nil, err
		}
	}
	select {
	case m := <-w.recv:
		if err, ok := m.(error); ok {
			w.recv <- err // the stream stays ended
			return nil, err
		}
		return m, nil
	case <-time.After(d):
		return fmt.Sprintf("no message within %v\n", d), nil
	}
}

func (w *watchStream) Close() { w.cancel() }

// ---- Maintenance ----

func (c *C) Status(who string) {
	c.call(who, "Status", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewMaintenanceClient(cc).Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return nil, err
		}
		return summary(r, fmt.Sprintf("errors=%q", r.Errors)), nil
	})
}

func (c *C) Defragment(who string) {
	c.call(who, "Defragment", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewMaintenanceClient(cc).Defragment(ctx, &pb.DefragmentRequest{})
		if err != nil {
			return nil, err
		}
		return summary(r, ""), nil
	})
}

func (c *C) Hash(who string) {
	c.call(who, "Hash", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewMaintenanceClient(cc).Hash(ctx, &pb.HashRequest{})
		if err != nil {
			return nil, err
		}
		return summary(r, ""), nil
	})
}

func (c *C) HashKV(who string) {
	c.call(who, "HashKV", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewMaintenanceClient(cc).HashKV(ctx, &pb.HashKVRequest{})
		if err != nil {
			return nil, err
		}
		return summary(r, fmt.Sprintf("compact_revision=%d", r.CompactRevision)), nil
	})
}

func (c *C) MoveLeader(who string, target uint64) {
	c.call(who, fmt.Sprintf("MoveLeader target=%d", target), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewMaintenanceClient(cc).MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: target})
	})
}

// Snapshot opens a Snapshot stream and records whether a first chunk came.
func (c *C) Snapshot(who string) {
	c.call(who, "Snapshot", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := pb.NewMaintenanceClient(cc).Snapshot(ctx, &pb.SnapshotRequest{})
		if err != nil {
			return nil, err
		}
		r, err := st.Recv()
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("ok: a first chunk, blob not empty: %v\n", len(r.Blob) > 0), nil
	})
}

func (c *C) Alarm(who string, action pb.AlarmRequest_AlarmAction, member uint64, alarm pb.AlarmType) {
	c.call(who, fmt.Sprintf("Alarm %v member=%d %v", action, member, alarm), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return pb.NewMaintenanceClient(cc).Alarm(ctx, &pb.AlarmRequest{Action: action, MemberID: member, Alarm: alarm})
	})
}

func (c *C) Downgrade(who string, action pb.DowngradeRequest_DowngradeAction, version string) {
	c.call(who, fmt.Sprintf("Downgrade %v %q", action, version), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewMaintenanceClient(cc).Downgrade(ctx, &pb.DowngradeRequest{Action: action, Version: version})
		if err != nil {
			return nil, err
		}
		return summary(r, ""), nil
	})
}

// ---- Cluster ----

func (c *C) MemberList(who string, linearizable bool) {
	c.call(who, fmt.Sprintf("MemberList linearizable=%v", linearizable), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewClusterClient(cc).MemberList(ctx, &pb.MemberListRequest{Linearizable: linearizable})
		if err != nil {
			return nil, err
		}
		return summary(r, fmt.Sprintf("members=%d", len(r.Members))), nil
	})
}

// PeerURL is this server's own peer URL (to be refused as a new member's).
func (c *C) PeerURL() string { return c.s.proc.PeerURL }

func (c *C) MemberAdd(who string, urls []string, learner bool) {
	c.call(who, fmt.Sprintf("MemberAdd urls=%d learner=%v", len(urls), learner), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewClusterClient(cc).MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: urls, IsLearner: learner})
		if err != nil {
			return nil, err
		}
		return summary(r, fmt.Sprintf("members=%d", len(r.Members))), nil
	})
}

func (c *C) MemberRemove(who string, id uint64) {
	c.call(who, fmt.Sprintf("MemberRemove %d", id), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewClusterClient(cc).MemberRemove(ctx, &pb.MemberRemoveRequest{ID: id})
		if err != nil {
			return nil, err
		}
		return summary(r, fmt.Sprintf("members=%d", len(r.Members))), nil
	})
}

func (c *C) MemberUpdate(who string, id uint64, urls []string) {
	c.call(who, fmt.Sprintf("MemberUpdate %d", id), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewClusterClient(cc).MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: id, PeerURLs: urls})
		if err != nil {
			return nil, err
		}
		return summary(r, fmt.Sprintf("members=%d", len(r.Members))), nil
	})
}

func (c *C) MemberPromote(who string, id uint64) {
	c.call(who, fmt.Sprintf("MemberPromote %d", id), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewClusterClient(cc).MemberPromote(ctx, &pb.MemberPromoteRequest{ID: id})
		if err != nil {
			return nil, err
		}
		return summary(r, fmt.Sprintf("members=%d", len(r.Members))), nil
	})
}

// ---- Election and Lock ----

type leaderKey = epb.LeaderKey

// Campaign campaigns for name with lease and keeps the leader key for
// Resign.
func (c *C) Campaign(who, name string, lease int64, value string) {
	c.call(who, fmt.Sprintf("Campaign %q lease=%d value=%q", name, lease, value), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := epb.NewElectionClient(cc).Campaign(ctx, &epb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte(value)})
		if err == nil && r.Leader != nil {
			c.leaders[name] = r.Leader
		}
		return r, err
	})
}

func (c *C) Leader(who, name string) {
	c.call(who, fmt.Sprintf("Leader %q", name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return epb.NewElectionClient(cc).Leader(ctx, &epb.LeaderRequest{Name: []byte(name)})
	})
}

// Resign resigns the leadership Campaign won for name (an empty leader key
// when it did not).
func (c *C) Resign(who, name string) {
	k := c.leaders[name]
	if k == nil {
		k = &epb.LeaderKey{Name: []byte(name)}
	}
	c.call(who, fmt.Sprintf("Resign %q", name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return epb.NewElectionClient(cc).Resign(ctx, &epb.ResignRequest{Leader: k})
	})
}

func (c *C) Lock(who, name string, lease int64) {
	c.call(who, fmt.Sprintf("Lock %q lease=%d", name, lease), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return lpb.NewLockClient(cc).Lock(ctx, &lpb.LockRequest{Name: []byte(name), Lease: lease})
	})
}

func (c *C) Unlock(who, key string) {
	c.call(who, fmt.Sprintf("Unlock %q", key), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		return lpb.NewLockClient(cc).Unlock(ctx, &lpb.UnlockRequest{Key: []byte(key)})
	})
}
