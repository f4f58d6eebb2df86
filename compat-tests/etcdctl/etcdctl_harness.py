"""Differential etcdctl harness: scenario parsing, server processes, step runner and
output normalization. Used by test_etcdctl_differential.py; see README.md."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SCENARIO_DIR = HERE / "scenarios"

READY_LINE = b"ready to serve client requests"
READY_TIMEOUT = 30.0
STEP_TIMEOUT = 30.0  # etcdctl's own --command-timeout is 5 s; this only guards hangs
# Commands that run longer by design (`check perf` always takes 60 s).
LONG_STEP_TIMEOUTS = {"check perf": 120.0}


# --------------------------------------------------------------------------------------
# Scenarios
#
# File format (scenarios/*.txt), one file holds many scenarios:
#
#   # comment
#   === scenario-name [@etcdctl34]      starts a scenario; @etcdctl34 = also run it with
#       [@unbuilt:N]                    Debian's etcdctl 3.4 as a second client; @unbuilt:N =
#                                       needs a feature of open issue N: expected to differ
#                                       (strict xfail, so it fails loudly once it matches)
#       [@session-ids]                  number etcdctl's own session lease ids (see
#                                       _number_session_ids)
#       [@cluster] [@mirror] [@pinned]  see below
#   put foo bar                         one etcdctl invocation (shell-like quoting, shlex)
#   txn -i <<EOF                        stdin for the step: the lines up to "EOF"
#   ...
#   EOF
#   put big <@repeat:1700000:x          stdin = "x" repeated 1700000 times (no newline)
#   put k <@hex:00ff                    stdin = these bytes (a value may hold NUL this way)
#   lease grant 60 => L                 capture the first hex id (12-16 digits) printed on stdout
#                                       as ${L}; later steps may use ${L}, and its hex and
#                                       decimal forms are normalized to <L> in outputs
#   repeat 20: put key${i:02d} v${i}    expands to 20 steps, i = 1..20 (Python format spec
#                                       optional); also allowed inside heredoc bodies
#   put @hex:01ff7f k                   an argument given as hex bytes (argv cannot hold NUL)
#   put @repeat:1000:k v                an argument made of "k" repeated 1000 times
#   put @repeat:1000:k:/a v             the same followed by "/a"
#   txn -i <<END ... ${L} ... END       captured variables are expanded in stdin too
#
# Commands that never exit by themselves (watch) run in the background:
#
#   &W watch --prefix a --prev-kv       start etcdctl in the background as W (stdin stays
#                                       open; a <<END heredoc is written to it first), then
#                                       wait BG_SETTLE seconds so that it has connected and
#                                       created its watch before the next step
#   send W progress                     write the rest of the line (raw, ${VAR} expanded)
#                                       plus a newline to W's stdin, then wait BG_SETTLE
#                                       seconds (for `watch -i`: watch ..., progress)
#   wait W [1.0]                        wait until W has printed nothing for the given
#                                       seconds (default WAIT_QUIET), stop it (SIGTERM) if it
#                                       still runs, and record its stdout/stderr/exit; the
#                                       exit is "stopped" when the harness ended it
#   timeout 1.5 watch --rev=1 k         run in the foreground, stop it after exactly 1.5 s
#                                       unless it exits first (for replays, errors)
#
# Background commands still running at the end of a scenario are waited for as if the
# scenario ended with `wait W`.
#
# More servers (scenario tags; each side gets its own, of the same binary):
#
#   === name @cluster                   three members s1..s3 (s1 made the leader first)
#   === name @mirror                    plus a single-member destination server
#   @m2 get k                           a step's target: @m1 (the default), @m2, @m3, @all
#   &W @m3 watch k                      (every member, in order) or @dest; also after &W
#                                       and `timeout T`
#   move-leader ${M2}                   built-in variables: ${M1}.. member ids (hex),
#   make-mirror ${DEST}                 ${DEST} the destination's address, ${TMP} a
#   snapshot save ${TMP}/s.db           scratch directory per server
#   snapfile ${TMP}/s.db                harness step: records whether the file exists, is
#                                       not empty, ends with etcd's SHA-256 trailer, and
#                                       whether a .part file was left
#
#   === name @pinned                    a documented difference: the transcripts must differ
#                                       exactly as pinned/<client>-<name>.diff shows
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Step:
    line: str                       # the line as written (after repeat expansion)
    args: list                      # argv tail (str or bytes), ${VAR} still unexpanded
    stdin: Optional[bytes] = None
    capture: Optional[str] = None
    kind: str = "run"               # run | bg (&W ...) | send | wait | timeout
    name: Optional[str] = None      # background process name (bg, send, wait)
    seconds: Optional[float] = None  # wait: quiet period; timeout: run time
    text: Optional[str] = None      # send: the raw line for stdin
    target: Optional[str] = None    # @m2 / @all / @dest: which server(s) (None: member 1)


@dataclasses.dataclass
class Scenario:
    name: str
    file: str
    lineno: int
    tags: set
    steps: list


_VAR_RE = re.compile(r"\$\{(\w+)(?::([^}]*))?\}")


def _expand_loop_var(text: str, name: str, value: int) -> str:
    def sub(m):
        if m.group(1) != name:
            return m.group(0)
        return format(value, m.group(2) or "d")
    return _VAR_RE.sub(sub, text)


def _expand_repeat(line: str) -> list:
    m = re.match(r"^repeat\s+(\d+)\s*:\s*(.*)$", line)
    if not m:
        return [line]
    return [_expand_loop_var(m.group(2), "i", i) for i in range(1, int(m.group(1)) + 1)]


def _parse_arg(tok: str):
    if tok.startswith("@hex:"):
        return bytes.fromhex(tok[len("@hex:"):])
    m = re.match(r"^@repeat:(\d+):([^:]*)(?::(.*))?$", tok, re.S)
    if m:
        return m.group(2) * int(m.group(1)) + (m.group(3) or "")
    return tok


_TARGET_RE = re.compile(r"^@(m\d+|all|dest)$")


def _split_target(text: str):
    """etcdctl arguments, with a leading `@m2` / `@all` / `@dest` taken as the target."""
    toks = shlex.split(text)
    target = None
    if toks and _TARGET_RE.match(toks[0]):
        target = toks.pop(0)[1:]
    return [_parse_arg(t) for t in toks], target


def _make_step(line: str, stdin: Optional[bytes], capture: Optional[str]) -> Step:
    m = re.match(r"^&(\w+)\s+(.+)$", line)
    if m:
        args, target = _split_target(m.group(2))
        return Step(line=line, args=args, stdin=stdin, kind="bg", name=m.group(1),
                    target=target)
    m = re.match(r"^send\s+(\w+)\s+(.*)$", line)
    if m:
        return Step(line=line, args=[], kind="send", name=m.group(1), text=m.group(2))
    m = re.match(r"^wait\s+(\w+)(?:\s+(\d+(?:\.\d+)?))?$", line)
    if m:
        return Step(line=line, args=[], kind="wait", name=m.group(1),
                    seconds=float(m.group(2)) if m.group(2) else None)
    m = re.match(r"^timeout\s+(\d+(?:\.\d+)?)\s+(.+)$", line)
    if m:
        args, target = _split_target(m.group(2))
        return Step(line=line, args=args, stdin=stdin, kind="timeout",
                    seconds=float(m.group(1)), target=target)
    m = re.match(r"^snapfile\s+(\S+)$", line)
    if m:
        return Step(line=line, args=[m.group(1)], kind="snapfile")
    if re.match(r"^(&|send\b|wait\b|timeout\b|snapfile\b)", line):
        raise ValueError(f"malformed step {line!r}")
    args, target = _split_target(line)
    return Step(line=line, args=args, stdin=stdin, capture=capture, target=target)


def parse_scenario_file(path: Path) -> list:
    scenarios = []
    cur = None
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        lineno = i + 1
        i += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("==="):
            parts = line[3:].split()
            if not parts:
                raise ValueError(f"{path}:{lineno}: scenario without a name")
            name = parts[0]
            tags = {p[1:] for p in parts[1:] if p.startswith("@")}
            cur = Scenario(name=name, file=path.name, lineno=lineno, tags=tags, steps=[])
            scenarios.append(cur)
            continue
        if cur is None:
            raise ValueError(f"{path}:{lineno}: step before the first '=== name' line")

        capture = None
        m = re.match(r"^(.*?)\s+=>\s+(\w+)$", line)
        if m:
            line, capture = m.group(1), m.group(2)

        stdin = None
        m = re.match(r"^(.*?)\s+<<(\w+)$", line)
        if m:
            line, marker = m.group(1), m.group(2)
            body = []
            while True:
                if i >= len(lines):
                    raise ValueError(f"{path}:{lineno}: heredoc <<{marker} not closed")
                b = lines[i]
                i += 1
                if b.strip() == marker:
                    break
                body.extend(_expand_repeat(b))
            stdin = ("\n".join(body) + "\n").encode()
        else:
            m = re.match(r"^(.*?)\s+<@repeat:(\d+):(.*)$", line)
            if m:
                line = m.group(1)
                stdin = (m.group(3) * int(m.group(2))).encode()
            m = re.match(r"^(.*?)\s+<@hex:([0-9a-fA-F]*)$", line)
            if m:
                line = m.group(1)
                stdin = bytes.fromhex(m.group(2))

        for expanded in _expand_repeat(line):
            try:
                cur.steps.append(_make_step(expanded, stdin, capture))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    for s in scenarios:
        if not s.steps:
            raise ValueError(f"{path}: scenario {s.name} has no steps")
    return scenarios


def load_scenarios() -> list:
    out = []
    seen = {}
    for path in sorted(SCENARIO_DIR.glob("*.txt")):
        for s in parse_scenario_file(path):
            if s.name in seen:
                raise ValueError(f"duplicate scenario name {s.name} ({seen[s.name]} and {s.file})")
            seen[s.name] = s.file
            out.append(s)
    return out


# --------------------------------------------------------------------------------------
# Binaries and clients (paths from the environment, see README.md)
# --------------------------------------------------------------------------------------

def _clean_env(extra=None):
    # Any ETCD_* / ETCDCTL_* variable from the caller would change (or, set together
    # with the same flag, break) the servers and clients: start from an environment
    # without them.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ETCD_") and not k.startswith("ETCDCTL_")}
    env.update(extra or {})
    return env


def sut_bin():
    return os.environ.get("RSETCD_BIN", str(REPO_ROOT / "target" / "debug" / "rsetcd"))


def ref_bin():
    return os.environ.get("REF_ETCD_BIN", str(REPO_ROOT / ".cache" / "reference" / "bin" / "etcd"))


def etcdctl36_bin():
    return os.environ.get("ETCDCTL_BIN", str(REPO_ROOT / ".cache" / "reference" / "bin" / "etcdctl"))


def etcdctl34_bin():
    return os.environ.get("ETCDCTL34_BIN", "/usr/bin/etcdctl")


CLIENTS = {
    "etcdctl36": lambda: Client("etcdctl36", etcdctl36_bin(), _clean_env()),
    # Debian's etcdctl 3.4 still needs ETCDCTL_API=3 for the v3 commands.
    "etcdctl34": lambda: Client("etcdctl34", etcdctl34_bin(), _clean_env({"ETCDCTL_API": "3"})),
}


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process started with etcd's flags; stderr goes to a log file. Alone it is
    a single-member cluster (`start`); a Deployment starts several as one cluster."""

    def __init__(self, label: str, binary: str, workdir: Path, extra_args=(), name: str = "s1"):
        self.label = label
        self.binary = binary
        self.extra_args = list(extra_args)
        self.workdir = workdir
        self.name = name
        self.proc = None
        self.client_port = self.peer_port = 0
        self.log_path = workdir / f"{label}.log"
        self._log_offset = 0
        self.data_dirs = []     # one per launch
        self.member_id = None   # int, learned after start (for normalization)
        self.cluster_id = None
        # what its addresses and ids become in transcripts (a Deployment numbers them)
        self.placeholders = {"client": "<CLIENT_ADDR>", "peer": "<PEER_ADDR>",
                             "member": "<MEMBER_ID>", "cluster": "<CLUSTER_ID>"}

    @property
    def client_addr(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_addr(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def pick_ports(self):
        self.client_port, self.peer_port = free_port(), free_port()

    def launch(self, initial_cluster: str):
        """Starts the process on the ports already picked, as member `self.name` of
        `initial_cluster` ("s1=http://...,s2=http://...")."""
        data_dir = self.workdir / f"{self.label}-data-{self.client_port}"
        self.data_dirs.append(data_dir)
        client_url = f"http://{self.client_addr}"
        peer_url = f"http://{self.peer_addr}"
        cmd = [self.binary, "--name", self.name, "--data-dir", str(data_dir),
               "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
               "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
               "--initial-cluster", initial_cluster, *self.extra_args]
        log = open(self.log_path, "ab")
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        self._log_offset = log.tell()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     cwd=self.workdir, start_new_session=True)
        log.close()

    def log_text(self) -> str:
        """This launch's part of the log."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def wait_ready(self, deadline: float):
        """Waits until this launch logged READY_LINE; raises RuntimeError (with the log's
        tail) when the process exits or the deadline passes first."""
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                if READY_LINE in f.read():
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.label} server ({self.binary}) did not log "
                           f"'{READY_LINE.decode()}' within {READY_TIMEOUT}s; log tail:\n"
                           f"{self.log_text()[-3000:]}")

    def start(self, attempts: int = 3):
        """Starts a single-member cluster."""
        for attempt in range(attempts):
            self.pick_ports()
            self.launch(f"{self.name}=http://{self.peer_addr}")
            try:
                self.wait_ready(time.monotonic() + READY_TIMEOUT)
                return
            except RuntimeError:
                in_use = "address already in use" in self.log_text().lower()
                self.stop()
                if in_use and attempt + 1 < attempts:
                    # port race with another process on this machine (etcd says "address
                    # already in use", rsetcd "Address already in use"): retry
                    continue
                raise

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Deployment:
    """What one side of a scenario runs against: a single member (the default), a
    cluster of CLUSTER_SIZE members (tag @cluster), and/or a second, independent
    single-member server as a make-mirror destination (tag @mirror). Every server is
    the same binary. Steps go to member 1 unless they name a target (`@m2 get k`,
    `@all endpoint status`, `@dest get k`); see README.md."""

    CLUSTER_SIZE = 3

    def __init__(self, label: str, binary: str, workdir: Path, members: int = 1,
                 dest: bool = False):
        self.label = label
        if members == 1:
            self.members = [Server(label, binary, workdir)]
        else:
            self.members = [Server(f"{label}-s{i}", binary, workdir, name=f"s{i}")
                            for i in range(1, members + 1)]
            for i, m in enumerate(self.members, 1):
                m.placeholders = {"client": f"<CLIENT_ADDR_{i}>", "peer": f"<PEER_ADDR_{i}>",
                                  "member": f"<MEMBER_ID_{i}>", "cluster": "<CLUSTER_ID>"}
        self.dest = None
        if dest:
            self.dest = Server(f"{label}-dest", binary, workdir)
            self.dest.placeholders = {"client": "<DEST_ADDR>", "peer": "<DEST_PEER_ADDR>",
                                      "member": "<DEST_MEMBER_ID>",
                                      "cluster": "<DEST_CLUSTER_ID>"}
        # scratch directory for files the steps write (${TMP}: `snapshot save ${TMP}/s.db`)
        self.files = workdir / f"{label}-files"

    @property
    def servers(self) -> list:
        return self.members + ([self.dest] if self.dest else [])

    @property
    def log_paths(self) -> str:
        return " ".join(str(s.log_path) for s in self.servers)

    def start(self):
        self.files.mkdir(parents=True, exist_ok=True)
        if len(self.members) == 1:
            self.members[0].start()
        else:
            self._start_cluster()
        if self.dest:
            self.dest.start()

    def _start_cluster(self, attempts: int = 3):
        for attempt in range(attempts):
            for m in self.members:
                m.pick_ports()
            initial = ",".join(f"{m.name}=http://{m.peer_addr}" for m in self.members)
            for m in self.members:
                m.launch(initial)
            try:
                deadline = time.monotonic() + READY_TIMEOUT
                for m in self.members:
                    m.wait_ready(deadline)
                return
            except RuntimeError:
                in_use = any("address already in use" in m.log_text().lower()
                             for m in self.members)
                for m in self.members:
                    m.stop()
                if in_use and attempt + 1 < attempts:
                    continue  # port race with another process on this machine: retry
                raise

    def remove_data(self):
        """Deletes the (stopped) servers' data dirs and the scratch directory; logs stay.
        etcd preallocates a 64 MB WAL per member: a whole run would otherwise leave
        about 20 GB behind (and pytest keeps the last three runs)."""
        import shutil
        for s in self.servers:
            for d in s.data_dirs:
                shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.files, ignore_errors=True)

    def stop(self):
        if len(self.members) > 1:
            # Members 2.. first, then member 1 (usually the leader): etcd's leader hands
            # leadership over when it stops, which takes seconds when the others stop at
            # the same time. (An rsetcd member does not exit on SIGTERM while its peers
            # run: the followers exit once member 1 gets its SIGTERM too.)
            followers = [m for m in self.members[1:] if m.proc and m.proc.poll() is None]
            for m in followers:
                m.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 1.5
            for m in followers:
                try:
                    m.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for s in self.servers:
            s.stop()

    def prepare(self, client: "Client"):
        """Learns every server's ids (for normalization) and, in a cluster, makes member 1
        the leader: which member wins the first election is chance, and outputs such as
        `move-leader`'s "Leadership transferred from X to Y" name the leader."""
        for s in self.servers:
            learn_ids(s, client)
        if len(self.members) > 1:
            self._lead_from_first()

    def _lead_from_first(self, timeout: float = 20.0, settle: float = 5.0):
        """Makes member 1 the leader (move-leader if need be) and waits until every member
        reports its own minor version as storage version (3.6.0 for 3.6.16): etcd's
        members write it up to a few seconds after a new cluster agreed on its version,
        and until then may report another and send snapshots without a version
        (`snapshot save` prints no "Server version" line). That wait gives up after
        `settle` s.
        Uses etcdctl 3.6 whatever the scenario's client: 3.4 does not show the storage
        version."""
        client = CLIENTS["etcdctl36"]()
        first = self.members[0]
        all_eps = ",".join(m.client_addr for m in self.members)
        start = time.monotonic()
        leaders = []
        while time.monotonic() - start < timeout:
            try:
                p = subprocess.run([client.binary, f"--endpoints={all_eps}", "endpoint",
                                    "status", "-w", "json"], capture_output=True,
                                   env=client.env, timeout=STEP_TIMEOUT)
                status = [st["Status"] for st in json.loads(p.stdout)]
                leaders = [int(st["leader"]) for st in status]
                settled = all(st.get("storageVersion") ==
                              ".".join(st.get("version", "").split(".")[:2]) + ".0"
                              for st in status)
            except Exception:
                leaders, settled = [], False
            if len(leaders) == len(self.members) and set(leaders) == {first.member_id}:
                if settled or time.monotonic() - start >= settle:
                    return
            elif leaders and all(leaders) and first.member_id:
                subprocess.run([client.binary, f"--endpoints={all_eps}", "move-leader",
                                format(first.member_id, "x")], capture_output=True,
                               env=client.env, timeout=STEP_TIMEOUT)
            time.sleep(0.1)
        raise RuntimeError(f"{self.label}: could not make member 1 the leader within "
                           f"{timeout}s (leaders seen: {leaders})")

    def endpoints(self, target: Optional[str]) -> str:
        """The --endpoints value for a step's target (None: member 1)."""
        if target is None or target == "m1":
            return self.members[0].client_addr
        if target == "all":
            return ",".join(m.client_addr for m in self.members)
        if target == "dest":
            if not self.dest:
                raise ValueError("target @dest needs the scenario tag @mirror")
            return self.dest.client_addr
        m = re.match(r"^m(\d+)$", target)
        if m and 1 <= int(m.group(1)) <= len(self.members):
            return self.members[int(m.group(1)) - 1].client_addr
        raise ValueError(f"unknown target @{target} ({len(self.members)} member(s); "
                         f"@m2/@m3 need the scenario tag @cluster)")

    def builtin_vars(self) -> dict:
        """${M1}.. (member ids in hex, as `move-leader` takes them), ${DEST} (the mirror
        destination's client address) and ${TMP} (a scratch directory)."""
        out = {"TMP": str(self.files)}
        for i, m in enumerate(self.members, 1):
            if m.member_id:
                out[f"M{i}"] = format(m.member_id, "x")
        if self.dest:
            out["DEST"] = self.dest.client_addr
        return out


# --------------------------------------------------------------------------------------
# Running steps
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Client:
    name: str            # "etcdctl36" / "etcdctl34"
    binary: str
    env: dict


@dataclasses.dataclass
class Record:
    line: str
    exit: str
    stdout: str
    stderr: str
    prompt: str = "$ etcdctl "      # "$ " for the harness's own steps (&W, send, wait, timeout)

    def render(self) -> str:
        out = [f"{self.prompt}{self.line}", f"[exit {self.exit}]"]
        if self.stdout:
            out += ["stdout:"] + ["  " + l for l in self.stdout.split("\n")]
        if self.stderr:
            out += ["stderr:"] + ["  " + l for l in self.stderr.split("\n")]
        return "\n".join(out)


def _to_bytes(a) -> bytes:
    return a if isinstance(a, bytes) else a.encode()


def _expand_vars(arg, vars_: dict):
    if isinstance(arg, bytes):
        return arg
    def sub(m):
        if m.group(1) not in vars_:
            raise KeyError(f"unknown variable ${{{m.group(1)}}} (capture it with '=> NAME' first)")
        return vars_[m.group(1)]
    return _VAR_RE.sub(sub, arg)


def learn_ids(server: Server, client: Client):
    """Asks the server for its member and cluster ids (from a response header), only so
    that they can be normalized. Not part of the transcript (and neither call changes
    the store); if both fail the ids stay unknown and show up raw in diffs."""
    for args, header in ((["member", "list"], lambda d: d["header"]),
                         (["endpoint", "status"], lambda d: d[0]["Status"]["header"])):
        try:
            p = subprocess.run([client.binary, f"--endpoints={server.client_addr}", *args,
                                "-w", "json"],
                               capture_output=True, env=client.env, timeout=STEP_TIMEOUT)
            if b"context deadline exceeded" in p.stderr:
                return  # not answering: the scenario will show it
            hdr = header(json.loads(p.stdout))
            server.cluster_id = int(hdr["cluster_id"])
            server.member_id = int(hdr["member_id"])
            return
        except Exception:
            continue


# A server that stops answering would cost etcdctl's 5 s command timeout per step:
# after this many consecutive timed-out steps the rest of the scenario is skipped.
MAX_CONSECUTIVE_DEADLINES = 2


# Background commands (`&W ...`, `timeout T ...`).
BG_SETTLE = 0.5      # after `&W ...` and `send W ...`: time to connect / create the watch
WAIT_QUIET = 1.0     # `wait W`: default seconds without new output before stopping W
WAIT_CAP = 30.0      # `wait W`: stop W after this long even if it keeps printing
HARNESS_PROMPT = "$ "


class Background:
    """An etcdctl process that does not exit by itself: stdin stays open, stdout and
    stderr are collected by reader threads that also note when output last arrived."""

    def __init__(self, argv: list, env: dict, stdin: bytes):
        import threading
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.out, self.err = bytearray(), bytearray()
        self.last_output = time.monotonic()
        self.threads = [threading.Thread(target=self._read, args=(f, buf), daemon=True)
                        for f, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.threads:
            t.start()
        if stdin:
            self.send(stdin)

    def _read(self, f, buf):
        while True:
            chunk = os.read(f.fileno(), 65536)
            if not chunk:
                return
            buf.extend(chunk)
            self.last_output = time.monotonic()

    def send(self, data: bytes):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it already exited: its exit and output show that

    def stop(self, quiet: Optional[float] = None, fixed: Optional[float] = None):
        """Waits (until `quiet` seconds without output, or `fixed` seconds), then stops the
        process if it still runs. Returns (exit, stdout, stderr); exit is "stopped" when
        the harness ended it."""
        start = time.monotonic()
        while self.proc.poll() is None:
            now = time.monotonic()
            if fixed is not None and now - start >= fixed:
                break
            if quiet is not None and now - max(self.last_output, start) >= quiet:
                break
            if now - start >= WAIT_CAP:
                break
            time.sleep(0.01)
        stopped = False
        if self.proc.poll() is None:
            stopped = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.threads:
            t.join(timeout=5)
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        code = "stopped" if stopped else str(self.proc.returncode)
        return code, bytes(self.out), bytes(self.err)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_scenario(scenario: Scenario, dep: Deployment, client: Client) -> list:
    background = {}   # name -> (Background, Step)
    try:
        records = _run_steps(scenario, dep, client, background)
    finally:
        for bg, _ in background.values():
            bg.kill()
    if "session-ids" in scenario.tags:
        _number_session_ids(records)
    return records


# etcdctl's `elect` and `lock` name their keys <name>/<lease id in hex>, the id of a session
# lease etcdctl grants itself (random per server, never printed otherwise). With the tag
# @session-ids such ids become <S1>, <S2>, ... in order of first appearance across the
# transcript, so "which session holds it" is still compared.
_SESSION_ID_RE = re.compile(r"(?<=/)[0-9a-f]{10,16}\b")


def _number_session_ids(records: list) -> None:
    names = {}

    def sub(m):
        return names.setdefault(m.group(0), f"<S{len(names) + 1}>")

    for r in records:
        r.stdout = _SESSION_ID_RE.sub(sub, r.stdout)
        r.stderr = _SESSION_ID_RE.sub(sub, r.stderr)


def _snapfile_report(path: Path):
    """`snapfile PATH`: what is comparable in a file written by `snapshot save`. The
    contents are not (etcd's is a bbolt file, rsetcd's an LMDB one; sizes differ too), but
    both servers send etcd's snapshot stream: the database followed by its SHA-256, and
    etcdutl's restore treats size % 512 == 32 as "a SHA-256 trailer follows"."""
    if not path.exists():
        return "1", "missing"
    data = path.read_bytes()
    lines = ["non-empty: " + ("yes" if data else "no"),
             "size % 512 == 32: " + ("yes" if len(data) % 512 == 32 else "no")]
    if len(data) > 32:
        import hashlib
        ok = hashlib.sha256(data[:-32]).digest() == data[-32:]
        lines.append("last 32 bytes = SHA-256 of the rest: " + ("yes" if ok else "no"))
    part = Path(str(path) + ".part")
    lines.append(".part file left: " + ("yes" if part.exists() else "no"))
    return "0", "\n".join(lines)


def _run_steps(scenario: Scenario, dep: Deployment, client: Client, background: dict) -> list:
    vars_ = {}         # captures (`=> L`): ids, normalized to <L>
    builtins = dep.builtin_vars()
    records = []
    deadlines = 0

    def expand(arg):
        return _expand_vars(arg, {**builtins, **vars_})

    def finish(name: str, line: str, quiet=None, fixed=None):
        bg, started = background.pop(name)
        code, out, err = bg.stop(quiet=quiet, fixed=fixed)
        ctx = NormContext(deployment=dep, captures=dict(vars_), args=started.args)
        records.append(Record(line=line, exit=code, stdout=normalize_stdout(out, ctx),
                              stderr=normalize_stderr(err, ctx), prompt=HARNESS_PROMPT))

    for n, step in enumerate(scenario.steps):
        if deadlines >= MAX_CONSECUTIVE_DEADLINES:
            records.append(Record(line=f"... {len(scenario.steps) - n} more step(s)",
                                  exit="not run", stdout="",
                                  stderr="server unresponsive: scenario aborted"))
            break
        if step.kind == "snapfile":
            code, out = _snapfile_report(Path(expand(step.args[0])))
            records.append(Record(line=step.line, exit=code, stdout=out, stderr="",
                                  prompt=HARNESS_PROMPT))
            continue
        argv = [client.binary, f"--endpoints={dep.endpoints(step.target)}"]
        argv += [_to_bytes(expand(a)) for a in step.args]
        stdin = step.stdin if step.stdin is not None else b""
        if b"${" in stdin:
            stdin = expand(stdin.decode()).encode()
        if step.kind == "bg":
            if step.name in background:
                raise ValueError(f"background command {step.name} is already running")
            background[step.name] = (Background(argv, client.env, stdin), step)
            time.sleep(BG_SETTLE)
            records.append(Record(line=step.line, exit="started", stdout="", stderr="",
                                  prompt=HARNESS_PROMPT))
            continue
        if step.kind == "send":
            if step.name not in background:
                raise ValueError(f"send to {step.name}, which is not running")
            background[step.name][0].send((expand(step.text) + "\n").encode())
            time.sleep(BG_SETTLE)
            records.append(Record(line=step.line, exit="sent", stdout="", stderr="",
                                  prompt=HARNESS_PROMPT))
            continue
        if step.kind == "wait":
            if step.name not in background:
                raise ValueError(f"wait for {step.name}, which is not running")
            finish(step.name, step.line,
                   quiet=step.seconds if step.seconds is not None else WAIT_QUIET)
            continue
        if step.kind == "timeout":
            background["\0timeout"] = (Background(argv, client.env, stdin), step)
            finish("\0timeout", step.line, fixed=step.seconds)
            continue
        ctx = NormContext(deployment=dep, captures=dict(vars_), args=step.args)
        try:
            p = subprocess.run(argv, input=stdin, capture_output=True, env=client.env,
                               timeout=LONG_STEP_TIMEOUTS.get(ctx.command, STEP_TIMEOUT))
            code, out, err = str(p.returncode), p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            code, out, err = "timeout", e.stdout or b"", e.stderr or b""
        if step.capture:
            # an id printed in hex (leases as %016x; member ids as %16x, so a member id with
            # a leading zero digit has 15 digits after a space) or as "ID":<decimal> (json)
            m = re.search(rb"\b[0-9a-f]{12,16}\b", out)
            if m:
                vars_[step.capture] = m.group(0).decode()
            else:
                m = re.search(rb'"ID":\s*(\d+)', out)
                vars_[step.capture] = (format(int(m.group(1)), "016x") if m
                                       else "<capture-failed>")
        timed_out = code == "timeout" or b"context deadline exceeded" in err
        deadlines = deadlines + 1 if timed_out else 0
        ctx = NormContext(deployment=dep, captures=dict(vars_), args=step.args)
        records.append(Record(line=step.line, exit=code,
                              stdout=normalize_stdout(out, ctx),
                              stderr=normalize_stderr(err, ctx)))
    for name in list(background):
        finish(name, f"wait {name}  (end of scenario)", quiet=WAIT_QUIET)
    return records


PINNED_DIR = HERE / "pinned"


def pinned_diff_path(client_name: str, scenario_name: str) -> Path:
    """Where the expected diff of a @pinned scenario lives (see README.md)."""
    return PINNED_DIR / f"{client_name}-{scenario_name}.diff"


def render_transcript(records: list) -> str:
    return "\n".join(r.render() for r in records) + "\n"


def transcript_diff(ref: list, sut: list, ref_label: str, sut_label: str) -> str:
    return "".join(difflib.unified_diff(
        render_transcript(ref).splitlines(keepends=True),
        render_transcript(sut).splitlines(keepends=True),
        fromfile=ref_label, tofile=sut_label, n=6))


# Signs that the *harness* (not the server) is broken: the reference transcript must
# never contain them, otherwise both sides could "agree" on a connection failure.
HARNESS_FAILURE_MARKERS = ("context deadline exceeded", "connection refused",
                           "DeadlineExceeded", "code = Unavailable", "<capture-failed>")


# --------------------------------------------------------------------------------------
# Normalization
#
# Only what legitimately differs between two correct servers started side by side is
# rewritten. Revisions, counts, values, create/mod revisions, key versions, `more`,
# lease TTLs, error messages and exit codes are never touched.
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class NormContext:
    deployment: Deployment
    captures: dict
    args: list

    @property
    def command(self) -> str:
        """First two non-flag words, e.g. 'endpoint status', 'get k'."""
        words = []
        skip = False
        for a in self.args:
            if isinstance(a, bytes):
                continue
            if skip:
                skip = False
                continue
            if a in ("-w", "--write-out"):
                skip = True
                continue
            if a.startswith("-"):
                continue
            words.append(a)
        return " ".join(words[:2])

    @property
    def output_format(self) -> str:
        fmt = "simple"
        for i, a in enumerate(self.args):
            if isinstance(a, bytes):
                continue
            if a in ("-w", "--write-out") and i + 1 < len(self.args):
                fmt = self.args[i + 1]
            elif a.startswith("--write-out=") or a.startswith("-w="):
                fmt = a.split("=", 1)[1]
        return fmt


def _exact_substitutions(ctx: NormContext) -> list:
    """(regex, placeholder) pairs for values known to differ between the two servers."""
    subs = []
    # The scratch directory (${TMP}) is per server: its path becomes <TMP>.
    subs.append((re.compile(re.escape(str(ctx.deployment.files))), "<TMP>"))
    for s in ctx.deployment.servers:
        ph = s.placeholders
        # Servers listen on different free ports: addresses become placeholders.
        subs.append((re.compile(re.escape(s.client_addr) + r"(?!\d)"), ph["client"]))
        subs.append((re.compile(re.escape(s.peer_addr) + r"(?!\d)"), ph["peer"]))
        # Member and cluster ids derive from the peer URLs (which differ): replace their
        # decimal and hex forms wherever they appear (headers, member list, leader, ID
        # column, move-leader).
        for value, name in ((s.member_id, ph["member"]), (s.cluster_id, ph["cluster"])):
            if value:
                forms = {str(value), format(value, "x"), format(value, "016x")}
                subs.append((_id_pattern(value, forms), name))
    # Captured ids (leases) are random per server: replace hex and decimal forms.
    for name, value in ctx.captures.items():
        try:
            n = int(value, 16)
        except ValueError:
            continue
        # (forms shorter than 6 characters are left alone: a tiny id such as 1 would
        # otherwise clobber revisions; a non-random small id then shows up as a diff)
        forms = {f for f in (value, str(n), format(n, "x"), format(n, "016x")) if len(f) >= 6}
        if not forms:
            continue
        subs.append((_id_pattern(n, forms), f"<{name}>"))
    return subs


def _id_pattern(value: int, forms: set) -> re.Pattern:
    """Matches an id in any of `forms`, and also etcdctl's `%16x` form: an id with fewer
    than 16 hex digits is printed space-padded ("added to cluster  abc..."), which must not
    show up as a difference between two servers whose ids merely differ in length."""
    alternatives = [r"\b(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
                    + r")\b"]
    padded = format(value, "16x")
    if padded.startswith(" "):
        # Only where the padding follows a literal space ("cluster %16x"): a short id
        # printed plainly after one space (`-w fields --hex`) keeps that space.
        alternatives.insert(0, r"(?<= )" + re.escape(padded) + r"\b")
    return re.compile("|".join(alternatives))


def _apply_subs(text: str, subs: list) -> str:
    for rx, repl in subs:
        text = rx.sub(repl, text)
    return text


# JSON keys whose values depend on raft/storage internals or timing, not on KV semantics.
#   raft_term/raftTerm: the term a fresh member settles on is an implementation detail.
#   raftIndex/raftAppliedIndex: how many raft entries a start-up writes differs.
#   dbSize/dbSizeInUse: backend file layout differs (bbolt vs LMDB).
#   took: wall-clock timing.
JSON_KEY_RULES = {
    "raft_term": "<RAFT_TERM>", "raftTerm": "<RAFT_TERM>",
    "raftIndex": "<RAFT_INDEX>", "raftAppliedIndex": "<RAFT_INDEX>",
    "dbSize": "<DB_SIZE>", "dbSizeInUse": "<DB_SIZE>",
    "took": "<TOOK>",
}
# Only inside an endpoint-status "Status" object: the server's version strings (rsetcd
# may emulate another patch release). Elsewhere "version" is a key's version: kept.
JSON_STATUS_RULES = {"version": "<VERSION>", "storageVersion": "<VERSION>"}
# HashKV hashes are compared as they are: rsetcd computes etcd's exact CRC-32C over the
# same history, so equal histories must give equal hashes.
JSON_HASHKV_RULES = {}


def _norm_json(node, subs, parent_key=None):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in JSON_KEY_RULES:
                out[k] = JSON_KEY_RULES[k]
            elif parent_key == "Status" and k in JSON_STATUS_RULES:
                out[k] = JSON_STATUS_RULES[k]
            elif parent_key == "HashKV" and k in JSON_HASHKV_RULES:
                out[k] = JSON_HASHKV_RULES[k]
            else:
                out[k] = _norm_json(v, subs, k)
        return out
    if isinstance(node, list):
        return [_norm_json(v, subs, parent_key) for v in node]
    if isinstance(node, bool) or node is None or isinstance(node, float):
        return node
    if isinstance(node, int):
        t = _apply_subs(str(node), subs)
        return node if t == str(node) else t
    if isinstance(node, str):
        return _apply_subs(node, subs)
    return node


# `-w fields` lines: "Name" : value.
#   RaftTerm: as raft_term above (every response header carries it).
FIELDS_RULES = {"RaftTerm": "<RAFT_TERM>"}
# In `endpoint status -w fields` only ("Version" elsewhere is a key's version: kept).
FIELDS_STATUS_RULES = {
    "Version": "<VERSION>", "StorageVersion": "<VERSION>",
    "DBSize": "<DB_SIZE>", "DBSizeInUse": "<DB_SIZE>",
    "RaftIndex": "<RAFT_INDEX>", "RaftAppliedIndex": "<RAFT_INDEX>",
}
FIELDS_HASHKV_RULES = {}

# Table columns (endpoint status / health / hashkv, member list), same reasons as above;
# PERCENTAGE NOT IN USE is derived from the db sizes.
TABLE_RULES = {
    "VERSION": "<VERSION>", "STORAGE VERSION": "<VERSION>",
    "DB SIZE": "<DB_SIZE>", "IN USE": "<DB_SIZE>", "PERCENTAGE NOT IN USE": "<DB_SIZE>",
    "RAFT TERM": "<RAFT_TERM>", "RAFT INDEX": "<RAFT_INDEX>",
    "RAFT APPLIED INDEX": "<RAFT_INDEX>", "TOOK": "<TOOK>",
}
# `endpoint status` simple output is the table's cells joined by ", "; the column order
# is etcdctl's (3.6 has 16 columns, 3.4 has 10).
STATUS_SIMPLE_COLUMNS = {
    16: ["ENDPOINT", "ID", "VERSION", "STORAGE VERSION", "DB SIZE", "IN USE",
         "PERCENTAGE NOT IN USE", "QUOTA", "IS LEADER", "IS LEARNER", "RAFT TERM",
         "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS", "DOWNGRADE TARGET VERSION",
         "DOWNGRADE ENABLED"],
    10: ["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM",
         "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"],
}
HASHKV_SIMPLE_COLUMNS = {3: ["ENDPOINT", "HASH", "HASH REVISION"]}


def _norm_table(lines: list) -> list:
    """Tables are re-rendered without padding: column widths follow the (normalized)
    cell contents, so they are not compared."""
    out = []
    header = None
    for line in lines:
        if line.startswith("+"):
            out.append("+---+")
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        else:
            cells = [TABLE_RULES.get(header[i], c) if i < len(header) and c else c
                     for i, c in enumerate(cells)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _norm_simple_columns(line: str, columns_by_count: dict) -> str:
    cells = line.split(", ")
    cols = columns_by_count.get(len(cells))
    if not cols:
        return line
    return ", ".join(TABLE_RULES.get(cols[i], c) if c else c for i, c in enumerate(cells))


def _norm_took(line: str) -> str:
    # Timing printed by `endpoint health` ("took = 1.2ms"; etcdctl 3.4 prints it on
    # stderr) and `defrag` ("took 3ms").
    return re.sub(r"\btook( =)? \d[\w.µ]*", lambda m: f"took{m.group(1) or ''} <TOOK>", line)


# `check perf` / `check datascale` (both measure the machine as much as the server):
#   - the progress bar (etcdctl 3.6 writes it to stderr, 3.4 to stdout; no terminal, so
#     its updates are concatenated, each "N / TOTAL [bar] P% rate"): how many updates are
#     printed depends on timing, so each run of them becomes one "<progress bar>";
#   - the measured numbers: throughput, slowest request and stddev (`check perf`) and the
#     memory the server grew by (`check datascale`). Verdicts (PASS / FAIL / "too long"),
#     the workload line, errors and exit codes are kept.
_PROGRESS_RE = re.compile(r"(?:[\r ]*\d+ / \d+ +(?:\[[-=>_]*\] *|Bo*! *)?\d+\.\d+%"
                          r"(?: *(?:\?|\d+) p/s| *\d+m\d+s| *\d+(?:\.\d+)?s)?)+")
_CHECK_NUMBER_RULES = [
    (re.compile(r"(Throughput is |Throughput too low: )\d+( writes/s)"), r"\1<N>\2"),
    (re.compile(r"(Slowest request took (?:too long: )?)[\d.]+s"), r"\1<SECONDS>s"),
    (re.compile(r"(Stddev is |Stddev too high: )[\d.]+s"), r"\1<SECONDS>s"),
    (re.compile(r"(Approximate system memory used : )-?[\d.]+( MB)"), r"\1<MB>\2"),
]


def _norm_check(text: str) -> str:
    text = _PROGRESS_RE.sub("<progress bar>", text)
    for rx, repl in _CHECK_NUMBER_RULES:
        text = rx.sub(repl, text)
    return text


# `downgrade enable` starts etcd's version monitor, which lowers the cluster version to
# the target on its own clock (every few seconds): the version a following `downgrade
# cancel` reports depends on that timing.
_DOWNGRADE_CANCEL_RE = re.compile(r"^(Downgrade cancel success, cluster version )[\d.]+$")


def normalize_stdout(raw: bytes, ctx: NormContext) -> str:
    # Output may contain arbitrary key/value bytes: decode reversibly for comparison.
    text = raw.decode("utf-8", errors="backslashreplace")
    if ctx.command.startswith("check "):
        text = _norm_check(text)
    subs = _exact_substitutions(ctx)
    fmt, cmd = ctx.output_format, ctx.command
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if fmt == "json" and line[:1] in ("{", "["):
            try:
                doc = json.loads(line)
            except ValueError:
                out.append(_apply_subs(line, subs))
            else:
                out.append(json.dumps(_norm_json(doc, subs), ensure_ascii=False,
                                      separators=(",", ":")))
            i += 1
            continue
        if fmt == "table" and line.startswith(("+", "|")):
            j = i
            while j < len(lines) and lines[j].startswith(("+", "|")):
                j += 1
            out.extend(_norm_table([_apply_subs(l, subs) for l in lines[i:j]]))
            i = j
            continue
        line = _apply_subs(line, subs)
        if fmt == "fields":
            m = re.match(r'^"(\w+)" : (.*)$', line)
            if m:
                rules = dict(FIELDS_RULES)
                if cmd == "endpoint status":
                    rules.update(FIELDS_STATUS_RULES)
                if cmd == "endpoint hashkv":
                    rules.update(FIELDS_HASHKV_RULES)
                if m.group(1) in rules:
                    line = f'"{m.group(1)}" : {rules[m.group(1)]}'
        elif fmt == "simple":
            m = re.match(r'^ETCD_INITIAL_CLUSTER="(.*)"$', line)
            if m:
                # `member add` lists the members in id order, and the added member's id is
                # hashed with the time: only the set of entries is comparable.
                line = 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(m.group(1).split(","))) + '"'
            if cmd == "downgrade cancel":
                line = _DOWNGRADE_CANCEL_RE.sub(r"\1<CLUSTER_VERSION>", line)
            if cmd == "endpoint status":
                line = _norm_simple_columns(line, STATUS_SIMPLE_COLUMNS)
            elif cmd == "endpoint hashkv":
                line = _norm_simple_columns(line, HASHKV_SIMPLE_COLUMNS)
        out.append(_norm_took(line))
        i += 1
    return "\n".join(out)


# etcdctl's client library logs JSON lines (zap) on stderr when an RPC fails: they carry
# timestamps, pointer values, local ports and source line numbers, so they are dropped.
# Their "error" field holds the gRPC status ("rpc error: code = InvalidArgument desc =
# etcdserver: ..."), which is part of the wire contract: it is kept, once per distinct
# consecutive value, as "[client log] error: ...". Set COMPAT_IGNORE_GRPC_CODE=1 to drop
# it too and keep only etcdctl's own "Error: ..." line (plus the exit code).
KEEP_GRPC_ERROR = os.environ.get("COMPAT_IGNORE_GRPC_CODE", "") not in ("1", "true")


def normalize_stderr(raw: bytes, ctx: NormContext) -> str:
    text = raw.decode("utf-8", errors="backslashreplace")
    if ctx.command.startswith("check "):
        text = _norm_check(text)
    subs = _exact_substitutions(ctx)
    out = []
    last_err = None
    for line in text.split("\n"):
        if line.startswith('{"level":'):
            try:
                doc = json.loads(line)
            except ValueError:
                doc = {}
            err = doc.get("error")
            if KEEP_GRPC_ERROR and err and err != last_err:
                out.append("[client log] error: " + _apply_subs(err, subs))
            last_err = err or last_err
            continue
        out.append(_norm_took(_apply_subs(line, subs)))
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out)
