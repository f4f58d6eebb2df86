package etcd3

// Starting a server binary (rsetcd, or the reference etcd) as a one-member
// cluster on free 127.0.0.1 ports. This is a trimmed copy of
// compat-tests/go/internal/etcdproc: that package lives in another module
// (rsetcd/compat-tests, pinned to etcd v3.6.16), while k8s.io/apiserver
// pins its own etcd client, so it cannot be imported from here.

import (
	"bytes"
	"context"
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

const (
	// binEnv names the server under test.
	binEnv = "RSETCD_BIN"
	// refBinEnv names the reference etcd (v3.6.16).
	refBinEnv = "REF_ETCD_BIN"
	// readyLine is what etcd (and rsetcd) log once clients can be served.
	readyLine = "ready to serve client requests"
	// startTimeout bounds one server start (ready line and a working Get).
	startTimeout = 30 * time.Second
)

// binFromEnv returns $RSETCD_BIN or skips the test.
func binFromEnv(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(binEnv)
	if bin == "" {
		t.Skipf("%s is not set: set it to an rsetcd binary (or to an etcd binary to check the tests themselves) to run the Kubernetes storage conformance tests against it", binEnv)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s=%s: %v", binEnv, bin, err)
	}
	return bin
}

// refBin returns $REF_ETCD_BIN or <repo>/.cache/reference/bin/etcd, where
// <repo> is the nearest directory above the working directory holding
// Cargo.toml; it skips the test when neither exists.
func refBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv(refBinEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s=%s: %v", refBinEnv, bin, err)
		}
		return bin
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "Cargo.toml")); err == nil {
			bin := filepath.Join(dir, ".cache", "reference", "bin", "etcd")
			if _, err := os.Stat(bin); err != nil {
				t.Skipf("reference etcd not found at %s (%v): build etcd v3.6.16 there (scripts/build-reference.sh) or set %s", bin, err, refBinEnv)
			}
			return bin
		}
		if filepath.Dir(dir) == dir {
			t.Skipf("no Cargo.toml above %s to locate the reference etcd: set %s", wd, refBinEnv)
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// drawn below Linux's ephemeral range so that outgoing connections do not
// take it in the meantime.
func freePort(t testing.TB) int {
	t.Helper()
	for range 200 {
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

// serverProc is one running server.
type serverProc struct {
	bin       string
	clientURL string
	logPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
	out       *lineSink
}

// startServer starts bin as a single member named "k8s" on fresh loopback
// ports and a fresh data directory, with extraArgs appended, and waits until
// it has logged readyLine and answers a Get. The server is killed when the
// test ends (after the test's own cleanups registered later, such as the
// client's Close). A start that fails because a port was taken is retried
// on new ports.
func startServer(t testing.TB, bin string, extraArgs ...string) *serverProc {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		p, err := startOnce(t, bin, filepath.Join(dir, fmt.Sprintf("try%d", attempt)), extraArgs)
		if err == nil {
			return p
		}
		portTaken := p != nil && strings.Contains(strings.ToLower(p.out.tail(20)), "address already in use")
		if !portTaken || attempt == 3 {
			tail := "(not started)"
			if p != nil {
				tail = p.out.tail(40)
			}
			t.Fatalf("starting %s: %v\nlast lines of its output:\n%s", bin, err, tail)
		}
		t.Logf("a port was taken, starting %s again on new ports", bin)
	}
}

func startOnce(t testing.TB, bin, dir string, extraArgs []string) (*serverProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	for peerURL == clientURL {
		peerURL = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	}
	args := append([]string{
		"--name", "k8s",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "k8s=" + peerURL,
	}, extraArgs...)
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "===== %s %s\n", bin, strings.Join(args, " "))
	sink := &lineSink{file: logFile, marker: readyLine, ready: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = sink
	cmd.Stderr = sink
	// The kernel kills the server if the test process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &serverProc{bin: bin, clientURL: clientURL, logPath: logPath, cmd: cmd, exited: make(chan struct{}), out: sink}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("last lines of the server's output (%s):\n%s", logPath, p.out.tail(30))
		}
	})
	select {
	case <-sink.ready:
	case <-p.exited:
		return p, fmt.Errorf("exited before logging %q: %v", readyLine, cmd.ProcessState)
	case <-time.After(startTimeout):
		p.kill()
		return p, fmt.Errorf("did not log %q within %v", readyLine, startTimeout)
	}
	if err := p.waitServing(time.Now().Add(startTimeout)); err != nil {
		p.kill()
		return p, fmt.Errorf("logged %q but does not serve: %w", readyLine, err)
	}
	return p, nil
}

func (p *serverProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
	}
}

// waitServing retries a Get until it succeeds or the deadline passes.
func (p *serverProc) waitServing(deadline time.Time) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{p.clientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("process exited: %v", p.cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, lastErr = cli.Get(ctx, "k8s-conformance-ready-probe")
		cancel()
		if lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no successful Get before the deadline: %v", lastErr)
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
		line := string(s.partial[:i])
		s.partial = s.partial[i+1:]
		s.lines = append(s.lines, line)
		if len(s.lines) > 300 {
			s.lines = s.lines[len(s.lines)-300:]
		}
		if !s.seen && strings.Contains(line, s.marker) {
			s.seen = true
			close(s.ready)
		}
	}
	return len(b), nil
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
