package etcdproc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ClusterToken is the --initial-cluster-token of the members NewCluster
// prepares.
const ClusterToken = "etcdproc-cluster"

// LeaderTimeout bounds how long Cluster.Leader waits for the running members
// to agree on a leader (a few of etcd's default 1 s election timeouts).
const LeaderTimeout = 10 * time.Second

// Cluster is an N-member cluster of separate server processes on 127.0.0.1,
// bootstrapped statically (--initial-cluster-state new). Members keep their
// ports and data directories across restarts.
type Cluster struct {
	t       testing.TB
	Members []*Proc
	// started is set once Start has succeeded: from then on the members'
	// ports and data directories never change.
	started bool
}

// NewCluster prepares (but does not start) n members named m1..mn, each with
// its own data directory and two loopback ports (all 2n distinct), and
// etcd's default heartbeat (100 ms) and election timeout (1000 ms) given
// explicitly, followed by extraArgs (the same for every member, e.g.
// "--snapshot-count", "100"). Each member's ExtraArgs may also be changed
// on its own before Start. The processes are killed when the test ends.
func NewCluster(t testing.TB, bin string, n int, extraArgs ...string) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("NewCluster: %d members", n)
	}
	c := &Cluster{t: t}
	for i := 1; i <= n; i++ {
		p := New(t, bin, fmt.Sprintf("m%d", i))
		p.InitialClusterToken = ClusterToken
		p.InitialClusterState = "new"
		p.ExtraArgs = append([]string{"--heartbeat-interval", "100", "--election-timeout", "1000"}, extraArgs...)
		c.Members = append(c.Members, p)
	}
	c.assignPorts(false)
	return c
}

// assignPorts gives every member ports not used by another member (fresh
// ones for all when fresh is set) and rebuilds --initial-cluster.
func (c *Cluster) assignPorts(fresh bool) {
	used := map[string]bool{}
	// Ports are compared without the scheme.
	draw := func(cur, scheme string) string {
		if !fresh && cur != "" && !used[hostPort(cur)] {
			used[hostPort(cur)] = true
			return cur
		}
		for {
			u := LoopbackURL(scheme, FreePort(c.t))
			if !used[hostPort(u)] {
				used[hostPort(u)] = true
				return u
			}
		}
	}
	for _, p := range c.Members {
		p.ClientURL = draw(p.ClientURL, p.clientScheme)
		p.PeerURL = draw(p.PeerURL, p.peerScheme)
	}
	c.setInitialCluster()
}

// hostPort is u without its scheme.
func hostPort(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		return u[i+3:]
	}
	return u
}

func (c *Cluster) setInitialCluster() {
	var ic []string
	for _, p := range c.Members {
		ic = append(ic, p.Name+"="+p.PeerURL)
	}
	for _, p := range c.Members {
		p.InitialCluster = strings.Join(ic, ",")
	}
}

// SetSchemes calls Proc.SetSchemes on every member (e.g. "https", "https"
// for client and peer TLS; "" keeps a scheme) and rebuilds
// --initial-cluster. Call it before Start; the members' TLS flags go in
// their ExtraArgs and the client configuration in their ClientTLS (Client
// and NewJoiner use the first member's).
func (c *Cluster) SetSchemes(client, peer string) {
	for _, p := range c.Members {
		p.SetSchemes(client, peer)
	}
	c.setInitialCluster()
}

// Start starts all members at once (a member only becomes ready once a
// quorum runs) and waits, up to timeout, until each is ready and answers a
// Get. If a member could not bind a port on the cluster's first start, the
// whole cluster is started again on fresh ports and data directories. On
// failure all members are killed.
func (c *Cluster) Start(timeout time.Duration) error {
	for attempt := 1; ; attempt++ {
		errs := make([]error, len(c.Members))
		var wg sync.WaitGroup
		for i, p := range c.Members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if errs[i] = p.Start(timeout); errs[i] != nil {
					// Stop the others from waiting for a quorum that
					// may never come.
					c.killAll()
				}
			}()
		}
		wg.Wait()
		err := errors.Join(errs...)
		if err == nil {
			c.started = true
			return nil
		}
		c.killAll()
		if c.started {
			return err
		}
		portTaken := false
		for _, p := range c.Members {
			if strings.Contains(strings.ToLower(p.LogTail(20)), "address already in use") {
				portTaken = true
			}
		}
		if !portTaken || attempt == 3 {
			return err
		}
		c.t.Logf("cluster: a port was taken, starting all members again on new ports")
		for _, p := range c.Members {
			p.DataDir = filepath.Join(filepath.Dir(p.LogPath), fmt.Sprintf("data-%d", attempt))
			p.everReady = false
		}
		c.assignPorts(true)
	}
}

