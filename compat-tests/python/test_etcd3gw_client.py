"""etcd3gw (PyPI `etcd3gw` 2.7.0, the JSON-gateway client OpenStack uses) against the
reference etcd and rsetcd.

etcd3gw speaks etcd's grpc-gateway: JSON over HTTP POST on the client port, base64 keys and
values, int64 fields as JSON strings, proto3 defaults left out. Tests taking ``server``/
``gw`` or ``fresh`` run once per server ("etcd", "rsetcd") and assert etcd's behaviour as
the client shows it; tests taking ``both`` run the same steps on the two servers and compare
the results directly. See README.md.
"""

import base64
import json
import threading
import time

import etcd3gw
import pytest
import requests
from etcd3gw.exceptions import Etcd3Exception, WatchTimedOut

WAIT = 5.0        # upper bound for anything that should happen "soon"
QUIET = 0.5       # how long "nothing more happens" is watched for
CLIENT_TIMEOUT = 5
ROUNDS = 200      # status/put/status rounds in test_status

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def b64(data):
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def make_client(target, session=None):
    # api_path=None: discover the API path (etcd3gw's default unless ETCD3GW_API_PATH is
    # set in the environment, which must not change this suite).
    return etcd3gw.client(host="127.0.0.1", port=target.port, timeout=CLIENT_TIMEOUT,
                          api_path=None, session=session)


class Watches:
    """The watches a test opened; all cancelled at teardown."""

    def __init__(self):
        self.open = []

    def add(self, pair):
        stream = EventStream(pair)
        self.open.append(stream)
        return stream

    def close(self):
        for s in self.open:
            s.cancel()
        for s in self.open:
            s.thread.join(WAIT)


@pytest.fixture
def watches():
    w = Watches()
    yield w
    w.close()


@pytest.fixture
def gw(server, watches):
    c = make_client(server)
    yield c
    watches.close()
    c.session.close()


@pytest.fixture
def ns(request):
    """A key prefix of this test's own (servers are shared by the tests of the module)."""
    return f"/py-gw/{request.node.originalname}/"


def prefix_end(prefix):
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def revision(c):
    """The store's current revision, from a range response header."""
    resp = c.post(c.get_url("/kv/range"), json={"key": b64("/py-gw-revision-probe")})
    return int(resp["header"]["revision"])


REV_FIELDS = {"revision", "create_revision", "mod_revision", "compact_revision"}
B64_FIELDS = {"key", "value", "range_end"}
SERVER_IDS = {"cluster_id", "member_id", "raft_term"}


def norm(obj, base, leases=()):
    """A gateway response (or a watch event) as comparable data: the server's ids and raft
    term dropped from headers, revisions made relative to base, base64 keys and values
    decoded (etcd3gw already decodes an event's kv, not its prev_kv), lease ids replaced
    by their index in leases."""
    ids = {str(lease.id): f"<lease{i}>" for i, lease in enumerate(leases)}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "header":
                v = {hk: hv for hk, hv in v.items() if hk not in SERVER_IDS}
            if k in REV_FIELDS and isinstance(v, str):
                out[k] = int(v) - base
            elif k in B64_FIELDS and isinstance(v, str):
                out[k] = base64.b64decode(v)
            elif k in ("lease", "ID") and isinstance(v, str):
                out[k] = ids.get(v, v)
            else:
                out[k] = norm(v, base, leases)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(norm(v, base, leases) for v in obj)
    return obj


def outcome(fn):
    """Run fn and describe what happened: ("ok", result) or the etcd3gw exception class,
    the gateway's error body (parsed JSON: gRPC code and message) and the HTTP reason."""
    try:
        return ("ok", fn())
    except Etcd3Exception as e:
        try:
            detail = json.loads(e.detail_text)
        except (TypeError, ValueError):
            detail = e.detail_text
        return (type(e).__name__, detail, e.args)


def error(code, message, reason):
    return ("Etcd3Exception", {"code": code, "message": message}, (reason,))


LEASE_NOT_FOUND = error(5, "etcdserver: requested lease not found", "Not Found")


