// Package tls holds differential tests of client TLS (etcd's --cert-file,
// --key-file, --trusted-ca-file and --client-cert-auth with https client
// URLs), of etcd's common-name authentication, and of peer TLS in a
// 3-member cluster.
//
// The test generates a small PKI with crypto/x509 in a temporary directory
// (certs_test.go): a CA; a server certificate for IP 127.0.0.1 and DNS
// localhost (RSA key in PKCS#1 PEM, EKU serverAuth and clientAuth); client
// certificates signed by the CA with CN root (SEC1 EC key), alice and bob
// (PKCS#8 EC keys; no user bob exists); and a second, unrelated CA signing a
// client certificate that also says CN=root ("stranger").
//
// Each scenario starts a fresh rsetcd ($RSETCD_BIN) and a fresh reference
// etcd 3.6.16 ($REF_ETCD_BIN, default <repo>/.cache/reference/bin/etcd)
// with the same TLS flags (https client URLs, http peer URLs), runs the same
// steps against both, records every outcome and requires both transcripts
// to be identical. Steps are made by callers named after the certificate
// they present (see C.client): clientv3 calls and raw WatchCreate requests,
// HTTP requests (net/http: /health, /version, /metrics, the /v3 JSON
// gateway), raw TLS handshakes (crypto/tls: version, ALPN, which
// certificate the server presents, whether the server accepts the client's
// certificate) and etcdctl 3.6 ($ETCDCTL_BIN, default: etcdctl next to the
// reference etcd) with --cacert/--cert/--key.
//
// Normalization: in a ResponseHeader cluster_id, member_id and raft_term
// print as "<set>" (revisions are exact), and so do tokens and the same
// fields in gateway JSON. Errors made by the client's own TLS/gRPC/HTTP
// stack (a refused handshake, a closed connection, a server certificate the
// client does not trust) differ in wording with the server's TLS library
// (Go's crypto/tls versus rustls send different alerts), so they print as a
// class ("connection failed", "client rejects the server certificate",
// ...); the raw text is logged with -v. Server-side errors (gRPC status
// codes and messages, HTTP status and body) are compared exactly.
//
// TestPeerTLS runs a 3-member cluster with https peer URLs and etcd's peer
// TLS flags (--peer-client-cert-auth) on each server; set
// RSETCD_NO_PEER_TLS=1 to skip it (for a server without peer TLS yet).
//
// The tests skip when RSETCD_BIN is unset.
package tls
