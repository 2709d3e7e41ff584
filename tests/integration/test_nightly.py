"""`migbench nightly` and `migbench compare` end to end: real QEMU under TCG, local host pair.

Commands are called through an argparse parser built with the modules' own ``register`` functions,
the way ``migbench`` calls them (HarnessError -> exit code 1).
"""

from __future__ import annotations

import argparse
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.ci import abtest, nightly, verdict
from harness.errors import HarnessError
from harness.guest.image import GuestImage
from harness.plan.models import HostsConfig

from .conftest import REPO

pytestmark = pytest.mark.integration

FAKE_SRC = REPO / "tests" / "data" / "fake-qemu-src"

# ~0.7 s migrations (6 s a run) at 1gbit; the "worse" night at 200mbit takes ~3 s a migration.
NIGHT = """\
name: nightly-it
repetitions: 3
guest: {{vcpus: 1, memory_mib: 256}}
limits: {{max_time_s: 40, observe_after_s: 1}}
workload:
  writer: {{working_set_mib: 32, rate_mib_s: 8, pattern: sparse}}
migration: {{max-bandwidth: {bw}, downtime-limit: 300}}
axes: {{feature: [precopy]}}
"""

# A multi-pass migration of a random writer: QEMU 7.2 loses dirty pages here under TCG.
COMPARE = """\
name: compare-it
repetitions: {reps}
guest: {{vcpus: 1, memory_mib: 256}}
limits: {{max_time_s: 40, observe_after_s: 1}}
workload:
  writer: {{working_set_mib: 64, rate_mib_s: 16, pattern: random}}
migration: {{max-bandwidth: 400mbit, downtime-limit: 300}}
axes: {{feature: [precopy]}}
"""


def migbench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="migbench")
    sub = parser.add_subparsers(dest="command", required=True)
    nightly.register(sub)
    abtest.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    try:
        return int(args.func(args))
    except HarnessError as exc:
        print(f"migbench: error: {exc}")
        return 1


def test_nightly_history_flags_a_worse_night(tmp_path: Path, hosts: HostsConfig,
                                             image: GuestImage) -> None:
    hist = tmp_path / "history"
    good, worse = tmp_path / "nightly.yaml", tmp_path / "nightly-worse.yaml"
    good.write_text(NIGHT.format(bw="1gbit"))
    worse.write_text(NIGHT.format(bw="200mbit"))  # same coordinates, another cell id
    common = ["--history", hist, "--hosts", REPO / "hosts.yaml"]
    t0 = time.monotonic()
    assert migbench("nightly", good, *common, "--verdict", tmp_path / "v1.json") == 0
    v1 = json.loads((tmp_path / "v1.json").read_text())
    assert v1["baseline"]["status"] == verdict.NO_BASELINE
    assert migbench("nightly", good, *common, "--junit", tmp_path / "j2.xml",
                    "--verdict", tmp_path / "v2.json") == 0
    v2 = json.loads((tmp_path / "v2.json").read_text())
    assert v2["baseline"]["status"] == "ok" and v2["summary"]["regressions"] == 0
    assert v2["identity_key"] == v1["identity_key"]
    assert ET.parse(tmp_path / "j2.xml").getroot().get("failures") == "0"
    # Night 3: a lower max-bandwidth. Flagged: exit code 2 and a JUnit failure.
    code = migbench("nightly", worse, *common, "--junit", tmp_path / "j3.xml",
                    "--verdict", tmp_path / "v3.json", "--metric-effect", "downtime_ms=50")
    assert code == 2
    v3 = json.loads((tmp_path / "v3.json").read_text())
    [cell] = v3["cells"]
    tt = next(r for r in cell["results"] if r["metric"] == "total_time_ms")
    assert tt["verdict"] == "regression" and tt["change"] > 0.5 and tt["p"] < 0.05
    assert len(tt["baseline_nights"]) == 2
    assert any("max-bandwidth" in n for n in cell["notes"])
    assert v3["thresholds"]["per_metric"] == {"downtime_ms": 0.5}
    root = ET.parse(tmp_path / "j3.xml").getroot()
    failed = {tc.get("name") for tc in root.iter("testcase") if tc.find("failure") is not None}
    assert "total_time_ms" in failed
    # The history: one identity, three nights, each with its verdict; the trend page.
    key = v3["identity_key"]
    nights = sorted(p for p in (hist / key).iterdir() if p.name[:1].isdigit())
    assert len(nights) == 3 and all((n / "verdict.json").exists() for n in nights)
    assert json.loads((nights[-1] / "night.json").read_text())["matrix"] == "nightly-it"
    trend = (hist / key / "report" / "trend.html").read_text()
    assert "regression" in trend and f"cells/{cell['cell_ids'][0]}.html" in trend
    assert not list((hist / ".incoming").iterdir())
    print(f"three nights: {time.monotonic() - t0:.0f} s")


