"""Authentication through the JSON gateway over plain HTTP: users, roles and `auth enable`
set up through /v3/auth/*, then requests with and without an `Authorization: <token>` header,
step by step on the reference etcd and on the server under test (fresh servers for this
module: enabling auth would disturb the other modules' requests)."""

import http.client
import json

# Keys and values are base64: "a/x" = YS94, "b/x" = Yi94, "a/" = YS8=, "a0" = YTA=.
SETUP = [
    (None, "/v3/auth/user/add", {"name": "root", "password": "rootpw"}),
    (None, "/v3/auth/role/add", {"name": "root"}),
    (None, "/v3/auth/user/grant", {"user": "root", "role": "root"}),
    (None, "/v3/auth/role/add", {"name": "reader"}),
    (None, "/v3/auth/role/grant", {"name": "reader", "perm": {"key": "YS8=", "range_end": "YTA=",
                                                              "permType": "READ"}}),
    (None, "/v3/auth/user/add", {"name": "alice", "password": "alicepw"}),
    (None, "/v3/auth/user/grant", {"user": "alice", "role": "reader"}),
    (None, "/v3/auth/role/get", {"role": "reader"}),
    (None, "/v3/auth/user/get", {"name": "alice"}),
    (None, "/v3/auth/status", {}),
    (None, "/v3/auth/enable", {}),
]
LOGIN = {"root": {"name": "root", "password": "rootpw"},
         "alice": {"name": "alice", "password": "alicepw"}}
# (who, path, body, status, message): who is None (no Authorization header), a user (that
# user's token) or "bogus" (a token no server issued). The reference must answer `status`
# (and, for errors, `message`) so that both servers cannot agree on a broken setup; the
# server under test must then answer as the reference did.
DENIED = (403, "etcdserver: permission denied")
NO_USER = (400, "etcdserver: user name is empty")
BAD_TOKEN = (401, "etcdserver: invalid auth token")
BAD_LOGIN = (400, "etcdserver: authentication failed, invalid user ID or password")
OK = (200, None)
STEPS = [
    (None, "/v3/auth/authenticate", {"name": "alice", "password": "wrong"}, *BAD_LOGIN),
    (None, "/v3/auth/authenticate", {"name": "nobody", "password": "x"}, *BAD_LOGIN),
    ("root", "/v3/kv/put", {"key": "YS94", "value": "MQ=="}, *OK),
    ("root", "/v3/kv/put", {"key": "Yi94", "value": "Mg=="}, *OK),
    ("root", "/v3/kv/range", {"key": "Yi94"}, *OK),
    ("alice", "/v3/kv/range", {"key": "YS94"}, *OK),
    ("alice", "/v3/kv/range", {"key": "YS8=", "range_end": "YTA="}, *OK),
    ("alice", "/v3/kv/range", {"key": "Yi94"}, *DENIED),                       # outside a/
    ("alice", "/v3/kv/range", {"key": "YQ==", "range_end": "Yw=="}, *DENIED),  # wider than a/
    ("alice", "/v3/kv/put", {"key": "YS95", "value": "Mw=="}, *DENIED),         # read only
    (None, "/v3/kv/range", {"key": "YS94"}, *NO_USER),
    (None, "/v3/kv/put", {"key": "YS94", "value": "MQ=="}, *NO_USER),
    ("bogus", "/v3/kv/range", {"key": "YS94"}, *BAD_TOKEN),
    ("bogus", "/v3/kv/put", {"key": "YS94", "value": "MQ=="}, *BAD_TOKEN),
    ("root", "/v3/auth/status", {}, *OK),
    ("alice", "/v3/auth/status", {}, *DENIED),
    (None, "/v3/auth/status", {}, *NO_USER),
    ("root", "/v3/auth/user/list", {}, *OK),
    ("alice", "/v3/auth/user/list", {}, *DENIED),
    ("root", "/v3/auth/role/list", {}, *OK),
    ("alice", "/v3/auth/disable", {}, *DENIED),
    (None, "/v3/auth/disable", {}, *NO_USER),
    ("root", "/v3/auth/disable", {}, *OK),
    (None, "/v3/auth/status", {}, *OK),
    (None, "/v3/kv/range", {"key": "Yi94"}, *OK),
    ("bogus", "/v3/kv/range", {"key": "YS94"}, *OK),                 # ignored once disabled
]
# The response header's fields that belong to one server; the revision is compared.
PER_SERVER = ("cluster_id", "member_id", "raft_term")
BOGUS_TOKEN = "bogusTokenAbcdef.1"