class EventStream:
    """Drains an etcd3gw (events_iterator, cancel) pair on a thread of its own."""

    def __init__(self, pair):
        self.iterator, self._cancel = pair
        self.events = []
        self.done = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for event in self.iterator:
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def wait(self, n, timeout=WAIT):
        """The events so far, once there are n of them (or on timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events) < n and not self.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.events)

    def quiet(self, n):
        """The events after QUIET more seconds, expecting n in all."""
        time.sleep(QUIET)
        return self.wait(n, 0)

    def cancel(self):
        self._cancel()

    def wait_done(self, timeout=WAIT):
        self.thread.join(timeout)
        return self.done


def put_ev(key, value, create, mod, version, **extra):
    return {"kv": {"key": key.encode() if isinstance(key, str) else key, "create_revision": create,
                   "mod_revision": mod, "version": str(version),
                   "value": value.encode() if isinstance(value, str) else value}, **extra}


def del_ev(key, mod, **extra):
    return {"type": "DELETE", "kv": {"key": key.encode(), "mod_revision": mod}, **extra}


def kv_meta(key, create, mod, version, **extra):
    """etcd3gw's metadata dict of a get(metadata=True) item (value taken out)."""
    return {"key": key.encode() if isinstance(key, str) else key, "create_revision": str(create),
            "mod_revision": str(mod), "version": str(version), **extra}


class RecordingSession(requests.Session):
    def __init__(self):
        super().__init__()
        self.log = []

    def request(self, method, url, *args, **kwargs):
        self.log.append((method, url))
        return super().request(method, url, *args, **kwargs)


# --------------------------------------------------------------------------------------
# API path
# --------------------------------------------------------------------------------------


def test_api_path_discovered_from_version(server):
    """With no api_path, etcd3gw reads GET /version once (etcdserver >= 3.4 -> "/v3/")
    and sends everything else to /v3/..."""
    session = RecordingSession()
    c = make_client(server, session=session)
    try:
        assert c._api_path is None
        assert c.put("/py-gw/api-path", "v") is True
        base = server.client_url
        assert session.log == [("GET", f"{base}/version"), ("POST", f"{base}/v3/kv/put")]
        assert c.api_path == "/v3/"
        assert c.get("/py-gw/api-path") == [b"v"]
        assert session.log[2:] == [("POST", f"{base}/v3/kv/range")]
        version = requests.get(f"{base}/version", timeout=CLIENT_TIMEOUT).json()
        assert tuple(int(p) for p in version["etcdserver"].split(".")) >= (3, 4)
    finally:
        session.close()


# --------------------------------------------------------------------------------------
# KV
# --------------------------------------------------------------------------------------


def test_put_get(gw, ns):
    base = revision(gw)
    k = ns + "k"
    assert gw.put(k, "v1") is True
    assert gw.get(k) == [b"v1"]
    assert gw.get(k, metadata=True) == [(b"v1", kv_meta(k, base + 1, base + 1, 1))]
    assert gw.put(k, "v2") is True
    assert gw.get(k, metadata=True) == [(b"v2", kv_meta(k, base + 1, base + 2, 2))]
    assert gw.get(ns + "missing") == []
    assert gw.get(ns + "missing", metadata=True) == []
    # binary values, binary and UTF-8 keys
    bkey = ns.encode() + b"bin\x00\xff"
    ukey = (ns + "ключ").encode()
    assert gw.put(bkey, b"\x00\x01\xfe\xff") is True
    assert gw.put(ukey, "ß".encode()) is True
    assert gw.get(bkey, metadata=True) == [(b"\x00\x01\xfe\xff", kv_meta(bkey, base + 3, base + 3, 1))]
    assert gw.get(ukey) == ["ß".encode()]
    assert gw.put(ns + "empty", "") is True
    assert gw.get(ns + "empty", metadata=True) == [(b"", kv_meta(ns + "empty", base + 5, base + 5, 1))]
    assert gw.get(k, serializable=True) == [b"v2"]
    assert revision(gw) == base + 5


