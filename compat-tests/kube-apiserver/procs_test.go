package kubeapiserver

// Processes of the test: the three members of the storage cluster ($RSETCD_BIN,
// or an etcd binary to check the test) and kube-apiserver. Every process is
// started with Pdeathsig=SIGKILL (it dies with the test binary) and killed
// when the test ends; its output goes to a log file in the test's temp dir,
// and the last lines are printed when the test fails.

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
	// binEnv names the storage server under test.
	binEnv = "RSETCD_BIN"
	// defaultBin is $RSETCD_BIN's default, relative to this module (the
	// test's working directory), as in the other suites.
	defaultBin = "../../target/debug/rsetcd"
	// readyLine is what etcd (and rsetcd) log once clients can be served.
	readyLine = "ready to serve client requests"
	// memberStartTimeout bounds one member start (ready line and a Get).
	memberStartTimeout = 60 * time.Second
	// portLow..portHigh is where the test's ports are drawn: the range this
	// suite was given (32000-32999), below Linux's ephemeral ports (32768+)
	// so that outgoing connections do not take one in the meantime.
	portLow, portHigh = 32000, 32767
)

// serverBin returns $RSETCD_BIN (default ../../target/debug/rsetcd), or
// skips the test when that file does not exist.
func serverBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(binEnv)
	if bin == "" {
		bin = defaultBin
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Skipf("%s=%s: %v (build rsetcd, or set %s to an rsetcd or etcd binary)", binEnv, bin, err, binEnv)
	}
	return abs
}

// portPool hands out distinct free ports from portLow..portHigh.
type portPool struct {
	mu   sync.Mutex
	used map[int]bool
}

func (pp *portPool) next(t testing.TB) int {
	t.Helper()
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.used == nil {
		pp.used = map[int]bool{}
	}
	for range 500 {
		port := portLow + rand.IntN(portHigh-portLow+1)
		if pp.used[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		pp.used[port] = true
		return port
	}
	t.Fatalf("no free port in %d-%d", portLow, portHigh)
	return 0
}

// proc is one child process, restartable with the same arguments.
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string
	marker  string // a line containing it closes ready (may be empty)

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lineSink
	starts int
}

// start launches the process (appending to its log) and returns the channel
// closed once a line contains p.marker.
func (p *proc) start() (<-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return nil, fmt.Errorf("%s already runs", p.name)
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	p.starts++
	fmt.Fprintf(f, "===== start %d: %s %s\n", p.starts, p.bin, strings.Join(p.args, " "))
	sink := &lineSink{file: f, marker: p.marker, ready: make(chan struct{})}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = sink, sink
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(exited)
	}()
	p.cmd, p.exited, p.out = cmd, exited, sink
	return sink.ready, nil
}

func (p *proc) running() bool {
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

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill9 sends SIGKILL and waits until the process is gone.
func (p *proc) kill9() error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d) still runs 30 s after SIGKILL", p.name, cmd.Process.Pid)
	}
}

func (p *proc) exitedChan() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

func (p *proc) tail(n int) string {
	p.mu.Lock()
	out := p.out
	p.mu.Unlock()
	if out == nil {
		return "(never started)"
	}
	return out.tail(n)
}

// grepLog returns the lines of the log file containing any of words.
func (p *proc) grepLog(words ...string) []string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				lines = append(lines, l)
				break
			}
		}
	}
	return lines
}

// member is one member of the storage cluster.
type member struct {
	*proc
	clientURL string
	peerURL   string
	dataDir   string
}

// cluster is a 3-member cluster bootstrapped statically on 127.0.0.1.
type cluster struct {
	t       *testing.T
	members []*member
}

