"""Fixtures for the python-etcd3 client suite (see README.md).

Every test that takes the ``server`` fixture runs twice: against the reference etcd
("etcd") and against the server under test ("rsetcd"). The server processes are started
by the etcdctl suite's harness (``../etcdctl/etcdctl_harness.py``), the same way the
plain-HTTP suite does it: fresh single-member servers on free 127.0.0.1 ports.
"""

import os
import sys
import threading
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "etcdctl"))

import etcdctl_harness as h  # noqa: E402

# etcd3 0.12.0's generated *_pb2 modules use descriptor calls that protobuf 3.20 flags
# as deprecated: one warning per field at import, none about this suite.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import etcd3  # noqa: E402

LABELS = ("etcd", "rsetcd")
CLIENT_TIMEOUT = 5  # seconds, for every unary call and for watch creation


def _binary(label):
    return h.ref_bin() if label == "etcd" else h.sut_bin()


def _check_binary(label):
    path = _binary(label)
    if not os.access(path, os.X_OK):
        hint = ("REF_ETCD_BIN; run scripts/build-reference.sh" if label == "etcd"
                else "RSETCD_BIN; run cargo build")
        pytest.fail(f"missing {label} binary ({hint}): {path}", pytrace=False)


class Target:
    """One running server and the clients made for it."""

    def __init__(self, label, server):
        self.label = label
        self.server = server
        self._clients = []

    @property
    def port(self):
        return self.server.client_port

    @property
    def client_url(self):
        return f"http://{self.server.client_addr}"

    @property
    def peer_url(self):
        return f"http://{self.server.peer_addr}"

    def client(self):
        c = etcd3.client(host="127.0.0.1", port=self.port, timeout=CLIENT_TIMEOUT)
        self._clients.append(c)
        return c

    def close_clients(self):
        for c in self._clients:
            _close_client(c)
        self._clients = []


def _close_client(c):
    # python-etcd3's watcher thread (started by the first watch, lock or watch_once)
    # re-opens its Watch stream forever once the stream fails, and on a closed channel
    # that call raises in the thread. Before closing, give the watcher a stub whose
    # stream never yields: the (daemon) thread then parks there quietly.
    c.watcher._watch_stub = _ParkedWatchStub()
    c.close()


class _ParkedWatchStub:
    def Watch(self, *args, **kwargs):  # noqa: N802 (gRPC naming)
        return iter(threading.Event().wait, True)  # blocks forever, yields nothing


class Pool:
    """Servers started on first use, one per label, stopped at the end of the module."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.targets = {}
        self.failed = {}

    def get(self, label):
        if label in self.failed:
            pytest.fail(f"{label} server did not start: {self.failed[label]}", pytrace=False)
        if label not in self.targets:
            _check_binary(label)
            server = h.Server(label, _binary(label), self.workdir)
            try:
                server.start()
            except RuntimeError as e:
                self.failed[label] = str(e)
                raise
            self.targets[label] = Target(label, server)
        return self.targets[label]

    def stop(self):
        for t in self.targets.values():
            t.close_clients()
            t.server.stop()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    p = Pool(tmp_path_factory.mktemp("etcd3-shared"))
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(params=LABELS)
def server(request, pool):
    """A server shared by the tests of this module (each test uses its own keys)."""
    return pool.get(request.param)


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    server._clients.remove(c)
    _close_client(c)


@pytest.fixture(params=LABELS)
def fresh(request, tmp_path_factory):
    """A new single-member server for this test only (for tests that need an untouched
    store: whole-keyspace reads, compaction, revision numbers)."""
    label = request.param
    _check_binary(label)
    server = h.Server(label, _binary(label), tmp_path_factory.mktemp(f"etcd3-{label}"))
    server.start()
    target = Target(label, server)
    try:
        yield target
    finally:
        target.close_clients()
        server.stop()


@pytest.fixture(scope="module")
def extensive(tmp_path_factory):
    """An etcd and an rsetcd started with --metrics=extensive, for this module."""
    targets = {}
    try:
        for label in LABELS:
            _check_binary(label)
            server = h.Server(label, _binary(label), tmp_path_factory.mktemp(f"ext-{label}"),
                              extra_args=["--metrics", "extensive"])
            server.start()
            targets[label] = Target(label, server)
        yield targets
    finally:
        for target in targets.values():
            target.close_clients()
            target.server.stop()


@pytest.fixture
def both(pool):
    """The shared etcd and rsetcd servers together, for direct comparisons."""
    return {label: pool.get(label) for label in LABELS}


def pytest_configure(config):
    # tenacity 6.3 (the last release that still calls etcd3 0.12.0's old-style lock wait
    # function, see requirements.txt) says so on every Lock.acquire that has to wait.
    config.addinivalue_line(
        "filterwarnings",
        'ignore:"wait" function must accept single "retry_state" parameter:DeprecationWarning')
