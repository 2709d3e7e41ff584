"""harness.report.model and harness.analysis.compare on fixed records (no QEMU, no browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.analysis import compare
from harness.analysis.stats import Verdict
from harness.report.model import build_report, cell_page, impact_summary, impact_text, timeline
from harness.results.record import RunRecord, upgrade
from tests.report_data import HOSTILE, cpu_block, make_run, real_record, run

Q10 = [7600, 7650, 7580, 7620, 7610, 7590, 7640, 7605]


def _side(variant: str, cell: str, totals: list[float], **kw: object) -> list[RunRecord]:
    return [run(cell_id=cell, variant=variant, rep=i + 1, total_ms=t, **kw)
            for i, t in enumerate(totals)]


def test_timeline_markers_from_events() -> None:
    tl = timeline(upgrade(real_record()))
    kinds = [m.kind for m in tl.markers]
    assert kinds[0] == "start" and kinds.count("sync") == 5 and kinds.count("switchover") == 1
    stop = next(m for m in tl.markers if m.kind == "switchover")
    assert 7.5 < stop.t < 7.7  # total time 7619 ms
    names = {s.name for s in tl.series}
    assert {"remaining RAM", "throughput", "dirty page rate", "xbzrle cache miss",
            "guest writer (source)", "guest writer (destination)"} <= names
    assert tl.panels[0] == "remaining RAM (MiB)"


def test_extra_guest_series_are_drawn() -> None:
    rec = real_record()
    rec["guest"]["ping"] = [{"seq": i, "t": 0.1 * i, "rtt_ms": 0.5} for i in range(50)]
    tl = timeline(upgrade(rec))
    assert "ping" in tl.panels and "ping rtt_ms" in {s.name for s in tl.series}


def _epoch(rec: dict[str, object]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(rec["migrate_start_utc"])).timestamp()


def fio_samples(t0: float, n: int = 12) -> list[dict[str, object]]:
    """Samples as harness.run.sampling.fio.timeline writes them: host epoch + guest clock, no ``t``."""
    out: list[dict[str, object]] = []
    for i in range(n):
        t_host = t0 - 3.0 + i
        out.append({"t_host": t_host, "host": "source" if i < 8 else "destination", "seq": i,
                    "t_guest": 4.6 + i, "dt": 1.0, "iops": 200.0, "r_iops": 140.0,
                    "w_iops": 60.0, "lat_p50_us": 300.0, "lat_p99_us": 4000.0 + 1000 * i,
                    "lat_p999_us": 9000.0, "lat_max_us": 9000.0, "err": 0,
                    "iops_host": 150.0 if i == 6 else 200.0, "t_start_host": t_host - 1.0})
    return out


def test_fio_series_are_drawn_on_the_host_time_axis() -> None:
    rec = real_record()
    rec["guest"]["fio"] = fio_samples(_epoch(rec))
    tl = timeline(upgrade(rec))
    by_name = {s.name: s for s in tl.series}
    assert {"fio IOPS", "fio completion latency (ms)"} <= set(tl.panels)
    iops = by_name["fio IOPS (host clock)"]
    assert iops.panel == "fio IOPS" and len(iops.x) == 12
    # aligned like the other series: seconds since the migrate command, from the host clock
    assert abs(iops.x[0] + 3.0) < 0.01 and abs(iops.x[6] - 3.0) < 0.01 and iops.y[6] == 150.0
    p99 = by_name["fio p99 completion latency"]
    assert p99.panel == "fio completion latency (ms)" and p99.y[:2] == [4.0, 5.0]
    assert by_name["fio IOPS (guest clock)"].y[0] == 200.0
    assert not any(s.name.startswith("fio t_") for s in tl.series)


def test_ping_loss_is_drawn_per_100ms() -> None:
    rec = real_record()
    probes: list[dict[str, object]] = [
        {"seq": i, "t": round(-1.0 + 0.01 * i, 4), "rtt_ms": 0.6} for i in range(400)]
    for i in (150, 151, 152):  # t = 0.50 .. 0.52: no reply
        probes[i]["rtt_ms"] = None
    probes[260]["rtt_ms"] = 1500.0  # t = 1.60: a reply after the 1 s timeout is a loss
    probes[399]["rtt_ms"] = None  # the last probe: its reply was not due yet, undetermined
    rec["guest"]["ping"] = probes
    empty = {"sent": 0, "lost": 0, "max_lost_run": 0}
    rec["guest_impact"] = {"ping": {"interval_ms": 10.0, "timeout_ms": 1000.0,
                                    **dict.fromkeys(("before", "during", "after", "total"), empty)}}
    tl = timeline(upgrade(rec))
    loss = next(s for s in tl.series if s.name == "ping lost probes")
    assert loss.kind == "bar" and loss.panel in tl.panels
    assert "ping rtt_ms" in {s.name for s in tl.series}  # RTT still drawn, same time axis
    counts = dict(zip(loss.x, loss.y, strict=True))
    assert counts[0.55] == 3 and counts[1.65] == 1
    assert sum(v or 0 for v in loss.y) == 4
    assert min(loss.x) == -0.95 and max(loss.x) == 3.0 - 0.05
    assert len(loss.x) == 40  # every bin, zeros included: no loss is shown, not a gap
    from harness.report.render import timeline_figure

    bars = [d for d in timeline_figure(tl)["data"] if d["type"] == "bar"]
    assert len(bars) == 1 and abs(bars[0]["width"] - 0.1) < 1e-9


def test_corrupted_is_never_shown_as_fast() -> None:
    recs = _side("q10", "aaaaaaaaaaaa", [7600, 7650, 7580])
    recs.append(run(cell_id="aaaaaaaaaaaa", variant="q10", rep=4, total_ms=10,
                    integrity="corrupted"))
    page = cell_page(recs, compare.present_metrics(recs))
    bad = page.reps[-1]
    assert bad.status == "corrupted"
    # Every figure is marked corrupted (shown beside the verdict, never as a plain number).
    assert all(v.startswith("corrupted") for v in bad.cells)
    assert "corrupted:0.0100" in bad.cells  # total time 10 ms, in seconds
    total = next(s for s in page.stat_rows if s.metric.key == "total_time_ms")
    assert total.summary is not None and total.summary.n == 3 and total.summary.min >= 7580
    assert any("corrupted" in w for w in page.warnings)


def test_info_note_says_why_no_run_is_usable() -> None:
    bad = _side("q72", "aaaaaaaaaaaa", [5800, 5700, 6300], integrity="corrupted")
    page = cell_page(bad, compare.present_metrics(bad))
    assert page.info_rep == 3 and "none completed" not in page.info_note
    assert page.info_note == "the last run, as no run has usable timings: corrupted 3/3"
    nc = [run(cell_id="aaaaaaaaaaaa", rep=i, outcome="not-converged") for i in (1, 2)]
    assert "timings: not-converged 2/2" in cell_page(nc, compare.present_metrics(nc)).info_note
    ok = _side("q10", "aaaaaaaaaaaa", [7600, 7650, 7580])
    assert cell_page(ok, compare.present_metrics(ok)).info_note == \
        "the run with the median total time"


def test_timing_excluded_runs_are_left_out() -> None:
    recs = _side("q10", "aaaaaaaaaaaa", [7600, 7650, 7580], timing_excluded=True)
    page = cell_page(recs, compare.present_metrics(recs))
    total = next(s for s in page.stat_rows if s.metric.key == "total_time_ms")
    assert total.summary is None
    assert any("timing_excluded" in w for w in page.warnings)


def test_cv_and_repetition_warnings() -> None:
    noisy = _side("q10", "aaaaaaaaaaaa", [5000, 7000, 9000, 6000])
    page = cell_page(noisy, compare.present_metrics(noisy))
    assert any("total time" in w and "variation" in w for w in page.warnings)
    two = _side("q10", "bbbbbbbbbbbb", [7600, 7610])
    assert any("fewer than 3" in w for w in cell_page(two, compare.present_metrics(two)).warnings)
    rep = build_report(noisy + two, title="t")
    assert len(rep.warnings) == 2


def test_overview_marks_cannot_complete_and_skipped() -> None:
    recs = _side("q10", "aaaaaaaaaaaa", [7600, 7650, 7580], axes={"feature": "xbzrle"})
    recs += [run(cell_id="bbbbbbbbbbbb", axes={"feature": "precopy"}, variant="q10",
                 outcome="not-converged", error="did not converge within max_time_s=25")]
    recs += [run(cell_id="cccccccccccc", axes={"feature": "dirty-limit"}, variant="q10",
                 outcome="skipped", error="dirty-limit needs KVM's dirty ring")]
    rep = build_report(recs, title="t")
    (group,) = rep.groups
    outcome, total = group.heatmaps[0], group.heatmaps[1]
    assert outcome.x == ["dirty-limit", "precopy", "xbzrle"]
    assert outcome.text[0] == ["skipped: dirty-limit needs KVM's dirty ring", "cannot complete",
                               "completed"]
    assert total.text[0][1] == "cannot complete" and total.z[0][1] is None
    assert total.z[0][2] is not None and 7.5 < total.z[0][2] < 7.7
    assert rep.hosts and rep.hosts[0]["accel"] == "tcg"
    assert rep.qemu[0][1].startswith("10.0.2")
    assert ("max-bandwidth", "25000000") in rep.common_params


def test_cpu_table_present_or_not_sampled() -> None:
    plain = _side("q10", "aaaaaaaaaaaa", [7600])
    assert not cell_page(plain, compare.present_metrics(plain)).cpu.sampled
    with_cpu = _side("q10", "aaaaaaaaaaaa", [7600, 7700], cpu=cpu_block())
    page = cell_page(with_cpu, compare.present_metrics(with_cpu))
    assert page.cpu.sampled
    assert ("migration", "42.0", "21.0") in page.cpu.rows
    assert any(m.key == "cpu_src_migration_pct" for m in page.metrics)


def test_compare_significant_and_null() -> None:
    base = _side("q72", "aaaaaaaaaaaa", [v * 1.3 for v in Q10])
    new = _side("q10", "bbbbbbbbbbbb", Q10)
    same = _side("q10", "cccccccccccc", [v * 1.3 + 3 for v in Q10])
    (cell,), unmatched = compare.compare_sides(base, new)
    assert not unmatched and cell.outcome is None
    total = next(r for r in cell.rows if r.metric.key == "total_time_ms")
    assert total.comparison.verdict is Verdict.BETTER
    assert abs(total.comparison.change + 0.2308) < 0.01  # type: ignore[operator]
    throughput = next(r for r in cell.rows if r.metric.key == "throughput_mbps")
    assert throughput.comparison.verdict is Verdict.BETTER  # higher is better
    (cell,), _ = compare.compare_sides(base, same)
    total = next(r for r in cell.rows if r.metric.key == "total_time_ms")
    assert total.comparison.verdict is Verdict.NO_CHANGE


def test_outcome_changes_come_first() -> None:
    plain = {"feature": "precopy"}
    xb = {"feature": "xbzrle"}
    base = _side("q72", "a00000000001", Q10, axes=xb)
    base += [run(cell_id="a00000000002", variant="q72", axes=plain, rep=i,
                 outcome="not-converged") for i in (1, 2, 3)]
    new = _side("q10", "b00000000001", Q10, axes=xb, integrity="corrupted")
    new += _side("q10", "b00000000002", Q10[:3], axes=plain)
    cells, _ = compare.compare_sides(base, new)
    assert [c.outcome is not None for c in cells] == [True, True]
    first, second = cells
    assert first.outcome is not None and first.outcome.direction == "worse"
    assert first.outcome.integrity and "corrupted 8/8" in first.outcome.after
    assert second.outcome is not None and second.outcome.direction == "better"
    assert second.outcome.before == "not-converged 3/3"
    # corrupted runs feed no timings
    assert all(r.comparison.new is None for r in first.rows)


def _outcomes(*statuses: str) -> list[RunRecord]:
    out = []
    for i, st in enumerate(statuses, 1):
        corrupted = st == "corrupted"
        out.append(run(cell_id="a00000000001", variant="q10", rep=i,
                       outcome="completed" if corrupted else st,
                       integrity="corrupted" if corrupted else "ok"))
    return out


def test_outcome_change_compares_shares_not_only_the_set() -> None:
    from harness.analysis import regress

    before = _outcomes("completed", "completed", "completed")
    after = _outcomes("completed", "not-converged", "not-converged")
    two_kinds = _outcomes("completed", "completed", "not-converged")
    change = compare.outcome_change(two_kinds, after)  # same set of statuses on both sides
    assert change is not None and change.direction == "worse" and not change.integrity
    assert change.before == "completed 2/3, not-converged 1/3"
    assert change.after == "completed 1/3, not-converged 2/3"
    back = compare.outcome_change(after, two_kinds)
    assert back is not None and back.direction == "better"
    change = compare.outcome_change(before, after)
    assert change is not None and change.after == "completed 1/3, not-converged 2/3"
    # the same shares over another number of repetitions are no change
    assert compare.outcome_change(before, _outcomes(*["completed"] * 5)) is None
    assert compare.outcome_change(after, after) is None
    # no completed run on either side, but the most common failure changed
    nc = compare.outcome_change(_outcomes("not-converged", "not-converged", "failed"),
                                _outcomes("not-converged", "failed", "failed"))
    assert nc is not None and nc.direction == "worse"
    # more of the runs corrupted: an integrity change
    bad = compare.outcome_change(_outcomes("completed", "completed", "corrupted"),
                                 _outcomes("completed", "corrupted", "corrupted"))
    assert bad is not None and bad.integrity and bad.direction == "worse"
    # the nightly check reads the same rule: a falling completed share is a regression
    finding = regress.outcome_finding(("n1", two_kinds), ("n2", after))
    assert finding.verdict == regress.REGRESSION and finding.kind == "outcome"
    assert "completed 2/3, not-converged 1/3 -> completed 1/3, not-converged 2/3" in finding.reason
    same = regress.outcome_finding(("n1", after), ("n2", after))
    assert same.verdict == regress.NO_CHANGE


def test_report_with_baseline_variant() -> None:
    recs = _side("q72", "a00000000001", [v * 1.3 for v in Q10]) + _side("q10", "b00000000001", Q10)
    rep = build_report(recs, title="t", baseline_variant="q72")
    (sec,) = rep.comparisons
    assert sec.title == "q10 vs q72" and len(sec.cells) == 1


def test_model_keeps_hostile_text_raw() -> None:
    raw = make_run(error=HOSTILE, outcome="failed")
    raw["console"]["destination"].append({"t": 0, "line": HOSTILE})
    rec = upgrade(raw)
    page = cell_page([rec], compare.present_metrics([rec]))
    assert any(HOSTILE in text for _, _, text in page.problems)
    assert any(HOSTILE in lines for _, _, lines in page.consoles)


def test_cells_with_changed_axes_pair_by_feature() -> None:
    base = _side("q10", "a00000000001", Q10, axes={"feature": "xbzrle", "xbzrle-cache-size": "128MiB"})
    new = _side("q10", "b00000000001", Q10, axes={"feature": "xbzrle"})
    cells, unmatched = compare.compare_sides(base, new)
    assert len(cells) == 1 and not unmatched


def test_corruption_note_explains_the_72_tcg_bug() -> None:
    from harness.report.model import corruption_note

    def rec(version: str, **detail: object) -> RunRecord:
        raw = make_run(integrity="corrupted")
        raw["qemu"]["version"] = version
        raw["hosts"]["source"]["accel"] = "tcg"
        raw["integrity_detail"] = detail
        return upgrade(raw)

    bad = rec("7.2.22 (Debian)", ram={"verdict": "corrupted", "differing_pages": 36},
              guest_crash={"lines": ["Kernel panic"]})
    note = corruption_note([bad, run(integrity="ok")])
    assert "36-36 pages" in note and "crashed" in note and "fixed upstream in 9.0" in note
    assert corruption_note([run(integrity="ok")]) == ""
    bad10 = rec("10.0.2", ram={"verdict": "corrupted", "differing_pages": 36},
                guest_crash={"lines": ["Kernel panic"]})
    assert "9.0" not in corruption_note([bad10]) and "no result" in corruption_note([bad10])
    silent = rec("7.2.22 (Debian)", stamps={"verdict": "unchecked"},
                 guest_silent={"reason": "stopped"})
    assert "stopped running on the destination" in corruption_note([silent])


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_tables_beside_the_pages(tmp_path: Path) -> None:
    from harness.report.render import render

    xb, plain = {"feature": "xbzrle"}, {"feature": "precopy"}
    recs = _side("q10", "a00000000001", [7600, 7650, 7620], axes=xb, cpu=cpu_block())
    recs += [run(cell_id="a00000000002", variant="q10", axes=plain, rep=1,
                 outcome="not-converged", error="did not converge within max_time_s=25")]
    recs += _side("q72", "b00000000001", [9900, 9950, 9920], axes=xb)
    recs += _side("q72", "b00000000002", [12000, 12100, 12050], axes=plain)
    pages = render(build_report(recs, title="t", baseline_variant="q72"), tmp_path)
    assert {p.name for p in pages} >= {"index.html", "compare.html", "a00000000001.html"}

    overview = {r["cell_id"]: r for r in _csv(tmp_path / "overview.csv")}
    assert set(overview) == {"a00000000001", "a00000000002", "b00000000001", "b00000000002"}
    a = overview["a00000000001"]
    assert list(a)[:6] == ["workload", "variant", "cell_id", "axes", "status", "runs"]
    assert (a["variant"], a["axes"], a["status"], a["runs"]) == (
        "q10", "feature=xbzrle", "completed 3/3", "3")
    assert float(a["total time median (s)"]) == 7.62  # raw, in the column's unit
    assert float(a["downtime median (ms)"]) == 3.0
    assert float(a["CPU src migration median (%)"]) == 42.0
    nc = overview["a00000000002"]
    assert nc["status"] == "not-converged 1/1" and nc["total time median (s)"] == ""
    for name in ("hosts.csv", "parameters.csv", "parameters-common.csv", "qemu.csv"):
        assert (tmp_path / name).stat().st_size > 0
    qemu = _csv(tmp_path / "qemu.csv")
    assert [(r["variant"], r["runs"]) for r in qemu] == [("q10", "4"), ("q72", "6")]

    cells = tmp_path / "cells"
    runs = _csv(cells / "a00000000001-runs.csv")
    assert [r["repetition"] for r in runs] == ["1", "2", "3"]
    assert [r["total time (s)"] for r in runs] == ["7.60", "7.65", "7.62"]
    assert all(r["status"] == "completed" and r["integrity"] == "ok" for r in runs)
    stats_rows = {r["metric"]: r for r in _csv(cells / "a00000000001-stats.csv")}
    total = stats_rows["total time"]
    assert (total["unit"], total["n"], float(total["median"])) == ("s", "3", 7.62)
    assert (float(total["min"]), float(total["max"])) == (7.6, 7.65)
    info = {r["field"]: r["value"] for r in _csv(cells / "a00000000001-info-migrate.csv")}
    assert info["Migration status"] == "completed"
    cpu = {r["class"]: r for r in _csv(cells / "a00000000001-cpu.csv")}
    assert cpu["migration"]["source %"] == "42.0" and cpu["migration"]["destination %"] == "21.0"
    assert not (cells / "a00000000002-cpu.csv").exists()  # not sampled: no CPU table
    nc_runs = _csv(cells / "a00000000002-runs.csv")
    assert nc_runs[0]["status"] == "not-converged" and "max_time_s=25" in nc_runs[0]["error"]
    assert nc_runs[0]["total time (s)"] == "cannot complete"

    rows = _csv(tmp_path / "compare.csv")
    assert list(rows[0]) == ["comparison", "workload", "cell", "metric", "unit", "n_base",
                             "n_new", "median_base", "median_new", "change", "ci95", "p",
                             "cliffs_delta", "verdict", "warnings"]
    t = next(r for r in rows if r["cell"] == "feature=xbzrle" and r["metric"] == "total time")
    assert (t["comparison"], t["n_base"], t["n_new"]) == ("q10 vs q72", "3", "3")
    assert (float(t["median_base"]), float(t["median_new"])) == (9.92, 7.62)
    # three runs a side cannot reach significance with Mann-Whitney: a change, no verdict
    assert t["change"] == "-23.2%" and t["verdict"] == Verdict.INCONCLUSIVE.value
    outcomes = _csv(tmp_path / "compare-outcomes.csv")
    assert outcomes == [{"comparison": "q10 vs q72", "workload": outcomes[0]["workload"],
                         "cell": "feature=precopy", "before": "completed 3/3",
                         "after": "not-converged 1/1", "direction": "worse",
                         "kind": "outcome"}]


def _impact_run(rep: int, lost: int, *, integrity: str = "ok",
                throttle: float | None = None) -> RunRecord:
    return upgrade(_impact_raw(rep, lost, integrity=integrity, throttle=throttle))


def _impact_raw(rep: int, lost: int, *, integrity: str = "ok",
                throttle: float | None = None) -> dict[str, Any]:
    rec = make_run(cell_id="a00000000001", rep=rep, integrity=integrity)
    # writer reports every 100 ms; resume on the destination at 7.6256 s (fixture events)
    writer: list[dict[str, object]] = [
        {"t": round(-0.5 + 0.1 * i, 4), "host": "source", "rate": 32.0} for i in range(5)]
    writer += [{"t": round(0.1 * i, 4), "host": "source", "rate": 30.0 - i} for i in range(10)]
    writer.append({"t": 2.0, "host": "source", "rate": 20.0 - rep})  # after a 1.1 s stall
    writer += [{"t": round(2.1 + 0.1 * i, 4), "host": "source", "rate": 30.0} for i in range(55)]
    writer += [{"t": 7.7, "host": "destination", "rate": 1.5},  # covers the pause: "after"
               {"t": 7.8, "host": "destination", "rate": 32.0}]
    for p in writer:  # the writer's own clock and counters (not read by the table)
        p.update(guest_t=p["t"], stall_ms=0.0, bad=0.0)
    rec["guest"] = {"writer": writer}
    phase = {"sent": 100, "lost": 0, "max_lost_run": 0, "max_gap_ms": 12.0, "rtt_p50_ms": 0.6,
             "rtt_p99_ms": 2.0}
    rec["guest_impact"] = {
        "ping": {"interval_ms": 10.0, "timeout_ms": 1000.0, "before": dict(phase),
                 "during": {**phase, "lost": lost, "max_gap_ms": 100.0 * lost,
                            "rtt_p99_ms": 900.0 + rep},
                 "after": dict(phase), "total": dict(phase)},
        "fio": {"before": {"samples": 3, "iops_host_mean": 200.2, "lat_p99_us_median": 3000.0,
                           "lat_p99_us_max": 3500.0},
                "during": {"samples": 8, "iops_host_mean": 180.0 + rep,
                           "lat_p99_us_median": 12000.0, "lat_p99_us_max": 1002438.7},
                "after": {"samples": 0, "iops_host_mean": None, "lat_p99_us_median": None,
                          "lat_p99_us_max": None}},
    }
    if throttle is not None:
        rec["timeline"][3]["cpu-throttle-percentage"] = int(throttle)  # QEMU: whole percent
    return rec


def test_guest_impact_table_per_repetition_and_phase(tmp_path: Path) -> None:
    from harness.report.render import cell_tables

    recs = [_impact_run(1, 8, throttle=50.0), _impact_run(2, 105, throttle=99.0),
            _impact_run(3, 50), _impact_run(4, 400, integrity="corrupted")]
    page = cell_page(recs, compare.present_metrics(recs))
    imp = page.impact
    assert imp.reps == [(1, "completed"), (2, "completed"), (3, "completed"), (4, "corrupted")]
    assert imp.uncounted == [(4, "corrupted")]
    rows = {(r.measure, r.phase): r for r in imp.rows}
    lost = rows[("ping lost", "during")]
    assert lost.values == [8, 105, 50, 400] and lost.integer
    assert (lost.median, lost.low, lost.high, lost.n) == (50, 8, 105, 3)  # corrupted not counted
    assert impact_summary(lost) == "50 (8–105)" and impact_text(lost, 105.0) == "105"
    assert rows[("ping RTT p99", "during")].median == 902.0
    assert rows[("ping max gap", "before")].values == [12.0] * 4
    assert rows[("fio IOPS (host clock, mean)", "during")].values == [181, 182, 183, 184]
    assert impact_summary(rows[("fio p99 latency (worst second)", "during")]) == "1,002,439"
    assert ("fio IOPS (host clock, mean)", "after") not in rows  # no figure in any run
    stall = rows[("writer max stall (host clock)", "during")]
    assert stall.values == [1000.0] * 4  # 0.9 -> 2.0 s, minus the 100 ms interval
    assert rows[("writer max stall (host clock)", "before")].values == [0.0] * 4
    assert rows[("writer max stall (host clock)", "after")].values == [0.0] * 4
    assert rows[("writer lowest rate (per 100 ms report)", "during")].values == [
        19.0, 18.0, 17.0, 16.0]
    assert rows[("writer lowest rate (per 100 ms report)", "after")].values == [1.5] * 4
    throttle = rows[("CPU throttle reached", "during")]
    assert throttle.values == [50.0, 99.0, None, None] and throttle.median == 74.5
    xb = rows[("xbzrle bytes per page", "during")]
    assert xb.values == [15.6] * 4  # 258572 bytes / 16596 pages in the fixture's final answer
    tables = cell_tables(page)
    impact_csv = tables["a00000000001-guest-impact.csv"].splitlines()
    assert impact_csv[0] == ("measure,unit,phase,rep 1 (completed),rep 2 (completed),"
                             "rep 3 (completed),rep 4 (corrupted),n,median,min,max")
    assert "ping lost,probes,during,8,105,50,400,3,50,8,105" in impact_csv


def test_guest_impact_without_samplers() -> None:
    raw = make_run()
    del raw["guest"]
    rec = upgrade(raw)
    page = cell_page([rec], compare.present_metrics([rec]))
    assert [r.measure for r in page.impact.rows] == ["xbzrle bytes per page"]
    raw = make_run(outcome="skipped")
    raw.pop("guest", None)
    raw["final"], raw["timeline"] = {"status": "skipped"}, []
    rec = upgrade(raw)
    assert cell_page([rec], compare.present_metrics([rec])).impact.rows == []


def test_guest_impact_with_lines_that_arrive_together() -> None:
    """Two guest lines read in one chunk share an arrival time: ordering them must not compare
    the samples themselves (a real seed run crashed the report so)."""
    raw = _impact_raw(1, 8)
    writer = raw["guest"]["writer"]
    writer.insert(5, dict(writer[5], rate=12.5))  # the same t as its neighbour
    rec = upgrade(raw)
    page = cell_page([rec], compare.present_metrics([rec]))
    rows = {(r.measure, r.phase): r for r in page.impact.rows}
    assert rows[("writer lowest rate (per 100 ms report)", "during")].values == [12.5]