def test_get_options(gw, ns):
    """get()'s range options, sort orders and targets, get_prefix."""
    a, b, c_ = ns + "a", ns + "b", ns + "c"
    end = prefix_end(ns)
    base = revision(gw)
    gw.put(a, "1")      # base+1
    gw.put(b, "2")      # base+2
    gw.put(c_, "3")     # base+3
    gw.put(a, "4")      # base+4

    def keys(items):
        return [meta["key"] for _, meta in items]

    assert gw.get(a, revision=base + 1) == [b"1"]
    assert gw.get(a, revision=base + 4) == [b"4"]
    assert gw.get(ns, range_end=end) == [b"4", b"2", b"3"]
    assert gw.get(ns, range_end=end, limit=2) == [b"4", b"2"]
    assert gw.get(ns, range_end=end, count_only=True) == []
    only_keys = gw.get(ns, metadata=True, range_end=end, keys_only=True)
    assert only_keys == [(b"", kv_meta(a, base + 1, base + 4, 2)), (b"", kv_meta(b, base + 2, base + 2, 1)),
                         (b"", kv_meta(c_, base + 3, base + 3, 1))]
    assert gw.get(ns, range_end=end, min_mod_revision=base + 3) == [b"4", b"3"]
    assert gw.get(ns, range_end=end, max_mod_revision=base + 2) == [b"2"]
    assert gw.get(ns, range_end=end, min_create_revision=base + 2) == [b"2", b"3"]
    assert gw.get(ns, range_end=end, max_create_revision=base + 1) == [b"4"]

    assert gw.get_prefix(ns) == [(b"4", kv_meta(a, base + 1, base + 4, 2)),
                                 (b"2", kv_meta(b, base + 2, base + 2, 1)),
                                 (b"3", kv_meta(c_, base + 3, base + 3, 1))]
    assert keys(gw.get_prefix(ns, sort_order="descend")) == [c_.encode(), b.encode(), a.encode()]
    assert keys(gw.get_prefix(ns, sort_order="ascend", sort_target="value")) == \
        [b.encode(), c_.encode(), a.encode()]
    assert keys(gw.get_prefix(ns, sort_order="descend", sort_target="mod")) == \
        [a.encode(), c_.encode(), b.encode()]
    assert keys(gw.get_prefix(ns, sort_order="descend", sort_target="create")) == \
        [c_.encode(), b.encode(), a.encode()]
    assert keys(gw.get_prefix(ns, sort_order="ascend", sort_target="create")) == \
        [a.encode(), b.encode(), c_.encode()]
    assert [v for v, _ in gw.get_prefix(ns, sort_order="descend", sort_target="version")][:1] == [b"4"]
    # a target without an order: etcd sorts ascending
    assert keys(gw.get_prefix(ns, sort_target="value")) == [b.encode(), c_.encode(), a.encode()]
    assert gw.get_prefix(ns + "none/") == []


def test_get_all(fresh):
    """get_all() reads the whole keyspace (key "\\0" to "\\0"): a server of its own."""
    c = make_client(fresh)
    try:
        assert gw_all_keys(c) == []
        for k, v in (("/b", "2"), ("/a", "1"), ("/c/x", "3")):
            c.put(k, v)
        # revision 1 is a fresh store's; the puts are 2, 3, 4
        assert c.get_all() == [(b"1", kv_meta("/a", 3, 3, 1)), (b"2", kv_meta("/b", 2, 2, 1)),
                               (b"3", kv_meta("/c/x", 4, 4, 1))]
        assert gw_all_keys(c, sort_order="descend") == [b"/c/x", b"/b", b"/a"]
        assert gw_all_keys(c, sort_order="ascend", sort_target="create") == [b"/b", b"/a", b"/c/x"]
    finally:
        c.session.close()


def gw_all_keys(c, **kw):
    return [meta["key"] for _, meta in c.get_all(**kw)]


def test_compacted_revision(fresh):
    """Reads and watches from before a compaction (the compaction itself through the
    client's post(), etcd3gw has no method for it)."""
    c = make_client(fresh)
    try:
        for v in ("1", "2", "3"):
            c.put("/c", v)                 # revisions 2, 3, 4
        resp = c.post(c.get_url("/kv/compaction"), json={"revision": 3})
        assert norm(resp, 0) == {"header": {"revision": 4}}
        assert outcome(lambda: c.get("/c", revision=2)) == \
            error(11, "etcdserver: mvcc: required revision has been compacted", "Bad Request")
        assert c.get("/c", revision=3) == [b"2"]
        assert outcome(lambda: c.get("/c", revision=5)) == \
            error(11, "etcdserver: mvcc: required revision is a future revision", "Bad Request")
        # etcd cancels such a watch (canceled, compact_revision); etcd3gw passes on no event
        with pytest.raises(WatchTimedOut):
            c.watch_once("/c", timeout=QUIET, start_revision=2)
        assert c.watch_once("/c", timeout=WAIT, start_revision=3) == put_ev("/c", "2", "2", "3", 2)
    finally:
        c.session.close()


def test_delete(gw, ns):
    a, b = ns + "a", ns + "b"
    gw.put(a, "1")
    gw.put(b, "2")
    base = revision(gw)
    assert gw.delete(a) is True
    assert gw.get(a) == []
    assert revision(gw) == base + 1
    assert gw.delete(a) is False          # nothing deleted: "deleted" left out (0)
    assert revision(gw) == base + 1
    assert gw.delete(b, prev_kv=True) is True
    assert gw.delete(ns + "never") is False
    for i in range(3):
        gw.put(f"{ns}p/{i}", str(i))
    gw.put(ns + "q", "other")
    base = revision(gw)
    assert gw.delete_prefix(ns + "p/") is True
    assert revision(gw) == base + 1       # one revision for the whole range
    assert gw.get_prefix(ns + "p/") == []
    assert gw.get(ns + "q") == [b"other"]
    assert gw.delete_prefix(ns + "p/") is False
    assert gw.delete(ns, range_end=prefix_end(ns)) is True
    assert gw.get_prefix(ns) == []


