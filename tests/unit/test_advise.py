"""``migbench advise``'s pure parts: the feature outlooks on a calibrated scenario, and the
calibration matrix."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.analysis.advise import ENCODE_RATE, FEATURES, ZSTD_RATIO, Outlook, lines, outlooks
from harness.analysis.convergence import MiB, Scenario
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
    assert by["xbzrle"].converges and not by["precopy"].converges
    # a sparse page holds random bytes: zstd gains nothing on it (measured: wire/RAM as random)
    assert not by["multifd-zstd"].converges and ZSTD_RATIO["sparse"] == ZSTD_RATIO["random"]
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


def _zstd(base: Scenario, *args: Any) -> Outlook:
    return next(o for o in outlooks(base, "text", None, *args) if o.feature == "multifd-zstd")


def test_multifd_zstd_is_held_to_the_encoder_rate_measured_here() -> None:
    """Text pages at 60 MiB/s over a 200 MiB/s link: zstd level 1 (357 MiB/s of RAM a thread,
    measured by benchmarks/multifd-encoder.yaml) keeps up on one channel; level 9 (50 MiB/s a
    thread) does not: the encoder sets the pace, two channels are needed; at 150 MiB/s four,
    more than the source's two CPUs."""
    sc = scenarios(read(NOT_CONVERGED))
    assert sc.early is not None
    base = replace(sc.early, link=replace(sc.early.link, throughput=200 * MiB))
    assert ENCODE_RATE[("zstd", 1)]["text"] == 357 * MiB
    fast = _zstd(base, 1, 1, 2)
    assert fast.prediction.converges and "1 channel at 357 MiB/s of RAM each (level 1" in fast.note
    slow = _zstd(base, 1, 9, 2)
    assert not slow.prediction.converges
    assert "the encoder, not the link, sets the pace: 15.0 of 200.0 MiB/s" in slow.note
    assert slow.note.endswith("; needs 2 channels")
    assert _zstd(base, 2, 9, 2).prediction.converges  # what the note said
    hot = replace(base, guest=replace(base.guest, dirty_rate=150 * MiB))
    four = _zstd(hot, 1, 9, 2)
    assert four.note.endswith("; needs 4 channels, more than the source's 2 CPUs")
    assert not _zstd(hot, 4, 9, 2).prediction.converges  # 4 channels share 2 CPUs
    assert "4 channels at 50 MiB/s of RAM each (level 9, measured), 2 at once on 2 CPUs" in (
        _zstd(hot, 4, 9, 2).note)
    assert _zstd(hot, 4, 9, None).prediction.converges  # CPUs unknown: all four run
    unmeasured = _zstd(base, 2, 5, 2)
    assert "encoder not the limit (level 5 not measured)" in unmeasured.note


def test_multifd_settings_come_from_the_cell_then_the_matrix_then_qemu() -> None:
    from harness.analysis.advise import multifd_settings
    assert multifd_settings({}, {}) == (2, 1)  # QEMU's defaults
    assert multifd_settings({}, {"multifd-channels": 4, "multifd-zstd-level": 9}) == (4, 9)
    assert multifd_settings({"multifd-channels": 1}, {"multifd-channels": 4}) == (1, 1)
    assert multifd_settings({"multifd-channels": True}, {}) == (2, 1)  # not a count
