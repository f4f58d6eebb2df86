"""`--log-outputs`: where a server writes its JSON log lines (a file, stdout, or several),
on rsetcd and on etcd alike. Readiness is read from wherever the lines go, since stderr may
stay empty."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import etcdctl_harness as h

SERVERS = {"etcd": h.ref_bin, "rsetcd": h.sut_bin}
KEYS = {"level", "ts", "caller", "msg"}
LEVELS = {"debug", "info", "warn", "error", "dpanic", "panic", "fatal"}


def run_member(binary: str, log_outputs, workdir: Path, watch: str) -> dict:
    """Starts a member with --log-outputs=<log_outputs> (or, given a list, with a config file
    holding `log-outputs: <that list>`), stdout and stderr captured to files, waits for the
    ready line in workdir/<watch>, checks /health, stops it (SIGTERM) and returns
    {name: text} of stdout, stderr and server.log (if written)."""
    client, peer = f"http://127.0.0.1:{h.free_port()}", f"http://127.0.0.1:{h.free_port()}"
    settings = {"name": "s1", "data-dir": str(workdir / "data"),
                "listen-client-urls": client, "advertise-client-urls": client,
                "listen-peer-urls": peer, "initial-advertise-peer-urls": peer,
                "initial-cluster": f"s1={peer}"}
    if isinstance(log_outputs, list):
        # JSON is YAML: the list is written as a flow sequence.
        config = workdir / "config.yml"
        config.write_text("".join(f"{k}: {json.dumps(v)}\n"
                                  for k, v in {**settings, "log-outputs": log_outputs}.items()))
        cmd = [binary, "--config-file", str(config)]
    else:
        cmd = [binary, *(f"--{k}={v}" for k, v in settings.items()),
               f"--log-outputs={log_outputs}"]
    with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=workdir, start_new_session=True)
    try:
        watched = workdir / watch
        deadline = time.monotonic() + h.READY_TIMEOUT
        while not (watched.exists() and h.READY_LINE in watched.read_bytes()):
            assert proc.poll() is None, f"exited {proc.returncode}: {texts(workdir)}"
            assert time.monotonic() < deadline, f"not ready: {texts(workdir)}"
            time.sleep(0.05)
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", int(client.rsplit(":", 1)[1]), timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return texts(workdir)


def texts(workdir: Path) -> dict:
    return {name: (workdir / name).read_text(errors="replace")
            for name in ("stdout", "stderr", "server.log") if (workdir / name).exists()}


def assert_log_lines(text: str):
    lines = text.splitlines()
    assert lines, "no log lines"
    for line in lines:
        doc = json.loads(line)
        assert isinstance(doc, dict) and KEYS <= set(doc), line
        assert doc["level"] in LEVELS and isinstance(doc["msg"], str), line
        assert all(isinstance(doc[k], str) and doc[k] for k in ("ts", "caller")), line
    assert any(json.loads(l)["msg"] == "ready to serve client requests" for l in lines), text


@pytest.mark.parametrize("server", SERVERS)
def test_log_outputs_file(server, tmp_path):
    out = run_member(SERVERS[server](), str(tmp_path / "server.log"), tmp_path, "server.log")
    assert_log_lines(out["server.log"])
    assert out["stderr"] == "" and out["stdout"] == "", out


@pytest.mark.parametrize("server", SERVERS)
def test_log_outputs_stdout(server, tmp_path):
    out = run_member(SERVERS[server](), "stdout", tmp_path, "stdout")
    assert_log_lines(out["stdout"])
    assert out["stderr"] == "" and "server.log" not in out, out


@pytest.mark.parametrize("server", SERVERS)
def test_log_outputs_stderr_and_file(server, tmp_path):
    out = run_member(SERVERS[server](), f"stderr,{tmp_path / 'server.log'}", tmp_path,
                     "server.log")
    assert_log_lines(out["server.log"])
    assert out["stderr"] == out["server.log"] and out["stdout"] == "", out


@pytest.mark.parametrize("server", SERVERS)
def test_log_outputs_from_config_file(server, tmp_path):
    out = run_member(SERVERS[server](), ["stdout", str(tmp_path / "server.log")], tmp_path,
                     "server.log")
    assert_log_lines(out["server.log"])
    assert out["stdout"] == out["server.log"] and out["stderr"] == "", out
