"""python-etcd3 (PyPI `etcd3` 0.12.0, gRPC) against the reference etcd and rsetcd.

Tests taking ``server``/``client`` or ``fresh`` run once per server ("etcd", "rsetcd") and
assert etcd's observable behaviour through the client's API; tests taking ``both`` run the
same steps on the two servers and compare the results directly. See README.md.
"""

import concurrent.futures
import re
import threading
import time

import etcd3
import etcd3.etcdrpc as etcdrpc
import grpc
import pytest
from etcd3.events import DeleteEvent, PutEvent
from etcd3.exceptions import (Etcd3Exception, PreconditionFailedError,
                              RevisionCompactedError, WatchTimedOut)

WAIT = 5.0        # upper bound for anything that should happen "soon"
QUIET = 0.5       # how long "nothing more happens" is watched for

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


@pytest.fixture
def ns(request):
    """A key prefix of this test's own (servers are shared by the tests of the module)."""
    return f"/py/{request.node.originalname}/"


def revision(client):
    """The store's current revision, from a range response header."""
    return client.get_response("/py-revision-probe").header.revision


def outcome(fn):
    """Run fn and describe what happened: ("ok", result) or the error the client raised
    (its class, and the gRPC code and message, also when the client wrapped them)."""
    try:
        return ("ok", fn())
    except grpc.RpcError as e:
        return ("grpc.RpcError", e.code().name, e.details())
    except Etcd3Exception as e:
        ctx = e.__context__
        grpc_part = (ctx.code().name, ctx.details()) if isinstance(ctx, grpc.RpcError) else None
        return (type(e).__name__, str(e), grpc_part)


