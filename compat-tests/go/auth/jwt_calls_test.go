package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// Helpers of jwt_test.go: key files for --auth-token jwt, JWTs signed by
// the test (by hand: github.com/golang-jwt/jwt is not a dependency of this
// module) and steps that look inside tokens. The steps here, like those of
// calls_test.go, are labelled with the scenario line that made them.

// jwtKeys are the keys of one test, written as PEM files in a temp dir.
// etcd 3.6.16 reads them with golang-jwt/jwt v5: an RSA private key as
// PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"), an RSA public key
// as PKIX ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY"), an EC private key as
// SEC1 ("EC PRIVATE KEY") or PKCS#8, an EC public key as PKIX.
type jwtKeys struct {
	rsa      *rsa.PrivateKey // the servers' RSA key
	rsaOther *rsa.PrivateKey // an unrelated RSA key
	ec       *ecdsa.PrivateKey
	ecOther  *ecdsa.PrivateKey

	rsaPKCS1, rsaPKCS8     string // private key files
	rsaPub, rsaPubPKCS1    string // public key files (PKIX, PKCS#1)
	rsaOtherPub            string // PKIX
	ecSEC1, ecPKCS8, ecPub string
	hmacSecret             string // 32 random bytes (an HS256 key file)
	notPEM                 string // a text file
	rsaPubPEM              []byte // the content of rsaPub
}

