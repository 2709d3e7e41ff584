"""harness.analysis.diagnosis on real run records (tests/data, upgraded from schema 1): the not-converged
precopy run is link-bound with advice the model confirms, completed runs are converged with
predicted and measured figures, the corrupted 7.2 run is flagged and not diagnosed; the other
factors on records edited to show them; cells aggregated over repetitions."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.analysis.convergence import MiB, min_throughput, predict
from harness.analysis.diagnosis import Diagnosis, aggregate, diagnose, diagnose_cell, scenarios
from harness.results.record import RunRecord, dump, read

DATA = Path(__file__).resolve().parent.parent / "data"
NOT_CONVERGED = DATA / "v1/ebde118b7008/1.json"  # 10.0 precopy, 60 MiB/s random, 100 Mbit/s
PAUSE = DATA / "v1/872aefb50589/1.json"  # the same guest, stopped after 2 syncs
CORRUPTED = DATA / "v1/ca53824e9fde/1.json"  # 7.2, integrity ram: 12 pages differ
SKIPPED = DATA / "v1/c085dd64c021/1.json"
FAILED = DATA / "campaign-seed/7f6dfef9435a/2.json"
XBZRLE = DATA / "run-xbzrle.json"  # 10.0, 128 MiB cache, sparse writer, completed
POSTCOPY = DATA / "v1/d42cf09851fe/1.json"
PRECOPY = DATA / "v1/c2ae7ae07f48/1.json"
COMPLETED = sorted([*DATA.glob("v1/*/1.json"), XBZRLE, *DATA.glob("campaign-seed/*/*.json")])


def edited(path: Path, edit: Callable[[dict[str, Any]], None]) -> RunRecord:
    """The record at ``path`` with ``edit`` applied to its v2 JSON, validated again."""
    data = json.loads(dump(read(path)))
    edit(data)
    return RunRecord.model_validate(data)


def set_param(data: dict[str, Any], key: str, value: object) -> None:
    data["cell"]["migration"]["parameters"][key] = value
    if data.get("applied"):
        data["applied"]["source"]["parameters"][key] = value


def set_cap(data: dict[str, Any], key: str) -> None:
    data["cell"]["migration"]["capabilities"][key] = True
    if data.get("applied"):
        data["applied"]["source"]["capabilities"][key] = True


def not_converged(data: dict[str, Any]) -> None:
    data["outcome"] = "not-converged"
    data["metrics"].update(total_time_ms=None, downtime_ms=None)


def test_the_not_converged_precopy_run_is_link_bound_with_advice() -> None:
    """60 MiB/s over a 48 MiB working set on a 100 Mbit/s link, downtime limit 50 ms: each pass
    leaves the working set dirty (48.6 MiB at the sync), 3.9 s of sending at 12.5 MiB/s."""
    rec = read(NOT_CONVERGED)
    d = diagnose(rec)
    assert d.factor == "link-bound" and d.valid
    assert "60.0 MiB/s" in d.summary and "12.5 MiB/s" in d.summary and "50 ms" in d.summary
    labels = {e.label: e for e in d.evidence}
    assert labels["throughput (QEMU, median)"].value == pytest.approx(12.5, abs=0.1)
    assert labels["largest remainder at a sync"].value == pytest.approx(48.6, abs=0.1)
    assert labels["downtime limit"] == ("downtime limit", 50, "ms")
    # every prediction agrees with what happened
    for f in (d.predicted, d.early, d.hindsight):
        assert f is not None and f.converges is False
    assert d.measured.converges is False and d.measured.passes == 1
    # the advice: bandwidth first, and its figure is the model's, which converges fed back
    assert d.advice[0].startswith("bandwidth: ")
    sc = scenarios(rec).hindsight
    assert sc is not None
    b = min_throughput(sc)
    assert b is not None
    assert f"{b / MiB:.1f} MiB/s" in d.advice[0]
    assert predict(replace(sc, link=replace(sc.link, throughput=b))).converges
    assert not predict(replace(sc, link=replace(sc.link, throughput=b * 0.999))).converges
    topics = [a.split(":")[0] for a in d.advice]
    assert topics[:2] == ["bandwidth", "downtime-limit"]
    assert {"compression", "auto-converge", "postcopy"} <= set(topics)
    limit_ms = int(re.search(r">= (\d+) ms", d.advice[1]).group(1))  # type: ignore[union-attr]
    assert predict(replace(sc, downtime_limit=limit_ms / 1000)).converges
    assert not predict(replace(sc, downtime_limit=limit_ms / 1000 * 0.99)).converges
    cols = d.columns()
    assert cols["diagnosis"] == "link-bound" and str(cols["advice"]).startswith("bandwidth: ")
    assert cols["predicted_outcome"] == "does not converge"


def test_the_paused_run_was_too_slow_for_max_time() -> None:
    """The guest stops after 2 syncs, but pass 0 alone takes 8.2 s of the 12 s max_time and the
    working set left then needs 3.9 s more: the model completes it at 12.1 s, too late."""
    d = diagnose(read(PAUSE))
    assert d.factor == "link-bound" and "too slow for max_time_s (12 s)" in d.summary
    assert d.hindsight is not None and d.hindsight.converges is False
    assert d.advice[0].startswith("bandwidth: ")


@pytest.mark.parametrize("path", [p for p in COMPLETED if p not in (CORRUPTED, SKIPPED, FAILED)
                                  and json.loads(p.read_text())["outcome"] == "completed"],
                         ids=lambda p: p.parent.name)
def test_completed_runs_are_converged_with_predicted_and_measured_figures(path: Path) -> None:
    rec = read(path)
    d = diagnose(rec)
    assert d.factor == "converged" and d.valid
    assert d.advice == ()
    m = d.measured
    assert m.converges is True
    assert rec.metrics.total_time_ms is not None and rec.metrics.downtime_ms is not None
    assert m.total_time == pytest.approx(rec.metrics.total_time_ms / 1000)
    assert m.downtime == pytest.approx(rec.metrics.downtime_ms / 1000)
    assert d.predicted is not None and d.predicted.passes is not None
    cols = d.columns()
    assert cols["diagnosis"] == "converged"
    if d.predicted.converges:
        assert cols["predicted_total_time_ms"] is not None
    if len(rec.timeline) > 5:  # the campaign-seed files were trimmed to two samples
        assert d.hindsight is not None
    text = "\n".join(d.lines())
    assert "measured: completes" in text and "predicted: " in text


def test_a_marginal_run_the_model_gets_wrong_says_so() -> None:
    """60 MiB/s over 16 MiB at 51 MB/s: the model's fixed point (the 19.6 MiB a pass leaves)
    exceeds the 14.7 MiB budget, yet QEMU completed it after 7 passes by syncing again every
    ~100 ms; the diagnosis says the model disagreed."""
    d = diagnose(read(DATA / "v1/9bce91804f13/1.json"))
    assert d.factor == "converged" and d.measured.passes == 7
    assert d.hindsight is not None and d.hindsight.converges is False
    assert "model predicted no convergence (marginal)" in d.summary


def test_the_corrupted_run_is_flagged_not_diagnosed() -> None:
    rec = read(CORRUPTED)
    assert rec.outcome == "completed"  # QEMU said completed; the guest disagreed
    d = diagnose(rec)
    assert d.factor == "corrupted" and not d.valid
    assert "12 pages differ" in d.summary and "not diagnosed" in d.summary
    assert d.predicted is None and d.early is None and d.hindsight is None
    assert len(d.advice) == 1 and "rerun" in d.advice[0]
    assert ("differing pages", 12, "pages") in d.evidence
    assert d.columns()["predicted_total_time_ms"] is None


def test_runs_that_did_not_migrate() -> None:
    skipped = diagnose(read(SKIPPED))
    assert skipped.factor == "not-migrated" and "legacy compress" in skipped.summary
    failed = diagnose(read(FAILED))
    assert failed.factor == "failed" and "Broken pipe" in failed.summary
    assert not skipped.valid and not failed.valid and failed.advice == ()


def test_xbzrle_cache_too_small() -> None:
    """The XBZRLE run with its 128 MiB cache replaced by 16 MiB and made not to converge: the
    working set seen (68 MiB) needs a 128 MiB cache, with which the model converges."""
    def edit(data: dict[str, Any]) -> None:
        not_converged(data)
        set_param(data, "xbzrle-cache-size", 16 * MiB)
    d = diagnose(edited(XBZRLE, edit))
    assert d.factor == "xbzrle-cache"
    assert "16 MiB for a 68 MiB working set" in d.summary
    assert d.advice[0].startswith("xbzrle-cache-size: 128 MiB") and "completes" in d.advice[0]
    assert ("xbzrle cache", 16.0, "MiB") in d.evidence


def test_xbzrle_cache_that_every_lookup_missed() -> None:
    """As measured with a 4 MiB cache for a 64 MiB working set (tests/integration): no page was
    encoded, so what a hit saves is unknown and the model cannot show a bigger cache converging;
    the cache is still what failed, and the advice says the saving is not known."""
    def edit(data: dict[str, Any]) -> None:
        not_converged(data)
        set_param(data, "xbzrle-cache-size", 4 * MiB)
        for s in data["timeline"]:
            x = s.get("xbzrle-cache")
            if x:
                x["cache-miss"] = (x["cache-miss"] or 0) + (x["pages"] or 0)
                x.update(pages=0, bytes=0, overflow=0)
    d = diagnose(edited(XBZRLE, edit))
    assert d.factor == "xbzrle-cache", d.lines()
    assert "100 % of its lookups missed" in d.summary and "saving of a cache that fits is " \
        "unknown" in d.summary
    assert d.advice[0].startswith("xbzrle-cache-size: 128 MiB")
    assert d.advice[0].endswith("(no page was encoded: the model assumes no saving)")


def test_xbzrle_data_unfriendly() -> None:
    """The same run with every encoding overflowing (a page costs a whole page)."""
    def edit(data: dict[str, Any]) -> None:
        not_converged(data)
        for s in data["timeline"]:
            x = s.get("xbzrle-cache")
            if x and x["pages"]:
                x.update(overflow=x["pages"], bytes=x["pages"] * 4096)
    d = diagnose(edited(XBZRLE, edit))
    assert d.factor == "xbzrle-data" and "100 % of its encodings overflowed" in d.summary


def test_throttle_at_max_cpu_throttle() -> None:
    """The link-bound run under auto-converge capped at 50 %, which it reached."""
    def edit(data: dict[str, Any]) -> None:
        set_cap(data, "auto-converge")
        set_param(data, "max-cpu-throttle", 50)
        for s in data["timeline"]:
            if s["t"] > 6:
                s["cpu-throttle-percentage"] = 50
    d = diagnose(edited(NOT_CONVERGED, edit))
    assert d.factor == "throttle-max" and "max-cpu-throttle (50 %)" in d.summary
    assert d.advice[0].startswith("auto-converge: needs a")
    assert "max-cpu-throttle must be >= 99 % (now 50 %)" in d.advice[0]


def test_cpu_bound_compression() -> None:
    """The link-bound run as legacy compress with 2 threads at 95 % of a core each and a
    max-bandwidth 15 times what was sent: more threads move more RAM (6.6 MB/s each)."""
    def edit(data: dict[str, Any]) -> None:
        set_cap(data, "compress")
        set_param(data, "compress-threads", 2)
        set_param(data, "max-bandwidth", 200_000_000)
        data["cpu"]["source"]["classes"]["compress"] = 190.0
    d = diagnose(edited(NOT_CONVERGED, edit))
    assert d.factor == "cpu-bound" and "2 compress threads" in d.summary
    assert ("CPU per compress thread", 95.0, "% of a core") in d.evidence
    assert d.advice[0].startswith("threads: ")
    n = int(re.search(r"threads: (\d+) compress", d.advice[0]).group(1))  # type: ignore[union-attr]
    # the source has 2 CPUs: the threads needed cannot run at once there
    assert n > 2 and "more than the source's 2 CPUs" in d.advice[0]

    def on_a_big_host(data: dict[str, Any]) -> None:
        edit(data)
        data["hosts"]["source"]["cpus"] = 64
    big = diagnose(edited(NOT_CONVERGED, on_a_big_host))
    assert big.advice[0].startswith(f"threads: {n} compress threads (now 2; ")
    assert "completes" in big.advice[0]


def test_bandwidth_far_below_max_bandwidth() -> None:
    def edit(data: dict[str, Any]) -> None:
        set_param(data, "max-bandwidth", 50_000_000)
    d = diagnose(edited(NOT_CONVERGED, edit))
    assert d.factor == "bandwidth-below" and "26 % of max-bandwidth" in d.summary


def test_downtime_limit_below_one_pass() -> None:
    """With a 3 s limit the 48.6 MiB the working set leaves need 3.9 s: raising the limit to
    3.88 s (less than twice 3 s) converges, so the limit is named, and advised first."""
    def edit(data: dict[str, Any]) -> None:
        set_param(data, "downtime-limit", 3000)
    d = diagnose(edited(NOT_CONVERGED, edit))
    assert d.factor == "downtime-limit" and "the limit is 3000 ms" in d.summary
    assert d.advice[0].startswith("downtime-limit: >= 38")


def test_postcopy_faults() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["metrics"]["guest_max_stall_ms"] = 1200.0
    d = diagnose(edited(POSTCOPY, edit))
    assert d.factor == "postcopy-faults" and "1200 ms" in d.summary
    assert d.hindsight is not None and d.hindsight.converges


def test_a_cell_takes_the_majority_and_medians_and_leaves_corrupted_runs_out() -> None:
    link = diagnose(read(NOT_CONVERGED))
    ok = diagnose(read(PRECOPY))
    bad = diagnose(read(CORRUPTED))
    cell = aggregate([link, ok, link, bad])
    assert cell.factor == "link-bound" and cell.runs == 4
    assert cell.headline == "link-bound in 2/4 runs" and cell.summary.startswith(link.summary)
    assert cell.lines()[0] == f"diagnosis: link-bound in 2/4 runs: {cell.summary}"
    assert "1 of 4 runs 1 corrupted, left out" in cell.summary
    assert dict(cell.factors) == {"link-bound": 2, "converged": 1, "corrupted": 1}
    assert cell.advice == link.advice
    assert cell.measured.converges is False
    only_bad = aggregate([bad, bad])
    assert only_bad.factor == "corrupted" and not only_bad.valid
    recs = [read(PRECOPY), read(DATA / "v1/c9a291fdf75e/1.json"), read(DATA / "v1/bc1bf38acf79/1.json")]
    cell = diagnose_cell(recs)
    assert cell.factor == "converged" and cell.measured.total_time is not None
    totals = [r.metrics.total_time_ms / 1000 for r in recs if r.metrics.total_time_ms]
    assert cell.measured.total_time == pytest.approx(statistics.median(totals))
    with pytest.raises(ValueError):
        aggregate([])


def relative_errors(which: str) -> list[float]:
    errs = []
    for path in COMPLETED:
        d: Diagnosis = diagnose(read(path))
        f = getattr(d, which)
        if d.factor != "converged" or f is None or f.total_time is None:
            continue
        assert d.measured.total_time is not None
        errs.append(f.total_time / d.measured.total_time - 1)
    return errs


def test_total_time_error_on_the_stored_runs_stays_where_it_was_measured() -> None:
    """Not a fit: the model is not tuned to these runs. This guards the error measured when the
    model was written against regressions: from the whole run's inputs it overestimated the
    total time of the 9 completed runs with a full timeline by 9 % (median; 5-11 %), mostly
    because QEMU ends a pass early, syncing once its estimate falls below the threshold, where
    the model sends the whole remainder; before the migration (configured inputs) the median
    error was +6 % but up to +329 % (multifd zstd: the saving was unknown before the run); with
    the writer pattern's measured zstd ratio (harness.analysis.patterns) at most +59 %."""
    errs = relative_errors("hindsight")
    assert len(errs) >= 9
    assert 0 < statistics.median(errs) < 0.15  # an overestimate, as measured
    assert max(abs(e) for e in errs) < 0.25
    before = relative_errors("predicted")
    assert len(before) >= 8 and statistics.median(before) < 0.25 and max(before) < 0.7


