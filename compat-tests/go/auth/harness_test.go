package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"rsetcd/compat-tests/internal/etcdproc"
)

const (
	memberName   = "auth" // both servers get the same member name
	startTimeout = 60 * time.Second
	stepTimeout  = 20 * time.Second
)

// Callers. Every call of a scenario names who makes it:
//
//	anon          a plain gRPC connection sending no token
//	bogus         the plain connection with token metadata no server issued
//	              (shaped like a simple token of raft index 1)
//	garbage       token metadata that is not shaped like any token
//	emptytok      token metadata that is the empty string
//	tok:NAME      the plain connection with the token Authenticate stored as NAME
//	bearer:NAME   same token, as "authorization: Bearer <token>" metadata
//	NAME          the clientv3 client Login created as NAME (it sends its
//	              token itself, and refreshes it on "invalid auth token" and
//	              "revision of auth store is old")
const (
	anon     = "anon"
	bogus    = "bogus"
	garbage  = "garbage"
	emptytok = "emptytok"
	// bogusToken looks like a simple token (16 letters, '.', a raft index).
	// The index is 1: etcd waits for the index of a simple token to be
	// applied before it looks the token up.
	bogusToken = "abcdefghijklmnop.1"
)

// refBin returns the reference etcd (etcdproc.RefBin: $REF_ETCD_BIN or
// <repo>/.cache/reference/bin/etcd) or fails the test saying how to get one.
func refBin(t testing.TB) string {
	t.Helper()
	bin, err := etcdproc.RefBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// server is one started member.
type server struct {
	label string // "etcd" or "rsetcd"
	proc  *etcdproc.Proc
	quiet *quietTB
}

// startPair starts a fresh reference etcd and a fresh rsetcd (each with a new
// data directory and new ports, extraArgs appended to the flags),
// concurrently; both are killed when t ends.
func startPair(t *testing.T, extraArgs []string) (ref, sut *server) {
	t.Helper()
	sutBin := etcdproc.BinFromEnv(t)
	refPath := refBin(t)
	ref = &server{label: "etcd", quiet: &quietTB{TB: t}}
	sut = &server{label: "rsetcd", quiet: &quietTB{TB: t}}
	ref.proc = etcdproc.New(ref.quiet, refPath, memberName)
	sut.proc = etcdproc.New(sut.quiet, sutBin, memberName)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*server{ref, sut} {
		s.proc.ExtraArgs = append([]string(nil), extraArgs...)
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

// step is one recorded call: what was called (and where in the scenario)
// and what came back.
type step struct {
	label string
	out   string
}

// C is what a scenario runs against: one server. Every call is recorded as
// one step of the transcript. A scenario must issue the same calls whatever
// the answers are, so that the two transcripts line up step by step.
type C struct {
	s       *server
	t       testing.TB
	plain   *grpc.ClientConn            // no clientv3 interceptors, no credentials
	clients map[string]*clientv3.Client // Login
	tokens  map[string]string           // Authenticate
	leaders map[string]*leaderKey       // Campaign, by election name
	steps   []step
	note    string
	want    string
	// violations are answers of this server that contradict what the
	// scenario says it expects (Want); on etcd they mean the test is wrong.
	violations []string
	// restarted is the process Restart started (etcdproc's Start waits for
	// an unauthenticated Get, which an auth-enabled server refuses).
	restarted *exec.Cmd
	exited    chan struct{}
}

func newC(t testing.TB, s *server) (*C, error) {
	target := strings.TrimPrefix(s.proc.ClientURL, "http://")
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("%s: grpc dial %s: %w", s.label, target, err)
	}
	return &C{
		s: s, t: t, plain: conn,
		clients: map[string]*clientv3.Client{},
		tokens:  map[string]string{},
		leaders: map[string]*leaderKey{},
	}, nil
}

func (c *C) close() {
	for _, cli := range c.clients {
		cli.Close()
	}
	c.plain.Close()
	if c.restarted != nil {
		_ = c.restarted.Process.Kill()
		<-c.exited
	}
}

// Note labels the next step.
func (c *C) Note(format string, args ...any) { c.note = fmt.Sprintf(format, args...) }

// Want states what the output of the next step must contain (e.g. an error
// message). It is checked on both servers: on etcd a violation means the
// scenario's expectation is wrong.
func (c *C) Want(substr string) { c.want = substr }

// errSkip is returned by a caller lookup whose client or token does not
// exist (an earlier Login or Authenticate failed); the step is recorded
// without a call.
type errSkip struct{ why string }

func (e errSkip) Error() string { return e.why }

// caller returns the connection and context for who (see the constants
// above).
func (c *C) caller(ctx context.Context, who string) (context.Context, *grpc.ClientConn, error) {
	switch {
	case who == anon:
		return ctx, c.plain, nil
	case who == bogus:
		return metadata.AppendToOutgoingContext(ctx, "token", bogusToken), c.plain, nil
	case who == garbage:
		return metadata.AppendToOutgoingContext(ctx, "token", "not a token"), c.plain, nil
	case who == emptytok:
		return metadata.AppendToOutgoingContext(ctx, "token", ""), c.plain, nil
	case strings.HasPrefix(who, "tok:"):
		tok, ok := c.tokens[who[4:]]
		if !ok {
			return nil, nil, errSkip{"no token " + who[4:]}
		}
		return metadata.AppendToOutgoingContext(ctx, "token", tok), c.plain, nil
	case strings.HasPrefix(who, "bearer:"):
		tok, ok := c.tokens[who[7:]]
		if !ok {
			return nil, nil, errSkip{"no token " + who[7:]}
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), c.plain, nil
	default:
		cli, ok := c.clients[who]
		if !ok {
			return nil, nil, errSkip{"no client " + who}
		}
		return ctx, cli.ActiveConnection(), nil
	}
}

// helperFiles hold no scenario lines: a step's label names the first
// caller outside them.
var helperFiles = map[string]bool{"harness_test.go": true, "calls_test.go": true, "render_test.go": true}

// record appends a step, labelled with op and the scenario line that
// issued it.
func (c *C) record(op, out string) {
	where := "?"
	for i := 1; ; i++ {
		_, file, line, ok := runtime.Caller(i)
		if !ok {
			break
		}
		if !helperFiles[filepath.Base(file)] {
			where = fmt.Sprintf("%s:%d", filepath.Base(file), line)
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
			c.violations = append(c.violations, fmt.Sprintf("step %d: %s: want output containing %q, got:\n%s", len(c.steps)+1, label, c.want, indent(out, "    ")))
		}
		c.want = ""
	}
	c.steps = append(c.steps, step{label: label, out: out})
}

// call runs and records one call made by who. f returns the response to
// render, or a string already rendered.
func (c *C) call(who, op string, f func(ctx context.Context, cc *grpc.ClientConn) (any, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	op = fmt.Sprintf("[%s] %s", who, op)
	ctx, cc, err := c.caller(ctx, who)
	if err != nil {
		c.record(op, "skipped: "+err.Error())
		return
	}
	c.record(op, output(f(ctx, cc)))
}

// output renders a response (or a string already rendered) or an error.
func output(resp any, err error) string {
	if err != nil {
		return renderErr(err)
	}
	if s, ok := resp.(string); ok {
		return s
	}
	return render(resp)
}

// ---- sessions ----

// Login creates the clientv3 client name with Username/Password (clientv3.New
// authenticates at once) and records what New returned.
func (c *C) Login(name, user, password string) {
	cfg := clientv3.Config{
		Endpoints:   []string{c.s.proc.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Username:    user,
		Password:    password,
	}
	if old, ok := c.clients[name]; ok {
		old.Close()
		delete(c.clients, name)
	}
	cli, err := clientv3.New(cfg)
	out := "ok"
	if err != nil {
		out = renderErr(err)
	} else {
		c.clients[name] = cli
	}
	c.record(fmt.Sprintf("Login %s as %q/%q (clientv3.New)", name, user, password), out)
}

// Authenticate calls Auth.Authenticate (with no token, on the plain
// connection unless by says otherwise) and stores the token as tok:NAME.
func (c *C) Authenticate(name, user, password string) { c.authenticate(anon, name, user, password) }

// AuthenticateBy is Authenticate sent by who (e.g. with a bogus token).
func (c *C) AuthenticateBy(who, name, user, password string) {
	c.authenticate(who, name, user, password)
}

func (c *C) authenticate(who, name, user, password string) {
	c.call(who, fmt.Sprintf("Authenticate %q/%q -> %s", user, password, name), func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		resp, err := pb.NewAuthClient(cc).Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: password})
		if err != nil {
			return nil, err
		}
		fresh := resp.Token != ""
		for _, old := range c.tokens {
			if old == resp.Token {
				fresh = false
			}
		}
		if resp.Token != "" {
			c.tokens[name] = resp.Token
		}
		return fmt.Sprintf("%stoken differs from every earlier token: %v\n", render(resp), fresh), nil
	})
}

// V3 runs a clientv3 API call with the client who (anon: a clientv3 client
// without credentials is not kept; use the raw helpers for anon).
func (c *C) V3(who, op string, f func(ctx context.Context, cli *clientv3.Client) (any, error)) {
	c.call(who, "clientv3 "+op, func(ctx context.Context, _ *grpc.ClientConn) (any, error) {
		cli, ok := c.clients[who]
		if !ok {
			return "skipped: not a clientv3 client: " + who, nil
		}
		return f(ctx, cli)
	})
}

// Sleep waits (not a step).
func (c *C) Sleep(d time.Duration) { time.Sleep(d) }

// Restart SIGKILLs the server and starts it again on the same data
// directory and ports, then waits until user/password can read a key through
// clientv3 (etcdproc's Start would wait for an unauthenticated Get, which a
// server with auth enabled refuses). Tokens stored so far are kept, to be
// tried against the new process.
func (c *C) Restart(user, password string) {
	out := "ok"
	if err := c.restart(user, password); err != nil {
		out = "restart failed: " + err.Error()
		c.violations = append(c.violations, out)
	}
	c.record("SIGKILL + restart on the same data dir", out)
}

func (c *C) restart(user, password string) error {
	p := c.s.proc
	if c.restarted != nil {
		return errors.New("restarting twice is not supported")
	}
	if err := p.Kill(); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "===== restart by auth tests: %s %s\n", p.Bin, strings.Join(p.Args(), " "))
	cmd := exec.Command(p.Bin, p.Args()...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	c.restarted = cmd
	c.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(c.exited)
	}()
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("the restarted server exited: %v (log %s)", cmd.ProcessState, p.LogPath)
		default:
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints: []string{p.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
			Username: user, Password: password,
		})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = cli.Get(ctx, "auth-restart-probe")
			cancel()
			cli.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not serving %s within %v: %v", user, startTimeout, last)
}

