package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/metadata"

	"rsetcd/compat-tests/internal/etcdproc"
	"rsetcd/compat-tests/internal/transcript"
)

// JWT tokens (--auth-token jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...):
// both servers of a pair get the same key files, made by newJWTKeys.

const (
	eOldRev     = "etcdserver: revision of auth store is old"
	eVerifyOnly = "auth: token signing attempted with verify-only key"
)

// jwtScenario is a scenario with the --auth-token options it runs under.
type jwtScenario struct {
	scenario
	opts func(k *jwtKeys) []string
}

func jwtScenarios(k *jwtKeys) []jwtScenario {
	return []jwtScenario{
		{scenario{"rs256", func(c *C) { jwtRS256(c, k) }}, func(k *jwtKeys) []string {
			return []string{"pub-key=" + k.rsaPub, "priv-key=" + k.rsaPKCS1, "sign-method=RS256", "ttl=5m"}
		}},
		{scenario{"ttl", jwtTTL}, func(k *jwtKeys) []string {
			return []string{"pub-key=" + k.rsaPubPKCS1, "priv-key=" + k.rsaPKCS8, "sign-method=RS256", "ttl=2s"}
		}},
		{scenario{"es256", func(c *C) { jwtES256(c, k) }}, func(k *jwtKeys) []string {
			return []string{"pub-key=" + k.ecPub, "priv-key=" + k.ecPKCS8, "sign-method=ES256", "ttl=5m"}
		}},
		{scenario{"es256_priv_only", func(c *C) { jwtES256PrivOnly(c, k) }}, func(k *jwtKeys) []string {
			return []string{"priv-key=" + k.ecPKCS8, "sign-method=ES256"}
		}},
		{scenario{"verify_only", func(c *C) { jwtVerifyOnly(c, k) }}, func(k *jwtKeys) []string {
			return []string{"pub-key=" + k.rsaPub, "sign-method=RS256", "ttl=5m"}
		}},
	}
}

// TestJWTDiff runs the JWT scenarios, each on a fresh etcd 3.6.16 and a
// fresh rsetcd started with the same --auth-token jwt options and key files,
// and requires identical transcripts (see TestAuthDiff).
func TestJWTDiff(t *testing.T) {
	etcdproc.BinFromEnv(t)
	etcdproc.MustRefBin(t)
	k := newJWTKeys(t)
	for _, sc := range jwtScenarios(k) {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runScenarioArgs(t, sc.scenario, jwtFlag(sc.opts(k)...)...)
		})
	}
}