def test_summary_columns_are_the_stores_diagnosis_columns() -> None:
    """The diagnosis fills exactly the summary.csv columns the store reserves for it."""
    from harness.analysis.diagnosis import summary_columns
    from harness.results import store
    rec = edited(DATA / "v1" / "872aefb50589" / "1.json", lambda d: None)
    cols = summary_columns(rec)
    assert list(cols) == store.DIAGNOSIS_COLUMNS
    row = store.summary_row(rec, summary_columns)
    assert row["diagnosis"] == cols["diagnosis"] != ""
    assert "diagnosis" not in store.summary_row(rec)  # not annotated: the columns stay empty


@pytest.mark.parametrize("path", [*COMPLETED, CORRUPTED, SKIPPED, FAILED], ids=lambda p: p.parent.name)
def test_the_factor_is_said_once(path: Path) -> None:
    """``show`` and the cell page put the factor (the headline) before the summary: the summary
    does not start with it again ("converged: converged: ...", "corrupted: corrupted: ...")."""
    d = diagnose(read(path))
    cell = aggregate([d, d])
    for diag, head in ((d, d.factor), (cell, f"{d.factor} in 2/2 runs")):
        assert diag.headline == head
        first = diag.lines()[0]
        assert first == f"diagnosis: {head}: {diag.summary}"
        words = diag.summary.split(":")[0].lower().replace("-", " ")
        assert words != d.factor.replace("-", " ") and not words.startswith(
            ("converged", "link bound", "corrupted", "not migrated", "failed", "the migration"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_carries_the_diagnosis_summary_csv_has(fmt: str, tmp_path: Path) -> None:
    """``migbench export`` fills the diagnosis columns from the same function as summary.csv
    (summary_columns); the store's frame alone leaves them empty (it does not diagnose)."""
    import shutil

    import pandas as pd

    from harness import cli
    from harness.analysis.diagnosis import summary_columns
    from harness.results import store
    camp = tmp_path / "camp"
    shutil.copytree(DATA / "v1", camp, ignore=shutil.ignore_patterns("README.md", "summary.csv"))
    out = tmp_path / f"runs.{fmt}"
    assert cli.main(["export", str(camp), "--format", fmt, "-o", str(out)]) == 0
    df = (pd.read_csv(out, dtype={"cell_id": str}, keep_default_na=False) if fmt == "csv"
          else pd.read_parquet(out))
    recs = {(r.cell.id, r.repetition): r for r in store.records(camp)}
    assert len(df) == len(recs) == 13
    factors = set()
    for _, row in df.iterrows():
        want = summary_columns(recs[(row["cell_id"], int(row["repetition"]))])
        for col in ("diagnosis", "advice", "predicted_outcome"):
            assert (row[col] if isinstance(row[col], str) else "") == (want[col] or ""), col
        for col in ("predicted_total_time_ms", "predicted_downtime_ms", "early_total_time_ms"):
            got, exp = row[col], want[col]
            assert (got == "" or pd.isna(got)) if exp is None else float(got) == exp, col
        factors.add(row["diagnosis"])
    assert {"converged", "link-bound", "corrupted", "not-migrated"} <= factors
    bare = store.frame(recs.values())
    assert bare["diagnosis"].isna().all()


def test_encoder_rate_is_ram_sent_whole_per_cpu_second_of_the_compress_threads() -> None:
    """Legacy compress on 7.2 (tests/data/v1, real): the pages sent whole over the compress
    threads' CPU-seconds in the migration window; none without compression or CPU time."""
    from harness.analysis.convergence import full_pages
    from harness.analysis.diagnosis import MIN_ENCODER_CPU_S, encoder_rate
    rec = read(DATA / "v1/8fcf85a3052a/1.json")
    enc = encoder_rate(rec)
    assert enc is not None and enc.cls == "compress" and rec.cpu and rec.cpu.source
    last = rec.final if rec.final and rec.final.ram else rec.timeline[-1]
    assert last.ram is not None
    ram = full_pages(last) * (last.ram.page_size or 4096)
    cpu_s = rec.cpu.source.classes["compress"] / 100 * rec.cpu.source.window_s
    assert enc.per_thread == pytest.approx(ram / cpu_s) and ram > 50 * MiB
    assert 50 * MiB < enc.per_thread < 100 * MiB  # 72.5 MiB/s: level 1 zlib on one core, TCG
    assert encoder_rate(read(PRECOPY)) is None  # no compression
    short = read(DATA / "v1/615439fa7f3c/1.json")  # multifd zstd: 0.1 CPU-seconds in all
    assert short.cpu and short.cpu.source
    assert short.cpu.source.classes["multifd_send"] / 100 * short.cpu.source.window_s < (
        MIN_ENCODER_CPU_S)
    assert encoder_rate(short) is None


def _multifd_zlib(pct: float, cpus: int) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        set_cap(data, "multifd")
        set_param(data, "multifd-compression", "zlib")
        set_param(data, "multifd-channels", 1)
        data["cpu"]["source"]["classes"]["multifd_send"] = pct
        data["hosts"]["source"]["cpus"] = cpus
    return edit


def test_a_slow_encoder_makes_the_bandwidth_advice_name_the_threads() -> None:
    """The link-bound run as multifd zlib, 1 channel at 50 % of a core (not CPU-bound): it
    compressed ~150 MiB in 6 CPU-seconds, 24.9 MiB/s a thread. The 64.6 MiB/s the model needs
    on the wire (random pages: ratio ~1) take 3 such threads: more than a 2-CPU source has,
    enough on an 8-CPU one."""
    small = diagnose(edited(NOT_CONVERGED, _multifd_zlib(50.0, 2)))
    assert small.factor == "link-bound"
    bw = next(a for a in small.advice if a.startswith("bandwidth: "))
    assert re.search(r"with 3 zlib threads to compress [\d.]+ MiB/s of RAM \(24\.9 MiB/s each; "
                     r"now 1\): more threads than the source's 2 CPUs", bw), bw
    big = diagnose(edited(NOT_CONVERGED, _multifd_zlib(50.0, 8)))
    bw = next(a for a in big.advice if a.startswith("bandwidth: "))
    assert "with 3 zlib threads" in bw and "completes in" in bw
    fast = diagnose(edited(NOT_CONVERGED, _multifd_zlib(5.0, 2)))  # 249 MiB/s a thread
    bw = next(a for a in fast.advice if a.startswith("bandwidth: "))
    assert "threads" not in bw and "completes in" in bw  # the encoder is not the limit



def test_link_rates_are_the_unthrottled_phases_bytes_over_time() -> None:
    """Switchover: downtime bytes over the downtime; postcopy: postcopy bytes from the switch to
    completion; none from a compression run (its encoder may set the pace)."""
    from harness.analysis.diagnosis import link_rates
    rec = read(PRECOPY)
    assert rec.final and rec.final.ram and rec.final.ram.downtime_bytes
    assert rec.metrics.downtime_ms
    got = link_rates(rec)
    assert got.switchover == pytest.approx(
        rec.final.ram.downtime_bytes / (rec.metrics.downtime_ms / 1000))
    assert got.postcopy is None and got.precopy is None and got.link == got.switchover
    assert 1000 * MiB < got.switchover < 1400 * MiB  # loopback: QEMU lifts max-bandwidth
    pc = read(POSTCOPY)
    assert pc.final and pc.final.ram and pc.final.ram.postcopy_bytes
    assert pc.metrics.total_time_ms and pc.postcopy_start_t is not None
    assert link_rates(pc).postcopy == pytest.approx(pc.final.ram.postcopy_bytes / (
        pc.metrics.total_time_ms / 1000 - pc.postcopy_start_t))
    assert link_rates(read(DATA / "v1/8fcf85a3052a/1.json")).link is None  # legacy compress


def test_each_run_gets_the_link_the_other_runs_measured() -> None:
    from harness.analysis.diagnosis import link_premeasured, link_rates
    recs = [read(PRECOPY), read(DATA / "v1/c9a291fdf75e/1.json"), read(NOT_CONVERGED)]
    pres = link_premeasured(recs)
    own = [link_rates(r).link for r in recs]
    assert pres[0] is not None and pres[0].link == own[1]  # not its own
    assert pres[1] is not None and pres[1].link == own[0]
    assert pres[2] is not None and pres[2].link == statistics.median([own[0], own[1]])
    assert link_premeasured(recs[:1]) == [None]
    before, linked = diagnose(recs[0]), diagnose(recs[0], pres[0])
    assert before.predicted and linked.predicted and before.measured.downtime
    assert before.predicted.downtime and linked.predicted.downtime
    # the last remainder at 1.2 GiB/s, not at max-bandwidth's 47.7 MiB/s
    assert before.predicted.downtime > 0.2 > 0.05 > linked.predicted.downtime


def test_an_unlimited_max_bandwidth_is_no_limit_not_one_byte_a_second() -> None:
    """max-bandwidth 0 (``unlimited``): QEMU's own pass-0 rate is the link, for the passes and
    the switchover alike; before the run only a measured link gives a prediction."""
    rec = edited(PRECOPY, lambda d: set_param(d, "max-bandwidth", 0))
    d = diagnose(rec)
    assert ("max-bandwidth", "unlimited", "") in d.evidence
    assert not any(e.label == "throughput vs max-bandwidth" for e in d.evidence)
    assert d.predicted is None and d.early is not None and d.early.converges
    sc = scenarios(rec)
    assert sc.early is not None
    assert sc.early.link.switchover_throughput == sc.early.link.throughput  # pass 0's own pace
    from harness.analysis.diagnosis import Premeasured
    linked = diagnose(rec, Premeasured(link=1200 * MiB))
    assert linked.predicted is not None and linked.predicted.converges


def test_before_the_run_the_writer_patterns_costs_stand_in_for_the_unmeasured_savings() -> None:
    """multifd zstd on text pages (tests/data/v1, real): before the run the model takes the
    pattern's measured wire ratio and the channels' encoder rate (harness.analysis.patterns);
    the run's own ratio (0.295) replaces it from pass 0 on. XBZRLE on sparse pages: a hit costs
    the pattern's 1 % of a page until the run measures it."""
    from harness.analysis.patterns import ENCODE_RATE, XBZRLE_COST, ZSTD_RATIO
    sc = scenarios(read(DATA / "v1/615439fa7f3c/1.json"))
    assert sc.configured is not None
    link = sc.configured.link
    assert link.ratio == ZSTD_RATIO["text"] == 0.3
    assert link.encode_rate == 2 * ENCODE_RATE[("zstd", 1)]["text"]  # 2 channels, 2 CPUs
    xb = edited(DATA / "v1/56fb245ca9ca/1.json",
                lambda d: d["cell"]["workload"]["writer"].update(pattern="sparse"))
    before = scenarios(xb).configured
    assert before is not None and before.link.xbzrle_ratio == XBZRLE_COST["sparse"]
    plain = scenarios(read(PRECOPY)).configured
    assert plain is not None and plain.link.ratio == 1.0 and plain.link.encode_rate is None


def test_before_the_run_the_passes_run_at_what_qemu_sends_under_max_bandwidth() -> None:
    """QEMU 10.0 sent 4 % above max-bandwidth with one channel and 13 % with two multifd
    channels, 7.2 exactly max-bandwidth (SEND_RATE, measured on these and the seed runs): the
    prediction before the run takes that; from pass 0 on, QEMU's own measured rate."""
    from harness.analysis.convergence import observe
    from harness.analysis.diagnosis import SEND_RATE
    for path, factor in ((PRECOPY, 1.04), (DATA / "v1/c9a291fdf75e/1.json", 1.0),
                         (DATA / "v1/615439fa7f3c/1.json", 1.13)):
        rec = read(path)
        sc = scenarios(rec)
        assert sc.configured is not None, path
        limit = rec.cell.migration.parameters["max-bandwidth"]
        assert isinstance(limit, (int, float))
        assert sc.configured.link.throughput == pytest.approx(limit * factor), path
        assert factor in SEND_RATE.values()
        whole = observe(rec.timeline)
        if sc.early is not None and whole.pass0_end is not None:
            assert sc.early.link.throughput == observe(rec.timeline, whole.pass0_end).throughput
    # an unprobed QEMU takes the newer figure
    rec = edited(DATA / "v1/c9a291fdf75e/1.json", lambda d: d["qemu"].update(version=None))
    sc = scenarios(rec)
    assert sc.configured is not None
    assert sc.configured.link.throughput == pytest.approx(
        rec.cell.migration.parameters["max-bandwidth"] * 1.04)  # type: ignore[operator]


def test_before_the_run_legacy_compress_takes_its_measured_encoder_rate() -> None:
    """7.2's compress on text pages (tests/data/v1, real; 2 threads, max-bandwidth 50 MB/s):
    before the run, what compress was measured to deliver on text at compress-level 1
    (benchmarks/compress-encoder.yaml), not threads x a per-thread rate, and text's measured wire
    ratio; the prediction's total time is then within 10 % of the run's 2.07 s (0.63 s, -70 %,
    with 2 x the thread's 87 MiB/s per CPU-second)."""
    from harness.analysis.patterns import COMPRESS_RATE, COMPRESS_RATIO
    rec = read(DATA / "v1/8fcf85a3052a/1.json")
    assert rec.cell.workload.writer is not None and rec.cell.workload.writer.pattern == "text"
    sc = scenarios(rec)
    assert sc.configured is not None
    assert sc.configured.link.ratio == COMPRESS_RATIO["text"] == 0.37
    assert sc.configured.link.encode_rate == COMPRESS_RATE[1]["text"] == 43 * MiB
    d = diagnose(rec)
    assert d.predicted is not None and d.predicted.total_time is not None
    assert rec.metrics.total_time_ms == 2065
    assert abs(d.predicted.total_time / 2.065 - 1) < 0.1
    level9 = scenarios(edited(DATA / "v1/8fcf85a3052a/1.json",
                              lambda d: set_param(d, "compress-level", 9))).configured
    assert level9 is not None and level9.link.encode_rate == 40 * MiB
    # compress-wait-thread off: a page no thread is free for goes whole, at once
    nowait = scenarios(edited(DATA / "v1/8fcf85a3052a/1.json",
                              lambda d: set_param(d, "compress-wait-thread", False))).configured
    assert nowait is not None and nowait.link.encode_rate is None and nowait.link.ratio == 1.0