def test_create_and_replace(gw, ns):
    k = ns + "k"
    base = revision(gw)
    assert gw.create(k, "v1") is True
    assert gw.create(k, "v2") is False
    assert gw.get(k, metadata=True) == [(b"v1", kv_meta(k, base + 1, base + 1, 1))]
    assert gw.replace(k, "wrong", "x") is False
    assert gw.replace(k, "v1", "v2") is True
    assert gw.get(k, metadata=True) == [(b"v2", kv_meta(k, base + 1, base + 2, 2))]
    assert gw.replace(ns + "missing", "", "x") is False
    assert gw.get(ns + "missing") == []
    assert revision(gw) == base + 2       # failed txns do not write
    lease = gw.lease(30)
    assert gw.create(ns + "leased", "l", lease=lease) is True
    assert gw.get(ns + "leased", metadata=True) == \
        [(b"l", kv_meta(ns + "leased", base + 3, base + 3, 1, lease=str(lease.id)))]
    lease.revoke()
    assert gw.get(ns + "leased") == []


# --------------------------------------------------------------------------------------
# Txn
# --------------------------------------------------------------------------------------


def txn_main(ns):
    """A txn whose compares hold: range, put (prev_kv), delete (prev_kv), a range of a
    missing key and a nested txn; the failure branch would write k3."""
    k1, k2, k3 = ns + "k1", ns + "k2", ns + "k3"
    return {
        "compare": [
            {"key": b64(k1), "result": "EQUAL", "target": "VALUE", "value": b64("a")},
            {"key": b64(k1), "result": "EQUAL", "target": "VERSION", "version": 1},
            {"key": b64(k1), "result": "NOT_EQUAL", "target": "CREATE", "create_revision": 0},
            {"key": b64(ns + "missing"), "result": "EQUAL", "target": "MOD", "mod_revision": 0},
        ],
        "success": [
            {"request_range": {"key": b64(k1)}},
            {"request_put": {"key": b64(k2), "value": b64("b"), "prev_kv": True}},
            {"request_delete_range": {"key": b64(k1), "prev_kv": True}},
            {"request_range": {"key": b64(ns + "missing")}},
            {"request_txn": {"success": [{"request_range": {"key": b64(k3)}}]}},
        ],
        "failure": [{"request_put": {"key": b64(k3), "value": b64("x")}}],
    }


def txn_failing(ns):
    """A compare over a key range that fails (mod > 2**40), failure branch put with prev_kv."""
    return {
        "compare": [{"key": b64(ns), "range_end": b64(prefix_end(ns)), "result": "GREATER",
                     "target": "MOD", "mod_revision": 1 << 40}],
        "success": [{"request_delete_range": {"key": b64(ns), "range_end": b64(prefix_end(ns))}}],
        "failure": [{"request_put": {"key": b64(ns + "k3"), "value": b64("y"), "prev_kv": True}}],
    }


def test_transaction(gw, ns):
    k1, k2, k3 = ns + "k1", ns + "k2", ns + "k3"
    base = revision(gw)
    gw.put(k1, "a")     # base+1
    gw.put(k3, "c")     # base+2
    kv1 = {"key": k1.encode(), "create_revision": 1, "mod_revision": 1, "version": "1", "value": b"a"}
    kv3 = {"key": k3.encode(), "create_revision": 2, "mod_revision": 2, "version": "1", "value": b"c"}
    resp = gw.transaction(txn_main(ns))
    # etcd: ranges see the revision as it is when they run; int64 fields are strings;
    # empty lists, zero counts and false flags are left out
    assert norm(resp, base) == {
        "header": {"revision": 3},
        "succeeded": True,
        "responses": [
            {"response_range": {"header": {"revision": 2}, "kvs": [kv1], "count": "1"}},
            {"response_put": {"header": {"revision": 3}}},
            {"response_delete_range": {"header": {"revision": 3}, "deleted": "1", "prev_kvs": [kv1]}},
            {"response_range": {"header": {"revision": 3}}},
            {"response_txn": {"header": {}, "succeeded": True, "responses": [
                {"response_range": {"header": {"revision": 3}, "kvs": [kv3], "count": "1"}}]}},
        ],
    }
    assert gw.get(k1) == []
    assert gw.get(k2, metadata=True) == [(b"b", kv_meta(k2, base + 3, base + 3, 1))]
    assert gw.get(k3) == [b"c"]

    resp = gw.transaction(txn_failing(ns))
    assert norm(resp, base) == {
        "header": {"revision": 4},
        "responses": [{"response_put": {"header": {"revision": 4}, "prev_kv": kv3}}],
    }
    assert gw.get(k3) == [b"y"]
    # a txn without compares and ops
    assert norm(gw.transaction({}), base) == {"header": {"revision": 4}, "succeeded": True}
    assert outcome(lambda: gw.transaction({"success": [
        {"request_put": {"key": b64(k1), "value": b64("1")}},
        {"request_put": {"key": b64(k1), "value": b64("2")}}]})) == \
        error(3, "etcdserver: duplicate key given in txn request", "Bad Request")
    assert revision(gw) == base + 4


