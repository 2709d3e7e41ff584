"""Safe output: CSV cells, terminal text and report links built from hostile result files.

The records here are real ones (tests/data/run-xbzrle.json) with hostile text in the fields
that reach CSV files, the terminal and the report: variant, error, QEMU version, host facts,
axes, migration parameters, guest console and series names.
"""

from __future__ import annotations

import csv
import errno
import html.parser
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import cli
from harness.analysis import history, regress
from harness.errors import HarnessError, StoreError
from harness.output import console_text, csv_cell, terminal_text, write_atomic, write_failure
from harness.report import make_report
from harness.report.model import safe_id
from harness.report.trend import build_trend, render_trend
from harness.results import store
from harness.results.record import RunRecord, upgrade
from tests.report_data import make_run

FORMULAS = ["=cmd|' /C calc'!A0", "@SUM(1)", "+1", "-2+3", "\t=1+1", "\r=1+1"]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
PLAIN = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?\Z")
# What a terminal acts on: ESC, BEL, CSI (C1), CR, and every other C0/C1 control but newline.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
TERMINAL_HOSTILE = ["\x1b[2J", "\x1b]0;title\x07", "\r", "\x9b", "[bold]"]
HTML_HOSTILE = ['</script><script>alert(1)</script>', "<!--", '"><img src=x onerror=alert(2)>',
                "javascript:alert(3)", "'><svg onload=alert(4)>"]


# --------------------------------------------------------------------------------------------
# CSV


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_text_gets_a_quote(text: str) -> None:
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("value", [-3.5, 3, 0, -1e-9, True, None, "-3.5", "-23.2%", "42",
                                   "1.5e3", "completed", "'=already", " =x", ""])
def test_numbers_and_plain_text_stay(value: Any) -> None:
    assert csv_cell(value) is value or csv_cell(value) == value


