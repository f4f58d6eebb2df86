package tls

import (
	"context"
	gotls "crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rsetcd/compat-tests/internal/etcdproc"
	"rsetcd/compat-tests/internal/transcript"
)

const (
	memberName   = "tls" // both servers get the same member name
	startTimeout = 60 * time.Second
	// callTimeout bounds one clientv3 call. A client whose connection fails
	// waits for it in full (clientv3 calls wait for a ready connection), so
	// callers that are refused in some scenario (failingCallers) get
	// failTimeout: plenty for a call on loopback, and short.
	callTimeout = 10 * time.Second
	failTimeout = 2 * time.Second
)

// failingCallers are refused by some servers (see timeout).
var failingCallers = map[string]bool{nocert: true, plaintext: true, untrusting: true, idStranger: true}

// timeout is the bound of one call by who.
func timeout(who string) time.Duration {
	if id, _, _ := parseWho(who); failingCallers[id] {
		return failTimeout
	}
	return callTimeout
}

// ctlEnv names the environment variable holding the etcdctl to run; the
// default is the etcdctl next to the reference etcd (scripts/build-reference.sh
// builds both).
const ctlEnv = "ETCDCTL_BIN"

func etcdctlBin(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(ctlEnv); bin != "" {
		return bin
	}
	bin := filepath.Join(filepath.Dir(etcdproc.MustRefBin(t)), "etcdctl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("etcdctl 3.6 not found next to the reference etcd (%v): run scripts/build-reference.sh or set %s", err, ctlEnv)
	}
	return bin
}

// mode is the set of client TLS flags a scenario's servers get.
type mode int

const (
	// serverTLS: --cert-file --key-file (clients need no certificate).
	serverTLS mode = iota
	// trustedCA: also --trusted-ca-file, without --client-cert-auth.
	trustedCA
	// clientCertAuth: --trusted-ca-file and --client-cert-auth.
	clientCertAuth
)

func (m mode) flags(p *pki) []string {
	args := []string{"--cert-file", p.ServerCert, "--key-file", p.ServerKey}
	switch m {
	case trustedCA:
		args = append(args, "--trusted-ca-file", p.CAFile)
	case clientCertAuth:
		args = append(args, "--trusted-ca-file", p.CAFile, "--client-cert-auth")
	}
	return args
}

// server is one started member.
type server struct {
	label string // "etcd" or "rsetcd"
	proc  *etcdproc.Proc
	quiet *quietTB
}

