"""Runs every scenario of scenarios/*.txt against the reference etcd and the server under
test (each on fresh data dirs) with the same etcdctl, and compares the normalized
transcripts (exit code, stdout, stderr of every step). See README.md."""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import etcdctl_harness as h

SCENARIOS = h.load_scenarios()


def _unbuilt(scenario):
    """Marks for a scenario that needs a feature rsetcd has not built yet (tag @unbuilt:N,
    N = the open issue that builds it). Strict: once it passes, the tag must go."""
    issues = sorted(t.split(":", 1)[1] for t in scenario.tags if t.startswith("unbuilt:"))
    if not issues:
        return []
    reason = "needs a feature of open issue " + ", ".join(issues) + " (not built in rsetcd yet)"
    return [pytest.mark.xfail(strict=True, reason=reason)]


def _params():
    for s in SCENARIOS:
        yield pytest.param(s, "etcdctl36", id=f"etcdctl36-{s.name}", marks=_unbuilt(s))
    for s in SCENARIOS:
        if "etcdctl34" in s.tags:
            marks = _unbuilt(s)
            if not os.access(h.etcdctl34_bin(), os.X_OK):
                marks.append(pytest.mark.skip(reason=f"no etcdctl 3.4 at {h.etcdctl34_bin()}"))
            yield pytest.param(s, "etcdctl34", id=f"etcdctl34-{s.name}", marks=marks)


# Scenarios in which the server under test did not start or stopped answering. After
# MAX_BROKEN of them the remaining tests fail at once instead of each waiting for
# timeouts (a broken build would otherwise take most of an hour).
BROKEN = []
MAX_BROKEN = 3


@pytest.mark.parametrize("scenario,client_name", list(_params()))
def test_scenario(scenario, client_name, binaries, tmp_path):
    if len(BROKEN) >= MAX_BROKEN:
        pytest.fail(f"not run: the server under test was unresponsive or did not start in "
                    f"{len(BROKEN)} earlier scenarios ({', '.join(BROKEN)})", pytrace=False)
    client = h.CLIENTS[client_name]()
    shape = {"members": h.Deployment.CLUSTER_SIZE if "cluster" in scenario.tags else 1,
             "dest": "mirror" in scenario.tags}
    ref = h.Deployment("ref", binaries["ref"], tmp_path, **shape)
    sut = h.Deployment("sut", binaries["sut"], tmp_path, **shape)
    servers = (ref, sut)
    try:
        with ThreadPoolExecutor(2) as pool:
            started = [pool.submit(s.start) for s in servers]
            try:
                started[1].result()
            except Exception:
                BROKEN.append(scenario.name)
                raise
            started[0].result()
            for f in [pool.submit(s.prepare, client) for s in servers]:
                f.result()
            ref_rec, sut_rec = [f.result() for f in
                                [pool.submit(h.run_scenario, scenario, s, client) for s in servers]]
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.stop(), servers))
        # data dirs go (the logs stay, and are named in a failure message)
        for s in servers:
            s.remove_data()

    if any(r.exit == "not run" for r in sut_rec):
        BROKEN.append(scenario.name)

    dump = os.environ.get("COMPAT_DUMP_DIR")
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        for label, rec in (("ref", ref_rec), ("sut", sut_rec)):
            (Path(dump) / f"{client_name}-{scenario.name}.{label}.txt").write_text(
                h.render_transcript(rec))

    where = (f"scenario {scenario.name} ({scenario.file}:{scenario.lineno}), client {client_name}\n"
             f"server logs: {ref.log_paths} {sut.log_paths}")
    ref_text = h.render_transcript(ref_rec)
    bad = [m for m in h.HARNESS_FAILURE_MARKERS if m in ref_text]
    assert not bad, (f"the reference transcript shows a harness problem ({bad}); {where}\n"
                     + ref_text)
    if "pinned" in scenario.tags:
        # A documented difference (README.md's feature table): the transcripts must differ
        # exactly as pinned/<client>-<scenario>.diff says (no file: not at all for this
        # client). Any other outcome, including no difference, fails.
        pin = h.pinned_diff_path(client_name, scenario.name)
        expected = pin.read_text() if pin.exists() else ""
        diff = h.transcript_diff(ref_rec, sut_rec, "reference", "under test")
        if diff != expected:
            pytest.fail(f"the pinned difference changed; {where}\npinned ({pin}):\n"
                        f"{expected or '(no difference)'}\nnow:\n{diff or '(no difference)'}",
                        pytrace=False)
        return
    if ref_rec != sut_rec:
        diff = h.transcript_diff(ref_rec, sut_rec, f"reference ({binaries['ref']})",
                                 f"under test ({binaries['sut']})")
        pytest.fail(f"transcripts differ; {where}\n{diff}", pytrace=False)
