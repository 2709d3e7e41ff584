"""``migbench advise``'s pure parts: the feature outlooks on a calibrated scenario, and the
calibration matrix."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.advise import FEATURES, lines, outlooks
from harness.analysis.diagnosis import scenarios
from harness.plan.config import load_matrix
from harness.results.record import read
from harness.run.calibrate import calibration_spec

DATA = Path(__file__).resolve().parent.parent / "data"
REPO = DATA.parent.parent
NOT_CONVERGED = DATA / "v1/ebde118b7008/1.json"  # 60 MiB/s random writer, 100 Mbit/s link


def test_a_link_bound_workload_ranks_what_converges_first_with_reasons() -> None:
    sc = scenarios(read(NOT_CONVERGED))
    base = sc.early or sc.configured
    assert base is not None
    got = outlooks(base, "random")
    assert sorted(o.feature for o in got) == sorted(FEATURES)
    by = {o.feature: o.prediction for o in got}
    assert not by["precopy"].converges  # as it happened
    assert not by["multifd-zstd"].converges  # random pages do not compress
    assert by["postcopy"].converges  # postcopy always ends
    flags = [o.prediction.converges for o in got]
    assert flags == sorted(flags, reverse=True)  # converging features first
    text = lines("cell", base, "random", "configured")
    assert text[0] == "== cell" and "dirty rate" in text[1]
    assert text[2].startswith("  1. ") and all(o.prediction.reason for o in got)


def test_sparse_pages_favour_xbzrle_over_plain_precopy() -> None:
    sc = scenarios(read(NOT_CONVERGED))
    base = sc.early or sc.configured
    assert base is not None
    by = {o.feature: o.prediction for o in outlooks(base, "sparse")}
    assert by["xbzrle"].converges and by["multifd-zstd"].converges
    assert not by["precopy"].converges
    random = {o.feature: o.prediction for o in outlooks(base, "random")}
    assert not random["xbzrle"].converges  # every hit overflows: a whole page each
    tiny = {o.feature: o for o in outlooks(base, "sparse", xbzrle_cache=2 * 2**20)}
    assert "cache 2 MiB" in tiny["xbzrle"].note and not tiny["xbzrle"].prediction.converges


def test_the_calibration_is_one_precopy_run_per_workload_and_link() -> None:
    spec = load_matrix(REPO / "matrices" / "demo.yaml")
    cal = calibration_spec(spec, 10)
    assert cal.axes == {"feature": ["precopy"]} and cal.repetitions == 1
    assert cal.limits.max_time_s == 10 and cal.name == "demo-calibration"
    assert cal.migration == spec.migration and cal.workload == spec.workload
