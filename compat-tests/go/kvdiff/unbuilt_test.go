package kvdiff

// This test is about rsetcd alone (it is not differential) and is EXPECTED
// TO CHANGE: it pins down that a service rsetcd has not built yet answers
// codes.Unimplemented with a message naming the method. It uses only Auth
// RPCs (read-only ones), Auth being scheduled last; Election and Lock, also
// planned late, are built already. When Auth is built, delete this test and
// add differential scenarios for Auth instead.

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rsetcd/compat-tests/internal/etcdproc"
)

func TestUnbuiltRPCsSayUnimplemented(t *testing.T) {
	bin := etcdproc.BinFromEnv(t)
	if filepath.Base(bin) == "etcd" {
		t.Skip("checks what rsetcd has not built yet; etcd serves these RPCs")
	}
	p := etcdproc.New(t, bin, memberName)
	if err := p.Start(startTimeout); err != nil {
		t.Fatal(err)
	}
	cli, err := newClient(p)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	auth := pb.NewAuthClient(cli.ActiveConnection())

	calls := []struct {
		method string // "Service/Method" as in the gRPC path
		call   func(ctx context.Context, opts ...grpc.CallOption) error
	}{
		{"etcdserverpb.Auth/AuthStatus", func(ctx context.Context, o ...grpc.CallOption) error {
			_, err := auth.AuthStatus(ctx, &pb.AuthStatusRequest{}, o...)
			return err
		}},
		{"etcdserverpb.Auth/UserList", func(ctx context.Context, o ...grpc.CallOption) error {
			_, err := auth.UserList(ctx, &pb.AuthUserListRequest{}, o...)
			return err
		}},
		{"etcdserverpb.Auth/RoleGet", func(ctx context.Context, o ...grpc.CallOption) error {
			_, err := auth.RoleGet(ctx, &pb.AuthRoleGetRequest{Role: "r"}, o...)
			return err
		}},
		{"etcdserverpb.Auth/RoleList", func(ctx context.Context, o ...grpc.CallOption) error {
			_, err := auth.RoleList(ctx, &pb.AuthRoleListRequest{}, o...)
			return err
		}},
		{"etcdserverpb.Auth/UserGet", func(ctx context.Context, o ...grpc.CallOption) error {
			_, err := auth.UserGet(ctx, &pb.AuthUserGetRequest{Name: "u"}, o...)
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.method, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := c.call(ctx)
			st, _ := status.FromError(err)
			if err == nil || st.Code() != codes.Unimplemented {
				t.Fatalf("%s: got %v, want codes.Unimplemented (if this RPC is built now, drop it from this test)", c.method, err)
			}
			if !strings.Contains(st.Message(), c.method) {
				t.Errorf("%s: message %q does not name the method %q", c.method, st.Message(), c.method)
			}
		})
	}
}
