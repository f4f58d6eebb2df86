"""Differential test of the plain-HTTP endpoints on the client port: each request goes
to the reference etcd and to the server under test, and the responses must match."""

import dataclasses
import http.client
import json

import pytest

COMPARED_HEADERS = ("Content-Type", "Allow", "X-Content-Type-Options",
                    "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                    "Access-Control-Allow-Headers")

REQUESTS = [
    ("GET", "/version"),
    ("GET", "/health"),
    ("GET", "/health?serializable=true"),
    ("GET", "/health?exclude=NOSPACE"),
    ("GET", "/livez"),
    ("GET", "/livez?verbose"),
    ("GET", "/livez?verbose=false"),
    ("GET", "/livez/serializable_read"),
    ("GET", "/readyz"),
    ("GET", "/readyz?verbose"),
    ("GET", "/readyz?exclude=linearizable_read&verbose"),
    ("GET", "/readyz/linearizable_read"),
    ("GET", "/readyz/serializable_read"),
    ("GET", "/readyz/nonexist"),
    ("GET", "/livez/"),
    ("GET", "/healthz"),
    ("GET", "/nonexist"),
    ("POST", "/health"),
    ("POST", "/livez"),
    ("PUT", "/readyz"),
    ("HEAD", "/version"),
    ("DELETE", "/version"),
]


@dataclasses.dataclass
class Response:
    status: int
    headers: dict   # only COMPARED_HEADERS that are present
    body: bytes

    def render(self, label: str, addr: str) -> str:
        lines = [f"{label} ({addr}):", f"  HTTP {self.status}"]
        lines += [f"  {k}: {v}" for k, v in self.headers.items()]
        lines.append("  body: " + repr(self.body.decode("utf-8", errors="backslashreplace")))
        return "\n".join(lines)


def request(addr: str, method: str, path: str, body: bytes = None) -> Response:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json"} if body else {})
        r = conn.getresponse()
        data = r.read()
        headers = {k: r.getheader(k) for k in COMPARED_HEADERS if r.getheader(k) is not None}
        return Response(r.status, headers, data)
    finally:
        conn.close()


def json_or_text(body: bytes):
    # Error responses (405, 404) on JSON endpoints are plain text: compare those as text.
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="backslashreplace")


def comparable_body(path: str, body: bytes):
    route = path.split("?", 1)[0]
    if route == "/version":
        return json_or_text(body)
    text = body.decode("utf-8", errors="backslashreplace")
    if route.startswith(("/livez", "/readyz")):
        # etcd walks its checks in Go map order, so the [+]/[-] lines come in random
        # order; the summary line(s) after them stay where they are.
        lines = text.split("\n")
        checks = [l for l in lines if l.startswith(("[+]", "[-]"))]
        return sorted(checks) + [l for l in lines if not l.startswith(("[+]", "[-]"))]
    return text


def both(servers, method, path, body=None):
    ref = request(servers["ref"].client_addr, method, path, body)
    sut = request(servers["sut"].client_addr, method, path, body)
    shown = "\n".join((ref.render("reference etcd", servers["ref"].client_addr),
                       sut.render("server under test", servers["sut"].client_addr)))
    return ref, sut, f"{method} {path} differs\n{shown}"


@pytest.mark.parametrize("method,path", REQUESTS, ids=[f"{m} {p}" for m, p in REQUESTS])
def test_endpoint(servers, method, path):
    ref, sut, shown = both(servers, method, path)
    assert (sut.status, sut.headers, comparable_body(path, sut.body)) == \
           (ref.status, ref.headers, comparable_body(path, ref.body)), shown


@pytest.mark.xfail(strict=True, reason="issue 5: /metrics not built yet")
def test_metrics_has_leader(servers):
    r = request(servers["sut"].client_addr, "GET", "/metrics")
    lines = r.body.decode("utf-8", errors="backslashreplace").split("\n")
    assert r.status == 200 and any(l.startswith("etcd_server_has_leader ") for l in lines), \
        f"HTTP {r.status}, body starts: {r.body[:1000]!r}"


@pytest.mark.xfail(strict=True, reason="issue 5: gRPC-gateway /v3 JSON API not built yet")
def test_v3_kv_range(servers):
    ref, sut, shown = both(servers, "POST", "/v3/kv/range", b'{"key":"Zm9v"}')

    def comparable(r):
        doc = json_or_text(r.body)
        if isinstance(doc, dict):
            # cluster_id/member_id/raft_term/revision are per-server facts, not API shape.
            doc.pop("header", None)
        return r.status, doc

    assert comparable(sut) == comparable(ref), shown