// startPair starts a fresh reference etcd and a fresh rsetcd with https
// client URLs (peer URLs stay http) and m's TLS flags, concurrently; both
// are killed when t ends. Start's readiness Get presents the root
// certificate (needed when the server requires one). It is
// etcdproc.StartPair but for that: StartPair starts its members before a
// caller could set their schemes and ClientTLS.
func startPair(t *testing.T, p *pki, m mode) (ref, sut *server) {
	t.Helper()
	sutBin := etcdproc.BinFromEnv(t)
	refPath := etcdproc.MustRefBin(t)
	ref = &server{label: "etcd", quiet: &quietTB{TB: t}}
	sut = &server{label: "rsetcd", quiet: &quietTB{TB: t}}
	ref.proc = etcdproc.New(ref.quiet, refPath, memberName)
	sut.proc = etcdproc.New(sut.quiet, sutBin, memberName)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*server{ref, sut} {
		s.proc.SetSchemes("https", "")
		s.proc.ClientTLS = p.clientTLS(idRoot)
		s.proc.ExtraArgs = m.flags(p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.proc.Start(startTimeout); err != nil {
				s.quiet.loud.Store(true)
				errs[i] = fmt.Errorf("starting %s (%s): %w", s.label, s.proc.Bin, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return ref, sut
}

// quietTB is the testing.TB given to etcdproc: it hides a failed test from
// etcdproc's cleanup, which would otherwise print 60 lines of each server's
// log under every diff, unless the server failed to start or died.
type quietTB struct {
	testing.TB
	loud atomic.Bool
}

func (q *quietTB) Failed() bool { return q.loud.Load() && q.TB.Failed() }

// C is what a scenario runs against: one server. Every call is recorded as
// one step of the transcript; a scenario issues the same calls whatever the
// answers are, so that the two transcripts line up step by step.
type C struct {
	s       *server
	t       testing.TB
	pki     *pki
	ctl     string // etcdctl binary
	clients map[string]*clientv3.Client
	// gatewayToken is the token GatewayLogin got.
	gatewayToken string
	steps        []transcript.Step
	note         string
	want         string
	// violations are answers of this server that contradict what the
	// scenario says it expects (Want); on etcd they mean the test is wrong.
	violations []string
	// details are the raw texts of client-side errors that the transcript
	// only shows as a class; logged with -v.
	details []string
	mu      sync.Mutex // guards details (watch goroutines)
}

func (c *C) close() {
	for _, cli := range c.clients {
		cli.Close()
	}
}

// Note labels the next step.
func (c *C) Note(format string, args ...any) { c.note = fmt.Sprintf(format, args...) }

// Want states what the output of the next step must contain. It is checked
// on both servers: on etcd a violation means the scenario's expectation is
// wrong.
func (c *C) Want(substr string) { c.want = substr }

// helperFiles hold no scenario lines: a step's label names the first
// caller outside them that is not a function literal (a scenario's local
// helper).
var helperFiles = map[string]bool{"harness_test.go": true, "calls_test.go": true}

// record appends a step, labelled with op and the scenario line that
// issued it.
func (c *C) record(op, out string) {
	where := "?"
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if !helperFiles[filepath.Base(f.File)] && !funcLit.MatchString(f.Function) {
			where = fmt.Sprintf("%s:%d", filepath.Base(f.File), f.Line)
			break
		}
		if !more {
			break
		}
	}
	label := fmt.Sprintf("%s (%s)", op, where)
	if c.note != "" {
		label += " " + c.note
		c.note = ""
	}
	if c.want != "" {
		if !strings.Contains(out, c.want) {
			c.violations = append(c.violations, fmt.Sprintf("step %d: %s: want output containing %q, got:\n%s", len(c.steps)+1, label, c.want, transcript.Indent(out, "    ")))
		}
		c.want = ""
	}
	c.steps = append(c.steps, transcript.Step{Label: label, Out: out})
}

var funcLit = regexp.MustCompile(`\.func\d+(\.\d+)*$`)

func (c *C) detail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.details = append(c.details, fmt.Sprintf(format, args...))
}

// ---- error classes ----

// Error classes for failures the client's own stack reports (see the
// package doc).
const (
	classUntrusted = "client rejects the server certificate"
	classConn      = "connection failed"
	classTimeout   = "timed out"
)

// classify maps the text of a client-side failure to its class, or "" when
// it looks like none (it is then printed in full).
func classify(msg string) string {
	m := strings.ToLower(msg)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(m, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("x509:", "certificate signed by unknown authority", "failed to verify certificate"):
		return classUntrusted
	case has("remote error: tls", "eof", "connection reset", "broken pipe", "handshake",
		"connection closed", "malformed http", "server preface", "http2:", "first record does not look like a tls",
		"tls: ", "connection refused", "transport is closing"):
		return classConn
	case has("deadline exceeded", "i/o timeout", "timeout awaiting", "client.timeout"):
		return classTimeout
	}
	return ""
}

// renderErr keeps what a client sees of a server's error
// (transcript.RenderErr) and reduces failures of the connection itself to
// their class (see connClass); their text goes to the details.
func (c *C) renderErr(err error) string {
	if class := connClass(err); class != "" {
		c.detail("%s: %v", class, err)
		return "error: " + class
	}
	return transcript.RenderErr(err)
}

// connClass is the class (see classify) of an error that the client's own
// stack made: one that is not an etcd error, and not a gRPC status either
// unless its code is Unavailable, DeadlineExceeded or Canceled. It is ""
// for a server's error.
func connClass(err error) string {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ""
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return classify(st.Message())
		}
		return ""
	}
	return classify(err.Error())
}

// output renders a response (or a string already rendered) or an error.
func (c *C) output(resp any, err error) string {
	if err != nil {
		return c.renderErr(err)
	}
	if s, ok := resp.(string); ok {
		return s
	}
	return transcript.Render(resp)
}

// ---- running and comparing ----

// scenario is one differential test case.
type scenario struct {
	name string
	mode mode
	run  func(c *C)
}

// runScenario starts a fresh pair with sc's TLS flags, runs sc against both
// concurrently and fails with a step-by-step diff unless the transcripts
// are identical.
func runScenario(t *testing.T, p *pki, sc scenario) {
	ref, sut := startPair(t, p, sc.mode)
	ctl := etcdctlBin(t)
	var cs [2]*C
	for i, s := range []*server{ref, sut} {
		c := &C{s: s, t: t, pki: p, ctl: ctl, clients: map[string]*clientv3.Client{}}
		cs[i] = c
		t.Cleanup(func() {
			c.close()
			if !s.proc.Running() {
				s.quiet.loud.Store(true) // it died during the test
			}
		})
	}
	runEach(cs, func(_ int, c *C) { sc.run(c) })
	compare(t, sc.name, cs)
}

