"""The nightly history: identity keys, cell coordinates, judging nights, verdict files, trend page."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.analysis import history, regress
from harness.ci.nightly import judge_night, write_trend_report
from harness.ci.verdict import NO_BASELINE, write_outputs
from harness.results import store
from harness.results.record import RunRecord

from .test_regress import night, record

TH = regress.Thresholds()


def add_night(hist: Path, stamp: str, records: list[RunRecord]) -> history.NightDir:
    staging = history.incoming_dir(hist, stamp)
    for rec in records:
        store.write_run(staging, rec)
    return history.file_night(hist, staging, records)


def test_identity_key_is_stable_and_ignores_the_host_name() -> None:
    a = history.identity_of([record(8000)])
    other = record(8000)
    other = other.model_copy(update={"hosts": other.hosts.model_copy(update={
        "source": other.hosts.source.model_copy(update={"hostname": "renamed"})})})
    assert history.identity_key(history.identity_of([other])) == history.identity_key(a)
    b = history.identity_of([record(8000, kernel="6.19.0")])
    assert history.identity_key(a) != history.identity_key(b)
    assert history.identity_key(a).startswith("tcg-")
    diffs = history.differences(a, b)
    assert diffs == [f"hosts.{r}.kernel: 6.18.44-fc-v669 -> 6.19.0"
                     for r in ("destination", "source")]
    assert a["image"].startswith("0dbc199f")
    assert "10.0.2" in a["qemu"]["10.0"]["version"]


def test_a_rebuilt_binary_with_the_same_version_and_path_is_another_identity() -> None:
    a, b = (r.model_copy(update={"qemu": r.qemu.model_copy(update={
        "source_build_id": bid, "destination_build_id": bid})})
        for r, bid in ((record(8000), "sha256:1111"), (record(8000), "sha256:2222")))
    ia, ib = history.identity_of([a]), history.identity_of([b])
    assert ia["qemu"]["10.0"]["build_ids"] == ["sha256:1111"]
    assert history.identity_key(ia) != history.identity_key(ib)
    assert history.differences(ia, ib) == ["qemu.10.0.build_ids: sha256:1111 -> sha256:2222"]


def test_coordinates_match_across_a_parameter_change() -> None:
    old, new = record(8000), record(8000, max_bandwidth=12_500_000)
    assert old.cell.id != new.cell.id
    assert history.coordinate_key(old) == history.coordinate_key(new)
    assert history.parameter_changes([old], [new]) == [
        "parameters.max-bandwidth: 25000000 -> 12500000"]
    assert history.coordinate_key(record(8000, variant="other")) != history.coordinate_key(old)


def test_a_different_identity_is_never_compared(tmp_path: Path) -> None:
    hist = tmp_path / "hist"
    for i in range(3):
        add_night(hist, f"2026010{i}T030000Z", night("x", [8000, 8010, 7990])[1])
    # Same matrix, much slower, but on another kernel: a new identity, not a regression.
    n = add_night(hist, "20260105T030000Z",
                  night("x", [16000, 16100, 15900], kernel="6.19.0")[1])
    assert len(history.identities(hist)) == 2
    judged = judge_night(hist, n, TH)
    v = judged.verdict
    assert v["baseline"]["status"] == NO_BASELINE
    assert "hosts.source.kernel: 6.18.44-fc-v669 -> 6.19.0" in v["baseline"]["differences"]
    assert v["summary"]["exit_code"] == 0 and v["summary"]["regressions"] == 0
    assert all(r["verdict"] == regress.NO_DATA for c in v["cells"] for r in c["results"])
    assert NO_BASELINE in v["cells"][0]["notes"]
    junit = tmp_path / "junit.xml"
    write_outputs(v, [tmp_path / "verdict.json"], junit)
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "0"
    assert any(s.get("message") == NO_BASELINE for s in root.iter("skipped"))


def test_judged_night_regression_verdict_junit_and_trend_page(tmp_path: Path) -> None:
    hist = tmp_path / "hist"
    n1 = add_night(hist, "20260101T030000Z", night("x", [8000, 8100, 7950])[1])
    v1 = judge_night(hist, n1, TH).verdict
    assert v1["baseline"]["status"] == NO_BASELINE
    assert v1["baseline"]["message"] == "the first night of this history"
    n2 = add_night(hist, "20260102T030000Z", night("x", [8050, 7990, 8020])[1])
    v2 = judge_night(hist, n2, TH).verdict
    assert v2["baseline"]["status"] == "ok" and v2["summary"]["exit_code"] == 0
    write_outputs(v2, [n2.path / "verdict.json"], None)
    # Night 3: a lower max-bandwidth (new cell id, same coordinates), clearly slower.
    n3 = add_night(hist, "20260103T030000Z",
                   night("x", [9400, 9500, 9450], max_bandwidth=12_500_000)[1])
    assert n3.key == n1.key  # the identity does not include migration settings
    judged = judge_night(hist, n3, TH)
    v = judged.verdict
    assert v["summary"]["exit_code"] == 2 and v["summary"]["result"] == "regression"
    [cell] = v["cells"]
    tt = next(r for r in cell["results"] if r["metric"] == "total_time_ms")
    assert tt["verdict"] == regress.REGRESSION
    assert tt["baseline_nights"] == [n1.stamp, n2.stamp]
    assert tt["baseline"] == 8010 and tt["current"] == 9450
    assert 0.17 < tt["change"] < 0.19 and tt["p"] < 0.05 and len(tt["interval"]) == 2
    assert any("max-bandwidth: 25000000 -> 12500000" in note for note in cell["notes"])
    junit = tmp_path / "junit.xml"
    write_outputs(v, [n3.path / "verdict.json"], junit)
    assert json.loads((n3.path / "verdict.json").read_text())["summary"]["regressions"] >= 1
    root = ET.parse(junit).getroot()
    failures = [tc for tc in root.iter("testcase") if tc.find("failure") is not None]
    assert "total_time_ms" in {tc.get("name") for tc in failures}
    # The trend page: every night, the regression marked, a link to the latest cell page.
    out = tmp_path / "report"
    trend = write_trend_report(hist, n3, judged, TH, out)
    text = trend.read_text()
    assert "Trend over nights" in text and "regression" in text
    assert f'href="cells/{cell["cell_ids"][0]}.html"' in text
    assert (out / "cells" / f"{cell['cell_ids'][0]}.html").exists()
    assert (out / "index.html").exists()
    figs = [json.loads(s.text or "") for s in _figure_scripts(text)]
    names = {t.get("name") for f in figs for t in f["data"]}
    assert {"median", "repetition", "regression"} <= names
    assert n3.stamp in figs[0]["layout"]["xaxis"]["categoryarray"]
    csv = (out / "trend.csv").read_text().splitlines()
    assert csv[0] == "cell,workload,metric,night,n,median" and len(csv) > 3


def _figure_scripts(html: str) -> list[ET.Element]:
    out = []
    for chunk in html.split('<script type="application/json" class="figure"')[1:]:
        body = chunk.split(">", 1)[1].split("</script>", 1)[0]
        el = ET.Element("s")
        el.text = body.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")
        out.append(el)
    return out


def test_nights_are_listed_in_order_and_incoming_is_left_out(tmp_path: Path) -> None:
    hist = tmp_path / "hist"
    a = add_night(hist, "20260102T030000Z", night("x", [8000])[1])
    b = add_night(hist, "20260101T030000Z", night("x", [8000])[1])
    c = add_night(hist, "20260102T030000Z", night("x", [8000])[1])  # same stamp: suffixed
    history.incoming_dir(hist, "20260109T000000Z")  # an unfinished night
    assert [n.stamp for n in history.nights(hist, a.key)] == [b.stamp, a.stamp, c.stamp]
    assert c.stamp == "20260102T030000Z-2"
    assert list(history.identities(hist)) == [a.key]


def test_nightly_and_compare_exit_1_on_a_harness_error(tmp_path: Path,
                                                        capsys: Any) -> None:
    """CI tells "the harness broke" (1) from "something regressed" (2) by the exit code."""
    from harness import cli

    missing = tmp_path / "missing.yaml"
    assert cli.main(["nightly", str(missing), "--history", str(tmp_path / "h")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0]
    assert not (tmp_path / "h").exists() or not any((tmp_path / "h").iterdir())
    bad = tmp_path / "m.yaml"
    bad.write_text("name: m\nvariants: {a: {build: '10.0'}}\n")
    assert cli.main(["compare", "--before", "a", "--after", "nope", str(bad),
                     "--out", str(tmp_path / "c")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0]


def test_nightly_and_compare_run_on_one_named_pair(tmp_path: Path, capsys: Any) -> None:
    """A history describes one machine and a comparison cancels drift on one: an unknown
    --pair is one line naming the pairs there are."""
    from harness import cli
    from harness.ci import verdict
    from harness.plan.config import hosts_path, load_hosts

    hosts = load_hosts(hosts_path(None))
    assert verdict.one_pair(hosts, Path("h.yaml"), None) == next(iter(hosts.pairs))
    m = tmp_path / "m.yaml"
    m.write_text("name: m\n")
    assert cli.main(["nightly", str(m), "--history", str(tmp_path / "h"), "--pair", "nope"]) == 1
    line = capsys.readouterr().err.strip()
    assert "pairs: no pair 'nope'" in line and "local" in line and "\n" not in line
    assert cli.main(["compare", "--before", "7.2", "--after", "10.0", str(m),
                     "--pair", "nope", "--out", str(tmp_path / "c")]) == 1
    assert "no pair 'nope'" in capsys.readouterr().err