def test_transaction_same_as_etcd(both):
    results = {}
    for label, target in both.items():
        c = make_client(target)
        ns = "/py-gw/test_transaction_same_as_etcd/"
        base = revision(c)
        c.put(ns + "k1", "a")
        c.put(ns + "k3", "c")
        results[label] = [norm(c.transaction(txn_main(ns)), base),
                          norm(c.transaction(txn_failing(ns)), base),
                          norm(c.get_prefix(ns), base)]
        c.session.close()
    assert results["etcd"][1]["responses"][0]["response_put"]["prev_kv"]["value"] == b"c"
    assert results["rsetcd"] == results["etcd"]


# --------------------------------------------------------------------------------------
# Lease
# --------------------------------------------------------------------------------------


def test_lease(gw, ns):
    lease = gw.lease(30)
    assert isinstance(lease.id, int) and lease.id > 0
    assert 28 <= lease.ttl() <= 30
    assert lease.keys() == []
    gw.put(ns + "a", "1", lease=lease)
    gw.put(ns + "b", "2", lease=lease)
    gw.put(ns + "plain", "3")
    assert sorted(lease.keys()) == [(ns + "a").encode(), (ns + "b").encode()]
    assert gw.get(ns + "a", metadata=True)[0][1]["lease"] == str(lease.id)
    assert "lease" not in gw.get(ns + "plain", metadata=True)[0][1]
    assert lease.refresh() == 30
    base = revision(gw)
    assert lease.revoke() is True
    assert revision(gw) == base + 1       # both keys deleted in one revision
    assert gw.get_prefix(ns) == [(b"3", gw.get(ns + "plain", metadata=True)[0][1])]
    # a revoked lease: TTL -1 from timetolive, no TTL from keepalive (etcd3gw: -1)
    assert lease.ttl() == -1
    assert lease.keys() == []
    assert lease.refresh() == -1
    assert outcome(lease.revoke) == LEASE_NOT_FOUND


def test_lease_errors(gw, ns):
    unknown = etcd3gw.Lease(0x7A5E_0000_0001, client=gw)
    assert outcome(unknown.revoke) == LEASE_NOT_FOUND
    assert outcome(lambda: gw.put(ns + "k", "v", lease=unknown)) == LEASE_NOT_FOUND
    assert outcome(lambda: gw.create(ns + "k", "v", lease=unknown)) == LEASE_NOT_FOUND
    assert gw.get(ns + "k") == []
    assert unknown.ttl() == -1
    assert unknown.keys() == []
    assert unknown.refresh() == -1
    assert outcome(lambda: gw.put("", "v")) == error(3, "etcdserver: key is not provided", "Bad Request")
    assert outcome(lambda: gw.get(ns + "k", revision=1 << 40)) == \
        error(11, "etcdserver: mvcc: required revision is a future revision", "Bad Request")


def test_short_lease_and_lock_expire(gw, ns, watches):
    """A 2 s lease deletes its key when it expires (seen by a watch, then timetolive -1);
    a lock whose 2 s lease expires is free again."""
    k = ns + "k"
    lease = gw.lease(2)
    gw.put(k, "v", lease=lease)
    lock = gw.lock(ns + "lock", ttl=2)
    assert lock.acquire() is True
    stream = watches.add(gw.watch(k))
    lock_stream = watches.add(gw.watch(lock.key))
    base = revision(gw)
    t0 = time.monotonic()
    key_events = stream.wait(1, timeout=2 + WAIT)
    lock_events = lock_stream.wait(1, timeout=WAIT)
    # the two leases expire one after the other (either first): revisions base+1, base+2
    first = min(int(e["kv"]["mod_revision"]) - base for e in key_events + lock_events)
    assert first == 1, f"after {time.monotonic() - t0:.1f}s"
    assert [norm(e, base) for e in key_events + lock_events] in (
        [del_ev(k, 1), del_ev(lock.key, 2)], [del_ev(k, 2), del_ev(lock.key, 1)])
    assert gw.get(k) == []
    assert lease.ttl() == -1
    other = gw.lock(ns + "lock", ttl=5)
    deadline = time.monotonic() + WAIT
    while not other.acquire() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert other.is_acquired() and not lock.is_acquired()
    assert other.release() is True


