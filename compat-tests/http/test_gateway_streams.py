"""The gateway's server-streaming routes, /v3/maintenance/snapshot and /v3/election/observe:
one `{"result": ...}` line per gRPC response, as etcd's grpc-gateway streams them. Both
servers' answers are compared in shape (the snapshot bytes are each server's own file)."""

import base64
import hashlib
import http.client
import json


def stream(addr: str, path: str, body: dict, lines: int = None, timeout: float = 10):
    """The decoded lines of a streamed answer (the first `lines` of them, if given)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        out = []
        while lines is None or len(out) < lines:
            line = r.readline()
            if not line:
                break
            if line.strip():
                out.append(json.loads(line))
        return r.status, out
    finally:
        conn.close()


def post(addr: str, path: str, body: dict):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body).encode())
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_snapshot_streams_the_store_with_its_sha256_trailer(servers):
    shapes = {}
    for label, s in servers.items():
        status, lines = stream(s.client_addr, "/v3/maintenance/snapshot", {})
        assert status == 200 and lines, (label, status, lines)
        results = [line["result"] for line in lines]
        blobs = [base64.b64decode(r.get("blob", "")) for r in results]
        data, trailer = b"".join(blobs[:-1]), blobs[-1]
        # The last message is the SHA-256 of everything before it, which etcdctl checks.
        assert trailer == hashlib.sha256(data).digest(), label
        assert "remaining_bytes" not in results[-1], label
        shapes[label] = (sorted(results[-1]), len(trailer), len(data) % 512 == 0)
    assert shapes["sut"] == shapes["ref"]


def test_observe_streams_the_leader(servers):
    shapes = {}
    for label, s in servers.items():
        lease = post(s.client_addr, "/v3/lease/grant", {"TTL": 30})["ID"]
        # "ZQ==" is the election name "e", "djE=" the value "v1".
        post(s.client_addr, "/v3/election/campaign",
             {"name": "ZQ==", "lease": lease, "value": "djE="})
        status, lines = stream(s.client_addr, "/v3/election/observe", {"name": "ZQ=="}, lines=1)
        assert status == 200 and len(lines) == 1, (label, status, lines)
        result = lines[0]["result"]
        shapes[label] = (sorted(result), sorted(result["kv"]), result["kv"]["value"],
                         base64.b64decode(result["kv"]["key"]).startswith(b"e/"))
    assert shapes["ref"][2] == "djE="
    assert shapes["sut"] == shapes["ref"]
