package kvdiff

// This test is about rsetcd alone (it is not differential): an RPC rsetcd
// does not build answers codes.Unimplemented with a message naming the
// method. Maintenance.Downgrade is the one left (README says so). When it is
// built, replace this test with differential Downgrade scenarios.

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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
	maintenance := pb.NewMaintenanceClient(cli.ActiveConnection())

	const method = "etcdserverpb.Maintenance/Downgrade"
	for _, action := range []pb.DowngradeRequest_DowngradeAction{
		pb.DowngradeRequest_VALIDATE, pb.DowngradeRequest_ENABLE, pb.DowngradeRequest_CANCEL,
	} {
		t.Run(action.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := maintenance.Downgrade(ctx, &pb.DowngradeRequest{Action: action, Version: "3.5"})
			st, _ := status.FromError(err)
			if err == nil || st.Code() != codes.Unimplemented {
				t.Fatalf("%s: got %v, want codes.Unimplemented (if this RPC is built now, drop it from this test)", method, err)
			}
			if !strings.Contains(st.Message(), method) {
				t.Errorf("%s: message %q does not name the method", method, st.Message())
			}
		})
	}
}