def post(addr: str, path: str, body: dict, token: str = None):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    try:
        doc = json.loads(data)
    except ValueError:
        doc = data.decode("utf-8", errors="backslashreplace")
    return r.status, doc


def comparable(status: int, doc):
    if isinstance(doc, dict):
        doc = dict(doc)
        if isinstance(doc.get("header"), dict):
            doc["header"] = {k: v for k, v in doc["header"].items() if k not in PER_SERVER}
        if "token" in doc:
            # Simple tokens are random: only their presence is compared.
            doc["token"] = "<present>" if isinstance(doc["token"], str) and doc["token"] else \
                doc["token"]
    return status, doc


def test_gateway_auth_session(servers):
    addrs = {label: s.client_addr for label, s in servers.items()}
    tokens = {label: {"bogus": BOGUS_TOKEN} for label in addrs}
    log = []

    def step(who, path, body, status=200, message=None):
        answers = {}
        for label, addr in addrs.items():
            token = tokens[label][who] if who else None
            answers[label] = post(addr, path, body, token)
        line = f"{who or '-'} POST {path} {json.dumps(body)}"
        log.append(f"{line}\n  etcd:   {answers['ref']}\n  rsetcd: {answers['sut']}")
        ref_status, ref_doc = answers["ref"]
        assert ref_status == status and (message is None or ref_doc.get("message") == message), \
            f"reference etcd did not answer {status} {message!r}:\n" + log[-1]
        assert comparable(*answers["sut"]) == comparable(*answers["ref"]), \
            "differs at:\n" + log[-1] + "\n\nsteps so far:\n" + "\n".join(log[:-1])
        return answers

    for who, path, body in SETUP:
        step(who, path, body)
    for user, body in LOGIN.items():
        answers = step(None, "/v3/auth/authenticate", body)
        for label, (status, doc) in answers.items():
            assert status == 200 and doc.get("token"), (label, status, doc)
            tokens[label][user] = doc["token"]
    for who, path, body, status, message in STEPS:
        step(who, path, body, status, message)


def raw_post(addr: str, path: str, data: bytes, headers: dict):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request("POST", path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, r.getheader("Www-Authenticate"), json.loads(r.read())
    finally:
        conn.close()


def test_bad_token_names_the_reason_in_www_authenticate(servers):
    """grpc-gateway repeats an Unauthenticated answer's message in Www-Authenticate; with
    auth enabled (as here for this test), a bogus token gets it on both servers."""
    answers = {}
    for label, s in servers.items():
        addr = s.client_addr
        for who, path, body in SETUP:
            raw_post(addr, path, json.dumps(body).encode(), {})
        answers[label] = raw_post(addr, "/v3/kv/range", b'{"key":"YQ=="}',
                                  {"Authorization": BOGUS_TOKEN})
        token = raw_post(addr, "/v3/auth/authenticate",
                         json.dumps(LOGIN["root"]).encode(), {})[2]["token"]
        raw_post(addr, "/v3/auth/disable", b"{}", {"Authorization": token})
    assert answers["ref"] == (401, "etcdserver: invalid auth token",
                              {"code": 16, "message": "etcdserver: invalid auth token"})
    assert answers["sut"] == answers["ref"]


def test_oversized_bodies_get_grpcs_refusal(servers):
    """A value over --max-request-bytes is etcd's "request is too large"; a message over
    gRPC's receive limit (max-request-bytes + 512 KiB) is grpc-go's ResourceExhausted text,
    which etcd's gateway passes on (HTTP 429)."""
    import base64
    answers = {}
    for label, s in servers.items():
        answers[label] = []
        for size in (1_000_000, 1_600_000, 3_000_000):
            body = json.dumps({"key": "Ymln", "value": base64.b64encode(b"x" * size).decode()})
            status, _, doc = raw_post(s.client_addr, "/v3/kv/put", body.encode(), {})
            answers[label].append((status, doc if status != 200 else None))
    assert answers["ref"][1] == (400, {"code": 3, "message": "etcdserver: request is too large"})
    assert answers["ref"][2][0] == 429
    assert answers["sut"] == answers["ref"]
