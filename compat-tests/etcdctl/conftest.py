"""Fixtures for the differential etcdctl suite (see README.md)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import etcdctl_harness as h  # noqa: E402


@pytest.fixture(scope="session")
def binaries():
    missing = [f"{what}: {path}" for what, path in
               (("server under test (RSETCD_BIN)", h.sut_bin()),
                ("reference etcd (REF_ETCD_BIN; run scripts/build-reference.sh)", h.ref_bin()),
                ("etcdctl 3.6 (ETCDCTL_BIN; run scripts/build-reference.sh)", h.etcdctl36_bin()))
               if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail("missing binaries:\n  " + "\n  ".join(missing), pytrace=False)
    return {"sut": h.sut_bin(), "ref": h.ref_bin()}
