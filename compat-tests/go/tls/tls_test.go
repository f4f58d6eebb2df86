package tls

import (
	"context"
	gotls "crypto/tls"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"rsetcd/compat-tests/internal/etcdproc"
)

// TestTLSDiff runs every scenario against a fresh etcd 3.6.16 and a fresh
// rsetcd with the same client TLS flags and requires identical transcripts.
// Subtests run in parallel; select one with -run 'TestTLSDiff/cn-auth'.
func TestTLSDiff(t *testing.T) {
	etcdproc.BinFromEnv(t)
	etcdproc.MustRefBin(t)
	etcdctlBin(t)
	p := genCerts(t)
	seen := map[string]bool{}
	for _, sc := range scenarios {
		if seen[sc.name] {
			t.Fatalf("duplicate scenario name %q", sc.name)
		}
		seen[sc.name] = true
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, p, sc)
		})
	}
}

const (
	rootPW  = "rootpw"
	alicePW = "alicepw"
)

// Messages etcd answers with (server-side, compared exactly anyway; Want
// makes sure the transcripts contain them).
const (
	errDenied    = "etcdserver: permission denied"
	errUserEmpty = "etcdserver: user name is empty"
	errAuthFail  = "etcdserver: authentication failed, invalid user ID or password"
	errGatewayCN = "CommonName of client sending a request against gateway will be ignored and not used as expected"
)

var scenarios = []scenario{
	{name: "server-tls", mode: serverTLS, run: serverTLSScenario},
	{name: "client-cert-auth", mode: clientCertAuth, run: clientCertAuthScenario},
	{name: "trusted-ca-without-client-cert-auth", mode: trustedCA, run: trustedCAScenario},
	{name: "cn-auth", mode: clientCertAuth, run: cnAuthScenario},
}

func tls12(cfg *gotls.Config) { cfg.MaxVersion = gotls.VersionTLS12 }

func tls11(cfg *gotls.Config) {
	cfg.MinVersion = gotls.VersionTLS10
	cfg.MaxVersion = gotls.VersionTLS11
}

func http11Only(cfg *gotls.Config) { cfg.NextProtos = []string{"http/1.1"} }

// serverTLSScenario: --cert-file/--key-file only. Clients need no
// certificate; KV, HTTP endpoints, the gateway and etcdctl work over TLS;
// plaintext does not.
func serverTLSScenario(c *C) {
	c.Probe(nocert, "default (TLS 1.3, ALPN h2+http/1.1)", nil)
	c.Probe(nocert, "ServerName localhost (DNS SAN, SNI sent)", func(cfg *gotls.Config) { cfg.ServerName = "localhost" })
	c.Probe(nocert, "TLS 1.2 only", tls12)
	c.Probe(nocert, "ALPN http/1.1 only", http11Only)
	c.Note("TLS 1.0-1.1 are refused")
	c.Want(classConn)
	c.Probe(nocert, "TLS 1.0-1.1 only", tls11)
	c.Note("the client's certificate is not asked for")
	c.Probe(idRoot, "with a client certificate", nil)
	c.Probe(idStranger, "with a certificate of another CA", nil)
	c.Want(classUntrusted)
	c.Probe(untrusting, "client not trusting the server's CA", nil)

	c.Put(nocert, "foo", "bar")
	c.Get(nocert, "foo")
	c.Put(idAlice, "foo", "baz")
	c.Get(idStranger, "foo")
	c.Note("plaintext gRPC to the https port")
	c.Get(plaintext, "foo")
	c.Get(untrusting, "foo")

	c.HTTP(nocert, "GET", "/health", "")
	c.HTTP(nocert, "GET", "/version", "")
	c.HTTP(nocert, "GET", "/metrics", "")
	c.HTTP(nocert, "POST", "/v3/kv/range", `{"key":"Zm9v"}`)
	c.HTTP(nocert, "POST", "/v3/kv/put", `{"key":"Zm9v","value":"cXV4"}`)
	c.HTTP1(nocert, "GET", "/health", "")
	c.HTTP1(nocert, "POST", "/v3/kv/range", `{"key":"Zm9v"}`)
	c.Note("plaintext HTTP to the https port")
	c.HTTP(plaintext, "GET", "/health", "")
	c.HTTP(untrusting, "GET", "/health", "")

	c.Etcdctl(nocert, "put", "k", "v1")
	c.Etcdctl(nocert, "get", "k")
	c.Etcdctl(nocert, "get", "k", "-w", "json")
	c.Etcdctl(nocert, "endpoint", "health")
	c.Etcdctl(idRoot, "get", "foo")
	c.Etcdctl(plaintext, "get", "foo")
	c.Etcdctl(untrusting, "get", "foo")
}