// ---- running and comparing ----

// scenario is one differential test case.
type scenario struct {
	name string
	run  func(c *C)
}

// scenarioArgs are extra server flags (the same on both servers) by
// scenario name.
var scenarioArgs = map[string][]string{
	"token/ttl": {"--auth-token-ttl=2"},
}

// runScenario starts a fresh pair, runs sc against both concurrently and
// fails with a step-by-step diff unless the transcripts are identical.
func runScenario(t *testing.T, sc scenario) {
	ref, sut := startPair(t, scenarioArgs[sc.name])
	var cs [2]*C
	for i, s := range []*server{ref, sut} {
		c, err := newC(t, s)
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
		t.Cleanup(func() {
			c.close()
			if !s.proc.Running() && c.restarted == nil {
				s.quiet.loud.Store(true) // it died during the test
			}
		})
	}
	want, got := cs[0], cs[1]
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					c.violations = append(c.violations, fmt.Sprintf("scenario panicked: %v", p))
				}
			}()
			sc.run(c)
		}()
	}
	wg.Wait()
	for _, c := range cs {
		for _, v := range c.violations {
			if c == want {
				t.Errorf("the reference etcd contradicts the scenario (the test is wrong): %s", v)
			} else {
				t.Errorf("rsetcd: %s", v)
			}
		}
	}
	if d := diffTranscripts(want.steps, got.steps); d != "" {
		t.Errorf("%s: rsetcd differs from etcd 3.6.16\n%s", sc.name, d)
	}
	if testing.Verbose() {
		var b strings.Builder
		for i, s := range want.steps {
			fmt.Fprintf(&b, "step %d: %s\n%s", i+1, s.label, indent(s.out, "    "))
		}
		t.Logf("etcd transcript:\n%s", b.String())
	}
}

