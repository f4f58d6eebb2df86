package tls

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"
)

// render turns a gogo-generated response into a stable, readable text:
// one field per line, named by its protobuf name, nested messages indented.
// Proto3 zero scalars are omitted (they are not on the wire), but a present
// empty message ("prev_kv {}") is kept apart from an absent one.
//
// Normalization: in a ResponseHeader, non-zero cluster_id, member_id and
// raft_term print as "<set>", because every server has its own IDs and term,
// and so does the token of an AuthenticateResponse; a zero one still prints
// nothing, so set-versus-unset is compared. (Copied from auth/ at the time, which copied it from kvdiff.)
func render(v any) string {
	var b strings.Builder
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || (rv.Kind() == reflect.Pointer && rv.IsNil()) {
		return "<nil response>"
	}
	for rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return fmt.Sprintf("%v", v)
	}
	b.WriteString(rv.Type().Name())
	b.WriteString(" ")
	writeStruct(&b, rv, 0)
	return b.String()
}

var (
	headerType       = reflect.TypeOf(pb.ResponseHeader{})
	authenticateType = reflect.TypeOf(pb.AuthenticateResponse{})
)

// Fields of a ResponseHeader whose value is not compared (see render).
var headerOpaque = map[string]bool{"cluster_id": true, "member_id": true, "raft_term": true}

// protoName is the protobuf field name from a gogo struct tag, or "" for
// fields that are not part of the message (XXX_*).
func protoName(f reflect.StructField) string {
	if strings.HasPrefix(f.Name, "XXX_") {
		return ""
	}
	if name := f.Tag.Get("protobuf_oneof"); name != "" {
		return name
	}
	for _, part := range strings.Split(f.Tag.Get("protobuf"), ",") {
		if name, ok := strings.CutPrefix(part, "name="); ok {
			return name
		}
	}
	return ""
}

func writeStruct(b *strings.Builder, rv reflect.Value, depth int) {
	var body strings.Builder
	t := rv.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := protoName(f)
		if name == "" {
			continue
		}
		fv := rv.Field(i)
		if t == headerType && headerOpaque[name] && !fv.IsZero() {
			writeLine(&body, depth+1, name+": <set>")
			continue
		}
		if t == authenticateType && name == "token" && !fv.IsZero() {
			// Tokens are random (simple tokens) or signed with the
			// server's own key: only set-versus-unset is compared.
			writeLine(&body, depth+1, name+": <set>")
			continue
		}
		writeField(&body, depth+1, name, fv)
	}
	if body.Len() == 0 {
		b.WriteString("{}\n")
		return
	}
	b.WriteString("{\n")
	b.WriteString(body.String())
	b.WriteString(strings.Repeat("  ", depth))
	b.WriteString("}\n")
}

func writeLine(b *strings.Builder, depth int, s string) {
	b.WriteString(strings.Repeat("  ", depth))
	b.WriteString(s)
	b.WriteString("\n")
}

func writeField(b *strings.Builder, depth int, name string, fv reflect.Value) {
	switch fv.Kind() {
	case reflect.Interface: // a oneof: *Wrapper{Field: value}
		if fv.IsNil() {
			return
		}
		w := fv.Elem()
		if w.Kind() == reflect.Pointer {
			if w.IsNil() {
				writeLine(b, depth, name+": <nil oneof wrapper>")
				return
			}
			w = w.Elem()
		}
		for j := 0; j < w.NumField(); j++ {
			if n := protoName(w.Type().Field(j)); n != "" {
				inner := w.Field(j)
				if inner.Kind() == reflect.Pointer && inner.IsNil() {
					writeLine(b, depth, n+": <nil in oneof>")
					continue
				}
				writeValue(b, depth, n, inner, true)
			}
		}
	case reflect.Slice:
		if fv.Type().Elem().Kind() == reflect.Uint8 {
			if fv.Len() > 0 {
				writeLine(b, depth, name+": "+quoteBytes(fv.Bytes()))
			}
			return
		}
		for j := 0; j < fv.Len(); j++ {
			writeValue(b, depth, fmt.Sprintf("%s[%d]", name, j), fv.Index(j), true)
		}
	default:
		writeValue(b, depth, name, fv, false)
	}
}

// writeValue writes one value; always means it is written even when zero
// (list elements and oneof members are present by construction).
func writeValue(b *strings.Builder, depth int, name string, fv reflect.Value, always bool) {
	switch fv.Kind() {
	case reflect.Pointer:
		if fv.IsNil() {
			if always {
				writeLine(b, depth, name+": <nil>")
			}
			return
		}
		writeValue(b, depth, name, fv.Elem(), true)
	case reflect.Struct:
		b.WriteString(strings.Repeat("  ", depth))
		b.WriteString(name + " ")
		writeStruct(b, fv, depth)
	case reflect.Slice:
		if fv.Type().Elem().Kind() == reflect.Uint8 {
			if fv.Len() > 0 || always {
				writeLine(b, depth, name+": "+quoteBytes(fv.Bytes()))
			}
			return
		}
		writeField(b, depth, name, fv)
	default:
		if fv.IsZero() && !always {
			return
		}
		if s, ok := fv.Interface().(fmt.Stringer); ok && fv.Kind() == reflect.Int32 {
			writeLine(b, depth, fmt.Sprintf("%s: %s", name, s.String()))
			return
		}
		if fv.Kind() == reflect.String {
			writeLine(b, depth, name+": "+strconv.Quote(fv.String()))
			return
		}
		writeLine(b, depth, fmt.Sprintf("%s: %v", name, fv.Interface()))
	}
}

// quoteBytes quotes short byte strings and summarizes long ones.
func quoteBytes(p []byte) string {
	if len(p) <= 200 {
		return strconv.Quote(string(p))
	}
	sum := sha256.Sum256(p)
	return fmt.Sprintf("<%d bytes, sha256 %x>", len(p), sum[:8])
}

// renderErr keeps what a client can see of an error: its gRPC status code
// and message. clientv3 turns known etcd errors into rpctypes.EtcdError,
// raw stubs return gRPC status errors; both print the same way.
func renderErr(err error) string {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return fmt.Sprintf("error: code=%s desc=%q", ee.Code(), ee.Error())
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("error: code=%s desc=%q", st.Code(), st.Message())
	}
	return fmt.Sprintf("error (not a gRPC status): %q", err.Error())
}