// clientCertAuthScenario: --trusted-ca-file and --client-cert-auth, auth
// disabled. Only certificates of the trusted CA get in, on every
// protocol.
func clientCertAuthScenario(c *C) {
	c.Want(classConn)
	c.Probe(nocert, "without a client certificate", nil)
	c.Want(classConn)
	c.Probe(idStranger, "certificate of another CA (CN=root)", nil)
	c.Want("accepted")
	c.Probe(idRoot, "certificate CN=root", nil)
	c.Probe(idAlice, "certificate CN=alice, TLS 1.2 only", tls12)
	c.Want(classConn)
	c.Probe(nocert, "without a client certificate, TLS 1.2 only", tls12)
	c.Want(classConn)
	c.Probe(idStranger, "certificate of another CA, TLS 1.2 only", tls12)
	c.Probe(idBob, "certificate CN=bob, ALPN http/1.1 only", http11Only)

	c.Want(classTimeout)
	c.Put(nocert, "foo", "nocert")
	c.Want(classTimeout)
	c.Put(idStranger, "foo", "stranger")
	c.Put(idRoot, "foo", "root")
	c.Put(idAlice, "foo", "alice")
	c.Get(idBob, "foo")
	c.Get(plaintext, "foo")

	c.Want("error")
	c.HTTP(nocert, "GET", "/health", "")
	c.Want("error")
	c.HTTP(idStranger, "GET", "/health", "")
	c.HTTP(idRoot, "GET", "/health", "")
	c.HTTP(idAlice, "GET", "/version", "")
	c.HTTP(idAlice, "GET", "/metrics", "")
	c.HTTP(idAlice, "POST", "/v3/kv/range", `{"key":"Zm9v"}`)
	c.HTTP1(idBob, "POST", "/v3/kv/range", `{"key":"Zm9v"}`)
	c.Want("error")
	c.HTTP1(nocert, "GET", "/health", "")
	c.HTTP(plaintext, "GET", "/health", "")

	c.Etcdctl(idRoot, "put", "k", "v1")
	c.Etcdctl(idAlice, "get", "k")
	c.Etcdctl(idAlice, "endpoint", "health")
	c.Etcdctl(nocert, "get", "k")
	c.Etcdctl(idStranger, "get", "k")
	c.Etcdctl(nocert, "endpoint", "health")
}

// trustedCAScenario: --trusted-ca-file without --client-cert-auth. etcd 3.6
// then still requires and verifies client certificates (its TLS
// configuration does so whenever a trusted CA is set), but common-name
// authentication is off: a certificate alone is no user.
func trustedCAScenario(c *C) {
	c.Note("etcd requires a client certificate whenever --trusted-ca-file is set")
	c.Want(classConn)
	c.Probe(nocert, "without a client certificate", nil)
	c.Want(classConn)
	c.Probe(idStranger, "certificate of another CA", nil)
	c.Want("accepted")
	c.Probe(idAlice, "certificate CN=alice", nil)

	c.Want(classTimeout)
	c.Get(nocert, "foo")
	c.Put(idAlice, "a/1", "x")
	c.Want("error")
	c.HTTP(nocert, "GET", "/health", "")
	c.HTTP(idAlice, "GET", "/health", "")
	c.HTTP(idAlice, "POST", "/v3/kv/range", `{"key":"YS8x"}`)
	c.Etcdctl(nocert, "get", "a/1")
	c.Etcdctl(idAlice, "get", "a/1")

	setupAuth(c)
	c.Note("without --client-cert-auth the CN names no user")
	c.Want(errUserEmpty)
	c.Get(idRoot, "a/1")
	c.Want(errUserEmpty)
	c.Put(idRoot, "b/1", "x")
	c.Get(idRoot+"+root:"+rootPW, "a/1")
	c.Get(idAlice+"+alice:"+alicePW, "a/1")
	c.Want(errDenied)
	c.Get(idAlice+"+alice:"+alicePW, "b/1")
	c.Want(errUserEmpty)
	c.Etcdctl(idRoot, "get", "a/1")
	c.Etcdctl(idRoot+"+root:"+rootPW, "get", "a/1")
	c.HTTP(idRoot, "GET", "/health", "")
	c.Note("the gateway's CN check needs --client-cert-auth")
	c.Want(errUserEmpty)
	c.HTTP(idRoot, "POST", "/v3/kv/range", `{"key":"YS8x"}`)
	c.GatewayLogin(idRoot, "alice", alicePW)
	c.HTTP(idRoot, "POST", "/v3/kv/range", `{"key":"YS8x"}`, "Authorization", "<gateway token>")
}