# --------------------------------------------------------------------------------------
# Lock (etcd3gw's own: a txn creating /locks/<name> with a lease, not the v3lock API)
# --------------------------------------------------------------------------------------


def test_lock(gw, ns):
    name = ns + "L"
    lock = gw.lock(name, ttl=30)
    assert lock.key == "/locks/" + name
    assert lock.is_acquired() is False
    assert lock.acquire() is True
    assert lock.is_acquired() is True
    ((value, meta),) = gw.get(lock.key, metadata=True)
    assert value == lock.uuid.encode() and meta["lease"] == str(lock.lease.id)
    assert 28 <= lock.lease.ttl() <= 30 and lock.lease.keys() == [lock.key.encode()]
    # a second lock of the same name fails at once while the first is held
    second = gw.lock(name, ttl=30)
    assert second.acquire() is False
    assert second.is_acquired() is False
    assert second.release() is False
    assert lock.is_acquired() is True
    assert lock.refresh() == 30
    assert lock.release() is True
    assert lock.is_acquired() is False
    assert gw.get(lock.key) == []
    assert lock.release() is False
    assert second.acquire() is True
    assert lock.acquire() is False
    assert second.release() is True
    # context manager
    with gw.lock(name, ttl=30) as held:
        assert held.is_acquired()
        assert gw.lock(name).acquire() is False
    assert gw.get(lock.key) == []
    # other names are independent
    a, b = gw.lock(ns + "A", ttl=30), gw.lock(ns + "B", ttl=30)
    assert a.acquire() and b.acquire()
    assert a.release() and b.release()


# --------------------------------------------------------------------------------------
# Watch
# --------------------------------------------------------------------------------------


def test_watch_key(gw, ns, watches):
    k = ns + "k"
    stream = watches.add(gw.watch(k))
    base = revision(gw)
    gw.put(k, "a")              # 1
    gw.put(ns + "other", "x")   # 2
    gw.put(k, "b")              # 3
    gw.delete(k)                # 4
    events = stream.wait(3)
    assert [norm(e, base) for e in events] == [
        put_ev(k, "a", 1, 1, 1), put_ev(k, "b", 1, 3, 2), del_ev(k, 4)]
    assert len(stream.quiet(4)) == 3
    stream.cancel()
    assert stream.wait_done()
    gw.put(k, "after cancel")
    assert len(stream.events) == 3


def test_watch_prefix(gw, ns, watches):
    p = ns + "p/"
    stream = watches.add(gw.watch_prefix(p))
    base = revision(gw)
    gw.put(p + "1", "a")        # 1
    gw.put(ns + "q", "x")       # 2
    gw.put(p + "2", "b")        # 3
    gw.put(ns + "p", "x")       # 4 (not under p/)
    gw.delete_prefix(p)         # 5: both keys, one revision
    events = stream.wait(4)
    assert [norm(e, base) for e in events] == [
        put_ev(p + "1", "a", 1, 1, 1), put_ev(p + "2", "b", 3, 3, 1),
        del_ev(p + "1", 5), del_ev(p + "2", 5)]
    assert len(stream.quiet(5)) == 4
    stream.cancel()
    assert stream.wait_done()


def test_two_watches_cancel_one(gw, ns, watches):
    """Cancelling a watch closes its HTTP stream only: another watch of the same key (its
    own stream) keeps getting events."""
    k = ns + "k"
    first = watches.add(gw.watch(k))
    second = watches.add(gw.watch(k))
    base = revision(gw)
    gw.put(k, "1")
    assert len(first.wait(1)) == 1 and len(second.wait(1)) == 1
    first.cancel()
    assert first.wait_done()
    gw.put(k, "2")
    gw.delete(k)
    assert [norm(e, base) for e in second.wait(3)] == [
        put_ev(k, "1", 1, 1, 1), put_ev(k, "2", 1, 2, 2), del_ev(k, 3)]
    assert len(first.events) == 1


