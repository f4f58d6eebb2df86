"""Fixtures for the differential plain-HTTP suite (see README.md)."""

import os
import sys
from pathlib import Path

import pytest

# The server processes are managed by the etcdctl suite's harness: one way to start them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "etcdctl"))

import etcdctl_harness as h  # noqa: E402


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A reference etcd and a server under test, both fresh single-member servers."""
    missing = [f"{what}: {path}" for what, path in
               (("server under test (RSETCD_BIN)", h.sut_bin()),
                ("reference etcd (REF_ETCD_BIN; run scripts/build-reference.sh)", h.ref_bin()))
               if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail("missing binaries:\n  " + "\n  ".join(missing), pytrace=False)
    workdir = tmp_path_factory.mktemp("http")
    ref = h.Server("ref", h.ref_bin(), workdir)
    sut = h.Server("sut", h.sut_bin(), workdir)
    try:
        ref.start()
        sut.start()
        yield {"ref": ref, "sut": sut}
    finally:
        sut.stop()
        ref.stop()