def test_compare_qemu72_vs_qemu10_shows_integrity_not_speed(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage,
        capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "compare.yaml"
    m.write_text(COMPARE.format(reps=2))
    out = tmp_path / "cmp"
    code = migbench("compare", m, "--before", "10.0", "--after", "7.2", "--out", out,
                    "--junit", tmp_path / "junit.xml", "--text")
    # --text: the cell's before/after slide as text, both info-migrate blocks and the command
    printed = capsys.readouterr().out
    assert "before: 10.0: feature=precopy" in printed and "after:  7.2: feature=precopy" in printed
    assert f"reproduce: migbench compare {m}" in printed and "--text" in printed
    assert printed.count("total time") >= 2 or "cannot complete" in printed, printed[-3000:]
    v = json.loads((out / "verdict.json").read_text())
    assert (out / "report" / "compare.html").exists() and (out / "report" / "index.html").exists()
    assert v["kind"] == "compare" and v["before"] == "10.0" and v["after"] == "7.2"
    [cell] = v["cells"]
    results = {r["metric"]: r for r in cell["results"]}
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/*.json")]
    # Interleaved: A B A B.
    order = [r["cell"]["variant"] for r in sorted(runs, key=lambda r: r["started_utc"])]
    assert order == ["10.0", "7.2", "10.0", "7.2"]
    bad = [r for r in runs if r["cell"]["variant"] == "7.2" and r["integrity"] == "corrupted"]
    if bad:  # 7.2 nearly always corrupts this guest: an integrity regression, exit code 2
        assert code == 2
        assert results["outcome"]["kind"] == "integrity"
        assert results["outcome"]["verdict"] == "regression"
        assert "corrupted" in results["outcome"]["current"]
        if len(bad) == 2:  # no 7.2 timing is used, so 7.2 is never called "faster"
            assert results["total_time_ms"]["verdict"] == "no data"
            assert results["total_time_ms"]["current"] is None
    else:
        assert code in (0, 2)
    assert ET.parse(tmp_path / "junit.xml").getroot().find(".//testcase") is not None


def test_compare_with_a_patched_source_build(tmp_path: Path, hosts: HostsConfig,
                                             image: GuestImage) -> None:
    """src:TREE+PATCH built by patchbuild (the fake tree runs the real QEMU 10.0)."""
    m = tmp_path / "compare.yaml"
    m.write_text(COMPARE.format(reps=1).replace("400mbit", "1gbit")
                 .replace("random", "sparse"))
    out = tmp_path / "cmp"
    side = f"src:{FAKE_SRC}+{FAKE_SRC / 'fix-version.patch'}"
    args = ["compare", m, "--before", "10.0", "--after", side, "--out", out,
            "--build-cache", tmp_path / "builds",
            f"--configure-arg=--real-qemu-dir={REPO / 'build' / 'qemu-10.0'}"]
    assert migbench(*args) == 0
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/*.json")]
    built = [r for r in runs if r["cell"]["variant"].startswith("src-")]
    assert len(built) == 1 and built[0]["outcome"] == "completed", built[0].get("error")
    assert str(tmp_path / "builds") in built[0]["qemu"]["source_binary"]
    [key] = [p for p in (tmp_path / "builds").iterdir()]
    assert (key / "build.log").exists() and (key / "build.json").exists()
    assert "fix-version.patch" in (key / "build.log").read_text()