def test_watch_options(gw, ns, watches):
    """start_revision replay, prev_kv, filters, watch_once."""
    k = ns + "k"
    base = revision(gw)
    gw.put(k, "a")      # 1
    gw.put(k, "b")      # 2
    gw.delete(k)        # 3
    prev_a = {"key": k.encode(), "create_revision": 1, "mod_revision": 1, "version": "1", "value": b"a"}
    prev_b = {"key": k.encode(), "create_revision": 1, "mod_revision": 2, "version": "2", "value": b"b"}
    replay = watches.add(gw.watch(k, start_revision=base + 1, prev_kv=True))
    assert [norm(e, base) for e in replay.wait(3)] == [
        put_ev(k, "a", 1, 1, 1), put_ev(k, "b", 1, 2, 2, prev_kv=prev_a), del_ev(k, 3, prev_kv=prev_b)]
    no_delete = watches.add(gw.watch(k, start_revision=base + 1, filters=["NODELETE"]))
    no_put = watches.add(gw.watch_prefix(ns, start_revision=base + 1, filters=["NOPUT"]))
    assert [norm(e, base) for e in no_delete.wait(2)] == [put_ev(k, "a", 1, 1, 1), put_ev(k, "b", 1, 2, 2)]
    assert [norm(e, base) for e in no_put.wait(1)] == [del_ev(k, 3)]
    assert len(no_delete.quiet(3)) == 2 and len(no_put.quiet(2)) == 1 and len(replay.quiet(4)) == 3
    assert norm(gw.watch_once(k, timeout=WAIT, start_revision=base + 2), base) == put_ev(k, "b", 1, 2, 2)
    with pytest.raises(WatchTimedOut):
        gw.watch_once(k, timeout=QUIET)
    # watch_once for an event still to come (start_revision: no race with the put)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        ev=gw.watch_once(k, timeout=WAIT, start_revision=base + 4)), daemon=True)
    t.start()
    time.sleep(0.2)
    gw.put(k, "c")      # 4
    t.join(WAIT + 1)
    assert norm(result.get("ev"), base) == put_ev(k, "c", 4, 4, 1)


# --------------------------------------------------------------------------------------
# Cluster and maintenance
# --------------------------------------------------------------------------------------


def test_members(gw, server):
    members = gw.members()
    member_id = gw.status()["header"]["member_id"]
    assert members == [{"ID": member_id, "name": "s1", "peerURLs": [server.peer_url],
                        "clientURLs": [server.client_url]}]


def test_status(gw, ns):
    st = gw.status()
    header = st["header"]
    assert st["leader"] == header["member_id"]
    assert st["version"] == "3.6.16"
    assert int(st["dbSize"]) > 0 and int(st["dbSizeInUse"]) > 0
    assert int(st["raftTerm"]) >= 1 and int(st["raftIndex"]) >= 1 and int(st["raftAppliedIndex"]) >= 1
    assert "errors" not in st and "isLearner" not in st   # no alarms, not a learner
    # A write acknowledged between two status calls advances the raft index: its entry
    # comes after every entry committed when the first status was read. Many rounds, as a
    # status that misses the write can be a matter of timing.
    def indexes(status):
        return {"revision": int(status["header"]["revision"]), "raftIndex": int(status["raftIndex"]),
                "raftAppliedIndex": int(status["raftAppliedIndex"])}

    for i in range(ROUNDS):
        before = indexes(gw.status())
        gw.put(ns + "k", str(i))
        after = indexes(gw.status())
        assert after["raftIndex"] > before["raftIndex"], f"round {i}: {before} -> put -> {after}"
        assert after["revision"] == before["revision"] + 1, f"round {i}: {before} -> put -> {after}"



def test_cluster_same_as_etcd(both):
    """status(), members() and GET /version: the same fields (and the same version
    strings) on both servers."""
    seen = {}
    for label, target in both.items():
        c = make_client(target)
        st = c.status()
        members = c.members()
        version = requests.get(f"{target.client_url}/version", timeout=CLIENT_TIMEOUT).json()
        seen[label] = {
            "status fields": sorted(st),
            "status header fields": sorted(st["header"]),
            "status values": {k: st[k] for k in ("version", "storageVersion", "dbSizeQuota",
                                                 "downgradeInfo") if k in st},
            "member fields": [sorted(m) for m in members],
            "version": version,
            "api_path": c.api_path,
        }
        c.session.close()
    assert seen["etcd"]["version"]["etcdserver"] == "3.6.16"
    assert seen["rsetcd"] == seen["etcd"]


# --------------------------------------------------------------------------------------
# One scenario, compared
# --------------------------------------------------------------------------------------