class Collector:
    """A watch callback that keeps what it is given (WatchResponse or exception)."""

    def __init__(self):
        self.items = []
        self.cond = threading.Condition()

    def __call__(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    @property
    def events(self):
        return [ev for it in self.items if hasattr(it, "events") for ev in it.events]

    @property
    def errors(self):
        return [it for it in self.items if isinstance(it, Exception)]

    def wait_events(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events) < n and not self.errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.events)

    def wait_error(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.errors[0]


def take(iterator, n, cancel, timeout=WAIT, until=None):
    """The next n items of a blocking watch iterator (fewer if one satisfies until); on
    timeout, cancel() unblocks it. Exceptions from the iterator propagate."""
    out = []
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def run():
        for item in iterator:
            out.append(item)
            if len(out) == n or (until is not None and until(item)):
                return
    fut = ex.submit(run)
    try:
        fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        cancel()
        fut.result(timeout=WAIT)
    finally:
        ex.shutdown(wait=False)
    return out


def ev(e, base=0):
    """An event as comparable data; revisions relative to base."""
    kind = "PUT" if isinstance(e, PutEvent) else "DELETE" if isinstance(e, DeleteEvent) else "?"
    return (kind, e.key, e.value, e.mod_revision - base,
            (e.create_revision - base) if kind == "PUT" else 0, e.version)


def keys(results):
    return [meta.key for _, meta in results]


# --------------------------------------------------------------------------------------
# KV
# --------------------------------------------------------------------------------------


def test_put_get(client, ns):
    k = ns + "k"
    assert client.get(k) == (None, None)
    r0 = revision(client)

    resp = client.put(k, "v1")
    assert resp.header.revision == r0 + 1
    value, meta = client.get(k)
    assert value == b"v1"
    assert meta.key == k.encode()
    assert (meta.create_revision, meta.mod_revision, meta.version) == (r0 + 1, r0 + 1, 1)
    assert meta.lease_id == 0
    assert meta.response_header.revision == r0 + 1

    client.put(k, b"\x00\xffbin")
    value, meta = client.get(k)
    assert value == b"\x00\xffbin"
    assert (meta.create_revision, meta.mod_revision, meta.version) == (r0 + 1, r0 + 2, 2)

    # serializable (local) read sees the same committed value on a single member
    assert client.get(k, serializable=True)[0] == b"\x00\xffbin"

    uk = ns + "ключ/🔑"
    client.put(uk, "значение")
    assert client.get(uk)[0] == "значение".encode()


def test_put_prev_kv(client, ns):
    k = ns + "k"
    r = client.put(k, "one", prev_kv=True)
    assert not r.HasField("prev_kv")          # nothing before
    r = client.put(k, "two", prev_kv=True)
    assert r.prev_kv.key == k.encode()
    assert r.prev_kv.value == b"one"
    assert r.prev_kv.version == 1
    r = client.put(k, "three")                # not asked for
    assert not r.HasField("prev_kv")


def test_put_if_not_exists_and_replace(client, ns):
    k = ns + "k"
    assert client.put_if_not_exists(k, "first") is True
    assert client.put_if_not_exists(k, "second") is False
    assert client.get(k)[0] == b"first"
    assert client.replace(k, "wrong", "x") is False
    assert client.get(k)[0] == b"first"
    assert client.replace(k, "first", "x") is True
    assert client.get(k)[0] == b"x"


def test_get_prefix_and_range(client, ns):
    for k in ("a/1", "a/2", "a/3", "ab", "b", "a"):
        client.put(ns + k, "v-" + k)
    got = list(client.get_prefix(ns + "a/"))
    assert keys(got) == [(ns + k).encode() for k in ("a/1", "a/2", "a/3")]
    assert [v for v, _ in got] == [b"v-a/1", b"v-a/2", b"v-a/3"]

    resp = client.get_prefix_response(ns + "a")
    assert resp.count == 5 and not resp.more
    assert [kv.key for kv in resp.kvs] == [(ns + k).encode() for k in ("a", "a/1", "a/2", "a/3", "ab")]

    # [range_start, range_end): end excluded
    got = list(client.get_range(ns + "a/2", ns + "b"))
    assert keys(got) == [(ns + k).encode() for k in ("a/2", "a/3", "ab")]
    assert list(client.get_range(ns + "c", ns + "d")) == []

    # keys only: the values come back empty, the metadata does not
    got = list(client.get_prefix(ns + "a/", keys_only=True))
    assert keys(got) == [(ns + k).encode() for k in ("a/1", "a/2", "a/3")]
    assert [v for v, _ in got] == [b"", b"", b""]
    assert all(meta.version == 1 and meta.mod_revision > 0 for _, meta in got)


def test_sort(client, ns):
    # created in the order c, a, d, b; values reverse the key order; versions a=3, b=2,
    # c=1, d=4; last modified in the order c, a, b, d
    writes = ["c", "a", "d", "b", "a", "a", "b", "d", "d", "d"]
    values = {"a": "4", "b": "3", "c": "2", "d": "1"}
    for k in writes:
        client.put(ns + k, values[k])

    def order(**kw):
        return [meta.key.decode()[len(ns):] for _, meta in client.get_prefix(ns, **kw)]

    assert order() == ["a", "b", "c", "d"]
    assert order(sort_order="ascend") == ["a", "b", "c", "d"]
    assert order(sort_order="descend") == ["d", "c", "b", "a"]
    assert order(sort_order="ascend", sort_target="value") == ["d", "c", "b", "a"]
    assert order(sort_order="descend", sort_target="value") == ["a", "b", "c", "d"]
    assert order(sort_order="ascend", sort_target="version") == ["c", "b", "a", "d"]
    assert order(sort_order="descend", sort_target="version") == ["d", "a", "b", "c"]
    assert order(sort_order="ascend", sort_target="create") == ["c", "a", "d", "b"]
    assert order(sort_order="descend", sort_target="create") == ["b", "d", "a", "c"]
    assert order(sort_order="ascend", sort_target="mod") == ["c", "a", "b", "d"]
    assert order(sort_order="descend", sort_target="mod") == ["d", "b", "a", "c"]
    # no order but a target other than the key: etcd sorts ascending by that target
    assert order(sort_target="value") == ["d", "c", "b", "a"]
    assert order(sort_target="version") == ["c", "b", "a", "d"]
    # get_range takes the same options
    got = list(client.get_range(ns + "a", ns + "c", sort_order="descend", sort_target="key"))
    assert keys(got) == [(ns + "b").encode(), (ns + "a").encode()]


def test_get_all(fresh):
    client = fresh.client()
    assert list(client.get_all()) == []
    for k in ("zeta", "alpha", "/x/y", "mid"):
        client.put(k, k.upper())
    got = list(client.get_all())
    assert keys(got) == [b"/x/y", b"alpha", b"mid", b"zeta"]
    assert [v for v, _ in got] == [b"/X/Y", b"ALPHA", b"MID", b"ZETA"]
    assert keys(client.get_all(sort_order="descend")) == [b"zeta", b"mid", b"alpha", b"/x/y"]
    assert [v for v, _ in client.get_all(keys_only=True)] == [b""] * 4
    assert keys(client.get_all(sort_order="ascend", sort_target="create")) == \
        [b"zeta", b"alpha", b"/x/y", b"mid"]


def test_delete(client, ns):
    for k in ("p/1", "p/2", "p/3", "q"):
        client.put(ns + k, k)
    assert client.delete(ns + "p/1") is True
    assert client.delete(ns + "p/1") is False           # already gone
    assert client.get(ns + "p/1") == (None, None)

    resp = client.delete(ns + "p/2", prev_kv=True, return_response=True)
    assert resp.deleted == 1
    assert [(kv.key, kv.value) for kv in resp.prev_kvs] == [((ns + "p/2").encode(), b"p/2")]
    resp = client.delete(ns + "missing", return_response=True)
    assert resp.deleted == 0 and list(resp.prev_kvs) == []

    client.put(ns + "p/4", "p/4")
    r0 = revision(client)
    resp = client.delete_prefix(ns + "p/")
    assert resp.deleted == 2
    assert resp.header.revision == r0 + 1               # one revision for the whole range
    assert list(client.get_prefix(ns + "p/")) == []
    assert client.get(ns + "q")[0] == b"q"              # outside the prefix: kept
    assert client.delete_prefix(ns + "p/").deleted == 0
    assert revision(client) == r0 + 1                   # deleting nothing writes nothing


# --------------------------------------------------------------------------------------
# Txn
# --------------------------------------------------------------------------------------


def test_txn_value_compare_branches(client, ns):
    t = client.transactions
    k, out = ns + "k", ns + "out"
    client.put(k, "v")

    ok, responses = client.transaction(
        compare=[t.value(k) == "v"],
        success=[t.put(out, "yes")], failure=[t.put(out, "no")])
    assert ok is True
    assert len(responses) == 1 and responses[0].WhichOneof("response") == "response_put"
    assert client.get(out)[0] == b"yes"

    ok, responses = client.transaction(
        compare=[t.value(k) == "other"],
        success=[t.put(out, "yes")], failure=[t.put(out, "no")])
    assert ok is False
    assert len(responses) == 1
    assert client.get(out)[0] == b"no"

    assert client.transaction(compare=[t.value(k) != "other"], success=[], failure=[])[0] is True
    assert client.transaction(compare=[t.value(k) > "u"], success=[], failure=[])[0] is True
    assert client.transaction(compare=[t.value(k) < "u"], success=[], failure=[])[0] is False


def test_txn_version_create_mod(client, ns):
    t = client.transactions
    k, missing = ns + "k", ns + "missing"
    r1 = client.put(k, "a").header.revision
    r2 = client.put(k, "b").header.revision

    def holds(cmp):
        return client.transaction(compare=[cmp], success=[], failure=[])[0]

    assert holds(t.version(k) == 2) is True
    assert holds(t.version(k) > 1) is True
    assert holds(t.version(k) > 5) is False
    assert holds(t.version(k) < 2) is False
    assert holds(t.create(k) == r1) is True
    assert holds(t.create(k) == r2) is False
    assert holds(t.mod(k) == r2) is True
    assert holds(t.mod(k) < r2) is False
    assert holds(t.mod(k) > r1) is True
    assert holds(t.mod(k) != r2) is False
    # a missing key has version, create and mod revision 0
    assert holds(t.version(missing) == 0) is True
    assert holds(t.create(missing) == 0) is True
    assert holds(t.mod(missing) == 0) is True
    # a compare over a key range [key, range_end) must hold for every key in it
    client.put(k + "2", "x")                             # version 1
    assert holds(t.version(k, ns + "l") > 0) is True
    assert holds(t.version(k, ns + "l") > 1) is False
    assert holds(t.value(k, ns + "l") != "nope") is True
    # all compares must hold
    ok, _ = client.transaction(compare=[t.version(k) == 2, t.value(k) == "a"],
                               success=[t.put(k, "success")], failure=[t.put(k, "failure")])
    assert ok is False
    assert client.get(k)[0] == b"failure"


def test_txn_ops_and_results(client, ns):
    t = client.transactions
    a, b, c = ns + "a", ns + "b", ns + "c"
    client.put(a, "1")
    client.put(b, "2")
    r0 = revision(client)
    ok, responses = client.transaction(
        compare=[t.version(a) > 0],
        success=[t.get(a), t.put(c, "3", prev_kv=True), t.delete(b, prev_kv=True),
                 t.get(ns, ns + "\xff"), t.put(a, "11", prev_kv=True)],
        failure=[])
    assert ok is True
    assert len(responses) == 5
    # a range answer comes back as [(value, KVMetadata)] seeing the txn's earlier writes
    assert [(v, m.key) for v, m in responses[0]] == [(b"1", a.encode())]
    assert responses[1].response_put.HasField("prev_kv") is False
    assert responses[2].response_delete_range.deleted == 1
    assert [kv.value for kv in responses[2].response_delete_range.prev_kvs] == [b"2"]
    assert [(v, m.key) for v, m in responses[3]] == [(b"1", a.encode()), (b"3", c.encode())]
    assert responses[4].response_put.prev_kv.value == b"1"
    # all writes of one txn share one revision
    assert revision(client) == r0 + 1
    assert client.get(a)[1].mod_revision == client.get(c)[1].mod_revision == r0 + 1
    assert client.get(b) == (None, None)


def test_txn_nested(client, ns):
    t = client.transactions
    k, inner = ns + "k", ns + "inner"
    client.put(k, "v")
    ok, responses = client.transaction(
        compare=[],
        success=[t.txn(compare=[t.value(k) == "v"],
                       success=[t.put(inner, "then")], failure=[t.put(inner, "else")])],
        failure=[])
    assert ok is True
    assert responses[0].WhichOneof("response") == "response_txn"
    assert responses[0].response_txn.succeeded is True
    assert client.get(inner)[0] == b"then"


# --------------------------------------------------------------------------------------
# Watch
# --------------------------------------------------------------------------------------


def test_watch_callback_put_delete_cancel(client, ns):
    k = ns + "k"
    col = Collector()
    watch_id = client.add_watch_callback(k, col)
    r_put = client.put(k, "v1").header.revision
    client.put(ns + "other", "x")                      # not watched
    r_del = client.delete(k, return_response=True).header.revision
    got = col.wait_events(2)
    assert [ev(e) for e in got] == [
        ("PUT", k.encode(), b"v1", r_put, r_put, 1),
        ("DELETE", k.encode(), b"", r_del, 0, 0),
    ]
    assert all(it.header.revision >= r_put for it in col.items)

    client.cancel_watch(watch_id)
    client.put(k, "after-cancel")
    time.sleep(QUIET)
    assert len(col.events) == 2 and col.errors == []


def test_watch_cancel_leaves_other_watches(client, ns):
    k = ns + "k"
    first, second = Collector(), Collector()
    id1 = client.add_watch_callback(k, first)
    id2 = client.add_watch_callback(k, second)
    assert id1 != id2
    client.put(k, "both")
    assert len(first.wait_events(1)) == 1 and len(second.wait_events(1)) == 1
    client.cancel_watch(id1)
    client.put(k, "second only")
    assert [e.value for e in second.wait_events(2)] == [b"both", b"second only"]
    time.sleep(QUIET)
    assert [e.value for e in first.events] == [b"both"]
    client.cancel_watch(id2)


def test_watch_prefix_callback(client, ns):
    p = ns + "p/"
    col = Collector()
    watch_id = client.add_watch_prefix_callback(p, col)
    client.put(p + "a", "1")
    client.put(ns + "q", "not watched")
    client.put(p + "b", "2")
    client.delete(p + "a")
    got = col.wait_events(3)
    assert [(type(e).__name__, e.key, e.value) for e in got] == [
        ("PutEvent", (p + "a").encode(), b"1"),
        ("PutEvent", (p + "b").encode(), b"2"),
        ("DeleteEvent", (p + "a").encode(), b""),
    ]
    client.cancel_watch(watch_id)


def test_watch_iterator_prefix_and_cancel(client, ns):
    p = ns + "p/"
    events, cancel = client.watch_prefix(p)
    client.put(p + "x", "1")
    client.put(ns + "elsewhere", "1")
    client.delete(p + "x")
    client.put(p + "y", "2")
    got = take(events, 3, cancel)
    assert [(type(e).__name__, e.key, e.value) for e in got] == [
        ("PutEvent", (p + "x").encode(), b"1"),
        ("DeleteEvent", (p + "x").encode(), b""),
        ("PutEvent", (p + "y").encode(), b"2"),
    ]
    cancel()
    # after cancel the iterator ends instead of blocking
    assert take(events, 1, cancel, timeout=2) == []


def test_watch_from_past_revision(client, ns):
    k = ns + "k"
    r1 = client.put(k, "a").header.revision
    r2 = client.put(k, "b").header.revision
    r3 = client.delete(k, return_response=True).header.revision
    r4 = client.put(k, "c").header.revision

    events, cancel = client.watch(k, start_revision=r1)
    got = take(events, 4, cancel)
    cancel()
    assert [ev(e) for e in got] == [
        ("PUT", k.encode(), b"a", r1, r1, 1),
        ("PUT", k.encode(), b"b", r2, r1, 2),
        ("DELETE", k.encode(), b"", r3, 0, 0),
        ("PUT", k.encode(), b"c", r4, r4, 1),
    ]

    # prev_kv: each event also carries the key as it was before
    col = Collector()
    watch_id = client.add_watch_callback(k, col, start_revision=r2, prev_kv=True)
    got = col.wait_events(3)
    client.cancel_watch(watch_id)
    assert [(type(e).__name__, e.value, e.prev_value) for e in got] == [
        ("PutEvent", b"b", b"a"),
        ("DeleteEvent", b"", b"b"),
        ("PutEvent", b"c", b""),
    ]


def test_watch_once(client, ns):
    k = ns + "k"
    t0 = time.monotonic()
    with pytest.raises(WatchTimedOut):
        client.watch_once(k, timeout=QUIET)
    assert time.monotonic() - t0 >= QUIET * 0.9
    r = client.put(k, "v").header.revision
    e = client.watch_once(k, timeout=WAIT, start_revision=r)
    assert isinstance(e, PutEvent) and (e.key, e.value, e.mod_revision) == (k.encode(), b"v", r)


# --------------------------------------------------------------------------------------
# Lease
# --------------------------------------------------------------------------------------


def test_lease_grant_info_refresh_revoke(client, ns):
    lease = client.lease(30)
    assert lease.id > 0 and lease.ttl == 30
    assert lease.granted_ttl == 30
    assert 28 <= lease.remaining_ttl <= 30

    k1, k2 = ns + "k1", ns + "k2"
    client.put(k1, "v", lease=lease)
    client.put(k2, "v", lease=lease.id)
    assert client.get(k1)[1].lease_id == lease.id
    assert sorted(lease.keys) == sorted([k1.encode(), k2.encode()])

    refreshed = lease.refresh()
    assert len(refreshed) == 1
    assert (refreshed[0].ID, refreshed[0].TTL) == (lease.id, 30)
    assert 29 <= lease.remaining_ttl <= 30

    r0 = revision(client)
    lease.revoke()
    assert client.get(k1) == (None, None) and client.get(k2) == (None, None)
    assert revision(client) == r0 + 1       # both keys deleted in one revision
    info = client.get_lease_info(lease.id)
    assert info.TTL == -1 and list(info.keys) == []


def test_lease_expiry_deletes_keys(client, ns):
    k = ns + "k"
    lease = client.lease(2)
    assert lease.ttl == 2
    col = Collector()
    watch_id = client.add_watch_callback(k, col)
    client.put(k, "short-lived", lease=lease)
    t0 = time.monotonic()
    assert client.get(k)[0] == b"short-lived"
    got = col.wait_events(2, timeout=8)          # the put, then the expiry's delete
    gone_after = time.monotonic() - t0
    client.cancel_watch(watch_id)
    assert [type(e).__name__ for e in got] == ["PutEvent", "DeleteEvent"]
    assert client.get(k) == (None, None)
    assert 1.0 <= gone_after <= 6.0, f"key deleted {gone_after:.2f}s after a 2 s lease"
    assert client.get_lease_info(lease.id).TTL == -1


def test_lease_requested_id_and_minimum_ttl(client, ns):
    lease = client.lease(60, lease_id=0x7a11ce)
    assert lease.id == 0x7a11ce
    assert client.get_lease_info(0x7a11ce).grantedTTL == 60
    with pytest.raises(PreconditionFailedError):
        client.lease(60, lease_id=0x7a11ce)     # the id is taken
    lease.revoke()
    # a TTL under the minimum (1.5 x election timeout, rounded up) is raised to it
    short = client.lease(1)
    assert short.ttl == 2
    short.revoke()


# --------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------


def test_lock_acquire_release(client, ns):
    name = ns.strip("/").replace("/", "-")
    lock = client.lock(name, ttl=10)
    assert lock.is_acquired() is False
    assert lock.acquire(timeout=2) is True
    assert lock.is_acquired() is True
    value, meta = client.get("/locks/" + name)
    assert value == lock.uuid and meta.lease_id == lock.lease.id
    assert 8 <= lock.lease.remaining_ttl <= 10

    other = client.lock(name, ttl=10)
    t0 = time.monotonic()
    assert other.acquire(timeout=1) is False        # held: waits, then gives up
    assert time.monotonic() - t0 >= 0.9
    assert other.is_acquired() is False
    assert other.release() is False                 # not its lock

    assert lock.release() is True
    assert lock.is_acquired() is False
    assert client.get("/locks/" + name) == (None, None)
    assert other.acquire(timeout=2) is True
    assert other.is_acquired() is True and lock.is_acquired() is False
    assert other.release() is True


def test_lock_waiter_wakes_on_release(client, ns):
    name = ns.strip("/").replace("/", "-")
    holder = client.lock(name, ttl=10)
    assert holder.acquire(timeout=2) is True
    waiter = client.lock(name, ttl=10)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        fut = ex.submit(waiter.acquire, 5)
        time.sleep(QUIET)
        assert not fut.done()                       # blocked while held
        t0 = time.monotonic()
        assert holder.release() is True
        assert fut.result(timeout=WAIT) is True
        assert time.monotonic() - t0 < 3            # woken by the watch, not the timeout
    assert waiter.is_acquired() is True
    assert waiter.release() is True


def test_lock_expires_with_its_lease(client, ns):
    name = ns.strip("/").replace("/", "-")
    holder = client.lock(name, ttl=2)
    assert holder.acquire(timeout=2) is True
    t0 = time.monotonic()
    other = client.lock(name, ttl=10)
    assert other.acquire(timeout=8) is True         # once the holder's lease expires
    waited = time.monotonic() - t0
    assert 1.0 <= waited <= 6.0, f"lock taken over after {waited:.2f}s (2 s lease)"
    assert holder.is_acquired() is False
    assert holder.release() is False
    assert other.release() is True


def test_lock_context_manager_and_refresh(client, ns):
    name = ns.strip("/").replace("/", "-")
    with client.lock(name, ttl=10) as lock:
        assert lock.is_acquired() is True
        refreshed = lock.refresh()
        assert [(r.ID, r.TTL) for r in refreshed] == [(lock.lease.id, 10)]
    assert lock.is_acquired() is False
    assert client.get("/locks/" + name) == (None, None)


# --------------------------------------------------------------------------------------
# Cluster and maintenance
# --------------------------------------------------------------------------------------


def test_members(server, client):
    members = list(client.members)
    assert len(members) == 1
    m = members[0]
    assert m.name == "s1"
    assert list(m.peer_urls) == [server.peer_url]
    assert list(m.client_urls) == [server.client_url]
    assert m.id != 0 and m.id == client.get_response("x").header.member_id
    assert list(m.active_alarms) == []


def test_status(client, ns):
    st = client.status()
    assert re.fullmatch(r"3\.\d+\.\d+", st.version), st.version
    assert st.leader is not None
    members = list(client.members)
    assert (st.leader.id, st.leader.name) == (members[0].id, "s1")
    assert st.db_size > 0
    assert st.raft_index > 0
    assert st.raft_term >= 1
    assert st.raft_term == client.get_response("x").header.raft_term
    client.put(ns + "k", "v")
    after = client.status()
    assert after.raft_index > st.raft_index
    assert after.raft_term == st.raft_term


def test_defragment_keeps_data(client, ns):
    for i in range(20):
        client.put(ns + f"k{i:02d}", "v" * 1000)
    client.delete_prefix(ns + "k1")
    before = revision(client)
    client.defragment()
    assert revision(client) == before
    assert len(list(client.get_prefix(ns))) == 10
    assert client.status().db_size > 0


def test_status_version_same_as_etcd(both):
    versions = {label: t.client().status().version for label, t in both.items()}
    assert versions["rsetcd"] == versions["etcd"]


def test_compaction(fresh):
    client = fresh.client()
    k = "compact/k"
    r1 = client.put(k, "v1").header.revision
    r2 = client.put(k, "v2").header.revision
    r3 = client.put(k, "v3").header.revision

    def value_at(rev):
        # python-etcd3's get() has no working revision option: send the RangeRequest
        # through the client's own gRPC stub
        resp = client.kvstub.Range(etcdrpc.RangeRequest(key=k.encode(), revision=rev),
                                   client.timeout)
        return [kv.value for kv in resp.kvs]

    assert value_at(r1) == [b"v1"]
    client.compact(r2)
    assert outcome(lambda: value_at(r1)) == (
        "grpc.RpcError", "OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted")
    assert value_at(r2) == [b"v2"]
    assert value_at(r3) == [b"v3"]
    assert outcome(lambda: client.compact(r2)) == (
        "grpc.RpcError", "OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted")
    assert outcome(lambda: client.compact(r3 + 100)) == (
        "grpc.RpcError", "OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision")
    client.compact(r3, physical=True)
    assert value_at(r3) == [b"v3"]

    # a watch from before the compaction: the client hands out RevisionCompactedError
    col = Collector()
    client.add_watch_callback(k, col, start_revision=r1)
    err = col.wait_error()
    assert isinstance(err, RevisionCompactedError)
    assert err.compacted_revision == r3
    assert col.events == []

    events, cancel = client.watch(k, start_revision=r2)
    with pytest.raises(RevisionCompactedError) as info:
        take(events, 1, cancel)
    assert info.value.compacted_revision == r3

    # from the compaction revision on, history is still there
    events, cancel = client.watch(k, start_revision=r3)
    got = take(events, 1, cancel)
    cancel()
    assert [(e.value, e.mod_revision) for e in got] == [(b"v3", r3)]


# --------------------------------------------------------------------------------------
# Errors: the same calls must fail (or not) the same way on both servers
# --------------------------------------------------------------------------------------

UNKNOWN_LEASE = 0x1234567


def _err_revoke_unknown_lease(c, ns):
    return c.revoke_lease(UNKNOWN_LEASE)


def _err_put_with_unknown_lease(c, ns):
    c.put(ns + "k", "v", lease=UNKNOWN_LEASE)


def _err_lease_info_unknown(c, ns):
    info = c.get_lease_info(UNKNOWN_LEASE)
    return (info.ID, info.TTL, info.grantedTTL, list(info.keys))


def _err_refresh_unknown_lease(c, ns):
    return [(r.ID, r.TTL) for r in c.refresh_lease(UNKNOWN_LEASE)]


def _err_grant_taken_id(c, ns):
    c.lease(30, lease_id=0x5eed)
    try:
        c.lease(30, lease_id=0x5eed)
    finally:
        c.revoke_lease(0x5eed)


def _err_put_empty_key(c, ns):
    c.put("", "v")


def _err_txn_duplicate_put(c, ns):
    t = c.transactions
    c.transaction(compare=[], success=[t.put(ns + "d", "1"), t.put(ns + "d", "2")], failure=[])


def _err_txn_put_and_delete_same_key(c, ns):
    t = c.transactions
    c.transaction(compare=[], success=[t.put(ns + "d", "1"), t.delete(ns + "d")], failure=[])


def _err_compact_future(c, ns):
    c.compact(revision(c) + 1000)


def _err_delete_missing(c, ns):
    return c.delete(ns + "nothing-here")


def _err_range_future_revision(c, ns):
    c.kvstub.Range(etcdrpc.RangeRequest(key=b"x", revision=revision(c) + 1000), c.timeout)


def _err_put_request_too_large(c, ns):
    c.put(ns + "big", b"x" * (1536 * 1024 + 1))     # over --max-request-bytes (1.5 MiB)


def _err_put_over_grpc_limit(c, ns):
    # over the gRPC receive limit (2 MiB); the message size in the error counts the key
    c.put("big", b"x" * (3 * 1024 * 1024))


ERROR_CASES = {
    "put_request_too_large": (_err_put_request_too_large,
                              ("grpc.RpcError", "INVALID_ARGUMENT",
                               "etcdserver: request is too large")),
    "put_over_grpc_limit": (_err_put_over_grpc_limit,
                            ("grpc.RpcError", "RESOURCE_EXHAUSTED",
                             "grpc: received message larger than max (3145738 vs. 2097152)")),
    "revoke_unknown_lease": (_err_revoke_unknown_lease,
                             ("grpc.RpcError", "NOT_FOUND", "etcdserver: requested lease not found")),
    "put_with_unknown_lease": (_err_put_with_unknown_lease,
                               ("grpc.RpcError", "NOT_FOUND", "etcdserver: requested lease not found")),
    "lease_info_unknown": (_err_lease_info_unknown, ("ok", (UNKNOWN_LEASE, -1, 0, []))),
    "refresh_unknown_lease": (_err_refresh_unknown_lease, ("ok", [(UNKNOWN_LEASE, 0)])),
    "grant_taken_lease_id": (_err_grant_taken_id,
                             ("PreconditionFailedError", "",
                              ("FAILED_PRECONDITION", "etcdserver: lease already exists"))),
    "put_empty_key": (_err_put_empty_key,
                      ("grpc.RpcError", "INVALID_ARGUMENT", "etcdserver: key is not provided")),
    "txn_duplicate_put": (_err_txn_duplicate_put,
                          ("grpc.RpcError", "INVALID_ARGUMENT",
                           "etcdserver: duplicate key given in txn request")),
    "txn_put_and_delete_same_key": (_err_txn_put_and_delete_same_key,
                                    ("grpc.RpcError", "INVALID_ARGUMENT",
                                     "etcdserver: duplicate key given in txn request")),
    "compact_future_revision": (_err_compact_future,
                                ("grpc.RpcError", "OUT_OF_RANGE",
                                 "etcdserver: mvcc: required revision is a future revision")),
    "range_future_revision": (_err_range_future_revision,
                              ("grpc.RpcError", "OUT_OF_RANGE",
                               "etcdserver: mvcc: required revision is a future revision")),
    "delete_missing_key": (_err_delete_missing, ("ok", False)),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_same_as_etcd(both, case):
    fn, expected = ERROR_CASES[case]
    ns = f"/py/errors/{case}/"
    got = {label: outcome(lambda: fn(t.client(), ns)) for label, t in both.items()}
    assert got["etcd"] == expected, "the reference etcd itself answered differently"
    assert got["rsetcd"] == got["etcd"]


# --------------------------------------------------------------------------------------
# One history, both servers: every observable, revisions relative to the start
# --------------------------------------------------------------------------------------


def _history(c, ns):
    t = c.transactions
    base = revision(c)
    leases = {}

    def kv(value, meta):
        lease = leases.setdefault(meta.lease_id, f"L{len(leases)}") if meta.lease_id else 0
        return (meta.key, value, meta.create_revision - base, meta.mod_revision - base,
                meta.version, lease)

    def rev(resp):
        return resp.header.revision - base

    trace = []
    trace.append(("put", rev(c.put(ns + "a", "1"))))
    trace.append(("put", rev(c.put(ns + "b", "2"))))
    r = c.put(ns + "a", "3", prev_kv=True)
    trace.append(("put prev", rev(r), r.prev_kv.value, r.prev_kv.mod_revision - base))
    lease = c.lease(30)
    trace.append(("put lease", rev(c.put(ns + "l", "x", lease=lease))))
    trace.append(("get", kv(*c.get(ns + "l"))))
    ok, responses = c.transaction(
        compare=[t.value(ns + "a") == "3", t.version(ns + "b") == 1],
        success=[t.put(ns + "c", "4"), t.delete(ns + "b", prev_kv=True), t.get(ns + "a")],
        failure=[t.put(ns + "fail", "!")])
    trace.append(("txn", ok, len(responses),
                  [(kv_.key, kv_.value) for kv_ in responses[1].response_delete_range.prev_kvs],
                  [kv(*x) for x in responses[2]]))
    trace.append(("pine", c.put_if_not_exists(ns + "c", "5"), c.put_if_not_exists(ns + "d", "6")))
    trace.append(("replace", c.replace(ns + "d", "6", "7"), c.replace(ns + "d", "6", "8")))
    trace.append(("prefix", [kv(*x) for x in c.get_prefix(ns)]))
    trace.append(("desc by mod", keys(c.get_prefix(ns, sort_order="descend", sort_target="mod"))))
    lease.revoke()
    trace.append(("after revoke", keys(c.get_prefix(ns))))
    trace.append(("delete_prefix", c.delete_prefix(ns).deleted))
    trace.append(("end", revision(c) - base))
    sentinel = (ns + "zz-end").encode()
    c.put(sentinel, "")

    events, cancel = c.watch_prefix(ns, start_revision=base + 1, prev_kv=True)
    got = take(events, 100, cancel, until=lambda e: e.key == sentinel)
    cancel()
    trace.append(("history", [ev(e, base) + (e.prev_value,) for e in got]))
    return trace


def test_history_same_as_etcd(both):
    ns = "/py/history/"
    traces = {label: _history(t.client(), ns) for label, t in both.items()}
    assert traces["etcd"][-2] == ("end", 9)             # the scenario did what it says
    assert len(traces["etcd"][-1][1]) == 13             # 12 events and the sentinel
    assert traces["rsetcd"] == traces["etcd"]
