package descriptor

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// ourProtoFiles are the files of rsetcd's proto/ tree that make up the etcd
// client API, relative to proto/ (which is also the import root).
var ourProtoFiles = []string{
	"mvccpb/kv.proto",
	"authpb/auth.proto",
	"etcdserverpb/rpc.proto",
	"v3electionpb/v3election.proto",
	"v3lockpb/v3lock.proto",
}

// gogoDescribed is what gogo-generated messages offer: the gzipped
// FileDescriptorProto of their file plus the message's path inside it.
type gogoDescribed interface {
	Descriptor() ([]byte, []int)
}

// upstreamSources names one message from each upstream file we mirror; its
// Descriptor() method yields the whole file's descriptor. etcdserverpb also
// has internal files (etcdserver.proto, raft_internal.proto) that rsetcd does
// not mirror, so the file is picked by its message, never by package.
var upstreamSources = []struct {
	file string
	msg  gogoDescribed
}{
	{"kv.proto", &mvccpb.KeyValue{}},
	{"auth.proto", &authpb.User{}},
	{"rpc.proto", &etcdserverpb.RangeRequest{}},
	{"v3election.proto", &v3electionpb.CampaignRequest{}},
	{"v3lock.proto", &v3lockpb.LockRequest{}},
}

func upstreamFiles(t *testing.T) []*descriptorpb.FileDescriptorProto {
	t.Helper()
	var out []*descriptorpb.FileDescriptorProto
	for _, src := range upstreamSources {
		gz, _ := src.msg.Descriptor()
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("upstream %s: gunzip descriptor: %v", src.file, err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("upstream %s: gunzip descriptor: %v", src.file, err)
		}
		fd := &descriptorpb.FileDescriptorProto{}
		// Upstream descriptors carry gogoproto and gateway options as
		// extensions we do not link; they end up as unknown fields, which
		// is fine because options are not compared.
		if err := proto.Unmarshal(raw, fd); err != nil {
			t.Fatalf("upstream %s: decode descriptor: %v", src.file, err)
		}
		if filepath.Base(fd.GetName()) != src.file {
			t.Fatalf("upstream descriptor for %s is named %q", src.file, fd.GetName())
		}
		out = append(out, fd)
	}
	return out
}

// findProtoDir locates rsetcd's proto/ directory: $RSETCD_PROTO_DIR if set,
// else the nearest ancestor of the working directory that has
// proto/etcdserverpb/rpc.proto.
func findProtoDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("RSETCD_PROTO_DIR"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		cand := filepath.Join(dir, "proto")
		if _, err := os.Stat(filepath.Join(cand, "etcdserverpb", "rpc.proto")); err == nil {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find rsetcd's proto/ directory above the working directory; set RSETCD_PROTO_DIR")
		}
		dir = parent
	}
}

func ourFiles(t *testing.T) []*descriptorpb.FileDescriptorProto {
	t.Helper()
	protoDir := findProtoDir(t)
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: []string{protoDir},
		}),
	}
	files, err := compiler.Compile(context.Background(), ourProtoFiles...)
	if err != nil {
		t.Fatalf("compiling %s: %v", protoDir, err)
	}
	var out []*descriptorpb.FileDescriptorProto
	for _, f := range files {
		out = append(out, protodesc.ToFileDescriptorProto(f))
	}
	return out
}

// surface is the wire contract of a set of files, flattened into
// name -> canonical description, so two surfaces compare as maps.
type surface struct {
	syntax   map[string]string // package -> syntax of its files
	messages map[string]bool   // full message name
	fields   map[string]string // "pkg.Msg.field" -> number, label, type, type_name, oneof
	oneofs   map[string]bool   // "pkg.Msg.oneofName"
	enums    map[string]bool   // full enum name
	values   map[string]string // "pkg.Enum.VALUE" -> number
	services map[string]bool   // full service name
	methods  map[string]string // "pkg.Service.Method" -> in, out, streaming
}

func newSurface() *surface {
	return &surface{
		syntax:   map[string]string{},
		messages: map[string]bool{},
		fields:   map[string]string{},
		oneofs:   map[string]bool{},
		enums:    map[string]bool{},
		values:   map[string]string{},
		services: map[string]bool{},
		methods:  map[string]string{},
	}
}

func typeName(n string) string { return strings.TrimPrefix(n, ".") }

func (s *surface) addFile(t *testing.T, fd *descriptorpb.FileDescriptorProto) {
	pkg := fd.GetPackage()
	syntax := fd.GetSyntax()
	if syntax == "" {
		syntax = "proto2"
	}
	if prev, ok := s.syntax[pkg]; ok && prev != syntax {
		t.Errorf("package %s mixes syntaxes %s and %s", pkg, prev, syntax)
	}
	s.syntax[pkg] = syntax
	for _, m := range fd.GetMessageType() {
		s.addMessage(pkg, m)
	}
	for _, e := range fd.GetEnumType() {
		s.addEnum(pkg, e)
	}
	for _, svc := range fd.GetService() {
		full := pkg + "." + svc.GetName()
		s.services[full] = true
		for _, m := range svc.GetMethod() {
			s.methods[full+"."+m.GetName()] = fmt.Sprintf("(%s) returns (%s) client_streaming=%v server_streaming=%v",
				typeName(m.GetInputType()), typeName(m.GetOutputType()),
				m.GetClientStreaming(), m.GetServerStreaming())
		}
	}
}

