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


def test_metrics_has_leader(servers):
    r = request(servers["sut"].client_addr, "GET", "/metrics")
    lines = r.body.decode("utf-8", errors="backslashreplace").split("\n")
    assert r.status == 200 and any(l.startswith("etcd_server_has_leader ") for l in lines), \
        f"HTTP {r.status}, body starts: {r.body[:1000]!r}"


def test_v3_kv_range(servers):
    ref, sut, shown = both(servers, "POST", "/v3/kv/range", b'{"key":"Zm9v"}')

    def comparable(r):
        doc = json_or_text(r.body)
        if isinstance(doc, dict):
            # cluster_id/member_id/raft_term/revision are per-server facts, not API shape.
            doc.pop("header", None)
        return r.status, doc

    assert comparable(sut) == comparable(ref), shown


# The families an etcd dashboard or alert reads (issue 5), with the type etcd gives them.
METRIC_FAMILIES = [
    "etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending", "etcd_server_proposals_failed_total",
    "etcd_server_version", "etcd_server_quota_backend_bytes",
    "etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_keys_total", "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds", "grpc_server_started_total",
    "grpc_server_handled_total", "process_resident_memory_bytes",
]


def metric_types(addr: str) -> dict:
    """{family: type} from the `# TYPE` lines of a /metrics scrape."""
    r = request(addr, "GET", "/metrics")
    assert r.status == 200, f"HTTP {r.status}: {r.body[:300]!r}"
    types = {}
    for line in r.body.decode().split("\n"):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
    return types


def test_metrics_families_and_types_match_etcd(servers):
    import subprocess
    import etcdctl_harness as h
    # One put on each, so that disk and gRPC families have a sample on both.
    for s in servers.values():
        subprocess.run([h.etcdctl36_bin(), "--endpoints", s.client_addr, "put", "m", "v"],
                       check=True, capture_output=True)
    ref, sut = metric_types(servers["ref"].client_addr), metric_types(servers["sut"].client_addr)
    differences = {name: (ref.get(name), sut.get(name)) for name in METRIC_FAMILIES
                   if ref.get(name) != sut.get(name) or name not in ref}
    assert not differences, f"family: (etcd type, rsetcd type): {differences}"


def test_metrics_values_follow_the_server(servers):
    addr = servers["sut"].client_addr
    body = request(addr, "GET", "/metrics").body.decode()
    samples = dict(line.rsplit(" ", 1) for line in body.split("\n")
                   if line and not line.startswith("#"))
    assert samples["etcd_server_has_leader"] == "1" and samples["etcd_server_is_leader"] == "1"
    assert samples['etcd_server_version{server_version="3.6.16"}'] == "1"
    assert float(samples["etcd_mvcc_db_total_size_in_bytes"]) > 0
    assert int(float(samples["etcd_debugging_mvcc_keys_total"])) >= 1
    assert int(float(samples["etcd_server_proposals_applied_total"])) >= 2


# A session through the JSON gateway, step by step on both servers; each answer's HTTP status
# and JSON body must match once per-server facts are removed (headers, lease and member ids,
# addresses, sizes and raft indexes). Keys and values are base64 as the gateway wants them.
GATEWAY_STEPS = [
    ("POST", "/v3/kv/put", {"key": "Z3cvYQ==", "value": "MQ==", "prev_kv": True}),
    ("POST", "/v3/kv/put", {"key": "Z3cvYQ==", "value": "Mg==", "prev_kv": True}),
    ("POST", "/v3/kv/put", {"key": "Z3cvYg==", "value": "Mw=="}),
    ("POST", "/v3/kv/range", {"key": "Z3cv", "range_end": "Z3cw"}),
    ("POST", "/v3/kv/range", {"key": "Z3cv", "range_end": "Z3cw", "keys_only": True,
                              "sort_order": "DESCEND", "sort_target": "KEY"}),
    ("POST", "/v3/kv/range", {"key": "Z3cvYQ==", "revision": "2"}),
    ("POST", "/v3/kv/range", {"key": "Z3cvYQ==", "revision": 1000}),
    ("POST", "/v3/kv/txn", {"compare": [{"key": "Z3cvYQ==", "result": "EQUAL", "target": "VALUE",
                                         "value": "Mg=="}],
                            "success": [{"request_put": {"key": "Z3cvYw==", "value": "NA=="}}],
                            "failure": [{"request_range": {"key": "Z3cvYQ=="}}]}),
    ("POST", "/v3/kv/txn", {"compare": [{"key": "Z3cvYQ==", "result": "LESS", "target": "VERSION",
                                         "version": "1"}],
                            "failure": [{"request_range": {"key": "Z3cvYQ=="}}]}),
    ("POST", "/v3/kv/deleterange", {"key": "Z3cvYw==", "prev_kv": True}),
    ("POST", "/v3/kv/compaction", {"revision": "3"}),
    ("POST", "/v3/kv/range", {"key": "Z3cvYQ==", "revision": "2"}),
    ("POST", "/v3/kv/put", {}),
    ("POST", "/v3/lease/grant", {"TTL": "60", "ID": "4660"}),
    ("POST", "/v3/lease/grant", {"TTL": "60", "ID": "4660"}),
    ("POST", "/v3/kv/put", {"key": "Z3cvbA==", "value": "eA==", "lease": "4660"}),
    ("POST", "/v3/lease/timetolive", {"ID": "4660", "keys": True}),
    ("POST", "/v3/lease/leases", {}),
    ("POST", "/v3/lease/revoke", {"ID": "4660"}),
    ("POST", "/v3/kv/lease/revoke", {"ID": "4660"}),
    ("POST", "/v3/lease/timetolive", {"ID": "4660"}),
    ("POST", "/v3/cluster/member/list", {}),
    ("POST", "/v3/maintenance/alarm", {"action": "GET"}),
    ("POST", "/v3/kv/range", {"key": "not base64!"}),
    ("GET", "/v3/kv/range", None),
    ("POST", "/v3/kv/nope", {}),
]