// jwtRS256: tokens issued with RS256 (PKCS#1 private key, PKIX public key),
// used raw and by clientv3, made old by an auth change, tampered with, and
// signed by the test with the servers' key and with another one.
func jwtRS256(c *C, k *jwtKeys) {
	setup(c)
	c.Put("root", "a1", "v")
	c.AuthStatus("root")
	c.Authenticate("r1", "root", "rootpw")
	c.JWTShape("r1", 5*time.Minute)
	c.Authenticate("a1", "alice", "alicepw")
	c.JWTShape("a1", 5*time.Minute)
	c.Get("tok:r1", "a1")
	c.Get("bearer:r1", "a1")
	c.Get("tok:a1", "a1")
	c.Want(eDenied)
	c.Get("tok:a1", "zzz")
	c.V3Get("root", "a1")
	c.V3Get("alice", "a1")
	c.UserList("tok:r1")
	c.Want(eDenied)
	c.UserList("tok:a1")
	c.Note("an auth change: a JWT keeps the auth revision it was issued at")
	c.RoleAdd("tok:r1", "other")
	c.AuthStatus("tok:r1")
	c.WantEach(eOldRev, func() {
		c.Get("tok:r1", "a1")
		c.Get("tok:a1", "a1")
		c.Note("a key alice may not read: the revision is checked first")
		c.Get("tok:a1", "zzz")
		c.Range("tok:r1", &pb.RangeRequest{Key: []byte("a1"), Serializable: true})
		c.Put("tok:r1", "a1", "x")
		c.Put("tok:a1", "a1", "x")
		c.Del("tok:a1", "a1", "")
		c.Txn("tok:r1", &pb.TxnRequest{Success: []*pb.RequestOp{opGet("a1", "")}})
		c.Txn("tok:a1", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("a1", "x")}})
	})
	c.Note("admin RPCs do not look at the token's revision")
	c.UserList("tok:r1")
	c.RoleGet("tok:r1", "other")
	c.Want(eDenied)
	c.UserList("tok:a1")
	c.Note("a watch created with an old token")
	w := c.OpenWatch("tok:a1")
	defer w.Close()
	c.Want(eOldRev)
	w.Create(&pb.WatchCreateRequest{Key: []byte("a1")})
	c.Note("clientv3 fetches a new token on an old revision")
	c.V3Get("root", "a1")
	c.V3Get("alice", "a1")
	c.Authenticate("r2", "root", "rootpw")
	c.JWTShape("r2", 5*time.Minute)
	c.Get("tok:r2", "a1")
	c.Put("tok:r2", "a1", "v2")
	rev := c.AuthRevision("tok:r2")

	c.Note("tampered tokens")
	c.DeriveToken("badsig", "r2", tamperSig)
	c.DeriveToken("baduser", "r2", func(tok string) string {
		return tamperClaims(tok, func(m claims) { m["username"] = "alice" })
	})
	c.DeriveToken("badrev", "r2", func(tok string) string {
		return tamperClaims(tok, func(m claims) { m["revision"] = rev + 1 })
	})
	c.DeriveToken("badexp", "r2", func(tok string) string {
		return tamperClaims(tok, func(m claims) { m["exp"] = time.Now().Add(time.Hour).Unix() })
	})
	c.DeriveToken("twoparts", "r2", func(tok string) string { return tok[:strings.LastIndex(tok, ".")] })
	c.DeriveToken("nosig", "r2", func(tok string) string { return tok[:strings.LastIndex(tok, ".")+1] })
	c.SetToken("otherkey", signJWT("RS256", k.rsaOther, userClaims("root", rev)))
	c.SetToken("hs256", signJWT("HS256", k.rsaPubPEM, userClaims("root", rev)))
	c.SetToken("none", signJWT("none", nil, userClaims("root", rev)))
	c.WantEach(eBadToken, func() {
		c.Note("signature with one bit flipped")
		c.Get("tok:badsig", "a1")
		c.Note("payload: username changed")
		c.Get("tok:baduser", "a1")
		c.Note("payload: revision changed")
		c.Get("tok:badrev", "a1")
		c.Note("payload: exp changed")
		c.Get("tok:badexp", "a1")
		c.Note("no signature part")
		c.Get("tok:twoparts", "a1")
		c.Note("an empty signature")
		c.Get("tok:nosig", "a1")
		c.Note("the same claims signed with another RSA key")
		c.Get("tok:otherkey", "a1")
		c.UserList("tok:otherkey")
		c.Put("tok:otherkey", "a1", "x")
		c.Note("HS256 keyed with the public key's PEM")
		c.Get("tok:hs256", "a1")
		c.Note("alg none")
		c.Get("tok:none", "a1")
	})
	c.Note("the same claims signed by the test with the servers' key")
	c.SetToken("selfsigned", signJWT("RS256", k.rsa, userClaims("root", rev)))
	c.Get("tok:selfsigned", "a1")
	c.AuthStatus("tok:r2")
}

// jwtTTL: ttl=2s (PKCS#8 private key, PKCS#1 public key); a token is void
// 2 s after it was issued, whatever its use.
func jwtTTL(c *C) {
	setup(c)
	c.Put("root", "a1", "v")
	c.Authenticate("t", "alice", "alicepw")
	c.JWTShape("t", 2*time.Second)
	c.Get("tok:t", "a1")
	c.Note("3 s later: past the 2 s ttl")
	c.Sleep(3 * time.Second)
	c.WantEach(eBadToken, func() {
		c.Get("tok:t", "a1")
		c.Put("tok:t", "a1", "x")
		c.UserGet("tok:t", "alice")
		c.AuthStatus("tok:t")
	})
	w := c.OpenWatch("tok:t")
	defer w.Close()
	c.Want(eBadToken)
	w.Create(&pb.WatchCreateRequest{Key: []byte("a1")})
	c.Note("clientv3 logs in again")
	c.V3Get("alice", "a1")
	c.V3Get("root", "a1")
	c.Authenticate("t2", "alice", "alicepw")
	c.JWTShape("t2", 2*time.Second)
	c.Get("tok:t2", "a1")
}