def run_history(c, ns, watches):
    """Puts, create, replace, a txn, a lease and its revoke, deletes: every result and the
    whole history as a prefix watch with prev_kv sees it, relative to the start."""
    stream = watches.add(c.watch_prefix(ns, prev_kv=True))
    base = revision(c)
    out = []
    lease = c.lease(60)
    out.append(c.put(ns + "a", "1"))
    out.append(c.put(ns + "b", b"\x00\xff", lease=lease))
    out.append(c.create(ns + "a", "x"))
    out.append(c.create(ns + "c", "3", lease=lease))
    out.append(c.replace(ns + "a", "1", "11"))
    out.append(c.replace(ns + "a", "1", "111"))
    out.append(norm(c.transaction(txn_main(ns)), base, [lease]))
    out.append(norm(c.get_prefix(ns, sort_order="descend", sort_target="mod"), base, [lease]))
    out.append(sorted(lease.keys()))
    out.append(lease.revoke())
    out.append(c.delete(ns + "a", prev_kv=True))
    out.append(c.delete_prefix(ns))
    out.append(norm(c.get_prefix(ns), base))
    out.append(revision(c) - base)
    events = stream.wait(9)
    out.append([norm(e, base, [lease]) for e in stream.quiet(len(events) + 1)])
    return out


def test_history_same_as_etcd(both):
    results = {}
    for label, target in both.items():
        w = Watches()
        c = make_client(target)
        try:
            results[label] = run_history(c, "/py-gw/test_history_same_as_etcd/", w)
        finally:
            w.close()
            c.session.close()
    assert len(results["etcd"][-1]) == 9     # the watch saw every change
    assert results["rsetcd"] == results["etcd"]


def test_errors_same_as_etcd(both):
    results = {}
    for label, target in both.items():
        c = make_client(target)
        ns = "/py-gw/test_errors_same_as_etcd/"
        unknown = etcd3gw.Lease(0x7A5E_0000_0002, client=c)
        results[label] = [
            outcome(unknown.revoke),
            outcome(lambda: c.put(ns + "k", "v", lease=unknown)),
            outcome(lambda: c.put("", "v")),
            outcome(lambda: c.get(ns, revision=1 << 40)),
            outcome(lambda: c.get("", range_end="")),
            outcome(lambda: c.delete("")),
            outcome(lambda: c.transaction({"success": [
                {"request_put": {"key": b64(ns + "d"), "value": ""}},
                {"request_delete_range": {"key": b64(ns + "d")}}]})),
            outcome(lambda: granted_ttl(c, c.lease(-5))),    # raised to the minimum TTL
        ]
        c.session.close()
    assert results["etcd"][0] == LEASE_NOT_FOUND
    assert results["etcd"][-1] == ("ok", "2")
    assert results["rsetcd"] == results["etcd"]


BAD_BODIES = ["{not json", "[]", '{"key": "not base64!"}', '{"key": 5}']


def granted_ttl(c, lease):
    """grantedTTL from timetolive (etcd3gw's Lease.ttl() gives the remaining TTL only)."""
    return c.post(c.get_url("/lease/timetolive"), json={"ID": lease.id})["grantedTTL"]


def test_bad_json_bodies(gw):
    """Bodies the gateway cannot decode: gRPC code 3 (InvalidArgument) as HTTP 400. The
    message is the JSON decoder's own text (Go's protojson in etcd) and is not compared."""
    for body in BAD_BODIES:
        result = outcome(lambda: gw.post(gw.get_url("/kv/range"), data=body))
        assert (result[0], result[1]["code"], result[2]) == ("Etcd3Exception", 3, ("Bad Request",)), body


def test_unknown_json_fields_ignored(gw, ns):
    """etcd's gateway decodes request bodies with unknown fields discarded, and an unknown
    enum name as the enum's zero value (compare target VERSION, result EQUAL)."""
    k = ns + "k"
    result = outcome(lambda: gw.post(gw.get_url("/kv/put"), json={
        "key": b64(k), "value": b64("v"), "bogus_field": 1, "nested": {"x": [1, 2]}}))
    assert result[0] == "ok" and set(result[1]) == {"header"}, result
    assert gw.get(k) == [b"v"]
    result = outcome(lambda: gw.post(gw.get_url("/lease/grant"), json={"TTL": 10, "unknown": "x"}))
    assert result[0] == "ok" and result[1]["TTL"] == "10", result
    # target VERSION == 0 is false for the existing key, version == 1 true
    for compare, succeeded in (({"target": "NOPE"}, False),
                               ({"target": "NOPE", "version": 1}, True),
                               ({"result": "BOGUS", "target": "VALUE", "value": b64("v")}, True)):
        result = outcome(lambda: gw.transaction({
            "compare": [{"key": b64(k), **compare}],
            "success": [{"request_range": {"key": b64(k)}, "future_op": {}}]}))
        assert result[0] == "ok", (compare, result)
        assert result[1].get("succeeded", False) is succeeded, compare
        assert len(result[1].get("responses", [])) == (1 if succeeded else 0), compare
