// Package etcdproc runs an etcd-compatible server binary (rsetcd, or a real
// etcd for comparison) as a single-member cluster on loopback ports, for the
// client compatibility tests of this module. NewCluster runs several such
// processes as the members of one cluster.
//
// The server is started with etcd's own flags, its stdout and stderr go to a
// log file, and it counts as started once it logs
// "ready to serve client requests" (as etcd does) and answers a Get.
package etcdproc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// BinEnv names the environment variable holding the server binary to test.
const BinEnv = "RSETCD_BIN"

// ReadyLine is what etcd logs once clients can be served; rsetcd logs the
// same message.
const ReadyLine = "ready to serve client requests"

// BinFromEnv returns $RSETCD_BIN, or skips the test when it is unset.
func BinFromEnv(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(BinEnv)
	if bin == "" {
		t.Skipf("%s is not set: set it to an rsetcd binary (or /usr/bin/etcd to check the test itself) to run this test", BinEnv)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s=%s: %v", BinEnv, bin, err)
	}
	return bin
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. It
// is drawn below Linux's ephemeral range (32768 and up), so an outgoing
// connection of another test process cannot take it in the meantime; two
// processes drawing the same port is left to Start's retry.
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatalf("no free port found in 20000-31999")
	return 0
}

// Proc is one server member. Its ports and data directory stay the same
// across restarts.
type Proc struct {
	t         testing.TB
	Bin       string
	Name      string
	DataDir   string
	ClientURL string
	PeerURL   string
	LogPath   string
	// ExtraArgs are appended to Args (e.g. --max-request-bytes=...); set
	// them before Start.
	ExtraArgs []string
	// InitialCluster, when set, is passed as --initial-cluster instead of
	// "Name=PeerURL": the member is one of several (see NewCluster). Start
	// then never moves it to other ports, since the other members know its
	// peer URL.
	InitialCluster string
	// InitialClusterToken and InitialClusterState, when set, are passed as
	// --initial-cluster-token and --initial-cluster-state.
	InitialClusterToken string
	InitialClusterState string
	// ProbeSerializable makes the Get that Start waits for a serializable
	// one: a learner refuses linearizable reads.
	ProbeSerializable bool
	// ProbeUser and ProbePassword, when set, are the credentials of the Get
	// that Start waits for: a server with auth enabled refuses a Get
	// without a user.
	ProbeUser     string
	ProbePassword string
	// ClientTLS, when set, is the TLS configuration of Client (and so of the
	// Get that Start waits for): a server with https client URLs (see
	// SetSchemes) needs it, with a client certificate when it requires one.
	ClientTLS *tls.Config

	// clientScheme and peerScheme are the schemes of ClientURL and PeerURL
	// ("" means http), kept for URLs drawn anew (see SetSchemes).
	clientScheme, peerScheme string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current process has exited
	waitErr error
	out     *lineSink
	starts  int
	// everReady is set once a start has succeeded; from then on the ports
	// and data directory are the member's and never change.
	everReady bool
}

// New prepares (but does not start) a member named name with a fresh data
// directory and two free loopback ports. The process is killed when the
// test ends.
func New(t testing.TB, bin, name string) *Proc {
	t.Helper()
	dir := t.TempDir()
	p := &Proc{
		t:         t,
		Bin:       bin,
		Name:      name,
		DataDir:   filepath.Join(dir, "data"),
		ClientURL: LoopbackURL("", FreePort(t)),
		PeerURL:   LoopbackURL("", FreePort(t)),
		LogPath:   filepath.Join(dir, "server.log"),
	}
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Kill()
		}
		if t.Failed() {
			t.Logf("last lines of %s output:\n%s", p.Name, p.LogTail(60))
		}
	})
	return p
}