@given(st.text())
def test_no_cell_can_start_a_formula(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(TRIGGERS) or PLAIN.match(cell)
    assert cell == text or cell == "'" + text  # nothing else changes


def _hostile_runs() -> list[dict[str, Any]]:
    """Two variants of one cell, every text field a formula, plus one negative figure."""
    runs = []
    for variant, cell in (("=cmd|' /C calc'!A0", "a00000000001"), ("@SUM(1)", "b00000000001")):
        for rep in (1, 2, 3):
            rec = make_run(cell_id=cell, variant=variant, rep=rep, total_ms=7600 + rep,
                           axes={"feature": "xbzrle", "max-bandwidth": "-2+3"},
                           error="@SUM(1)" if rep == 3 else None)
            rec["qemu"]["version"] = "+1"
            rec["hosts"]["source"]["cpu_model"] = "-2+3"
            rec["hosts"]["source"]["kernel"] = "=cmd|' /C calc'!A0"
            rec["cell"]["migration"]["parameters"]["tls-authz"] = "@SUM(1)"
            rec["final"]["status"] = "=1+1"
            rec["console"]["source"].append({"t": 0.0, "line": "=cmd|' /C calc'!A0"})
            rec["metrics"]["host_pause_ms"] = -3.5  # a genuine (if odd) number stays a number
            runs.append(rec)
    return runs


def _csv_cells(root: Path) -> dict[Path, list[list[str]]]:
    out = {}
    for path in sorted(root.rglob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            out[path] = list(csv.reader(f))
    return out


def test_every_csv_written_from_hostile_records_is_neutralised(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    recs = [upgrade(rec) for rec in _hostile_runs()]
    for rec in recs:
        store.write_run(camp, rec)
    store.write_summary(camp)
    store.export(camp, "csv", tmp_path / "export.csv")
    make_report(camp, tmp_path / "report", baseline="@SUM(1)")
    groups = history.group_by_cell(recs)
    trend = build_trend({k: [("20260101T000000Z", v)] for k, v in groups.items()}, {},
                        title="t", identity_key="k", identity={},
                        thresholds=regress.Thresholds())
    render_trend(trend, tmp_path / "report")

    tables = _csv_cells(tmp_path)
    names = {p.name for p in tables}
    assert {"summary.csv", "export.csv", "overview.csv", "hosts.csv", "parameters.csv",
            "qemu.csv", "compare.csv", "a00000000001-runs.csv", "a00000000001-info-migrate.csv",
            "trend.csv", "predictions.csv"} <= names, names
    cells: set[str] = set()
    for path, rows in tables.items():
        for row in rows:
            for cell in row:
                assert not cell.startswith(TRIGGERS) or PLAIN.match(cell), (path.name, cell)
                cells.add(cell)
    # the hostile text did reach the files, neutralised (the check above is not vacuous)
    for text in ("=cmd|' /C calc'!A0", "@SUM(1)", "+1", "-2+3", "=1+1"):
        assert "'" + text in cells, text

    summary = list(csv.DictReader(open(camp / "summary.csv", newline="")))
    assert summary[0]["variant"] == "'=cmd|' /C calc'!A0"
    assert summary[0]["qemu_version"] == "'+1"
    assert summary[0]["host_pause_ms"] == "-3.5"  # numbers stay numbers
    assert summary[0]["total_time_ms"] == "7601"
    assert summary[2]["error"] == "'@SUM(1)"
    import pandas as pd

    df = pd.read_csv(tmp_path / "export.csv")
    assert df["host_pause_ms"].dtype == "float64" and list(df["host_pause_ms"])[0] == -3.5
    assert df["qemu_version"][0] == "'+1"
    # parquet keeps the typed values untouched
    back = pd.read_parquet(store.export(camp, "parquet"))
    assert back["variant"].iloc[0] == "=cmd|' /C calc'!A0"
    runs = tables[tmp_path / "report" / "cells" / "a00000000001-runs.csv"]
    assert runs[3][-1] == "'@SUM(1)"


def test_a_positive_change_in_compare_csv_stays_a_number(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    for rec in (make_run(cell_id="a00000000001", variant="old", rep=r, total_ms=t)
                for r, t in ((1, 7000), (2, 7010), (3, 7020))):
        store.write_run(camp, upgrade(rec))
    for rec in (make_run(cell_id="b00000000001", variant="new", rep=r, total_ms=t)
                for r, t in ((1, 8000), (2, 8010), (3, 8020))):
        store.write_run(camp, upgrade(rec))
    make_report(camp, tmp_path / "r", baseline="old")
    rows = list(csv.DictReader(open(tmp_path / "r" / "compare.csv", newline="")))
    total = next(r for r in rows if r["metric"] == "total time")
    assert total["change"] == "14.3%"


# --------------------------------------------------------------------------------------------
# Terminal


@pytest.mark.parametrize(("raw", "shown"), [
    ("a\x1b[2Jb", "ab"), ("a\x1b]0;title\x07b", "ab"), ("a\x1b]8;;http://x\x1b\\b", "ab"),
    ("a\rb", "ab"), ("a\x9b2Jb", "ab"), ("a\x1b(Bb", "ab"), ("a\x1b]unended", "aunended"),
    ("a\x07\x08\x7f\x85b", "ab"), ("x\u202eevil", "xevil"), ("tab\there", "tab here"),
    ("two\nlines", "two lines"), ("[bold]red[/]", "[bold]red[/]"), ("lone \ud800", "lone "),
])
def test_terminal_text_drops_controls_and_keeps_the_text(raw: str, shown: str) -> None:
    assert terminal_text(raw) == shown


def test_console_text_escapes_markup_and_newlines_kept_on_request() -> None:
    from rich.text import Text

    assert Text.from_markup(console_text("[bold]x[/bold] \x1b[1m")).plain == "[bold]x[/bold] "
    assert terminal_text("a\nb\x1b[2J", newlines=True) == "a\nb"


@given(st.text())
def test_terminal_text_never_carries_a_control_character(text: str) -> None:
    shown = terminal_text(text)
    assert not CONTROL.search(shown) and "\n" not in shown
    assert not CONTROL.search(terminal_text(text, newlines=True))


def _terminal_record(tmp_path: Path) -> Path:
    rec = make_run(cell_id="a00000000001", variant="v[bold]\x1b[2J", rep=1,
                   error="QEMU said \x1b]0;title\x07 no\r\x9b2J [bold]loud[/bold]")
    rec["qemu"]["version"] = "10.0\x1b[31m red"
    rec["hosts"]["source"]["cpu_model"] = "tcg\x07"
    rec["cell"]["axes"] = {"feature": "xbzrle\r[red]"}
    rec["workload_errors"] = ["writer died\x1b[?1049h\nfake header"]
    camp = tmp_path / "camp"
    camp.mkdir()
    store.write_run(camp, upgrade(rec))
    return camp


def _assert_clean(text: str) -> None:
    for bad in ("\x1b", "\x07", "\x9b", "\r"):
        assert bad not in text, repr(text)
    assert not CONTROL.search(text.replace("\n", ""))


def test_show_prints_no_control_character_and_no_markup(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    camp = _terminal_record(tmp_path)
    for target in (camp, camp / "a00000000001" / "1.json"):
        assert cli.main(["show", str(target)]) == 0
        out = capsys.readouterr().out
        _assert_clean(out)
        assert "v[bold]" in out and "[bold]loud[/bold]" in out  # markup shown as text
        assert "QEMU said  no" in out and "10.0 red" in out and "xbzrle[red]" in out
        # a newline in a value cannot forge a line of its own
        assert not any(line.startswith("fake header") for line in out.splitlines())
        assert "writer died fake header" in out


def test_run_progress_and_summary_table_print_no_control_character(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`migbench run`'s progress lines, notes and final table, fed a hostile record by a runner
    that replaces the real one (the printing is the CLI's own)."""
    from harness.run import runner

    camp = _terminal_record(tmp_path)
    rec = store.load_run(camp / "a00000000001" / "1.json")
    matrix = tmp_path / "m.yaml"
    matrix.write_text("name: t\nrepetitions: 1\n")

    def fake_run(matrix_path: Path, spec: Any, hosts_path: Path, hosts: Any, out: Path,
                 progress: runner.Progress, *args: Any, **kwargs: Any) -> list[Path]:
        from harness.plan.config import plan

        [cell] = plan(matrix_path, spec, hosts_path, hosts)
        assert progress.start and progress.run_started and progress.run_finished
        assert progress.note
        progress.start(1, 0)
        progress.run_started(cell, 1)
        progress.run_finished(cell, 1, rec)
        progress.note("pair p skipped: QEMU said \x1b[2J\x1b]0;t\x07[bold]x")
        return []

    monkeypatch.setattr(runner, "run_matrix", fake_run)
    assert cli.main(["run", str(matrix), "--out", str(camp)]) == 0
    captured = capsys.readouterr()
    _assert_clean(captured.out + captured.err)
    assert "QEMU said  no" in captured.out  # the run's error line
    assert "pair p skipped: QEMU said [bold]x" in captured.out
    assert "v[bold]" in captured.out  # the summary table's variant, as text


def test_error_line_drops_control_characters(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x\x1b[2J.json"
    assert cli.main(["show", str(bad)]) == 1
    err = capsys.readouterr().err
    _assert_clean(err)
    assert len(err.strip().splitlines()) == 1
    assert "x.json" in err or "2J.json" in err  # dropped, or shown escaped: never acted on


# --------------------------------------------------------------------------------------------
# Report links and file names


@pytest.mark.parametrize("cell_id", ["../../etc", "/etc/passwd", "%2e%2e", "a'b\"c",
                                     "javascript:alert(1)", "ABCDEF012345", "0123456789abc",
                                     12345, None])
def test_store_refuses_a_run_whose_cell_id_is_not_one(tmp_path: Path, cell_id: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    camp = tmp_path / "camp"
    (camp / "a00000000001").mkdir(parents=True)
    rec = make_run(cell_id="a00000000001")
    rec["cell"]["id"] = cell_id
    path = camp / "a00000000001" / "1.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(HarnessError, match=r"cell\.id: expected .*; delete it") as exc:
        list(store.iter_runs(camp))
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    for argv in (["report", str(camp), "-o", str(tmp_path / "r")], ["show", str(camp)],
                 ["export", str(camp), "--format", "csv"]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "cell.id: expected" in err, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "etc").exists()


def test_store_refuses_a_run_outside_its_cell_folder(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    (camp / "b00000000001").mkdir(parents=True)
    (camp / "b00000000001" / "1.json").write_text(json.dumps(make_run(cell_id="a00000000001")))
    with pytest.raises(HarnessError, match="differs from its folder 'b00000000001'"):
        list(store.iter_runs(camp))


def test_write_run_takes_no_path_from_the_record(tmp_path: Path) -> None:
    # A record cannot hold such values (validation refuses them); one copied with an update
    # skips validation, so the store checks what becomes a path itself.
    rec = upgrade(make_run(cell_id="a00000000001"))
    bad = rec.model_copy(update={"cell": rec.cell.model_copy(update={"id": "../../x"})})
    with pytest.raises(HarnessError, match="is not a cell id"):
        store.write_run(tmp_path, bad)
    with pytest.raises(HarnessError, match="not a positive integer"):
        store.write_run(tmp_path, rec.model_copy(update={"repetition": "../1"}))
    assert list(tmp_path.iterdir()) == []


@given(st.text())
def test_safe_id_is_a_file_name_and_keeps_real_ids(text: str) -> None:
    name = safe_id(text)
    assert re.fullmatch(r"[0-9a-f]{12}|x[0-9a-f]{16}", name)
    assert (name == text) == store.valid_cell_id(text)


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"a comment reached the page: {data[:60]!r}")


ALLOWED_TAGS = {"html", "head", "meta", "title", "link", "script", "body", "header", "span", "a",
                "main", "h1", "h2", "h3", "h4", "div", "p", "table", "thead", "tbody", "tr",
                "th", "td", "details", "summary", "ul", "li", "pre", "code", "strong", "em",
                "small", "section", "nav", "br", "b", "i", "abbr", "sup", "caption", "colgroup",
                "col", "label", "footer", "dl", "dt", "dd", "ol", "hr", "kbd"}


def test_report_from_hostile_records_has_no_injected_element_or_link(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    hostile = " ".join(HTML_HOSTILE)
    for cell, variant in (("a00000000001", "old" + HTML_HOSTILE[0]), ("b00000000001", "new")):
        for rep in (1, 2, 3):
            rec = make_run(cell_id=cell, variant=variant, rep=rep, total_ms=7600 + 30 * rep,
                           axes={"feature": "xbzrle", "max-bandwidth": hostile},
                           error=hostile if rep == 2 else None)
            rec["qemu"]["version"] = hostile
            rec["hosts"]["source"]["cpu_model"] = hostile
            rec["console"]["source"].append({"t": 0.0, "line": hostile})
            rec["warnings"] = [hostile]
            rec["final"]["status"] = hostile
            store.write_run(camp, upgrade(rec))
    pages = make_report(camp, tmp_path / "report", baseline="new")
    assert {p.name for p in pages} >= {"index.html", "compare.html", "a00000000001.html"}
    for page in (tmp_path / "report").rglob("*.html"):
        text = page.read_text()
        parser = _Tags()
        parser.feed(text)
        parser.close()
        for tag, attrs in parser.tags:
            assert tag in ALLOWED_TAGS, (page.name, tag, attrs)
            assert not any(k.startswith("on") for k in attrs), (page.name, tag, attrs)
            if tag == "script":
                assert attrs.get("type") == "application/json" or (
                    attrs.get("src") or "").endswith(("plotly.min.js", "report.js")), attrs
            href = attrs.get("href") or attrs.get("src")
            if href:
                assert re.fullmatch(r"(\.\./)?(assets/[a-z.]+|cells/[0-9a-f]{12}(-[a-z-]+)?"
                                    r"\.(html|csv)|[a-z0-9-]+\.(html|csv))", href), href
                assert (page.parent / href).exists(), href
        for data in parser.scripts:  # every figure is whole JSON, the hostile text inside it
            json.loads(data)
        assert "alert(1)" in text  # the hostile text is shown, as text
    assert sorted(p.name for p in (tmp_path / "report" / "cells").glob("*.html")) == [
        "a00000000001.html", "b00000000001.html"]


def test_figure_json_cannot_end_its_script_element() -> None:
    from harness.report.render import json_script

    text = str(json_script({"name": "</script><script>alert(1)</script><!-- & -->"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script><!-- & -->"}


# --------------------------------------------------------------------------------------------
# Files that cannot be written (the real full, read-only and removed folders are in
# tests/integration/test_write_failures.py)


def test_write_failure_is_one_line_with_the_remedy_for_the_cause(tmp_path: Path) -> None:
    for code, remedy in ((errno.ENOSPC, "free space there"), (errno.EROFS, "make it writable"),
                         (errno.ENOENT, "recreate it")):
        exc = write_failure(tmp_path / "x", "the file", OSError(code, "why"), "or else")
        assert isinstance(exc, StoreError)
        assert str(exc).startswith(f"{tmp_path / 'x'}: cannot write the file: why; ")
        assert str(exc).endswith(f"{remedy} or else")


def test_write_atomic_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("old")

    def boom(f: Any) -> None:
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(tmp_path / "f", boom)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    assert (tmp_path / "f").read_text() == "old"
    with pytest.raises(FileNotFoundError):  # the folder is not made again
        write_atomic(tmp_path / "gone" / "f", "x")


def test_write_run_into_a_removed_campaign_folder_says_so_and_makes_nothing(
        tmp_path: Path) -> None:
    with pytest.raises(StoreError) as exc:
        store.write_run(tmp_path / "gone", upgrade(make_run(cell_id="a00000000001")))
    assert str(exc.value).startswith(f"results folder {tmp_path / 'gone'}: cannot write run file "
                                     "a00000000001/1.json: the folder was removed during the run")
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize(("argv", "what"), [
    (["image", "build", "--cache", "{f}/img"], "the guest image cache"),
    (["testbed", "up", "--dir", "{f}/bed"], "the test bed folder"),
    (["init", "--output", "{f}/hosts.yaml"], "the hosts file"),
])
def test_folders_other_commands_write_that_cannot_be_written_are_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: list[str], what: str) -> None:
    """A path under a regular file (ENOTDIR; a read-only folder, which root writes anyway
    through the mode bits, is the integration test's). image build and testbed up ended in
    a traceback from mkdir; testbed up had torn down the running test bed first."""
    from harness.hosts import testbed

    def never(*args: Any) -> None:
        raise AssertionError("the test bed was torn down or built")

    monkeypatch.setattr(testbed, "down", never)
    monkeypatch.setattr(testbed, "_check_tools", lambda: None)
    f = tmp_path / "file"
    f.write_text("")
    assert cli.main([a.format(f=f) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"migbench: error: {f}/") and f"cannot write {what}" in err, err
    assert "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_paths_with_rich_markup_are_printed_as_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder named "[/x]" is a valid path; printed as markup it was a MarkupError traceback
    (export's "wrote", image build's lines, doctor's table title)."""
    from harness.guest import image
    from harness.hosts import provision

    odd = tmp_path / "[/x]"  # "[" then the folder "x]"
    odd.mkdir(parents=True)
    camp = tmp_path / "camp"
    camp.mkdir()
    store.write_run(camp, upgrade(make_run(cell_id="a00000000001", variant="v", rep=1,
                                           total_ms=7000)))
    assert cli.main(["export", str(camp), "--format", "csv", "--output",
                     str(odd / "e.csv")]) == 0
    assert f"wrote {odd / 'e.csv'}" in capsys.readouterr().out

    def fake_image(cache: Path, **kw: Any) -> image.GuestImage:
        kw["log"](f"building in {cache} [bold]")
        return image.GuestImage(cache / "vmlinuz", cache / "initrd", "0" * 64, "6.1", False,
                                debian_disk=cache / "d.qcow2", debian_initrd=cache / "d.img")

    monkeypatch.setattr(image, "ensure_image", fake_image)
    assert cli.main(["image", "build", "--cache", str(odd)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # lines wrapped at the console's width
    assert f"building in {odd} [bold]" in printed and f"initrd {odd}/initrd" in printed
    assert f"root disk {odd}/d.qcow2" in printed

    monkeypatch.setattr(provision, "doctor_pair",
                        lambda name, *a, **kw: provision.PairReport(name))
    hosts = odd / "hosts.yaml"
    hosts.write_text("qemu_builds: {x: {binary: /bin/true}}\ndefault_build: x\n"
                     "pairs: {local: {source: {transport: local}, "
                     "destination: {transport: local}}}\n")
    assert cli.main(["doctor", "--hosts", str(hosts)]) == 0
    title = "".join(capsys.readouterr().out.split())  # the title wraps as the table is narrow
    assert f"migbenchdoctor({hosts})" in title


def test_nightly_outputs_into_a_file_not_a_folder_are_one_line(tmp_path: Path) -> None:
    from harness.ci.verdict import write_outputs

    (tmp_path / "file").write_text("")
    verdict = {"kind": "nightly", "matrix": "m", "cells": [], "summary": {}}
    for paths, junit in (([tmp_path / "file" / "verdict.json"], None),
                         ([], tmp_path / "file" / "junit.xml")):
        with pytest.raises(StoreError, match=r"file/(verdict\.json|junit\.xml): cannot write"):
            write_outputs(verdict, paths, junit)
    with pytest.raises(StoreError, match="history folder .*: cannot write .incoming"):
        history.incoming_dir(tmp_path / "file", "20260101T000000Z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]



def test_a_summary_that_cannot_be_written_goes_and_comes_back_with_the_next_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run file is stored, summary.csv cannot be rewritten (disk full just then): the stale
    summary is removed rather than left missing that run, and the next run rebuilds it."""
    from harness.plan.matrix import expand
    from harness.plan.models import HostPair, HostsConfig, HostSpec, MatrixSpec, QemuBuild
    from harness.run import runner
    from tests.unit.test_provision import _image

    spec = MatrixSpec.model_validate({"name": "m", "repetitions": 2})
    [cell] = expand(spec, "10.0")
    here = HostSpec(workdir=tmp_path / "work")
    hosts = HostsConfig(qemu_builds={"10.0": QemuBuild(binary=Path("/q"))},
                        default_build="10.0", pairs={"p": HostPair(source=here, destination=here)})
    out = tmp_path / "out"
    out.mkdir()

    def campaign() -> runner._Campaign:
        return runner._Campaign(tmp_path / "m.yaml", spec, hosts, out, runner.Progress(),
                                _image(tmp_path), runner.run_order([cell], 2, spec.order))

    def record(rep: int) -> RunRecord:
        return upgrade(make_run(cell_id=cell.id, rep=rep))

    camp = campaign()
    camp.save("p", cell, 1, record(1))
    assert len((out / "summary.csv").read_text().splitlines()) == 2
    real = store.write_atomic

    def full(path: Path, data: Any, **kw: Any) -> None:
        if path.name == "summary.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, **kw)

    monkeypatch.setattr(store, "write_atomic", full)
    with pytest.raises(StoreError, match=r"cannot write summary\.csv: No space left on device"):
        camp.save("p", cell, 2, record(2))
    assert (out / cell.id / "2.json").exists()  # the finished run is kept
    assert not (out / "summary.csv").exists()  # not left behind missing it
    runner._final_summary(camp, StoreError("x"))  # the failing matrix does not try again
    assert not (out / "summary.csv").exists() and not list(out.rglob(".*"))  # no temp file
    monkeypatch.setattr(store, "write_atomic", real)
    runner._final_summary(campaign(), None)  # the next run of the campaign (nothing to do)
    rows = list(csv.DictReader(open(out / "summary.csv", newline="")))
    assert [r["repetition"] for r in rows] == ["1", "2"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_an_image_build_that_fills_the_cache_midway_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        code: int) -> None:
    """The cache folder was writable but the disk filled (or went read-only) during the build:
    one line naming the cache and the fix, and no half-built image left in it."""
    from harness.guest import image

    def full(tmp: Path, *args: Any) -> None:
        (tmp / "part").write_text("x")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(image, "_build", full)
    monkeypatch.setattr(image, "_cached", lambda final, digest: None)
    cache = tmp_path / "cache"
    assert cli.main(["image", "build", "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"migbench: error: {cache}: cannot write the guest image"), err
    assert "\n" not in err and "Traceback" not in err and "--cache" in err
    assert not [p for p in cache.iterdir() if p.name.startswith(".build-")]