// runEach runs f against the etcd and the rsetcd side concurrently (i is
// the side's index in cs) and waits for both; a panic in f is a violation
// of that side.
func runEach(cs [2]*C, f func(i int, c *C)) {
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					c.violations = append(c.violations, fmt.Sprintf("scenario panicked: %v", r))
				}
			}()
			f(i, c)
		}()
	}
	wg.Wait()
}

// compare fails t with each side's violations and with a step-by-step diff
// unless the transcripts of etcd (cs[0]) and rsetcd (cs[1]) are identical;
// what names the scenario in the diff's heading.
func compare(t *testing.T, what string, cs [2]*C) {
	t.Helper()
	want, got := cs[0], cs[1]
	for _, c := range cs {
		for _, v := range c.violations {
			if c == want {
				t.Errorf("the reference etcd contradicts the scenario (the test is wrong): %s", v)
			} else {
				t.Errorf("rsetcd: %s", v)
			}
		}
	}
	if d := transcript.Diff(want.steps, got.steps, transcript.AllLines); d != "" {
		t.Errorf("%s: rsetcd differs from etcd 3.6.16\n%s", what, d)
	}
	if testing.Verbose() || t.Failed() {
		for _, c := range cs {
			if len(c.details) > 0 {
				t.Logf("%s: client-side error texts behind the classes:\n%s", c.s.label, transcript.Indent(strings.Join(c.details, "\n"), "    "))
			}
		}
	}
	if testing.Verbose() {
		t.Logf("etcd transcript:\n%s", transcript.Format(want.steps))
	}
}

// ---- callers ----

// Callers. Every call names who makes it:
//
//	nocert      TLS trusting the CA, no client certificate
//	plaintext   no TLS at all: an http:// URL to the https port
//	untrusting  TLS trusting only the unrelated CA (not the server's)
//	ID          TLS trusting the CA, presenting ID's certificate
//	            (root, alice, bob, nocn; stranger is signed by the other CA)
//	ID+USER:PW  ID's certificate, and clientv3 Username/Password (a token)
//	            or etcdctl --user
const (
	nocert     = "nocert"
	plaintext  = "plaintext"
	untrusting = "untrusting"
)

// parseWho splits "ID+USER:PW".
func parseWho(who string) (id, user, password string) {
	id, cred, ok := strings.Cut(who, "+")
	if ok {
		user, password, _ = strings.Cut(cred, ":")
	}
	return id, user, password
}

// endpoint returns the URL and TLS configuration who connects with.
func (c *C) endpoint(who string) (string, *gotls.Config) {
	url := c.s.proc.ClientURL
	id, _, _ := parseWho(who)
	switch id {
	case nocert:
		return url, c.pki.clientTLS("")
	case plaintext:
		return "http://" + strings.TrimPrefix(url, "https://"), nil
	case untrusting:
		return url, &gotls.Config{RootCAs: c.pki.OtherCAPool}
	default:
		if _, ok := c.pki.clientPairs[id]; !ok {
			panic("unknown caller " + who)
		}
		return url, c.pki.clientTLS(id)
	}
}

// client returns (creating it the first time) who's clientv3 client.
// clientv3.New does not wait for a connection unless it logs in.
func (c *C) client(who string) (*clientv3.Client, error) {
	if cli, ok := c.clients[who]; ok {
		return cli, nil
	}
	url, cfg := c.endpoint(who)
	_, user, password := parseWho(who)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{url},
		DialTimeout: timeout(who),
		Logger:      zap.NewNop(),
		TLS:         cfg,
		Username:    user,
		Password:    password,
	})
	if err != nil {
		return nil, err
	}
	c.clients[who] = cli
	return cli, nil
}

// V3 runs and records a clientv3 call by who. A failing clientv3.New (its
// login) is recorded instead of the call.
func (c *C) V3(who, op string, f func(ctx context.Context, cli *clientv3.Client) (any, error)) {
	label := fmt.Sprintf("[%s] clientv3 %s", who, op)
	cli, err := c.client(who)
	if err != nil {
		c.record(label, "clientv3.New: "+c.renderErr(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout(who))
	defer cancel()
	c.record(label, c.output(f(ctx, cli)))
}

// Put, Get and GetPrefix are the common V3 calls.
func (c *C) Put(who, key, val string) {
	c.V3(who, fmt.Sprintf("Put %q=%q", key, val), func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.Put(ctx, key, val)
		if err != nil {
			return nil, err
		}
		return (*pb.PutResponse)(r), nil
	})
}

func (c *C) Get(who, key string, opts ...clientv3.OpOption) {
	op := fmt.Sprintf("Get %q", key)
	if len(opts) > 0 {
		op += " (with options)"
	}
	c.V3(who, op, func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.Get(ctx, key, opts...)
		if err != nil {
			return nil, err
		}
		return (*pb.RangeResponse)(r), nil
	})
}