// startCluster starts n members of bin, each with a fresh data directory,
// and waits until every one is ready and answers a Get. When a port turns
// out to be taken, the whole cluster is started again on new ports.
func startCluster(t *testing.T, ports *portPool, bin string, n int) *cluster {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c := &cluster{t: t}
		var initial []string
		for i := 1; i <= n; i++ {
			dir := filepath.Join(t.TempDir(), fmt.Sprintf("m%d", i))
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			m := &member{
				clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports.next(t)),
				peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports.next(t)),
				dataDir:   filepath.Join(dir, "data"),
			}
			m.proc = &proc{name: fmt.Sprintf("m%d", i), bin: bin, logPath: filepath.Join(dir, "server.log"), marker: readyLine}
			initial = append(initial, fmt.Sprintf("m%d=%s", i, m.peerURL))
			c.members = append(c.members, m)
		}
		for _, m := range c.members {
			m.args = []string{
				"--name", m.name,
				"--data-dir", m.dataDir,
				"--listen-client-urls", m.clientURL,
				"--advertise-client-urls", m.clientURL,
				"--listen-peer-urls", m.peerURL,
				"--initial-advertise-peer-urls", m.peerURL,
				"--initial-cluster", strings.Join(initial, ","),
				"--initial-cluster-token", "kube-apiserver-compat",
				"--initial-cluster-state", "new",
				"--heartbeat-interval", "100",
				"--election-timeout", "1000",
			}
		}
		t.Cleanup(func() {
			for _, m := range c.members {
				_ = m.kill9()
				if t.Failed() {
					t.Logf("last lines of member %s (%s):\n%s", m.name, m.logPath, m.tail(40))
				}
			}
		})
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, m := range c.members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = m.startAndWait(memberStartTimeout)
			}()
		}
		wg.Wait()
		err := errors.Join(errs...)
		if err == nil {
			return c
		}
		taken := false
		for _, m := range c.members {
			_ = m.kill9()
			if strings.Contains(strings.ToLower(m.tail(30)), "address already in use") {
				taken = true
			}
		}
		if !taken || attempt == 3 {
			t.Fatalf("starting the %d-member cluster of %s: %v", n, bin, err)
		}
		t.Logf("a port was taken, starting the cluster again on new ports")
	}
}

// startAndWait starts the member and waits until it has logged readyLine and
// answers a serializable Get (a linearizable one needs a quorum, which the
// first member of a cluster does not have yet when it is ready).
func (m *member) startAndWait(timeout time.Duration) error {
	ready, err := m.start()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	select {
	case <-ready:
	case <-m.exitedChan():
		return fmt.Errorf("%s exited before logging %q", m.name, readyLine)
	case <-time.After(timeout):
		return fmt.Errorf("%s did not log %q within %v", m.name, readyLine, timeout)
	}
	cli, err := newClient(m.clientURL)
	if err != nil {
		return err
	}
	defer cli.Close()
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, lastErr = cli.Get(ctx, "kube-apiserver-compat-probe", clientv3.WithSerializable())
		cancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-m.exitedChan():
			return fmt.Errorf("%s exited", m.name)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s logged %q but no Get succeeded: %v", m.name, readyLine, lastErr)
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// newClient is a clientv3 client of the given endpoints, logging off.
func newClient(endpoints ...string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// leader returns the index of the member every running member names as
// leader, waiting up to 15 s for them to agree.
func (c *cluster) leader() (int, error) {
	deadline := time.Now().Add(15 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		idx, err := c.leaderOnce()
		if err == nil {
			return idx, nil
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	return -1, fmt.Errorf("the members did not agree on a leader: %v", lastErr)
}

func (c *cluster) leaderOnce() (int, error) {
	var leader uint64
	idx := -1
	for i, m := range c.members {
		if !m.running() {
			continue
		}
		cli, err := newClient(m.clientURL)
		if err != nil {
			return -1, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, m.clientURL)
		cancel()
		cli.Close()
		if err != nil {
			return -1, fmt.Errorf("%s: Status: %w", m.name, err)
		}
		if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
			return -1, fmt.Errorf("%s names leader %x, others %x", m.name, st.Leader, leader)
		}
		leader = st.Leader
		if st.Leader == st.Header.MemberId {
			idx = i
		}
	}
	if idx < 0 {
		return -1, fmt.Errorf("leader %x is not a running member", leader)
	}
	return idx, nil
}

// lineSink receives a process's output: it appends it to the log file,
// keeps the last lines in memory and closes ready on the first line
// containing marker.
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
		if len(s.lines) > 400 {
			s.lines = s.lines[len(s.lines)-400:]
		}
		if !s.seen && s.marker != "" && strings.Contains(line, s.marker) {
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

// connectionsTo counts the established TCP connections of process pid to
// 127.0.0.1:port, from /proc/<pid>/fd and /proc/<pid>/net/tcp: which
// members kube-apiserver is talking to.
func connectionsTo(pid, port int) (int, error) {
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return 0, err
	}
	// 127.0.0.1:port as /proc/net/tcp writes it (little-endian address).
	want := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "01" { // 01 = ESTABLISHED
			continue
		}
		if f[2] == want && inodes[f[9]] {
			n++
		}
	}
	return n, nil
}
