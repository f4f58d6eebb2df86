package tls

import (
	"bytes"
	"context"
	gotls "crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"rsetcd/compat-tests/internal/transcript"
)

// ---- raw TLS handshakes ----

// Probe makes a TLS connection as who (ALPN offer h2 and http/1.1 unless
// adjust changes it) and records whether the server accepts it. With TLS
// 1.3 a server refuses a client certificate only after the client's side of
// the handshake is done, so an accepted handshake is followed by a read of
// up to a second: a refusal arrives as an alert (or the connection
// closes), an accepting server sends nothing or its HTTP/2 settings. An
// accepted connection also records the TLS version, the negotiated ALPN
// protocol and whether the server presented server.crt (its --cert-file).
func (c *C) Probe(who, what string, adjust func(*gotls.Config)) {
	c.record(fmt.Sprintf("[%s] TLS handshake: %s", who, what), c.probe(who, adjust))
}

func (c *C) probe(who string, adjust func(*gotls.Config)) string {
	url, cfg := c.endpoint(who)
	if cfg == nil {
		return "not a TLS caller: " + who
	}
	return c.probeAddr(strings.TrimPrefix(url, "https://"), cfg, adjust, false)
}

// probeAddr is probe against addr with cfg (cloned, then adjusted); brief
// leaves out the TLS version and ALPN protocol.
func (c *C) probeAddr(addr string, cfg *gotls.Config, adjust func(*gotls.Config), brief bool) string {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	if adjust != nil {
		adjust(cfg)
	}
	conn, err := gotls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "result: " + c.classOf("handshake", err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		return "result: " + c.classOf("first read after the handshake", err)
	}
	st := conn.ConnectionState()
	var b strings.Builder
	b.WriteString("result: accepted\n")
	if !brief {
		fmt.Fprintf(&b, "version: %s\n", gotls.VersionName(st.Version))
		alpn := fmt.Sprintf("%q", st.NegotiatedProtocol)
		if slices.Equal(cfg.NextProtos, []string{"http/1.1"}) && (st.NegotiatedProtocol == "" || st.NegotiatedProtocol == "http/1.1") {
			// Go's server (offering only h2) lets an http/1.1-only client
			// in without ALPN; a server offering http/1.1 selects it.
			// Same thing.
			alpn = `"http/1.1" or none`
		}
		fmt.Fprintf(&b, "alpn: %s\n", alpn)
	}
	if n := len(st.PeerCertificates); n == 0 {
		b.WriteString("server certificate: none\n")
	} else if bytes.Equal(st.PeerCertificates[0].Raw, c.pki.ServerLeaf.Raw) {
		fmt.Fprintf(&b, "server certificate: server.crt (chain of %d)\n", n)
	} else {
		fmt.Fprintf(&b, "server certificate: another one, CN=%q (chain of %d)\n", st.PeerCertificates[0].Subject.CommonName, n)
	}
	return b.String()
}

// classOf is the class of a client-side error (its text goes to the
// details), or its full text when it has none.
func (c *C) classOf(where string, err error) string {
	if class := classify(err.Error()); class != "" {
		c.detail("%s: %s: %v", class, where, err)
		return class
	}
	return fmt.Sprintf("unclassified error: %v", err)
}

// ---- HTTP ----

// HTTP sends a request as who over HTTP/2 (ALPN; plaintext callers use
// HTTP/1.1) and records protocol, status, content type and body (JSON
// normalized, /metrics summarized). header is name, value pairs; a value
// "<gateway token>" is replaced by the token GatewayLogin stored.
func (c *C) HTTP(who, method, path, body string, header ...string) {
	out, _ := c.http(who, method, path, body, false, header)
	label := fmt.Sprintf("[%s] HTTP %s %s %s", who, method, path, body)
	for i := 0; i+1 < len(header); i += 2 {
		label += fmt.Sprintf(" [%s: %s]", header[i], header[i+1])
	}
	c.record(label, out)
}