// LoopbackURL returns scheme://127.0.0.1:port; an empty scheme means http.
func LoopbackURL(scheme string, port int) string {
	if scheme == "" {
		scheme = "http"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
}

// SetSchemes changes the scheme of ClientURL (to client) and PeerURL (to
// peer), e.g. to "https", keeping their ports; an empty argument leaves that
// URL's scheme as it is. URLs drawn later (Start moving a single member to
// new ports) get the same schemes. Call it before Start, and set ClientTLS
// for an https client URL. For the members of a cluster use
// Cluster.SetSchemes, which also rebuilds --initial-cluster.
func (p *Proc) SetSchemes(client, peer string) {
	if client != "" {
		p.clientScheme = client
		p.ClientURL = withScheme(p.ClientURL, client)
	}
	if peer != "" {
		p.peerScheme = peer
		p.PeerURL = withScheme(p.PeerURL, peer)
	}
}

func withScheme(u, scheme string) string {
	return scheme + "://" + hostPort(u)
}

// Args are the command-line flags the member is started with.
func (p *Proc) Args() []string {
	initialCluster := p.InitialCluster
	if initialCluster == "" {
		initialCluster = p.Name + "=" + p.PeerURL
	}
	args := []string{
		"--name", p.Name,
		"--data-dir", p.DataDir,
		"--listen-client-urls", p.ClientURL,
		"--advertise-client-urls", p.ClientURL,
		"--listen-peer-urls", p.PeerURL,
		"--initial-advertise-peer-urls", p.PeerURL,
		"--initial-cluster", initialCluster,
	}
	if p.InitialClusterToken != "" {
		args = append(args, "--initial-cluster-token", p.InitialClusterToken)
	}
	if p.InitialClusterState != "" {
		args = append(args, "--initial-cluster-state", p.InitialClusterState)
	}
	return append(args, p.ExtraArgs...)
}

// Pid returns the process id of the running server, or 0 when none runs.
func (p *Proc) Pid() int {
	if !p.Running() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Running reports whether a started process has not exited yet.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Start launches the server and waits, up to timeout, until it has logged
// ReadyLine and answered a Get. When the very first start of a single
// member fails because a port was taken (other test packages run beside
// this one), it starts again on fresh ports and a fresh data directory; a
// cluster member (InitialCluster set) is not moved, Cluster.Start retries
// the whole cluster instead.
func (p *Proc) Start(timeout time.Duration) error {
	for attempt := 1; ; attempt++ {
		err := p.startOnce(timeout)
		if err == nil || p.everReady || attempt == 3 || p.InitialCluster != "" ||
			!strings.Contains(strings.ToLower(p.LogTail(20)), "address already in use") {
			if err == nil {
				p.everReady = true
			}
			return err
		}
		p.t.Logf("%s: a port was taken, starting again on new ports", p.Name)
		p.DataDir = filepath.Join(filepath.Dir(p.LogPath), fmt.Sprintf("data-%d", attempt))
		p.ClientURL = LoopbackURL(p.clientScheme, FreePort(p.t))
		p.PeerURL = LoopbackURL(p.peerScheme, FreePort(p.t))
	}
}

func (p *Proc) startOnce(timeout time.Duration) error {
	if p.Running() {
		return errors.New("already running")
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.starts++
	fmt.Fprintf(logFile, "===== start #%d: %s %s\n", p.starts, p.Bin, strings.Join(p.Args(), " "))
	sink := newLineSink(logFile, ReadyLine)
	cmd := exec.Command(p.Bin, p.Args()...)
	cmd.Stdout = sink
	cmd.Stderr = sink
	cmd.SysProcAttr = sysProcAttr()
	// A child that keeps the output pipe open must not hang Wait forever.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		logFile.Close()
		return fmt.Errorf("starting %s: %w", p.Bin, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.out, p.waitErr = cmd, exited, sink, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logFile.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()

	deadline := time.Now().Add(timeout)
	select {
	case <-sink.ready:
	case <-exited:
		return fmt.Errorf("%s exited before logging %q: %v", p.Name, ReadyLine, p.exitErr())
	case <-time.After(timeout):
		_ = p.Kill()
		return fmt.Errorf("%s did not log %q within %v", p.Name, ReadyLine, timeout)
	}
	if err := p.waitServing(deadline); err != nil {
		return fmt.Errorf("%s logged %q but does not serve: %w", p.Name, ReadyLine, err)
	}
	return nil
}

// waitServing retries a Get until it succeeds or the deadline passes.
func (p *Proc) waitServing(deadline time.Time) error {
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			cli.Close()
		}
	}()
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("process exited: %v", p.exitErr())
		default:
		}
		if cli == nil {
			// With ProbeUser, clientv3.New logs in, which fails until the
			// server answers: try again.
			cli, lastErr = clientv3.New(clientv3.Config{
				Endpoints:   []string{p.ClientURL},
				DialTimeout: 5 * time.Second,
				Logger:      zap.NewNop(),
				Username:    p.ProbeUser,
				Password:    p.ProbePassword,
				TLS:         cloneTLS(p.ClientTLS),
			})
		}
		if cli != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			var opts []clientv3.OpOption
			if p.ProbeSerializable {
				opts = append(opts, clientv3.WithSerializable())
			}
			_, lastErr = cli.Get(ctx, "etcdproc-ready-probe", opts...)
			cancel()
			if lastErr == nil {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no successful Get before the deadline: %v", lastErr)
}

// ExitError returns how the last started process ended (nil for exit
// status 0, an *exec.ExitError otherwise), or nil while it runs or when it
// was never started.
func (p *Proc) ExitError() error {
	if p.Running() {
		return nil
	}
	return p.exitErr()
}

func (p *Proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Client returns a new clientv3 client for this member, with logging off
// (and ClientTLS, when set).
func (p *Proc) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{p.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		TLS:         cloneTLS(p.ClientTLS),
	})
}

func cloneTLS(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	return c.Clone()
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() error {
	return p.signalAndWait(syscall.SIGKILL, 30*time.Second)
}

// Stop sends SIGTERM and waits up to timeout, then kills.
func (p *Proc) Stop(timeout time.Duration) error {
	if err := p.signalAndWait(syscall.SIGTERM, timeout); err != nil {
		_ = p.Kill()
		return err
	}
	return nil
}

func (p *Proc) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return errors.New("not started")
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending %v: %w", sig, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s still running %v after %v", p.Name, timeout, sig)
	}
}

// LogTail returns the last n lines the server printed since its last start.
func (p *Proc) LogTail(n int) string {
	p.mu.Lock()
	sink := p.out
	p.mu.Unlock()
	if sink == nil {
		return "(never started)"
	}
	return sink.tail(n)
}

// lineSink receives the server's output: it appends it to a log file, keeps
// the last lines in memory and closes ready when a line contains marker.
type lineSink struct {
	mu      sync.Mutex
	file    *os.File
	marker  string
	partial []byte
	lines   []string
	ready   chan struct{}
	seen    bool
}

const keepLines = 500

func newLineSink(f *os.File, marker string) *lineSink {
	return &lineSink{file: f, marker: marker, ready: make(chan struct{})}
}

func (s *lineSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = s.file.Write(b)
	s.partial = append(s.partial, b...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.addLine(string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	return len(b), nil
}

func (s *lineSink) addLine(line string) {
	s.lines = append(s.lines, line)
	if len(s.lines) > keepLines {
		s.lines = s.lines[len(s.lines)-keepLines:]
	}
	if !s.seen && strings.Contains(line, s.marker) {
		s.seen = true
		close(s.ready)
	}
}

func (s *lineSink) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := s.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if len(s.partial) > 0 {
		out += "\n" + string(s.partial)
	}
	return out
}