# Fields whose values are facts of one server, not of the API.
PER_SERVER = {"header", "member_id", "cluster_id", "leader", "ID", "peerURLs", "clientURLs",
              "name", "dbSize", "dbSizeInUse", "raftIndex", "raftAppliedIndex", "raftTerm"}


def strip_per_server(doc):
    if isinstance(doc, dict):
        return {k: strip_per_server(v) for k, v in doc.items() if k not in PER_SERVER}
    if isinstance(doc, list):
        return [strip_per_server(v) for v in doc]
    return doc


def test_v3_gateway_session(servers):
    for method, path, body in GATEWAY_STEPS:
        data = json.dumps(body).encode() if body is not None else None
        ref, sut, shown = both(servers, method, path, data)
        ref_doc, sut_doc = json_or_text(ref.body), json_or_text(sut.body)
        if isinstance(ref_doc, dict) and set(ref_doc) == {"code", "message"} and ref.status >= 400:
            # Errors: the gRPC code and HTTP status are the API; a JSON decoding error's
            # wording is the decoder's own.
            if ref_doc["code"] == 3 and "base64" in path + json.dumps(body):
                ref_doc.pop("message"), sut_doc.pop("message", None)
        assert (sut.status, strip_per_server(sut_doc)) == (ref.status, strip_per_server(ref_doc)), shown


def open_watch(addr: str, request: dict):
    """POST /v3/watch and return the connection and response, to read result lines from."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v3/watch", body=json.dumps(request).encode(),
                 headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def test_v3_watch_and_keepalive_streams(servers):
    transcripts = {}
    for label, server in servers.items():
        addr = server.client_addr
        conn, resp = open_watch(addr, {"create_request": {"key": "d2Mv", "range_end": "d2Mw",
                                                          "prev_kv": True}})
        lines = [json.loads(resp.readline())]            # created
        request(addr, "POST", "/v3/kv/put", json.dumps({"key": "d2MvYQ==", "value": "MQ=="}).encode())
        request(addr, "POST", "/v3/kv/put", json.dumps({"key": "d2MvYQ==", "value": "Mg=="}).encode())
        request(addr, "POST", "/v3/kv/deleterange", json.dumps({"key": "d2MvYQ=="}).encode())
        while sum(len(l["result"].get("events", [])) for l in lines) < 3:
            lines.append(json.loads(resp.readline()))
        conn.close()
        grant = json.loads(request(addr, "POST", "/v3/lease/grant", b'{"TTL": 60}').body)
        keep = request(addr, "POST", "/v3/lease/keepalive",
                       json.dumps({"ID": grant["ID"]}).encode() + b'{"ID": "1"}')
        kept = [json.loads(l) for l in keep.body.decode().splitlines() if l]
        # Revisions differ by what each server wrote before: keep events relative.
        first = int(lines[1]["result"]["header"]["revision"])
        for line in lines:
            for event in line["result"].get("events", []):
                for kv in (event.get("kv", {}), event.get("prev_kv", {})):
                    for field in ("create_revision", "mod_revision"):
                        if field in kv:
                            kv[field] = int(kv[field]) - first
        transcripts[label] = (strip_per_server(lines), keep.status, strip_per_server(kept))
    assert transcripts["sut"] == transcripts["ref"]