// HTTP1 is HTTP over TLS without HTTP/2 (ALPN offer http/1.1 only), as
// curl --http1.1 does.
func (c *C) HTTP1(who, method, path, body string) {
	out, _ := c.http(who, method, path, body, true, nil)
	c.record(fmt.Sprintf("[%s] HTTP/1.1 only: %s %s %s", who, method, path, body), out)
}

// http returns the rendered answer and the raw body.
func (c *C) http(who, method, path, body string, h1 bool, header []string) (string, []byte) {
	url, cfg := c.endpoint(who)
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: !h1}
	if h1 {
		tr.TLSNextProto = map[string]func(string, *gotls.Conn) http.RoundTripper{}
		if cfg != nil {
			tr.TLSClientConfig = cfg.Clone()
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequest(method, url+path, strings.NewReader(body))
	if err != nil {
		return "bad request: " + err.Error(), nil
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		v := header[i+1]
		if v == "<gateway token>" {
			v = c.gatewayToken
		}
		req.Header.Set(header[i], v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "error: " + c.classOf("HTTP request", err), nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Sprintf("%s %d, then reading the body: %s", resp.Proto, resp.StatusCode, c.classOf("HTTP body", err)), nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d\n", resp.Proto, resp.StatusCode)
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	fmt.Fprintf(&b, "content-type: %s\n", strings.TrimSpace(ct))
	if path == "/metrics" {
		b.WriteString(summarizeMetrics(data))
		return b.String(), data
	}
	fmt.Fprintf(&b, "body: %s\n", normalizeJSON(data))
	return b.String(), data
}

var metricLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEInfNa]+( -?[0-9]+)?$`)

// summarizeMetrics says whether every line is Prometheus text exposition
// and whether etcd_server_has_leader is there.
func summarizeMetrics(data []byte) string {
	bad, samples := 0, 0
	hasLeader := false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case metricLine.MatchString(line):
			samples++
			if strings.HasPrefix(line, "etcd_server_has_leader ") {
				hasLeader = true
			}
		default:
			bad++
		}
	}
	return fmt.Sprintf("body: text exposition: %v (samples: %v), has etcd_server_has_leader: %v\n", bad == 0, samples > 0, hasLeader)
}

// normalizeJSON re-encodes a JSON body with sorted keys, header
// cluster_id/member_id/raft_term and any token as "<set>"; a body that is
// not JSON is quoted.
func normalizeJSON(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return fmt.Sprintf("%q", data)
	}
	var walk func(v any, inHeader bool) any
	walk = func(v any, inHeader bool) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if (inHeader && (k == "cluster_id" || k == "member_id" || k == "raft_term")) || k == "token" {
					if e != nil && e != "" && e != "0" {
						x[k] = "<set>"
					}
					continue
				}
				x[k] = walk(e, k == "header")
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i], false)
			}
		}
		return v
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(walk(v, false)); err != nil {
		return fmt.Sprintf("%q", data)
	}
	trailing := ""
	if bytes.HasSuffix(data, []byte("\n")) {
		trailing = ` (ends with "\n")`
	}
	return strings.TrimSuffix(out.String(), "\n") + trailing
}

// GatewayLogin posts /v3/auth/authenticate as who and keeps the token for
// "<gateway token>" header values.
func (c *C) GatewayLogin(who, user, password string) {
	body := fmt.Sprintf(`{"name":%q,"password":%q}`, user, password)
	out, raw := c.http(who, "POST", "/v3/auth/authenticate", body, false, nil)
	var r struct{ Token string }
	_ = json.Unmarshal(raw, &r)
	c.gatewayToken = r.Token
	c.record(fmt.Sprintf("[%s] HTTP POST /v3/auth/authenticate %s (token kept)", who, body), out)
}

// ---- etcdctl ----

var (
	tookRe = regexp.MustCompile(`\btook( =)? \d[\w.µ]*`)
	urlRe  = regexp.MustCompile(`https?://127\.0\.0\.1:\d+`)
	idsRe  = regexp.MustCompile(`"(cluster_id|member_id|raft_term)":[1-9]\d*`)
)

// Etcdctl runs etcdctl 3.6 as who (--cacert, --cert, --key; --user for
// ID+USER:PW) against the server and records exit status, stdout and
// stderr: URLs print as <endpoint>, timings as <TOOK>, cluster_id,
// member_id and raft_term in -w json output as "<set>", the client's JSON
// log lines are dropped and lines with client-side connection errors print
// as their class.
func (c *C) Etcdctl(who string, args ...string) {
	c.record(fmt.Sprintf("[%s] etcdctl %s", who, strings.Join(args, " ")), c.etcdctl(who, args))
}

func (c *C) etcdctl(who string, args []string) string {
	url, _ := c.endpoint(who)
	id, user, password := parseWho(who)
	flags := []string{"--endpoints=" + url, "--dial-timeout=2s", fmt.Sprintf("--command-timeout=%v", timeout(who))}
	switch id {
	case plaintext:
	case untrusting:
		flags = append(flags, "--cacert="+c.pki.OtherCAFile)
	case nocert:
		flags = append(flags, "--cacert="+c.pki.CAFile)
	default:
		flags = append(flags, "--cacert="+c.pki.CAFile, "--cert="+c.pki.ClientCert[id], "--key="+c.pki.ClientKey[id])
	}
	if user != "" {
		flags = append(flags, "--user="+user+":"+password)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctl, append(flags, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCDCTL_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return "could not run etcdctl: " + err.Error()
	}
	norm := func(s string) string {
		var out []string
		for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			if line == "" && len(out) == 0 {
				continue
			}
			if strings.HasPrefix(line, `{"level"`) {
				continue
			}
			line = urlRe.ReplaceAllString(line, "<endpoint>")
			line = idsRe.ReplaceAllString(line, `"$1":"<set>"`)
			line = tookRe.ReplaceAllStringFunc(line, func(m string) string {
				if strings.HasPrefix(m, "took =") {
					return "took = <TOOK>"
				}
				return "took <TOOK>"
			})
			if class := classify(line); class == classConn || class == classUntrusted {
				c.detail("%s: etcdctl: %s", class, line)
				line = "<client-side error: " + class + ">"
			}
			out = append(out, line)
		}
		return strings.Join(out, "\n")
	}
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s\n", code, indentAfterFirst(norm(stdout.String())), indentAfterFirst(norm(stderr.String())))
}

func indentAfterFirst(s string) string {
	return strings.ReplaceAll(s, "\n", "\n        ")
}

// ---- watch ----

// Watch opens a raw Watch stream on who's clientv3 connection (which
// carries who's certificate and token), sends create and records the first
// message; if the watch was created and not cancelled, it runs then (which
// records its own steps) and records the next message.
func (c *C) Watch(who string, create *pb.WatchCreateRequest, then func()) {
	label := fmt.Sprintf("[%s] Watch create %s", who, oneLine(create))
	cli, err := c.client(who)
	if err != nil {
		c.record(label, "clientv3.New: "+c.renderErr(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(ctx)
	if err != nil {
		c.record(label, c.renderErr(err))
		return
	}
	recv := make(chan any, 10)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				recv <- err
				return
			}
			recv <- r
		}
	}()
	next := func() (*pb.WatchResponse, string) {
		select {
		case m := <-recv:
			if err, ok := m.(error); ok {
				return nil, c.renderErr(err)
			}
			return m.(*pb.WatchResponse), transcript.Render(m)
		case <-time.After(3 * time.Second):
			return nil, "no message within 3s"
		}
	}
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: create}}); err != nil {
		c.record(label, "send: "+c.renderErr(err))
		return
	}
	first, out := next()
	c.record(label, out)
	if first == nil || !first.Created || first.Canceled || then == nil {
		return
	}
	then()
	_, out = next()
	c.record(fmt.Sprintf("[%s] Watch: next message", who), out)
}

func oneLine(r *pb.WatchCreateRequest) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(transcript.Render(r), "\n", " ")), " ")
}