func (s *surface) addMessage(scope string, m *descriptorpb.DescriptorProto) {
	full := scope + "." + m.GetName()
	s.messages[full] = true
	for _, o := range m.GetOneofDecl() {
		s.oneofs[full+"."+o.GetName()] = true
	}
	for _, f := range m.GetField() {
		oneof := "-"
		if f.OneofIndex != nil {
			oneof = m.GetOneofDecl()[f.GetOneofIndex()].GetName()
		}
		tn := typeName(f.GetTypeName())
		if tn == "" {
			tn = "-"
		}
		s.fields[full+"."+f.GetName()] = fmt.Sprintf("number=%d label=%s type=%s type_name=%s oneof=%s proto3_optional=%v extendee=%q",
			f.GetNumber(), f.GetLabel(), f.GetType(), tn, oneof, f.GetProto3Optional(), f.GetExtendee())
	}
	for _, nested := range m.GetNestedType() {
		s.addMessage(full, nested)
	}
	for _, e := range m.GetEnumType() {
		s.addEnum(full, e)
	}
}

func (s *surface) addEnum(scope string, e *descriptorpb.EnumDescriptorProto) {
	full := scope + "." + e.GetName()
	s.enums[full] = true
	for _, v := range e.GetValue() {
		s.values[full+"."+v.GetName()] = fmt.Sprintf("number=%d", v.GetNumber())
	}
}

func build(t *testing.T, files []*descriptorpb.FileDescriptorProto) *surface {
	s := newSurface()
	for _, fd := range files {
		s.addFile(t, fd)
	}
	return s
}

// diffSet reports names present on one side only.
func diffSet(kind string, up, ours map[string]bool) []string {
	var d []string
	for k := range up {
		if !ours[k] {
			d = append(d, fmt.Sprintf("missing in ours: %s %s", kind, k))
		}
	}
	for k := range ours {
		if !up[k] {
			d = append(d, fmt.Sprintf("extra in ours:   %s %s", kind, k))
		}
	}
	return d
}

// diffMap reports names present on one side only and names whose
// descriptions differ.
func diffMap(kind string, up, ours map[string]string) []string {
	var d []string
	for k, uv := range up {
		ov, ok := ours[k]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("missing in ours: %s %s {%s}", kind, k, uv))
		case ov != uv:
			d = append(d, fmt.Sprintf("different:       %s %s\n        upstream {%s}\n        ours     {%s}", kind, k, uv, ov))
		}
	}
	for k, ov := range ours {
		if _, ok := up[k]; !ok {
			d = append(d, fmt.Sprintf("extra in ours:   %s %s {%s}", kind, k, ov))
		}
	}
	return d
}

// compare lists every difference between two surfaces, sorted.
func compare(up, ours *surface) []string {
	var diffs []string
	diffs = append(diffs, diffMap("package syntax", up.syntax, ours.syntax)...)
	diffs = append(diffs, diffSet("message", up.messages, ours.messages)...)
	diffs = append(diffs, diffMap("field", up.fields, ours.fields)...)
	diffs = append(diffs, diffSet("oneof", up.oneofs, ours.oneofs)...)
	diffs = append(diffs, diffSet("enum", up.enums, ours.enums)...)
	diffs = append(diffs, diffMap("enum value", up.values, ours.values)...)
	diffs = append(diffs, diffSet("service", up.services, ours.services)...)
	diffs = append(diffs, diffMap("method", up.methods, ours.methods)...)
	sort.Strings(diffs)
	return diffs
}

// wantedEtcdVersion is the etcd release whose wire contract rsetcd follows.
const wantedEtcdVersion = "v3.6.16"

// checkUpstreamVersion makes sure `go mod tidy` or `go get -u` did not
// silently move the reference to another etcd release. Test binaries carry
// no module list, so the source path of a function from each module (which
// names the module version) is checked instead.
func checkUpstreamVersion(t *testing.T) {
	t.Helper()
	for module, fn := range map[string]any{
		"go.etcd.io/etcd/api/v3":    etcdserverpb.RegisterKVServer,
		"go.etcd.io/etcd/server/v3": v3lockpb.RegisterLockServer,
	} {
		file, _ := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).FileLine(0)
		if !strings.Contains(filepath.ToSlash(file), module+"@"+wantedEtcdVersion+"/") {
			t.Fatalf("%s is not at %s (source file %s); fix go.mod", module, wantedEtcdVersion, file)
		}
	}
}