func newJWTKeys(t testing.TB) *jwtKeys {
	t.Helper()
	dir := t.TempDir()
	if strings.ContainsAny(dir, ",=") {
		t.Fatalf("temp dir %q: --auth-token options cannot hold ',' or '='", dir)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	k := &jwtKeys{}
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ecOther, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)

	write := func(name, typ string, der []byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		must(os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	pkcs8 := func(key any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		must(err)
		return der
	}
	pkix := func(key any) []byte {
		der, err := x509.MarshalPKIXPublicKey(key)
		must(err)
		return der
	}
	k.rsaPKCS1 = write("rsa.pkcs1.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k.rsa))
	k.rsaPKCS8 = write("rsa.pkcs8.pem", "PRIVATE KEY", pkcs8(k.rsa))
	k.rsaPub = write("rsa.pub.pem", "PUBLIC KEY", pkix(&k.rsa.PublicKey))
	k.rsaPubPKCS1 = write("rsa.pub.pkcs1.pem", "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey))
	k.rsaOtherPub = write("rsa-other.pub.pem", "PUBLIC KEY", pkix(&k.rsaOther.PublicKey))
	sec1, err := x509.MarshalECPrivateKey(k.ec)
	must(err)
	k.ecSEC1 = write("ec.sec1.pem", "EC PRIVATE KEY", sec1)
	k.ecPKCS8 = write("ec.pkcs8.pem", "PRIVATE KEY", pkcs8(k.ec))
	k.ecPub = write("ec.pub.pem", "PUBLIC KEY", pkix(&k.ec.PublicKey))
	k.rsaPubPEM, err = os.ReadFile(k.rsaPub)
	must(err)

	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	k.hmacSecret = filepath.Join(dir, "hmac.key")
	must(os.WriteFile(k.hmacSecret, secret, 0o600))
	k.notPEM = filepath.Join(dir, "not-a-key.pem")
	must(os.WriteFile(k.notPEM, []byte("this is not a PEM file\n"), 0o600))
	return k
}

// jwtFlag is --auth-token jwt with opts ("key=value"), as two arguments.
func jwtFlag(opts ...string) []string {
	return []string{"--auth-token", strings.Join(append([]string{"jwt"}, opts...), ",")}
}

// ---- tokens signed by the test ----

var b64 = base64.RawURLEncoding

// claims are a JWT payload; json.Marshal writes a map's keys sorted, as
// golang-jwt does etcd's MapClaims.
type claims map[string]any

// userClaims are the claims etcd puts in a token: username, revision and
// exp (now + 5 min).
func userClaims(user string, rev uint64) claims {
	return claims{"username": user, "revision": rev, "exp": time.Now().Add(5 * time.Minute).Unix()}
}

// signJWT builds header.payload.signature for alg with key: RS256 (an
// *rsa.PrivateKey, PKCS#1 v1.5), ES256 (an *ecdsa.PrivateKey, r||s, 32
// bytes each), ES256-DER (alg "ES256" but an ASN.1 DER signature), HS256
// (a []byte secret), none (no signature).
func signJWT(alg string, key any, c claims) string {
	hdrAlg := strings.TrimSuffix(alg, "-DER")
	h, _ := json.Marshal(map[string]string{"alg": hdrAlg, "typ": "JWT"})
	p, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	sum := sha256.Sum256([]byte(input))
	var sig []byte
	switch alg {
	case "RS256":
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, sum[:])
	case "ES256":
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), sum[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	case "ES256-DER":
		sig, err = ecdsa.SignASN1(rand.Reader, key.(*ecdsa.PrivateKey), sum[:])
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case "none":
	default:
		panic("signJWT: unknown alg " + alg)
	}
	if err != nil {
		panic(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

// tamperSig flips one bit in the middle of the signature.
func tamperSig(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return tok + "x"
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return tok + "x"
	}
	sig[len(sig)/2] ^= 0x10
	parts[2] = b64.EncodeToString(sig)
	return strings.Join(parts, ".")
}

// tamperClaims rewrites the payload with edit applied, keeping header and
// signature.
func tamperClaims(tok string, edit func(claims)) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return tok + "x"
	}
	raw, err := b64.DecodeString(parts[1])
	if err != nil {
		return tok + "x"
	}
	c := claims{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return tok + "x"
	}
	edit(c)
	p, _ := json.Marshal(c)
	parts[1] = b64.EncodeToString(p)
	return strings.Join(parts, ".")
}

// ---- steps and token bookkeeping ----

// SetToken stores tok as tok:name (not a step).
func (c *C) SetToken(name, tok string) { c.tokens[name] = tok }

// DeriveToken stores f(token from) as tok:name, or nothing when there is no
// token from (a step using tok:name then records "skipped").
func (c *C) DeriveToken(name, from string, f func(string) string) {
	if tok, ok := c.tokens[from]; ok {
		c.tokens[name] = f(tok)
	}
}

// AuthRevision records an AuthStatus made by who and returns its
// auth_revision (0 on error), for tokens the test signs.
func (c *C) AuthRevision(who string) uint64 {
	var rev uint64
	c.call(who, "AuthStatus (the auth revision for tokens the test signs)", func(ctx context.Context, cc *grpc.ClientConn) (any, error) {
		r, err := pb.NewAuthClient(cc).AuthStatus(ctx, &pb.AuthStatusRequest{})
		if err == nil {
			rev = r.AuthRevision
		}
		return r, err
	})
	return rev
}

// JWTShape records the shape of token name: three dot-separated parts, the
// header's fields, the claim names, username and revision, whether exp is
// an integer now+ttl (within -3 s/+1 s), and the signature's length. The
// signature itself and exp are not recorded.
func (c *C) JWTShape(name string, ttl time.Duration) {
	tok, ok := c.tokens[name]
	if !ok {
		c.record(fmt.Sprintf("JWT shape of %s", name), "skipped: no token "+name)
		return
	}
	c.record(fmt.Sprintf("JWT shape of %s", name), jwtShape(tok, ttl))
}

func jwtShape(tok string, ttl time.Duration) string {
	var b strings.Builder
	parts := strings.Split(tok, ".")
	fmt.Fprintf(&b, "dot-separated parts: %d\n", len(parts))
	if len(parts) != 3 {
		return b.String()
	}
	decode := func(what, seg string) map[string]any {
		raw, err := b64.DecodeString(seg)
		if err != nil {
			fmt.Fprintf(&b, "%s: not unpadded base64url: %v\n", what, err)
			return nil
		}
		m := map[string]any{}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			fmt.Fprintf(&b, "%s: not a JSON object: %v\n", what, err)
			return nil
		}
		return m
	}
	names := func(m map[string]any) string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return strings.Join(ks, ", ")
	}
	if h := decode("header", parts[0]); h != nil {
		fmt.Fprintf(&b, "header fields: %s\n", names(h))
		fmt.Fprintf(&b, "header alg=%v typ=%v\n", h["alg"], h["typ"])
	}
	if p := decode("payload", parts[1]); p != nil {
		fmt.Fprintf(&b, "claims: %s\n", names(p))
		fmt.Fprintf(&b, "username: %#v\n", p["username"])
		fmt.Fprintf(&b, "revision: %v (%T)\n", p["revision"], p["revision"])
		exp, isNum := p["exp"].(json.Number)
		secs, err := exp.Int64()
		if !isNum || err != nil {
			fmt.Fprintf(&b, "exp: not an integer: %#v\n", p["exp"])
		} else {
			d := time.Until(time.Unix(secs, 0))
			fmt.Fprintf(&b, "exp: an integer, now+%v (-3 s/+1 s): %v\n", ttl, d >= ttl-3*time.Second && d <= ttl+time.Second)
		}
	}
	if sig, err := b64.DecodeString(parts[2]); err != nil {
		fmt.Fprintf(&b, "signature: not unpadded base64url: %v\n", err)
	} else {
		fmt.Fprintf(&b, "signature bytes: %d\n", len(sig))
	}
	return b.String()
}
