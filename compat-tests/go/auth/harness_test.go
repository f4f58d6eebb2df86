package auth

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"rsetcd/compat-tests/internal/etcdproc"
	"rsetcd/compat-tests/internal/transcript"
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

// server is one started member.
type server struct {
	label string // "etcd" or "rsetcd"
	proc  *etcdproc.Proc
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
	steps   []transcript.Step
	note    string
	want    string // Want: for the next step
	// wantEach is WantEach's: for every step while it runs.
	wantEach string
	// violations are answers of this server that contradict what the
	// scenario says it expects (Want); on etcd they mean the test is wrong.
	violations []string
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
}

// Note labels the next step.
func (c *C) Note(format string, args ...any) { c.note = fmt.Sprintf(format, args...) }

// Want states what the output of the next step must contain (e.g. an error
// message). It is checked on both servers: on etcd a violation means the
// scenario's expectation is wrong.
func (c *C) Want(substr string) { c.want = substr }

// WantEach runs f, stating what the output of every step f makes must
// contain (Want for each step, unless a Want inside f says otherwise).
func (c *C) WantEach(substr string, f func()) {
	c.wantEach = substr
	defer func() { c.wantEach = "" }()
	f()
}

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
var helperFiles = map[string]bool{"harness_test.go": true, "calls_test.go": true, "jwt_calls_test.go": true}

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
	if want := cmp.Or(c.want, c.wantEach); want != "" {
		if !strings.Contains(out, want) {
			c.violations = append(c.violations, fmt.Sprintf("step %d: %s: want output containing %q, got:\n%s", len(c.steps)+1, label, want, transcript.Indent(out, "    ")))
		}
		c.want = ""
	}
	c.steps = append(c.steps, transcript.Step{Label: label, Out: out})
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
		return transcript.RenderErr(err)
	}
	if s, ok := resp.(string); ok {
		return s
	}
	return transcript.Render(resp)
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
		out = transcript.RenderErr(err)
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
		return fmt.Sprintf("%stoken differs from every earlier token: %v\n", transcript.Render(resp), fresh), nil
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
// directory and ports, then waits until user/password can read a key (an
// unauthenticated Get, which etcdproc's Start waits for by default, is
// refused once auth is enabled). Tokens stored so far are kept, to be tried
// against the new process.
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
	if err := p.Kill(); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	p.ProbeUser, p.ProbePassword = user, password
	if err := p.Start(startTimeout); err != nil {
		return err
	}
	// The connections to the killed server wait out gRPC's reconnect
	// backoff, and a call made meanwhile fails with the last dial error:
	// wait until they are connected again.
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conns := []*grpc.ClientConn{c.plain}
	for _, cli := range c.clients {
		conns = append(conns, cli.ActiveConnection())
	}
	for _, cc := range conns {
		cc.Connect()
		for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
			if !cc.WaitForStateChange(ctx, st) {
				return fmt.Errorf("reconnecting to %s: %w (state %v)", cc.Target(), ctx.Err(), st)
			}
		}
	}
	return nil
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
func runScenario(t *testing.T, sc scenario) { runScenarioArgs(t, sc, scenarioArgs[sc.name]...) }

// runScenarioArgs is runScenario with the extra server flags given (the
// same on both servers; e.g. --auth-token with key files made by the test).
func runScenarioArgs(t *testing.T, sc scenario, args ...string) {
	ref, sut := etcdproc.StartPair(t, memberName, startTimeout, args...)
	var cs [2]*C
	for i, s := range []*server{{"etcd", ref}, {"rsetcd", sut}} {
		c, err := newC(t, s)
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
		t.Cleanup(c.close)
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
	if d := transcript.Diff(want.steps, got.steps, transcript.AllLines); d != "" {
		t.Errorf("%s: rsetcd differs from etcd 3.6.16\n%s", sc.name, d)
	}
	if testing.Verbose() {
		t.Logf("etcd transcript:\n%s", transcript.Format(want.steps))
	}
}

// sortLeases orders a LeaseLeases answer by ID (etcd lists leases in map
// order).
func sortLeases(r *pb.LeaseLeasesResponse) {
	sort.Slice(r.Leases, func(i, j int) bool { return r.Leases[i].ID < r.Leases[j].ID })
}