func TestDescriptorsMatchUpstream(t *testing.T) {
	checkUpstreamVersion(t)
	up := build(t, upstreamFiles(t))
	ours := build(t, ourFiles(t))

	// Guard against a vacuous pass (e.g. descriptors that failed to load
	// into something empty).
	if n := len(up.messages); n < 100 {
		t.Fatalf("only %d upstream messages loaded; expected well over 100", n)
	}
	if n := len(up.methods); n < 40 {
		t.Fatalf("only %d upstream methods loaded; expected over 40", n)
	}

	diffs := compare(up, ours)
	t.Logf("compared %d packages, %d messages, %d fields, %d oneofs, %d enums, %d enum values, %d services, %d methods",
		len(up.syntax), len(up.messages), len(up.fields), len(up.oneofs), len(up.enums), len(up.values), len(up.services), len(up.methods))
	if len(diffs) > 0 {
		t.Fatalf("rsetcd proto/ differs from etcd %s in %d places:\n  %s", wantedEtcdVersion, len(diffs), strings.Join(diffs, "\n  "))
	}
}

// TestComparatorSeesDifferences mutates a copy of our descriptors and checks
// that each kind of change is reported, so a passing main test means
// something.
func TestComparatorSeesDifferences(t *testing.T) {
	base := ourFiles(t)
	byPkg := func(files []*descriptorpb.FileDescriptorProto, pkg string) *descriptorpb.FileDescriptorProto {
		for _, f := range files {
			if f.GetPackage() == pkg {
				return f
			}
		}
		t.Fatalf("no file for package %s", pkg)
		return nil
	}
	msg := func(fd *descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
		for _, m := range fd.GetMessageType() {
			if m.GetName() == name {
				return m
			}
		}
		t.Fatalf("no message %s", name)
		return nil
	}
	field := func(m *descriptorpb.DescriptorProto, name string) *descriptorpb.FieldDescriptorProto {
		for _, f := range m.GetField() {
			if f.GetName() == name {
				return f
			}
		}
		t.Fatalf("no field %s in %s", name, m.GetName())
		return nil
	}
	mutations := []struct {
		name   string
		mutate func(files []*descriptorpb.FileDescriptorProto)
		want   []string // substrings that must appear in the diff
	}{
		{"field renamed", func(fs []*descriptorpb.FileDescriptorProto) {
			field(msg(byPkg(fs, "etcdserverpb"), "LeaseGrantRequest"), "TTL").Name = proto.String("ttl")
		}, []string{"missing in ours: field etcdserverpb.LeaseGrantRequest.TTL", "extra in ours:   field etcdserverpb.LeaseGrantRequest.ttl"}},
		{"field renumbered", func(fs []*descriptorpb.FileDescriptorProto) {
			field(msg(byPkg(fs, "etcdserverpb"), "Compare"), "range_end").Number = proto.Int32(9)
		}, []string{"different:       field etcdserverpb.Compare.range_end"}},
		{"field retyped", func(fs []*descriptorpb.FileDescriptorProto) {
			field(msg(byPkg(fs, "mvccpb"), "KeyValue"), "lease").Type = descriptorpb.FieldDescriptorProto_TYPE_UINT64.Enum()
		}, []string{"different:       field mvccpb.KeyValue.lease"}},
		{"repeated dropped", func(fs []*descriptorpb.FileDescriptorProto) {
			field(msg(byPkg(fs, "etcdserverpb"), "RangeResponse"), "kvs").Label = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
		}, []string{"different:       field etcdserverpb.RangeResponse.kvs"}},
		{"oneof renamed", func(fs []*descriptorpb.FileDescriptorProto) {
			msg(byPkg(fs, "etcdserverpb"), "RequestOp").OneofDecl[0].Name = proto.String("req")
		}, []string{"missing in ours: oneof etcdserverpb.RequestOp.request", "different:       field etcdserverpb.RequestOp.request_put"}},
		{"nested enum value changed", func(fs []*descriptorpb.FileDescriptorProto) {
			msg(byPkg(fs, "etcdserverpb"), "RangeRequest").EnumType[0].Value[1].Number = proto.Int32(7)
		}, []string{"different:       enum value etcdserverpb.RangeRequest.SortOrder.ASCEND"}},
		{"message removed", func(fs []*descriptorpb.FileDescriptorProto) {
			fd := byPkg(fs, "v3lockpb")
			fd.MessageType = fd.MessageType[1:]
		}, []string{"missing in ours: message v3lockpb.LockRequest"}},
		{"method streaming changed", func(fs []*descriptorpb.FileDescriptorProto) {
			byPkg(fs, "v3electionpb").Service[0].Method[3].ServerStreaming = proto.Bool(false)
		}, []string{"different:       method v3electionpb.Election.Observe"}},
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			var mutated []*descriptorpb.FileDescriptorProto
			for _, f := range base {
				mutated = append(mutated, proto.Clone(f).(*descriptorpb.FileDescriptorProto))
			}
			m.mutate(mutated)
			diffs := strings.Join(compare(build(t, base), build(t, mutated)), "\n")
			for _, w := range m.want {
				if !strings.Contains(diffs, w) {
					t.Errorf("diff lacks %q; got:\n%s", w, diffs)
				}
			}
		})
	}
}