// setupAuth creates user root (role root) and user alice (role areader:
// read on prefix a/), writes a/1 and b/1 and enables auth, all through the
// root certificate (auth is still disabled, so the certificate is enough).
func setupAuth(c *C) {
	v := func(op string, f func(ctx context.Context, cli *clientv3.Client) (any, error)) {
		c.V3(idRoot, op, f)
	}
	c.Put(idRoot, "a/1", "one")
	c.Put(idRoot, "b/1", "secret")
	v("UserAdd root", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.UserAdd(ctx, "root", rootPW)
		return (*pb.AuthUserAddResponse)(r), err
	})
	v("UserGrantRole root root", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.UserGrantRole(ctx, "root", "root")
		return (*pb.AuthUserGrantRoleResponse)(r), err
	})
	v("UserAdd alice", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.UserAdd(ctx, "alice", alicePW)
		return (*pb.AuthUserAddResponse)(r), err
	})
	v("RoleAdd areader", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.RoleAdd(ctx, "areader")
		return (*pb.AuthRoleAddResponse)(r), err
	})
	v("RoleGrantPermission areader READ a/ prefix", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.RoleGrantPermission(ctx, "areader", "a/", clientv3.GetPrefixRangeEnd("a/"), clientv3.PermissionType(authpb.READ))
		return (*pb.AuthRoleGrantPermissionResponse)(r), err
	})
	v("UserGrantRole alice areader", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.UserGrantRole(ctx, "alice", "areader")
		return (*pb.AuthUserGrantRoleResponse)(r), err
	})
	v("AuthEnable", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.AuthEnable(ctx)
		return (*pb.AuthEnableResponse)(r), err
	})
}