// jwtES256: ES256 with both keys (PKCS#8 private key, PKIX public key; a
// SEC1 private key is tried in TestJWTStartOptions).
func jwtES256(c *C, k *jwtKeys) {
	setup(c)
	c.Put("root", "a1", "v")
	c.Authenticate("r1", "root", "rootpw")
	c.JWTShape("r1", 5*time.Minute)
	c.Note("ECDSA signatures are randomized")
	c.Authenticate("r1b", "root", "rootpw")
	c.Get("tok:r1", "a1")
	c.Get("tok:r1b", "a1")
	c.Put("tok:r1", "a1", "v1")
	c.V3Get("root", "a1")
	c.V3Get("alice", "a1")
	c.Authenticate("a1", "alice", "alicepw")
	c.Get("tok:a1", "a1")
	c.Want(eDenied)
	c.Get("tok:a1", "zzz")
	c.RoleAdd("tok:r1", "other")
	c.Want(eOldRev)
	c.Get("tok:r1", "a1")
	c.V3Get("alice", "a1")
	c.Authenticate("r2", "root", "rootpw")
	c.Get("tok:r2", "a1")
	rev := c.AuthRevision("tok:r2")
	c.Note("signed by the test with the servers' key (r||s)")
	c.SetToken("selfsigned", signJWT("ES256", k.ec, userClaims("root", rev)))
	c.Get("tok:selfsigned", "a1")
	c.DeriveToken("badsig", "r2", tamperSig)
	c.SetToken("der", signJWT("ES256-DER", k.ec, userClaims("root", rev)))
	c.SetToken("otherkey", signJWT("ES256", k.ecOther, userClaims("root", rev)))
	c.SetToken("rs256", signJWT("RS256", k.rsa, userClaims("root", rev)))
	c.WantEach(eBadToken, func() {
		c.Note("signature with one bit flipped")
		c.Get("tok:badsig", "a1")
		c.Note("an ASN.1 DER signature instead of r||s")
		c.Get("tok:der", "a1")
		c.Note("signed with another P-256 key")
		c.Get("tok:otherkey", "a1")
		c.Note("alg RS256 on an ES256 server")
		c.Get("tok:rs256", "a1")
	})
}

// jwtES256PrivOnly: ES256 with only a private key (PKCS#8) and no ttl.
func jwtES256PrivOnly(c *C, k *jwtKeys) {
	setup(c)
	c.Put("root", "a1", "v")
	c.Authenticate("r1", "root", "rootpw")
	c.JWTShape("r1", 5*time.Minute)
	c.Get("tok:r1", "a1")
	c.V3Get("alice", "a1")
	rev := c.AuthRevision("tok:r1")
	c.SetToken("selfsigned", signJWT("ES256", k.ec, userClaims("alice", rev)))
	c.Get("tok:selfsigned", "a1")
	c.Want(eDenied)
	c.Get("tok:selfsigned", "zzz")
}

