package tls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	gotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Identities of client certificates (see genCerts). "stranger" is signed by
// the other CA and also says CN=root.
const (
	idRoot     = "root"
	idAlice    = "alice"
	idBob      = "bob"  // CN of no user
	idNoCN     = "nocn" // no CN at all
	idStranger = "stranger"
)

// pki is the set of files genCerts wrote, and the same material in memory.
type pki struct {
	dir string
	// CAFile trusts the CA that signed the server and the root, alice and
	// bob certificates; OtherCAFile the unrelated CA of "stranger".
	CAFile, OtherCAFile string
	// ServerCert/ServerKey: the server's certificate (SANs IP 127.0.0.1 and
	// DNS localhost, EKU serverAuth+clientAuth, as etcd's peers and its
	// gateway also present it as a client certificate), an RSA-2048 key in
	// PKCS#1 PEM ("RSA PRIVATE KEY", what openssl/cfssl commonly produce).
	ServerCert, ServerKey string
	// Client certificates by identity: cert and key files. root's key is
	// SEC1 ("EC PRIVATE KEY"), the others PKCS#8 ("PRIVATE KEY").
	ClientCert, ClientKey map[string]string

	CAPool      *x509.CertPool
	OtherCAPool *x509.CertPool
	ServerLeaf  *x509.Certificate
	clientPairs map[string]gotls.Certificate
}

// genCerts creates, in a fresh temporary directory, a CA, a server
// certificate and client certificates with CN root, alice and bob signed by
// it, and a second, unrelated CA that signs a client certificate with
// CN=root ("stranger").
func genCerts(t testing.TB) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{
		dir:         dir,
		ClientCert:  map[string]string{},
		ClientKey:   map[string]string{},
		CAPool:      x509.NewCertPool(),
		OtherCAPool: x509.NewCertPool(),
		clientPairs: map[string]gotls.Certificate{},
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("generating certificates: %v", err)
		}
	}
	ca, caKey := newCA(t, "rsetcd-compat test CA")
	other, otherKey := newCA(t, "unrelated test CA")
	p.CAPool.AddCert(ca)
	p.OtherCAPool.AddCert(other)
	p.CAFile = filepath.Join(dir, "ca.crt")
	p.OtherCAFile = filepath.Join(dir, "other-ca.crt")
	must(writePEM(p.CAFile, "CERTIFICATE", ca.Raw))
	must(writePEM(p.OtherCAFile, "CERTIFICATE", other.Raw))

	// Server.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	srvTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "rsetcd-compat server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	srv := sign(t, srvTmpl, &rsaKey.PublicKey, ca, caKey)
	p.ServerLeaf = srv
	p.ServerCert = filepath.Join(dir, "server.crt")
	p.ServerKey = filepath.Join(dir, "server.key")
	must(writePEM(p.ServerCert, "CERTIFICATE", srv.Raw))
	must(writePEM(p.ServerKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)))

	// Clients.
	client := func(id, cn string, issuer *x509.Certificate, issuerKey crypto.Signer, sec1 bool) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		cert := sign(t, &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn, Organization: []string{"rsetcd-compat"}},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, &key.PublicKey, issuer, issuerKey)
		certFile := filepath.Join(dir, id+".crt")
		keyFile := filepath.Join(dir, id+".key")
		must(writePEM(certFile, "CERTIFICATE", cert.Raw))
		if sec1 {
			der, err := x509.MarshalECPrivateKey(key)
			must(err)
			must(writePEM(keyFile, "EC PRIVATE KEY", der))
		} else {
			der, err := x509.MarshalPKCS8PrivateKey(key)
			must(err)
			must(writePEM(keyFile, "PRIVATE KEY", der))
		}
		pair, err := gotls.LoadX509KeyPair(certFile, keyFile)
		must(err)
		p.ClientCert[id], p.ClientKey[id], p.clientPairs[id] = certFile, keyFile, pair
	}
	client(idRoot, "root", ca, caKey, true)
	client(idAlice, "alice", ca, caKey, false)
	client(idBob, "bob", ca, caKey, false)
	client(idNoCN, "", ca, caKey, false)
	client(idStranger, "root", other, otherKey, false)
	return p
}

var serial int64 = 1000

func newCA(t testing.TB, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return sign(t, tmpl, &key.PublicKey, nil, key), key
}

// sign issues tmpl (valid from an hour ago for a day) for pub, signed by
// issuer/issuerKey (self-signed when issuer is nil).
func sign(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, issuer *x509.Certificate, issuerKey crypto.Signer) *x509.Certificate {
	t.Helper()
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if issuer == nil {
		issuer = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, issuerKey)
	if err != nil {
		t.Fatalf("creating certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// clientTLS returns a client TLS configuration that trusts the CA and,
// unless id is "", presents the certificate of id whenever the server asks
// for one. (With Certificates instead, Go's client sends no certificate
// when its issuer is not among the CAs the server names in its request,
// and the stranger's certificate would never reach the server.)
func (p *pki) clientTLS(id string) *gotls.Config {
	cfg := &gotls.Config{RootCAs: p.CAPool}
	if id != "" {
		pair := p.clientPairs[id]
		cfg.GetClientCertificate = func(*gotls.CertificateRequestInfo) (*gotls.Certificate, error) {
			return &pair, nil
		}
	}
	return cfg
}
