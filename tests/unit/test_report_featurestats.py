"""harness.report.featurestats: compression and XBZRLE statistics over every repetition, QEMU's
per-period rates kept apart from whole-run ratios computed from its counters, timelines."""

from __future__ import annotations

import csv
import io

import pytest

from harness.report.featurestats import (
    COMPRESSION,
    XBZRLE,
    FeatureStats,
    feature_stats,
    feature_timelines,
    last_info,
    pages_saved,
)
from harness.report.threads import Spread
from harness.results.record import read
from tests.record_edit import (
    CANCELLED_1T,
    COMPRESS_72,
    NOT_CONVERGED,
    WAIT_FALSE,
    WAIT_TRUE,
    XBZRLE_72,
    cell_runs,
    edit,
)


def spread(fs: FeatureStats, block: str, key: str) -> Spread | None:
    b = fs.compression if block == "compression" else fs.xbzrle
    assert b is not None
    (row,) = [r for r in b.rows if r.figure.key == key]
    return row.spread


def median(fs: FeatureStats, block: str, key: str) -> float | None:
    s = spread(fs, block, key)
    return None if s is None else s.median


def test_real_72_compress_run() -> None:
    fs = feature_stats([read(COMPRESS_72)])
    assert fs.xbzrle is None and fs.compression is not None
    assert fs.compression.runs == 1 and fs.compression.corrupted == 0
    assert median(fs, "compression", "pages") == 24309
    assert median(fs, "compression", "busy") == 0
    assert median(fs, "compression", "busy_ratio") == 0
    # QEMU's compression-rate is the last period's; ours is over the whole run.
    assert median(fs, "compression", "compression_rate") == pytest.approx(3.0917898)
    assert median(fs, "compression", "compression_ratio") == pytest.approx(
        24309 * 4096 / 32630204)


def test_busy_counts_only_without_waiting_for_a_thread_over_every_repetition() -> None:
    wait = feature_stats(cell_runs(WAIT_TRUE))
    nowait = feature_stats(cell_runs(WAIT_FALSE))
    assert wait.compression is not None and nowait.compression is not None
    assert wait.compression.runs == nowait.compression.runs == 3
    assert wait.compression.corrupted == 3 and nowait.compression.corrupted == 1
    assert spread(wait, "compression", "busy") == Spread(3, 0, 0, 0)
    busy = spread(nowait, "compression", "busy")
    assert busy is not None and busy.n == 3 and busy.lo > 100000
    ratio = spread(nowait, "compression", "busy_ratio")
    assert ratio is not None and 0.9 < ratio.lo <= ratio.hi <= 1.0
    # Each run's ratio is its own busy over its own pages saved.
    runs = cell_runs(WAIT_FALSE)
    per_run = []
    for rec in runs:
        assert rec.final is not None and rec.final.compression is not None
        saved = pages_saved(rec.final)
        assert saved is not None
        per_run.append(rec.final.compression.busy / saved)  # type: ignore[operator]
    assert ratio == Spread(3, sorted(per_run)[1], min(per_run), max(per_run))
    # These migrations end within a second: QEMU never closed a rate period, so its busy-rate
    # stays 0 while almost every page went out uncompressed. That is why ours is there.
    assert median(nowait, "compression", "busy_rate") == 0
    assert median(nowait, "compression", "busy_rate_peak") == 0


def test_a_cancelled_run_is_read_from_its_last_sample_with_figures() -> None:
    rec = read(NOT_CONVERGED)
    assert rec.final is not None and rec.final.ram is None  # QEMU's answer after the cancel
    info, t = last_info(rec)
    assert info is not None and info.ram is not None and t == pytest.approx(12.0001)
    (cancelled,) = cell_runs(CANCELLED_1T)
    fs = feature_stats([cancelled])
    assert fs.compression is not None and fs.compression.cancelled == 1
    assert median(fs, "compression", "pages") == 29543
    assert "1 from the last sample before the cancel" in "\n".join(fs.lines())


def test_xbzrle_miss_ratio_is_ours_and_not_qemus_per_period_rate() -> None:
    fs = feature_stats([read(XBZRLE_72)])
    assert fs.compression is None and fs.xbzrle is not None
    # final: cache-miss 2943, normal 22481, duplicate 46268, xbzrle pages 0
    assert median(fs, "xbzrle", "miss_ratio") == pytest.approx(2943 / (22481 + 46268))
    assert median(fs, "xbzrle", "cache_miss_rate") == 0.0
    assert spread(fs, "xbzrle", "encoding_ratio") is None  # no xbzrle bytes: undefined
    assert "-" in "\n".join(fs.lines())


def _xbzrle_run(periods: list[float], final: dict[str, int | float]) -> object:
    rec = read(XBZRLE_72)
    samples = [s.model_dump(mode="json", by_alias=True) for s in rec.timeline]
    with_block = [i for i, s in enumerate(samples) if "xbzrle-cache" in s]
    for i, rate in zip(with_block[-len(periods):], periods):
        samples[i]["xbzrle-cache"]["cache-miss-rate"] = rate
    fin = rec.final.model_dump(mode="json", by_alias=True) if rec.final else {}
    fin["xbzrle-cache"].update(final)
    return edit(rec, {"timeline": samples, "final": fin})


def test_per_period_peak_last_and_whole_run_differ_as_qemu_computes_them() -> None:
    rec = _xbzrle_run([0.9, 0.1], {"cache-miss": 500, "pages": 1000, "bytes": 64000,
                                   "cache-miss-rate": 0.1, "overflow": 7})
    fs = feature_stats([rec])  # type: ignore[list-item]
    assert median(fs, "xbzrle", "cache_miss_rate") == 0.1
    assert median(fs, "xbzrle", "cache_miss_rate_peak") == 0.9
    assert median(fs, "xbzrle", "miss_ratio") == pytest.approx(500 / (22481 + 46268 + 1000))
    assert median(fs, "xbzrle", "bytes_per_page") == 64.0
    assert median(fs, "xbzrle", "encoding_ratio") == pytest.approx(1000 * 4096 / 64000)
    assert median(fs, "xbzrle", "overflow") == 7


def test_csv_and_text_cover_every_figure() -> None:
    fs = feature_stats(cell_runs(WAIT_FALSE) + [read(XBZRLE_72)])
    header, rows = fs.csv()
    assert header == ["block", "figure", "label", "unit", "kind", "median", "min", "max", "runs"]
    assert [r[1] for r in rows] == [f.key for f in COMPRESSION] + [f.key for f in XBZRLE]
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    assert len(buf.getvalue().splitlines()) == 1 + len(COMPRESSION) + len(XBZRLE)
    text = "\n".join(fs.lines())
    assert "busy ratio, whole run" in text and "KiB" in text and "qemu last period" in text


def test_no_block_no_figures() -> None:
    fs = feature_stats([read(NOT_CONVERGED)])
    assert fs.compression is None and fs.xbzrle is None
    assert fs.lines() == [] and fs.csv()[1] == []
    assert feature_stats([]).compression is None


def test_timelines_have_one_series_per_run_and_figure() -> None:
    runs = cell_runs(WAIT_FALSE)
    series = feature_timelines(runs)
    plain = [f for f in COMPRESSION if f.get is not None]
    assert len(series) == len(runs) * len(plain)
    assert [s.repetition for s in series[::len(plain)]] == [1, 2, 3]
    for s in series:
        assert len(s.t) == len(s.y) and list(s.t) == sorted(s.t)
    busy = [s for s in series if s.key == "busy" and s.repetition == 1][0]
    assert busy.y[-1] == runs[0].final.compression.busy  # type: ignore[union-attr]
