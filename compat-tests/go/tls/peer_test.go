package tls

import (
	"context"
	gotls "crypto/tls"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"rsetcd/compat-tests/internal/etcdproc"
)

// noPeerTLSEnv skips TestPeerTLS when set to 1, for a server under test
// that does not serve peer TLS yet.
const noPeerTLSEnv = "RSETCD_NO_PEER_TLS"

// peerFlags are the peer TLS flags of every member: the server
// certificate (EKU serverAuth and clientAuth) both ways, the CA, and
// certificates required from peers.
func peerFlags(p *pki) []string {
	return []string{
		"--peer-cert-file", p.ServerCert, "--peer-key-file", p.ServerKey,
		"--peer-trusted-ca-file", p.CAFile, "--peer-client-cert-auth",
	}
}

// TestPeerTLS runs a 3-member cluster with https client and peer URLs,
// client TLS (--client-cert-auth) and peer TLS (--peer-client-cert-auth) on
// the reference etcd and on rsetcd, concurrently, and compares transcripts:
// writes through one member read through the others, MemberList (https
// peer and client URLs), and TLS handshakes on a peer port (a certificate
// of the CA accepted, none or another CA's refused). Set
// RSETCD_NO_PEER_TLS=1 to skip it.
func TestPeerTLS(t *testing.T) {
	etcdproc.BinFromEnv(t)
	if os.Getenv(noPeerTLSEnv) == "1" {
		t.Skipf("%s=1: peer TLS scenarios skipped", noPeerTLSEnv)
	}
	p := genCerts(t)
	bins := []string{etcdproc.MustRefBin(t), etcdproc.BinFromEnv(t)}
	labels := []string{"etcd", "rsetcd"}
	var cs [2]*C
	var cls [2]*etcdproc.Cluster
	for i := range bins {
		quiet := &quietTB{TB: t}
		cl := etcdproc.NewCluster(quiet, bins[i], 3, append(clientCertAuth.flags(p), peerFlags(p)...)...)
		cl.SetSchemes("https", "https")
		for _, m := range cl.Members {
			m.ClientTLS = p.clientTLS(idRoot)
		}
		c := &C{s: &server{label: labels[i], proc: cl.Members[0], quiet: quiet}, t: t, pki: p, clients: map[string]*clientv3.Client{}}
		cs[i], cls[i] = c, cl
		t.Cleanup(c.close)
	}
	runEach(cs, func(i int, c *C) {
		cl := cls[i]
		if err := cl.Start(startTimeout); err != nil {
			c.s.quiet.loud.Store(true)
			c.violations = append(c.violations, fmt.Sprintf("starting the cluster: %v", err))
			return
		}
		peerScenario(c, cl)
		for _, m := range cl.Members {
			if !m.Running() {
				c.s.quiet.loud.Store(true)
			}
		}
	})
	compare(t, "peer TLS", cs)
}

var portRe = regexp.MustCompile(`127\.0\.0\.1:\d+`)

func peerScenario(c *C, cl *etcdproc.Cluster) {
	clients := make([]*clientv3.Client, len(cl.Members))
	for i, m := range cl.Members {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints: []string{m.ClientURL}, DialTimeout: callTimeout, Logger: zap.NewNop(),
			TLS: c.pki.clientTLS(idRoot),
		})
		if err != nil {
			c.violations = append(c.violations, fmt.Sprintf("client of %s: %v", m.Name, err))
			return
		}
		clients[i] = cli
		defer cli.Close()
	}
	on := func(i int, op string, f func(ctx context.Context, cli *clientv3.Client) (any, error)) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		c.record(fmt.Sprintf("[%s] %s", cl.Members[i].Name, op), c.output(f(ctx, clients[i])))
	}
	put := func(i int, k, v string) {
		on(i, fmt.Sprintf("Put %q=%q", k, v), func(ctx context.Context, cli *clientv3.Client) (any, error) {
			r, err := cli.Put(ctx, k, v)
			return (*pb.PutResponse)(r), err
		})
	}
	get := func(i int, k string) {
		on(i, fmt.Sprintf("Get %q (linearizable)", k), func(ctx context.Context, cli *clientv3.Client) (any, error) {
			r, err := cli.Get(ctx, k)
			return (*pb.RangeResponse)(r), err
		})
	}

	put(0, "k1", "v1")
	get(1, "k1")
	get(2, "k1")
	put(2, "k2", "v2")
	get(0, "k2")
	on(1, "Txn put k3 via a follower or the leader", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.Txn(ctx).Then(clientv3.OpPut("k3", "v3")).Commit()
		return (*pb.TxnResponse)(r), err
	})
	get(2, "k3")

	on(1, "MemberList (URLs without ports, by name)", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		var lines []string
		for _, m := range r.Members {
			lines = append(lines, fmt.Sprintf("%s peerURLs=%s clientURLs=%s learner=%v", m.Name,
				portRe.ReplaceAllString(strings.Join(m.PeerURLs, ","), "127.0.0.1:<port>"),
				portRe.ReplaceAllString(strings.Join(m.ClientURLs, ","), "127.0.0.1:<port>"), m.IsLearner))
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n") + "\n", nil
	})

	peer := strings.TrimPrefix(cl.Members[1].PeerURL, "https://")
	probe := func(who, what string, adjust func(*gotls.Config)) {
		_, cfg := c.endpoint(who)
		c.record(fmt.Sprintf("[%s] TLS handshake on m2's peer port: %s", who, what), c.probeAddr(peer, cfg, adjust, true))
	}
	c.Want("accepted")
	probe(idRoot, "certificate of the peer CA (CN=root, EKU clientAuth)", nil)
	c.Want(classConn)
	probe(nocert, "without a client certificate", nil)
	c.Want(classConn)
	probe(idStranger, "certificate of another CA", nil)
	c.Want("accepted")
	probe(idAlice, "TLS 1.2 only, certificate of the peer CA", tls12)
	c.Want(classUntrusted)
	probe(untrusting, "client not trusting the peer CA", nil)

	// The cluster keeps working over TLS peer links: a write after the
	// probes, read on every member.
	time.Sleep(100 * time.Millisecond)
	put(1, "k4", "v4")
	for i := range cl.Members {
		get(i, "k4")
	}
}