// diffTranscripts reports every step whose output differs, as a line diff
// ("-" etcd, "+" rsetcd).
func diffTranscripts(want, got []step) string {
	var b strings.Builder
	n := max(len(want), len(got))
	differing := 0
	for i := 0; i < n; i++ {
		var w, g step
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w == g {
			continue
		}
		differing++
		label := w.label
		if label == "" {
			label = g.label
		}
		fmt.Fprintf(&b, "--- step %d/%d: %s\n", i+1, n, label)
		b.WriteString(lineDiff(w.out, g.out))
	}
	if differing == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d steps differ (- etcd, + rsetcd):\n%s", differing, n, b.String())
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

// lineDiff is a small LCS line diff: " " common, "-" only in a, "+" only in b.
func lineDiff(a, b string) string {
	x := strings.Split(strings.TrimRight(a, "\n"), "\n")
	y := strings.Split(strings.TrimRight(b, "\n"), "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out.WriteString("    " + x[i] + "\n")
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			out.WriteString("  - " + x[i] + "\n")
			i++
		default:
			out.WriteString("  + " + y[j] + "\n")
			j++
		}
	}
	return out.String()
}

// sortLeases orders a LeaseLeases answer by ID (etcd lists leases in map
// order).
func sortLeases(r *pb.LeaseLeasesResponse) {
	sort.Slice(r.Leases, func(i, j int) bool { return r.Leases[i].ID < r.Leases[j].ID })
}