// cnAuthScenario: --client-cert-auth with auth enabled. A request without
// a token acts as the user named by the certificate's CN; a token wins over
// the CN; the JSON gateway ignores the CN.
func cnAuthScenario(c *C) {
	setupAuth(c)

	c.Note("CN=root acts as root")
	c.Put(idRoot, "b/2", "two")
	c.Get(idRoot, "b/", clientv3.WithPrefix())
	c.V3(idRoot, "UserList", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.UserList(ctx)
		return (*pb.AuthUserListResponse)(r), err
	})
	c.V3(idRoot, "AuthStatus", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.AuthStatus(ctx)
		return (*pb.AuthStatusResponse)(r), err
	})

	c.Note("CN=alice acts as alice")
	c.Get(idAlice, "a/1")
	c.Get(idAlice, "a/", clientv3.WithPrefix())
	c.Want(errDenied)
	c.Get(idAlice, "b/1")
	c.Want(errDenied)
	c.Put(idAlice, "a/2", "nope")
	c.Want(errDenied)
	c.V3(idAlice, "Delete b/1", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.Delete(ctx, "b/1")
		return (*pb.DeleteRangeResponse)(r), err
	})
	c.Want(errDenied)
	c.V3(idAlice, "UserList", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.UserList(ctx)
		return (*pb.AuthUserListResponse)(r), err
	})
	c.V3(idAlice, "Txn if a/1 exists then get a/1 else get b/1", func(ctx context.Context, cli *clientv3.Client) (any, error) {
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision("a/1"), ">", 0)).
			Then(clientv3.OpGet("a/1")).Else(clientv3.OpGet("b/1")).Commit()
		return (*pb.TxnResponse)(r), err
	})

	c.Note("CN=bob: no such user")
	c.Want(errDenied)
	c.Get(idBob, "a/1")

	c.Note("a token wins over the CN")
	c.Put(idAlice+"+root:"+rootPW, "b/3", "three")
	c.Get(idRoot+"+alice:"+alicePW, "a/1")
	c.Want(errDenied)
	c.Put(idRoot+"+alice:"+alicePW, "b/4", "four")
	c.Want(errAuthFail)
	c.Get(idRoot+"+root:wrong", "a/1")

	c.Note("watch as alice")
	c.Want(errDenied)
	c.Watch(idAlice, &pb.WatchCreateRequest{Key: []byte("b/1")}, nil)
	c.Watch(idAlice, &pb.WatchCreateRequest{Key: []byte("a/"), RangeEnd: []byte("a0")}, func() {
		c.Put(idRoot, "a/3", "three")
	})
	c.Want(errDenied)
	c.Watch(idBob, &pb.WatchCreateRequest{Key: []byte("a/1")}, nil)

	// With --client-cert-auth and auth enabled, etcd answers every /v3/
	// gateway request made with a certificate that has a CN with 400 (its
	// gateway would act as the server's own certificate otherwise); a
	// certificate without CN gets through and needs a token.
	c.Note("the gateway refuses certificates with a CN")
	c.Want(errGatewayCN)
	c.HTTP(idRoot, "POST", "/v3/kv/range", `{"key":"Yi8x"}`)
	c.Want(errGatewayCN)
	c.GatewayLogin(idAlice, "root", rootPW)
	// etcd's gateway calls its gRPC server over a connection that presents
	// the server's own certificate; that CN is ignored when the HTTP request
	// had an Accept header (forwarded as grpcgateway-accept metadata; curl
	// sends "Accept: */*"), otherwise it is the user (here CN=rsetcd-compat
	// server, no such user).
	c.Note("a certificate without CN, no token, Accept: */* (as curl)")
	c.Want(errUserEmpty)
	c.HTTP(idNoCN, "POST", "/v3/kv/range", `{"key":"Yi8x"}`, "Accept", "*/*")
	// Not compared: the same request without an Accept header, which etcd's
	// gateway answers as the user named by its own server certificate's CN
	// (permission denied here). rsetcd's gateway calls its handlers in process
	// and never takes a certificate's CN, so it answers "user name is empty".
	c.GatewayLogin(idNoCN, "root", rootPW)
	c.HTTP(idNoCN, "POST", "/v3/kv/range", `{"key":"Yi8x"}`, "Authorization", "<gateway token>")
	c.Want(errGatewayCN)
	c.HTTP(idAlice, "POST", "/v3/kv/range", `{"key":"Yi8x"}`, "Authorization", "<gateway token>")
	c.GatewayLogin(idNoCN, "alice", alicePW)
	c.Want(errDenied)
	c.HTTP(idNoCN, "POST", "/v3/kv/range", `{"key":"Yi8x"}`, "Authorization", "<gateway token>")
	c.HTTP(idNoCN, "POST", "/v3/kv/range", `{"key":"YS8x"}`, "Authorization", "<gateway token>")
	c.Note("not under /v3/")
	c.HTTP(idRoot, "GET", "/health", "")
	c.HTTP(idRoot, "GET", "/version", "")
	c.Note("a certificate without CN acts as user \"\" (no such user), not as no user")
	c.Want(errDenied)
	c.Get(idNoCN, "a/1")
	c.Want(errDenied)
	c.Etcdctl(idNoCN, "get", "a/1")

	c.Etcdctl(idRoot, "put", "b/5", "five")
	c.Etcdctl(idAlice, "get", "a/1")
	c.Etcdctl(idAlice, "get", "b/1")
	c.Etcdctl(idAlice, "put", "a/4", "x")
	c.Etcdctl(idAlice+"+root:"+rootPW, "put", "b/6", "six")
	c.Etcdctl(idBob, "get", "a/1")
	c.Etcdctl(idAlice, "endpoint", "health")
	c.Etcdctl(idRoot, "user", "list")
	c.Get(idRoot, "", clientv3.WithFromKey())
}
