"""Issue 15 wired in: per-thread CPU, feature statistics and their timelines on every cell page
(with CSVs), before/after slide pages linked from the index, ``migbench report --slides
[--text]`` and ``migbench compare --text``'s slides; on the real 7.2 compress-bound runs."""

from __future__ import annotations

import argparse
import csv
import shlex
from pathlib import Path

import pytest

from harness import cli
from harness.ci.abtest import command_line, compare_slides
from harness.report import make_report
from tests.record_edit import BOUND, WAIT_FALSE, WAIT_TRUE, cell_runs, edit


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wiring") / "report"
    make_report(BOUND, out, slide_specs=[])
    return out


def test_cell_page_lists_each_compress_thread_and_its_imbalance(report: Path) -> None:
    threads = rows(report / "cells" / f"{WAIT_FALSE}-threads.csv")
    by_side = {(r["side"], r["thread"]): r for r in threads}
    for i in range(4):
        assert ("source", f"compress {i}") in by_side
        assert ("destination", f"decompress {i}") in by_side
    # wait=false: index 0 takes the pages QEMU finds a free thread for (QEMU's first-free rule)
    assert float(by_side[("source", "compress 0")]["cell median %"]) > float(
        by_side[("source", "compress 3")]["cell median %"])
    imbalance = {(r["side"], r["class"]): r for r in
                 rows(report / "cells" / f"{WAIT_FALSE}-imbalance.csv")}
    assert imbalance[("source", "compress")]["threads median"] == "4.0"
    page = (report / "cells" / f"{WAIT_FALSE}.html").read_text()
    assert "CPU per thread</h2>" in page and "compress 3" in page and "compress: max/min" in page


def test_cell_page_has_feature_statistics_over_every_run(report: Path) -> None:
    feats = {r["figure"]: r for r in rows(report / "cells" / f"{WAIT_FALSE}-features.csv")
             if r["block"] == "compression"}
    assert feats["busy"]["runs"] == "3"
    assert float(feats["busy"]["min"]) > 100_000  # every repetition counted busy pages
    assert 0.9 < float(feats["busy_ratio"]["median"]) < 1.0
    quiet = {r["figure"]: r for r in rows(report / "cells" / f"{WAIT_TRUE}-features.csv")}
    assert float(quiet["busy"]["max"]) == 0  # compress-wait-thread true: QEMU never counts busy
    page = (report / "cells" / f"{WAIT_FALSE}.html").read_text()
    assert "Compression over 3 runs" in page and 'id="ft-compression"' in page
    assert "per period" in page


def test_slide_pages_are_linked_and_named_from_cell_ids(report: Path) -> None:
    name = f"{WAIT_TRUE}-{WAIT_FALSE}"
    page = (report / "slides" / f"{name}.html").read_text()
    assert f'href="slides/{name}.html"' in (report / "index.html").read_text()
    assert 'id="block-before"' in page and 'id="block-after"' in page
    assert "source before %" in page and "destination after %" in page
    assert "compression busy" in page and "p=" in page
    header = next(csv.reader((report / "slides" / f"{name}-threads.csv").open()))
    assert "before median %" in header and "after median %" in header
    assert [p.name for p in (report / "slides").iterdir() if p.suffix == ".html"] == [
        f"{name}.html"]


def test_report_text_prints_the_slide_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = cli.main(["report", str(BOUND), "--slides", "bf15..881a", "--text"])
    out = capsys.readouterr().out
    assert code == 0 and list(tmp_path.iterdir()) == []
    assert f"before: qemu-7.2: feature=compress, compress-wait-thread=True  [{WAIT_TRUE}]" in out
    assert "  compress 3 " in out and "  decompress 3 " in out
    assert f"reproduce: migbench report {BOUND} --slides bf15..881a --text" in out


@pytest.mark.parametrize(("pair", "expected"), [
    ("bf157b8d9d23", "--slides 'bf157b8d9d23': use BEFORE..AFTER"),
    ("..881a", "use BEFORE..AFTER"),
    ("zzzz..881a", "'zzzz' matches no cell"),
    ("feature=compress..881a", "matches 3 cells"),
])
def test_bad_slide_pairs_are_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        pair: str, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", str(BOUND), "--slides", pair]) != 0
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # refused before a folder was made


def test_compare_text_gives_a_slide_per_cell_on_both_sides() -> None:
    old = cell_runs(WAIT_FALSE) + cell_runs(WAIT_TRUE)
    new = [edit(r, {"cell.variant": "patched"}) for r in cell_runs(WAIT_FALSE)]
    made = compare_slides(old + new, "qemu-7.2", "patched", "migbench compare m.yaml --text")
    assert len(made) == 1  # the wait=true cell ran on one side only
    text = made[0].text()
    assert "before: qemu-7.2: feature=compress, compress-wait-thread=False" in text
    assert "after:  patched:" in text and "reproduce: migbench compare m.yaml --text" in text


def test_compare_command_line_is_quoted() -> None:
    args = argparse.Namespace(matrix="my m.yaml", before="7.2", after="src:/q+a b.mbox",
                              hosts=None, pair="p1", configure_arg=["--enable-debug"], text=True)
    line = command_line(args)
    assert shlex.split(line) == ["migbench", "compare", "my m.yaml", "--before", "7.2",
                                 "--after", "src:/q+a b.mbox", "--pair", "p1",
                                 "--configure-arg", "--enable-debug", "--text"]