func (c *Cluster) killAll() {
	for _, p := range c.Members {
		if p.Running() {
			_ = p.Kill()
		}
	}
}

// Restart kills member i if it runs and starts it again on the same ports
// and data directory, waiting up to timeout for it to be ready.
func (c *Cluster) Restart(i int, timeout time.Duration) error {
	p := c.Members[i]
	if p.Running() {
		if err := p.Kill(); err != nil {
			return err
		}
	}
	return p.Start(timeout)
}

// Endpoints returns the members' client URLs, in member order.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, p := range c.Members {
		eps = append(eps, p.ClientURL)
	}
	return eps
}

// Client returns a new clientv3 client with every member as an endpoint,
// with logging off.
func (c *Cluster) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		TLS:         cloneTLS(c.Members[0].ClientTLS),
	})
}

// Leader waits up to LeaderTimeout until every running member answers
// Maintenance.Status naming the same leader, and that leader is a running
// member reporting itself leader (resp.Leader == resp.Header.MemberId). It
// returns that member and its index in Members, or fails the test.
func (c *Cluster) Leader(t testing.TB) (*Proc, int) {
	t.Helper()
	deadline := time.Now().Add(LeaderTimeout)
	for {
		i, err := c.leaderOnce()
		if err == nil {
			return c.Members[i], i
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running members did not agree on a leader within %v: %v", LeaderTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) leaderOnce() (int, error) {
	var leader uint64
	self := -1
	running := 0
	for i, p := range c.Members {
		if !p.Running() {
			continue
		}
		running++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := p.Status(ctx)
		cancel()
		if err != nil {
			return -1, fmt.Errorf("%s: Status: %w", p.Name, err)
		}
		if resp.Leader == 0 {
			return -1, fmt.Errorf("%s: no leader", p.Name)
		}
		if leader != 0 && resp.Leader != leader {
			return -1, fmt.Errorf("%s names leader %x, another member %x", p.Name, resp.Leader, leader)
		}
		leader = resp.Leader
		if resp.Leader == resp.Header.MemberId {
			self = i
		}
	}
	if running == 0 {
		return -1, errors.New("no member runs")
	}
	if self < 0 {
		return -1, fmt.Errorf("leader %x is not a running member reporting itself leader", leader)
	}
	return self, nil
}

// Status calls Maintenance.Status on this member through a fresh client.
func (p *Proc) Status(ctx context.Context) (*clientv3.StatusResponse, error) {
	cli, err := p.Client()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return cli.Status(ctx, p.ClientURL)
}

// NewJoiner prepares (but does not start) a process named name that joins
// the running cluster once it has been added with MemberAdd (or
// MemberAddAsLearner) under its PeerURL: a fresh data directory, client and
// peer ports used by no member, --initial-cluster listing the members of
// c.Members and then itself, --initial-cluster-state existing, the
// members' token and the first member's ExtraArgs. Its readiness probe is a
// serializable Get (ProbeSerializable), so a learner can be started too. It
// is not added to c.Members; append it once it runs to have Leader,
// Endpoints and Client include it. The process is killed when the test
// ends.
func (c *Cluster) NewJoiner(name string) *Proc {
	c.t.Helper()
	p := New(c.t, c.Members[0].Bin, name)
	used := map[string]bool{}
	var ic []string
	for _, m := range c.Members {
		used[hostPort(m.ClientURL)], used[hostPort(m.PeerURL)] = true, true
		ic = append(ic, m.Name+"="+m.PeerURL)
	}
	first := c.Members[0]
	p.SetSchemes(first.clientScheme, first.peerScheme)
	p.ClientTLS = first.ClientTLS
	for used[hostPort(p.ClientURL)] {
		p.ClientURL = LoopbackURL(p.clientScheme, FreePort(c.t))
	}
	used[hostPort(p.ClientURL)] = true
	for used[hostPort(p.PeerURL)] || hostPort(p.PeerURL) == hostPort(p.ClientURL) {
		p.PeerURL = LoopbackURL(p.peerScheme, FreePort(c.t))
	}
	p.InitialCluster = strings.Join(append(ic, p.Name+"="+p.PeerURL), ",")
	p.InitialClusterToken = c.Members[0].InitialClusterToken
	p.InitialClusterState = "existing"
	p.ExtraArgs = append([]string(nil), c.Members[0].ExtraArgs...)
	p.ProbeSerializable = true
	return p
}
