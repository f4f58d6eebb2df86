// Package wire holds helpers shared by the client test packages for rendering what a client
// observed, so that transcripts from rsetcd and from etcd can be compared as text.
package wire

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"
)

// ErrString renders an error the way clients tell errors apart: gRPC code and message.
// nil is "ok".
func ErrString(err error) string {
	if err == nil {
		return "ok"
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return fmt.Sprintf("error(%s, %q)", ee.Code(), ee.Error())
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("error(%s, %q)", s.Code(), s.Message())
	}
	return fmt.Sprintf("error(%q)", err.Error())
}
