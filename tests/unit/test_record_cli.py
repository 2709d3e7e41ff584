"""Damaged and hand-edited run files through the commands that read them: ``show`` (a folder and
one file), ``report``, ``export`` and the nightly judge. Each class of damage is exit 1 and one
line naming the file, the field, what was expected and the fix; no traceback, nothing written.
Also: folders without a run, a FIFO where a run file should be, and a Hypothesis property that
mutates real records and runs ``show`` on them."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import cli
from harness.analysis import history, regress
from harness.ci.nightly import judge_night
from harness.results.record.errors import DELETE, NEWER, UNKNOWN, RecordError

DATA = Path(__file__).resolve().parent.parent / "data"
FULL = DATA / "v1/615439fa7f3c/1.json"  # 10.0 multifd with writer, ping and fio
CELL = "615439fa7f3c"
HOLE = "\x00hostile\x00"
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def raw() -> dict[str, Any]:
    data = json.loads(FULL.read_text())
    assert isinstance(data, dict)
    return data


def at(path: str, value: Any) -> str:
    """The real record with the value at ``path`` (``a/b/0/c``) replaced, as JSON text; a
    string value that starts with ``=`` is written into the text as it stands (NaN, 1e999 ...)."""
    d = raw()
    *parents, last = path.split("/")
    node: Any = d
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    literal = isinstance(value, str) and value.startswith("=")
    node[last] = HOLE if literal else value
    text = json.dumps(d)
    return text.replace(json.dumps(HOLE), value[1:], 1) if literal else text


def without(key: str) -> str:
    d = raw()
    del d[key]
    return json.dumps(d)


# (class of damage, the file's text, the one line after "<file>: ")
MALFORMED: list[tuple[str, str | bytes, str]] = [
    ("missing cell", without("cell"), f"cell: missing; {DELETE}"),
    ("missing metrics", without("metrics"), f"metrics: missing; {DELETE}"),
    ("axes as a list", at("cell/axes", ["feature", "multifd"]),
     f"cell.axes: expected an object, got a list of 2; {DELETE}"),
    ("a metric that is a string", at("metrics/total_time_ms", "fast"),
     f"metrics.total_time_ms: expected an integer, got 'fast'; {DELETE}"),
    ("NaN where a number is required", at("repetition", "=NaN"),
     f"repetition: expected an integer, got null; {DELETE}"),
    ("Infinity where a number is required", at("cell/limits/max_time_s", "=Infinity"),
     f"cell.limits.max_time_s: expected a number, got null; {DELETE}"),
    ("an integer of 300 digits", at("metrics/transferred_bytes", "=" + "9" * 300),
     f"metrics.transferred_bytes: expected a number within 64 bits, got an integer of 300 "
     f"digits; {DELETE}"),
    ("an integer of 5000 digits in a QMP answer", at("final/ram/total", "=" + "7" * 5000),
     f"final.ram.total: expected a number within 64 bits, got an integer of 5000 digits; "
     f"{DELETE}"),
    ('"repetition": "one"', at("repetition", "one"),
     f"repetition: expected an integer, got 'one'; {DELETE}"),
    ("deep nesting in an open value", at("cell/axes/feature", "=" + "[" * 50 + "]" * 50),
     f"cell.axes.feature: expected a JSON value nested at most 20 levels deep; {DELETE}"),
    ("nesting beyond Python's recursion limit", "[" * 200_000 + "]" * 200_000,
     f"not a run record (JSON nested too deep); {DELETE}"),
    ("a newer schema_version", at("schema_version", 3),
     f"schema_version: 3 is newer than this migbench reads (2); {NEWER}"),
    ("not JSON", "{\"schema_version\": 1,", "line 1: not valid JSON (Expecting property name "
     f"enclosed in double quotes); {DELETE}"),
    ("not UTF-8", b"{\"campaign\": \"\xff\"}", f"not valid JSON (not UTF-8 text); {DELETE}"),
    ("cell id not a cell id", at("cell/id", "../../etc"),
     f"cell.id: expected text matching ^[0-9a-f]{{12}}$, got '../../etc'; {DELETE}"),
    ("an unknown metric", at("metrics/speed", 3), f"metrics.speed: unknown field; {UNKNOWN}"),
]


def campaign(tmp: Path, body: str | bytes, rep: int = 2) -> tuple[Path, Path]:
    """A campaign folder with the real run as repetition 1 and ``body`` as ``rep``."""
    camp = tmp / "camp"
    (camp / CELL).mkdir(parents=True)
    shutil.copyfile(FULL, camp / CELL / "1.json")
    bad = camp / CELL / f"{rep}.json"
    bad.write_bytes(body if isinstance(body, bytes) else body.encode())
    return camp, bad


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of ``migbench argv`` (exit 1, no traceback, nothing else)."""
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("migbench: error: ")
    return lines[0].removeprefix("migbench: error: ")