// jwtVerifyOnly: RS256 with only the public key: the servers cannot issue
// tokens, but accept tokens the test signs with the private key.
func jwtVerifyOnly(c *C, k *jwtKeys) {
	c.Note("clientv3.New with credentials fails (setup's Logins)")
	setup(c)
	c.Want(eVerifyOnly)
	c.Authenticate("t", "root", "rootpw")
	c.Want(eVerifyOnly)
	c.Authenticate("t", "alice", "alicepw")
	c.Want(eAuthFailed)
	c.Authenticate("t", "alice", "wrong")
	c.Want(eUserEmpty)
	c.Get(anon, "a1")
	c.Want(eUserEmpty)
	c.AuthStatus(anon)
	c.Note("AuthStatus takes any valid token, here one of revision 0")
	c.SetToken("boot", signJWT("RS256", k.rsa, userClaims("root", 0)))
	rev := c.AuthRevision("tok:boot")
	if rev < 2 {
		rev = 2 // etcd's is >= 2 once auth is enabled; keeps rev-1 below from wrapping
	}
	c.SetToken("root", signJWT("RS256", k.rsa, userClaims("root", rev)))
	c.SetToken("alice", signJWT("RS256", k.rsa, userClaims("alice", rev)))
	c.Put("tok:root", "a1", "v")
	c.Get("tok:root", "a1")
	c.Get("bearer:root", "a1")
	c.Get("tok:alice", "a1")
	c.Want(eDenied)
	c.Get("tok:alice", "zzz")
	c.UserList("tok:root")
	c.Want(eDenied)
	c.UserList("tok:alice")

	c.Note("claims the test varies")
	now := time.Now()
	c.SetToken("noexp", signJWT("RS256", k.rsa, claims{"username": "root", "revision": rev}))
	c.SetToken("expired", signJWT("RS256", k.rsa, claims{"username": "root", "revision": rev, "exp": now.Add(-time.Minute).Unix()}))
	c.SetToken("nbf", signJWT("RS256", k.rsa, claims{"username": "root", "revision": rev, "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()}))
	c.SetToken("extra", signJWT("RS256", k.rsa, claims{"username": "root", "revision": rev, "exp": now.Add(time.Hour).Unix(), "iss": "someone", "color": "blue"}))
	c.SetToken("norev", signJWT("RS256", k.rsa, claims{"username": "root", "exp": now.Add(time.Hour).Unix()}))
	c.SetToken("strrev", signJWT("RS256", k.rsa, claims{"username": "root", "revision": fmt.Sprint(rev), "exp": now.Add(time.Hour).Unix()}))
	c.SetToken("nouser", signJWT("RS256", k.rsa, claims{"revision": rev, "exp": now.Add(time.Hour).Unix()}))
	c.SetToken("nobody", signJWT("RS256", k.rsa, userClaims("nobody", rev)))
	c.SetToken("oldrev", signJWT("RS256", k.rsa, userClaims("root", rev-1)))
	c.SetToken("futurerev", signJWT("RS256", k.rsa, userClaims("root", rev+5)))
	c.SetToken("rev0", signJWT("RS256", k.rsa, userClaims("root", 0)))
	c.SetToken("otherkey", signJWT("RS256", k.rsaOther, userClaims("root", rev)))
	c.Note("no exp claim")
	c.Get("tok:noexp", "a1")
	c.Note("extra claims")
	c.Get("tok:extra", "a1")
	c.WantEach(eBadToken, func() {
		c.Note("exp a minute ago")
		c.Get("tok:expired", "a1")
		c.Note("nbf in an hour")
		c.Get("tok:nbf", "a1")
		c.Note("no revision claim")
		c.Get("tok:norev", "a1")
		c.Note("revision as a string")
		c.Get("tok:strrev", "a1")
		c.Note("no username claim")
		c.Get("tok:nouser", "a1")
		c.Note("signed with another RSA key")
		c.Get("tok:otherkey", "a1")
	})
	c.Note("a user that does not exist")
	c.Want(eDenied)
	c.Get("tok:nobody", "a1")
	c.Want(eUserNotFound)
	c.UserList("tok:nobody")
	c.Note("an older revision")
	c.WantEach(eOldRev, func() {
		c.Get("tok:oldrev", "a1")
		c.Put("tok:oldrev", "a1", "x")
	})
	c.Note("a newer revision: etcd refuses the Range (the revision is not the store's) but not the Put")
	c.Want(eOldRev)
	c.Get("tok:futurerev", "a1")
	c.Put("tok:futurerev", "a1", "future")
	c.Note("revision 0")
	c.WantEach(eUserEmpty, func() {
		c.Get("tok:rev0", "a1")
		c.Put("tok:rev0", "a1", "zero")
	})
	c.Get("tok:root", "a1")
	c.Note("an auth change made with a token the test signed")
	c.RoleAdd("tok:root", "other")
	c.Want(eOldRev)
	c.Get("tok:root", "a1")
	rev2 := c.AuthRevision("tok:root")
	c.SetToken("root2", signJWT("RS256", k.rsa, userClaims("root", rev2)))
	c.Get("tok:root2", "a1")
	c.AuthDisable("tok:root2")
	c.Get(anon, "a1")
}

// TestJWTStartOptions starts each server with --auth-token options etcd
// refuses (or, for the "ok_" cases, accepts) and requires rsetcd to refuse
// (or accept) them too. Only whether the server starts is compared; the
// error texts differ. Cases about one option give the others valid values
// (both keys), so that they fail for that option.
func TestJWTStartOptions(t *testing.T) {
	sutBin := etcdproc.BinFromEnv(t)
	refBin := etcdproc.MustRefBin(t)
	k := newJWTKeys(t)
	cases := []struct {
		name   string
		args   []string
		starts bool
	}{
		{"jwt_no_keys", []string{"--auth-token", "jwt,sign-method=RS256"}, false},
		{"bogus_type", []string{"--auth-token", "bogus"}, false},
		{"jwt_no_sign_method", jwtFlag("priv-key="+k.rsaPKCS1, "pub-key="+k.rsaPub), false},
		{"jwt_unknown_sign_method", jwtFlag("sign-method=XX256", "priv-key="+k.rsaPKCS1, "pub-key="+k.rsaPub), false},
		{"jwt_keys_mismatch", jwtFlag("sign-method=RS256", "priv-key="+k.rsaPKCS1, "pub-key="+k.rsaOtherPub), false},
		{"jwt_ec_keys_for_RS256", jwtFlag("sign-method=RS256", "priv-key="+k.ecPKCS8, "pub-key="+k.ecPub), false},
		{"jwt_rsa_keys_for_ES256", jwtFlag("sign-method=ES256", "priv-key="+k.rsaPKCS8, "pub-key="+k.rsaPub), false},
		{"jwt_missing_file", jwtFlag("sign-method=RS256", "priv-key=/nonexistent/rsetcd-jwt-key.pem", "pub-key="+k.rsaPub), false},
		{"jwt_not_pem", jwtFlag("sign-method=RS256", "priv-key="+k.notPEM, "pub-key="+k.rsaPub), false},
		{"jwt_bad_ttl", jwtFlag("sign-method=RS256", "priv-key="+k.rsaPKCS1, "pub-key="+k.rsaPub, "ttl=soon"), false},
		{"jwt_duplicate_option", jwtFlag("sign-method=RS256", "priv-key="+k.rsaPKCS1, "pub-key="+k.rsaPub, "ttl=5m", "ttl=5m"), false},
		{"jwt_option_without_value", jwtFlag("sign-method=RS256", "priv-key="+k.rsaPKCS1, "pub-key="+k.rsaPub, "ttl"), false},
		{"jwt_HS256_no_key", jwtFlag("sign-method=HS256"), false},
		{"ok_jwt_unknown_option", jwtFlag("sign-method=RS256", "priv-key="+k.rsaPKCS1, "pub-key="+k.rsaPub, "color=blue"), true},
		{"ok_jwt_RS256_priv_only_PKCS1", jwtFlag("sign-method=RS256", "priv-key="+k.rsaPKCS1), true},
		{"ok_jwt_RS256_PKCS8_PKCS1pub", jwtFlag("sign-method=RS256", "priv-key="+k.rsaPKCS8, "pub-key="+k.rsaPubPKCS1), true},
		{"ok_jwt_ES256_SEC1_PKIXpub", jwtFlag("sign-method=ES256", "priv-key="+k.ecSEC1, "pub-key="+k.ecPub), true},
		{"ok_jwt_ES256_priv_only_PKCS8", jwtFlag("sign-method=ES256", "priv-key="+k.ecPKCS8), true},
		{"ok_jwt_ES256_pub_only", jwtFlag("sign-method=ES256", "pub-key="+k.ecPub), true},
		{"ok_jwt_HS256", jwtFlag("sign-method=HS256", "priv-key="+k.hmacSecret), true},
		{"ok_simple", []string{"--auth-token", "simple"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var outcome [2]string
			var procs [2]*etcdproc.Proc
			var wg sync.WaitGroup
			for i, bin := range []string{refBin, sutBin} {
				p := etcdproc.New(t, bin, memberName)
				p.ExtraArgs = tc.args
				procs[i] = p
				wg.Add(1)
				go func() {
					defer wg.Done()
					outcome[i] = startOutcome(p)
				}()
			}
			wg.Wait()
			want := "refuses to start"
			if tc.starts {
				want = "starts"
			}
			if !strings.HasPrefix(outcome[0], want) {
				t.Errorf("the reference etcd contradicts the test: want %q, etcd %s\netcd's last lines:\n%s", want, outcome[0], procs[0].LogTail(15))
			}
			if class(outcome[1]) != class(outcome[0]) {
				t.Errorf("%s: etcd %s, rsetcd %s\nrsetcd's last lines:\n%s", strings.Join(tc.args, " "), outcome[0], outcome[1], procs[1].LogTail(15))
			}
			if testing.Verbose() {
				t.Logf("%s\n  etcd:   %s\n  rsetcd: %s", strings.Join(tc.args, " "), outcome[0], outcome[1])
				for i, label := range []string{"etcd", "rsetcd"} {
					if !strings.HasPrefix(outcome[i], "starts") {
						t.Logf("%s's last line: %s", label, lastError(procs[i].LogTail(1)))
					}
				}
			}
		})
	}
}

// startOutcome starts p and says "starts", "refuses to start (exit status
// N)" or "did not start: ..." (neither ready nor exited with a failure).
func startOutcome(p *etcdproc.Proc) string {
	err := p.Start(startTimeout)
	if err == nil {
		return "starts"
	}
	var ee *exec.ExitError
	if exitErr := p.ExitError(); errors.As(exitErr, &ee) && ee.ExitCode() != 0 {
		return fmt.Sprintf("refuses to start (exit status %d)", ee.ExitCode())
	}
	return "did not start: " + err.Error()
}

// lastError is the "error" field of a JSON log line (etcd's zap format),
// or the line cut to 300 bytes.
func lastError(line string) string {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) == nil {
		if e, ok := m["error"]; ok {
			return fmt.Sprintf("%v: %v", m["msg"], e)
		}
	}
	if len(line) > 300 {
		line = line[:300] + "..."
	}
	return line
}

func class(outcome string) string {
	for _, c := range []string{"starts", "refuses to start"} {
		if strings.HasPrefix(outcome, c) {
			return c
		}
	}
	return outcome
}

// TestJWTCrossServer starts etcd and rsetcd with the same keys and the same
// users, and requires tokens issued by each server to be accepted by the
// other (the JWT formats agree). 40 tokens each way, so that ECDSA
// signatures with a short r or s come up.
func TestJWTCrossServer(t *testing.T) {
	etcdproc.BinFromEnv(t)
	etcdproc.MustRefBin(t)
	k := newJWTKeys(t)
	for _, tc := range []struct {
		name string
		opts []string
	}{
		{"RS256", []string{"pub-key=" + k.rsaPub, "priv-key=" + k.rsaPKCS1, "sign-method=RS256"}},
		{"ES256", []string{"pub-key=" + k.ecPub, "priv-key=" + k.ecPKCS8, "sign-method=ES256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ref, sut := etcdproc.StartPair(t, memberName, startTimeout, jwtFlag(tc.opts...)...)
			var cs [2]*C
			for i, s := range []*server{{"etcd", ref}, {"rsetcd", sut}} {
				c, err := newC(t, s)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(c.close)
				setup(c)
				c.Put("root", "a1", "v")
				cs[i] = c
			}
			revs := [2]uint64{cs[0].AuthRevision("root"), cs[1].AuthRevision("root")}
			if revs[0] == 0 || revs[0] != revs[1] {
				t.Fatalf("auth revisions differ after the same setup: etcd %d, rsetcd %d", revs[0], revs[1])
			}
			const n = 40
			for from := range 2 {
				to := 1 - from
				failures := 0
				for i := range n {
					user := []string{"root", "alice"}[i%2]
					tok, err := rawAuthenticate(cs[from], user, user+"pw")
					if err != nil {
						t.Fatalf("%s: Authenticate %s: %v", cs[from].s.label, user, err)
					}
					if err := rawGet(cs[to], tok, "a1"); err != nil {
						t.Errorf("token %d: a %s token of %s issued by %s, used on %s: %s\n  token: %s", i, tc.name, user, cs[from].s.label, cs[to].s.label, transcript.RenderErr(err), tok)
						if failures++; failures == 3 {
							break
						}
					}
				}
			}
		})
	}
}

func rawAuthenticate(c *C, user, password string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	r, err := pb.NewAuthClient(c.plain).Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: password})
	if err != nil {
		return "", err
	}
	return r.Token, nil
}

func rawGet(c *C, tok, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "token", tok)
	_, err := pb.NewKVClient(c.plain).Range(ctx, &pb.RangeRequest{Key: []byte(key)})
	return err
}