@pytest.mark.parametrize(("what", "body", "line"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_reader_refuses_a_damaged_run_file_in_one_line(
        what: str, body: str | bytes, line: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    camp, bad = campaign(tmp_path, body)
    expected = f"{bad}: {line}"
    report, export = tmp_path / "report", tmp_path / "runs.csv"
    for argv in (["show", str(camp)], ["show", str(bad)], ["report", str(camp), "-o", str(report)],
                 ["export", str(camp), "--format", "csv", "-o", str(export)],
                 ["export", str(camp), "--format", "parquet"]):
        assert refused(argv, capsys) == expected, argv
    assert not report.exists() and not export.exists() and not (camp / "runs.parquet").exists()


def test_the_nightly_judge_refuses_a_damaged_earlier_night(tmp_path: Path) -> None:
    """A night is judged against the earlier nights of its history: a damaged file there is the
    same one line (the CLI prints it, exit 1), not a traceback in CI."""
    hist = tmp_path / "hist"
    nights = []
    for stamp in ("20260101T030000Z", "20260102T030000Z"):
        staging = history.incoming_dir(hist, stamp)
        (staging / CELL).mkdir()
        shutil.copyfile(FULL, staging / CELL / "1.json")
        from harness.results import store

        nights.append(history.file_night(hist, staging, [r for _, r in store.iter_runs(staging)]))
    damaged = nights[0].path / CELL / "1.json"
    damaged.write_text(at("metrics/downtime_ms", "32 ms"))
    with pytest.raises(RecordError) as info:
        judge_night(hist, nights[1], regress.Thresholds())
    assert str(info.value) == (f"{damaged}: metrics.downtime_ms: expected an integer, got "
                               f"'32 ms'; {DELETE}")


@pytest.mark.parametrize("body", ["[1]", '{"cells": "x"}', '{"cells": [1]}',
                                  '{"cells": [{"key": 5}]}',
                                  '{"cells": [{"key": "k", "results": [{"verdict": []}]}]}',
                                  '{"cells": [{"key": "k", "notes": "one"}]}'],
                         ids=["list", "cells-text", "cell-number", "key-number", "verdict-list",
                              "notes-text"])
def test_a_damaged_verdict_of_an_earlier_night_counts_as_none(tmp_path: Path, body: str) -> None:
    """The nightly trend reads the earlier nights' verdict.json: one of another shape was an
    AttributeError traceback from `migbench nightly`; it now counts as unreadable (no marks)."""
    (tmp_path / "verdict.json").write_text(body)
    assert history.NightDir("k", "20260101T030000Z", tmp_path).verdict() is None


def test_a_verdict_of_an_earlier_night_is_read_as_written(tmp_path: Path) -> None:
    shutil.copyfile(DATA / "golden-report/verdict.json", tmp_path / "verdict.json")
    got = history.NightDir("k", "20260101T030000Z", tmp_path).verdict()
    assert got == json.loads((DATA / "golden-report/verdict.json").read_text())


def test_a_run_file_in_another_cells_folder_is_refused_by_readers_and_the_resume(
        tmp_path: Path) -> None:
    """One rule (store.load_stored) for the readers and for the runner deciding what to resume."""
    from harness.results import store
    from harness.run.runner import _stored_runs

    other = "0123456789ab"
    (tmp_path / other).mkdir()
    path = tmp_path / other / "1.json"
    shutil.copyfile(FULL, path)
    line = (f"{path}: cell.id: {CELL!r} differs from its folder {other!r}; move the file to its "
            "cell's folder or delete it")
    for read_them in (lambda: list(store.iter_runs(tmp_path)),
                      lambda: _stored_runs(tmp_path, other)):
        with pytest.raises(RecordError) as info:
            read_them()
        assert str(info.value) == line


def test_non_finite_figures_are_shown_as_missing(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """NaN or Infinity where a figure may be missing (a hand-edited file, or one of version 1)
    reads as no figure: shown as '-', never as nan."""
    text = at("metrics/guest_max_stall_ms", "=NaN").replace('"throughput_mbps": 457.31',
                                                             '"throughput_mbps": Infinity')
    assert "Infinity" in text
    camp, _ = campaign(tmp_path, text)
    assert cli.main(["show", str(camp)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "inf" not in out.lower().replace("info", "")
    second = out.split("\n== ")[1]  # repetition 2, the edited one
    assert re.search(r"^  guest max stall \(host clock\): +-$", second, re.M), second
    assert re.search(r"^  average throughput: +-$", second, re.M), second
    assert cli.main(["export", str(camp), "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 0


def test_a_fifo_where_a_run_file_should_be_is_refused_without_waiting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    camp, bad = campaign(tmp_path, "{}")
    bad.unlink()
    os.mkfifo(bad)  # opening it for reading would wait for a writer forever
    expected = f"{bad}: cannot read result: a FIFO, not a regular file; {DELETE}"
    for argv in (["show", str(camp)], ["show", str(bad)],
                 ["report", str(camp), "-o", str(tmp_path / "r")],
                 ["export", str(camp), "--format", "csv"]):
        assert refused(argv, capsys) == expected, argv


@pytest.mark.parametrize("argv", [["show"], ["report", "-o", "REPORT"],
                                  ["export", "--format", "csv"],
                                  ["export", "--format", "parquet"]],
                         ids=["show", "report", "export-csv", "export-parquet"])
def test_a_folder_without_a_run_is_refused_in_one_line(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    camp = tmp_path / "empty"
    camp.mkdir()
    (camp / "summary.csv").write_text("campaign\n")  # a summary is not a run
    args = [a.replace("REPORT", str(tmp_path / "r")) for a in argv]
    line = refused([args[0], str(camp), *args[1:]], capsys)
    assert line == (f"{camp}: no run results here (expected <cell-id>/<rep>.json); run "
                    "`migbench run MATRIX.yaml --out DIR` first")
    assert sorted(p.name for p in camp.iterdir()) == ["summary.csv"]  # no empty export
    assert not (tmp_path / "r").exists()


def test_todays_records_go_through_show_report_and_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real version-2 files of tests/data/v2 (warm start and repetitions rule, storage copy,
    redis with its dataset) in one folder: every reader takes them, with their parts shown."""
    camp = tmp_path / "camp"
    for f in sorted((DATA / "v2").glob("*/*/*.json")):
        (camp / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, camp / f.parent.name / f.name)
    assert cli.main(["show", str(camp)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"disk check: +ok: 0 of 64 chunks of 1.0 MiB differ", out), out
    assert re.search(r"redis dataset: +ok: 500 keys, 0 missing, 0 wrong", out), out
    assert "repetitions 2..2: 2 runs" in out
    assert cli.main(["report", str(camp), "-o", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").is_file()
    assert cli.main(["export", str(camp), "--format", "csv", "-o", str(tmp_path / "r.csv")]) == 0
    with (tmp_path / "r.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["campaign"] for r in rows) == ["v2-redis", "v2-storage", "v2-warm", "v2-warm"]
    assert all(r["total_time_ms"] for r in rows)
    assert [bool(r["service_p99_ms"]) for r in rows] == [r["campaign"] == "v2-redis" for r in rows]


# ---------------------------------------------------------------------------------------------
# Hypothesis: `show` on mutated real records prints the runs or one line, nothing else


BASES = [raw(), json.loads((DATA / "v1/ca53824e9fde/1.json").read_text()),
         json.loads((DATA / "v1/c085dd64c021/1.json").read_text()),
         # today's parts: storage copy and its disk check, redis and its dataset, warm start
         *(json.loads(f.read_text()) for f in sorted((DATA / "v2").glob("*/*/1.json")))]


def _paths(node: Any, at_: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at_]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at_, k))
    elif isinstance(node, list):
        for i in sorted({0, len(node) - 1} & set(range(len(node)))):
            out += _paths(node[i], (*at_, i))
    return out


PATHS = [_paths(b) for b in BASES]
VALUES: list[Any] = [None, "one", "", True, 1.5, -1, 0, 2**64, 10**300, [], {}, [[[[]]]],
                     {"x": 1}, "\x1b[2J\x1b]0;t\x07", "9" * 30]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_show_of_a_mutated_record_prints_it_or_one_line(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(BASES) - 1), label="base")
    where = data.draw(st.sampled_from(PATHS[i][1:]), label="path")
    op = data.draw(st.sampled_from(["replace", "delete", "text"]), label="op")
    d = copy.deepcopy(BASES[i])
    parent: Any = d
    for p in where[:-1]:
        parent = parent[p]
    hostile = None
    if op == "delete":
        del parent[where[-1]]
    elif op == "text":
        hostile = data.draw(st.sampled_from(["NaN", "-Infinity", "1e999", "9" * 400,
                                             "[" * 3000 + "]" * 3000]), label="literal")
        parent[where[-1]] = HOLE
    else:
        parent[where[-1]] = data.draw(st.sampled_from(VALUES) | st.text(max_size=20)
                                      | st.integers() | st.floats(), label="value")
    text = json.dumps(d)
    if hostile is not None:
        text = text.replace(json.dumps(HOLE), hostile, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1.json"
        path.write_text(text)
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _show(path)
        if code == 0:
            assert "Traceback" not in out.getvalue() and not CONTROL.search(
                out.getvalue().replace("\n", ""))
        else:
            assert code == 1
            lines = err.getvalue().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"migbench: error: {path}: ")
            assert lines[0].endswith((DELETE, NEWER)) or "…" in lines[0]


def _show(path: Path) -> int:
    # cli's consoles were made with the real streams: print through fresh ones for the capture
    import sys

    from rich.console import Console

    old = cli.out, cli.err
    cli.out = Console(file=sys.stdout, width=160, emoji=False)
    cli.err = Console(file=sys.stderr, width=200, emoji=False)
    try:
        return cli.main(["show", str(path)])
    finally:
        cli.out, cli.err = old
